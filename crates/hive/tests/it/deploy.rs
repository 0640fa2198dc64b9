//! Deploys that take effect, on the process runtime with the real `claude`
//! CLI and a scripted model: the next model request after an approval runs
//! the approved model and role; approvals of one agent queue up (or are
//! superseded) instead of failing busy; a config whose container dies at
//! start ends `failed/` and the previous config keeps running.
#![allow(clippy::disallowed_methods)] // tests start the real binaries directly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::e2e::{ModelServer, Reply, claude, serial};
use crate::support::{Hive, commit, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// A process-runtime hive whose agents run the real CLI against `model`.
pub(crate) fn hive(model: &ModelServer, claude: &Path, ports: (u16, u16)) -> Hive {
    hive_with(model, claude, ports, &[], &[])
}

/// [`hive`], with more agent environment and `hive serve` arguments.
pub(crate) fn hive_with(
    model: &ModelServer,
    claude: &Path,
    ports: (u16, u16),
    agent_env: &[String],
    extra: &[&str],
) -> Hive {
    let agent_ports = format!("{}-{}", ports.0 + 1, ports.1);
    let mut env = vec![
        format!("ANTHROPIC_BASE_URL={}", model.url()),
        "ANTHROPIC_API_KEY=test".to_owned(),
        format!("HIVE_CLAUDE_BIN={}", claude.display()),
        "CLAUDE_CODE_MAX_RETRIES=0".to_owned(),
    ];
    env.extend(agent_env.iter().cloned());
    let manager_port = ports.0.to_string();
    let mut args = vec![
        "--manager-port",
        &manager_port,
        "--agent-ports",
        &agent_ports,
    ];
    for e in &env {
        args.extend(["--agent-env", e.as_str()]);
    }
    args.extend(extra);
    Hive::start_with(tempfile::tempdir().unwrap(), "process", &args)
}

/// The system prompt of a Messages request, as one string.
pub(crate) fn system(request: &Value) -> String {
    match &request["system"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The first model request, after the first `skip`, whose system prompt
/// carries `marker` (the agent's role), waiting up to 90 s for it.
fn next_request(model: &ModelServer, skip: usize, marker: &str) -> (usize, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let requests = model.requests();
        if let Some((i, r)) = requests
            .iter()
            .enumerate()
            .skip(skip)
            .find(|(_, r)| system(r).contains(marker))
        {
            return (i + 1, r.clone());
        }
        assert!(
            Instant::now() < deadline,
            "no model request carrying {marker:?} after #{skip}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spawns `name` (approved at once) and deploys `prompt` as its role.
pub(crate) fn spawn(hive: &Hive, name: &str) -> PathBuf {
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_spawn","name":"{name}"}}"#),
    ));
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"])),
        r#"{"version":1,"ok":true}"#
    );
    hive.state_dir().join(format!("proposed/{name}/config"))
}

/// Queues a deploy of `sha` for `name`: the approval id.
pub(crate) fn request_deploy(hive: &Hive, name: &str, sha: &str) -> i64 {
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"{name}","commit_ref":"{sha}"}}"#),
    ));
    queued["id"].as_i64().unwrap_or_else(|| panic!("{queued}"))
}

pub(crate) fn approve(hive: &Hive, id: i64) -> String {
    hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#))
}

