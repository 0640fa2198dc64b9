//! host.sock: the exact response line of every verb, and of bad requests.

use std::io::{BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

use crate::support::{Hive, read_line, redact, roundtrip};

const NO_RUNTIME: &str = "needs a container backend and this hive runs with --runtime none";

fn no_runtime(verb: &str) -> String {
    format!(r#"{{"version":1,"ok":false,"error":"no runtime configured: `{verb}` {NO_RUNTIME}"}}"#)
}

#[test]
fn every_verb_answers_exactly() {
    let hive = Hive::start(&["alice"]);
    let check = |request: &str, expected: &str| {
        assert_eq!(redact(&hive.host(request)), expected, "request: {request}");
    };

    check(
        r#"{"cmd":"list"}"#,
        r#"{"version":1,"ok":true,"agents":["alice","manager"]}"#,
    );
    check(
        r#"{"cmd":"pending"}"#,
        r#"{"version":1,"ok":true,"approvals":[]}"#,
    );
    check(
        r#"{"cmd":"agent_status","scope":{"agent_names":["alice"]}}"#,
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"alice","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false}]}"#,
    );
    check(
        r#"{"cmd":"agent_status"}"#,
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"alice","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false},{"name":"manager","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false}]}"#,
    );

    // Lifecycle verbs refuse plainly without a runtime.
    check(r#"{"cmd":"spawn","name":"bob"}"#, &no_runtime("spawn"));
    check(r#"{"cmd":"kill","name":"alice"}"#, &no_runtime("stop"));
    check(
        r#"{"cmd":"rebuild","name":"alice"}"#,
        &no_runtime("rebuild"),
    );
    check(
        r#"{"cmd":"restart","name":"alice"}"#,
        &no_runtime("restart"),
    );
    check(
        r#"{"cmd":"destroy","name":"alice"}"#,
        &no_runtime("destroy"),
    );
    check(
        r#"{"cmd":"destroy","name":"alice","purge":true}"#,
        &no_runtime("destroy"),
    );
    check(
        r#"{"cmd":"start","scope":{"agent_names":["alice"]}}"#,
        &no_runtime("start"),
    );
    check(
        r#"{"cmd":"start","scope":{"agent_names":[]}}"#,
        &no_runtime("start"),
    );
    check(
        r#"{"cmd":"stop","scope":{"agent_names":["alice"]},"graceful":true}"#,
        &no_runtime("stop"),
    );
    check(r#"{"cmd":"stop"}"#, &no_runtime("stop"));
    check(
        r#"{"cmd":"destroy","name":"manager","purge":true}"#,
        r#"{"version":1,"ok":false,"error":"the manager cannot be purged"}"#,
    );
    check(
        r#"{"cmd":"kill","name":"zed"}"#,
        r#"{"version":1,"ok":false,"error":"unknown agent \"zed\""}"#,
    );
    check(
        r#"{"cmd":"start","scope":{"agent_names":["alice","zed"]}}"#,
        r#"{"version":1,"ok":false,"error":"unknown agent \"zed\""}"#,
    );

    // Pause works without a runtime and leaves the marker the harness reads.
    check(
        r#"{"cmd":"set_paused","name":"alice","paused":true}"#,
        r#"{"version":1,"ok":true}"#,
    );
    assert!(
        hive.state_dir()
            .join("agents/alice/control/paused")
            .exists()
    );
    check(
        r#"{"cmd":"agent_status","scope":{"agent_names":["alice"]}}"#,
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"alice","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":true}]}"#,
    );
    check(
        r#"{"cmd":"set_paused","name":"alice","paused":false}"#,
        r#"{"version":1,"ok":true}"#,
    );
    assert!(
        !hive
            .state_dir()
            .join("agents/alice/control/paused")
            .exists()
    );

    // Approvals: queue, approve (the spawn fails without a runtime), deny.
    check(
        r#"{"cmd":"request_spawn","name":"bob","description":"reviews code"}"#,
        r#"{"version":1,"ok":true,"approvals":[{"id":1,"agent":"bob","kind":"spawn","commit_ref":"","requested_at":"<rfc3339>","status":"pending","description":"reviews code"}]}"#,
    );
    check(
        r#"{"cmd":"request_spawn","name":"bob"}"#,
        r#"{"version":1,"ok":false,"error":"a spawn of bob is already pending as approval #1"}"#,
    );
    check(
        r#"{"cmd":"pending"}"#,
        r#"{"version":1,"ok":true,"approvals":[{"id":1,"agent":"bob","kind":"spawn","commit_ref":"","requested_at":"<rfc3339>","status":"pending","description":"reviews code"}]}"#,
    );
    check(
        r#"{"cmd":"approve","id":1}"#,
        &format!(
            r#"{{"version":1,"ok":false,"error":"approved #1, but its spawn failed: no runtime configured: `spawn` {NO_RUNTIME}"}}"#
        ),
    );
    check(
        r#"{"cmd":"request_spawn","name":"carol"}"#,
        r#"{"version":1,"ok":true,"approvals":[{"id":2,"agent":"carol","kind":"spawn","commit_ref":"","requested_at":"<rfc3339>","status":"pending"}]}"#,
    );
    check(
        r#"{"cmd":"deny","id":2,"note":"not now"}"#,
        r#"{"version":1,"ok":true}"#,
    );
    check(
        r#"{"cmd":"approve","id":2}"#,
        r#"{"version":1,"ok":false,"error":"approval #2 is already denied"}"#,
    );
    check(
        r#"{"cmd":"approve","id":99}"#,
        r#"{"version":1,"ok":false,"error":"no approval with id 99"}"#,
    );
    check(
        r#"{"cmd":"pending"}"#,
        r#"{"version":1,"ok":true,"approvals":[]}"#,
    );

    // The manager heard both outcomes, as helper events from `system`.
    let events: Vec<String> = hive
        .recv("manager", 0, 32)
        .iter()
        .map(|m| {
            assert_eq!(m["from"], "system");
            m["body"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        events,
        [
            format!(
                r#"{{"event":"approval_resolved","id":1,"agent":"bob","commit_ref":"","status":"failed","note":"no runtime configured: `spawn` {NO_RUNTIME}"}}"#
            ),
            r#"{"event":"approval_resolved","id":2,"agent":"carol","commit_ref":"","status":"denied","note":"not now"}"#.to_owned(),
        ]
    );

    // The operator's message reaches the agent.
    check(
        r#"{"cmd":"send","to":"alice","body":"hello"}"#,
        r#"{"version":1,"ok":true}"#,
    );
    let got = hive.recv("alice", 0, 1);
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["body"].as_str()),
        (Some("operator"), Some("hello"))
    );
    check(
        r#"{"cmd":"send","to":"operator","body":"x"}"#,
        r#"{"version":1,"ok":false,"error":"the operator cannot message itself"}"#,
    );
    check(
        r#"{"cmd":"send","to":"nobody","body":"x"}"#,
        r#"{"version":1,"ok":false,"error":"unknown agent \"nobody\""}"#,
    );
}

