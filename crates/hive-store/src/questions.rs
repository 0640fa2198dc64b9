//! Questions agents ask the operator or a peer, with optional choices and a
//! TTL, and the helper events that carry them between inboxes.
//!
//! Asking a peer puts a `question_asked` event in its inbox, and resolving
//! any question (answer, expiry, cancel) puts a `question_answered` event in
//! the asker's inbox, each in the same transaction as the question's row.

use hive_proto::{
    AgentName, HelperEvent, MANAGER_AGENT, MAX_BODY_BYTES, OPERATOR_RECIPIENT, QuestionRow,
    Recipient,
};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::agents::{decode_names, encode_names, exists};
use crate::broker::{MessageRow, insert_helper_event};
use crate::{Error, Result, Store, WriteTx, now_unix};

/// The answer recorded when a question's TTL runs out.
pub const ANSWER_EXPIRED: &str = "[expired]";
/// The answer recorded when a question is cancelled.
pub const ANSWER_CANCELLED: &str = "[cancelled]";
/// The answerer recorded when a question's TTL runs out.
pub const TTL_WATCHDOG: &str = "ttl-watchdog";

/// One question, pending or resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: i64,
    pub asker: String,
    /// The peer agent asked; `None`: the operator.
    pub target: Option<String>,
    pub question: String,
    /// Suggested answers; free text is always allowed too.
    pub options: Vec<String>,
    /// Whether several options may be picked (joined with ", ").
    pub multi: bool,
    pub asked_at: i64,
    pub deadline_at: Option<i64>,
    pub answer: Option<String>,
    pub answerer: Option<String>,
    pub answered_at: Option<i64>,
    pub cancelled: bool,
}

/// A pending question as host.sock and the dashboard list it.
impl From<Question> for QuestionRow {
    fn from(q: Question) -> Self {
        QuestionRow {
            id: q.id,
            asker: q.asker,
            target: q.target,
            question: q.question,
            options: q.options,
            multi: q.multi,
            asked_at: q.asked_at,
            deadline_at: q.deadline_at,
        }
    }
}

const QUESTION_COLUMNS: &str = "id, asker, target, question, options, multi, asked_at, \
     deadline_at, answer, answerer, answered_at, cancelled";

