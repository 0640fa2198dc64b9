//! Per-turn analytics: one sqlite row per engine turn in
//! `<state>/hyperhive-turn-stats.sqlite` — who woke the agent, with which
//! model, how it ended, how long it took (and how much of that was the
//! harness itself), the full token usage, the last inference's context size,
//! cost, and tool calls by tool. Writes are best-effort.
//!
//! Cost: the claude CLI's `total_cost_usd` is the running total of its
//! *session* (a `--continue` run starts from the session's earlier total;
//! checked with CLI 2.1.332). A row keeps that total as `session_cost_usd`
//! next to the session id, and its `cost_usd` is the turn's own spend: the
//! total minus the session's total at its previous row ([`turn_cost`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use hive_proto::live::TokenUsage;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS turn_stats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    wake_from TEXT NOT NULL,
    result_kind TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_creation_input_tokens INTEGER NOT NULL,
    cache_read_input_tokens INTEGER NOT NULL,
    last_input_tokens INTEGER,
    last_output_tokens INTEGER,
    last_cache_creation_input_tokens INTEGER,
    last_cache_read_input_tokens INTEGER,
    context_tokens INTEGER,
    cost_usd REAL,
    inferences INTEGER NOT NULL,
    tool_call_count INTEGER NOT NULL,
    tool_calls_json TEXT NOT NULL,
    pre_engine_us INTEGER,
    post_engine_us INTEGER,
    note TEXT
);
CREATE INDEX IF NOT EXISTS turn_stats_started ON turn_stats (started_at);
";

/// Columns added after the first shape, with their declarations; added to
/// an older file at open.
const ADDED_COLUMNS: &[(&str, &str)] = &[("session_id", "TEXT"), ("session_cost_usd", "REAL")];

/// One finished turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnRecord {
    pub id: Option<i64>,
    pub model: String,
    /// Sender(s) of the wake messages, or `self` / `compaction`.
    pub wake_from: String,
    /// `ok`, `failed`, `cancelled`, `timed_out`, `prompt_too_long`,
    /// `rate_limited`, `needs_login`.
    pub result_kind: String,
    pub started_at: i64,
    pub ended_at: i64,
    pub duration_ms: u64,
    /// Summed over every inference of the turn.
    pub usage: TokenUsage,
    /// The last inference's usage.
    pub last_usage: Option<TokenUsage>,
    /// The last inference's context size (all input tokens).
    pub context_tokens: Option<u64>,
    /// What this turn cost: the growth of its session's running total.
    pub cost_usd: Option<f64>,
    /// The engine session the turn ran in.
    pub session_id: Option<String>,
    /// The session's running total after this turn (the CLI's
    /// `total_cost_usd`).
    pub session_cost_usd: Option<f64>,
    pub inferences: u64,
    pub tool_call_count: u64,
    pub tool_calls: BTreeMap<String, u64>,
    /// Harness overhead in µs: `recv` answered → engine spawned.
    pub pre_engine_us: Option<u64>,
    /// Harness overhead in µs: engine exited → `ack_turn` answered.
    pub post_engine_us: Option<u64>,
    pub note: Option<String>,
}

pub struct StatsStore {
    db: Mutex<Connection>,
}

impl std::fmt::Debug for StatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsStore")
    }
}

