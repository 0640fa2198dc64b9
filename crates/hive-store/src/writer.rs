//! The broker's single writer: group commit for sends.
//!
//! Every `send_batch` (each socket's `send` and `send_batch`) becomes a
//! [`Job`] in one queue. When nothing is being written, the caller commits
//! its own job at once, on its own thread (no hand-off: an idle broker
//! answers a send as fast as a direct transaction). Jobs that arrive while
//! a commit runs wait in the queue; the committing caller then hands the
//! queue to the writer thread, which drains whatever has queued up in one
//! transaction per round — each job checked whole before any of its rows
//! is written, so a refused job (a bad recipient) writes nothing and the
//! others stand, with no savepoint — commits, and only then answers each
//! caller. Concurrent sends from many agents
//! thus share one WAL commit, and nothing is acknowledged before it is
//! durable.

use std::sync::mpsc;
use std::sync::{Mutex, PoisonError, Weak};

use hive_proto::Recipient;

use rusqlite::Connection;

use crate::agents::Reach;
use crate::broker::{
    Checked, Job, MessageRow, check_reply_target, insert_rows, last_issued, targets,
};
use crate::{Error, Inner, Result, Store, WriteTx, now_unix};

/// Most jobs one transaction takes; the rest wait for the next.
const MAX_JOBS_PER_COMMIT: usize = 1024;

