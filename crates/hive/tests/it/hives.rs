//! Hives on one Docker Engine: each touches only its own containers; `hive up` leaves none behind, `hive serve` keeps and reattaches them.
#![allow(clippy::disallowed_methods)] // the docker CLI reads the engine's view

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use hive_runtime::HiveId;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{Hive, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Whether docker runs here; under CI it must.
fn available() -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    match rt.block_on(hive_runtime::docker::probe()) {
        Ok(()) => true,
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have the docker runtime: {reason}"
            );
            eprintln!("skipping: {reason}");
            false
        }
    }
}

/// The docker CLI's output; empty where there is no CLI.
pub(crate) fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// The engine's containers of `hive`: (agent, state, id), sorted.
pub fn containers(hive: &HiveId) -> Vec<(String, String, String)> {
    let filter = format!("label=hyperhive.hive={hive}");
    let format = r#"{{.Label "hyperhive.agent"}} {{.State}} {{.ID}}"#;
    let mut rows: Vec<(String, String, String)> = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &filter,
        "--format",
        format,
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split_whitespace().map(str::to_owned);
        Some((parts.next()?, parts.next()?, parts.next()?))
    })
    .collect();
    rows.sort();
    rows
}

/// Removes every container of the given hives when dropped, pass or fail
/// (a `hive serve` on docker leaves them running by design).
pub struct Cleanup(pub Vec<HiveId>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for hive in &self.0 {
            for (_, _, id) in containers(hive) {
                docker(&["rm", "-f", &id]);
            }
        }
    }
}

/// Starts `hive <verb>` on docker in `dir`; the daemon and its runtime
/// banner line.
fn start(dir: tempfile::TempDir, verb: &str, manager_port: &str, ports: &str) -> (Hive, String) {
    start_on(dir, verb, "docker", manager_port, ports)
}

/// [`start`] on `runtime`.
pub(crate) fn start_on(
    dir: tempfile::TempDir,
    verb: &str,
    runtime: &str,
    manager_port: &str,
    ports: &str,
) -> (Hive, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg(verb)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--dashboard", "127.0.0.1:0", "--runtime", runtime])
        .args(["--manager-port", manager_port, "--agent-ports", ports])
        // Swarm's default is the link, which needs a network of its own.
        .args(if runtime == "swarm" {
            &["--agent-transport", "unix"][..]
        } else {
            &[]
        })
        .env("HIVE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut dashboard = String::new();
    let banner = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "hive exited");
        if let Some(url) = line.strip_prefix("hive: dashboard ") {
            dashboard = url.trim().trim_end_matches('/').to_owned();
        }
        if line.starts_with("hive: runtime") {
            break line.trim().to_owned();
        }
    };
    // The rest of the banner is not read; keep the pipe open.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let token = std::fs::read_to_string(dir.path().join("run/operator-token"))
        .unwrap()
        .trim()
        .to_owned();
    let hive = Hive {
        dir,
        child,
        dashboard,
        token,
    };
    (hive, banner)
}

fn hive_id(state: &Path) -> HiveId {
    HiveId::of(state)
}

fn running(hive: &Hive, name: &str) -> bool {
    let v = json(&hive.host(&format!(
        r#"{{"cmd":"agent_status","scope":{{"agent_names":["{name}"]}}}}"#
    )));
    v["agent_statuses"][0]["running"] == true
}

