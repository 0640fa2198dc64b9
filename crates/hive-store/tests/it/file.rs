//! The store's file: which process may open it, and what reaches it.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hive_store::Store;

use crate::{store_with, to};

/// The checkpointer's connection shares the file with the writer's (one
/// process, `hive_store::SQLITE_VFS`): what is committed reaches the
/// database file itself, not only its WAL, though no commit checkpoints
/// (their own fallback waits for 16,384 WAL pages).
#[test]
fn the_checkpointer_copies_commits_into_the_file() {
    let (dir, store) = store_with(&["alice", "bob"]);
    let path = dir.path().join("hive.sqlite");
    let before = std::fs::metadata(&path).unwrap().len();
    let body = "x".repeat(1000);
    for _ in 0..500 {
        store.send("alice", &to("bob"), &body, None).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(&path).unwrap().len();
        if now >= before + 400 * 1000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the file stayed at {now} bytes (from {before}): nothing was checkpointed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A store another process serves is refused, saying so, and left as
/// that process keeps it: no second daemon shares the file (it holds the
/// file from its first read, `hive_store::SQLITE_VFS`).
#[test]
#[allow(clippy::disallowed_methods)] // this test binary, run again as the other process
fn a_store_another_process_holds_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.sqlite");
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "file::hold_a_store_for_another_test",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLD, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
    let held = out
        .by_ref()
        .map_while(Result::ok)
        // libtest may print the test's name first, on the same line.
        .any(|line| line.ends_with("held"));
    assert!(held, "the holder never opened the store");

    let err = Store::open(&path).unwrap_err().to_string();
    assert!(err.contains("open in another process"), "{err}");

    drop(holder.stdin.take());
    out.for_each(drop);
    assert!(holder.wait().unwrap().success());
    // Once it is gone the file opens here, with what the holder wrote.
    let store = Store::open(&path).unwrap();
    assert!(store.agent("holder").unwrap().is_some());
}

/// Where [`hold_a_store_for_another_test`] opens a store.
const HOLD: &str = "HIVE_STORE_TEST_HOLD";

/// The other process of `a_store_another_process_holds_is_refused_saying_so`
/// (that test runs this binary again for it, `--ignored`); without
/// [`HOLD`] set it does nothing.
/// Opens the store, registers `holder`, says `held`, and keeps it open
/// until its stdin closes.
#[test]
#[ignore = "the other process of a_store_another_process_holds_is_refused_saying_so, which runs it"]
fn hold_a_store_for_another_test() {
    let Some(path) = std::env::var_os(HOLD) else {
        return;
    };
    let store = Store::open(Path::new(&path)).unwrap();
    store.register_agent(&crate::agent("holder")).unwrap();
    println!("held");
    let _ = std::io::stdin().lock().read_line(&mut String::new());
}
