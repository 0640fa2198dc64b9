//! What the local engine's event stream cannot show the swarm backend: a
//! task ending on another node, and a node going down.
//!
//! The Engine's events are this node's containers plus the swarm's own
//! objects (a node's or a service's update), never another node's task
//! states: the Swarm API has no task events. So while an agent of ours has
//! a task on another node, [`TaskWatch`] reads our services' tasks every
//! [`POLL`] (one service list, one task list per agent: bounded by the
//! hive's agents), and a node event (one going down, or back) reads them at
//! once; while every agent runs here it reads nothing and waits for a
//! start or a node event. Tasks on this node are the event stream's. Each
//! report goes through the event stream's tracker ([`Exits::report`]), so
//! one death is reported once whoever sees it first.
//!
//! A node the swarm finds `down` (or `disconnected`, `unknown`) ends its
//! agents as far as core is concerned: each is reported stopped, not by
//! us, with the node's state in its words, and [`super::SwarmRuntime`]'s
//! `list` shows it stopped and failed on a node that is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{Node, NodeState};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
};
use futures_util::StreamExt;
use hive_proto::AgentName;
use tokio::sync::Notify;

use super::tasks::{self, Phase, current, phase};
use crate::docker::events::Exits;
use crate::docker::{AGENT_LABEL, HIVE_LABEL};
use crate::{HiveId, StateChange};

/// How often the tasks are read while an agent runs on another node.
const POLL: Duration = Duration::from_secs(2);

/// Pause before the node event stream is followed again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Why `node` cannot run anything now, in the swarm's words; `None` if it
/// is up (`ready`). Its availability (`drain`, `pause`) is the operator's
/// and stops nothing running.
pub fn node_down(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let state = status.state?;
    if state == NodeState::READY {
        return None;
    }
    let hostname = node
        .description
        .as_ref()
        .and_then(|d| d.hostname.clone())
        .or_else(|| node.id.clone())
        .unwrap_or_default();
    let why = status
        .message
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    Some(format!("node {hostname} is {state}{why}"))
}

/// The background watch of our tasks on other nodes; stops when dropped.
pub(super) struct TaskWatch {
    wake: Arc<Notify>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl TaskWatch {
    /// Watches `hive`'s tasks on nodes other than `local` (the swarm's id
    /// of this engine's node; `None`: every node is another).
    pub(super) fn start(
        docker: Docker,
        hive: HiveId,
        exits: Arc<Exits>,
        local: Option<String>,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let poll = Poll {
            docker: docker.clone(),
            hive,
            exits,
            local,
        };
        let tasks = [
            tokio::spawn(poll.run(wake.clone())),
            tokio::spawn(node_events(docker, wake.clone())),
        ];
        Self { wake, tasks }
    }

    /// Reads the tasks now: a start may have placed one on another node.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Wakes the watch at every node event.
async fn node_events(docker: Docker, wake: Arc<Notify>) {
    let filters = HashMap::from([("type", vec!["node"])]);
    loop {
        let options = EventsOptionsBuilder::default().filters(&filters).build();
        let mut stream = docker.events(Some(options));
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!("swarm node events: {e}; reconnecting");
                    break;
                }
            }
        }
        // Whatever happened while the stream was down is read now.
        wake.notify_one();
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

struct Poll {
    docker: Docker,
    hive: HiveId,
    exits: Arc<Exits>,
    local: Option<String>,
}

impl Poll {
    async fn run(self, wake: Arc<Notify>) {
        loop {
            let elsewhere = match self.check().await {
                Ok(elsewhere) => elsewhere,
                Err(e) => {
                    tracing::warn!("swarm task watch: {e}");
                    true
                }
            };
            if elsewhere {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = wake.notified() => {}
                }
            } else {
                wake.notified().await;
            }
        }
    }

    /// Reports the current task of each agent on another node; whether
    /// any agent has one there (live, or on a node that is down).
    async fn check(&self) -> Result<bool, bollard::errors::Error> {
        let nodes: HashMap<String, Option<String>> = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await?
            .into_iter()
            .filter_map(|n| Some((n.id.clone()?, node_down(&n))))
            .collect();
        let ours = format!("{HIVE_LABEL}={}", self.hive);
        let filters = HashMap::from([("label", vec![AGENT_LABEL, ours.as_str()])]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut elsewhere = false;
        for service in self.docker.list_services(Some(options)).await? {
            let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
            let Some(name) = labels
                .and_then(|l| l.get(AGENT_LABEL))
                .and_then(|n| AgentName::parse(n).ok())
            else {
                continue;
            };
            let id = service.id.unwrap_or_default();
            let filters = HashMap::from([("service", vec![id.as_str()])]);
            let options = ListTasksOptionsBuilder::default().filters(&filters).build();
            let tasks = self.docker.list_tasks(Some(options)).await?;
            let Some(task) = current(tasks.iter()) else {
                continue;
            };
            let Some(node) = task.node_id.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            if self.local.as_deref() == Some(node) {
                continue; // the event stream's
            }
            let Some(container) = tasks::container_id(task) else {
                elsewhere |= phase(task) != Phase::Ended;
                continue;
            };
            let expected = self.exits.stopping().contains(container);
            let change = |running, detail| StateChange {
                name: name.clone(),
                running,
                expected: running || expected,
                detail,
            };
            match (phase(task), nodes.get(node).cloned().flatten()) {
                (Phase::Ended, _) => {
                    let change = change(false, Some(tasks::describe(task)));
                    self.exits.report(change, container);
                }
                (_, Some(down)) => {
                    elsewhere = true;
                    self.exits.report(change(false, Some(down)), container);
                }
                (Phase::Running, None) => {
                    elsewhere = true;
                    self.exits.report(change(true, None), container);
                }
                (Phase::Unplaced | Phase::Starting, None) => elsewhere = true,
            }
        }
        Ok(elsewhere)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node as the Engine answers `GET /nodes/{id}` (28.x), in `state`.
    fn node(state: &str, message: &str) -> Node {
        let json = format!(
            r#"{{"ID":"x4j0q2wd8m5o1b9i6n7c3e2lk","Version":{{"Index":9}},
            "CreatedAt":"2026-11-29T15:20:01.123456789Z","UpdatedAt":"2026-11-29T15:20:01.7Z",
            "Spec":{{"Labels":{{}},"Role":"manager","Availability":"active"}},
            "Description":{{"Hostname":"node-b","Platform":{{"Architecture":"x86_64","OS":"linux"}},
              "Resources":{{"NanoCPUs":2000000000,"MemoryBytes":25769803776}},
              "Engine":{{"EngineVersion":"28.5.1","Plugins":[]}},
              "TLSInfo":{{"TrustRoot":"","CertIssuerSubject":"","CertIssuerPublicKey":""}}}},
            "Status":{{"State":"{state}","Message":"{message}","Addr":"10.0.0.2"}},
            "ManagerStatus":{{"Leader":true,"Reachability":"reachable","Addr":"10.0.0.2:2377"}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn a_node_is_down_unless_ready_in_the_swarms_words() {
        assert_eq!(node_down(&node("ready", "")), None);
        assert_eq!(
            node_down(&node("down", "heartbeat failure")).as_deref(),
            Some("node node-b is down (heartbeat failure)")
        );
        assert_eq!(
            node_down(&node("disconnected", "")).as_deref(),
            Some("node node-b is disconnected")
        );
        assert_eq!(
            node_down(&node("unknown", "")).as_deref(),
            Some("node node-b is unknown")
        );
    }
}
