//! The daemon on each sandboxing runtime the machine has: the manager and
//! an approved agent come up with the real harness inside, its page
//! reachable through the dashboard's proxy, then go.

use serde_json::Value;

use crate::support::{Hive, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn running(hive: &Hive, name: &str) -> bool {
    let v = json(&hive.host(&format!(
        r#"{{"cmd":"agent_status","scope":{{"agent_names":["{name}"]}}}}"#
    )));
    v["agent_statuses"][0]["running"] == true
}

fn logs(hive: &Hive, name: &str) -> String {
    json(&hive.host(&format!(r#"{{"cmd":"logs","name":"{name}","lines":50}}"#)))["logs"].to_string()
}

/// Whether `runtime` can run here; prints why not.
fn available(runtime: &str) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    match rt.block_on(hive_runtime::open(
        runtime,
        &hive_runtime::HiveId::of(&std::env::temp_dir()),
    )) {
        Ok(_) => true,
        Err(reason) => {
            eprintln!("skipping the {runtime} runtime: {reason}");
            false
        }
    }
}

fn spawn_and_purge(runtime: &str, ports: &str, manager_port: &str) {
    if !available(runtime) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the {runtime} runtime"
        );
        return;
    }
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        runtime,
        &["--manager-port", manager_port, "--agent-ports", ports],
    );
    eventually("the manager to run", || running(&hive, "manager"));
    eventually("the manager's harness to serve", || {
        logs(&hive, "manager").contains("serving manager")
    });

    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#));
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    assert!(running(&hive, "coder"));
    eventually("coder's harness to serve", || {
        logs(&hive, "coder").contains("serving coder")
    });
    // Both run unprivileged, as uid 100000 + their web port, which owns
    // their /state; /shared is the agents' group's.
    {
        use std::os::unix::fs::MetadataExt;
        let owner = |p: &str| std::fs::metadata(hive.state_dir().join(p)).unwrap().uid();
        let first: u32 = ports.split('-').next().unwrap().parse().unwrap();
        let manager: u32 = manager_port.parse().unwrap();
        assert_eq!(owner("agents/manager/state"), 100_000 + manager);
        assert_eq!(owner("agents/coder/state"), 100_000 + first);
        let shared = std::fs::metadata(hive.state_dir().join("shared")).unwrap();
        assert_eq!(shared.gid(), hive_core::sandbox_files::AGENT_GID);
    }
    // The harness binds its page socket in the page dir, inside the
    // sandbox; core reaches it from the host.
    let bearer = hive.bearer();
    let (status, _, body) = hive.http(
        "GET",
        "/agent/coder/api/state",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["agent"], "coder", "{body}");

    // An approved memory limit is enforced: coder comes back in a cgroup
    // with that limit.
    let toml = "model = \"sonnet\"\nengine = \"claude\"\nprompt = \"prompt.md\"\n\n\
                [resources]\nmemory = \"1G\"\n";
    let sha = crate::support::commit(
        &hive.state_dir().join("proposed/coder/config"),
        &[("agent.toml", toml)],
        "limit memory",
    );
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{sha}"}}"#),
    ));
    let id = queued["id"].as_i64().unwrap();
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    let coder = hive_proto::AgentName::parse("coder").unwrap();
    let group = std::path::Path::new("/sys/fs/cgroup/memory").join(
        hive_runtime::cgroup::group_path(&hive.state_dir().join("agents"), &coder),
    );
    eventually("coder in its memory-limited cgroup", || {
        let read = |f: &str| std::fs::read_to_string(group.join(f)).unwrap_or_default();
        read("memory.limit_in_bytes").trim() == (1u64 << 30).to_string()
            && !read("cgroup.procs").trim().is_empty()
    });

    // Stopped only once its harness serves again (a stop racing the
    // sandbox's setup waits out the grace).
    eventually("coder's harness to serve again", || {
        logs(&hive, "coder").matches("serving coder").count() >= 2
    });
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"coder","purge":true}"#),
        r#"{"version":1,"ok":true}"#
    );
    assert!(!hive.state_dir().join("agents/coder").exists());
    assert_eq!(
        hive.host(r#"{"cmd":"list"}"#),
        r#"{"version":1,"ok":true,"agents":["manager"]}"#
    );
}

#[test]
fn bwrap() {
    spawn_and_purge("bwrap", "18300-18309", "18290");
}

#[test]
fn nspawn() {
    spawn_and_purge("nspawn", "18400-18409", "18390");
}
