//! The schema, as an ordered list of migrations keyed on `PRAGMA user_version`.
//!
//! Migration `n` brings a file from version `n - 1` to `n`, inside one
//! transaction that also bumps `user_version`, so a crash mid-upgrade leaves
//! the file at the old version. Migration 1 is the original shape (created
//! `IF NOT EXISTS`, so a file of the original system, which never set
//! `user_version`, is adopted in place); later ones alter it. Columns are
//! added only when missing, so a file that already grew some of them by hand
//! still upgrades. To change the schema, append a migration: never edit one
//! that has shipped.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{Error, Result};

/// One step of the schema's history.
struct Migration {
    /// What the step is for, for the log.
    what: &'static str,
    apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// Every migration, oldest first; migration `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[Migration] = &[
    Migration {
        what: "base tables",
        apply: base_tables,
    },
    Migration {
        what: "message leases and reply threads",
        apply: message_leases,
    },
    Migration {
        what: "agent fields, peer questions, reminder retries",
        apply: agent_fields,
    },
    Migration {
        what: "container lifecycle state, unique web ports",
        apply: container_state,
    },
    Migration {
        what: "reminder times in milliseconds",
        apply: reminder_millis,
    },
    Migration {
        what: "the task board, budget questions",
        apply: task_board,
    },
    Migration {
        what: "exact message leases",
        apply: exact_leases,
    },
    Migration {
        what: "the node an agent's state lives on",
        apply: agent_node,
    },
    Migration {
        what: "the generation of an agent's state volume",
        apply: state_generation,
    },
    Migration {
        what: "message leases in memory",
        apply: leases_in_memory,
    },
    Migration {
        what: "acked messages vacuumed by id range",
        apply: vacuum_by_id,
    },
];

/// The version `Store::open` brings every file to (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings `conn` to [`SCHEMA_VERSION`], refusing a file from a newer build.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Applies the migrations after the file's version up to `target`.
pub(crate) fn migrate_to(conn: &mut Connection, target: i64) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(Error::Refused(format!(
            "the store has schema version {current}, newer than this build's {SCHEMA_VERSION}: \
             run a newer hive"
        )));
    }
    for (version, migration) in (1..).zip(MIGRATIONS) {
        if version <= current || version > target {
            continue;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        (migration.apply)(&tx)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, what = migration.what, "migrated store schema");
    }
    Ok(())
}

/// Migration 4: whether an agent has a container (no container and kept
/// state = tombstone), whether it should be running after a daemon restart,
/// and one web port per agent at most.
fn container_state(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    add_column(tx, "agents", "has_container", "INTEGER NOT NULL DEFAULT 0")?;
    add_column(tx, "agents", "want_running", "INTEGER NOT NULL DEFAULT 0")?;
    tx.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS agents_port ON agents (port) WHERE port IS NOT NULL",
    )
}

/// Migration 5: reminders keep millisecond due and delivery times
/// (`due_ms`, `delivered_ms`), so one set `in_seconds` never fires early.
/// Whole-second times become the start of their second; the index on the
/// due time follows the rename.
fn reminder_millis(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE reminders RENAME COLUMN due_at TO due_ms;
         ALTER TABLE reminders RENAME COLUMN delivered_at TO delivered_ms;
         UPDATE reminders SET due_ms = due_ms * 1000,
             delivered_ms = delivered_ms * 1000;",
    )
}

