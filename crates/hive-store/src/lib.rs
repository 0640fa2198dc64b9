//! hyperhive's durable state on one sqlite file: the message broker,
//! approvals, questions, reminders, the task board and the agents registry.
//!
//! This crate owns the schema and its migrations (keyed on
//! `PRAGMA user_version`, applied in place at [`Store::open`]) and every
//! read and write of that file. The broker delivers with lease semantics:
//! a message stays in the file until it is acked (`acked_at`), while which
//! rows are in flight under which lease lives in memory (a pop writes
//! nothing), so nothing popped is lost when a turn, a harness or the daemon
//! dies (after a daemon crash every unacked row comes again flagged
//! `redelivered`); long-poll receivers
//! park on a per-recipient [`tokio::sync::Notify`] and wake as soon as a send
//! commits. Anything that must happen together (a question and the inbox
//! event announcing it, a reminder's delivery and its `delivered_at`) happens
//! in one transaction. A [`Store`] is a cheap handle to one connection behind
//! a mutex; only [`Store::recv_wait`] is async, and no lock is held across an
//! await. Architecture invariant: no HTTP, no sockets, no processes here.

mod agents;
mod approvals;
mod broker;
mod budget;
mod flight;
mod loose_ends;
mod questions;
mod reminders;
mod schema;
mod tasks;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use tokio::sync::{Notify, broadcast};

pub use agents::AgentRecord;
pub use broker::{MessageEvent, MessageRow, Popped};
pub use budget::BUDGET_OPTIONS;
pub use questions::{ANSWER_CANCELLED, ANSWER_EXPIRED, Question, TTL_WATCHDOG};
pub use reminders::{
    MAX_PENDING_REMINDERS, MAX_REMINDER_ATTEMPTS, Reminder, ReminderOutcome, ceil_seconds,
    reminder_backoff_seconds,
};
pub use schema::SCHEMA_VERSION;
pub use tasks::{MAX_ACTIVE_TASKS, MAX_TASK_BODY, MAX_TASK_REFS, MAX_TASK_TITLE};

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything a store operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Name(#[from] hive_proto::NameError),
    #[error(
        "message body is {len} bytes, over the {max}-byte limit: write the content to a file \
         under /shared or /state and send its path instead"
    )]
    BodyTooLarge { len: usize, max: usize },
    #[error("unknown agent {0:?}")]
    UnknownAgent(String),
    #[error("{from} may not send to {to}: not in its allowed recipients")]
    NotAllowed { from: String, to: String },
    #[error("no {what} with id {id}")]
    NotFound { what: &'static str, id: i64 },
    /// Self-ask, not allowed to answer, already resolved, too many
    /// reminders, …: a clear human message.
    #[error("{0}")]
    Refused(String),
}

/// The current time as unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The current time as unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How many broker events a slow [`Store::subscribe`]r may lag behind.
const EVENT_CAPACITY: usize = 1024;

/// How long a statement waits on a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The sqlite VFS every connection to the store opens with: unix's own,
/// except that the first read takes an exclusive lock on the file for
/// this process until it closes it, and the WAL index lives in this
/// process's memory rather than in a shared `-shm` file. So a
/// transaction takes and drops no file lock (no `fcntl` per begin and
/// commit: a send or an ack costs about a quarter less, see
/// docs/benchmarks.md), and no second daemon, nor any other process,
/// can open the file while one serves it. Connections within the process
/// (the checkpointer's, a test's) share the lock and the index.
pub const SQLITE_VFS: &str = "unix-excl";

/// A connection to the store's file at `path` on [`SQLITE_VFS`].
fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), SQLITE_VFS)
}

/// The store's first read failed: held by another process, it says so.
fn held_elsewhere(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            Error::Refused(format!(
                "{} is open in another process (is another hive daemon serving this state dir?)",
                path.display()
            ))
        }
        _ => Error::Sqlite(e),
    }
}

