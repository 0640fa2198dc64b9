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
        // Refused while the line is decoded, as every bad name is.
        r#"{"kind":"err","message":"invalid `send` request: invalid agent name \"../x\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)"}"#
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

#[test]
fn every_surface_refuses_an_empty_body_alike() {
    let hive = Hive::start(&["alice", "bob"]);
    for body in ["", "  \n "] {
        let request = serde_json::json!({"cmd":"send","to":"bob","body":body}).to_string();
        assert_eq!(
            hive.agent("alice", &request),
            r#"{"kind":"err","message":"the message is empty"}"#
        );
        let request = serde_json::json!({"cmd":"send","to":"bob","body":body}).to_string();
        assert_eq!(
            hive.host(&request),
            r#"{"version":1,"ok":false,"error":"the message is empty"}"#
        );
        let bearer = hive.bearer();
        let headers = [
            ("Content-Type", "application/json"),
            ("Authorization", bearer.as_str()),
        ];
        for (path, payload) in [
            (
                "/api/send",
                serde_json::json!({"to":"bob","body":body}).to_string(),
            ),
            (
                "/agent/bob/api/send",
                serde_json::json!({"body":body}).to_string(),
            ),
        ] {
            let (status, _, answer) = hive.http("POST", path, &headers, &payload);
            assert_eq!(status, 400, "{path}: {answer}");
            assert_eq!(
                json(&answer)["error"],
                "the message is empty",
                "{path}: {answer}"
            );
        }
    }
    assert!(hive.recv("bob", 0, 8).is_empty());
}

#[test]
fn a_reminder_at_a_past_time_is_refused() {
    let hive = Hive::start(&["alice"]);
    let answer = json(&hive.agent(
        "alice",
        r#"{"cmd":"remind","message":"too late","at":1000}"#,
    ));
    let message = answer["message"].as_str().unwrap();
    assert_eq!(answer["kind"], "err");
    assert!(
        message.starts_with("a reminder's `at` (1000) is in the past (now ")
            && message.ends_with("): give a later unix time, or `in_seconds`"),
        "{message}"
    );
    assert_eq!(
        hive.agent("alice", r#"{"cmd":"get_loose_ends"}"#),
        r#"{"kind":"loose_ends","loose_ends":[]}"#
    );
}

/// A reminder is never delivered before its millisecond due time: the
/// store's row (read back through its own file) orders delivery after due.
#[test]
fn reminders_fire_no_earlier_than_their_millisecond() {
    let hive = Hive::start(&["alice"]);
    for in_seconds in [1, 1, 2] {
        let queued = json(&hive.agent(
            "alice",
            &format!(r#"{{"cmd":"remind","message":"m","in_seconds":{in_seconds}}}"#),
        ));
        assert_eq!(queued["kind"], "reminder_queued", "{queued}");
        std::thread::sleep(std::time::Duration::from_millis(137));
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let batch = hive.recv("alice", 10, 8);
        assert!(!batch.is_empty(), "reminders were not delivered");
        got.extend(batch);
    }
    // Read with the daemon stopped: a serving daemon holds the file alone.
    let dir = hive.stop();
    let store = hive_store::Store::open(&dir.path().join("state/hive.sqlite")).unwrap();
    for id in 1..=3 {
        let r = store.reminder(id).unwrap();
        let delivered = r.delivered_ms.expect("delivered");
        assert!(
            delivered >= r.due_ms,
            "reminder {id} fired {} ms early",
            r.due_ms - delivered
        );
    }
}

/// What the harness reports moves the manager's login events only on a
/// real transition: the `idle` of a boot before its credentials probe says
/// nothing, and a second start that finds the same missing login is
/// silent.
#[test]
fn login_events_only_on_real_transitions() {
    let hive = Hive::start(&["alice"]);
    let report = |line: &str| assert_eq!(hive.agent("alice", line), r#"{"kind":"ok"}"#);
    let login_events = || -> Vec<String> {
        let recent = json(&hive.agent("manager", r#"{"cmd":"recent","limit":200}"#));
        let mut events: Vec<String> = recent["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["from"] == "system")
            .filter_map(|m| m["body"].as_str().map(str::to_owned))
            .filter(|b| b.contains("login") || b.contains("logged_in"))
            .collect();
        events.reverse();
        events
    };
    // Two starts without credentials: boot `idle`, then the probe's
    // `needs_login`.
    for _ in 0..2 {
        report(r#"{"cmd":"harness_state","state":"idle","model":"sonnet"}"#);
        report(
            r#"{"cmd":"harness_state","state":"needs_login","model":"sonnet","logged_in":false}"#,
        );
    }
    assert_eq!(
        login_events(),
        [r#"{"event":"needs_login","agent":"alice"}"#]
    );
    // Credentials appear: one `logged_in`; a restart that finds them again
    // announces nothing.
    report(r#"{"cmd":"harness_state","state":"idle","model":"sonnet","logged_in":true}"#);
    report(r#"{"cmd":"harness_state","state":"idle","model":"sonnet"}"#);
    report(r#"{"cmd":"harness_state","state":"idle","model":"sonnet","logged_in":true}"#);
    assert_eq!(
        login_events(),
        [
            r#"{"event":"needs_login","agent":"alice"}"#,
            r#"{"event":"logged_in","agent":"alice"}"#
        ]
    );
}