/// The task board (`tasks.rs`): tasks, their dependencies and history.
/// `assignee` is the holder of a claimed or blocked task, or whom an open
/// one is reserved for; `links` a JSON array. And the questions core asked
/// the operator about an agent over its budget (`budget.rs`), so an answer
/// acts on that agent even after a daemon restart.
fn task_board(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS tasks (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             title TEXT NOT NULL,
             body TEXT NOT NULL DEFAULT '',
             creator TEXT NOT NULL,
             assignee TEXT,
             status TEXT NOT NULL DEFAULT 'open',
             reason TEXT,
             links TEXT NOT NULL DEFAULT '[]',
             rank INTEGER NOT NULL,
             created_at INTEGER NOT NULL,
             updated_at INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS tasks_held ON tasks (assignee)
             WHERE status IN ('claimed', 'blocked');
         CREATE TABLE IF NOT EXISTS task_deps (
             task INTEGER NOT NULL REFERENCES tasks (id),
             depends_on INTEGER NOT NULL REFERENCES tasks (id),
             PRIMARY KEY (task, depends_on)
         );
         CREATE INDEX IF NOT EXISTS task_deps_reverse ON task_deps (depends_on);
         CREATE TABLE IF NOT EXISTS task_history (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             task INTEGER NOT NULL REFERENCES tasks (id),
             at INTEGER NOT NULL,
             actor TEXT NOT NULL,
             action TEXT NOT NULL,
             note TEXT
         );
         CREATE INDEX IF NOT EXISTS task_history_task ON task_history (task, id);
         CREATE TABLE IF NOT EXISTS budget_questions (
             question INTEGER PRIMARY KEY REFERENCES questions (id),
             agent TEXT NOT NULL
         );",
    )
}

/// Migration 10: leases live in memory (`flight.rs`), so a pop writes
/// nothing and a row stays pending in the file until it is acked. Rows in
/// flight under the old durable leases go back, flagged `redelivered` if
/// their lease was held, as a harness restart would have put them; the
/// lease columns, the in-flight index and the pending index go (a pop
/// reads above its inbox's cursor in memory through `messages_recipient`;
/// one index fewer to write per send and per ack). `broker_running` holds a row
/// from a daemon's start (`Store::recover_broker`) to its clean stop
/// (`Store::stop_broker`): a start that finds one recovers from a crash.
fn leases_in_memory(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let has_leases: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('messages') WHERE name = 'lease_held')",
        [],
        |r| r.get(0),
    )?;
    if has_leases {
        tx.execute_batch(
            "UPDATE messages SET redelivered = 1
                 WHERE delivered_at IS NOT NULL AND acked_at IS NULL AND lease_held = 1;",
        )?;
    }
    tx.execute_batch(
        "UPDATE messages SET delivered_at = NULL
             WHERE delivered_at IS NOT NULL AND acked_at IS NULL;
         DROP INDEX IF EXISTS messages_inflight;
         DROP INDEX IF EXISTS messages_pending;
         CREATE TABLE IF NOT EXISTS broker_running (since INTEGER NOT NULL);",
    )?;
    for column in ["lease", "lease_held", "lease_ms", "lease_until"] {
        drop_column(tx, "messages", column)?;
    }
    Ok(())
}

/// Migration 11: no index of acked rows (`messages_acked`), which every
/// ack wrote a page of. The hourly vacuum finds the rows sent before its
/// cutoff as a range of ids instead (`Store::vacuum_acked`).
fn vacuum_by_id(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch("DROP INDEX IF EXISTS messages_acked;")
}

/// Drops `column` from `table` if it is there.
fn drop_column(tx: &Transaction<'_>, table: &str, column: &str) -> rusqlite::Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        (table, column),
        |r| r.get(0),
    )?;
    if exists {
        tx.execute_batch(&format!("ALTER TABLE {table} DROP COLUMN {column}"))?;
    }
    Ok(())
}

