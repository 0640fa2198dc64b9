//! The live event bus: every [`LiveEvent`] of this agent, stamped with a
//! monotonic `seq`, broadcast to SSE subscribers and appended to the
//! agent's own sqlite history (`<state>/hyperhive-events.sqlite`).
//!
//! `seq` is the history row's id, so it keeps growing across harness
//! restarts and a page can dedupe a buffered SSE frame against a history
//! snapshot by `seq` alone. History is vacuumed by age ([`KEEP`]). If the
//! database cannot be opened the bus still works, without history.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hive_proto::{LiveEvent, LiveFrame};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::broadcast;

/// Frames a slow SSE subscriber may fall behind before it lags.
const CHANNEL_CAPACITY: usize = 1024;
/// How long history rows are kept.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most frames one history read returns.
pub const MAX_HISTORY: usize = 5000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    frame_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
";

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("seq", &self.seq()).finish()
    }
}

struct Inner {
    tx: broadcast::Sender<LiveFrame>,
    /// The last seq handed out, and the history (if open). One lock, so
    /// frames are stored and broadcast in seq order.
    log: Mutex<Log>,
}

struct Log {
    seq: u64,
    db: Option<Connection>,
}

impl Bus {
    /// A bus with history in the sqlite file at `path`.
    pub fn open(path: &Path) -> Self {
        match open_db(path) {
            Ok((db, seq)) => Self::with(Some(db), seq),
            Err(e) => {
                tracing::warn!(path = %path.display(), "live history unavailable: {e}");
                Self::with(None, 0)
            }
        }
    }

    /// A bus without history.
    pub fn in_memory() -> Self {
        Self::with(None, 0)
    }

    fn with(db: Option<Connection>, seq: u64) -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                tx,
                log: Mutex::new(Log { seq, db }),
            }),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stamps, stores and broadcasts one event.
    pub fn emit(&self, event: LiveEvent) -> LiveFrame {
        let mut log = self.log();
        log.seq += 1;
        let frame = LiveFrame {
            seq: log.seq,
            at: now_unix(),
            event,
        };
        if let Some(db) = &log.db
            && let Err(e) = store(db, &frame)
        {
            tracing::warn!("live history append failed: {e}");
        }
        // No subscribers is fine: the page is a tail, history is the log.
        let _ = self.inner.tx.send(frame.clone());
        frame
    }

    /// Shorthand for a [`LiveEvent::Note`].
    pub fn note(&self, text: impl Into<String>) {
        self.emit(LiveEvent::Note { text: text.into() });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveFrame> {
        self.inner.tx.subscribe()
    }

    /// The last seq handed out.
    pub fn seq(&self) -> u64 {
        self.log().seq
    }

    /// The current seq and up to `limit` most recent frames, oldest first.
    pub fn history(&self, limit: usize) -> (u64, Vec<LiveFrame>) {
        let log = self.log();
        let frames = match &log.db {
            Some(db) => recent(db, limit.min(MAX_HISTORY)).unwrap_or_else(|e| {
                tracing::warn!("live history read failed: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        };
        (log.seq, frames)
    }

    /// Deletes history rows older than `keep`; returns how many.
    pub fn vacuum(&self, keep: Duration) -> usize {
        let cutoff = now_unix() - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
        let log = self.log();
        let Some(db) = &log.db else { return 0 };
        db.execute("DELETE FROM events WHERE at < ?1", [cutoff])
            .unwrap_or_else(|e| {
                tracing::warn!("live history vacuum failed: {e}");
                0
            })
    }
}

fn open_db(path: &Path) -> rusqlite::Result<(Connection, u64)> {
    let db = Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(5))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(SCHEMA)?;
    let seq: Option<i64> = db
        .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok((db, seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0)))
}

fn store(db: &Connection, frame: &LiveFrame) -> rusqlite::Result<()> {
    let json = serde_json::to_string(frame).unwrap_or_else(|_| "null".into());
    db.prepare_cached("INSERT INTO events (seq, at, kind, frame_json) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            i64::try_from(frame.seq).unwrap_or(i64::MAX),
            frame.at,
            kind(&frame.event),
            json
        ])?;
    Ok(())
}

fn recent(db: &Connection, limit: usize) -> rusqlite::Result<Vec<LiveFrame>> {
    let mut stmt = db.prepare_cached("SELECT frame_json FROM events ORDER BY seq DESC LIMIT ?1")?;
    let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        r.get::<_, String>(0)
    })?;
    let mut frames: Vec<LiveFrame> = rows
        .filter_map(|r| r.ok())
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect();
    frames.reverse();
    Ok(frames)
}

/// The `kind` tag of an event, for the history table's index column.
pub fn kind(event: &LiveEvent) -> &'static str {
    match event {
        LiveEvent::TurnStart { .. } => "turn_start",
        LiveEvent::Stream(_) => "stream",
        LiveEvent::Note { .. } => "note",
        LiveEvent::TurnEnd { .. } => "turn_end",
        LiveEvent::StatusChanged { .. } => "status_changed",
        LiveEvent::ModelChanged { .. } => "model_changed",
        LiveEvent::TokenUsageChanged { .. } => "token_usage_changed",
        LiveEvent::TurnStateChanged { .. } => "turn_state_changed",
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_survives_reopen_and_history_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.sqlite");
        let bus = Bus::open(&path);
        let mut rx = bus.subscribe();
        let first = bus.emit(LiveEvent::Note { text: "one".into() });
        bus.emit(LiveEvent::Stream(serde_json::json!({"type": "assistant"})));
        assert_eq!(first.seq, 1);
        assert_eq!(rx.try_recv().unwrap(), first);
        drop(bus);

        let bus = Bus::open(&path);
        assert_eq!(bus.seq(), 2);
        let third = bus.emit(LiveEvent::TurnEnd {
            ok: true,
            note: None,
        });
        assert_eq!(third.seq, 3);
        let (seq, frames) = bus.history(10);
        assert_eq!(seq, 3);
        assert_eq!(
            frames.iter().map(|f| f.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(frames[0].event, LiveEvent::Note { text: "one".into() });
        let (_, last) = bus.history(1);
        assert_eq!(last, vec![third]);
    }

    #[test]
    fn vacuum_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Bus::open(&dir.path().join("events.sqlite"));
        bus.note("old");
        {
            let log = bus.log();
            log.db
                .as_ref()
                .unwrap()
                .execute("UPDATE events SET at = at - 8 * 24 * 3600", [])
                .unwrap();
        }
        bus.note("new");
        assert_eq!(bus.vacuum(KEEP), 1);
        let (_, frames) = bus.history(10);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].event, LiveEvent::Note { text: "new".into() });
    }

    #[test]
    fn works_without_history() {
        let bus = Bus::open(Path::new("/nonexistent/dir/events.sqlite"));
        assert_eq!(bus.emit(LiveEvent::Note { text: "x".into() }).seq, 1);
        assert_eq!(bus.history(5), (1, Vec::new()));
    }
}