fn question_from_row(row: &Row<'_>) -> rusqlite::Result<Question> {
    let options: String = row.get(4)?;
    Ok(Question {
        id: row.get(0)?,
        asker: row.get(1)?,
        target: row.get(2)?,
        question: row.get(3)?,
        options: decode_names(&options, 4)?,
        multi: row.get(5)?,
        asked_at: row.get(6)?,
        deadline_at: row.get(7)?,
        answer: row.get(8)?,
        answerer: row.get(9)?,
        answered_at: row.get(10)?,
        cancelled: row.get(11)?,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Question> {
    conn.prepare_cached(&format!(
        "SELECT {QUESTION_COLUMNS} FROM questions WHERE id = ?1"
    ))?
    .query_row([id], question_from_row)
    .optional()?
    .ok_or(Error::NotFound {
        what: "question",
        id,
    })
}

/// Why a resolved question cannot be resolved again.
fn already_resolved(q: &Question) -> Error {
    let id = q.id;
    let answerer = q.answerer.as_deref().unwrap_or("someone");
    Error::Refused(if q.cancelled {
        format!("question {id} was already cancelled by {answerer}")
    } else if answerer == TTL_WATCHDOG {
        format!("question {id} already expired")
    } else {
        format!("question {id} was already answered by {answerer}")
    })
}

/// The `question_answered` event for `q`, the echoed question shortened if
/// needed so the event fits in a message body.
fn answered_event(q: &Question, answer: &str, answerer: &str) -> HelperEvent {
    let mut question = q.question.clone();
    loop {
        let event = HelperEvent::QuestionAnswered {
            id: q.id,
            question: question.clone(),
            answer: answer.to_owned(),
            answerer: answerer.to_owned(),
        };
        let len = serde_json::to_string(&event).map_or(0, |s| s.len());
        if len <= MAX_BODY_BYTES || question.chars().count() <= 1 {
            return event;
        }
        let mut cut = question
            .len()
            .saturating_sub(len - MAX_BODY_BYTES + '…'.len_utf8());
        while !question.is_char_boundary(cut) {
            cut -= 1;
        }
        question.truncate(cut);
        question.push('…');
    }
}

/// Marks `q` resolved and, unless `notify_asker` is false or the asker is
/// the operator or no longer registered, pushes `question_answered` into the
/// asker's inbox — all on `conn`, inside the caller's transaction.
fn resolve(
    conn: &Connection,
    q: &Question,
    answer: &str,
    answerer: &str,
    cancelled: bool,
    at: i64,
    notify_asker: bool,
) -> Result<(Question, Option<MessageRow>)> {
    let event = answered_event(q, answer, answerer);
    let pushed = if notify_asker && q.asker != OPERATOR_RECIPIENT && exists(conn, &q.asker)? {
        Some(insert_helper_event(conn, &q.asker, &event, at)?)
    } else {
        None
    };
    conn.prepare_cached(
        "UPDATE questions SET answer = ?2, answerer = ?3, answered_at = ?4, cancelled = ?5
         WHERE id = ?1 AND answered_at IS NULL",
    )?
    .execute((q.id, answer, answerer, at, cancelled))?;
    let resolved = Question {
        answer: Some(answer.to_owned()),
        answerer: Some(answerer.to_owned()),
        answered_at: Some(at),
        cancelled,
        ..q.clone()
    };
    Ok((resolved, pushed))
}

impl Store {
    /// Queues a question from `asker` (an agent, or `operator` asking a peer)
    /// to the operator (`target` `None` or `Some("operator")`) or to a
    /// registered peer agent, whom `asker`'s allow-list must let it reach.
    /// A peer gets a `question_asked` event in its inbox in the same
    /// transaction. `ttl_seconds` sets a deadline after which
    /// [`Store::expire_questions`] resolves it as `[expired]`.
    pub fn ask(
        &self,
        asker: &str,
        target: Option<&Recipient>,
        question: &str,
        options: &[String],
        multi: bool,
        ttl_seconds: Option<u64>,
    ) -> Result<Question> {
        if asker != OPERATOR_RECIPIENT {
            AgentName::parse(asker)?;
        }
        let target = match target {
            None | Some(Recipient::Operator) => None,
            Some(Recipient::Agent(name)) => Some(name.to_string()),
            Some(Recipient::Broadcast) => {
                return Err(Error::Refused(
                    "a question goes to one agent or the operator, not \"*\"".to_owned(),
                ));
            }
        };
        if target.as_deref().unwrap_or(OPERATOR_RECIPIENT) == asker {
            return Err(Error::Refused(format!(
                "{asker} cannot ask itself a question"
            )));
        }
        if question.trim().is_empty() {
            return Err(Error::Refused("the question is empty".to_owned()));
        }
        let now = now_unix();
        let deadline_at = ttl_seconds.map(|ttl| now.saturating_add_unsigned(ttl));
        let (q, pushed) = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            if let Some(t) = &target {
                self.inner.reach.check(&tx, asker, t)?;
            }
            tx.prepare_cached(
                "INSERT INTO questions (asker, target, question, options, multi, asked_at,
                                        deadline_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute((
                asker,
                &target,
                question,
                encode_names(options),
                multi,
                now,
                deadline_at,
            ))?;
            let q = load(&tx, tx.last_insert_rowid())?;
            let event = HelperEvent::QuestionAsked {
                id: q.id,
                asker: q.asker.clone(),
                question: q.question.clone(),
                options: q.options.clone(),
                multi,
                deadline_at,
            };
            let pushed = match &target {
                Some(t) => Some(insert_helper_event(&tx, t, &event, now)?),
                None => {
                    // Held to the same size as a peer question's event.
                    let len = serde_json::to_string(&event).map_or(0, |s| s.len());
                    if len > MAX_BODY_BYTES {
                        return Err(Error::BodyTooLarge {
                            len,
                            max: MAX_BODY_BYTES,
                        });
                    }
                    None
                }
            };
            tx.commit()?;
            (q, pushed)
        };
        self.announce(pushed.into_iter().collect());
        if deadline_at.is_some() {
            self.bump_schedule();
        }
        Ok(q)
    }

    /// One question; `NotFound` if there is none with `id`.
    pub fn question(&self, id: i64) -> Result<Question> {
        load(&self.conn(), id)
    }

    /// Every unanswered question (to the operator or to peers), oldest first.
    pub fn pending_questions(&self) -> Result<Vec<Question>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {QUESTION_COLUMNS} FROM questions WHERE answered_at IS NULL ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], question_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The last `limit` resolved questions, most recently resolved first.
    pub fn answered_questions(&self, limit: u64) -> Result<Vec<Question>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {QUESTION_COLUMNS} FROM questions WHERE answered_at IS NOT NULL
             ORDER BY answered_at DESC, id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([crate::limit(limit)], question_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Answers question `id`. A question to the operator may be answered
    /// only by `operator`; one to a peer by that peer or by `operator`. The
    /// asker gets `question_answered` in the same transaction.
    pub fn answer_question(&self, id: i64, answerer: &str, answer: &str) -> Result<Question> {
        if answer.trim().is_empty() {
            return Err(Error::Refused("the answer is empty".to_owned()));
        }
        if answer.len() > MAX_BODY_BYTES {
            return Err(Error::BodyTooLarge {
                len: answer.len(),
                max: MAX_BODY_BYTES,
            });
        }
        let (q, pushed) = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let q = load(&tx, id)?;
            if q.answered_at.is_some() {
                return Err(already_resolved(&q));
            }
            match &q.target {
                None if answerer != OPERATOR_RECIPIENT => {
                    return Err(Error::Refused(format!(
                        "question {id} is for the operator; {answerer} may not answer it"
                    )));
                }
                Some(t) if answerer != t && answerer != OPERATOR_RECIPIENT => {
                    return Err(Error::Refused(format!(
                        "question {id} is addressed to {t}; {answerer} may not answer it"
                    )));
                }
                _ => {}
            }
            let resolved = resolve(&tx, &q, answer, answerer, false, now_unix(), true)?;
            tx.commit()?;
            resolved
        };
        self.announce(pushed.into_iter().collect());
        if q.deadline_at.is_some() {
            self.bump_schedule();
        }
        Ok(q)
    }

    /// Withdraws question `id`: answer `[cancelled]`, answerer `by`,
    /// `cancelled` set. Allowed to the operator, the manager and the asker.
    /// The asker gets `question_answered` unless it cancelled it itself.
    pub fn cancel_question(&self, id: i64, by: &str) -> Result<Question> {
        let (q, pushed) = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let q = load(&tx, id)?;
            if q.answered_at.is_some() {
                return Err(already_resolved(&q));
            }
            if by != OPERATOR_RECIPIENT && by != MANAGER_AGENT && by != q.asker {
                return Err(Error::Refused(format!(
                    "question {id} was asked by {}; {by} may not cancel it",
                    q.asker
                )));
            }
            let notify_asker = by != q.asker;
            let resolved = resolve(
                &tx,
                &q,
                ANSWER_CANCELLED,
                by,
                true,
                now_unix(),
                notify_asker,
            )?;
            tx.commit()?;
            resolved
        };
        self.announce(pushed.into_iter().collect());
        if q.deadline_at.is_some() {
            self.bump_schedule();
        }
        Ok(q)
    }

    /// Resolves every unanswered question whose deadline is at or before
    /// `now` as `[expired]` by `ttl-watchdog`, notifying each asker, in one
    /// transaction. Returns them resolved, oldest first.
    pub fn expire_questions(&self, now: i64) -> Result<Vec<Question>> {
        let (expired, pushed) = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let due = tx
                .prepare_cached(&format!(
                    "SELECT {QUESTION_COLUMNS} FROM questions
                     WHERE answered_at IS NULL AND deadline_at <= ?1 ORDER BY id"
                ))?
                .query_map([now], question_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut expired = Vec::with_capacity(due.len());
            let mut pushed = Vec::new();
            for q in &due {
                let (q, row) = resolve(&tx, q, ANSWER_EXPIRED, TTL_WATCHDOG, false, now, true)?;
                expired.push(q);
                pushed.extend(row);
            }
            tx.commit()?;
            (expired, pushed)
        };
        self.announce(pushed);
        Ok(expired)
    }

    /// The earliest deadline among unanswered questions.
    pub fn next_question_deadline(&self) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT MIN(deadline_at) FROM questions WHERE answered_at IS NULL")?
            .query_row([], |r| r.get(0))?)
    }
}