/// Adds `column` to `table` unless it is already there.
fn add_column(tx: &Transaction<'_>, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        (table, column),
        |r| r.get(0),
    )?;
    if !exists {
        tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// Migration 1: the original tables.
fn base_tables(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS agents (
             name TEXT PRIMARY KEY NOT NULL,
             created_at INTEGER NOT NULL
         );
         -- Not AUTOINCREMENT (which costs every send a write of
         -- sqlite_sequence): ids still never repeat, because vacuum never
         -- deletes the newest row.
         CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY,
             sender TEXT NOT NULL,
             recipient TEXT NOT NULL,
             body TEXT NOT NULL,
             sent_at INTEGER NOT NULL,
             delivered_at INTEGER
         );
         CREATE INDEX IF NOT EXISTS messages_recipient ON messages (recipient, id);
         CREATE TABLE IF NOT EXISTS approvals (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             agent TEXT NOT NULL,
             kind TEXT NOT NULL DEFAULT 'apply_commit',
             commit_ref TEXT NOT NULL DEFAULT '',
             requested_at INTEGER NOT NULL,
             status TEXT NOT NULL DEFAULT 'pending',
             resolved_at INTEGER,
             note TEXT
         );
         CREATE TABLE IF NOT EXISTS questions (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             asker TEXT NOT NULL,
             question TEXT NOT NULL,
             options TEXT NOT NULL DEFAULT '[]',
             multi INTEGER NOT NULL DEFAULT 0,
             asked_at INTEGER NOT NULL,
             deadline_at INTEGER,
             answer TEXT,
             answerer TEXT,
             answered_at INTEGER
         );
         CREATE TABLE IF NOT EXISTS reminders (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             owner TEXT NOT NULL,
             message TEXT NOT NULL,
             created_at INTEGER NOT NULL,
             due_at INTEGER NOT NULL,
             delivered_at INTEGER
         );",
    )
}

/// Migration 2: lease delivery (`acked_at`, `redelivered`) and reply
/// threads (`in_reply_to`). Rows delivered before leases existed count as
/// acked, so an upgrade never redelivers old history.
fn message_leases(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    add_column(tx, "messages", "acked_at", "INTEGER")?;
    add_column(tx, "messages", "redelivered", "INTEGER NOT NULL DEFAULT 0")?;
    add_column(tx, "messages", "in_reply_to", "INTEGER")?;
    tx.execute_batch(
        "UPDATE messages SET acked_at = delivered_at
             WHERE delivered_at IS NOT NULL AND acked_at IS NULL;
         CREATE INDEX IF NOT EXISTS messages_pending ON messages (recipient, id)
             WHERE delivered_at IS NULL;
         CREATE INDEX IF NOT EXISTS messages_inflight ON messages (recipient)
             WHERE delivered_at IS NOT NULL AND acked_at IS NULL;
         CREATE INDEX IF NOT EXISTS messages_acked ON messages (acked_at)
             WHERE acked_at IS NOT NULL;",
    )
}

/// Migration 3: per-agent fields core keeps, approval descriptions,
/// questions to peers and cancellation, reminder targets, files and retries.
fn agent_fields(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    for (column, decl) in [
        ("paused", "INTEGER NOT NULL DEFAULT 0"),
        ("status_text", "TEXT"),
        ("status_set_at", "INTEGER"),
        ("active_model", "TEXT"),
        ("parent", "TEXT"),
        ("deployed_sha", "TEXT"),
        ("needs_login", "INTEGER NOT NULL DEFAULT 0"),
        ("needs_update", "INTEGER NOT NULL DEFAULT 0"),
        ("port", "INTEGER"),
        // JSON array of names; NULL means unrestricted.
        ("allowed_recipients", "TEXT"),
    ] {
        add_column(tx, "agents", column, decl)?;
    }
    add_column(tx, "approvals", "description", "TEXT")?;
    add_column(tx, "questions", "target", "TEXT")?;
    add_column(tx, "questions", "cancelled", "INTEGER NOT NULL DEFAULT 0")?;
    for (column, decl) in [
        ("target", "TEXT"),
        ("file_path", "TEXT"),
        ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("last_error", "TEXT"),
        ("parked", "INTEGER NOT NULL DEFAULT 0"),
    ] {
        add_column(tx, "reminders", column, decl)?;
    }
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS approvals_pending ON approvals (id)
             WHERE status = 'pending';
         CREATE INDEX IF NOT EXISTS approvals_resolved ON approvals (resolved_at)
             WHERE status <> 'pending';
         CREATE INDEX IF NOT EXISTS questions_open ON questions (id)
             WHERE answered_at IS NULL;
         CREATE INDEX IF NOT EXISTS reminders_pending ON reminders (owner, due_at)
             WHERE delivered_at IS NULL;",
    )
}

