//! The task board through the real daemon: the agent and manager sockets
//! (an agent trying what it may not), host.sock and the `hive` CLI, and a
//! claim's lease returning when its holder's container is killed -9 or
//! destroyed.
#![allow(clippy::disallowed_methods)] // tests run the real binary directly

use std::process::Command;
use std::time::Instant;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::lifecycle::{manager_events, status};
use crate::support::{Hive, eventually};

fn call(hive: &Hive, who: &str, request: Value) -> Value {
    let line = hive.agent(who, &request.to_string());
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// The task a task verb answered, or a panic with the refusal.
fn task(answer: Value) -> Value {
    assert_eq!(answer["kind"], "task", "{answer}");
    answer["task"].clone()
}

/// The refusal a verb answered.
fn refusal(answer: Value) -> String {
    assert_eq!(answer["kind"], "err", "{answer}");
    answer["message"].as_str().unwrap().to_owned()
}

fn board(hive: &Hive, filter: &str) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&hive.host(&format!(r#"{{"cmd":"tasks","filter":"{filter}"}}"#)))
            .unwrap();
    v["tasks"].as_array().unwrap().clone()
}

fn one(hive: &Hive, id: i64) -> Value {
    board(hive, "all")
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap()
}

fn hive_cli(hive: &Hive, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("--socket")
        .arg(hive.host_socket())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn agents_claim_what_they_may_and_the_operator_steers_from_the_cli() {
    let hive = Hive::start(&["alice", "bob"]);
    let schema = task(call(
        &hive,
        "manager",
        json!({"cmd":"task_create","title":"schema"}),
    ));
    let s = schema["id"].as_i64().unwrap();
    let api = task(call(
        &hive,
        "manager",
        json!({"cmd":"task_create","title":"api","depends_on":[s]}),
    ));
    let a = api["id"].as_i64().unwrap();
    let docs = task(call(
        &hive,
        "manager",
        json!({"cmd":"task_create","title":"docs","links":["/shared/docs.md"]}),
    ));
    let d = docs["id"].as_i64().unwrap();
    assert_eq!(
        (api["claimable"].as_bool(), docs["claimable"].as_bool()),
        (Some(false), Some(true))
    );

    // Two agents claim what they may.
    let claimable = call(
        &hive,
        "bob",
        json!({"cmd":"task_list","filter":"claimable"}),
    );
    let ids: Vec<i64> = claimable["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [s, d]);
    assert_eq!(
        task(call(&hive, "alice", json!({"cmd":"task_claim","id":s})))["assignee"],
        "alice"
    );
    assert_eq!(
        refusal(call(&hive, "bob", json!({"cmd":"task_claim","id":a}))),
        format!("task {a} depends on tasks not done yet: {s} (claimed)")
    );
    task(call(&hive, "bob", json!({"cmd":"task_claim","id":d})));

    // The adversary: bob completes or cancels what is not his, uses the
    // manager's verbs, links a host file, closes a cycle.
    assert_eq!(
        refusal(call(&hive, "bob", json!({"cmd":"task_complete","id":s}))),
        format!("only the agent holding task {s} can mark it done: it is held by alice")
    );
    assert_eq!(
        refusal(call(&hive, "bob", json!({"cmd":"task_cancel","id":s}))),
        format!(
            "only the manager, the operator or its creator (while it is open) can cancel task {s}"
        )
    );
    let assign = refusal(call(
        &hive,
        "bob",
        json!({"cmd":"task_assign","id":a,"agent":"bob"}),
    ));
    assert!(assign.starts_with("unknown verb `task_assign`"), "{assign}");
    assert_eq!(
        refusal(call(
            &hive,
            "bob",
            json!({"cmd":"task_create","title":"x","links":["/etc/shadow"]})
        )),
        "task link \"/etc/shadow\" must be msg:<id> or an absolute path under /shared or /state"
    );
    assert_eq!(
        refusal(call(
            &hive,
            "manager",
            json!({"cmd":"task_update","id":s,"depends_on":[a]})
        )),
        format!(
            "task {s} cannot depend on task {a}: task {a} already depends on task {s} (a dependency cycle)"
        )
    );

    // One completes; the dependent becomes claimable.
    assert_eq!(
        task(call(
            &hive,
            "alice",
            json!({"cmd":"task_complete","id":s,"note":"merged"})
        ))["status"],
        "done"
    );
    assert_eq!(one(&hive, a)["claimable"], true);
    assert_eq!(
        task(call(&hive, "bob", json!({"cmd":"task_claim","id":a})))["status"],
        "claimed"
    );
    let shown = call(&hive, "alice", json!({"cmd":"task_show","id":s}));
    let actions: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "claimed", "completed"]);

    // An unknown assignee is refused before anything is created.
    let refused = hive.host(r#"{"cmd":"task_add","title":"orphan","assignee":"nosuch"}"#);
    assert!(refused.contains(r#""ok":false"#), "{refused}");
    assert!(!hive_cli(&hive, &["tasks", "--all"]).contains("orphan"));

    // The operator: add (reserved for alice, after api), list, assign, cancel.
    let added = hive_cli(
        &hive,
        &[
            "task",
            "add",
            "ship it",
            "--after",
            &format!("#{a}"),
            "--assign",
            "alice",
        ],
    );
    let ship = a + 2;
    assert_eq!(added, format!("added task #{ship}: ship it\n"));
    let table = hive_cli(&hive, &["tasks"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID  "), "{table}");
    assert!(
        lines.iter().any(|l| l.contains(&format!("#{ship}"))
            && l.contains("for alice")
            && l.contains(&format!("#{a}"))),
        "{table}"
    );
    assert!(
        !table.contains("schema"),
        "done tasks only with --all: {table}"
    );
    assert!(hive_cli(&hive, &["tasks", "--all"]).contains("schema"));
    // Alice was told of the assignment.
    let told = hive.agent("alice", r#"{"cmd":"recent","limit":5}"#);
    assert!(
        told.contains("task_assigned") && told.contains("ship it"),
        "{told}"
    );
    assert_eq!(
        hive_cli(&hive, &["task", "assign", &ship.to_string(), "bob"]),
        format!("assigned task #{ship}: ship it\n")
    );
    assert_eq!(
        refusal(call(&hive, "alice", json!({"cmd":"task_claim","id":ship}))),
        format!("task {ship} is assigned to bob")
    );
    assert_eq!(
        hive_cli(
            &hive,
            &["task", "cancel", &ship.to_string(), "--reason", "later"]
        ),
        format!("cancelled task #{ship}: ship it\n")
    );
    assert_eq!(one(&hive, ship)["status"], "cancelled");
    // A bad request loses nothing and says why.
    assert_eq!(
        hive.host(r#"{"cmd":"task_assign","id":999,"agent":"bob"}"#),
        r#"{"version":1,"ok":false,"error":"no task with id 999"}"#
    );
}

/// The container's process group leader, from the process runtime's pidfile.
fn container_pid(hive: &Hive, name: &str) -> i32 {
    let pidfile = hive
        .state_dir()
        .join(format!("agents/{name}/container.pid"));
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn released(hive: &Hive, id: i64) -> Vec<Value> {
    manager_events(hive)
        .into_iter()
        .filter(|e| e["event"] == "task_released" && e["id"] == id)
        .collect()
}

#[test]
fn a_claim_returns_to_the_board_when_its_holder_is_killed_or_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let hive = Hive::start_with(
        dir,
        "process",
        &["--manager-port", "18300", "--agent-ports", "18400-18499"],
    );
    eventually("the manager to run", || {
        status(&hive, "manager")["running"] == true
    });
    assert_eq!(
        hive.host(r#"{"cmd":"spawn","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    let t = task(call(
        &hive,
        "manager",
        json!({"cmd":"task_create","title":"refactor"}),
    ));
    let id = t["id"].as_i64().unwrap();
    task(call(&hive, "coder", json!({"cmd":"task_claim","id":id})));

    // kill -9 of the claiming container's whole process group.
    let killed_at = Instant::now();
    killpg(
        Pid::from_raw(container_pid(&hive, "coder")),
        Signal::SIGKILL,
    )
    .unwrap();
    eventually("the task to be open again", || {
        one(&hive, id)["status"] == "open"
    });
    eprintln!("claim returned {:?} after kill -9", killed_at.elapsed());
    let t = one(&hive, id);
    assert!(t.get("assignee").is_none() && t["claimable"] == true, "{t}");
    // The release commits before the manager is told.
    eventually("the manager to be told", || !released(&hive, id).is_empty());
    assert_eq!(
        released(&hive, id),
        [
            json!({"event":"task_released","id":id,"title":"refactor","agent":"coder","reason":"its container crashed"})
        ]
    );

    // Claimed again after a restart, then destroyed: open again, told again.
    assert_eq!(
        hive.host(r#"{"cmd":"restart","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    task(call(&hive, "coder", json!({"cmd":"task_claim","id":id})));
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(one(&hive, id)["status"], "open");
    eventually("the manager to be told again", || {
        released(&hive, id).len() == 2
    });
    let events = released(&hive, id);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["reason"], "its container was destroyed");
}
