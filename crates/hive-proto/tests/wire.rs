//! Pins the exact JSON line of every request, response and event variant.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use hive_proto::agent::*;
use hive_proto::dashboard::*;
use hive_proto::live::*;
use hive_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Serializes `value` to exactly `line` and decodes `line` back to `value`.
#[track_caller]
fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T, line: &str) {
    assert_eq!(serde_json::to_string(&value).unwrap(), line);
    assert_eq!(serde_json::from_str::<T>(line).unwrap(), value);
}

fn name(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

fn to(s: &str) -> Recipient {
    Recipient::parse(s).unwrap()
}

#[test]
fn host_requests() {
    use HostRequest::*;
    check(
        Spawn {
            name: name("coder"),
        },
        r#"{"cmd":"spawn","name":"coder"}"#,
    );
    check(
        RequestSpawn {
            name: name("coder"),
            description: None,
        },
        r#"{"cmd":"request_spawn","name":"coder"}"#,
    );
    check(
        RequestSpawn {
            name: name("coder"),
            description: Some("writes code".into()),
        },
        r#"{"cmd":"request_spawn","name":"coder","description":"writes code"}"#,
    );
    check(
        Kill {
            name: name("coder"),
        },
        r#"{"cmd":"kill","name":"coder"}"#,
    );
    check(
        Destroy {
            name: name("coder"),
            purge: true,
        },
        r#"{"cmd":"destroy","name":"coder","purge":true}"#,
    );
    check(
        Rebuild {
            name: name("coder"),
        },
        r#"{"cmd":"rebuild","name":"coder"}"#,
    );
    check(
        Checkpoint {
            name: name("coder"),
        },
        r#"{"cmd":"checkpoint","name":"coder"}"#,
    );
    check(
        Move {
            name: name("coder"),
            node: "n2".into(),
        },
        r#"{"cmd":"move","name":"coder","node":"n2"}"#,
    );
    check(List, r#"{"cmd":"list"}"#);
    check(Pending, r#"{"cmd":"pending"}"#);
    check(Approve { id: 7 }, r#"{"cmd":"approve","id":7}"#);
    check(Deny { id: 7, note: None }, r#"{"cmd":"deny","id":7}"#);
    check(
        Deny {
            id: 7,
            note: Some("too broad".into()),
        },
        r#"{"cmd":"deny","id":7,"note":"too broad"}"#,
    );
    check(
        AgentStatus {
            scope: Scope::default(),
        },
        r#"{"cmd":"agent_status"}"#,
    );
    check(
        AgentStatus {
            scope: Scope::one(name("a")),
        },
        r#"{"cmd":"agent_status","scope":{"agent_names":["a"]}}"#,
    );
    check(SubscribeAgentStatus, r#"{"cmd":"subscribe_agent_status"}"#);
    check(
        Start {
            scope: Scope {
                agent_names: vec![name("a"), name("b")],
            },
        },
        r#"{"cmd":"start","scope":{"agent_names":["a","b"]}}"#,
    );
    check(
        Stop {
            scope: Scope::default(),
            graceful: true,
        },
        r#"{"cmd":"stop","scope":{"agent_names":[]},"graceful":true}"#,
    );
    check(
        Restart { name: name("a") },
        r#"{"cmd":"restart","name":"a"}"#,
    );
    check(
        SetPaused {
            name: name("a"),
            paused: true,
        },
        r#"{"cmd":"set_paused","name":"a","paused":true}"#,
    );
    check(Urls, r#"{"cmd":"urls"}"#);
    check(
        Send {
            to: to("a"),
            body: "hi".into(),
        },
        r#"{"cmd":"send","to":"a","body":"hi"}"#,
    );
    check(
        Rollback {
            name: name("a"),
            id: 3,
        },
        r#"{"cmd":"rollback","name":"a","id":3}"#,
    );
    check(
        Logs {
            name: name("a"),
            lines: None,
            follow: false,
        },
        r#"{"cmd":"logs","name":"a"}"#,
    );
    check(
        Logs {
            name: name("a"),
            lines: Some(50),
            follow: true,
        },
        r#"{"cmd":"logs","name":"a","lines":50,"follow":true}"#,
    );
    check(Questions, r#"{"cmd":"questions"}"#);
    check(
        Answer {
            id: 7,
            answer: "yes, later".into(),
        },
        r#"{"cmd":"answer","id":7,"answer":"yes, later"}"#,
    );
    check(
        CancelQuestion { id: 7 },
        r#"{"cmd":"cancel_question","id":7}"#,
    );
    check(Show { id: 3 }, r#"{"cmd":"show","id":3}"#);
}

#[test]
fn host_request_decoding_is_lenient_and_strict_where_it_matters() {
    // Unknown fields are ignored; absent optional fields default.
    let r: HostRequest = serde_json::from_str(r#"{"cmd":"destroy","name":"a","extra":1}"#).unwrap();
    assert_eq!(
        r,
        HostRequest::Destroy {
            name: name("a"),
            purge: false
        }
    );
    let r: HostRequest = serde_json::from_str(r#"{"cmd":"stop"}"#).unwrap();
    assert_eq!(
        r,
        HostRequest::Stop {
            scope: Scope::default(),
            graceful: false
        }
    );
    // A bad name never decodes.
    let err = serde_json::from_str::<HostRequest>(r#"{"cmd":"spawn","name":"../etc"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("invalid agent name \"../etc\""), "{err}");
}

/// 2026-09-12T09:15:00Z, as the original's clients read it.
const AT: i64 = 1_789_204_500;

fn row() -> AgentStatusRow {
    AgentStatusRow {
        name: "coder".into(),
        running: true,
        failed: false,
        needs_update: false,
        needs_login: true,
        deployed_sha: Some("0123456789ab".into()),
        pending_reminders: 2,
        paused: false,
        parent: Some("manager".into()),
        active_model: Some("sonnet".into()),
        status_text: Some("reviewing".into()),
        status_set_at: Some(AT),
        url: Some("http://127.0.0.1:8100/agent/coder/".into()),
        node: None,
        node_down: false,
        checkpoint_at: None,
        checkpoint_bytes: None,
    }
}

fn bare_row() -> AgentStatusRow {
    AgentStatusRow {
        name: "idle".into(),
        running: false,
        failed: false,
        needs_update: false,
        needs_login: false,
        deployed_sha: None,
        pending_reminders: 0,
        paused: false,
        parent: None,
        active_model: None,
        status_text: None,
        status_set_at: None,
        url: None,
        node: None,
        node_down: false,
        checkpoint_at: None,
        checkpoint_bytes: None,
    }
}

fn approval() -> Approval {
    Approval {
        id: 3,
        agent: "coder".into(),
        kind: ApprovalKind::ApplyCommit,
        commit_ref: "abc1234".into(),
        fetched_sha: Some("abc1234def5678abc1234def5678abc1234def56".into()),
        requested_at: AT,
        status: ApprovalStatus::Denied,
        resolved_at: Some(AT + 100),
        note: Some("no".into()),
        description: Some("bump model".into()),
    }
}

fn bare_approval() -> Approval {
    Approval {
        id: 4,
        agent: "reviewer".into(),
        kind: ApprovalKind::Spawn,
        commit_ref: String::new(),
        fetched_sha: None,
        requested_at: AT,
        status: ApprovalStatus::Pending,
        resolved_at: None,
        note: None,
        description: None,
    }
}

/// The original's lines, byte for byte: `urls` is one `HiveUrls` object,
/// timestamps are RFC 3339 UTC strings, approval fields in the original's
/// order (`id, agent, kind, commit_ref, fetched_sha?, requested_at, status,
/// resolved_at?, note?, description?`), optional fields absent when unset.
#[test]
fn host_responses() {
    check(HostResponse::success(), r#"{"version":1,"ok":true}"#);
    check(
        HostResponse::error("boom"),
        r#"{"version":1,"ok":false,"error":"boom"}"#,
    );
    check(
        HostResponse::agents(vec!["a".into(), "manager".into()]),
        r#"{"version":1,"ok":true,"agents":["a","manager"]}"#,
    );
    check(
        HostResponse::agent_statuses(vec![row(), bare_row()]),
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"coder","running":true,"failed":false,"needs_update":false,"needs_login":true,"deployed_sha":"0123456789ab","pending_reminders":2,"paused":false,"parent":"manager","active_model":"sonnet","status_text":"reviewing","status_set_at":"2026-09-12T09:15:00Z","url":"http://127.0.0.1:8100/agent/coder/"},{"name":"idle","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false}]}"#,
    );
    // Under a runtime that schedules across hosts, the node comes last.
    check(
        HostResponse::agent_statuses(vec![AgentStatusRow {
            node: Some("node-2".into()),
            node_down: false,
            ..bare_row()
        }]),
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"idle","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false,"node":"node-2"}]}"#,
    );
    // Its last checkpoint, after the node.
    check(
        HostResponse::agent_statuses(vec![AgentStatusRow {
            node: Some("node-2".into()),
            checkpoint_at: Some(AT),
            checkpoint_bytes: Some(10240),
            ..bare_row()
        }]),
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"idle","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false,"node":"node-2","checkpoint_at":"2026-09-12T09:15:00Z","checkpoint_bytes":10240}]}"#,
    );
    check(
        HostResponse::approvals(vec![approval(), bare_approval()]),
        r#"{"version":1,"ok":true,"approvals":[{"id":3,"agent":"coder","kind":"apply_commit","commit_ref":"abc1234","fetched_sha":"abc1234def5678abc1234def5678abc1234def56","requested_at":"2026-09-12T09:15:00Z","status":"denied","resolved_at":"2026-09-12T09:16:40Z","note":"no","description":"bump model"},{"id":4,"agent":"reviewer","kind":"spawn","commit_ref":"","requested_at":"2026-09-12T09:15:00Z","status":"pending"}]}"#,
    );
    check(
        HostResponse::urls(HiveUrls {
            domain: "hive.example.org".into(),
            home: "https://hive.example.org/".into(),
            forge: Some("https://forge.example.org/".into()),
            matrix: Some("https://matrix.example.org/".into()),
        }),
        r#"{"version":1,"ok":true,"urls":{"domain":"hive.example.org","home":"https://hive.example.org/","forge":"https://forge.example.org/","matrix":"https://matrix.example.org/"}}"#,
    );
    check(
        HostResponse::urls(HiveUrls {
            domain: "127.0.0.1".into(),
            home: "http://127.0.0.1:7000/".into(),
            forge: None,
            matrix: None,
        }),
        r#"{"version":1,"ok":true,"urls":{"domain":"127.0.0.1","home":"http://127.0.0.1:7000/"}}"#,
    );
    check(
        HostResponse::logs(vec!["booted".into()]),
        r#"{"version":1,"ok":true,"logs":["booted"]}"#,
    );
    check(
        HostResponse::questions(vec![
            QuestionRow {
                id: 5,
                asker: "coder".into(),
                target: None,
                question: "ship it?".into(),
                options: vec!["yes".into(), "no".into()],
                multi: false,
                asked_at: AT,
                deadline_at: Some(AT + 600),
            },
            QuestionRow {
                id: 6,
                asker: "coder".into(),
                target: Some("reviewer".into()),
                question: "which files?".into(),
                options: Vec::new(),
                multi: true,
                asked_at: AT,
                deadline_at: None,
            },
        ]),
        r#"{"version":1,"ok":true,"questions":[{"id":5,"asker":"coder","question":"ship it?","options":["yes","no"],"multi":false,"asked_at":"2026-09-12T09:15:00Z","deadline_at":"2026-09-12T09:25:00Z"},{"id":6,"asker":"coder","target":"reviewer","question":"which files?","options":[],"multi":true,"asked_at":"2026-09-12T09:15:00Z"}]}"#,
    );
    check(
        HostResponse::approval_with_diff(bare_approval(), Some("+x\n".into())),
        r#"{"version":1,"ok":true,"approvals":[{"id":4,"agent":"reviewer","kind":"spawn","commit_ref":"","requested_at":"2026-09-12T09:15:00Z","status":"pending"}],"diff":"+x\n"}"#,
    );
    check(
        HostResponse::stopped(Vec::new()),
        r#"{"version":1,"ok":true}"#,
    );
    check(
        HostResponse::stopped(vec![KeptRunning {
            name: "manager".into(),
            reason: "why".into(),
        }]),
        r#"{"version":1,"ok":true,"kept_running":[{"name":"manager","reason":"why"}]}"#,
    );
}

/// Lines written before timestamps were strings (integers) still decode;
/// a bad timestamp is named.
#[test]
fn timestamps_decode_from_integers_too() {
    let line = r#"{"id":4,"agent":"reviewer","kind":"spawn","commit_ref":"","requested_at":1789204500,"status":"pending","resolved_at":1789204600}"#;
    let a: Approval = serde_json::from_str(line).unwrap();
    assert_eq!((a.requested_at, a.resolved_at), (AT, Some(AT + 100)));
    let err = serde_json::from_str::<Approval>(
        r#"{"id":4,"agent":"r","kind":"spawn","commit_ref":"","requested_at":"yesterday","status":"pending"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("invalid timestamp \"yesterday\""), "{err}");
}

#[test]
fn approval_enums() {
    for (kind, s) in [
        (ApprovalKind::ApplyCommit, "apply_commit"),
        (ApprovalKind::Spawn, "spawn"),
        (ApprovalKind::InitConfig, "init_config"),
        (ApprovalKind::Move, "move"),
    ] {
        check(kind, &format!("\"{s}\""));
        assert_eq!(ApprovalKind::parse(s), Some(kind));
    }
    for (status, s) in [
        (ApprovalStatus::Pending, "pending"),
        (ApprovalStatus::Approved, "approved"),
        (ApprovalStatus::Denied, "denied"),
        (ApprovalStatus::Failed, "failed"),
        (ApprovalStatus::Cancelled, "cancelled"),
        (ApprovalStatus::Superseded, "superseded"),
    ] {
        check(status, &format!("\"{s}\""));
        assert_eq!(ApprovalStatus::parse(s), Some(status));
    }
}

#[test]
fn agent_requests() {
    use AgentRequest::*;
    check(
        Send {
            to: to("b"),
            body: "hi".into(),
            in_reply_to: None,
        },
        r#"{"cmd":"send","to":"b","body":"hi"}"#,
    );
    check(
        Send {
            to: to("*"),
            body: "hi".into(),
            in_reply_to: Some(4),
        },
        r#"{"cmd":"send","to":"*","body":"hi","in_reply_to":4}"#,
    );
    check(
        Recv {
            wait_seconds: None,
            max: None,
            lease_seconds: None,
        },
        r#"{"cmd":"recv"}"#,
    );
    check(
        Recv {
            wait_seconds: Some(30),
            max: Some(8),
            lease_seconds: Some(120),
        },
        r#"{"cmd":"recv","wait_seconds":30,"max":8,"lease_seconds":120}"#,
    );
    check(
        RenewLease { lease: 7 },
        r#"{"cmd":"renew_lease","lease":7}"#,
    );
    check(
        SendBatch {
            messages: vec![
                hive_proto::OutgoingMessage {
                    to: to("bob"),
                    body: "a".into(),
                    in_reply_to: None,
                },
                hive_proto::OutgoingMessage {
                    to: to("*"),
                    body: "b".into(),
                    in_reply_to: Some(3),
                },
            ],
        },
        r#"{"cmd":"send_batch","messages":[{"to":"bob","body":"a"},{"to":"*","body":"b","in_reply_to":3}]}"#,
    );
    check(Status, r#"{"cmd":"status"}"#);
    check(Recent { limit: 10 }, r#"{"cmd":"recent","limit":10}"#);
    check(
        AckTurn {
            ids: None,
            lease: None,
        },
        r#"{"cmd":"ack_turn"}"#,
    );
    check(
        AckTurn {
            ids: Some(vec![1, 2]),
            lease: Some(9),
        },
        r#"{"cmd":"ack_turn","ids":[1,2],"lease":9}"#,
    );
    check(RequeueInflight, r#"{"cmd":"requeue_inflight"}"#);
    check(
        Ask {
            question: "ok?".into(),
            options: vec![],
            multi: false,
            ttl_seconds: None,
            to: None,
        },
        r#"{"cmd":"ask","question":"ok?"}"#,
    );
    check(
        Ask {
            question: "which?".into(),
            options: vec!["x".into(), "y".into()],
            multi: true,
            ttl_seconds: Some(60),
            to: Some(to("b")),
        },
        r#"{"cmd":"ask","question":"which?","options":["x","y"],"multi":true,"ttl_seconds":60,"to":"b"}"#,
    );
    check(
        Answer {
            id: 2,
            answer: "x".into(),
        },
        r#"{"cmd":"answer","id":2,"answer":"x"}"#,
    );
    check(
        Remind {
            message: "m".into(),
            at: None,
            in_seconds: Some(60),
            to: None,
            file_path: None,
        },
        r#"{"cmd":"remind","message":"m","in_seconds":60}"#,
    );
    check(
        Remind {
            message: "m".into(),
            at: Some(1700000000),
            in_seconds: None,
            to: Some(to("b")),
            file_path: Some("/state/notes.md".into()),
        },
        r#"{"cmd":"remind","message":"m","at":1700000000,"to":"b","file_path":"/state/notes.md"}"#,
    );
    check(GetLooseEnds, r#"{"cmd":"get_loose_ends"}"#);
    check(
        CancelLooseEnd {
            kind: LooseEndKind::Reminder,
            id: 5,
        },
        r#"{"cmd":"cancel_loose_end","kind":"reminder","id":5}"#,
    );
    check(Whoami, r#"{"cmd":"whoami"}"#);
    check(
        SetStatus {
            text: "busy".into(),
        },
        r#"{"cmd":"set_status","text":"busy"}"#,
    );
    check(
        HarnessState {
            state: hive_proto::live::TurnState::NeedsLogin,
            model: Some("opus".into()),
            logged_in: None,
            note: None,
            until: None,
        },
        r#"{"cmd":"harness_state","state":"needs_login","model":"opus"}"#,
    );
    check(
        HarnessState {
            state: hive_proto::live::TurnState::Idle,
            model: None,
            logged_in: Some(true),
            note: None,
            until: None,
        },
        r#"{"cmd":"harness_state","state":"idle","logged_in":true}"#,
    );
    check(
        HarnessState {
            state: hive_proto::live::TurnState::Tool,
            model: None,
            logged_in: None,
            note: Some("Bash".into()),
            until: None,
        },
        r#"{"cmd":"harness_state","state":"tool","note":"Bash"}"#,
    );
    check(
        HarnessState {
            state: hive_proto::live::TurnState::Quota,
            model: None,
            logged_in: None,
            note: None,
            until: Some(1_795_953_864),
        },
        r#"{"cmd":"harness_state","state":"quota","until":1795953864}"#,
    );
    assert_eq!(
        hive_proto::live::quota_text(1_795_953_864),
        "quota until 12:04 UTC"
    );
}

#[test]
fn manager_requests() {
    use ManagerOnlyRequest::*;
    let m = |r| ManagerRequest::Manager(r);
    check(
        m(RequestSpawn {
            name: name("c"),
            description: Some("d".into()),
        }),
        r#"{"cmd":"request_spawn","name":"c","description":"d"}"#,
    );
    check(m(Kill { name: name("c") }), r#"{"cmd":"kill","name":"c"}"#);
    check(
        m(Start { name: name("c") }),
        r#"{"cmd":"start","name":"c"}"#,
    );
    check(
        m(Restart { name: name("c") }),
        r#"{"cmd":"restart","name":"c"}"#,
    );
    check(
        m(RequestApplyCommit {
            agent: name("c"),
            commit_ref: "abc1234".into(),
            description: None,
        }),
        r#"{"cmd":"request_apply_commit","agent":"c","commit_ref":"abc1234"}"#,
    );
    check(
        m(RequestInitConfig {
            name: name("c"),
            description: None,
        }),
        r#"{"cmd":"request_init_config","name":"c"}"#,
    );
    check(
        m(Update { name: name("c") }),
        r#"{"cmd":"update","name":"c"}"#,
    );
    check(m(List), r#"{"cmd":"list"}"#);
    check(
        m(GetLogs {
            name: name("c"),
            lines: Some(20),
        }),
        r#"{"cmd":"get_logs","name":"c","lines":20}"#,
    );
    // The agent surface decodes on the manager socket too.
    check(
        ManagerRequest::Agent(AgentRequest::Status),
        r#"{"cmd":"status"}"#,
    );
    let err = serde_json::from_str::<ManagerRequest>(r#"{"cmd":"fly"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown variant `fly`"), "{err}");
}

#[test]
fn agent_responses() {
    use AgentResponse::*;
    check(Ok, r#"{"kind":"ok"}"#);
    check(
        Err {
            message: "no".into(),
        },
        r#"{"kind":"err","message":"no"}"#,
    );
    check(
        Messages {
            messages: vec![],
            lease: None,
        },
        r#"{"kind":"messages","messages":[]}"#,
    );
    check(Sent { ids: vec![4, 5] }, r#"{"kind":"sent","ids":[4,5]}"#);
    check(
        Messages {
            messages: vec![DeliveredMessage {
                id: 1,
                from: "a".into(),
                to: "b".into(),
                body: "hi".into(),
                at: 1700000000,
                in_reply_to: Some(0),
                redelivered: true,
            }],
            lease: Some(3),
        },
        r#"{"kind":"messages","messages":[{"id":1,"from":"a","to":"b","body":"hi","at":1700000000,"in_reply_to":0,"redelivered":true}],"lease":3}"#,
    );
    check(Status { unread: 3 }, r#"{"kind":"status","unread":3}"#);
    check(
        Recent {
            rows: vec![InboxRow {
                id: 1,
                from: "a".into(),
                body: "hi".into(),
                at: 5,
            }],
        },
        r#"{"kind":"recent","rows":[{"id":1,"from":"a","body":"hi","at":5}]}"#,
    );
    check(
        QuestionQueued { id: 4 },
        r#"{"kind":"question_queued","id":4}"#,
    );
    check(
        ReminderQueued { id: 4, due_at: 9 },
        r#"{"kind":"reminder_queued","id":4,"due_at":9}"#,
    );
    check(
        Whoami {
            name: "a".into(),
            role: "agent".into(),
        },
        r#"{"kind":"whoami","name":"a","role":"agent"}"#,
    );
    check(
        ApprovalQueued { id: 2 },
        r#"{"kind":"approval_queued","id":2}"#,
    );
    check(
        Agents { agents: vec![] },
        r#"{"kind":"agents","agents":[]}"#,
    );
    check(
        Logs {
            lines: vec!["up".into()],
        },
        r#"{"kind":"logs","lines":["up"]}"#,
    );
    check(
        LooseEnds {
            loose_ends: vec![
                LooseEnd::Approval {
                    id: 1,
                    agent: "c".into(),
                    approval_kind: ApprovalKind::Spawn,
                    commit_ref: String::new(),
                    description: None,
                    requested_at: 10,
                    age_seconds: 5,
                },
                LooseEnd::Question {
                    id: 2,
                    asker: "c".into(),
                    target: None,
                    question: "q".into(),
                    asked_at: 10,
                    deadline_at: Some(70),
                    age_seconds: 5,
                },
                LooseEnd::Reminder {
                    id: 3,
                    owner: "c".into(),
                    target: Some("d".into()),
                    message: "m".into(),
                    due_at: 99,
                    age_seconds: 5,
                    attempts: 1,
                    last_error: Some("unknown agent".into()),
                    parked: false,
                },
            ],
        },
        concat!(
            r#"{"kind":"loose_ends","loose_ends":["#,
            r#"{"kind":"approval","id":1,"agent":"c","approval_kind":"spawn","commit_ref":"","requested_at":10,"age_seconds":5},"#,
            r#"{"kind":"question","id":2,"asker":"c","question":"q","asked_at":10,"deadline_at":70,"age_seconds":5},"#,
            r#"{"kind":"reminder","id":3,"owner":"c","target":"d","message":"m","due_at":99,"age_seconds":5,"attempts":1,"last_error":"unknown agent","parked":false}]}"#
        ),
    );
}

#[test]
fn helper_events() {
    use HelperEvent::*;
    check(
        ApprovalResolved {
            id: 1,
            agent: "c".into(),
            commit_ref: "abc1234".into(),
            status: ApprovalStatus::Denied,
            note: Some("why".into()),
            running_sha: None,
        },
        r#"{"event":"approval_resolved","id":1,"agent":"c","commit_ref":"abc1234","status":"denied","note":"why"}"#,
    );
    check(
        ApprovalResolved {
            id: 2,
            agent: "c".into(),
            commit_ref: "abc1234".into(),
            status: ApprovalStatus::Superseded,
            note: Some("superseded by #3".into()),
            running_sha: Some("def5678".into()),
        },
        r#"{"event":"approval_resolved","id":2,"agent":"c","commit_ref":"abc1234","status":"superseded","note":"superseded by #3","running_sha":"def5678"}"#,
    );
    check(
        Spawned {
            agent: "c".into(),
            ok: true,
            note: None,
        },
        r#"{"event":"spawned","agent":"c","ok":true}"#,
    );
    check(
        Rebuilt {
            agent: "c".into(),
            ok: false,
            note: Some("x".into()),
        },
        r#"{"event":"rebuilt","agent":"c","ok":false,"note":"x"}"#,
    );
    check(
        Killed { agent: "c".into() },
        r#"{"event":"killed","agent":"c"}"#,
    );
    check(
        Destroyed { agent: "c".into() },
        r#"{"event":"destroyed","agent":"c"}"#,
    );
    check(
        ContainerCrash {
            agent: "c".into(),
            note: Some("exit 137".into()),
        },
        r#"{"event":"container_crash","agent":"c","note":"exit 137"}"#,
    );
    check(
        QuestionAsked {
            id: 1,
            asker: "a".into(),
            question: "q".into(),
            options: vec!["x".into()],
            multi: false,
            deadline_at: None,
        },
        r#"{"event":"question_asked","id":1,"asker":"a","question":"q","options":["x"],"multi":false}"#,
    );
    check(
        QuestionAnswered {
            id: 1,
            question: "q".into(),
            answer: "[expired]".into(),
            answerer: "ttl-watchdog".into(),
        },
        r#"{"event":"question_answered","id":1,"question":"q","answer":"[expired]","answerer":"ttl-watchdog"}"#,
    );
    check(
        NeedsLogin { agent: "c".into() },
        r#"{"event":"needs_login","agent":"c"}"#,
    );
    check(
        LoggedIn { agent: "c".into() },
        r#"{"event":"logged_in","agent":"c"}"#,
    );
    check(
        NeedsUpdate { agent: "c".into() },
        r#"{"event":"needs_update","agent":"c"}"#,
    );
}

#[test]
fn dashboard_events() {
    use DashboardEvent::*;
    check(
        Sent {
            seq: 1,
            message: MessageView {
                id: 2,
                from: "a".into(),
                to: "b".into(),
                body: "hi".into(),
                at: 3,
                in_reply_to: None,
            },
        },
        r#"{"kind":"sent","seq":1,"id":2,"from":"a","to":"b","body":"hi","at":3}"#,
    );
    check(
        Delivered {
            seq: 1,
            message: MessageView {
                id: 2,
                from: "a".into(),
                to: "b".into(),
                body: "see /shared/x.md".into(),
                at: 3,
                in_reply_to: Some(1),
            },
        },
        r#"{"kind":"delivered","seq":1,"id":2,"from":"a","to":"b","body":"see /shared/x.md","at":3,"in_reply_to":1}"#,
    );
    check(
        ApprovalAdded {
            seq: 4,
            id: 1,
            agent: "c".into(),
            approval_kind: ApprovalKind::ApplyCommit,
            sha_short: Some("abc1234".into()),
            diff: Some("+x".into()),
            description: None,
        },
        r#"{"kind":"approval_added","seq":4,"id":1,"agent":"c","approval_kind":"apply_commit","sha_short":"abc1234","diff":"+x"}"#,
    );
    check(
        ApprovalResolved {
            seq: 5,
            id: 1,
            agent: "c".into(),
            approval_kind: ApprovalKind::Spawn,
            sha_short: None,
            status: ApprovalStatus::Approved,
            resolved_at: 9,
            note: None,
            description: None,
        },
        r#"{"kind":"approval_resolved","seq":5,"id":1,"agent":"c","approval_kind":"spawn","status":"approved","resolved_at":9}"#,
    );
    check(
        QuestionAdded {
            seq: 6,
            id: 1,
            asker: "c".into(),
            question: "q".into(),
            options: vec![],
            multi: false,
            asked_at: 1,
            deadline_at: None,
            target: None,
        },
        r#"{"kind":"question_added","seq":6,"id":1,"asker":"c","question":"q","options":[],"multi":false,"asked_at":1}"#,
    );
    check(
        QuestionResolved {
            seq: 7,
            id: 1,
            answer: "[cancelled]".into(),
            answerer: "operator".into(),
            answered_at: 2,
            cancelled: true,
            target: Some("d".into()),
        },
        r#"{"kind":"question_resolved","seq":7,"id":1,"answer":"[cancelled]","answerer":"operator","answered_at":2,"cancelled":true,"target":"d"}"#,
    );
    check(
        TransientSet {
            seq: 8,
            name: "c".into(),
            transient_kind: TransientKind::Rebuilding,
            since_unix: 3,
        },
        r#"{"kind":"transient_set","seq":8,"name":"c","transient_kind":"rebuilding","since_unix":3}"#,
    );
    check(
        TransientCleared {
            seq: 9,
            name: "c".into(),
        },
        r#"{"kind":"transient_cleared","seq":9,"name":"c"}"#,
    );
    let mut container = row();
    container.deployed_sha = None;
    container.parent = None;
    container.active_model = None;
    container.status_text = None;
    container.status_set_at = None;
    container.url = None;
    check(
        ContainerStateChanged { seq: 10, container },
        r#"{"kind":"container_state_changed","seq":10,"container":{"name":"coder","running":true,"failed":false,"needs_update":false,"needs_login":true,"pending_reminders":2,"paused":false}}"#,
    );
    check(
        ContainerRemoved {
            seq: 11,
            name: "c".into(),
        },
        r#"{"kind":"container_removed","seq":11,"name":"c"}"#,
    );
    check(
        TombstonesChanged {
            seq: 12,
            tombstones: vec![TombstoneView {
                name: "old".into(),
                state_bytes: 4096,
                modified_at: 5,
                has_credentials: true,
                volume: None,
            }],
        },
        r#"{"kind":"tombstones_changed","seq":12,"tombstones":[{"name":"old","state_bytes":4096,"modified_at":5,"has_credentials":true}]}"#,
    );
    check(
        MetaInputsChanged {
            seq: 13,
            inputs: vec![MetaInputView {
                name: "c".into(),
                rev: "abc".into(),
                last_modified: None,
                url: None,
            }],
        },
        r#"{"kind":"meta_inputs_changed","seq":13,"inputs":[{"name":"c","rev":"abc"}]}"#,
    );
    check(
        MetaUpdateRunning {
            seq: 14,
            running: true,
        },
        r#"{"kind":"meta_update_running","seq":14,"running":true}"#,
    );
    check(
        RebuildQueueChanged {
            seq: 15,
            queue: vec![QueueEntry {
                id: 1,
                agent: "c".into(),
                status: "queued".into(),
                enqueued_at: 4,
                parent_id: None,
                note: None,
            }],
        },
        r#"{"kind":"rebuild_queue_changed","seq":15,"queue":[{"id":1,"agent":"c","status":"queued","enqueued_at":4}]}"#,
    );
    assert_eq!(
        MetaUpdateRunning {
            seq: 14,
            running: false
        }
        .seq(),
        14
    );
    for kind in [
        "spawning",
        "starting",
        "stopping",
        "restarting",
        "rebuilding",
        "destroying",
    ] {
        let k: TransientKind = serde_json::from_str(&format!("\"{kind}\"")).unwrap();
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{kind}\""));
    }
}

#[test]
fn live_events() {
    use LiveEvent::*;
    check(
        TurnStart {
            from: "operator".into(),
            body: "hi".into(),
            unread: 2,
        },
        r#"{"kind":"turn_start","from":"operator","body":"hi","unread":2}"#,
    );
    check(
        Stream(serde_json::json!({"type":"result","subtype":"success"})),
        r#"{"kind":"stream","type":"result","subtype":"success"}"#,
    );
    check(
        Note {
            text: "claude exited 0".into(),
        },
        r#"{"kind":"note","text":"claude exited 0"}"#,
    );
    check(
        TurnEnd {
            ok: true,
            note: None,
        },
        r#"{"kind":"turn_end","ok":true}"#,
    );
    check(
        StatusChanged {
            text: Some("busy".into()),
        },
        r#"{"kind":"status_changed","text":"busy"}"#,
    );
    check(
        ModelChanged {
            model: "opus".into(),
        },
        r#"{"kind":"model_changed","model":"opus"}"#,
    );
    check(
        TokenUsageChanged {
            ctx: TokenUsage {
                input_tokens: 1,
                output_tokens: 2,
                cache_creation_input_tokens: 3,
                cache_read_input_tokens: 4,
            },
            cost: TokenUsage::default(),
        },
        r#"{"kind":"token_usage_changed","ctx":{"input_tokens":1,"output_tokens":2,"cache_creation_input_tokens":3,"cache_read_input_tokens":4},"cost":{"input_tokens":0,"output_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}"#,
    );
    check(
        TurnStateChanged {
            state: TurnState::RateLimited,
        },
        r#"{"kind":"turn_state_changed","state":"rate_limited"}"#,
    );
    check(
        LiveFrame {
            seq: 3,
            at: 9,
            event: Note { text: "x".into() },
        },
        r#"{"seq":3,"at":9,"kind":"note","text":"x"}"#,
    );
    check(
        LiveFrame {
            seq: 4,
            at: 9,
            event: Stream(serde_json::json!({"type":"assistant"})),
        },
        r#"{"seq":4,"at":9,"kind":"stream","type":"assistant"}"#,
    );
}

#[test]
fn every_agent_answer_carries_the_unread_count_once() {
    use hive_proto::AgentAnswer;
    let check = |response: AgentResponse, unread: Option<u64>, line: &str| {
        let answer = AgentAnswer { response, unread };
        assert_eq!(answer.to_line().unwrap(), line);
        assert_eq!(AgentAnswer::from_line(line).unwrap(), answer);
    };
    check(AgentResponse::Ok, Some(3), r#"{"kind":"ok","unread":3}"#);
    check(
        AgentResponse::Sent { ids: vec![1] },
        Some(0),
        r#"{"kind":"sent","ids":[1],"unread":0}"#,
    );
    check(
        AgentResponse::Status { unread: 4 },
        Some(4),
        r#"{"kind":"status","unread":4}"#,
    );
    check(AgentResponse::Ok, None, r#"{"kind":"ok"}"#);
}

fn task() -> Task {
    Task {
        id: 3,
        title: "api".into(),
        body: String::new(),
        creator: "manager".into(),
        assignee: Some("alice".into()),
        status: TaskStatus::Claimed,
        reason: None,
        depends_on: vec![1],
        links: vec!["msg:9".into()],
        rank: 3,
        claimable: false,
        created_at: 10,
        updated_at: 11,
    }
}

const TASK_LINE: &str = r#"{"id":3,"title":"api","creator":"manager","assignee":"alice","status":"claimed","depends_on":[1],"links":["msg:9"],"rank":3,"claimable":false,"created_at":10,"updated_at":11}"#;

#[test]
fn task_board() {
    use AgentRequest::*;
    check(
        TaskCreate {
            title: "api".into(),
            body: String::new(),
            depends_on: vec![1, 2],
            links: vec![],
        },
        r#"{"cmd":"task_create","title":"api","depends_on":[1,2]}"#,
    );
    check(
        TaskList {
            filter: TaskFilter::Claimable,
        },
        r#"{"cmd":"task_list","filter":"claimable"}"#,
    );
    assert_eq!(
        serde_json::from_str::<AgentRequest>(r#"{"cmd":"task_list"}"#).unwrap(),
        TaskList {
            filter: TaskFilter::Active
        }
    );
    check(TaskShow { id: 3 }, r#"{"cmd":"task_show","id":3}"#);
    check(TaskClaim { id: 3 }, r#"{"cmd":"task_claim","id":3}"#);
    check(
        TaskUpdate {
            id: 3,
            title: None,
            body: Some("b".into()),
            depends_on: Some(vec![]),
            links: None,
        },
        r#"{"cmd":"task_update","id":3,"body":"b","depends_on":[]}"#,
    );
    check(
        TaskComplete { id: 3, note: None },
        r#"{"cmd":"task_complete","id":3}"#,
    );
    check(
        TaskBlock {
            id: 3,
            reason: "keys".into(),
        },
        r#"{"cmd":"task_block","id":3,"reason":"keys"}"#,
    );
    check(
        TaskCancel {
            id: 3,
            reason: Some("dup".into()),
        },
        r#"{"cmd":"task_cancel","id":3,"reason":"dup"}"#,
    );
    let m = |r| ManagerRequest::Manager(r);
    check(
        m(ManagerOnlyRequest::TaskAssign {
            id: 3,
            agent: name("alice"),
        }),
        r#"{"cmd":"task_assign","id":3,"agent":"alice"}"#,
    );
    check(
        m(ManagerOnlyRequest::TaskReorder { id: 3, rank: -1 }),
        r#"{"cmd":"task_reorder","id":3,"rank":-1}"#,
    );
    check(
        AgentResponse::Task { task: task() },
        &format!(r#"{{"kind":"task","task":{TASK_LINE}}}"#),
    );
    check(
        AgentResponse::Tasks {
            tasks: vec![task()],
        },
        &format!(r#"{{"kind":"tasks","tasks":[{TASK_LINE}]}}"#),
    );
    check(
        AgentResponse::TaskDetail {
            task: task(),
            history: vec![TaskEvent {
                at: 10,
                actor: "manager".into(),
                action: "created".into(),
                note: None,
            }],
        },
        &format!(
            r#"{{"kind":"task_detail","task":{TASK_LINE},"history":[{{"at":10,"actor":"manager","action":"created"}}]}}"#
        ),
    );
    check(
        HelperEvent::TaskReleased {
            id: 3,
            title: "api".into(),
            agent: "alice".into(),
            reason: "its container crashed".into(),
        },
        r#"{"event":"task_released","id":3,"title":"api","agent":"alice","reason":"its container crashed"}"#,
    );
    check(
        HelperEvent::QuotaReached {
            agent: "alice".into(),
            until: 1_795_953_864,
        },
        r#"{"event":"quota_reached","agent":"alice","until":1795953864}"#,
    );
    check(
        HelperEvent::TaskAssigned {
            id: 3,
            title: "api".into(),
            by: "operator".into(),
        },
        r#"{"event":"task_assigned","id":3,"title":"api","by":"operator"}"#,
    );
    check(
        DashboardEvent::TaskChanged {
            seq: 7,
            task: task(),
        },
        &format!(r#"{{"kind":"task_changed","seq":7,"task":{TASK_LINE}}}"#),
    );
    check(
        HostRequest::Tasks {
            filter: TaskFilter::All,
        },
        r#"{"cmd":"tasks","filter":"all"}"#,
    );
    check(
        HostRequest::TaskAdd {
            title: "t".into(),
            body: String::new(),
            depends_on: vec![1],
            assignee: Some(name("bob")),
        },
        r#"{"cmd":"task_add","title":"t","depends_on":[1],"assignee":"bob"}"#,
    );
    check(
        HostRequest::TaskAssign {
            id: 1,
            agent: name("bob"),
        },
        r#"{"cmd":"task_assign","id":1,"agent":"bob"}"#,
    );
    check(
        HostRequest::TaskCancel {
            id: 1,
            reason: None,
        },
        r#"{"cmd":"task_cancel","id":1}"#,
    );
    check(
        HostResponse::tasks(vec![task()]),
        &format!(r#"{{"version":1,"ok":true,"tasks":[{TASK_LINE}]}}"#),
    );
}

#[test]
fn link_lines() {
    use hive_proto::link::{ControlFiles, PageOpen};
    check(
        PageOpen {
            stream: "00ff".into(),
        },
        r#"{"stream":"00ff"}"#,
    );
    check(
        ControlFiles {
            deployed: Some("{}".into()),
            paused: None,
        },
        r#"{"deployed":"{}","paused":null}"#,
    );
    // Absent fields are absent files.
    assert_eq!(
        serde_json::from_str::<ControlFiles>("{}").unwrap(),
        ControlFiles::default()
    );
    // The state channel: each connection's first line, core's offer, the
    // harness's word.
    use hive_proto::link::{RestoreDone, RestoreOffer, StateOpen};
    check(StateOpen::Tunnel, r#"{"open":"tunnel"}"#);
    check(
        StateOpen::Checkpoint {
            stream: "00ff".into(),
        },
        r#"{"open":"checkpoint","stream":"00ff"}"#,
    );
    check(StateOpen::Restore, r#"{"open":"restore"}"#);
    check(
        RestoreOffer {
            bytes: None,
            taken_at: None,
        },
        r#"{"bytes":null}"#,
    );
    check(
        RestoreOffer {
            bytes: Some(10240),
            taken_at: Some(AT),
        },
        r#"{"bytes":10240,"taken_at":1789204500}"#,
    );
    check(
        RestoreDone {
            ok: false,
            error: Some("entry ../x: a path with `..`".into()),
        },
        r#"{"ok":false,"error":"entry ../x: a path with `..`"}"#,
    );
    check(
        RestoreDone {
            ok: true,
            error: None,
        },
        r#"{"ok":true}"#,
    );
}

/// `to` is the same string on the wire as it always was (the original's
/// clients keep working) and a [`Recipient`] once decoded: a bad one is
/// refused while the request is read, never handed on as text.
#[test]
fn recipients_are_the_same_strings_and_parsed_while_decoding() {
    check(
        HostRequest::Send {
            to: to("operator"),
            body: "x".into(),
        },
        r#"{"cmd":"send","to":"operator","body":"x"}"#,
    );
    check(
        AgentRequest::Send {
            to: Recipient::Agent(name("manager")),
            body: "x".into(),
            in_reply_to: None,
        },
        r#"{"cmd":"send","to":"manager","body":"x"}"#,
    );
    check(
        OutgoingMessage {
            to: Recipient::Broadcast,
            body: "x".into(),
            in_reply_to: None,
        },
        r#"{"to":"*","body":"x"}"#,
    );
    for bad in ["../x", "system", "", "Bob"] {
        let line = format!(r#"{{"cmd":"send","to":"{bad}","body":"x"}}"#);
        let err = serde_json::from_str::<AgentRequest>(&line).unwrap_err();
        assert!(
            err.to_string().contains("invalid agent name"),
            "{bad}: {err}"
        );
        assert!(serde_json::from_str::<HostRequest>(&line).is_err(), "{bad}");
    }
}
