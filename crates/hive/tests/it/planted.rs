//! Links planted where an agent or the manager can write lead core
//! nowhere: with symbolic and hard links to host files and dirs in an
//! agent's `/state`, in the manager's `proposed/` tree and at core's own
//! names of an old layout, pause, resume, restart, rebuild, destroy, the
//! tombstone size walk, purge and spawn leave every host file as it was.

use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Hive, eventually};

const OK: &str = r#"{"version":1,"ok":true}"#;

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn running(hive: &Hive, name: &str) -> bool {
    let v = json(&hive.host(&format!(
        r#"{{"cmd":"agent_status","scope":{{"agent_names":["{name}"]}}}}"#
    )));
    v["agent_statuses"][0]["running"] == true
}

/// A host dir outside the hive with a file and a 1 MiB file in it.
struct HostFiles {
    dir: PathBuf,
}

impl HostFiles {
    fn new(root: &Path) -> HostFiles {
        let dir = root.join("host");
        std::fs::create_dir_all(dir.join("dir")).unwrap();
        std::fs::write(dir.join("victim"), "host data\n").unwrap();
        std::fs::write(dir.join("victim2"), "more host data\n").unwrap();
        std::fs::write(dir.join("dir/keep"), "kept\n").unwrap();
        std::fs::write(dir.join("big"), vec![7u8; 1 << 20]).unwrap();
        HostFiles { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every host file is as it was, and nothing was added.
    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.path("victim")).unwrap(),
            "host data\n"
        );
        assert_eq!(
            std::fs::read_to_string(self.path("victim2")).unwrap(),
            "more host data\n"
        );
        assert_eq!(
            std::fs::read_to_string(self.path("dir/keep")).unwrap(),
            "kept\n"
        );
        assert_eq!(std::fs::metadata(self.path("big")).unwrap().len(), 1 << 20);
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .chain(std::fs::read_dir(self.path("dir")).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["big", "dir", "keep", "victim", "victim2"]);
    }
}

