//! The broker's single writer: group commit for sends.
//!
//! Every `send_batch` (each socket's `send` and `send_batch`) becomes a
//! [`Job`] on one channel. One thread drains whatever has queued up, runs
//! all of it in one transaction — each job inside its own savepoint, so a
//! refused job (a bad recipient) rolls back alone and the others stand —
//! commits, and only then answers each caller. Concurrent sends from many
//! agents thus share one WAL commit, and nothing is acknowledged before
//! it is durable.

use std::sync::Weak;
use std::sync::mpsc;

use hive_proto::Recipient;

use crate::broker::{Job, MessageRow, insert_to, targets};
use crate::{Error, Inner, Result, Store, WriteTx, now_unix};

/// Most jobs one transaction takes; the rest wait for the next.
const MAX_JOBS_PER_COMMIT: usize = 1024;

/// Starts the writer thread of the store `inner` points to. It ends when
/// the store is dropped (the channel's sender lives in it).
pub(crate) fn spawn(inner: Weak<Inner>) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("hive-store-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                while jobs.len() < MAX_JOBS_PER_COMMIT {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                Store { inner }.commit_jobs(jobs);
            }
        })?;
    Ok(tx)
}

impl Store {
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