impl StatsStore {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch(SCHEMA)?;
        for (column, decl) in ADDED_COLUMNS {
            let exists: bool = db.query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info('turn_stats') WHERE name = ?1)",
                [column],
                |r| r.get(0),
            )?;
            if !exists {
                db.execute_batch(&format!(
                    "ALTER TABLE turn_stats ADD COLUMN {column} {decl}"
                ))?;
            }
        }
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends `record`; returns its row id.
    pub fn record(&self, r: &TurnRecord) -> rusqlite::Result<i64> {
        let db = self.db();
        let last = r.last_usage;
        db.prepare_cached(
            "INSERT INTO turn_stats (model, wake_from, result_kind, started_at, ended_at,
                duration_ms, input_tokens, output_tokens, cache_creation_input_tokens,
                cache_read_input_tokens, last_input_tokens, last_output_tokens,
                last_cache_creation_input_tokens, last_cache_read_input_tokens, context_tokens,
                cost_usd, inferences, tool_call_count, tool_calls_json, pre_engine_us,
                post_engine_us, note, session_id, session_cost_usd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
        )?
        .execute(params![
            r.model,
            r.wake_from,
            r.result_kind,
            r.started_at,
            r.ended_at,
            int(r.duration_ms),
            int(r.usage.input_tokens),
            int(r.usage.output_tokens),
            int(r.usage.cache_creation_input_tokens),
            int(r.usage.cache_read_input_tokens),
            last.map(|u| int(u.input_tokens)),
            last.map(|u| int(u.output_tokens)),
            last.map(|u| int(u.cache_creation_input_tokens)),
            last.map(|u| int(u.cache_read_input_tokens)),
            r.context_tokens.map(int),
            r.cost_usd,
            int(r.inferences),
            int(r.tool_call_count),
            serde_json::to_string(&r.tool_calls).unwrap_or_else(|_| "{}".into()),
            r.pre_engine_us.map(int),
            r.post_engine_us.map(int),
            r.note,
            r.session_id,
            r.session_cost_usd,
        ])?;
        Ok(db.last_insert_rowid())
    }

    /// Fills in the post-engine overhead (µs) of a recorded turn (known only
    /// after `ack_turn` answered).
    pub fn set_post_engine_us(&self, id: i64, us: u64) -> rusqlite::Result<()> {
        self.db()
            .prepare_cached("UPDATE turn_stats SET post_engine_us = ?1 WHERE id = ?2")?
            .execute(params![int(us), id])?;
        Ok(())
    }

    /// The `limit` most recent turns, newest first.
    pub fn recent(&self, limit: usize) -> rusqlite::Result<Vec<TurnRecord>> {
        let db = self.db();
        let mut stmt = db.prepare_cached("SELECT * FROM turn_stats ORDER BY id DESC LIMIT ?1")?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], from_row)?;
        rows.collect()
    }

    /// The running total `session` had at its newest row, if any.
    pub fn session_cost(&self, session: &str) -> rusqlite::Result<Option<f64>> {
        let db = self.db();
        db.query_row(
            "SELECT session_cost_usd FROM turn_stats
             WHERE session_id = ?1 AND session_cost_usd IS NOT NULL
             ORDER BY id DESC LIMIT 1",
            [session],
            |r| r.get(0),
        )
        .optional()
    }

    /// What the turns that started at or after `since` (unix seconds) spent:
    /// USD (turns without a cost count 0) and the tokens a budget counts:
    /// input, output and cache writes. Cache reads are left out: a long
    /// session re-reads its whole context every inference, which would
    /// swamp any token limit without being new work.
    pub fn spent_since(&self, since: i64) -> rusqlite::Result<Spent> {
        let db = self.db();
        db.query_row(
            "SELECT COALESCE(SUM(cost_usd), 0),
                    COALESCE(SUM(input_tokens + output_tokens + cache_creation_input_tokens), 0)
             FROM turn_stats WHERE started_at >= ?1",
            [since],
            |r| {
                Ok(Spent {
                    usd: r.get(0)?,
                    tokens: uint(r.get(1)?),
                })
            },
        )
    }

    pub fn last(&self) -> rusqlite::Result<Option<TurnRecord>> {
        let db = self.db();
        db.query_row(
            "SELECT * FROM turn_stats ORDER BY id DESC LIMIT 1",
            [],
            from_row,
        )
        .optional()
    }
}

/// Spend summed over turns.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub usd: f64,
    pub tokens: u64,
}