/// WAL pages after which a commit checkpoints in the committing thread
/// (the background checkpointer normally keeps the WAL far below).
const WAL_FALLBACK_CHECKPOINT: i64 = 16_384;
/// How often the background checkpointer copies the WAL into the file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Starts the thread that checkpoints the WAL on its own connection
/// (`PASSIVE`: never waits for, nor blocks, the writer), so commits never
/// stall on the file's fsync. It ends when the store is dropped.
fn spawn_checkpointer(path: &Path, store: std::sync::Weak<Inner>) -> Result<()> {
    let conn = open_connection(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    std::thread::Builder::new()
        .name("hive-store-checkpoint".into())
        .spawn(move || {
            while store.strong_count() > 0 {
                std::thread::sleep(CHECKPOINT_EVERY);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!("wal checkpoint: {e}");
                }
            }
        })
        .map_err(|e| Error::Refused(format!("cannot start the checkpointer: {e}")))?;
    Ok(())
}

/// Follows every write on `conn` through sqlite's own hooks, so no path
/// that writes can be missed: rows inserted into `messages` are counted
/// until announced ([`flight::Unannounced`]), and any change to `agents`
/// (or a rollback, which may undo one) makes [`agents::Reach`] read the
/// file again. Every write of those tables goes through `conn`.
fn watch_writes(
    conn: &mut Connection,
    unannounced: &Arc<flight::Unannounced>,
    reach: &Arc<agents::Reach>,
) -> rusqlite::Result<()> {
    let (rows, agents) = (Arc::clone(unannounced), Arc::clone(reach));
    conn.update_hook(Some(move |action, _db: &str, table: &str, _rowid| {
        if table.eq_ignore_ascii_case("messages") {
            if action == rusqlite::hooks::Action::SQLITE_INSERT {
                rows.inserted();
            }
        } else if table.eq_ignore_ascii_case("agents") {
            agents.changed();
        }
    }))?;
    let rows = Arc::clone(unannounced);
    conn.commit_hook(Some(move || {
        rows.committing();
        // Never veto the commit.
        false
    }))?;
    let (rows, agents) = (Arc::clone(unannounced), Arc::clone(reach));
    conn.rollback_hook(Some(move || {
        rows.rolled_back();
        agents.changed();
    }))
}

/// A handle to the hive's sqlite file. Cheap to clone; every clone shares
/// one connection, one event channel and one set of long-poll waiters.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    path: PathBuf,
    /// The single writer's queue (group commit of sends, `writer.rs`).
    writer: writer::Writer,
    /// The last lease id handed out.
    leases: AtomicI64,
    /// The broker's rows in flight and its leases (`flight.rs`). Locked
    /// before `conn` when both are needed.
    flight: Mutex<flight::Flight>,
    /// Rows written on `conn` and not yet announced to `flight`.
    unannounced: Arc<flight::Unannounced>,
    /// Who exists and whom each agent may reach, as every send checks it.
    reach: Arc<agents::Reach>,
    /// When the lease expiry timer next wakes (unix ms; `i64::MAX`: never).
    lease_alarm: AtomicI64,
    /// Wakes the lease expiry timer early.
    lease_changed: Arc<Notify>,
    /// The one connection that reads and writes (pops read here too: its
    /// page cache then stays warm across commits, where a second
    /// connection re-read every page a commit changed).
    conn: Mutex<Connection>,
    events: broadcast::Sender<MessageEvent>,
    /// Live [`FlowWatch`] guards: while there is one, every message sent
    /// and delivered is published on `events`.
    flow_watchers: Arc<AtomicUsize>,
    /// One `Notify` per recipient that has long-polled, woken on every
    /// commit that may have made a message deliverable to it.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    schedule: Arc<Notify>,
    /// Whether `*` reaches only agents with a container (a hive with a
    /// runtime: the others are destroyed, their state kept); see
    /// [`Store::set_broadcast_needs_container`].
    broadcast_needs_container: AtomicBool,
}

/// While this lives, the broker publishes every message sent and delivered
/// to its subscribers ([`Store::watch_flow`]).
#[derive(Debug)]
pub struct FlowWatch(Arc<AtomicUsize>);