fn is_pending(hive: &Hive, id: i64) -> bool {
    let pending = json(&hive.host(r#"{"cmd":"pending"}"#));
    pending["approvals"]
        .as_array()
        .unwrap_or_else(|| panic!("{pending}"))
        .iter()
        .any(|a| a["id"] == id)
}

fn deployed_file(hive: &Hive, name: &str) -> Value {
    let path = hive
        .state_dir()
        .join(format!("agents/{name}/control/deployed.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

pub(crate) fn status(hive: &Hive, name: &str) -> Value {
    json(&hive.host(&format!(
        r#"{{"cmd":"agent_status","scope":{{"agent_names":["{name}"]}}}}"#
    )))["agent_statuses"][0]
        .clone()
}

fn toml(model: &str) -> String {
    format!("model = \"{model}\"\nengine = \"claude\"\nprompt = \"prompt.md\"\n")
}

/// The last user message's text of a request.
fn user_text(request: &Value) -> String {
    crate::e2e::last_user_text(request)
}

#[test]
fn an_approved_model_then_role_reach_the_very_next_model_request() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|_| Reply::Text("noted".into()));
    let hive = hive(&model, &claude, (18700, 18710));
    let proposed = spawn(&hive, "coder");
    let role_a = commit(
        &proposed,
        &[
            ("agent.toml", &toml("sonnet")),
            ("prompt.md", "ROLE-ALPHA: you review code."),
        ],
        "role alpha",
    );
    let alpha_id = request_deploy(&hive, "coder", &role_a);
    assert_eq!(approve(&hive, alpha_id), r#"{"version":1,"ok":true}"#);
    let (seen, first) = next_request(&model, 0, "ROLE-ALPHA");
    assert!(
        first["model"].as_str().unwrap().contains("sonnet"),
        "{}",
        first["model"]
    );

    // A model change: the next request names it, in the same session.
    let opus = commit(&proposed, &[("agent.toml", &toml("opus"))], "use opus");
    let id = request_deploy(&hive, "coder", &opus);
    assert_eq!(approve(&hive, id), r#"{"version":1,"ok":true}"#);
    let event = crate::support::approval_resolved(&hive, id);
    assert_eq!(
        (event["status"].as_str(), event["running_sha"].as_str()),
        (Some("approved"), Some(opus.as_str()))
    );
    let (seen, next) = next_request(&model, seen, "ROLE-ALPHA");
    assert!(
        next["model"].as_str().unwrap().contains("opus"),
        "{}",
        next["model"]
    );

    // A role change: the next request carries the new role and not the
    // old, in a fresh session that opens with the handoff.
    let role_b = commit(
        &proposed,
        &[("prompt.md", "ROLE-BETA: you write docs.")],
        "role beta",
    );
    let id = request_deploy(&hive, "coder", &role_b);
    assert_eq!(approve(&hive, id), r#"{"version":1,"ok":true}"#);
    let (seen, next) = next_request(&model, seen, "ROLE-BETA");
    assert!(!system(&next).contains("ROLE-ALPHA"), "{}", system(&next));
    assert!(next["model"].as_str().unwrap().contains("opus"));
    assert!(
        user_text(&next).contains("starts a fresh session"),
        "{}",
        user_text(&next)
    );
    let earlier = next["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    assert_eq!(
        earlier, 0,
        "a fresh session carries no earlier replies: {next}"
    );

    // A rollback to the first deploy brings role alpha back the same way.
    let back = json(&hive.host(&format!(
        r#"{{"cmd":"rollback","name":"coder","id":{alpha_id}}}"#
    )));
    let back = back["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(approve(&hive, back), r#"{"version":1,"ok":true}"#);
    let (_, next) = next_request(&model, seen, "ROLE-ALPHA");
    assert!(!system(&next).contains("ROLE-BETA"));
    assert!(
        next["model"].as_str().unwrap().contains("sonnet"),
        "{}",
        next["model"]
    );
    assert_eq!(status(&hive, "coder")["deployed_sha"], role_a.as_str());
}

#[test]
fn ten_approvals_at_once_deploy_in_order_or_are_superseded() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|_| Reply::Text("noted".into()));
    let hive = hive(&model, &claude, (18720, 18730));
    let proposed = spawn(&hive, "coder");
    let mut queued = Vec::new();
    for n in 1..=10 {
        let sha = commit(
            &proposed,
            &[("prompt.md", &format!("ROLE-{n:02}: config number {n}."))],
            &format!("config {n}"),
        );
        queued.push((request_deploy(&hive, "coder", &sha), sha));
    }
    let before = model.requests().len();
    let hive_ref = &hive;
    let answers: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = queued
            .iter()
            .enumerate()
            .map(|(i, (id, _))| {
                let before = i.checked_sub(1).map(|j| queued[j].0);
                s.spawn(move || {
                    // Approved in order, each as soon as the one before it
                    // has left `pending` (its deploy has joined the lane),
                    // so all of them meet the first deploy still under way.
                    if let Some(before) = before {
                        while is_pending(hive_ref, before) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    approve(hive_ref, *id)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut deployed = Vec::new();
    for ((id, _), answer) in queued.iter().zip(&answers) {
        assert_eq!(answer, r#"{"version":1,"ok":true}"#, "#{id}");
        let event = crate::support::approval_resolved(&hive, *id);
        match event["status"].as_str() {
            Some("approved") => deployed.push(*id),
            Some("superseded") => {
                let by = event["note"].as_str().unwrap();
                assert!(by.starts_with("superseded by #"), "{event}");
            }
            other => panic!("#{id} ended {other:?}: {event}"),
        }
        assert!(event["running_sha"].is_string(), "{event}");
    }
    eprintln!(
        "ten approvals at once: {} deployed ({deployed:?}), {} superseded",
        deployed.len(),
        10 - deployed.len()
    );
    // Deploys ran in approval order, and the last approval is what runs.
    let mut sorted = deployed.clone();
    sorted.sort_unstable();
    assert_eq!(deployed, sorted);
    let (last_id, last_sha) = queued.last().unwrap();
    assert_eq!(deployed.last(), Some(last_id), "{deployed:?}");
    assert!(deployed.len() < 10, "none was superseded: {deployed:?}");
    assert_eq!(deployed_file(&hive, "coder")["sha"], last_sha.as_str());
    assert_eq!(status(&hive, "coder")["deployed_sha"], last_sha.as_str());
    let (_, next) = next_request(&model, before, "ROLE-10");
    assert!(!system(&next).contains("ROLE-09"));
    let tags = tag_names(&hive.state_dir().join("applied/coder"));
    for (id, _) in &queued {
        let failed = format!("failed/{id}");
        assert!(!tags.contains(&failed), "{tags:?}");
    }
}

#[test]
fn a_config_whose_container_dies_at_start_fails_and_the_old_one_runs() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|_| Reply::Text("noted".into()));
    let hive = hive(&model, &claude, (18740, 18750));
    let proposed = spawn(&hive, "coder");
    let good = commit(
        &proposed,
        &[
            ("agent.toml", &toml("sonnet")),
            ("prompt.md", "ROLE-GOOD: you test."),
        ],
        "good",
    );
    let id = request_deploy(&hive, "coder", &good);
    assert_eq!(approve(&hive, id), r#"{"version":1,"ok":true}"#);
    let (seen, _) = next_request(&model, 0, "ROLE-GOOD");

    // Under this config the harness's threads get the smallest stack
    // there is: it dies as soon as it starts. (Hive's own variables, such
    // as where it binds its page, are not the config's to set.)
    let broken_toml = format!("{}\n[env]\nRUST_MIN_STACK = \"1\"\n", toml("opus"));
    let broken = commit(
        &proposed,
        &[("agent.toml", &broken_toml), ("prompt.md", "ROLE-BROKEN")],
        "broken",
    );
    let id = request_deploy(&hive, "coder", &broken);
    let answer = approve(&hive, id);
    assert!(answer.contains("exited right after it started"), "{answer}");
    let event = crate::support::approval_resolved(&hive, id);
    assert_eq!(
        (event["status"].as_str(), event["running_sha"].as_str()),
        (Some("failed"), Some(good.as_str()))
    );
    let tags = tag_names(&hive.state_dir().join("applied/coder"));
    assert!(tags.contains(&format!("failed/{id}")), "{tags:?}");
    assert_eq!(deployed_file(&hive, "coder")["sha"], good.as_str());
    let row = status(&hive, "coder");
    assert_eq!(
        (row["deployed_sha"].as_str(), row["running"].as_bool()),
        (Some(good.as_str()), Some(true))
    );
    // The old config still answers: the next request is role good, sonnet.
    let (code, body) = crate::e2e::operator_send(&hive, "coder", "still there?");
    assert_eq!(code, 200, "{body}");
    let (_, next) = next_request(&model, seen, "ROLE-GOOD");
    assert!(next["model"].as_str().unwrap().contains("sonnet"));
    eventually("coder to keep running", || {
        status(&hive, "coder")["running"] == true
    });
}

fn tag_names(applied: &Path) -> Vec<String> {
    crate::support::trust_foreign_repos();
    let repo = git2::Repository::open(applied).unwrap();
    let names = repo.tag_names(None).unwrap();
    (0..names.len())
        .filter_map(|i| names.get(i).ok().flatten())
        .map(String::from)
        .collect()
}
