//! Integration tests of hive-store against real sqlite files in temp dirs.
#![allow(clippy::unwrap_used)] // the shared helpers below are test code too

mod approvals;
mod broker;
mod file;
mod loose_ends;
mod migrate;
mod questions;
mod reminders;
mod tasks;

use hive_proto::{AgentName, Recipient};
use hive_store::Store;
use tempfile::TempDir;

/// The agent `name` names.
fn agent(name: &str) -> AgentName {
    AgentName::parse(name).unwrap()
}

/// The recipient `to` names.
fn to(to: &str) -> Recipient {
    Recipient::parse(to).unwrap()
}

/// A fresh store in its own temp dir, with `agents` registered.
fn store_with(agents: &[&str]) -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
    for name in agents {
        store
            .register_agent(&AgentName::parse(name).unwrap())
            .unwrap();
        store.set_has_container(name, true).unwrap();
    }
    (dir, store)
}

/// A second, plain connection to the store's file, for arranging rows.
fn raw(dir: &TempDir) -> rusqlite::Connection {
    beside(&dir.path().join("hive.sqlite"))
}

/// A plain connection to the store file at `path` while a [`Store`] of
/// this process has it open: on the store's own VFS, which keeps the WAL
/// index in this process's memory.
fn beside(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags_and_vfs(
        path,
        rusqlite::OpenFlags::default(),
        hive_store::SQLITE_VFS,
    )
    .unwrap()
}

/// The first column of every row `sql` selects on `conn`.
fn column<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Bodies of `recipient`'s inbox, oldest first, as (from, body).
fn inbox(store: &Store, recipient: &str) -> Vec<(String, String)> {
    let mut rows = store.recent(recipient, 1000).unwrap();
    rows.reverse();
    rows.into_iter().map(|r| (r.from, r.body)).collect()
}

#[test]
fn store_is_a_shareable_handle() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<Store>();
}
