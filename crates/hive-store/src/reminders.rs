//! Reminders: messages from `system` that wake an agent at a due time,
//! delivered exactly once, retried with backoff and parked when their
//! target cannot take them.
//!
//! Due and delivery times are unix *milliseconds* (`due_ms`,
//! `delivered_ms`): a reminder set `in_seconds: N` fires no earlier than N s
//! after it was set, not at the start of a floored second.

use std::time::Duration;

use hive_proto::{AgentName, MANAGER_AGENT, MAX_BODY_BYTES, OPERATOR_RECIPIENT};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::agents::exists;
use crate::broker::{MessageRow, insert_message};
use crate::{Error, Result, Store, WriteTx, count, now_millis, now_unix};

/// Most undelivered reminders (parked included) one owner may have.
pub const MAX_PENDING_REMINDERS: u64 = 50;
/// Failed deliveries after which a reminder is parked until retried.
pub const MAX_REMINDER_ATTEMPTS: u32 = 5;

/// Seconds until the next attempt after the `attempts`-th failure:
/// 30 s, 60 s, 120 s, 240 s, …
pub fn reminder_backoff_seconds(attempts: u32) -> i64 {
    30_i64.saturating_mul(1_i64 << attempts.saturating_sub(1).min(32))
}

/// One reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub id: i64,
    pub owner: String,
    /// Whom it wakes; `None`: the owner.
    pub target: Option<String>,
    pub message: String,
    /// A file the owner wants read when it fires, echoed in the body.
    pub file_path: Option<String>,
    pub created_at: i64,
    /// When it fires (or, after a failure, is next tried), unix ms.
    pub due_ms: i64,
    /// When it was delivered, unix ms.
    pub delivered_ms: Option<i64>,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Given up on after repeated failures; waits for a retry.
    pub parked: bool,
}

impl Reminder {
    /// The agent it wakes.
    pub fn recipient(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.owner)
    }

    /// Its due time in unix seconds, rounded up (the wire's `due_at`): it
    /// never fires before that second begins.
    pub fn due_at(&self) -> i64 {
        ceil_seconds(self.due_ms)
    }

    /// The body of the message it delivers.
    pub fn body(&self) -> String {
        format_body(
            self.id,
            &self.owner,
            &self.message,
            self.file_path.as_deref(),
        )
    }
}

/// What one due reminder came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReminderOutcome {
    /// Its message is in the target's inbox.
    Delivered { reminder: Reminder, message_id: i64 },
    /// Delivery failed; the reminder records the error and its next attempt
    /// (or is parked).
    Failed { reminder: Reminder, error: String },
}

