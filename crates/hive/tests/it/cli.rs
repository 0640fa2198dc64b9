//! The admin CLI against a real daemon: tables, `--json`, plain errors.
#![allow(clippy::disallowed_methods)] // tests run the real binary directly

use std::path::Path;
use std::process::{Command, Output};

use crate::support::Hive;

pub fn hive_cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

pub fn stdout(out: &Output) -> String {
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
        "no pending approvals\n\nno open questions\n"
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

/// Questions without the browser: listed beside approvals, answered by
/// option number (several for a multi question) or free text, cancelled;
/// the asker's inbox carries each answer.
#[test]
fn questions_from_the_cli() {
    let hive = Hive::start(&["alice", "bob"]);
    let socket = hive.host_socket();
    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"ship it?","options":["yes","no"],"ttl_seconds":3500}"#,
    );
    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"which files?","options":["a.rs","b.rs","c.rs"],"multi":true}"#,
    );
    hive.agent("bob", r#"{"cmd":"ask","question":"why?"}"#);
    hive.host(r#"{"cmd":"request_spawn","name":"carol"}"#);

    let out = hive_cli(&socket, &["questions"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0], "ID  ASKER  TO        AGE  TTL  QUESTION",
        "{table}"
    );
    // Asked a moment ago: an age in seconds, however slow the machine.
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..3], ["1", "alice", "operator"], "{table}");
    assert!(
        row[3]
            .strip_suffix('s')
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        "{table}"
    );
    assert!(
        lines[1].ends_with("ship it?") && lines[1].contains(" 58m "),
        "{table}"
    );
    assert_eq!(lines[2].trim(), "1. yes", "{table}");
    assert_eq!(lines[3].trim(), "2. no", "{table}");
    assert!(
        table.contains("(pick several: `hive answer 2 1 3`)"),
        "{table}"
    );
    assert!(lines.last().unwrap().ends_with("why?"), "{table}");

    // `pending` shows both kinds of waiting.
    let pending = stdout(&hive_cli(&socket, &["pending"]));
    let (approvals, questions) = pending.split_once("\n\n").unwrap();
    assert!(
        approvals.starts_with("ID  KIND") && approvals.contains("carol"),
        "{pending}"
    );
    assert!(
        questions.starts_with("ID  ASKER") && questions.contains("why?"),
        "{pending}"
    );

    // By number; several by number; free text; a number out of range is refused.
    let out = hive_cli(&socket, &["answer", "1", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "answered question #1\n");
    assert!(
        hive_cli(&socket, &["answer", "2", "1", "3"])
            .status
            .success()
    );
    let out = hive_cli(&socket, &["answer", "3", "7"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answers: Vec<String> = hive
        .recv("alice", 0, 32)
        .iter()
        .map(|m| {
            let body: serde_json::Value =
                serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
            body["answer"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(answers, ["no", "a.rs, c.rs"]);
    let bob = hive.recv("bob", 0, 32);
    assert!(
        bob[0]["body"].as_str().unwrap().contains(r#""answer":"7""#),
        "{bob:?}"
    );

    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"again?","options":["yes","no"]}"#,
    );
    let out = hive_cli(&socket, &["answer", "4", "3"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "error: question #4 has options 1..2; 3 is not one\n"
    );
    let out = hive_cli(&socket, &["cancel-question", "4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "cancelled question #4\n");
    let out = hive_cli(&socket, &["answer", "4", "yes"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("question 4 was already"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&hive_cli(&socket, &["questions"])),
        "no open questions\n"
    );
}
