//! A temp hive layout and a spec builder shared by every backend's tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_proto::AgentName;
use hive_runtime::{ContainerSpec, StateChange};
use tokio::sync::broadcast;

pub struct Layout {
    pub dir: tempfile::TempDir,
}

impl Layout {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A spec running `program args` for `name`, with its dirs created.
    pub fn spec(&self, name: &str, program: &str, args: &[&str]) -> ContainerSpec {
        let name = AgentName::parse(name).unwrap();
        let agent_dir = self.root().join("agents").join(name.as_str());
        let state_dir = agent_dir.join("state");
        let shared_dir = self.root().join("shared");
        let socket = self.root().join("run").join(name.as_str()).join("mcp.sock");
        for dir in [&state_dir, &shared_dir, &socket.parent().unwrap().to_path_buf()] {
            std::fs::create_dir_all(dir).unwrap();
        }
        // A stand-in for the agent socket: a file is enough to bind.
        std::fs::write(&socket, "").unwrap();
        ContainerSpec {
            name,
            program: PathBuf::from(program),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("EXTRA".into(), "1".into())],
            state_dir,
            shared_dir,
            socket,
            binds: Vec::new(),
            log_path: agent_dir.join("container.log"),
            web_port: 8100,
            image: None,
        }
    }
}

/// The next change for `name`, within 10 s.
pub async fn next_change(rx: &mut broadcast::Receiver<StateChange>, name: &str) -> StateChange {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no state change within 10 s")
            .unwrap();
        if change.name.as_str() == name {
            return change;
        }
    }
}

/// Polls `check` until it holds or 10 s pass.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
