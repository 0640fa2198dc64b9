//! Per-agent and manager sockets: the broker end to end, identity by
//! socket, long-polls, questions, reminders, the manager's verbs.

use std::io::Write;
use std::os::unix::net::UnixStream;

use serde_json::Value;

use crate::support::{Hive, eventually, redact};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

#[test]
fn one_message_through_the_broker() {
    let hive = Hive::start(&["alice", "bob"]);
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"send","to":"bob","body":"hi bob"}"#),
        r#"{"kind":"ok"}"#
    );
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"status"}"#),
        r#"{"kind":"status","unread":1}"#
    );
    let got = hive.recv("bob", 0, 8);
    assert_eq!(got.len(), 1);
    // The sender is the socket it came in on.
    assert_eq!(
        redact(&got[0].to_string()),
        r#"{"id":1,"from":"alice","to":"bob","body":"hi bob","at":"<t>","redelivered":false}"#
    );
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"ack_turn"}"#),
        r#"{"kind":"ok"}"#
    );
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"status"}"#),
        r#"{"kind":"status","unread":0}"#
    );
    assert_eq!(
        redact(&hive.agent("bob", r#"{"cmd":"recent","limit":5}"#)),
        r#"{"kind":"recent","rows":[{"id":1,"from":"alice","body":"hi bob","at":"<t>"}]}"#
    );
    // Replies thread; the manager always reachable.
    hive.agent(
        "bob",
        r#"{"cmd":"send","to":"alice","body":"hi","in_reply_to":1}"#,
    );
    assert_eq!(hive.recv("alice", 0, 1)[0]["in_reply_to"], 1);
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"whoami"}"#),
        r#"{"kind":"whoami","name":"alice","role":"agent"}"#
    );
    assert_eq!(
        hive.agent("manager", r#"{"cmd":"whoami"}"#),
        r#"{"kind":"whoami","name":"manager","role":"manager"}"#
    );
}

