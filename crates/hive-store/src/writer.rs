//! The broker's single writer: group commit for sends.
//!
//! Every `send_batch` (each socket's `send` and `send_batch`) becomes a
//! [`Job`] in one queue. When nothing is being written, the caller commits
//! its own job at once, on its own thread (no hand-off: an idle broker
//! answers a send as fast as a direct transaction). Jobs that arrive while
//! a commit runs wait in the queue; the committing caller then hands the
//! queue to the writer thread, which drains whatever has queued up in one
//! transaction per round — each job inside its own savepoint, so a refused
//! job (a bad recipient) rolls back alone and the others stand — commits,
//! and only then answers each caller. Concurrent sends from many agents
//! thus share one WAL commit, and nothing is acknowledged before it is
//! durable.

use std::sync::mpsc;
use std::sync::{Mutex, PoisonError, Weak};

use hive_proto::Recipient;

use crate::broker::{Job, MessageRow, insert_to, targets};
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

    /// Runs `jobs` in one transaction, one savepoint each; answers each
    /// caller after the commit.
    fn commit_jobs(&self, jobs: Vec<Job>) {
        let now = now_unix();
        let needs_container = self.broadcast_needs_container();
        let mut results: Vec<Result<Vec<MessageRow>>> = Vec::with_capacity(jobs.len());
        let committed = {
            let conn = self.conn();
            let mut run = || -> rusqlite::Result<()> {
                let tx = WriteTx::begin(&conn)?;
                for job in &jobs {
                    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
                    // A batch mostly repeats its recipients: each is
                    // checked once per job.
                    let mut resolved: Vec<(&Recipient, Vec<String>)> = Vec::new();
                    let rows = job
                        .messages
                        .iter()
                        .map(|m| {
                            let known = resolved.iter().position(|(to, _)| *to == &m.to);
                            let at = match known {
                                Some(at) => at,
                                None => {
                                    resolved.push((
                                        &m.to,
                                        targets(&tx, &job.from, &m.to, needs_container)?,
                                    ));
                                    resolved.len() - 1
                                }
                            };
                            insert_to(&tx, &job.from, &resolved[at].1, m, now)
                        })
                        .collect::<Result<Vec<Vec<MessageRow>>>>();
                    if rows.is_err() {
                        tx.prepare_cached("ROLLBACK TO job")?.execute([])?;
                    }
                    tx.prepare_cached("RELEASE job")?.execute([])?;
                    results.push(rows.map(|r| r.into_iter().flatten().collect()));
                }
                tx.commit()
            };
            run()
        };
        if let Err(e) = committed {
            tracing::error!("broker group commit failed: {e}");
            for job in jobs {
                let _ = job
                    .reply
                    .send(Err(Error::Refused(format!("database: {e}"))));
            }
            return;
        }
        for (job, result) in jobs.into_iter().zip(results) {
            let answer = result.map(|rows| {
                let ids = rows.iter().map(|r| r.id).collect();
                self.announce(rows);
                ids
            });
            let _ = job.reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use hive_proto::{AgentName, OutgoingMessage};

    use super::*;

    /// Sends arriving while a commit runs wait in the queue, are not
    /// answered (nor stored) before the commit that takes them, and the
    /// writer thread commits them all once the running commit hands over.
    #[tokio::test]
    async fn sends_queued_during_a_commit_go_through_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
        for name in ["alice", "bob"] {
            store
                .register_agent(&AgentName::parse(name).unwrap())
                .unwrap();
        }
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
                    store.send_batch("alice", &[message]).await
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
        let bodies: Vec<String> = ids
            .iter()
            .map(|id| store.message(*id).unwrap().body)
            .collect();
        assert_eq!(bodies, ["m0", "m1", "m2"]);
        assert!(!store.inner.writer.queue().busy);
    }
}
