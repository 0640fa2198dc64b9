//! The admin CLI against a real daemon: tables, `--json`, plain errors.
#![allow(clippy::disallowed_methods)] // tests run the real binary directly

use std::path::Path;
use std::process::{Command, Output};

use crate::support::Hive;

fn hive_cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn verbs_print_tables_and_json() {
    let hive = Hive::start(&["alice"]);
    let socket = hive.host_socket();

    let out = hive_cli(&socket, &["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alice\nmanager\n");

    let out = hive_cli(&socket, &["--json", "list"]);
    assert_eq!(
        stdout(&out),
        "{\"version\":1,\"ok\":true,\"agents\":[\"alice\",\"manager\"]}\n"
    );

    let out = hive_cli(
        &socket,
        &["request-spawn", "coder", "--description", "writes code"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("queued spawn approval #1 for coder"),
        "{}",
        stdout(&out)
    );

    let out = hive_cli(&socket, &["pending"]);
    let table = stdout(&out);
    assert!(table.starts_with("ID  KIND"), "{table}");
    assert!(
        table.contains("spawn") && table.contains("coder") && table.contains("writes code"),
        "{table}"
    );

    let out = hive_cli(&socket, &["deny", "1", "--note", "later"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&hive_cli(&socket, &["pending"])),
        "no pending approvals\n"
    );

    assert!(hive_cli(&socket, &["pause", "alice"]).status.success());
    let status = stdout(&hive_cli(&socket, &["status", "alice"]));
    let mut lines = status.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{status}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("alice") && row.contains("stopped") && row.contains("yes"),
        "{status}"
    );

    let out = hive_cli(&socket, &["send", "--to", "alice", "hello", "there"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hive.recv("alice", 0, 1)[0]["body"], "hello there");
}

#[test]
fn errors_are_plain_with_a_nonzero_exit() {
    let hive = Hive::start(&["alice"]);
    let socket = hive.host_socket();

    let out = hive_cli(&socket, &["kill", "alice"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "error: no runtime configured: `stop` needs a container backend and this hive runs with --runtime none\n"
    );

    let out = hive_cli(&socket, &["spawn", "Bad"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid agent name \"Bad\": must start with a-z"),
        "{}",
        stderr(&out)
    );

    let missing = hive.dir.path().join("nowhere.sock");
    let out = hive_cli(&missing, &["list"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        format!(
            "error: no socket at {} — is `hive serve` running?\n",
            missing.display()
        )
    );
}
