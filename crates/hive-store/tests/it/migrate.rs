//! Opening files written by older (and newer) builds.

use hive_store::{SCHEMA_VERSION, Store};

use crate::{column, to};

/// A file at `path` as the original system left it, its broker table
/// with `rows` (SQL run on it): no user_version, no leases, no reply
/// threads, ids `AUTOINCREMENT`.
fn original_file(path: &std::path::Path, rows: &str) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             sender TEXT NOT NULL,
             recipient TEXT NOT NULL,
             body TEXT NOT NULL,
             sent_at INTEGER NOT NULL,
             delivered_at INTEGER
         );
         {rows}"
    ))
    .unwrap();
    conn
}

#[test]
fn an_original_file_upgrades_in_place_keeping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.sqlite");
    {
        let conn = original_file(
            &path,
            "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at)
                 VALUES ('manager', 'coder', 'read long ago', 100, 101),
                        ('manager', 'coder', 'still waiting', 102, NULL);",
        );
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0);
    }

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let rows = store.recent("coder", 10).unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.id, r.body.as_str(), r.at))
            .collect::<Vec<_>>(),
        [(2, "still waiting", 102), (1, "read long ago", 100)]
    );
    // The row delivered before leases existed counts as acked: never
    // redelivered. The pending one is delivered normally.
    assert_eq!(
        (
            store.unread("coder").unwrap(),
            store.inflight("coder").unwrap()
        ),
        (1, 0)
    );
    let got = store.recv_batch("coder", 32).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].id, got[0].body.as_str(), got[0].redelivered),
        (2, "still waiting", false)
    );
    assert_eq!(got[0].in_reply_to, None);

    // New columns work on the upgraded table, and ids keep counting up.
    store
        .register_agent(&hive_proto::AgentName::parse("coder").unwrap())
        .unwrap();
    let id = store
        .send("operator", &to("coder"), "hello", Some(1))
        .unwrap()[0];
    assert_eq!(id, 3);
    drop(store);

    // The broker's one index is the recipient's: acked rows have none
    // (the vacuum finds them as an id range), so an ack writes no index.
    let indexes: Vec<String> = column(
        &rusqlite::Connection::open(&path).unwrap(),
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'",
    );
    assert_eq!(indexes, ["messages_recipient"]);

    // Reopening an up-to-date file changes nothing.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.recent("coder", 10).unwrap().len(), 3);
}

/// The original's vacuum could delete its newest rows, so its
/// `AUTOINCREMENT` counter may be above every id left. The ids it issued
/// stay issued: a reply to one is a reply, new rows number on above it,
/// and a batch may answer its own first message.
#[test]
fn an_original_file_whose_newest_rows_were_vacuumed_keeps_its_ids_issued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.sqlite");
    original_file(
        &path,
        "INSERT INTO messages (sender, recipient, body, sent_at, delivered_at)
             VALUES ('manager', 'coder', 'kept', 100, 101),
                    ('manager', 'coder', 'vacuumed', 102, 103),
                    ('manager', 'coder', 'vacuumed too', 104, 105);
         DELETE FROM messages WHERE id > 1;",
    );
    let store = Store::open(&path).unwrap();
    for name in ["coder", "manager"] {
        store
            .register_agent(&hive_proto::AgentName::parse(name).unwrap())
            .unwrap();
    }
    let reply = store
        .send("coder", &to("manager"), "re: 3", Some(3))
        .unwrap();
    assert_eq!(reply, [4]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let message = |body: &str, in_reply_to| hive_proto::OutgoingMessage {
        to: to("manager"),
        body: body.to_owned(),
        in_reply_to,
    };
    let ids = runtime
        .block_on(store.send_batch(
            "coder",
            vec![message("first", None), message("re: first", Some(5))],
        ))
        .unwrap();
    assert_eq!(ids, [5, 6]);
    assert_eq!(store.message(6).unwrap().in_reply_to, Some(5));
    assert!(
        store
            .send("coder", &to("manager"), "re: ?", Some(7))
            .is_err()
    );
}

#[test]
fn a_file_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer than this build"), "{err}");
}

#[test]
fn the_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.sqlite");
    let _store = Store::open(&path).unwrap();
    let conn = crate::beside(&path);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}