/// Unix ms rounded up to whole seconds.
pub fn ceil_seconds(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

fn format_body(id: i64, owner: &str, message: &str, file_path: Option<&str>) -> String {
    let mut body = format!("reminder #{id} from {owner}: {message}");
    if let Some(path) = file_path {
        body.push_str(&format!("\n(file: {path})"));
    }
    body
}

const REMINDER_COLUMNS: &str = "id, owner, target, message, file_path, created_at, due_ms, \
     delivered_ms, attempts, last_error, parked";

fn reminder_from_row(row: &Row<'_>) -> rusqlite::Result<Reminder> {
    Ok(Reminder {
        id: row.get(0)?,
        owner: row.get(1)?,
        target: row.get(2)?,
        message: row.get(3)?,
        file_path: row.get(4)?,
        created_at: row.get(5)?,
        due_ms: row.get(6)?,
        delivered_ms: row.get(7)?,
        attempts: row.get(8)?,
        last_error: row.get(9)?,
        parked: row.get(10)?,
    })
}

fn load(conn: &Connection, id: i64) -> Result<Reminder> {
    conn.prepare_cached(&format!(
        "SELECT {REMINDER_COLUMNS} FROM reminders WHERE id = ?1"
    ))?
    .query_row([id], reminder_from_row)
    .optional()?
    .ok_or(Error::NotFound {
        what: "reminder",
        id,
    })
}

fn pending_count(conn: &Connection, owner: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM reminders WHERE owner = ?1 AND delivered_ms IS NULL")?
        .query_row([owner], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

impl Store {
    /// Queues a reminder from `owner` that wakes `target` (default: the
    /// owner; another agent only if `owner`'s allow-list reaches it) at
    /// `due_ms` (unix ms). At most [`MAX_PENDING_REMINDERS`] may wait per
    /// owner.
    pub fn remind(
        &self,
        owner: &str,
        target: Option<&AgentName>,
        message: &str,
        due_ms: i64,
        file_path: Option<&str>,
    ) -> Result<Reminder> {
        AgentName::parse(owner)?;
        if message.trim().is_empty() {
            return Err(Error::Refused("the reminder message is empty".to_owned()));
        }
        let longest = format_body(i64::MAX, owner, message, file_path).len();
        if longest > MAX_BODY_BYTES {
            return Err(Error::BodyTooLarge {
                len: longest,
                max: MAX_BODY_BYTES,
            });
        }
        let recipient = target.map_or(owner, AgentName::as_str);
        let reminder = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            if recipient != owner {
                self.inner.reach.check(&tx, owner, recipient)?;
            } else if !exists(&tx, recipient)? {
                return Err(Error::UnknownAgent(recipient.to_owned()));
            }
            if pending_count(&tx, owner)? >= MAX_PENDING_REMINDERS {
                return Err(Error::Refused(format!(
                    "{owner} already has {MAX_PENDING_REMINDERS} pending reminders, the most \
                     allowed: cancel one first"
                )));
            }
            tx.prepare_cached(
                "INSERT INTO reminders (owner, target, message, file_path, created_at, due_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute((
                owner,
                target.map(AgentName::as_str),
                message,
                file_path,
                now_unix(),
                due_ms,
            ))?;
            let reminder = load(&tx, tx.last_insert_rowid())?;
            tx.commit()?;
            reminder
        };
        self.bump_schedule();
        Ok(reminder)
    }

    /// Delivers every reminder due at `now_ms` (undelivered, not parked), each
    /// in its own transaction that both inserts the message and marks the
    /// reminder delivered, so a crash never delivers one twice. A failure
    /// is recorded on the row with the next attempt backed off, parking it
    /// after [`MAX_REMINDER_ATTEMPTS`].
    pub fn deliver_due_reminders(&self, now_ms: i64) -> Result<Vec<ReminderOutcome>> {
        let due = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {REMINDER_COLUMNS} FROM reminders
                 WHERE delivered_ms IS NULL AND parked = 0 AND due_ms <= ?1
                 ORDER BY due_ms, id"
            ))?;
            stmt.query_map([now_ms], reminder_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut outcomes = Vec::with_capacity(due.len());
        for reminder in due {
            match self.deliver_one(&reminder, now_ms) {
                Ok(Some((reminder, row))) => {
                    let message_id = row.id;
                    self.announce(vec![row]);
                    outcomes.push(ReminderOutcome::Delivered {
                        reminder,
                        message_id,
                    });
                }
                // Cancelled or delivered since it was read.
                Ok(None) => {}
                Err(e) => {
                    let error = e.to_string();
                    let reminder = self.record_failure(reminder.id, &error, now_ms)?;
                    tracing::warn!(
                        id = reminder.id,
                        attempts = reminder.attempts,
                        parked = reminder.parked,
                        %error,
                        "reminder delivery failed"
                    );
                    outcomes.push(ReminderOutcome::Failed { reminder, error });
                }
            }
        }
        Ok(outcomes)
    }

    /// Delivers one reminder in one transaction; `None` if it is no longer
    /// due (cancelled, retried or delivered since it was read).
    fn deliver_one(
        &self,
        reminder: &Reminder,
        now_ms: i64,
    ) -> Result<Option<(Reminder, MessageRow)>> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let claimed = tx
            .prepare_cached(
                "UPDATE reminders SET delivered_ms = ?2
                 WHERE id = ?1 AND delivered_ms IS NULL AND parked = 0 AND due_ms <= ?2",
            )?
            .execute((reminder.id, now_ms))?;
        if claimed == 0 {
            return Ok(None);
        }
        let current = load(&tx, reminder.id)?;
        let to = current.recipient();
        if !exists(&tx, to)? {
            return Err(Error::UnknownAgent(to.to_owned()));
        }
        let row = insert_message(
            &tx,
            hive_proto::SYSTEM_SENDER,
            to,
            &current.body(),
            now_ms.div_euclid(1000),
            None,
        )?;
        tx.commit()?;
        Ok(Some((current, row)))
    }

    fn record_failure(&self, id: i64, error: &str, now_ms: i64) -> Result<Reminder> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let current = load(&tx, id)?;
        let attempts = current.attempts.saturating_add(1);
        let parked = attempts >= MAX_REMINDER_ATTEMPTS;
        let due_ms = if parked {
            current.due_ms
        } else {
            now_ms.saturating_add(reminder_backoff_seconds(attempts).saturating_mul(1000))
        };
        tx.prepare_cached(
            "UPDATE reminders SET attempts = ?2, last_error = ?3, parked = ?4, due_ms = ?5
             WHERE id = ?1",
        )?
        .execute((id, attempts, error, parked, due_ms))?;
        let updated = load(&tx, id)?;
        tx.commit()?;
        Ok(updated)
    }

    /// The earliest due time (unix ms) among undelivered, unparked reminders.
    pub fn next_reminder_due(&self) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT MIN(due_ms) FROM reminders WHERE delivered_ms IS NULL AND parked = 0",
            )?
            .query_row([], |r| r.get(0))?)
    }

    /// Unparks reminder `id` and makes it due now; its attempt count stays.
    pub fn retry_reminder(&self, id: i64) -> Result<Reminder> {
        let reminder = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let current = load(&tx, id)?;
            if current.delivered_ms.is_some() {
                return Err(Error::Refused(format!(
                    "reminder {id} was already delivered"
                )));
            }
            tx.prepare_cached("UPDATE reminders SET parked = 0, due_ms = ?2 WHERE id = ?1")?
                .execute((id, now_millis()))?;
            let updated = load(&tx, id)?;
            tx.commit()?;
            updated
        };
        self.bump_schedule();
        Ok(reminder)
    }

    /// Deletes undelivered reminder `id`. Allowed to its owner, the manager
    /// and the operator.
    pub fn cancel_reminder(&self, id: i64, by: &str) -> Result<()> {
        {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let current = load(&tx, id)?;
            if by != current.owner && by != MANAGER_AGENT && by != OPERATOR_RECIPIENT {
                return Err(Error::Refused(format!(
                    "reminder {id} belongs to {}; {by} may not cancel it",
                    current.owner
                )));
            }
            if current.delivered_ms.is_some() {
                return Err(Error::Refused(format!(
                    "reminder {id} was already delivered"
                )));
            }
            tx.prepare_cached("DELETE FROM reminders WHERE id = ?1")?
                .execute([id])?;
            tx.commit()?;
        }
        self.bump_schedule();
        Ok(())
    }

    /// Undelivered reminders (parked included), of `owner` or everyone,
    /// soonest due first.
    pub fn pending_reminders(&self, owner: Option<&str>) -> Result<Vec<Reminder>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REMINDER_COLUMNS} FROM reminders
             WHERE delivered_ms IS NULL AND (?1 IS NULL OR owner = ?1)
             ORDER BY due_ms, id"
        ))?;
        let rows = stmt
            .query_map([owner], reminder_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// How many undelivered reminders (parked included) `owner` has.
    pub fn pending_reminder_count(&self, owner: &str) -> Result<u64> {
        Ok(pending_count(&self.conn(), owner)?)
    }

    /// One reminder; `NotFound` if there is none with `id`.
    pub fn reminder(&self, id: i64) -> Result<Reminder> {
        load(&self.conn(), id)
    }

    /// Deletes reminders delivered more than `older_than` ago.
    pub fn vacuum_delivered_reminders(&self, older_than: Duration) -> Result<u64> {
        let age_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_millis().saturating_sub(age_ms);
        let n = self
            .conn()
            .prepare_cached(
                "DELETE FROM reminders WHERE delivered_ms IS NOT NULL AND delivered_ms < ?1",
            )?
            .execute([cutoff])?;
        Ok(count(n))
    }
}
