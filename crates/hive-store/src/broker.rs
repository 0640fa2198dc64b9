//! The message broker: durable inboxes with lease delivery, long-poll
//! receive, reply threads, broadcast, allow-lists and retention.
//!
//! A message is *pending* (`delivered_at` NULL in the file), *in flight*
//! (popped and not acked: pending in the file, out in memory,
//! [`crate::flight`]) or *done* (acked: `delivered_at` and `acked_at`
//! set). A pop hands its rows out under a fresh lease id and writes
//! nothing. A lease is *held* once its client has named it (it read the
//! rows): rows of an unheld lease go back unflagged (nobody saw them),
//! rows of a held one flagged `redelivered` (a turn may have acted on
//! them). `ack` finishes exactly the rows a client names (ids or lease),
//! `ack_turn` every held in-flight row (the original's clients), both
//! durably; `requeue_inflight` puts them back after a harness restart,
//! and `expire_leases` when a lease period ran out with no renewal. A
//! crash of the daemon loses nothing acknowledged: at the next start every
//! unacked row comes again, flagged `redelivered` ([`Store::recover_broker`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use hive_proto::{
    AgentName, DeliveredMessage, EMPTY_BODY, HelperEvent, InboxRow, MAX_BODY_BYTES, MAX_RECV_BATCH,
    MAX_SEND_BATCH, MAX_WAIT_SECONDS, OPERATOR_RECIPIENT, OutgoingMessage, Recipient,
    SYSTEM_SENDER,
};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::{Notify, broadcast, oneshot};

use crate::agents::{Reach, allows, exists, names_except};
use crate::flight::{Flag, Flight, Inbox, Lease};
use crate::{Error, Result, Store, WriteTx, count, now_millis, now_unix};

/// What one pop handed out: the rows, oldest first, and the lease they
/// are in flight under (`None` when there were none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Popped {
    pub messages: Vec<DeliveredMessage>,
    pub lease: Option<i64>,
}

/// A message of a send, checked before it reaches the writer.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) to: Recipient,
    pub(crate) body: String,
    pub(crate) in_reply_to: Option<i64>,
}

/// One broker row, as broker events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: i64,
    pub from: String,
    pub to: String,
    pub body: String,
    /// When it was sent.
    pub at: i64,
    pub in_reply_to: Option<i64>,
}

/// What happened to a message, for the dashboard's live flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageEvent {
    /// A message entered the broker.
    Sent(MessageRow),
    /// A message was popped by its recipient (or marked read).
    Delivered(MessageRow),
}

/// One caller's messages for the single writer ([`crate::writer`]): all
/// or none.
pub(crate) struct Job {
    pub(crate) from: String,
    pub(crate) messages: Vec<Checked>,
    pub(crate) reply: oneshot::Sender<Result<Vec<i64>>>,
}

/// Refuses a body over [`MAX_BODY_BYTES`].
pub(crate) fn check_body(body: &str) -> Result<()> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::BodyTooLarge {
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    Ok(())
}

/// Refuses what no surface may send: an oversized or empty body. (A bad
/// recipient never gets here: a [`Recipient`] is parsed where the request
/// was read.)
fn check_message(body: &str) -> Result<()> {
    check_body(body)?;
    // Here, not at each surface, so host.sock, the dashboard, the
    // agent page and the agent socket refuse an empty body alike.
    if body.trim().is_empty() {
        return Err(Error::Refused(EMPTY_BODY.to_owned()));
    }
    Ok(())
}

/// Stores one message of `from` to `to` (one row per recipient of `*`);
/// the caller commits and then [`Store::announce`]s.
pub(crate) fn insert_send(
    tx: &Connection,
    reach: &Reach,
    from: &str,
    message: &Checked,
    (now, needs_container): (i64, bool),
) -> Result<Vec<MessageRow>> {
    let targets = targets(tx, reach, from, &message.to, needs_container)?;
    insert_to(tx, from, &targets, message, now)
}

/// Stores `message` once per name of `targets` (checked by [`targets`]).
pub(crate) fn insert_to(
    tx: &Connection,
    from: &str,
    targets: &[String],
    message: &Checked,
    now: i64,
) -> Result<Vec<MessageRow>> {
    check_body(&message.body)?;
    check_reply(tx, message)?;
    let rows: Vec<(&str, &str, &Checked)> = targets
        .iter()
        .map(|to| (from, to.as_str(), message))
        .collect();
    insert_rows(tx, &rows, (now, true))
}

/// Refuses `message` if it answers a message id never issued.
pub(crate) fn check_reply(tx: &Connection, message: &Checked) -> Result<()> {
    match message.in_reply_to {
        Some(parent) => check_reply_target(parent, last_issued(tx)?),
        None => Ok(()),
    }
}

/// The largest message id issued so far. Ids are issued in order and the
/// newest row is never vacuumed, so every id up to it was issued (its row
/// may since have been vacuumed). A file from the original system numbers
/// its messages `AUTOINCREMENT`, and its own vacuum may have deleted its
/// newest rows: sqlite goes on above the last id it issued
/// (`sqlite_sequence`, which the store's other `AUTOINCREMENT` tables
/// always create), and so does this.
pub(crate) fn last_issued(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT MAX(COALESCE((SELECT MAX(id) FROM messages), 0),
                        COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0))",
        )?
        .query_row([], |r| r.get(0))?)
}

/// Most rows one `INSERT` stores: a longer list goes in chunks of these
/// sizes, largest first (each size is one cached statement).
const INSERT_CHUNKS: [usize; 4] = [32, 8, 2, 1];
/// Columns each row of [`insert_rows`] binds.
const INSERT_COLUMNS: usize = 5;

/// The `INSERT` of `n` rows (one of [`INSERT_CHUNKS`]), written once.
fn insert_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<(usize, String)>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        INSERT_CHUNKS
            .iter()
            .map(|&n| {
                let values = vec!["(?, ?, ?, ?, ?)"; n].join(", ");
                let sql = format!(
                    "INSERT INTO messages (sender, recipient, body, sent_at, in_reply_to) \
                     VALUES {values}"
                );
                (n, sql)
            })
            .collect()
    });
    all.iter()
        .find(|(size, _)| *size == n)
        .map_or("", |(_, sql)| sql.as_str())
}

