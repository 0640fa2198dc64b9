//! The daemon on the `swarm` runtime, a real single-node swarm: spawn, stop, start, restart, a crash noticed from the event stream, destroy and revive on the agent's pinned node, and the hostile agent's probes.
//!
//! Each test holds a [`SwarmLease`]: the engine joins a single-node swarm
//! if it is in none, and leaves it after the last holder only if a holder
//! made it. Where the engine cannot be a swarm manager the test skips with
//! the reason, and fails under `CI`.

use std::time::Duration;

use hive_runtime::HiveId;
use hive_runtime::swarm::lease::SwarmLease;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::hives::docker;
use crate::lifecycle::{manager_events, status};
use crate::support::{Hive, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// The hold on the engine's swarm, or `None` (printed) where there can
/// be none.
pub(crate) fn lease() -> Option<SwarmLease> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    match rt.block_on(SwarmLease::acquire()) {
        Ok(lease) => Some(lease),
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have a docker engine that can run a swarm: {reason}"
            );
            eprintln!("skipping the swarm runtime: {reason}");
            None
        }
    }
}

/// Removes the services and networks of `hive` when dropped, pass or fail
/// (before the lease, which is declared first).
pub(crate) struct Cleanup(pub HiveId);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=hyperhive.hive={}", self.0);
        for service in docker(&["service", "ls", "-q", "--filter", &filter]).lines() {
            docker(&["service", "rm", service]);
        }
        // The link relay (a plain container) and the credentials' secrets.
        for relay in docker(&["ps", "-aq", "--filter", &filter]).lines() {
            docker(&["rm", "-f", relay]);
        }
        for secret in docker(&["secret", "ls", "-q", "--filter", &filter]).lines() {
            docker(&["secret", "rm", secret]);
        }
        for config in docker(&["config", "ls", "-q", "--filter", &filter]).lines() {
            docker(&["config", "rm", config]);
        }
        // Its volumes (state, shared), once the services' task containers
        // are gone (slow on a loaded machine).
        for _ in 0..300 {
            let volumes = docker(&["volume", "ls", "-q", "--filter", &filter]);
            if volumes.trim().is_empty() {
                break;
            }
            for volume in volumes.lines() {
                docker(&["volume", "rm", volume]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for _ in 0..50 {
            let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
            if networks.trim().is_empty() {
                break;
            }
            for network in networks.lines() {
                docker(&["network", "rm", network]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The id of `agent`'s running task container.
fn task_container(hive: &HiveId, agent: &str) -> String {
    let filters = [
        format!("label=hyperhive.hive={hive}"),
        format!("label=hyperhive.agent={agent}"),
    ];
    let id = docker(&["ps", "-q", "--filter", &filters[0], "--filter", &filters[1]]);
    id.lines()
        .next()
        .expect("a running task container")
        .to_owned()
}

/// The host pid of `agent`'s running task container.
fn task_pid(hive: &HiveId, agent: &str) -> i32 {
    docker(&[
        "inspect",
        "-f",
        "{{.State.Pid}}",
        &task_container(hive, agent),
    ])
    .trim()
    .parse()
    .unwrap()
}

/// Runs `script` in `agent`'s running task as the agent's own user.
fn as_agent(hive: &HiveId, agent: &str, script: &str) -> String {
    docker(&[
        "exec",
        &task_container(hive, agent),
        "/bin/sh",
        "-c",
        script,
    ])
}

/// Whether the Engine holds the volume `name`.
fn volume_exists(name: &str) -> bool {
    !docker(&["volume", "ls", "-q", "--filter", &format!("name=^{name}$")])
        .trim()
        .is_empty()
}

fn ok(hive: &Hive, request: &str) {
    assert_eq!(
        crate::adversary::when_idle(hive, request),
        r#"{"version":1,"ok":true}"#,
        "{request}"
    );
}

/// The daemon's flags in `spawn_stop_crash_restart_destroy_revive_on_swarm`.
const ARGS: &[&str] = &[
    "--manager-port",
    "18600",
    "--agent-ports",
    "18601-18609",
    "--agent-transport",
    "unix",
];

#[test]
fn spawn_stop_crash_restart_destroy_revive_on_swarm() {
    let Some(_lease) = lease() else { return };
    let dir = tempfile::tempdir().unwrap();
    let id = HiveId::of(&dir.path().join("state"));
    let _cleanup = Cleanup(id.clone());
    let hive = Hive::start_with(dir, "swarm", ARGS);
    eventually("the manager to run", || {
        status(&hive, "manager")["running"] == true
    });
    let node = docker(&["info", "-f", "{{.Name}}"]).trim().to_owned();
    assert_eq!(status(&hive, "manager")["node"], node.as_str());

    // Spawn by approval: a service, running on this node, pinned to it.
    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#));
    let approval = queued["approvals"][0]["id"].as_i64().unwrap();
    ok(&hive, &format!(r#"{{"cmd":"approve","id":{approval}}}"#));
    let row = status(&hive, "coder");
    assert_eq!(
        (row["running"].as_bool(), row["node"].as_str()),
        (Some(true), Some(node.as_str()))
    );
    let services = docker(&[
        "service",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("label=hyperhive.hive={id}"),
    ]);
    assert!(
        services.lines().any(|s| s == format!("h-coder-{id}")),
        "{services}"
    );
    // The dashboard's snapshot carries it too (shown as a chip).
    let bearer = hive.bearer();
    let (code, _, body) = hive.http("GET", "/api/state", &[("Authorization", &bearer)], "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!(r#""node":"{node}""#)), "{body}");
    eventually("coder's harness to serve", || {
        json(&hive.host(r#"{"cmd":"logs","name":"coder","lines":50}"#))["logs"]
            .to_string()
            .contains("serving coder")
    });

    // Stopped and started on purpose: no crash.
    ok(&hive, r#"{"cmd":"kill","name":"coder"}"#);
    assert_eq!(status(&hive, "coder")["running"], false);
    assert_eq!(status(&hive, "coder")["failed"], false);
    // Still shown where its state is pinned.
    assert!(status(&hive, "coder")["node"].is_string());
    ok(
        &hive,
        r#"{"cmd":"start","scope":{"agent_names":["coder"]}}"#,
    );
    assert_eq!(status(&hive, "coder")["running"], true);

    // Killed from outside: the event stream tells core, core tells the
    // manager; Swarm does not restart it.
    kill(Pid::from_raw(task_pid(&id, "coder")), Signal::SIGKILL).unwrap();
    let mut crash = None;
    eventually("container_crash", || {
        crash = manager_events(&hive)
            .into_iter()
            .find(|e| e["event"] == "container_crash");
        crash.is_some()
    });
    assert_eq!(crash.unwrap()["agent"], "coder");
    eventually("coder to show failed", || {
        let row = status(&hive, "coder");
        row["running"] == false && row["failed"] == true
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        status(&hive, "coder")["running"],
        false,
        "swarm restarted it"
    );

    // Restart brings it back.
    ok(&hive, r#"{"cmd":"restart","name":"coder"}"#);
    assert_eq!(status(&hive, "coder")["running"], true);

    // What the agent writes in /state is on its volume, and survives a
    // daemon restart (the service outlives `hive serve`).
    as_agent(&id, "coder", "echo yes > /state/kept");
    let volume = format!("h-coder-{id}-state-0");
    assert!(volume_exists(&volume));
    let dir = hive.stop();
    // As if the daemon had died between coder's first start and its pin:
    // the daemon pins it to the node it finds it running on.
    let db = dir.path().join("state/hive.sqlite");
    let pin = |store: &hive_store::Store| store.agent("coder").unwrap().unwrap().node;
    let pinned = {
        let store = hive_store::Store::open(&db).unwrap();
        let pinned = pin(&store).expect("coder pinned at its first start");
        store.set_node("coder", None).unwrap();
        pinned
    };
    let hive = Hive::start_with(dir, "swarm", ARGS);
    eventually("coder to run after the daemon restart", || {
        status(&hive, "coder")["running"] == true
    });
    assert_eq!(as_agent(&id, "coder", "cat /state/kept"), "yes\n");
    // Pinned again before its row said running (`pin_unpinned`); the file
    // is read with the daemon stopped (a serving daemon holds it alone).
    let dir = hive.stop();
    let store = hive_store::Store::open(&db).unwrap();
    assert_eq!(pin(&store), Some(pinned.clone()));
    drop(store);
    let hive = Hive::start_with(dir, "swarm", ARGS);
    eventually("coder to run after the second restart", || {
        status(&hive, "coder")["running"] == true
    });

    // Destroyed to a tombstone (state kept, service and network gone),
    // then revived by a spawn: the same state, the same node.
    ok(&hive, r#"{"cmd":"destroy","name":"coder","purge":false}"#);
    assert!(volume_exists(&volume), "destroy removed the state volume");
    let services = docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("name=h-coder-{id}"),
    ]);
    assert!(services.trim().is_empty(), "{services}");
    assert!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=h-coder-{id}")
        ])
        .trim()
        .is_empty()
    );
    ok(&hive, r#"{"cmd":"spawn","name":"coder"}"#);
    let row = status(&hive, "coder");
    assert_eq!(
        (row["running"].as_bool(), row["node"].as_str()),
        (Some(true), Some(node.as_str()))
    );
    assert_eq!(as_agent(&id, "coder", "cat /state/kept"), "yes\n");
    // Purge removes it: gone from the Engine.
    ok(&hive, r#"{"cmd":"destroy","name":"coder","purge":true}"#);
    assert!(!volume_exists(&volume), "purge left {volume}");
    drop(hive);
}

#[test]
fn a_placement_no_node_meets_is_refused_and_the_agent_stays_where_its_state_is() {
    let Some(_lease) = lease() else { return };
    let dir = tempfile::tempdir().unwrap();
    let id = HiveId::of(&dir.path().join("state"));
    let _cleanup = Cleanup(id);
    let hive = Hive::start_with(
        dir,
        "swarm",
        &[
            "--manager-port",
            "18610",
            "--agent-ports",
            "18611-18619",
            "--agent-transport",
            "unix",
        ],
    );
    eventually("the manager to run", || {
        status(&hive, "manager")["running"] == true
    });
    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#));
    let approval = queued["approvals"][0]["id"].as_i64().unwrap();
    ok(&hive, &format!(r#"{{"cmd":"approve","id":{approval}}}"#));

    // A placement change is a config change: the manager proposes, the
    // operator approves, and a node without the label cannot take it.
    let repo = hive.state_dir().join("proposed/coder/config");
    let toml = std::fs::read_to_string(repo.join("agent.toml")).unwrap();
    let sha = crate::support::commit(
        &repo,
        &[(
            "agent.toml",
            &format!("{toml}\n[placement]\nnode_labels = {{ hyperhive-test-gpu = \"yes\" }}\n"),
        )],
        "needs a gpu node",
    );
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{sha}"}}"#),
    ));
    assert_eq!(queued["kind"], "approval_queued", "{queued}");
    let before = status(&hive, "coder")["deployed_sha"].clone();
    let answer = hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"]));
    assert!(answer.contains("cannot be placed"), "{answer}");
    assert!(answer.contains("no suitable node"), "{answer}");
    // Never silently elsewhere: the previous config runs again, on the
    // node its state is on.
    eventually("coder to run its previous config", || {
        let row = status(&hive, "coder");
        row["running"] == true && row["deployed_sha"] == before
    });
    let node = docker(&["info", "-f", "{{.Name}}"]).trim().to_owned();
    assert_eq!(status(&hive, "coder")["node"], node.as_str());
    drop(hive);
}

#[test]
fn a_hostile_agent_gets_nowhere_on_swarm() {
    let Some(_lease) = lease() else { return };
    crate::adversary::hostile_agent("swarm", "17401-17410", "17400", None);
}

/// The hive's swarm secrets of `agent`.
fn secrets_of(hive: &HiveId, agent: &str) -> Vec<String> {
    let filters = [
        format!("label=hyperhive.hive={hive}"),
        format!("label=hyperhive.agent={agent}"),
    ];
    docker(&[
        "secret",
        "ls",
        "-q",
        "--filter",
        &filters[0],
        "--filter",
        &filters[1],
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_claude_turn_on_swarm_reaches_core_over_the_link_alone() {
    let Some(_lease) = lease() else { return };
    let Some(claude) = crate::e2e::claude() else {
        return;
    };
    let _serial = crate::e2e::serial();
    let network = crate::tls::Network::create(&format!("hive-swarm-link-{}", std::process::id()));
    let link = format!("{}:17890", network.gateway());
    let (hive, _model) = crate::tls::linked_turn(
        "swarm",
        &claude,
        &link,
        ("17891", "17892-17899"),
        &["--link-network", &network.0],
    );
    let id = HiveId::of(&hive.state_dir());
    let _cleanup = Cleanup(id.clone());
    // No host path of the link in the service: the credential is the
    // agent's own secrets, the link dir a tmpfs, core dialled at the relay.
    let service = format!("h-eng-{id}");
    let spec = docker(&[
        "service",
        "inspect",
        "-f",
        "{{json .Spec.TaskTemplate}}",
        &service,
    ]);
    let template = json(&spec);
    let mounts = template["ContainerSpec"]["Mounts"].as_array().unwrap();
    // Nothing of the hive's state or run dir is bound: the agent could
    // run on a node without them. `/state` is its volume.
    for mount in mounts {
        let source = mount["Source"].as_str().unwrap_or_default();
        if mount["Type"] == "bind" {
            assert!(
                !std::path::Path::new(source).starts_with(hive.state_dir())
                    && !std::path::Path::new(source).starts_with(hive.run_dir()),
                "{mount}"
            );
        }
        if mount["Target"] == "/state" {
            assert_eq!(mount["Type"], "volume", "{mount}");
            assert_eq!(source, format!("h-eng-{id}-state-0"));
        }
    }
    for mount in mounts {
        let target = mount["Target"].as_str().unwrap();
        assert!(
            !target.starts_with("/run/hive/credential") && !target.starts_with("/run/hive/link")
                || mount["Type"] == "tmpfs",
            "{mount}"
        );
    }
    let secrets = secrets_of(&id, "eng");
    assert_eq!(secrets.len(), 3, "ca, cert, key: {secrets:?}");
    assert_eq!(
        template["ContainerSpec"]["Secrets"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let env = template["ContainerSpec"]["Env"].to_string();
    let relay = format!("h-link-relay-{id}");
    let relay_ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{service}\").IPAddress}}}}"),
        &relay,
    ]);
    assert!(
        env.contains(&format!("HIVE_LINK_ADDR={}:17890", relay_ip.trim())),
        "{env}"
    );
    // Each credential is its own agent's; a restart issues eng a new one
    // (new secrets, the old ones gone, the old certificate refused) and a
    // destroy revokes it.
    let keep = tempfile::tempdir().unwrap();
    let whoami = r#"{"cmd":"whoami"}"#;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let as_eng = |dialer| {
        rt.block_on(async {
            match crate::tls::AgentConn::open(&dialer).await {
                Ok(mut conn) => conn.ask(whoami).await,
                Err(_) => None,
            }
        })
    };
    let first = crate::tls::dialer_of(&hive, "eng", &link, keep.path());
    let manager = crate::tls::dialer_of(&hive, "manager", &link, keep.path());
    assert!(as_eng(manager).unwrap().contains(r#""name":"manager""#));
    ok(&hive, r#"{"cmd":"restart","name":"eng"}"#);
    let rotated = secrets_of(&id, "eng");
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    assert!(rotated.iter().all(|s| !secrets.contains(s)), "{rotated:?}");
    assert_eq!(as_eng(first), None, "the credential before the restart");
    let second = crate::tls::dialer_of(&hive, "eng", &link, &keep.path().join("2"));
    ok(&hive, r#"{"cmd":"destroy","name":"eng"}"#);
    assert!(secrets_of(&id, "eng").is_empty());
    assert_eq!(as_eng(second), None, "a destroyed agent's credential");
    let networks = docker(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        &relay,
    ]);
    assert!(!networks.contains(&service), "{networks}");
    drop(hive);
}

/// This hive's services: `h-<agent>-<hive>` names, sorted.
fn services(hive: &HiveId) -> Vec<String> {
    let filter = format!("label=hyperhive.hive={hive}");
    let mut names: Vec<String> = docker(&[
        "service",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &filter,
    ])
    .lines()
    .map(str::to_owned)
    .collect();
    names.sort();
    names
}

#[test]
fn up_on_swarm_removes_its_services_at_ctrl_c() {
    let Some(_lease) = lease() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let id = HiveId::of(&dir.path().join("state"));
    let _cleanup = Cleanup(id.clone());
    let (mut hive, banner) = crate::hives::start_on(dir, "up", "swarm", "18620", "18621-18629");
    assert!(banner.starts_with("hive: runtime swarm"), "{banner}");
    eventually("the manager to run", || {
        status(&hive, "manager")["running"] == true
    });
    assert_eq!(services(&id), [format!("h-manager-{id}")]);
    let pid = Pid::from_raw(i32::try_from(hive.child.id()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let exit = hive.child.wait().unwrap();
    assert!(exit.success(), "hive up exited with {exit}");
    assert_eq!(services(&id), Vec::<String>::new());
}

/// The stand-in engine of [`an_agent_stalling_link_handshakes_holds_up_no_other_on_swarm`]:
/// from its container, on its own network, it keeps link handshakes
/// stalled at the relay's address it dials (8 new ones every quarter
/// second, each closed after 8 s, before core's 10 s handshake timeout
/// would) until `/state/stop`, counting them in `/state/held`.
const STALLING_ENGINE: &str = r#"#!/bin/bash
timeout 5 cat >/dev/null
host=${HIVE_LINK_ADDR%:*}; port=${HIVE_LINK_ADDR##*:}
declare -a rounds
n=0; opened=0
while [ ! -e /state/stop ] && [ $n -lt 400 ]; do
  round=""
  for i in 1 2 3 4 5 6 7 8; do
    if exec {fd}<>"/dev/tcp/$host/$port"; then round="$round $fd"; opened=$((opened+1)); fi
  done
  rounds[$n]=$round
  old=$((n-32))
  if [ $old -ge 0 ]; then for fd in ${rounds[$old]}; do exec {fd}>&-; done; fi
  echo "$opened" > /state/held.tmp && mv /state/held.tmp /state/held
  n=$((n+1))
  sleep 0.25
done
echo '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s","num_turns":1,"duration_ms":1,"total_cost_usd":0,"usage":{"input_tokens":1,"output_tokens":1}}'
"#;

/// Every agent reaches core through the one relay, so core's per-peer
/// handshake cap must hold each agent end, not the relay: an agent
/// keeping many handshakes stalled (the real agent, from its container)
/// leaves another's link alone — a fresh handshake with the manager's
/// credential, dialled at the relay, is made while the stalls are held.
#[test]
fn an_agent_stalling_link_handshakes_holds_up_no_other_on_swarm() {
    let Some(_lease) = lease() else { return };
    let network = crate::tls::Network::create(&format!("hive-swarm-stall-{}", std::process::id()));
    let port = "18650";
    let link = format!("{}:{port}", network.gateway());
    let dir = tempfile::tempdir().unwrap();
    let id = HiveId::of(&dir.path().join("state"));
    let _cleanup = Cleanup(id.clone());
    let hive = Hive::start_with(
        dir,
        "swarm",
        &[
            "--manager-port",
            "18640",
            "--agent-ports",
            "18641-18649",
            "--agent-env",
            "HIVE_CLAUDE_BIN=/shared/engine.sh",
            "--agent-env",
            "ANTHROPIC_API_KEY=sk-test",
            "--agent-transport",
            "tls",
            "--link-listen",
            &link,
            "--link-network",
            &network.0,
        ],
    );
    // `/shared` is the node's volume, made by the manager's task.
    eventually("the manager to run", || {
        crate::lifecycle::status(&hive, "manager")["running"] == true
    });
    let engine = crate::adversary::volume_dir(&format!("h-{id}-shared")).join("engine.sh");
    std::fs::write(&engine, STALLING_ENGINE).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    ok(&hive, r#"{"cmd":"spawn","name":"mole"}"#);
    eventually("mole to run", || {
        crate::lifecycle::status(&hive, "mole")["running"] == true
    });
    let state = crate::adversary::volume_dir(&format!("h-mole-{id}-state-0"));
    let held = || -> u64 {
        std::fs::read_to_string(state.join("held"))
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    hive.host(r#"{"cmd":"send","to":"mole","body":"stall"}"#);
    // A few rounds in: far more than 8 in flight.
    eventually("mole to stall handshakes", || held() >= 64);

    // The manager's credential, dialled at the relay from the host (on
    // the link network): a peer of its own, as each agent is.
    let relay = format!("h-link-relay-{id}");
    let relay_ip = docker(&[
        "inspect",
        "-f",
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            network.0
        ),
        &relay,
    ]);
    let at_relay = format!("{}:{port}", relay_ip.trim());
    let keep = tempfile::tempdir().unwrap();
    let manager = crate::tls::dialer_of(&hive, "manager", &at_relay, keep.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    for attempt in 0..5 {
        let before = held();
        let answer = rt.block_on(async {
            let mut conn = crate::tls::AgentConn::open(&manager).await.ok()?;
            conn.ask(r#"{"cmd":"whoami"}"#).await
        });
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.contains(r#""name":"manager""#)),
            "attempt {attempt}: {answer:?}"
        );
        // Made while mole went on stalling.
        eventually("mole to stall more", || held() > before);
    }
    assert!(!state.join("stop").exists());
    std::fs::write(state.join("stop"), "").unwrap();
    drop(hive);
}

/// `cmd` in `agent`'s running task container, as its user.
fn in_task(hive: &HiveId, agent: &str, cmd: &str) -> String {
    let filters = [
        format!("label=hyperhive.hive={hive}"),
        format!("label=hyperhive.agent={agent}"),
    ];
    let id = docker(&["ps", "-q", "--filter", &filters[0], "--filter", &filters[1]]);
    let id = id
        .lines()
        .next()
        .expect("a running task container")
        .to_owned();
    docker(&["exec", &id, "sh", "-c", cmd])
}

/// A node dies with an agent on it (here: the agent pinned, in the store,
/// to a node id no swarm has): its start fails with the scheduler's words
/// and it is reported. Moved by approval to the live node, it runs there
/// from its last checkpoint: the file it had is in its `/state`, and its
/// service is pinned to the new node. A move to the node it is on is
/// refused.
#[test]
fn a_dead_nodes_agent_is_revived_on_a_live_node_from_its_checkpoint() {
    let Some(_lease) = lease() else { return };
    let network = crate::tls::Network::create(&format!("hive-swarm-move-{}", std::process::id()));
    let link = format!("{}:19340", network.gateway());
    let args = ["--link-network", network.0.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let id = HiveId::of(&dir.path().join("state"));
    let _cleanup = Cleanup(id.clone());
    let hive = crate::tls::linked_hive_in(dir, "swarm", &link, ("19341", "19342-19349"), &args);
    crate::tls::spawn(&hive, "eng");
    eventually("eng to run", || status(&hive, "eng")["running"] == true);
    // A venv-like link to an absolute path is ordinary /state.
    in_task(
        &id,
        "eng",
        "printf remember > /state/notes.txt && ln -s /usr/bin/env /state/python",
    );
    crate::tls::within("eng's checkpoint", || {
        hive.host(r#"{"cmd":"checkpoint","name":"eng"}"#)
            .contains(r#""ok":true"#)
    });

    // The node dies: eng's pin names a node that is gone.
    let dir = hive.stop();
    let dead = "deadnode0000000000000000";
    let store = hive_store::Store::open(&dir.path().join("state/hive.sqlite")).unwrap();
    store.set_node("eng", Some(dead)).unwrap();
    drop(store);
    // What was on that node is lost with it: its volume, generation 0.
    let hive = crate::tls::linked_hive_in(dir, "swarm", &link, ("19341", "19342-19349"), &args);
    eventually("eng reported not running", || {
        status(&hive, "eng")["running"] == false
    });
    // (The daemon's own resume may hold eng for a moment.)
    let mut answer = String::new();
    eventually("a start refused by the scheduler", || {
        answer = hive.host(r#"{"cmd":"start","scope":{"agent_names":["eng"]}}"#);
        !answer.contains("already starting")
    });
    assert!(answer.contains("no suitable node"), "{answer}");

    // Moved by approval to the live node: the approval says where its
    // state comes from.
    let live = docker(&["info", "-f", "{{.Swarm.NodeID}}"])
        .trim()
        .to_owned();
    let queued = json(&hive.host(&format!(r#"{{"cmd":"move","name":"eng","node":"{live}"}}"#)));
    let approval = &queued["approvals"][0];
    assert_eq!(approval["kind"], "move", "{queued}");
    let text = approval["description"].as_str().unwrap();
    assert!(text.contains("changes since are lost"), "{text}");
    assert!(text.contains(dead), "{text}");
    // The approval answers once the harness restored its checkpoint.
    let answer = hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, approval["id"]));
    assert_eq!(answer, r#"{"version":1,"ok":true}"#);
    let marker = hive
        .state_dir()
        .join("agents/eng/checkpoints/restore-pending");
    assert!(!marker.exists());
    eventually("eng to run on the live node", || {
        status(&hive, "eng")["running"] == true
    });
    let hostname = docker(&["info", "-f", "{{.Name}}"]).trim().to_owned();
    assert_eq!(status(&hive, "eng")["node"], hostname.as_str());
    // The file came back by the restore alone: the task runs on the next
    // generation's volume, made empty on the live node.
    let mounts = docker(&[
        "service",
        "inspect",
        "-f",
        "{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}",
        &format!("h-eng-{id}"),
    ]);
    assert!(
        mounts.contains(&format!("h-eng-{id}-state-1"))
            && !mounts.contains(&format!("h-eng-{id}-state-0\"")),
        "{mounts}"
    );
    assert_eq!(in_task(&id, "eng", "cat /state/notes.txt"), "remember");
    assert_eq!(
        in_task(&id, "eng", "readlink /state/python").trim(),
        "/usr/bin/env"
    );
    let constraints = docker(&[
        "service",
        "inspect",
        "-f",
        "{{json .Spec.TaskTemplate.Placement.Constraints}}",
        &format!("h-eng-{id}"),
    ]);
    assert!(
        constraints.contains(&format!("node.id=={live}")) && !constraints.contains(dead),
        "{constraints}"
    );
    // Where it is already: refused, nothing queued.
    let again = hive.host(&format!(r#"{{"cmd":"move","name":"eng","node":"{live}"}}"#));
    assert!(again.contains("already on node"), "{again}");
    drop(hive);
}

/// A move whose restore fails is rolled back: eng runs on the live node
/// and is moved "to" it again under its id in capitals, which swarm's
/// constraint matches (case-insensitively) and core takes for another
/// node: the single node stands in for a second one, and the new task
/// runs on a fresh volume (generation 1). Its checkpoint, once taken by
/// the move, is swapped for a tar with a `../` entry before the new
/// harness asks for it: the harness refuses it, and core stops the task
/// and puts eng back on its old pin and generation-0 volume, running,
/// with its files; the approval's answer says so.
#[test]
fn a_move_whose_restore_is_refused_is_rolled_back_to_the_old_node_and_volume() {
    let Some(_lease) = lease() else { return };
    let network = crate::tls::Network::create(&format!("hive-swarm-back-{}", std::process::id()));
    let link = format!("{}:19370", network.gateway());
    let args = ["--link-network", network.0.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let id = HiveId::of(&dir.path().join("state"));
    let _cleanup = Cleanup(id.clone());
    let hive = crate::tls::linked_hive_in(dir, "swarm", &link, ("19371", "19372-19379"), &args);
    crate::tls::spawn(&hive, "eng");
    eventually("eng to run", || status(&hive, "eng")["running"] == true);
    in_task(&id, "eng", "printf remember > /state/notes.txt");
    let live = docker(&["info", "-f", "{{.Swarm.NodeID}}"])
        .trim()
        .to_owned();
    let elsewhere = live.to_uppercase();
    assert_ne!(live, elsewhere, "a node id with letters");
    let service = format!("h-eng-{id}");
    let spec = |what: &str| docker(&["service", "inspect", "-f", what, &service]);
    let mounts = || spec("{{json .Spec.TaskTemplate.ContainerSpec.Mounts}}");
    let constraints = || spec("{{json .Spec.TaskTemplate.Placement.Constraints}}");
    assert!(mounts().contains(&format!("h-eng-{id}-state-0\"")));
    // The harness's state tunnel is up once a checkpoint is taken.
    crate::tls::within("eng's checkpoint", || {
        hive.host(r#"{"cmd":"checkpoint","name":"eng"}"#)
            .contains(r#""ok":true"#)
    });

    let queued = json(&hive.host(&format!(
        r#"{{"cmd":"move","name":"eng","node":"{elsewhere}"}}"#
    )));
    let approval = &queued["approvals"][0];
    assert_eq!(approval["kind"], "move", "{queued}");
    let socket = hive.host_socket();
    let request = format!("{{\"cmd\":\"approve\",\"id\":{}}}\n", approval["id"]);
    let approved =
        std::thread::spawn(move || crate::support::roundtrip(&socket, request.as_bytes()));
    // The move took its checkpoint, stopped eng and set the restore flag;
    // the new task is being made. The checkpoint is swapped now (a regular
    // file of core's, as a hostile core-side writer could leave it).
    let ckpt = hive.state_dir().join("agents/eng/checkpoints");
    eventually("the restore flag", || ckpt.join("restore-pending").exists());
    let poisoned = crate::checkpoint::raw_tar(&[("ok.txt", b"x"), ("../escaped", b"x")], true);
    std::fs::write(ckpt.join("state.tar"), &poisoned).unwrap();
    let answer = approved.join().unwrap();
    assert!(answer.contains(r#""ok":false"#), "{answer}");
    for words in [
        "moving eng to node",
        "failed",
        "the harness refused its checkpoint",
        "running there again",
    ] {
        assert!(answer.contains(words), "{words}: {answer}");
    }

    // Back where it was: its old pin, its generation-0 volume, running,
    // with its files; the flag cleared, nothing of the refused tar in it.
    eventually("eng to run again", || {
        status(&hive, "eng")["running"] == true
    });
    let hostname = docker(&["info", "-f", "{{.Name}}"]).trim().to_owned();
    assert_eq!(status(&hive, "eng")["node"], hostname.as_str());
    let mounts = mounts();
    assert!(
        mounts.contains(&format!("h-eng-{id}-state-0\""))
            && !mounts.contains(&format!("h-eng-{id}-state-1")),
        "{mounts}"
    );
    let constraints = constraints();
    assert!(
        constraints.contains(&format!("node.id=={live}")) && !constraints.contains(&elsewhere),
        "{constraints}"
    );
    eventually("eng's task to answer", || {
        in_task(&id, "eng", "cat /state/notes.txt") == "remember"
    });
    assert!(in_task(&id, "eng", "ls /state/ok.txt 2>&1 || true").contains("No such"));
    assert!(!ckpt.join("restore-pending").exists());
    let dir = hive.stop();
    let store = hive_store::Store::open(&dir.path().join("state/hive.sqlite")).unwrap();
    let record = store.agent("eng").unwrap().unwrap();
    assert_eq!(
        (record.node.as_deref(), record.generation),
        (Some(live.as_str()), 0)
    );
}