/// The queue of jobs waiting for a commit, and who commits them.
pub(crate) struct Writer {
    queue: Mutex<Queue>,
    /// Hands a non-empty queue to the writer thread.
    poke: mpsc::Sender<()>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A commit is running (a caller's own, or the writer thread's
    /// rounds). When false, `jobs` is empty.
    busy: bool,
}

impl Writer {
    /// A writer whose callers drain the queue themselves.
    pub(crate) fn without_thread() -> Writer {
        Writer {
            queue: Mutex::new(Queue::default()),
            poke: mpsc::channel().0,
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the writer thread of the store `inner` points to. It ends when
/// the store is dropped (the channel's sender lives in it).
pub(crate) fn spawn(inner: Weak<Inner>) -> std::io::Result<Writer> {
    let (poke, rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("hive-store-writer".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                Store { inner }.drain();
            }
        })?;
    Ok(Writer {
        queue: Mutex::new(Queue::default()),
        poke,
    })
}

impl Store {
    /// Queues `job`; commits it right here if no commit is running.
    /// Its answer is in `job.reply` once it is durable.
    pub(crate) fn submit(&self, job: Job) {
        let writer = &self.inner.writer;
        let mine = {
            let mut queue = writer.queue();
            if queue.busy {
                queue.jobs.push(job);
                return;
            }
            queue.busy = true;
            job
        };
        self.commit_jobs(vec![mine]);
        let more = {
            let mut queue = writer.queue();
            queue.busy = !queue.jobs.is_empty();
            queue.busy
        };
        // What queued up meanwhile goes to the writer thread (this caller
        // is answered already); if that thread is gone, it is drained here.
        if more && writer.poke.send(()).is_err() {
            self.drain();
        }
    }

    /// Commits queued jobs, up to [`MAX_JOBS_PER_COMMIT`] per transaction,
    /// until the queue is empty.
    fn drain(&self) {
        loop {
            let jobs = {
                let mut queue = self.inner.writer.queue();
                if queue.jobs.is_empty() {
                    queue.busy = false;
                    return;
                }
                let n = queue.jobs.len().min(MAX_JOBS_PER_COMMIT);
                queue.jobs.drain(..n).collect::<Vec<_>>()
            };
            self.commit_jobs(jobs);
        }
    }

    /// Runs `jobs` in one transaction; answers each caller after the
    /// commit. A job is checked whole before any of its rows is written,
    /// so a refused one writes nothing (no savepoint, which would copy
    /// every page it touches to the statement journal); a write that fails
    /// fails the transaction, and every caller hears it.
    fn commit_jobs(&self, jobs: Vec<Job>) {
        let now = now_unix();
        let needs_container = self.broadcast_needs_container();
        // Each job's rows, and the message each row stores.
        let mut results: Vec<Result<(Vec<MessageRow>, Vec<usize>)>> =
            Vec::with_capacity(jobs.len());
        let committed = {
            let conn = self.conn();
            let mut run = || -> Result<()> {
                let tx = WriteTx::begin(&conn)?;
                // Every job planned first (reads only), then every row of
                // the accepted ones stored by one run of multi-row
                // `INSERT`s: a statement's setup is paid per chunk of
                // rows, not per job.
                let mut planned = Vec::with_capacity(jobs.len());
                let mut rows_before: i64 = 0;
                // The last id issued before this commit, read at its first reply.
                let mut last = None;
                for job in &jobs {
                    let plan = Planned::check(
                        &tx,
                        &self.inner.reach,
                        job,
                        needs_container,
                        (rows_before, &mut last),
                    );
                    // The database's own failure is the round's, not a
                    // refusal of this job: sqlite may have rolled back.
                    if let Err(Error::Sqlite(_)) = plan {
                        return plan.map(|_| ());
                    }
                    if let Ok(plan) = &plan {
                        rows_before = rows_before.saturating_add(plan.rows);
                    }
                    planned.push(plan);
                }
                let (stored, sources) = {
                    let mut rows = Vec::new();
                    let mut sources = Vec::with_capacity(jobs.len());
                    for (job, plan) in jobs.iter().zip(&planned) {
                        if let Ok(plan) = plan {
                            let mut places = Vec::new();
                            for (i, (to, message)) in plan.rows() {
                                places.push(i);
                                rows.push((job.from.as_str(), to, message));
                            }
                            sources.push(places);
                        }
                    }
                    (insert_rows(&tx, &rows, (now, false))?, sources)
                };
                let mut stored = stored.into_iter();
                let mut sources = sources.into_iter();
                for plan in planned {
                    results.push(plan.map(|_| {
                        let places = sources.next().unwrap_or_default();
                        (stored.by_ref().take(places.len()).collect(), places)
                    }));
                }
                Ok(tx.commit()?)
            };
            run()
        };
        if let Err(e) = committed {
            tracing::error!("broker group commit failed: {e}");
            for job in jobs {
                let _ = job.reply.send(Err(Error::Refused(e.to_string())));
            }
            return;
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let Job {
                messages, reply, ..
            } = job;
            let answer = result.map(|(mut rows, sources)| {
                // Each row gets its message's body: moved into the last
                // row of its message, copied into the others (`*`).
                let mut bodies: Vec<String> = messages.into_iter().map(|m| m.body).collect();
                for (k, (row, &i)) in rows.iter_mut().zip(&sources).enumerate() {
                    let shared = sources.get(k + 1) == Some(&i);
                    row.body = match shared {
                        true => bodies[i].clone(),
                        false => std::mem::take(&mut bodies[i]),
                    };
                }
                let ids = rows.iter().map(|r| r.id).collect();
                self.announce(rows);
                ids
            });
            let _ = reply.send(answer);
        }
    }
}

/// A job whose every message was checked (reads only): its recipients
/// resolved, each once (a batch mostly repeats them), its reply targets
/// issued — by then: a message may answer one stored before it in the
/// same batch.
struct Planned<'j> {
    /// Each distinct recipient and the inboxes it stands for.
    resolved: Vec<(&'j Recipient, Vec<String>)>,
    /// Each message and its recipient's place in `resolved`.
    messages: Vec<(usize, &'j Checked)>,
    /// How many rows it stores.
    rows: i64,
}

impl<'j> Planned<'j> {
    /// `rows_before`: rows of the jobs planned before this one in the
    /// same commit, not stored yet; `last`: the last id issued before the
    /// commit, once a reply has read it.
    fn check(
        tx: &Connection,
        reach: &Reach,
        job: &'j Job,
        needs_container: bool,
        (rows_before, last): (i64, &mut Option<i64>),
    ) -> Result<Self> {
        let mut resolved: Vec<(&Recipient, Vec<String>)> = Vec::new();
        let mut messages = Vec::with_capacity(job.messages.len());
        let mut rows: i64 = 0;
        for m in &job.messages {
            if let Some(parent) = m.in_reply_to {
                let last = match *last {
                    Some(last) => last,
                    None => *last.insert(last_issued(tx)?),
                };
                check_reply_target(
                    parent,
                    last.saturating_add(rows_before.saturating_add(rows)),
                )?;
            }
            let at = match resolved.iter().position(|(to, _)| *to == &m.to) {
                Some(at) => at,
                None => {
                    resolved.push((
                        &m.to,
                        targets(tx, reach, &job.from, &m.to, needs_container)?,
                    ));
                    resolved.len() - 1
                }
            };
            messages.push((at, m));
            rows = rows.saturating_add(i64::try_from(resolved[at].1.len()).unwrap_or(i64::MAX));
        }
        Ok(Self {
            resolved,
            messages,
            rows,
        })
    }

    /// One `(inbox, message)` per row to store, in order, each with its
    /// message's place in the job.
    fn rows(&self) -> Vec<(usize, (&str, &'j Checked))> {
        self.messages
            .iter()
            .enumerate()
            .flat_map(|(i, &(at, m))| {
                self.resolved[at]
                    .1
                    .iter()
                    .map(move |to| (i, (to.as_str(), m)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use hive_proto::OutgoingMessage;

    use super::*;

    /// Sends arriving while a commit runs wait in the queue, are not
    /// answered (nor stored) before the commit that takes them, and the
    /// writer thread commits them all once the running commit hands over.
    #[tokio::test]
    async fn sends_queued_during_a_commit_go_through_the_writer_thread() {
        let (_dir, store) = Store::for_tests(&["alice", "bob"]);
        // A commit is running: every send queues.
        store.inner.writer.queue().busy = true;
        let sends: Vec<_> = (0..3)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let message = OutgoingMessage {
                        to: Recipient::parse("bob").unwrap(),
                        body: format!("m{i}"),
                        in_reply_to: None,
                    };
                    store.send_batch("alice", vec![message]).await
                })
            })
            .collect();
        while store.inner.writer.queue().jobs.len() < 3 {
            tokio::task::yield_now().await;
        }
        assert!(sends.iter().all(|s| !s.is_finished()));
        assert_eq!(store.unread("bob").unwrap(), 0);
        // The running commit ends and hands the queue to the thread.
        store.inner.writer.poke.send(()).unwrap();
        let mut ids = Vec::new();
        for send in sends {
            ids.extend(send.await.unwrap().unwrap());
        }
        // Concurrent callers queue in whatever order they reach the
        // queue: all three are stored, each once.
        let mut bodies: Vec<String> = ids
            .iter()
            .map(|id| store.message(*id).unwrap().body)
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["m0", "m1", "m2"]);
        assert!(!store.inner.writer.queue().busy);
    }

    /// One commit plans every job first and stores the accepted ones'
    /// rows together: a job may answer a row an earlier job of the same
    /// commit stores, a refused job stores nothing and takes no id, and
    /// a reply to an id nobody stores is refused.
    #[tokio::test]
    async fn a_commit_plans_every_job_then_stores_the_accepted_ones_together() {
        let (_dir, store) = Store::for_tests(&["alice", "bob"]);
        let last = store
            .send("alice", &Recipient::parse("bob").unwrap(), "before", None)
            .unwrap()[0];
        let message = |to: &str, body: &str, in_reply_to| OutgoingMessage {
            to: Recipient::parse(to).unwrap(),
            body: body.to_owned(),
            in_reply_to,
        };
        let answers = one_round(
            &store,
            vec![
                ("alice", vec![message("bob", "a", None)]),
                ("alice", vec![message("nobody", "b", None)]),
                ("alice", vec![message("bob", "c", Some(last + 1))]),
                ("alice", vec![message("bob", "d", Some(last + 3))]),
            ],
        )
        .await;
        assert_eq!(answers[0].as_ref().unwrap(), &[last + 1]);
        assert!(
            matches!(answers[1], Err(Error::UnknownAgent(_))),
            "{:?}",
            answers[1]
        );
        assert_eq!(answers[2].as_ref().unwrap(), &[last + 2]);
        assert!(
            matches!(answers[3], Err(Error::NotFound { .. })),
            "{:?}",
            answers[3]
        );
        let c = store.message(last + 2).unwrap();
        assert_eq!((c.body.as_str(), c.in_reply_to), ("c", Some(last + 1)));
        assert_eq!(store.message(last + 1).unwrap().body, "a");
        assert!(store.message(last + 3).is_err());
        let popped = store.pop("bob", 32, None).unwrap().messages;
        let bodies: Vec<&str> = popped.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["before", "a", "c"]);
    }

    /// One round of many senders' jobs — a batch to two agents, a `*`, a
    /// refused job — stores each row with its own message's body, and a
    /// pop that takes them from memory hands out exactly what the file
    /// holds and each sender sent.
    #[tokio::test]
    async fn a_round_of_many_senders_pops_from_memory_what_each_sent() {
        let (_dir, store) = Store::for_tests(&["alice", "bob", "carol"]);
        for name in ["alice", "bob", "carol"] {
            // Read now, so the round's rows are kept in memory.
            assert!(store.pop(name, 32, None).unwrap().messages.is_empty());
        }
        let message = |to: &str, body: &str| OutgoingMessage {
            to: Recipient::parse(to).unwrap(),
            body: body.to_owned(),
            in_reply_to: None,
        };
        let answers = one_round(
            &store,
            vec![
                (
                    "alice",
                    vec![message("bob", "a to bob"), message("carol", "a to carol")],
                ),
                ("bob", vec![message("*", "b to all")]),
                ("carol", vec![message("nobody", "refused")]),
                ("carol", vec![message("bob", "c to bob")]),
            ],
        )
        .await;
        assert!(
            matches!(answers[2], Err(Error::UnknownAgent(_))),
            "{:?}",
            answers[2]
        );
        assert!(store.inner.unannounced.none());
        let expected = [
            ("alice", vec![("bob", "b to all")]),
            ("bob", vec![("alice", "a to bob"), ("carol", "c to bob")]),
            ("carol", vec![("alice", "a to carol"), ("bob", "b to all")]),
        ];
        for (to, sent) in expected {
            assert_eq!(store.flight().inboxes[to].fresh.len(), sent.len(), "{to}");
            let popped = store.pop(to, 32, None).unwrap().messages;
            let got: Vec<(&str, &str)> = popped
                .iter()
                .map(|m| (m.from.as_str(), m.body.as_str()))
                .collect();
            assert_eq!(got, sent, "{to}");
            for m in &popped {
                let row = store.message(m.id).unwrap();
                assert_eq!(
                    (row.from.as_str(), row.to.as_str(), row.body.as_str()),
                    (m.from.as_str(), to, m.body.as_str())
                );
            }
        }
    }

    /// Sends each `(sender, messages)` of `jobs` while a commit runs, so
    /// they queue one after another in this order, then lets the writer
    /// thread commit them in one round: each job's answer, in order.
    async fn one_round(
        store: &Store,
        jobs: Vec<(&'static str, Vec<OutgoingMessage>)>,
    ) -> Vec<Result<Vec<i64>>> {
        store.inner.writer.queue().busy = true;
        let mut sends = Vec::new();
        for (k, (from, messages)) in jobs.into_iter().enumerate() {
            let sender = store.clone();
            sends.push(tokio::spawn(async move {
                sender.send_batch(from, messages).await
            }));
            while store.inner.writer.queue().jobs.len() < k + 1 {
                tokio::task::yield_now().await;
            }
        }
        store.inner.writer.poke.send(()).unwrap();
        let mut answers = Vec::new();
        for send in sends {
            answers.push(send.await.unwrap());
        }
        answers
    }
}
