//! The engine and the agent environment reach every container with no hand
//! work: the real daemon on bwrap and docker, the real `claude` CLI given
//! only as `--claude-bin <host path>` (never copied into the hive), the
//! scripted model reached through core's egress proxy; a daemon with no CLI
//! puts which binary is missing, and how to provide it, on the status row;
//! an edit of `<state-dir>/agent.env` reaches an agent at its next restart.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::adversary::{available, when_idle};
use crate::e2e::{ModelServer, Reply, last_user_text};
use crate::support::Hive;

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// Spawns `name` as the operator: request, approve.
fn spawn(hive: &Hive, name: &str) {
    let queued = json(&hive.host(&format!(r#"{{"cmd":"request_spawn","name":"{name}"}}"#)));
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
}

/// Polls `check` for up to 120 s (a container start plus a CLI turn).
fn within(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `name`'s row of `agent_status`.
fn status_row(hive: &Hive, name: &str) -> Value {
    let answer = json(&hive.host(r#"{"cmd":"agent_status"}"#));
    answer["agent_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn real_turn(runtime: &str, manager_port: &str, ports: &str) {
    let Some(claude) = crate::e2e::claude() else {
        return;
    };
    if !available(runtime) {
        return;
    }
    let _serial = crate::e2e::serial();
    let model = ModelServer::start(|_| Reply::Text("engine reached".into()));
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--manager-port", manager_port, "--agent-ports", ports];
    let model_args = crate::e2e::model_args(&model, &claude);
    args.extend(model_args.iter().map(String::as_str));
    let hive = Hive::start_with_env(dir, runtime, &args, &[("HIVE_CLAUDE_BIN", None)]);
    // Docker's containers outlive `hive serve`: removed when done.
    let _cleanup = crate::hives::Cleanup(vec![hive_runtime::HiveId::of(&hive.state_dir())]);
    spawn(&hive, "eng");
    hive.host(r#"{"cmd":"send","to":"eng","body":"ENGINE-CHECK please"}"#);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !model
        .requests()
        .iter()
        .any(|r| last_user_text(r).contains("ENGINE-CHECK"))
    {
        if Instant::now() > deadline {
            let (_, _, events) = crate::support::unix_http(
                &hive.page_socket("eng"),
                "GET",
                "/events/history",
                &[],
                "",
            );
            panic!("no model request of eng's turn; its events: {events}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Through the egress proxy, and the turn was acked: nothing in flight.
    assert_eq!(model.direct(), 0);
    within("eng's turn to be acked", || {
        hive.agent("eng", r#"{"cmd":"status"}"#) == r#"{"kind":"status","unread":0}"#
            && status_row(&hive, "eng")["needs_login"] == false
    });
    // Nothing was copied into the hive's dirs.
    assert!(!has_file_named(&hive.state_dir(), "claude"));
    assert_eq!(status_row(&hive, "eng")["status_text"], Value::Null);
    when_idle(&hive, r#"{"cmd":"destroy","name":"eng"}"#);
}

/// Whether a regular file `name` is anywhere under `dir`.
fn has_file_named(dir: &Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(kind) = e.file_type() else {
            return false;
        };
        (kind.is_file() && e.file_name() == name)
            || (kind.is_dir() && has_file_named(&e.path(), name))
    })
}

#[test]
fn bwrap_runs_a_real_turn_with_the_cli_given_as_claude_bin() {
    real_turn("bwrap", "17400", "17401-17410");
}

#[test]
fn docker_runs_a_real_turn_with_the_cli_given_as_claude_bin() {
    real_turn("docker", "17500", "17501-17510");
}

fn missing(runtime: &str, manager_port: &str, ports: &str) {
    if !available(runtime) {
        return;
    }
    // One hive at a time: hives on one Docker Engine share container names.
    let _serial = crate::e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    // No flag, no variable, no claude on the daemon's PATH.
    let hive = Hive::start_with_env(
        dir,
        runtime,
        &[
            "--manager-port",
            manager_port,
            "--agent-ports",
            ports,
            "--agent-env",
            "ANTHROPIC_API_KEY=test",
        ],
        &[
            ("HIVE_CLAUDE_BIN", None),
            ("HIVE_CODEX_BIN", None),
            ("PATH", Some("/usr/sbin:/usr/bin:/sbin:/bin")),
        ],
    );
    // Docker's containers outlive `hive serve`: removed when done.
    let _cleanup = crate::hives::Cleanup(vec![hive_runtime::HiveId::of(&hive.state_dir())]);
    spawn(&hive, "bare");
    within("bare's status row to say the engine is missing", || {
        status_row(&hive, "bare")["status_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("engine missing: "))
    });
    let row = status_row(&hive, "bare");
    let text = row["status_text"].as_str().unwrap();
    assert!(
        text.contains("claude CLI") && text.contains("--claude-bin"),
        "{text}"
    );
    assert!(
        !text.contains("login") && !text.contains("credential"),
        "{text}"
    );
    assert_eq!(row["needs_login"], false, "{row}");

    // Switched to codex by an approved deploy: the row names that CLI.
    let sha = crate::support::commit(
        &hive.state_dir().join("proposed/bare/config"),
        &[(
            "agent.toml",
            "model = \"gpt-test\"\nengine = \"codex\"\nprompt = \"prompt.md\"\n",
        )],
        "run on codex",
    );
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"bare","commit_ref":"{sha}"}}"#),
    ));
    hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"]));
    within("bare's status row to name the codex CLI", || {
        status_row(&hive, "bare")["status_text"]
            .as_str()
            .is_some_and(|t| t.contains("codex CLI") && t.contains("--codex-bin"))
    });
    when_idle(&hive, r#"{"cmd":"destroy","name":"bare"}"#);
}

#[test]
fn bwrap_says_which_engine_is_missing_and_how_to_provide_it() {
    missing("bwrap", "17420", "17421-17430");
}

#[test]
fn docker_says_which_engine_is_missing_and_how_to_provide_it() {
    missing("docker", "17520", "17521-17530");
}

/// The engine stand-in: records the environment the harness gave it.
const RECORDER: &str = r#"#!/bin/sh
timeout 5 cat >/dev/null
printf '%s %s\n' "$MARKER" "$ANTHROPIC_BASE_URL" > "/state/env.$(date +%s%N).tmp"
for f in /state/env.*.tmp; do mv "$f" "${f%.tmp}"; done
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s","num_turns":1,"duration_ms":1,"total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1}}'
"#;

/// What the stand-in recorded, oldest first.
fn recorded(state: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(state)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    name.starts_with("env.") && !name.ends_with(".tmp")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().trim().to_owned())
        .collect()
}

#[test]
fn an_agent_env_edit_reaches_the_agent_at_its_next_restart() {
    let runtime = "bwrap";
    if !available(runtime) {
        return;
    }
    let _serial = crate::e2e::serial();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("shared")).unwrap();
    let engine = state.join("shared/engine.sh");
    std::fs::write(&engine, RECORDER).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let env_file = state.join("agent.env");
    let first_url = "http://127.0.0.1:9";
    std::fs::write(
        &env_file,
        format!(
            "ANTHROPIC_BASE_URL={first_url}\nANTHROPIC_API_KEY=test\n\
             HIVE_CLAUDE_BIN=/shared/engine.sh\nMARKER=one\n"
        ),
    )
    .unwrap();
    let hive = Hive::start_with(
        dir,
        runtime,
        &["--manager-port", "17440", "--agent-ports", "17441-17450"],
    );
    spawn(&hive, "envy");
    let agent_state = hive.state_dir().join("agents/envy/state");
    hive.host(r#"{"cmd":"send","to":"envy","body":"first"}"#);
    within("the first turn", || !recorded(&agent_state).is_empty());
    assert_eq!(recorded(&agent_state)[0], format!("one {first_url}"));

    // The operator edits the file (a new marker, and a model endpoint the
    // running daemon's egress proxy does not allow), then restarts the agent.
    std::fs::write(
        &env_file,
        "ANTHROPIC_BASE_URL=http://127.0.0.1:10\nANTHROPIC_API_KEY=test\n\
         HIVE_CLAUDE_BIN=/shared/engine.sh\nMARKER=two\n",
    )
    .unwrap();
    assert_eq!(
        when_idle(&hive, r#"{"cmd":"restart","name":"envy"}"#),
        r#"{"version":1,"ok":true}"#
    );
    let before = recorded(&agent_state).len();
    hive.host(r#"{"cmd":"send","to":"envy","body":"second"}"#);
    within("the turn after the restart", || {
        recorded(&agent_state).len() > before
    });
    // The new marker; the model endpoint stays the daemon's.
    assert_eq!(
        recorded(&agent_state).last().unwrap(),
        &format!("two {first_url}")
    );
}