impl Drop for FlowWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`: WAL journal,
    /// `synchronous=NORMAL`, a busy timeout, foreign keys on, then every
    /// pending migration. A file written by a newer build is refused.
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn = open_connection(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // The first read takes the file for this process (`SQLITE_VFS`).
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| held_elsewhere(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "sqlite refused WAL journal mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints (the only fsyncs under `synchronous=NORMAL`) run on
        // their own thread (`spawn_checkpointer`); the writer checkpoints
        // itself only if that thread falls far behind.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_FALLBACK_CHECKPOINT)?;
        // Plans must not depend on bound values: otherwise a statement with
        // `LIMIT ?` or a partial index is re-prepared on every reuse from the
        // cache (which clears bindings), tripling the cost of a pop.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(128);
        schema::migrate(&mut conn)?;
        let unannounced = Arc::new(flight::Unannounced::default());
        let reach = Arc::new(agents::Reach::default());
        watch_writes(&mut conn, &unannounced, &reach)?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let mut spawned = Ok(());
        let inner = Arc::new_cyclic(|weak| {
            let writer = writer::spawn(weak.clone()).unwrap_or_else(|e| {
                spawned = Err(e);
                writer::Writer::without_thread()
            });
            Inner {
                path: path.to_owned(),
                writer,
                leases: AtomicI64::new(0),
                flight: Mutex::new(flight::Flight::default()),
                unannounced,
                reach,
                lease_alarm: AtomicI64::new(i64::MAX),
                lease_changed: Arc::new(Notify::new()),
                conn: Mutex::new(conn),
                events,
                flow_watchers: Arc::default(),
                waiters: Mutex::new(HashMap::new()),
                schedule: Arc::new(Notify::new()),
                broadcast_needs_container: AtomicBool::new(false),
            }
        });
        spawned.map_err(|e| Error::Refused(format!("cannot start the broker's writer: {e}")))?;
        spawn_checkpointer(path, Arc::downgrade(&inner))?;
        Ok(Store { inner })
    }

    /// A store in a new temp dir with `agents` registered.
    #[cfg(test)]
    pub(crate) fn for_tests(agents: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let store =
            Store::open(&dir.path().join("hive.sqlite")).unwrap_or_else(|e| panic!("open: {e}"));
        for name in agents {
            let name = hive_proto::AgentName::parse(name).unwrap_or_else(|e| panic!("{e}"));
            store
                .register_agent(&name)
                .unwrap_or_else(|e| panic!("register: {e}"));
        }
        (dir, store)
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version of the open file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// Notified (`notify_one`, so a change made while the timer task is busy
    /// leaves a permit and is not lost) whenever a reminder or a question
    /// deadline is added, retried, cancelled or resolved, so the scheduler
    /// re-computes its sleep. [`Store::deliver_due_reminders`] and
    /// [`Store::expire_questions`] do not notify: their caller is the
    /// scheduler, which re-computes after them anyway.
    pub fn schedule_changed(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.schedule)
    }

    /// The connection. A panic while it was held leaves it usable: any open
    /// transaction was rolled back when its guard dropped.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The broker's rows in flight (see [`Inner::flight`]).
    pub(crate) fn flight(&self) -> MutexGuard<'_, flight::Flight> {
        self.inner
            .flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn bump_schedule(&self) {
        self.inner.schedule.notify_one();
    }
}

/// An `IMMEDIATE` write transaction begun and committed through cached
/// statements (rusqlite's `Transaction` re-parses `BEGIN` and `COMMIT` each
/// time). Rolls back on drop unless committed.
pub(crate) struct WriteTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> WriteTx<'c> {
    pub(crate) fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(Self { conn, open: true })
    }

    pub(crate) fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.open = false;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        // sqlite may already have rolled back on its own after an error.
        if self.open && !self.conn.is_autocommit() {
            let rolled_back = self
                .conn
                .prepare_cached("ROLLBACK")
                .and_then(|mut stmt| stmt.execute([]));
            if let Err(e) = rolled_back {
                tracing::error!(error = %e, "store transaction rollback failed");
            }
        }
    }
}

/// Converts a row count to `u64`.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Converts a caller's `u64` limit to an sqlite integer.
fn limit(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
