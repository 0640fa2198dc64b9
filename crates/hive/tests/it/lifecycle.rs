//! The agent lifecycle through the real daemon on a real runtime: spawn by
//! approval, crash detection, restart, logs, destroy to a tombstone, purge.
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{Hive, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

pub(crate) fn status(hive: &Hive, name: &str) -> Value {
    let v = json(&hive.host(&format!(
        r#"{{"cmd":"agent_status","scope":{{"agent_names":["{name}"]}}}}"#
    )));
    v["agent_statuses"][0].clone()
}

/// Helper events the manager has received, oldest first. Read with the
/// non-mutating `recent`: the manager's own harness pops its inbox too.
pub(crate) fn manager_events(hive: &Hive) -> Vec<Value> {
    let recent = json(&hive.agent("manager", r#"{"cmd":"recent","limit":200}"#));
    let mut events: Vec<Value> = recent["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "system")
        .filter_map(|m| serde_json::from_str(m["body"].as_str()?).ok())
        .collect();
    events.reverse();
    events
}

fn count(events: &[Value], event: &str) -> usize {
    events.iter().filter(|e| e["event"] == event).count()
}

#[test]
fn spawn_crash_restart_destroy_purge_on_process() {
    let dir = tempfile::tempdir().unwrap();
    let hive = Hive::start_with(
        dir,
        "process",
        &["--manager-port", "18000", "--agent-ports", "18100-18199"],
    );
    eventually("the manager to run", || {
        status(&hive, "manager")["running"] == true
    });

    // Spawn through the approval queue.
    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#));
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    let row = status(&hive, "coder");
    let page = format!("{}/agent/coder/", hive.dashboard);
    assert_eq!(
        (row["running"].as_bool(), row["url"].as_str()),
        (Some(true), Some(page.as_str()))
    );
    let events = manager_events(&hive);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "spawned" && e["agent"] == "coder" && e["ok"] == true),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "approval_resolved" && e["status"] == "approved"),
        "{events:?}"
    );
    // The agent was told it was (re)started.
    let kicked = hive.agent("coder", r#"{"cmd":"recent","limit":5}"#);
    assert!(kicked.contains("you were just spawned"), "{kicked}");
    // Spawning it again is refused when asked, not when approved.
    assert_eq!(
        hive.agent("manager", r#"{"cmd":"request_spawn","name":"coder"}"#),
        r#"{"kind":"err","message":"coder already has a container: start, restart or rebuild it"}"#
    );
    assert_eq!(
        hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#),
        r#"{"version":1,"ok":false,"error":"coder already has a container: start, restart or rebuild it"}"#
    );

    // No engine is installed for this hive: the harness says so, and the
    // status row and the manager hear it.
    eventually("coder to need a login", || {
        status(&hive, "coder")["needs_login"] == true
    });
    let events = manager_events(&hive);
    assert!(
        events.contains(&serde_json::json!({"event":"needs_login","agent":"coder"})),
        "{events:?}"
    );

    // Killed from outside: the manager hears of the crash.
    let pidfile = hive.state_dir().join("agents/coder/container.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 1);
    // Through the syscall: `/usr/bin/kill -KILL -<pgid>` (procps-ng 4.0)
    // reads the group as an option and signals every process instead.
    killpg(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let mut crash = None;
    eventually("container_crash", || {
        crash = manager_events(&hive)
            .into_iter()
            .find(|e| e["event"] == "container_crash");
        crash.is_some()
    });
    assert_eq!(
        crash.unwrap(),
        serde_json::json!({"event":"container_crash","agent":"coder","note":"killed by SIGKILL"})
    );
    let row = status(&hive, "coder");
    assert_eq!(
        (row["running"].as_bool(), row["failed"].as_bool()),
        (Some(false), Some(true))
    );

    // Restart brings it back; a stop on purpose is no crash.
    assert_eq!(
        hive.host(r#"{"cmd":"restart","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(status(&hive, "coder")["running"], true);
    assert_eq!(
        hive.host(r#"{"cmd":"kill","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    let events = manager_events(&hive);
    assert_eq!(count(&events, "killed"), 1, "{events:?}");
    assert_eq!(
        count(&events, "container_crash"),
        1,
        "only the real crash: {events:?}"
    );
    // Started twice without an engine: `needs_login` was announced once,
    // and no `logged_in` came between (the boot's `idle` knows nothing).
    assert_eq!(count(&events, "needs_login"), 1, "{events:?}");
    assert_eq!(count(&events, "logged_in"), 0, "{events:?}");
    assert_eq!(
        hive.host(r#"{"cmd":"kill","name":"manager"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(
        hive.host(r#"{"cmd":"start","scope":{"agent_names":[]}}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(status(&hive, "coder")["running"], true);

    // Logs: what the harness printed, over host.sock and HTTP.
    eventually("the harness's first log lines", || {
        let logs = json(&hive.host(r#"{"cmd":"logs","name":"coder","lines":5}"#));
        !logs["logs"].as_array().unwrap().is_empty()
    });
    let http = json(&hive.http_get("/api/logs/coder?lines=5"));
    assert_eq!(http["name"], "coder");
    let from_manager =
        json(&hive.agent("manager", r#"{"cmd":"get_logs","name":"coder","lines":5}"#));
    assert_eq!(from_manager["kind"], "logs", "{from_manager}");

    // Destroy keeps the state: a tombstone, revivable through a spawn approval.
    std::fs::write(
        hive.state_dir().join("agents/coder/state/notes.md"),
        "remember",
    )
    .unwrap();
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    // Kept state is no stopped agent: no status row, no page; `list`
    // still names it, and `hive status` shows it apart.
    assert_eq!(
        hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["coder"]}}"#),
        r#"{"version":1,"ok":true,"agent_statuses":[]}"#
    );
    let rows = json(&hive.host(r#"{"cmd":"agent_status"}"#));
    let names: Vec<&str> = rows["agent_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["manager"]);
    let table = crate::cli::stdout(&crate::cli::hive_cli(&hive.host_socket(), &["status"]));
    assert!(
        table.contains("\nkept state, no container (destroyed; `hive spawn NAME` revives, `hive destroy NAME --purge` deletes): coder\n")
            && !table.lines().any(|l| l.starts_with("coder")),
        "{table}"
    );
    assert!(
        hive.state_dir()
            .join("agents/coder/state/notes.md")
            .exists()
    );
    // A broadcast skips it: revived, it finds no stale `*` messages.
    assert_eq!(
        hive.host(r#"{"cmd":"send","to":"*","body":"all hands"}"#),
        r#"{"version":1,"ok":true}"#
    );
    // Its log, read back after the container is gone, comes without the
    // escape sequences a CLI printed for a terminal, on every surface.
    let log = hive.state_dir().join("agents/coder/container.log");
    let mut text = std::fs::read_to_string(&log).unwrap_or_default();
    text.push_str("\x1b[2mthinking\x1b[0m \x1b]0;title\x07done\n");
    std::fs::write(&log, text).unwrap();
    let over_host = json(&hive.host(r#"{"cmd":"logs","name":"coder","lines":1}"#));
    assert_eq!(over_host["logs"], serde_json::json!(["thinking done"]));
    let over_http = json(&hive.http_get("/api/logs/coder?lines=1"));
    assert_eq!(
        over_http["lines"],
        serde_json::json!(["thinking done"]),
        "{over_http}"
    );
    let from_manager =
        json(&hive.agent("manager", r#"{"cmd":"get_logs","name":"coder","lines":1}"#));
    assert_eq!(
        from_manager["lines"],
        serde_json::json!(["thinking done"]),
        "{from_manager}"
    );
    // A followed log carries what is appended after the first answer.
    {
        use std::io::{BufRead as _, Write as _};
        let stream = std::os::unix::net::UnixStream::connect(hive.host_socket()).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        (&stream)
            .write_all(b"{\"cmd\":\"logs\",\"name\":\"coder\",\"lines\":1,\"follow\":true}\n")
            .unwrap();
        let mut lines = std::io::BufReader::new(&stream).lines();
        let first = json(&lines.next().unwrap().unwrap());
        assert_eq!(
            first["logs"],
            serde_json::json!(["thinking done"]),
            "{first}"
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"printed while followed\n")
            .unwrap();
        let next = json(&lines.next().unwrap().unwrap());
        assert_eq!(
            next["logs"],
            serde_json::json!(["printed while followed"]),
            "{next}"
        );
    }
    assert_eq!(
        hive.host(r#"{"cmd":"start","scope":{"agent_names":["coder"]}}"#),
        r#"{"version":1,"ok":false,"error":"coder has no container, only kept state: revive it with `hive request-spawn coder`"}"#
    );
    assert_eq!(
        hive.host(r#"{"cmd":"spawn","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert!(
        hive.state_dir()
            .join("agents/coder/state/notes.md")
            .exists(),
        "revived with its state"
    );
    assert_eq!(
        status(&hive, "coder")["url"],
        format!("{}/agent/coder/", hive.dashboard),
        "the same page after revival"
    );
    let inbox = hive.agent("coder", r#"{"cmd":"recent","limit":50}"#);
    assert!(!inbox.contains("all hands"), "{inbox}");
    let manager_inbox = hive.agent("manager", r#"{"cmd":"recent","limit":200}"#);
    assert!(manager_inbox.contains("all hands"), "{manager_inbox}");

    // Stopping every agent leaves the manager running, and says so.
    assert_eq!(
        hive.host(r#"{"cmd":"stop","scope":{"agent_names":[]}}"#),
        r#"{"version":1,"ok":true,"kept_running":[{"name":"manager","reason":"the manager is left out of stopping every agent; name it to stop it (`hive stop manager`)"}]}"#
    );
    assert_eq!(status(&hive, "coder")["running"], false);
    assert_eq!(status(&hive, "manager")["running"], true);

    // Purge: state and socket gone, the name free again.
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"coder","purge":true}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert!(!hive.state_dir().join("agents/coder").exists());
    assert!(!hive.agent_socket("coder").exists());
    assert_eq!(
        hive.host(r#"{"cmd":"list"}"#),
        r#"{"version":1,"ok":true,"agents":["manager"]}"#
    );
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"manager"}"#),
        r#"{"version":1,"ok":false,"error":"the manager cannot be destroyed"}"#
    );
}