/// Migration 6: exact leases. Every popped row carries the lease that
/// handed it out (`lease`), whether its client named that lease
/// (`lease_held`), the lease period (`lease_ms`, NULL: no expiry, the
/// original's `recv`) and when it runs out (`lease_until`, unix ms).
/// Rows in flight from before leases existed count as held with no expiry,
/// as they were. No new index: lease lookups scan the few in-flight rows
/// through `messages_inflight`, and every index is one more WAL frame per
/// pop and per ack.
fn exact_leases(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    add_column(tx, "messages", "lease", "INTEGER")?;
    add_column(tx, "messages", "lease_held", "INTEGER NOT NULL DEFAULT 1")?;
    add_column(tx, "messages", "lease_ms", "INTEGER")?;
    add_column(tx, "messages", "lease_until", "INTEGER")
}

/// Migration 8: the node (of a multi-host runtime) an agent was first
/// placed on, where its state lives; it runs there or not at all.
fn agent_node(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    add_column(tx, "agents", "node", "TEXT")
}

/// Migration 9: the generation of an agent's state volume (a multi-host
/// runtime's `/state`): bumped when the agent is to start on a fresh one
/// (moved or revived elsewhere); every existing agent is at 0.
fn state_generation(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    add_column(
        tx,
        "agents",
        "state_generation",
        "INTEGER NOT NULL DEFAULT 0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .unwrap();
        stmt.query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn each_step_upgrades_the_previous_shape_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("hive.sqlite")).unwrap();
        migrate_to(&mut conn, 1).unwrap();
        assert!(!columns(&conn, "messages").contains(&"acked_at".to_owned()));
        conn.execute_batch(
            "INSERT INTO agents (name, created_at) VALUES ('alice', 10);
             INSERT INTO messages (sender, recipient, body, sent_at, delivered_at)
                 VALUES ('bob', 'alice', 'old and read', 11, 12),
                        ('bob', 'alice', 'old and unread', 13, NULL);
             INSERT INTO reminders (owner, message, created_at, due_at)
                 VALUES ('alice', 'ping', 14, 15);",
        )
        .unwrap();

        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let rows: Vec<(String, Option<i64>, i64)> = conn
            .prepare("SELECT body, acked_at, redelivered FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("old and read".to_owned(), Some(12), 0),
                ("old and unread".to_owned(), None, 0)
            ]
        );
        let (attempts, parked, due_ms): (u32, bool, i64) = conn
            .query_row("SELECT attempts, parked, due_ms FROM reminders", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!((attempts, parked, due_ms), (0, false, 15_000));
        assert!(columns(&conn, "agents").contains(&"allowed_recipients".to_owned()));

        // Running again is a no-op.
        migrate(&mut conn).unwrap();
    }

    /// Rows in flight under the durable leases of migration 7 go back to
    /// pending as a harness restart would put them: held ones flagged,
    /// unheld ones not; acked and pending rows are untouched.
    #[test]
    fn leases_move_to_memory_returning_what_was_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("hive.sqlite")).unwrap();
        migrate_to(&mut conn, 9).unwrap();
        conn.execute_batch(
            "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at, acked_at,
                                   lease, lease_held)
                 VALUES ('bob', 'alice', 'acked', 1, 2, 3, 5, 1),
                        ('bob', 'alice', 'held', 1, 2, NULL, 6, 1),
                        ('bob', 'alice', 'unheld', 1, 2, NULL, 7, 0),
                        ('bob', 'alice', 'pending', 1, NULL, NULL, NULL, 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let rows: Vec<(String, Option<i64>, i64)> = conn
            .prepare("SELECT body, delivered_at, redelivered FROM messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("acked".to_owned(), Some(2), 0),
                ("held".to_owned(), None, 1),
                ("unheld".to_owned(), None, 0),
                ("pending".to_owned(), None, 0),
            ]
        );
        assert!(!columns(&conn, "messages").contains(&"lease_held".to_owned()));
        let running: i64 = conn
            .query_row("SELECT COUNT(*) FROM broker_running", [], |r| r.get(0))
            .unwrap();
        assert_eq!(running, 0);
    }

    #[test]
    fn refuses_a_newer_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("hive.sqlite")).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err().to_string();
        assert!(err.contains("newer than this build"), "{err}");
    }
}