#[test]
fn links_planted_in_an_agents_state_lead_core_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostFiles::new(dir.path());
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        "process",
        &["--manager-port", "18800", "--agent-ports", "18801-18820"],
    );
    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"coder"}"#));
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)), OK);
    assert!(running(&hive, "coder"));

    // What a hostile agent plants in its /state: the old marker names as
    // links to host files and dirs, a hard link, a link to a big file.
    let state = hive.state_dir().join("agents/coder/state");
    let control = hive.state_dir().join("agents/coder/control");
    symlink(host.path("victim"), state.join(".hive-paused")).unwrap();
    symlink(host.path("dir"), state.join(".hive")).unwrap();
    symlink(host.path("dir"), state.join("dirlink")).unwrap();
    symlink(host.path("big"), state.join("big")).unwrap();
    std::fs::hard_link(host.path("victim"), state.join("hard")).unwrap();
    std::fs::create_dir(state.join("sub")).unwrap();
    symlink(host.path("victim"), state.join("sub/link")).unwrap();
    // Core's own names in control/ (no agent can write there; as if a
    // link survived from elsewhere): replaced, never written through.
    symlink(host.path("victim"), control.join("paused")).unwrap();
    std::fs::remove_file(control.join("deployed.json")).unwrap();
    std::fs::hard_link(host.path("victim2"), control.join("deployed.json")).unwrap();

    // Pause and resume write only control/paused.
    assert_eq!(
        hive.host(r#"{"cmd":"set_paused","name":"coder","paused":true}"#),
        OK
    );
    let marker = std::fs::symlink_metadata(control.join("paused")).unwrap();
    assert!(marker.is_file(), "the planted link was replaced");
    assert_eq!(
        std::fs::read_to_string(control.join("paused")).unwrap(),
        "paused by the operator\n"
    );
    assert_eq!(
        hive.host(r#"{"cmd":"set_paused","name":"coder","paused":false}"#),
        OK
    );
    assert!(std::fs::symlink_metadata(control.join("paused")).is_err());
    assert!(
        std::fs::symlink_metadata(state.join(".hive-paused"))
            .unwrap()
            .is_symlink(),
        "core leaves the old location alone"
    );
    host.assert_untouched();

    // Restart and rebuild write deployed.json in control/ only.
    for verb in ["restart", "rebuild"] {
        assert_eq!(
            hive.host(&format!(r#"{{"cmd":"{verb}","name":"coder"}}"#)),
            OK,
            "{verb}"
        );
        let deployed = std::fs::symlink_metadata(control.join("deployed.json")).unwrap();
        assert_eq!(deployed.nlink(), 1, "the hard link was replaced");
        let file = json(&std::fs::read_to_string(control.join("deployed.json")).unwrap());
        assert_eq!(file["sha"].as_str().unwrap().len(), 40);
        host.assert_untouched();
    }

    // A tombstone's size walk counts its own files, not what links name.
    assert_eq!(hive.host(r#"{"cmd":"destroy","name":"coder"}"#), OK);
    let snapshot = json(&hive.http_get("/api/state"));
    let tombstone = snapshot["tombstones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "coder")
        .unwrap_or_else(|| panic!("no tombstone: {snapshot}"))
        .clone();
    let bytes = tombstone["state_bytes"].as_u64().unwrap();
    assert!(bytes >= 10, "the hard link is a real file: {tombstone}");
    assert!(
        bytes < 1 << 20,
        "the linked big file is not counted: {tombstone}"
    );

    // Purge removes the links, not what they name.
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"coder","purge":true}"#),
        OK
    );
    assert!(!hive.state_dir().join("agents/coder").exists());
    assert!(!hive.state_dir().join("proposed/coder").exists());
    host.assert_untouched();
}

#[test]
fn a_proposed_dir_the_manager_planted_refuses_the_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostFiles::new(dir.path());
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        "process",
        &["--manager-port", "18900", "--agent-ports", "18901-18910"],
    );
    eventually("the manager to run", || running(&hive, "manager"));
    let proposed = hive.state_dir().join("proposed");
    let mode = std::fs::metadata(&proposed).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "core's own, the manager can only read it");

    // The manager's /agents/<new> as a link to a host dir, then a spawn.
    symlink(host.path("dir"), proposed.join("evil")).unwrap();
    let queued = json(&hive.agent("manager", r#"{"cmd":"request_spawn","name":"evil"}"#));
    assert_eq!(queued["kind"], "approval_queued", "{queued}");
    let answer = json(&hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"])));
    assert_eq!(answer["ok"], false);
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.ends_with(&format!(
            "refusing {}: evil is a symbolic link planted in an agent-writable tree",
            proposed.join("evil").display()
        )),
        "{error}"
    );
    host.assert_untouched();

    // The same with the repo itself as the link, through init_config.
    std::fs::remove_file(proposed.join("evil")).unwrap();
    std::fs::create_dir(proposed.join("evil")).unwrap();
    symlink(host.path("dir"), proposed.join("evil/config")).unwrap();
    let queued = json(&hive.agent("manager", r#"{"cmd":"request_init_config","name":"evil"}"#));
    assert_eq!(queued["kind"], "approval_queued", "{queued}");
    let answer = json(&hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"])));
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .ends_with("config is a symbolic link planted in an agent-writable tree"),
        "{answer}"
    );
    host.assert_untouched();
}

#[test]
fn links_an_old_layout_left_at_cores_names_are_swept_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = HostFiles::new(dir.path());
    let hive_dir = tempfile::tempdir().unwrap();
    let agent = hive_dir.path().join("state/agents/coder");
    std::fs::create_dir_all(agent.join("state")).unwrap();
    // In the old layout the manager could write agents/<name>/.
    symlink(host.path("dir"), agent.join("control")).unwrap();
    symlink(host.path("victim"), agent.join("container.log")).unwrap();
    std::fs::hard_link(host.path("victim2"), agent.join("container.pid")).unwrap();
    let hive = Hive::start_in(hive_dir);
    for name in ["container.log", "container.pid"] {
        assert!(
            std::fs::symlink_metadata(agent.join(name)).is_err(),
            "{name}"
        );
    }
    assert!(
        std::fs::symlink_metadata(agent.join("control"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(
        hive.host(r#"{"cmd":"set_paused","name":"coder","paused":true}"#),
        OK
    );
    assert!(agent.join("control/paused").is_file());
    host.assert_untouched();
}