#[test]
fn lease_survives_a_dead_harness() {
    let hive = Hive::start(&["alice"]);
    hive.host(r#"{"cmd":"send","to":"alice","body":"task"}"#);
    assert_eq!(hive.recv("alice", 0, 1)[0]["redelivered"], false);
    // The harness dies without acking; its next boot requeues.
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"requeue_inflight"}"#),
        r#"{"kind":"ok"}"#
    );
    let again = hive.recv("alice", 0, 1);
    assert_eq!(
        (again[0]["body"].as_str(), again[0]["redelivered"].as_bool()),
        (Some("task"), Some(true))
    );
    hive.agent("alice", r#"{"cmd":"ack_turn"}"#);
    hive.agent("alice", r#"{"cmd":"requeue_inflight"}"#);
    assert!(hive.recv("alice", 0, 1).is_empty());
}

#[test]
fn long_poll_wakes_on_send() {
    let hive = Hive::start(&["alice"]);
    let socket = hive.agent_socket("alice");
    let waiter = std::thread::spawn(move || {
        crate::support::roundtrip(&socket, br#"{"cmd":"recv","wait_seconds":60}"#)
    });
    // The waiter is parked before we send (the daemon counts no unread).
    std::thread::sleep(std::time::Duration::from_millis(200));
    hive.host(r#"{"cmd":"send","to":"alice","body":"wake"}"#);
    let line = waiter.join().unwrap();
    assert_eq!(json(&line)["messages"][0]["body"], "wake");
}

#[test]
fn disconnect_during_long_poll_loses_nothing() {
    let hive = Hive::start(&["alice"]);
    let mut stream = UnixStream::connect(hive.agent_socket("alice")).unwrap();
    stream
        .write_all(b"{\"cmd\":\"recv\",\"wait_seconds\":2}\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(stream);
    hive.host(r#"{"cmd":"send","to":"alice","body":"kept"}"#);
    // Whether the daemon popped it for the departed client or not, it is
    // back in the inbox, unflagged.
    eventually("the message to be unread again", || {
        hive.agent("alice", r#"{"cmd":"status"}"#) == r#"{"kind":"status","unread":1}"#
    });
    let got = hive.recv("alice", 0, 1);
    assert_eq!(
        (got[0]["body"].as_str(), got[0]["redelivered"].as_bool()),
        (Some("kept"), Some(false))
    );
}

#[test]
fn questions_reach_the_operator_and_peers() {
    let hive = Hive::start(&["alice", "bob"]);
    assert_eq!(
        hive.agent(
            "alice",
            r#"{"cmd":"ask","question":"ship it?","options":["yes","no"]}"#
        ),
        r#"{"kind":"question_queued","id":1}"#
    );
    let state = json(&hive.http_get("/api/state"));
    assert_eq!(state["questions"][0]["question"], "ship it?");
    assert!(state["seq"].as_u64().unwrap() >= 1);
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"answer","id":1,"answer":"yes"}"#),
        r#"{"kind":"err","message":"question 1 is for the operator; bob may not answer it"}"#
    );
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"ask","question":"me?","to":"alice"}"#),
        r#"{"kind":"err","message":"alice cannot ask itself a question"}"#
    );

    // A peer question lands in the target's inbox as a helper event.
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"ask","question":"free?","to":"bob"}"#),
        r#"{"kind":"question_queued","id":2}"#
    );
    let asked = hive.recv("bob", 0, 1);
    assert_eq!(asked[0]["from"], "system");
    assert_eq!(
        asked[0]["body"],
        r#"{"event":"question_asked","id":2,"asker":"alice","question":"free?","multi":false}"#
    );
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"answer","id":2,"answer":"yes"}"#),
        r#"{"kind":"ok"}"#
    );
    let answered = hive.recv("alice", 0, 1);
    assert_eq!(
        answered[0]["body"],
        r#"{"event":"question_answered","id":2,"question":"free?","answer":"yes","answerer":"bob"}"#
    );

    // Only the asker, the manager or the operator may cancel; the manager
    // cleaning up hive-wide tells the asker.
    let refused = json(&hive.agent(
        "bob",
        r#"{"cmd":"cancel_loose_end","kind":"question","id":1}"#,
    ));
    assert_eq!(refused["kind"], "err", "{refused}");
    assert_eq!(
        hive.agent(
            "manager",
            r#"{"cmd":"cancel_loose_end","kind":"question","id":1}"#
        ),
        r#"{"kind":"ok"}"#
    );
    let cancelled = hive.recv("alice", 0, 1);
    assert_eq!(
        cancelled[0]["body"],
        r#"{"event":"question_answered","id":1,"question":"ship it?","answer":"[cancelled]","answerer":"manager"}"#
    );
    // An asker cancelling its own question needs no news of it.
    hive.agent("alice", r#"{"cmd":"ask","question":"again?"}"#);
    assert_eq!(
        hive.agent(
            "alice",
            r#"{"cmd":"cancel_loose_end","kind":"question","id":3}"#
        ),
        r#"{"kind":"ok"}"#
    );
    assert!(hive.recv("alice", 0, 1).is_empty());
    assert_eq!(
        json(&hive.http_get("/api/state"))["questions"],
        serde_json::json!([])
    );
}

#[test]
fn question_ttl_expires_by_timer() {
    let hive = Hive::start(&["alice"]);
    assert_eq!(
        hive.agent(
            "alice",
            r#"{"cmd":"ask","question":"quick?","ttl_seconds":1}"#
        ),
        r#"{"kind":"question_queued","id":1}"#
    );
    let got = hive.recv("alice", 10, 1);
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["body"].as_str()),
        (
            Some("system"),
            Some(
                r#"{"event":"question_answered","id":1,"question":"quick?","answer":"[expired]","answerer":"ttl-watchdog"}"#
            )
        )
    );
}