/// A turn's own cost from its session's running total now (`total`) and at
/// the session's previous row (`before`). A session with no earlier row, or
/// a total that went down (the engine restarted its count), costs its
/// whole total.
pub fn turn_cost(before: Option<f64>, total: Option<f64>) -> Option<f64> {
    let total = total?;
    Some(match before {
        Some(before) if total >= before => total - before,
        _ => total,
    })
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<TurnRecord> {
    let opt = |name: &str| -> rusqlite::Result<Option<u64>> {
        Ok(row.get::<_, Option<i64>>(name)?.map(uint))
    };
    let last = match (
        opt("last_input_tokens")?,
        opt("last_output_tokens")?,
        opt("last_cache_creation_input_tokens")?,
        opt("last_cache_read_input_tokens")?,
    ) {
        (Some(a), Some(b), Some(c), Some(d)) => Some(TokenUsage {
            input_tokens: a,
            output_tokens: b,
            cache_creation_input_tokens: c,
            cache_read_input_tokens: d,
        }),
        _ => None,
    };
    let tool_calls: String = row.get("tool_calls_json")?;
    Ok(TurnRecord {
        id: Some(row.get("id")?),
        model: row.get("model")?,
        wake_from: row.get("wake_from")?,
        result_kind: row.get("result_kind")?,
        started_at: row.get("started_at")?,
        ended_at: row.get("ended_at")?,
        duration_ms: uint(row.get("duration_ms")?),
        usage: TokenUsage {
            input_tokens: uint(row.get("input_tokens")?),
            output_tokens: uint(row.get("output_tokens")?),
            cache_creation_input_tokens: uint(row.get("cache_creation_input_tokens")?),
            cache_read_input_tokens: uint(row.get("cache_read_input_tokens")?),
        },
        last_usage: last,
        context_tokens: opt("context_tokens")?,
        cost_usd: row.get("cost_usd")?,
        session_id: row.get("session_id")?,
        session_cost_usd: row.get("session_cost_usd")?,
        inferences: uint(row.get("inferences")?),
        tool_call_count: uint(row.get("tool_call_count")?),
        tool_calls: serde_json::from_str(&tool_calls).unwrap_or_default(),
        pre_engine_us: opt("pre_engine_us")?,
        post_engine_us: opt("post_engine_us")?,
        note: row.get("note")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = StatsStore::open(&dir.path().join("stats.sqlite")).unwrap();
        assert_eq!(store.last().unwrap(), None);
        let mut record = TurnRecord {
            model: "sonnet".into(),
            wake_from: "operator".into(),
            result_kind: "ok".into(),
            started_at: 100,
            ended_at: 103,
            duration_ms: 3000,
            usage: TokenUsage {
                input_tokens: 10,
                output_tokens: 20,
                cache_creation_input_tokens: 30,
                cache_read_input_tokens: 40,
            },
            last_usage: Some(TokenUsage {
                input_tokens: 1,
                output_tokens: 2,
                cache_creation_input_tokens: 3,
                cache_read_input_tokens: 4,
            }),
            context_tokens: Some(8),
            cost_usd: Some(0.5),
            session_id: Some("s1".into()),
            session_cost_usd: Some(1.5),
            inferences: 2,
            tool_call_count: 3,
            tool_calls: [("mcp__hive__send".to_owned(), 2), ("Bash".to_owned(), 1)].into(),
            pre_engine_us: Some(4),
            post_engine_us: None,
            note: None,
            id: None,
        };
        let id = store.record(&record).unwrap();
        store.set_post_engine_us(id, 7).unwrap();
        record.id = Some(id);
        record.post_engine_us = Some(7);
        assert_eq!(store.last().unwrap(), Some(record.clone()));
        assert_eq!(store.recent(5).unwrap(), vec![record]);
        assert_eq!(store.session_cost("s1").unwrap(), Some(1.5));
        assert_eq!(store.session_cost("s2").unwrap(), None);
        assert_eq!(
            store.spent_since(100).unwrap(),
            Spent {
                usd: 0.5,
                tokens: 60
            }
        );
        assert_eq!(store.spent_since(101).unwrap(), Spent::default());
    }

    #[test]
    fn a_turn_costs_what_its_session_total_grew_by() {
        // The CLI's totals over three `--continue` runs: 0.0045, 0.009, 0.0135.
        assert_eq!(turn_cost(None, Some(0.0045)), Some(0.0045));
        let second = turn_cost(Some(0.0045), Some(0.009)).unwrap();
        assert!((second - 0.0045).abs() < 1e-12, "{second}");
        // A new session (or a count that restarted) costs its whole total.
        assert_eq!(turn_cost(Some(0.0135), Some(0.002)), Some(0.002));
        assert_eq!(turn_cost(Some(0.01), None), None);
    }

    #[test]
    fn an_older_file_gains_the_session_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(SCHEMA).unwrap();
        old.execute_batch(
            "INSERT INTO turn_stats (model, wake_from, result_kind, started_at, ended_at,
                duration_ms, input_tokens, output_tokens, cache_creation_input_tokens,
                cache_read_input_tokens, cost_usd, inferences, tool_call_count, tool_calls_json)
             VALUES ('m', 'operator', 'ok', 1, 2, 3, 4, 5, 6, 7, 0.25, 1, 0, '{}')",
        )
        .unwrap();
        drop(old);
        let store = StatsStore::open(&path).unwrap();
        let last = store.last().unwrap().unwrap();
        assert_eq!(
            (last.cost_usd, last.session_id, last.session_cost_usd),
            (Some(0.25), None, None)
        );
    }
}