fn spawn(hive: &Hive, name: &str) {
    let queued = json(&hive.host(&format!(r#"{{"cmd":"request_spawn","name":"{name}"}}"#)));
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    assert!(running(hive, name));
}

/// Helper events the manager has received (`recent` does not pop).
fn manager_events(hive: &Hive) -> Vec<Value> {
    let recent = json(&hive.agent("manager", r#"{"cmd":"recent","limit":200}"#));
    recent["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["from"] == "system")
        .filter_map(|m| serde_json::from_str(m["body"].as_str()?).ok())
        .collect()
}

fn crashes(hive: &Hive) -> Vec<Value> {
    manager_events(hive)
        .into_iter()
        .filter(|e| e["event"] == "container_crash")
        .collect()
}

/// `(agent, state)` pairs of a hive's containers.
fn states(hive: &HiveId) -> Vec<(String, String)> {
    containers(hive)
        .into_iter()
        .map(|(agent, state, _)| (agent, state))
        .collect()
}

fn pair(agent: &str, state: &str) -> (String, String) {
    (agent.to_owned(), state.to_owned())
}

/// How many times coder's harness said it serves (its log spans restarts).
fn serving(hive: &Hive) -> usize {
    let logs = json(&hive.host(r#"{"cmd":"logs","name":"coder","lines":200}"#));
    logs["logs"].to_string().matches("serving coder").count()
}

#[test]
fn two_hives_on_one_engine_keep_to_their_own() {
    if !available() {
        return;
    }
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::create_dir_all(dir_a.path().join("state")).unwrap();
    std::fs::create_dir_all(dir_b.path().join("state")).unwrap();
    let (id_a, id_b) = (
        hive_id(&dir_a.path().join("state")),
        hive_id(&dir_b.path().join("state")),
    );
    assert_ne!(id_a, id_b);
    let _cleanup = Cleanup(vec![id_a.clone(), id_b.clone()]);
    let (a, _) = start(dir_a, "serve", "17400", "17401-17410");
    let (b, _) = start(dir_b, "serve", "17500", "17501-17510");
    for hive in [&a, &b] {
        eventually("the manager to run", || running(hive, "manager"));
        // The same agent name in both hives.
        spawn(hive, "coder");
    }
    for id in [&id_a, &id_b] {
        assert_eq!(
            states(id),
            [pair("coder", "running"), pair("manager", "running")]
        );
    }
    let before_a = containers(&id_a);

    // B restarts its coder, which then crashes; B's manager hears of it.
    assert_eq!(
        b.host(r#"{"cmd":"restart","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    let coder_b = &containers(&id_b)[0].2;
    docker(&["kill", coder_b]);
    eventually("B's manager to hear of the crash", || {
        !crashes(&b).is_empty()
    });
    // B destroys it; then A restarts its own.
    assert_eq!(
        b.host(r#"{"cmd":"destroy","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(states(&id_b), [pair("manager", "running")]);
    // A's containers are the same ones, still running, and A's manager
    // heard nothing of B's crash.
    assert_eq!(containers(&id_a), before_a);
    assert!(crashes(&a).is_empty(), "{:?}", crashes(&a));
    assert_eq!(
        a.host(r#"{"cmd":"restart","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(
        a.host(r#"{"cmd":"destroy","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(states(&id_a), [pair("manager", "running")]);
    assert_eq!(states(&id_b), [pair("manager", "running")]);
    assert!(crashes(&a).is_empty(), "{:?}", crashes(&a));
    assert_eq!(crashes(&b).len(), 1, "{:?}", crashes(&b));
}

#[test]
fn a_foreign_container_of_an_agents_name_is_refused_and_kept() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let id = hive_id(&dir.path().join("state"));
    let name = format!("h-coder-{id}");
    let _cleanup = Cleanup(vec![id.clone()]);
    // Not a hyperhive container: created (never started) by hand, with
    // the hive's name but not its label... and removed by this guard.
    struct Foreign(String);
    impl Drop for Foreign {
        fn drop(&mut self) {
            docker(&["rm", "-f", &self.0]);
        }
    }
    let (hive, _) = start(dir, "serve", "17600", "17601-17610");
    eventually("the manager to run", || running(&hive, "manager"));
    let image = hive_runtime::docker::BASE_IMAGE;
    let created = docker(&["create", "--name", &name, image, "/nothing"]);
    let _foreign = Foreign(name.clone());
    let foreign_id = created.trim().to_owned();
    assert!(!foreign_id.is_empty());

    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#));
    let approval = queued["approvals"][0]["id"].as_i64().unwrap();
    let answer = hive.host(&format!(r#"{{"cmd":"approve","id":{approval}}}"#));
    assert!(
        answer.contains(&format!(
            "a container {name} of another hive (or not made by hyperhive) exists"
        )),
        "{answer}"
    );
    let still = docker(&["inspect", "--format", "{{.Id}}", &name]);
    assert_eq!(still.trim(), foreign_id);
}

#[test]
fn up_removes_its_containers_at_ctrl_c() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let id = hive_id(&dir.path().join("state"));
    let _cleanup = Cleanup(vec![id.clone()]);
    let (mut hive, banner) = start(dir, "up", "17700", "17701-17710");
    assert_eq!(banner, "hive: runtime docker");
    eventually("the manager to run", || running(&hive, "manager"));
    spawn(&hive, "coder");
    assert_eq!(
        states(&id),
        [pair("coder", "running"), pair("manager", "running")]
    );
    let pid = Pid::from_raw(i32::try_from(hive.child.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let exit = hive.child.wait().unwrap();
    assert!(exit.success(), "hive up exited with {exit}");
    assert_eq!(containers(&id), []);
}

#[test]
fn serve_keeps_its_containers_and_reattaches_them() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let id = hive_id(&dir.path().join("state"));
    let _cleanup = Cleanup(vec![id.clone()]);
    let (hive, banner) = start(dir, "serve", "17800", "17801-17810");
    assert!(
        banner.starts_with("hive: runtime docker (containers keep running when this daemon stops"),
        "{banner}"
    );
    eventually("the manager to run", || running(&hive, "manager"));
    spawn(&hive, "coder");
    eventually("coder's harness to serve", || serving(&hive) == 1);
    let before = containers(&id);
    let dir = hive.stop();
    // Stopped with SIGTERM: the containers run on.
    assert_eq!(containers(&id), before);
    assert_eq!(
        states(&id),
        [pair("coder", "running"), pair("manager", "running")]
    );

    let (hive, _) = start(dir, "serve", "17800", "17801-17810");
    // Reattached: each container that held the old daemon's socket is
    // restarted on the new one, and its harness serves again.
    let coder = |rows: &[(String, String, String)]| {
        rows.iter()
            .find(|(agent, state, _)| agent == "coder" && state == "running")
            .map(|(_, _, id)| id.clone())
    };
    let old = coder(&before);
    eventually("coder's harness to serve on the new daemon", || {
        running(&hive, "coder")
            && coder(&containers(&id)).is_some_and(|now| Some(now) != old)
            && serving(&hive) == 1
    });
    assert_eq!(
        states(&id),
        [pair("coder", "running"), pair("manager", "running")]
    );
    let bearer = hive.bearer();
    let (status, _, body) = hive.http(
        "GET",
        "/agent/coder/api/state",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["agent"], "coder", "{body}");
    assert!(crashes(&hive).is_empty(), "{:?}", crashes(&hive));
}