#[test]
fn reminders_wake_later_and_are_loose_ends() {
    let hive = Hive::start(&["alice"]);
    let queued = json(&hive.agent(
        "alice",
        r#"{"cmd":"remind","message":"check CI","in_seconds":1}"#,
    ));
    assert_eq!(queued["kind"], "reminder_queued");
    let loose = redact(&hive.agent("alice", r#"{"cmd":"get_loose_ends"}"#));
    assert_eq!(
        loose,
        r#"{"kind":"loose_ends","loose_ends":[{"kind":"reminder","id":1,"owner":"alice","message":"check CI","due_at":"<t>","age_seconds":"<t>","attempts":0,"parked":false}]}"#
    );
    let status = json(&hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["alice"]}}"#));
    assert_eq!(status["agent_statuses"][0]["pending_reminders"], 1);
    // Delivered by the scheduler's timer, as a message from `system`.
    let got = hive.recv("alice", 10, 1);
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["body"].as_str()),
        (Some("system"), Some("reminder #1 from alice: check CI"))
    );
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"get_loose_ends"}"#),
        r#"{"kind":"loose_ends","loose_ends":[]}"#
    );

    assert_eq!(
        hive.agent("alice", r#"{"cmd":"remind","message":"x"}"#),
        r#"{"kind":"err","message":"a reminder needs `at` or `in_seconds`"}"#
    );
    assert_eq!(
        hive.agent(
            "alice",
            r#"{"cmd":"remind","message":"x","in_seconds":5,"file_path":"/etc/passwd"}"#
        ),
        r#"{"kind":"err","message":"reminder file_path \"/etc/passwd\" must be an absolute path under /state or /shared"}"#
    );
}

#[test]
fn manager_verbs_and_their_boundaries() {
    let hive = Hive::start(&["alice"]);
    assert_eq!(
        hive.agent(
            "manager",
            r#"{"cmd":"request_spawn","name":"coder","description":"writes code"}"#
        ),
        r#"{"kind":"approval_queued","id":1}"#
    );
    assert_eq!(
        redact(&hive.agent("manager", r#"{"cmd":"get_loose_ends"}"#)),
        r#"{"kind":"loose_ends","loose_ends":[{"kind":"approval","id":1,"agent":"coder","approval_kind":"spawn","commit_ref":"","description":"writes code","requested_at":"<t>","age_seconds":"<t>"}]}"#
    );
    assert_eq!(
        hive.agent("manager", r#"{"cmd":"kill","name":"manager"}"#),
        r#"{"kind":"err","message":"the manager cannot stop itself"}"#
    );
    assert_eq!(
        hive.agent("manager", r#"{"cmd":"start","name":"alice"}"#),
        r#"{"kind":"err","message":"no runtime configured: `start` needs a container backend and this hive runs with --runtime none"}"#
    );
    let list = json(&hive.agent("manager", r#"{"cmd":"list"}"#));
    let names: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "manager"]);
    // Agents cannot use manager verbs: on their socket these are unknown.
    let refused = json(&hive.agent("alice", r#"{"cmd":"request_spawn","name":"x"}"#));
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown verb `request_spawn`"),
        "{refused}"
    );
    assert_eq!(
        hive.agent(
            "alice",
            r#"{"cmd":"cancel_loose_end","kind":"approval","id":1}"#
        ),
        r#"{"kind":"err","message":"only the manager can withdraw approvals"}"#
    );
    assert_eq!(
        hive.agent(
            "manager",
            r#"{"cmd":"cancel_loose_end","kind":"approval","id":1}"#
        ),
        r#"{"kind":"ok"}"#
    );
    assert_eq!(
        hive.host(r#"{"cmd":"pending"}"#),
        r#"{"version":1,"ok":true,"approvals":[]}"#
    );
}

#[test]
fn bad_agent_requests() {
    let hive = Hive::start(&["alice"]);
    assert_eq!(
        hive.agent("alice", "nope"),
        r#"{"kind":"err","message":"malformed request: expected ident at line 1 column 2"}"#
    );
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"send","to":"../x","body":"hi"}"#),
        r#"{"kind":"err","message":"invalid agent name \"../x\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)"}"#
    );
    let big = "x".repeat(64 * 1024 + 1);
    let refused = json(&hive.agent(
        "alice",
        &format!(r#"{{"cmd":"send","to":"manager","body":"{big}"}}"#),
    ));
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("/shared or /state"),
        "{refused}"
    );
}