/// Stores one message per `(sender, recipient, message)` of `rows`
/// (recipients checked by [`targets`], replies by [`check_reply`], bodies
/// by [`check_body`]), in order; the caller commits and then
/// [`Store::announce`]s. A few multi-row statements rather than one per
/// row: each statement's setup is paid once for many rows. The returned
/// rows carry their bodies only with `bodies`; without, the caller fills
/// them in before it announces them (the writer, after its commit). An error here
/// is the database's, and may leave some of `rows` written: the caller
/// rolls its transaction back.
pub(crate) fn insert_rows(
    conn: &Connection,
    rows: &[(&str, &str, &Checked)],
    (now, bodies): (i64, bool),
) -> Result<Vec<MessageRow>> {
    let mut stored = Vec::with_capacity(rows.len());
    let mut rest = rows;
    while !rest.is_empty() {
        let n = INSERT_CHUNKS
            .into_iter()
            .find(|&n| n <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut stmt = conn.prepare_cached(insert_sql(n))?;
        for (i, (from, to, message)) in chunk.iter().enumerate() {
            let at = i * INSERT_COLUMNS;
            stmt.raw_bind_parameter(at + 1, *from)?;
            stmt.raw_bind_parameter(at + 2, *to)?;
            stmt.raw_bind_parameter(at + 3, message.body.as_str())?;
            stmt.raw_bind_parameter(at + 4, now)?;
            stmt.raw_bind_parameter(at + 5, message.in_reply_to)?;
        }
        stmt.raw_execute()?;
        // sqlite numbered the rows in order, each the next id it issues
        // ([`last_issued`]): the chunk's ids end at the last.
        let last = conn.last_insert_rowid();
        let first = last + 1 - i64::try_from(n).unwrap_or(i64::MAX);
        for (id, (from, to, message)) in (first..).zip(chunk) {
            stored.push(MessageRow {
                id,
                from: (*from).to_owned(),
                to: (*to).to_owned(),
                body: if bodies {
                    message.body.clone()
                } else {
                    String::new()
                },
                at: now,
                in_reply_to: message.in_reply_to,
            });
        }
        rest = tail;
    }
    Ok(stored)
}

/// The inboxes a message of `from` to `to` goes to, refusing an unknown
/// agent or one `from` may not reach.
pub(crate) fn targets(
    tx: &Connection,
    reach: &Reach,
    from: &str,
    to: &Recipient,
    needs_container: bool,
) -> Result<Vec<String>> {
    Ok(match to {
        Recipient::Operator => vec![OPERATOR_RECIPIENT.to_owned()],
        Recipient::Agent(name) => {
            reach.check(tx, from, name.as_str())?;
            vec![name.to_string()]
        }
        Recipient::Broadcast => {
            let list = reach.allow_list(tx, from)?;
            let mut names = names_except(tx, from, needs_container)?;
            names.retain(|n| allows(list.as_deref(), n));
            names
        }
    })
}

/// Refuses a sender that is not an agent name, `operator` or `system`.
fn check_sender(from: &str) -> Result<()> {
    if from != OPERATOR_RECIPIENT && from != SYSTEM_SENDER {
        AgentName::parse(from)?;
    }
    Ok(())
}

/// Inserts one message; the caller commits and then [`Store::announce`]s.
pub(crate) fn insert_message(
    conn: &Connection,
    from: &str,
    to: &str,
    body: &str,
    at: i64,
    in_reply_to: Option<i64>,
) -> Result<MessageRow> {
    check_body(body)?;
    conn.prepare_cached(
        "INSERT INTO messages (sender, recipient, body, sent_at, in_reply_to)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((from, to, body, at, in_reply_to))?;
    Ok(MessageRow {
        id: conn.last_insert_rowid(),
        from: from.to_owned(),
        to: to.to_owned(),
        body: body.to_owned(),
        at,
        in_reply_to,
    })
}

/// Inserts a helper event from `system` into the inbox of the registered
/// agent `to`.
pub(crate) fn insert_helper_event(
    conn: &Connection,
    to: &str,
    event: &HelperEvent,
    at: i64,
) -> Result<MessageRow> {
    if !exists(conn, to)? {
        return Err(Error::UnknownAgent(to.to_owned()));
    }
    let body = serde_json::to_string(event)
        .map_err(|e| Error::Refused(format!("cannot encode helper event: {e}")))?;
    insert_message(conn, SYSTEM_SENDER, to, &body, at, None)
}

/// Refuses an `in_reply_to` naming a message id above `last` (the last id
/// issued, [`last_issued`]).
pub(crate) fn check_reply_target(id: i64, last: i64) -> Result<()> {
    if (1..=last).contains(&id) {
        Ok(())
    } else {
        Err(Error::NotFound {
            what: "message",
            id,
        })
    }
}

/// Ids [`Store::vacuum_acked`] reads per run of its range.
const VACUUM_ROWS: i64 = 4096;

/// The id from which every row was sent at or after `cutoff` (unix
/// seconds), taking rows as sent in id order: a bisection over the
/// table's ids, each step one lookup of the first row at or above an id.
fn sent_since(conn: &Connection, cutoff: i64) -> Result<i64> {
    let mut first_from = conn.prepare_cached(
        "SELECT id, sent_at FROM messages WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 1",
    )?;
    // Rows below `lo` were sent before the cutoff; rows from `hi` on, at or after it.
    let (mut lo, mut hi) = (0_i64, last_issued(conn)?.saturating_add(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let row: Option<(i64, i64)> = first_from
            .query_row([mid, hi], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match row {
            Some((id, sent_at)) if sent_at < cutoff => lo = id + 1,
            // None between `mid` and that row (or `hi`).
            _ => hi = mid,
        }
    }
    Ok(lo)
}

const RETURNING_DELIVERED: &str = "RETURNING id, sender, recipient, body, sent_at, in_reply_to, \
     redelivered";

fn delivered_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveredMessage> {
    Ok(DeliveredMessage {
        id: row.get(0)?,
        from: row.get(1)?,
        to: row.get(2)?,
        body: row.get(3)?,
        at: row.get(4)?,
        in_reply_to: row.get(5)?,
        redelivered: row.get(6)?,
    })
}

fn row_of(m: &DeliveredMessage) -> MessageRow {
    MessageRow {
        id: m.id,
        from: m.from.clone(),
        to: m.to.clone(),
        body: m.body.clone(),
        at: m.at,
        in_reply_to: m.in_reply_to,
    }
}

impl Store {
    /// Sends `body` from `from` (an agent, `operator` or `system`) to `to`:
    /// an agent name, `operator`, or `*` (one row per registered agent
    /// except the sender, never the operator; an allow-listed sender
    /// reaches only the agents its list allows, plus the manager). Returns
    /// the new row ids, one per recipient.
    pub fn send(
        &self,
        from: &str,
        to: &Recipient,
        body: &str,
        in_reply_to: Option<i64>,
    ) -> Result<Vec<i64>> {
        check_message(body)?;
        let message = Checked {
            to: to.clone(),
            body: body.to_owned(),
            in_reply_to,
        };
        check_sender(from)?;
        let rows = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let rows = insert_send(
                &tx,
                &self.inner.reach,
                from,
                &message,
                (now_unix(), self.broadcast_needs_container()),
            )?;
            tx.commit()?;
            rows
        };
        let ids = rows.iter().map(|r| r.id).collect();
        self.announce(rows);
        Ok(ids)
    }

    /// Sends every one of `messages` from `from`, all or none: one id per
    /// stored row, in order (a `*` stores one row per recipient). Goes
    /// through the single writer, so concurrent sends from every socket
    /// share one transaction; returns once that transaction committed.
    pub async fn send_batch(&self, from: &str, messages: Vec<OutgoingMessage>) -> Result<Vec<i64>> {
        if messages.is_empty() {
            return Err(Error::Refused(
                "a send_batch needs at least one message".into(),
            ));
        }
        if messages.len() > MAX_SEND_BATCH {
            return Err(Error::Refused(format!(
                "a send_batch carries at most {MAX_SEND_BATCH} messages, not {}",
                messages.len()
            )));
        }
        check_sender(from)?;
        let many = messages.len() > 1;
        let messages = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                check_message(&m.body).map_err(|e| match many {
                    false => e,
                    true => Error::Refused(format!("message {}: {e}", i + 1)),
                })?;
                Ok(Checked {
                    to: m.to,
                    body: m.body,
                    in_reply_to: m.in_reply_to,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            from: from.to_owned(),
            messages,
            reply,
        };
        self.submit(job);
        answer
            .await
            .map_err(|_| Error::Refused("the broker's writer has stopped".into()))?
    }

    /// Pushes `event` into the inbox of `to` (a registered agent) as a
    /// message from `system` whose body is the event's JSON.
    pub fn push_helper_event(&self, to: &str, event: &HelperEvent) -> Result<i64> {
        let row = insert_helper_event(&self.conn(), to, event, now_unix())?;
        let id = row.id;
        self.announce(vec![row]);
        Ok(id)
    }

    /// Pops up to `max` (0 counts as 1, capped at 32) pending messages of
    /// `recipient`, oldest first, marking them in flight under a held lease
    /// with no expiry (the original's `recv`).
    pub fn recv_batch(&self, recipient: &str, max: u32) -> Result<Vec<DeliveredMessage>> {
        Ok(self.pop(recipient, max, None)?.messages)
    }

    /// Pops up to `max` (0 counts as 1, capped at 32) pending messages of
    /// `recipient`, oldest first, in flight under a new lease. With
    /// `lease_for`, an exact lease: unheld until its client names it
    /// ([`Store::renew_lease`], [`Store::ack`]), and it runs out `lease_for`
    /// after its last renewal. Without, held at once and never running out.
    ///
    /// Writes nothing: the rows are taken from memory when it holds them
    /// all, else read (in a read transaction), and marked in flight in
    /// memory ([`crate::flight`]); only their ack is durable.
    pub fn pop(&self, recipient: &str, max: u32, lease_for: Option<Duration>) -> Result<Popped> {
        let max = usize::try_from(max.clamp(1, MAX_RECV_BATCH)).unwrap_or(1);
        let period_ms = lease_for.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut until = None;
        let popped = {
            let mut flight = self.flight();
            if flight.stopped {
                return Err(Error::Refused("the broker is stopping".into()));
            }
            // Loaded first (from the file, the first time), for memory too.
            self.inbox(&mut flight, recipient)?;
            let mut gone = Vec::new();
            let fresh = flight.take_fresh(recipient, max, self.inner.unannounced.none());
            let messages = if let Some(fresh) = fresh {
                fresh
            } else {
                let inbox = self.inbox(&mut flight, recipient)?;
                let cursor = inbox.cursor;
                let returned: Vec<(i64, bool)> = inbox
                    .returned
                    .iter()
                    .take(max)
                    .map(|(i, f)| (*i, *f))
                    .collect();
                let mut messages = Vec::with_capacity(max);
                let conn = self.conn();
                if !returned.is_empty() {
                    // Put back: at or below the cursor, so older than any
                    // row above it.
                    let mut stmt = conn.prepare_cached(
                        "SELECT id, sender, recipient, body, sent_at, in_reply_to, redelivered
                         FROM messages WHERE id = ?1 AND recipient = ?2 AND delivered_at IS NULL",
                    )?;
                    for (id, flagged) in &returned {
                        match stmt
                            .query_row((id, recipient), delivered_from_row)
                            .optional()?
                        {
                            Some(mut m) => {
                                m.redelivered |= flagged;
                                messages.push(m);
                            }
                            None => gone.push(*id),
                        }
                    }
                }
                if messages.len() < max {
                    let more = conn
                        .prepare_cached(
                            "SELECT id, sender, recipient, body, sent_at, in_reply_to, redelivered
                             FROM messages WHERE recipient = ?1 AND id > ?2 AND delivered_at IS NULL
                             ORDER BY id LIMIT ?3",
                        )?
                        .query_map(
                            (recipient, cursor, crate::limit(count(max - messages.len()))),
                            delivered_from_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    messages.extend(more);
                }
                messages
            };
            if let Some(inbox) = flight.inboxes.get_mut(recipient) {
                for id in gone {
                    inbox.returned.remove(&id);
                }
            }
            let mut lease = None;
            if !messages.is_empty() {
                let now_ms = now_millis();
                let id = self.next_lease(now_ms);
                until = period_ms.map(|ms| now_ms.saturating_add(ms));
                let rows: Vec<(i64, bool)> =
                    messages.iter().map(|m| (m.id, m.redelivered)).collect();
                flight.hand_out(
                    id,
                    Lease {
                        recipient: recipient.to_owned(),
                        held: period_ms.is_none(),
                        period_ms,
                        until_ms: until,
                        ids: rows.iter().map(|(id, _)| *id).collect(),
                    },
                    &rows,
                );
                lease = Some(id);
            }
            Popped { messages, lease }
        };
        if let Some(until) = until {
            self.lease_scheduled(until);
        }
        if self.publishing() {
            for m in &popped.messages {
                let _ = self.inner.events.send(MessageEvent::Delivered(row_of(m)));
            }
        }
        Ok(popped)
    }

    /// Long-polls: waits up to `wait` (capped at 180 s) for a message of
    /// `recipient`, then pops up to `max` like [`Store::pop`]. Wakes as soon
    /// as a send to it commits. Empty when the wait ran out.
    ///
    /// Popping happens synchronously inside one poll, so dropping this
    /// future never loses a message; a popped batch whose response could
    /// not be written goes back with [`Store::undeliver`].
    pub async fn recv_wait(
        &self,
        recipient: &str,
        wait: Duration,
        max: u32,
        lease_for: Option<Duration>,
    ) -> Result<Popped> {
        let wait = wait.min(Duration::from_secs(MAX_WAIT_SECONDS));
        let deadline = tokio::time::Instant::now() + wait;
        let notify = self.waiter(recipient);
        loop {
            let mut notified = std::pin::pin!(notify.notified());
            // Register before looking, so a send committing in between
            // still wakes us.
            notified.as_mut().enable();
            let popped = self.pop(recipient, max, lease_for)?;
            if !popped.messages.is_empty() {
                return Ok(popped);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Popped::default());
            }
        }
    }

    /// A lease id never handed out before: above every lease of this
    /// process, and above the clock (so a lease a client kept from the last
    /// daemon is never one of this one's).
    fn next_lease(&self, now_ms: i64) -> i64 {
        let floor = now_ms.saturating_mul(1024);
        let mut current = self.inner.leases.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(1).max(floor);
            match self.inner.leases.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// The client named `lease` (it holds the rows): the lease is held and
    /// runs for another period. Refused when none of `recipient`'s rows are
    /// in flight under it any more (expired, returned or acked), or the
    /// broker is stopping: the client must then drop the batch — it will
    /// come again.
    pub fn renew_lease(&self, recipient: &str, lease: i64) -> Result<u64> {
        let now_ms = now_millis();
        let (n, until) = {
            let mut flight = self.flight();
            let stopped = flight.stopped;
            match flight.leases.get_mut(&lease) {
                Some(l) if !stopped && l.recipient == recipient && !l.ids.is_empty() => {
                    l.held = true;
                    l.until_ms = l.period_ms.map(|ms| now_ms.saturating_add(ms));
                    (l.ids.len(), l.until_ms)
                }
                _ => {
                    return Err(Error::NotFound {
                        what: "lease in flight",
                        id: lease,
                    });
                }
            }
        };
        if let Some(until) = until {
            self.lease_scheduled(until);
        }
        Ok(count(n))
    }

    /// `lease`'s connection closed before its client named it: its rows
    /// still in flight go back unflagged (nobody saw them). A held lease
    /// is left alone. Returns how many went back.
    pub fn release_lease(&self, lease: i64) -> Result<u64> {
        let (recipient, n) = {
            let mut flight = self.flight();
            let (recipient, ids) = match flight.leases.get(&lease) {
                Some(l) if !l.held => (l.recipient.clone(), l.ids.clone()),
                _ => return Ok(0),
            };
            let n = flight.put_back(&recipient, &ids, Flag::Unflagged);
            (recipient, n)
        };
        if n > 0 {
            self.wake(&recipient);
        }
        Ok(count(n))
    }

    /// Puts back the rows whose lease ran out by `now_ms`: flagged
    /// `redelivered` if their lease was held (a turn may have acted on
    /// them), unflagged if not. Returns how many went back.
    pub fn expire_leases(&self, now_ms: i64) -> Result<u64> {
        let mut woken = BTreeSet::new();
        let mut n = 0;
        {
            let mut flight = self.flight();
            let expired: Vec<(String, Vec<i64>)> = flight
                .leases
                .values()
                .filter(|l| l.until_ms.is_some_and(|until| until <= now_ms))
                .map(|l| (l.recipient.clone(), l.ids.clone()))
                .collect();
            for (recipient, ids) in expired {
                n += flight.put_back(&recipient, &ids, Flag::IfHeld);
                woken.insert(recipient);
            }
        }
        for recipient in &woken {
            self.wake(recipient);
        }
        Ok(count(n))
    }

    /// When the earliest lease runs out (unix ms), if any.
    pub fn next_lease_expiry(&self) -> Result<Option<i64>> {
        Ok(self.flight().next_expiry())
    }

    /// Notified when a lease may run out before the time the expiry timer
    /// sleeps until ([`Store::set_lease_alarm`]).
    pub fn lease_changed(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.lease_changed)
    }

    /// The expiry timer sleeps until `at_ms` (`i64::MAX`: no lease).
    pub fn set_lease_alarm(&self, at_ms: i64) {
        self.inner.lease_alarm.store(at_ms, Ordering::Relaxed);
    }

    /// A lease now runs out at `until_ms`: wakes the expiry timer if it
    /// sleeps past that.
    fn lease_scheduled(&self, until_ms: i64) {
        if until_ms < self.inner.lease_alarm.load(Ordering::Relaxed) {
            self.inner.lease_alarm.store(until_ms, Ordering::Relaxed);
            self.inner.lease_changed.notify_one();
        }
    }

    /// Returns `recipient`'s popped, unacked rows `ids` to pending (their
    /// response never reached the client), as they went out (a row that
    /// went out flagged `redelivered` stays flagged), and wakes its
    /// waiters. Rows not in flight are left alone. Returns how many went
    /// back.
    pub fn undeliver(&self, recipient: &str, ids: &[i64]) -> Result<u64> {
        let n = self.flight().put_back(recipient, ids, Flag::Unflagged);
        if n > 0 {
            self.wake(recipient);
        }
        Ok(count(n))
    }

    /// The turn succeeded (the original's `ack_turn`, no ids): acks every
    /// in-flight row of `recipient` its clients hold — never one handed to
    /// a connection that has not named its lease (nobody may have read it).
    pub fn ack_turn(&self, recipient: &str) -> Result<u64> {
        let mut flight = self.flight();
        let ids = flight.ids_where(recipient, |_, lease| lease.held);
        self.ack_rows(&mut flight, recipient, &ids)
    }

    /// The turn succeeded: acks exactly `recipient`'s in-flight rows named
    /// by `ids`, or under `lease` and the held leases handed out after it
    /// (what the turn's own tools popped and read), nothing else. Returns
    /// how many.
    pub fn ack(&self, recipient: &str, ids: &[i64], lease: Option<i64>) -> Result<u64> {
        let mut flight = self.flight();
        let mut chosen = match lease {
            Some(named) => flight.ids_where(recipient, |lease_id, l| {
                lease_id == named || (lease_id > named && l.held)
            }),
            None => Vec::new(),
        };
        if let Some(inbox) = flight.inboxes.get(recipient) {
            chosen.extend(ids.iter().filter(|id| inbox.out.contains_key(id)));
        }
        chosen.sort_unstable();
        chosen.dedup();
        self.ack_rows(&mut flight, recipient, &chosen)
    }

    /// Acks `ids` (in flight for `recipient`, ascending) in one
    /// transaction, then takes them out of flight. `flight` stays locked
    /// throughout, so no pop hands a row out again while its ack commits.
    fn ack_rows(&self, flight: &mut Flight, recipient: &str, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let now = now_unix();
        let runs = flight.runs(recipient, ids);
        let mut n = 0;
        {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            {
                // A range over the table's own rowids (`NOT INDEXED`): the
                // scan does not walk an index the update changes, and each
                // run's rows are exactly `recipient`'s unacked ones in it.
                let mut stmt = tx.prepare_cached(
                    "UPDATE messages NOT INDEXED SET delivered_at = ?1, acked_at = ?1
                     WHERE id BETWEEN ?2 AND ?3 AND recipient = ?4 AND delivered_at IS NULL",
                )?;
                for (first, last) in runs {
                    n += stmt.execute((now, first, last, recipient))?;
                }
            }
            tx.commit()?;
        }
        flight.take(recipient, ids);
        Ok(count(n))
    }

    /// Harness boot: puts every in-flight row of `recipient` back in its
    /// inbox — flagged `redelivered` if its lease was held (a turn may have
    /// acted on it), unflagged if nobody saw it — and wakes its waiters.
    pub fn requeue_inflight(&self, recipient: &str) -> Result<u64> {
        let n = {
            let mut flight = self.flight();
            let ids = flight.ids_where(recipient, |_, _| true);
            flight.put_back(recipient, &ids, Flag::IfHeld)
        };
        if n > 0 {
            self.wake(recipient);
        }
        Ok(count(n))
    }

    /// Daemon start: recovers the broker from how the last daemon ended,
    /// and marks this one running. After a clean stop
    /// ([`Store::stop_broker`]) the file already says which rows come
    /// again flagged. After a crash (the last daemon's mark is still
    /// there), what was in flight is unknown (it lived in memory): every
    /// unacked row is treated as possibly seen and comes again flagged
    /// `redelivered`. Returns how many rows that flagged.
    pub fn recover_broker(&self) -> Result<u64> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let crashed = tx.execute("DELETE FROM broker_running", [])? > 0;
        let n = if crashed {
            tx.execute(
                "UPDATE messages SET redelivered = 1
                 WHERE delivered_at IS NULL AND redelivered = 0",
                [],
            )?
        } else {
            0
        };
        tx.execute(
            "INSERT INTO broker_running (since) VALUES (?1)",
            [now_unix()],
        )?;
        tx.commit()?;
        Ok(count(n))
    }

    /// Daemon stop: writes the `redelivered` flag of every row that would
    /// come back flagged (in flight under a held lease, or put back
    /// flagged) and clears the running mark, in one transaction; from then
    /// on nothing is handed out and no lease is named. The rows in flight
    /// under unheld leases come again unflagged.
    pub fn stop_broker(&self) -> Result<()> {
        let mut flight = self.flight();
        if flight.stopped {
            return Ok(());
        }
        let ids = flight.flagged();
        {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE messages SET redelivered = 1 WHERE id = ?1 AND delivered_at IS NULL",
                )?;
                for id in &ids {
                    stmt.execute([id])?;
                }
            }
            tx.execute("DELETE FROM broker_running", [])?;
            tx.commit()?;
        }
        flight.stopped = true;
        Ok(())
    }

    /// How many messages wait in `recipient`'s inbox (unacked and not in
    /// flight), as of the last announced commit: those above its cursor
    /// and those put back, both counted in memory ([`crate::flight`]), so
    /// an answer's count reads nothing once the inbox is loaded. It takes
    /// the in-flight lock, which an ack holds through its commit and a pop
    /// while it reads.
    pub fn unread(&self, recipient: &str) -> Result<u64> {
        let mut flight = self.flight();
        Ok(count(self.inbox(&mut flight, recipient)?.unread()))
    }

    /// `recipient`'s inbox in [`Flight`], read from the file the first
    /// time it is needed: every unacked row then is put back (nothing of
    /// this daemon's is in flight yet), and the cursor is the last id
    /// issued, so every row above it is unacked.
    fn inbox<'f>(&self, flight: &'f mut Flight, recipient: &str) -> Result<&'f mut Inbox> {
        if !flight.inboxes.contains_key(recipient) {
            let conn = self.conn();
            // The last id first: every row up to it has committed, and no
            // row of `recipient` is acked meanwhile (acks hold `flight`).
            let cursor = last_issued(&conn)?;
            let returned = conn
                .prepare_cached(
                    "SELECT id FROM messages
                     WHERE recipient = ?1 AND id <= ?2 AND delivered_at IS NULL",
                )?
                .query_map((recipient, cursor), |r| Ok((r.get::<_, i64>(0)?, false)))?
                .collect::<rusqlite::Result<_>>()?;
            flight.inboxes.insert(
                recipient.to_owned(),
                Inbox {
                    cursor,
                    returned,
                    out: Default::default(),
                    above: Default::default(),
                    fresh: Default::default(),
                    fresh_bytes: 0,
                },
            );
        }
        flight
            .inboxes
            .get_mut(recipient)
            .ok_or_else(|| Error::Refused(format!("no inbox for {recipient}")))
    }

    /// How many messages of `recipient` are popped but not yet acked.
    pub fn inflight(&self, recipient: &str) -> Result<u64> {
        Ok(count(self.flight().out(recipient)))
    }

    /// The last `limit` messages addressed to `recipient`, newest first,
    /// whatever their state. Non-mutating.
    pub fn recent(&self, recipient: &str, limit: u64) -> Result<Vec<InboxRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id, sender, body, sent_at FROM messages WHERE recipient = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map((recipient, crate::limit(limit)), |r| {
                Ok(InboxRow {
                    id: r.get(0)?,
                    from: r.get(1)?,
                    body: r.get(2)?,
                    at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// One message by id.
    pub fn message(&self, id: i64) -> Result<MessageRow> {
        self.conn()
            .prepare_cached(
                "SELECT id, sender, recipient, body, sent_at, in_reply_to
                 FROM messages WHERE id = ?1",
            )?
            .query_row([id], |r| {
                Ok(MessageRow {
                    id: r.get(0)?,
                    from: r.get(1)?,
                    to: r.get(2)?,
                    body: r.get(3)?,
                    at: r.get(4)?,
                    in_reply_to: r.get(5)?,
                })
            })
            .optional()?
            .ok_or(Error::NotFound {
                what: "message",
                id,
            })
    }

    /// Marks every pending or in-flight message of `recipient` delivered and
    /// acked now. Returns how many rows were finished.
    pub fn mark_all_read(&self, recipient: &str) -> Result<u64> {
        let now = now_unix();
        let mut flight = self.flight();
        let mut delivered = {
            let conn = self.conn();
            let tx = WriteTx::begin(&conn)?;
            let delivered = tx
                .prepare_cached(&format!(
                    "UPDATE messages SET delivered_at = ?1, acked_at = ?1
                     WHERE recipient = ?2 AND delivered_at IS NULL {RETURNING_DELIVERED}"
                ))?
                .query_map((now, recipient), delivered_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            delivered
        };
        let n = count(delivered.len());
        // Rows in flight were announced delivered when they were popped.
        if let Some(inbox) = flight.inboxes.get(recipient) {
            delivered.retain(|m| !inbox.out.contains_key(&m.id));
        }
        // Read again when next needed: every row of it is acked now.
        flight.forget(recipient);
        drop(flight);
        if self.publishing() {
            delivered.sort_unstable_by_key(|m| m.id);
            for m in &delivered {
                let _ = self.inner.events.send(MessageEvent::Delivered(row_of(m)));
            }
        }
        Ok(n)
    }

    /// Deletes acked messages sent and acked more than `older_than` ago.
    /// Pending and in-flight rows are never removed, however old, and
    /// neither is the newest row (it keeps message ids from ever being
    /// reused).
    ///
    /// No index finds the acked rows (an ack writes one page less): a
    /// row is acked after it is sent, and rows are sent in id order, so
    /// the candidates are the ids below the first row sent since the
    /// cutoff, found by bisection ([`sent_since`]), and the delete reads
    /// only that range. A row is still deleted only if it was acked
    /// before the cutoff; a clock that ran ahead delays the rows sent
    /// after it too, by at most its lead.
    ///
    /// The range also holds every row never acked (an inbox nobody
    /// reads keeps them), so it is read [`VACUUM_ROWS`] ids at a time,
    /// the store's connection taken for each run alone: sends wait for
    /// one run at most, however large the range.
    pub fn vacuum_acked(&self, older_than: Duration) -> Result<u64> {
        self.vacuum_acked_by(older_than, VACUUM_ROWS)
    }

    /// [`Store::vacuum_acked`] reading `ids` ids per run.
    fn vacuum_acked_by(&self, older_than: Duration, ids: i64) -> Result<u64> {
        let cutoff =
            now_unix().saturating_sub(i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX));
        let (mut from, end) = {
            let conn = self.conn();
            let first: Option<i64> =
                conn.query_row("SELECT MIN(id) FROM messages", [], |r| r.get(0))?;
            (first.unwrap_or(0), sent_since(&conn, cutoff)?)
        };
        let mut n = 0;
        while from < end {
            let conn = self.conn();
            let to = from.saturating_add(ids.max(1)).min(end);
            n += conn
                .prepare_cached(
                    "DELETE FROM messages WHERE id >= ?1 AND id < ?2
                     AND acked_at IS NOT NULL AND acked_at < ?3
                     AND id < (SELECT MAX(id) FROM messages)",
                )?
                .execute([from, to, cutoff])?;
            // The next run starts at a row (a lookup, no scan): over a gap
            // of ids, however wide, no run is empty.
            let next: Option<i64> = conn
                .prepare_cached("SELECT MIN(id) FROM messages WHERE id >= ?1")?
                .query_row([to], |r| r.get(0))?;
            from = next.unwrap_or(end).max(to);
        }
        Ok(count(n))
    }

    /// A receiver of every later [`MessageEvent`], published while a
    /// [`Store::watch_flow`] guard lives.
    pub fn subscribe(&self) -> broadcast::Receiver<MessageEvent> {
        self.inner.events.subscribe()
    }

    /// Publishes the message flow to [`Store::subscribe`]rs until the
    /// guard drops (a dashboard stream is open). With nobody watching, a
    /// message costs no event: no copy of its row, no broadcast.
    pub fn watch_flow(&self) -> crate::FlowWatch {
        self.inner.flow_watchers.fetch_add(1, Ordering::Relaxed);
        crate::FlowWatch(Arc::clone(&self.inner.flow_watchers))
    }

    /// Whether the flow is published now: watched, and subscribed to.
    pub(crate) fn publishing(&self) -> bool {
        self.inner.flow_watchers.load(Ordering::Relaxed) > 0
            && self.inner.events.receiver_count() > 0
    }

    /// After a commit: counts each row as waiting in its inbox (keeping
    /// its content for the next pop, [`crate::flight`]), wakes its
    /// recipient and publishes it as sent. Every path that stores a
    /// message calls this once its transaction committed, with every row
    /// it stored, bodies included (the unread count is kept from it).
    pub(crate) fn announce(&self, rows: Vec<MessageRow>) {
        // A batch mostly repeats one recipient: wake it once.
        let mut woken: Vec<String> = Vec::new();
        for row in &rows {
            if woken.last() != Some(&row.to) {
                woken.push(row.to.clone());
            }
        }
        let events = self.publishing().then(|| rows.clone());
        let arrived = rows
            .into_iter()
            .map(|row| DeliveredMessage {
                id: row.id,
                from: row.from,
                to: row.to,
                body: row.body,
                at: row.at,
                in_reply_to: row.in_reply_to,
                // A new row: it never went out.
                redelivered: false,
            })
            .collect();
        // Before the wake: a woken pop finds the rows in memory.
        self.flight().arrived(arrived, &self.inner.unannounced);
        for to in &woken {
            self.wake(to);
        }
        for row in events.into_iter().flatten() {
            let _ = self.inner.events.send(MessageEvent::Sent(row));
        }
    }

    /// Wakes every long-poll currently waiting on `recipient`.
    fn wake(&self, recipient: &str) {
        let waiters = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = waiters.get(recipient) {
            notify.notify_waiters();
        }
    }

    /// The `Notify` long-polls of `recipient` park on.
    fn waiter(&self, recipient: &str) -> Arc<Notify> {
        let mut waiters = self
            .inner
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(waiters.entry(recipient.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        Store::for_tests(&["alice", "bob"])
    }

    fn send(store: &Store, body: &str) -> i64 {
        store
            .send("alice", &Recipient::parse("bob").unwrap(), body, None)
            .unwrap()[0]
    }

    /// A row committed and not yet announced (its sender not scheduled
    /// again yet) is older than a row announced after it: a pop then reads
    /// the file, so it comes first, and the newer row, kept in memory,
    /// comes next. Taken from memory alone, the newer row would come
    /// first and the older one be left below the cursor, never handed
    /// out.
    #[test]
    fn a_row_not_yet_announced_is_popped_before_a_newer_one_in_memory() {
        let (_dir, store) = store();
        assert!(store.pop("bob", 1, None).unwrap().messages.is_empty());
        let late = {
            let conn = store.conn();
            insert_message(&conn, "alice", "bob", "older", now_unix(), None).unwrap()
        };
        send(&store, "newer");
        let bodies = |p: Popped| p.messages.into_iter().map(|m| m.body).collect::<Vec<_>>();
        assert_eq!(bodies(store.pop("bob", 1, None).unwrap()), ["older"]);
        assert_eq!(bodies(store.pop("bob", 1, None).unwrap()), ["newer"]);
        // Its late announcement counts nothing twice.
        store.announce(vec![late]);
        assert_eq!(store.unread("bob").unwrap(), 0);
        assert!(store.inner.unannounced.none());
        assert!(store.pop("bob", 1, None).unwrap().messages.is_empty());
    }

    /// Rows announced while nothing else is written come from memory,
    /// as sent, oldest first, within the cap; the rest from the file.
    /// A transaction rolled back leaves nothing counted.
    #[test]
    fn announced_rows_come_from_memory_and_the_rest_from_the_file() {
        let (_dir, store) = store();
        assert!(store.pop("bob", 1, None).unwrap().messages.is_empty());
        {
            let conn = store.conn();
            let tx = WriteTx::begin(&conn).unwrap();
            insert_message(&tx, "alice", "bob", "gone", now_unix(), None).unwrap();
            drop(tx);
        }
        assert!(store.inner.unannounced.none());
        let n = crate::flight::FRESH_ROWS + 5;
        let ids: Vec<i64> = (0..n).map(|i| send(&store, &format!("m{i}"))).collect();
        assert!(store.inner.unannounced.none());
        let kept = store.flight().inboxes["bob"].fresh.len();
        assert_eq!(kept, crate::flight::FRESH_ROWS);
        let mut popped = Vec::new();
        loop {
            let p = store.pop("bob", 32, None).unwrap();
            if p.messages.is_empty() {
                break;
            }
            popped.extend(p.messages);
        }
        assert_eq!(popped.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        for (i, m) in popped.iter().enumerate() {
            assert_eq!((m.from.as_str(), m.to.as_str()), ("alice", "bob"));
            assert_eq!(m.body, format!("m{i}"));
            assert!(!m.redelivered);
        }
        assert_eq!(store.flight().fresh_bytes, 0);
    }

    /// One inbox keeps at most its share of bytes: an inbox nobody pops
    /// cannot take the memory every other inbox's pops use. What is not
    /// kept is read from the file, in order.
    #[test]
    fn an_inbox_keeps_only_its_share_of_bytes() {
        let (_dir, store) = store();
        assert!(store.pop("bob", 1, None).unwrap().messages.is_empty());
        let big = 60 * 1024;
        let bodies: Vec<String> = (0..6).map(|i| format!("{i}").repeat(big)).collect();
        for body in &bodies {
            send(&store, body);
        }
        {
            let flight = store.flight();
            let inbox = &flight.inboxes["bob"];
            assert_eq!(
                inbox.fresh.len(),
                crate::flight::FRESH_BYTES_PER_INBOX / big
            );
            assert!(inbox.fresh_bytes <= crate::flight::FRESH_BYTES_PER_INBOX);
        }
        let popped = store.pop("bob", 32, None).unwrap().messages;
        let got: Vec<&String> = popped.iter().map(|m| &m.body).collect();
        assert_eq!(got, bodies.iter().collect::<Vec<_>>());
        assert_eq!(store.flight().fresh_bytes, 0);
    }

    /// All inboxes together keep at most their total: one agent's
    /// broadcasts of large bodies to every other agent, whose inboxes are
    /// read and nobody pops, stop being kept at [`crate::flight::FRESH_BYTES`]
    /// — and every inbox still pops every row, in order, as sent.
    #[test]
    fn every_inbox_together_keeps_at_most_the_total() {
        let names: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.push("sender");
        let (_dir, store) = Store::for_tests(&all);
        for name in &names {
            assert!(store.pop(name, 1, None).unwrap().messages.is_empty());
        }
        let bodies: Vec<String> = (0..5).map(|i| format!("{i}").repeat(60 * 1024)).collect();
        for body in &bodies {
            store
                .send("sender", &Recipient::Broadcast, body, None)
                .unwrap();
        }
        let kept = store.flight().fresh_bytes;
        assert!(kept <= crate::flight::FRESH_BYTES, "{kept} bytes kept");
        // Each inbox's own share would hold more than the total allows.
        const { assert!(40 * crate::flight::FRESH_BYTES_PER_INBOX > crate::flight::FRESH_BYTES) };
        for name in &names {
            let popped = store.pop(name, 32, None).unwrap().messages;
            let got: Vec<(&str, &String)> =
                popped.iter().map(|m| (m.from.as_str(), &m.body)).collect();
            let sent: Vec<(&str, &String)> = bodies.iter().map(|b| ("sender", b)).collect();
            assert_eq!(got, sent, "{name}");
        }
        assert_eq!(store.flight().fresh_bytes, 0);
    }

    /// The vacuum read a few ids per run deletes exactly what it
    /// deletes in one run, over rows never acked, acked late and old,
    /// with gaps: the runs tile the range, none skipped or read twice.
    #[test]
    fn a_vacuum_in_short_runs_deletes_what_one_run_does() {
        let day = 86_400;
        let left = |rows: i64| {
            let (_dir, store) = store();
            let now = now_unix();
            let conn = store.conn();
            for i in 0..200_i64 {
                let sent = now - (200 - i) * day - day / 2;
                let acked = match i {
                    _ if i % 3 == 0 => None,
                    _ if i % 4 == 0 => Some(now - day / 2),
                    _ => Some(sent + day),
                };
                insert_message(&conn, "alice", "bob", "m", sent, None).unwrap();
                conn.execute(
                    "UPDATE messages SET delivered_at = ?1, acked_at = ?1 WHERE id = ?2",
                    (acked, conn.last_insert_rowid()),
                )
                .unwrap();
            }
            conn.execute("DELETE FROM messages WHERE id % 13 = 0", [])
                .unwrap();
            drop(conn);
            let n = store
                .vacuum_acked_by(Duration::from_secs(30 * day.unsigned_abs()), rows)
                .unwrap();
            let ids: Vec<i64> = store
                .conn()
                .prepare("SELECT id FROM messages ORDER BY id")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            (n, ids)
        };
        let whole = left(VACUUM_ROWS);
        assert!(whole.0 > 50, "{} deleted", whole.0);
        assert_eq!(left(7), whole);
        assert_eq!(left(1), whole);
    }

    /// A registry change that is rolled back counts for nothing, even
    /// after a send's check read it inside its transaction.
    #[test]
    fn a_rolled_back_registry_change_is_not_remembered() {
        let (_dir, store) = store();
        store
            .register_agent(&AgentName::parse("carol").unwrap())
            .unwrap();
        {
            let conn = store.conn();
            let tx = WriteTx::begin(&conn).unwrap();
            tx.execute(
                "UPDATE agents SET allowed_recipients = '[\"bob\"]' WHERE name = 'alice'",
                [],
            )
            .unwrap();
            let refused = store.inner.reach.check(&tx, "alice", "carol");
            assert!(matches!(refused, Err(Error::NotAllowed { .. })));
            drop(tx);
        }
        store
            .send("alice", &Recipient::parse("carol").unwrap(), "hi", None)
            .unwrap();
    }

    /// Sends to ever new names that are not agents leave nothing behind:
    /// the registry kept in memory holds registered names only. Sent as
    /// an agent's socket sends (`send_batch`, through the writer), where a
    /// refused job rolls nothing back, so nothing clears what it read.
    #[test]
    fn sends_to_unknown_names_are_not_remembered() {
        let (_dir, store) = store();
        send(&store, "first");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            for i in 0..2_000 {
                let message = OutgoingMessage {
                    to: Recipient::parse(&format!("ghost{i}")).unwrap(),
                    body: "hi".into(),
                    in_reply_to: None,
                };
                let refused = store.send_batch("alice", vec![message]).await;
                assert!(
                    matches!(refused, Err(Error::UnknownAgent(_))),
                    "{refused:?}"
                );
            }
        });
        assert!(store.inner.reach.known_names() <= 2);
    }

    /// An allow-list the file holds but cannot be read (edited by hand)
    /// refuses its own agent's sends, saying why, and nobody else's.
    #[test]
    fn an_unreadable_allow_list_refuses_only_its_own_agents_sends() {
        let (_dir, store) = store();
        store
            .conn()
            .execute(
                "UPDATE agents SET allowed_recipients = 'not json' WHERE name = 'alice'",
                [],
            )
            .unwrap();
        let refused = send_result(&store, "alice", "bob").unwrap_err();
        assert!(
            refused.to_string().contains("allowed recipients of alice"),
            "{refused}"
        );
        // A refusal of the one job, not a database failure of its round.
        assert!(matches!(refused, Error::Refused(_)), "{refused:?}");
        let broadcast = send_result(&store, "alice", "*").unwrap_err();
        assert!(matches!(broadcast, Error::Refused(_)), "{broadcast:?}");
        assert_eq!(send_result(&store, "bob", "*").unwrap().len(), 1);
        send_result(&store, "bob", "alice").unwrap();
        send_result(&store, "operator", "alice").unwrap();
    }

    fn send_result(store: &Store, from: &str, to: &str) -> Result<Vec<i64>> {
        let message = OutgoingMessage {
            to: Recipient::parse(to).unwrap(),
            body: "hi".into(),
            in_reply_to: None,
        };
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(store.send_batch(from, vec![message]))
    }
}