#[test]
fn subscribe_streams_one_row_per_change() {
    let hive = Hive::start(&["alice"]);
    let stream = UnixStream::connect(hive.host_socket()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .write_all(b"{\"cmd\":\"subscribe_agent_status\"}\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_line(&mut reader), r#"{"version":1,"ok":true}"#);

    hive.host(r#"{"cmd":"set_paused","name":"alice","paused":true}"#);
    assert_eq!(
        read_line(&mut reader),
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"alice","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":true}]}"#
    );
    hive.agent("alice", r#"{"cmd":"set_status","text":"reading"}"#);
    assert_eq!(
        redact(&read_line(&mut reader)),
        r#"{"version":1,"ok":true,"agent_statuses":[{"name":"alice","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":true,"status_text":"reading","status_set_at":"<rfc3339>"}]}"#
    );
    // Leaving does not disturb the daemon.
    drop(reader);
    drop(writer);
    assert_eq!(
        hive.host(r#"{"cmd":"list"}"#),
        r#"{"version":1,"ok":true,"agents":["alice","manager"]}"#
    );
}

#[test]
fn bad_requests_get_errors_naming_the_problem() {
    let hive = Hive::start(&[]);
    let check = |request: &[u8], expected: &str| {
        assert_eq!(roundtrip(&hive.host_socket(), request), expected);
    };
    check(
        br#"{"cmd":"fly"}"#,
        r#"{"version":1,"ok":false,"error":"unknown verb `fly`: expected one of `spawn`, `request_spawn`, `kill`, `destroy`, `rebuild`, `checkpoint`, `move`, `list`, `pending`, `approve`, `deny`, `agent_status`, `subscribe_agent_status`, `start`, `stop`, `restart`, `set_paused`, `urls`, `questions`, `answer`, `cancel_question`, `show`, `send`, `rollback`, `logs`, `tasks`, `task_add`, `task_assign`, `task_cancel`"}"#,
    );
    check(
        b"{not json",
        r#"{"version":1,"ok":false,"error":"malformed request: key must be a string at line 1 column 2"}"#,
    );
    check(
        b"",
        r#"{"version":1,"ok":false,"error":"malformed request: EOF while parsing a value at line 1 column 0"}"#,
    );
    check(
        b"\xff\xfe",
        r#"{"version":1,"ok":false,"error":"request is not valid UTF-8"}"#,
    );
    check(
        br#"{"cmd":"spawn","name":"../../etc"}"#,
        r#"{"version":1,"ok":false,"error":"invalid `spawn` request: invalid agent name \"../../etc\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)"}"#,
    );
    check(
        br#"{"cmd":"destroy","name":"operator"}"#,
        r#"{"version":1,"ok":false,"error":"invalid `destroy` request: invalid agent name \"operator\": reserved"}"#,
    );
    check(
        br#"{"cmd":"approve","id":"one"}"#,
        r#"{"version":1,"ok":false,"error":"invalid `approve` request: invalid type: string \"one\", expected i64"}"#,
    );
    // Unknown fields are ignored.
    check(
        br#"{"cmd":"list","verbose":true}"#,
        r#"{"version":1,"ok":true,"agents":["manager"]}"#,
    );

    // An over-long line is refused without being buffered whole.
    let mut long = br#"{"cmd":"send","to":"manager","body":""#.to_vec();
    long.resize(2 * 1024 * 1024, b'x');
    let mut stream = UnixStream::connect(hive.host_socket()).unwrap();
    // The daemon answers after 1 MiB and closes; the rest of our write may fail.
    let _ = stream.write_all(&long);
    assert_eq!(
        read_line(&mut BufReader::new(stream)),
        r#"{"version":1,"ok":false,"error":"request line exceeds 1048576 bytes"}"#
    );

    // Still serving.
    check(
        br#"{"cmd":"pending"}"#,
        r#"{"version":1,"ok":true,"approvals":[]}"#,
    );
}

#[test]
fn layout_and_modes() {
    let hive = Hive::start(&["alice"]);
    let mode = |p: std::path::PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(hive.host_socket()), 0o660);
    assert_eq!(mode(hive.agent_socket("manager")), 0o660);
    assert_eq!(mode(hive.agent_socket("alice")), 0o660);
    assert_eq!(mode(hive.run_dir().join("agents/alice")), 0o751);
    assert_eq!(mode(hive.run_dir().join("manager")), 0o751);
    assert!(hive.state_dir().join("hive.sqlite").is_file());
    assert!(hive.state_dir().join("agents/manager/state").is_dir());
    assert!(hive.state_dir().join("agents/alice/control").is_dir());
    // The manager's /agents: core's, read-only to others; each repo in it
    // is made (and checked for planted links) by ensure_config, at spawn.
    assert_eq!(mode(hive.state_dir().join("proposed")), 0o755);
    assert!(!hive.state_dir().join("proposed/alice").exists());
}

#[test]
fn graceful_shutdown_keeps_everything() {
    let hive = Hive::start(&["alice"]);
    hive.host(r#"{"cmd":"send","to":"alice","body":"survives"}"#);
    hive.host(r#"{"cmd":"request_spawn","name":"bob"}"#);
    let host_socket = hive.host_socket();
    let dir = hive.stop();
    assert!(!host_socket.exists(), "sockets are removed on shutdown");

    let hive = Hive::start_in(dir);
    let got = hive.recv("alice", 0, 1);
    assert_eq!(got[0]["body"], "survives");
    assert_eq!(
        redact(&hive.host(r#"{"cmd":"pending"}"#)),
        r#"{"version":1,"ok":true,"approvals":[{"id":1,"agent":"bob","kind":"spawn","commit_ref":"","requested_at":"<rfc3339>","status":"pending"}]}"#
    );
}

/// Questions over host.sock: listed with RFC 3339 times, answered and
/// cancelled as the operator; the asker hears each outcome; an agent's
/// question to a peer is listed too, and a resolved one cannot be answered
/// again.
#[test]
fn questions_are_listed_answered_and_cancelled() {
    let hive = Hive::start(&["alice", "bob"]);
    let check = |request: &str, expected: &str| {
        assert_eq!(redact(&hive.host(request)), expected, "request: {request}");
    };
    check(
        r#"{"cmd":"questions"}"#,
        r#"{"version":1,"ok":true,"questions":[]}"#,
    );
    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"ship it?","options":["yes","no"],"ttl_seconds":600}"#,
    );
    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"which files?","to":"bob","multi":true,"options":["a","b"]}"#,
    );
    check(
        r#"{"cmd":"questions"}"#,
        r#"{"version":1,"ok":true,"questions":[{"id":1,"asker":"alice","question":"ship it?","options":["yes","no"],"multi":false,"asked_at":"<rfc3339>","deadline_at":"<rfc3339>"},{"id":2,"asker":"alice","target":"bob","question":"which files?","options":["a","b"],"multi":true,"asked_at":"<rfc3339>"}]}"#,
    );
    check(
        r#"{"cmd":"answer","id":1,"answer":"yes","extra":true}"#,
        r#"{"version":1,"ok":true}"#,
    );
    check(
        r#"{"cmd":"answer","id":1,"answer":"no"}"#,
        r#"{"version":1,"ok":false,"error":"question 1 was already answered by operator"}"#,
    );
    check(
        r#"{"cmd":"cancel_question","id":2}"#,
        r#"{"version":1,"ok":true}"#,
    );
    check(
        r#"{"cmd":"questions"}"#,
        r#"{"version":1,"ok":true,"questions":[]}"#,
    );
    // What alice's next turn carries: both outcomes, from `system`.
    let bodies: Vec<Value> = hive
        .recv("alice", 0, 32)
        .iter()
        .map(|m| serde_json::from_str(m["body"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(
        (
            &bodies[0]["event"],
            &bodies[0]["answer"],
            &bodies[0]["answerer"]
        ),
        (
            &json!("question_answered"),
            &json!("yes"),
            &json!("operator")
        )
    );
    assert_eq!(
        (&bodies[1]["event"], &bodies[1]["answer"]),
        (&json!("question_answered"), &json!("[cancelled]"))
    );
}

/// `urls` is the original's `HiveUrls` object; `show` gives one approval;
/// `stop` of every agent (without a runtime) still refuses plainly.
#[test]
fn urls_and_show() {
    let hive = Hive::start(&["alice"]);
    let urls: Value = serde_json::from_str(&hive.host(r#"{"cmd":"urls"}"#)).unwrap();
    let home = urls["urls"]["home"].as_str().unwrap();
    let domain = urls["urls"]["domain"].as_str().unwrap();
    assert_eq!(
        hive.host(r#"{"cmd":"urls"}"#),
        format!(r#"{{"version":1,"ok":true,"urls":{{"domain":"{domain}","home":"{home}"}}}}"#)
    );
    assert_eq!(domain, "127.0.0.1");
    assert!(
        home.starts_with("http://127.0.0.1:") && home.ends_with('/'),
        "{home}"
    );
    // `home` is where the dashboard answers.
    assert_eq!(
        home.trim_end_matches('/'),
        hive.dashboard.trim_end_matches('/')
    );
    let page = hive.http_get("/");
    assert!(page.contains("<title>"), "{page}");

    hive.host(r#"{"cmd":"request_spawn","name":"bob","description":"reviews"}"#);
    assert_eq!(
        redact(&hive.host(r#"{"cmd":"show","id":1}"#)),
        r#"{"version":1,"ok":true,"approvals":[{"id":1,"agent":"bob","kind":"spawn","commit_ref":"","requested_at":"<rfc3339>","status":"pending","description":"reviews"}]}"#
    );
    assert_eq!(
        hive.host(r#"{"cmd":"show","id":9}"#),
        r#"{"version":1,"ok":false,"error":"no approval with id 9"}"#
    );
}

/// The daemon's own log, read through a pipe (not a terminal), is plain
/// text: no colour escapes around levels or fields.
#[test]
fn the_daemons_log_is_plain_text_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::support::serve_command(dir.path())
        .env("HIVE_LOG", "debug")
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::support::wait_ready(&mut child, "hive: dashboard ", "hive: runtime");
    roundtrip(&dir.path().join("run/host.sock"), br#"{"cmd":"list"}"#);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(
        log.contains("DEBUG") && log.contains("host request"),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "{log:?}");
}

/// A second daemon on a state dir another one serves is refused before it
/// changes anything (the store's file is the first daemon's alone), and
/// says why; the first serves on, its messages intact.
#[test]
fn a_second_daemon_on_a_served_state_dir_is_refused() {
    let hive = Hive::start(&["alice"]);
    hive.host(r#"{"cmd":"send","to":"alice","body":"kept"}"#);
    let run = tempfile::tempdir().unwrap();
    let mut second = crate::support::serve_command_at(&hive.state_dir(), &run.path().join("run"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second daemon is serving the same state dir");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("is open in another process"), "{stderr}");
    assert!(!run.path().join("run/host.sock").exists());
    let got = hive.recv("alice", 1, 10);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], "kept");
}
