//! Each agent's status row as clients see it, and who hears of a change.
//!
//! [`Status`] builds a row from the agent's record and the last known
//! state of its container (a cache lifecycle refreshes from the runtime),
//! and publishes it to `subscribe_agent_status` streams and the dashboard.
//! It reads the runtime's answers, never the runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use hive_proto::{AgentName, AgentStatusRow, DashboardEvent, MANAGER_AGENT, Scope};
use hive_runtime::ContainerStatus;
use hive_store::{AgentRecord, Store};
use tokio::sync::broadcast;

use crate::error::{Error, Result};
use crate::events::DashboardBus;

/// Status rows a slow `subscribe_agent_status` client may fall behind.
const STATUS_CHANNEL_CAPACITY: usize = 256;

/// The record of a known agent, or [`Error::UnknownAgent`].
pub fn require_agent(store: &Store, name: &AgentName) -> Result<AgentRecord> {
    store
        .agent(name.as_str())?
        .ok_or_else(|| Error::UnknownAgent(name.clone()))
}

/// Agents' status rows and the channel that streams their changes.
pub struct Status {
    store: Store,
    /// Where each agent's kept checkpoint is (`crate::checkpoint`).
    paths: crate::Paths,
    dashboard: Arc<DashboardBus>,
    /// The dashboard's bound address, for building agent URLs.
    dashboard_addr: Option<SocketAddr>,
    /// Whether the hive runs containers at all (see [`Status::is_kept_state`]).
    has_runtime: bool,
    tx: broadcast::Sender<AgentStatusRow>,
    /// Last known container states, by agent name.
    containers: Mutex<HashMap<String, ContainerStatus>>,
}

impl Status {
    pub fn new(
        store: Store,
        paths: crate::Paths,
        dashboard: Arc<DashboardBus>,
        dashboard_addr: Option<SocketAddr>,
        has_runtime: bool,
    ) -> Self {
        let (tx, _) = broadcast::channel(STATUS_CHANNEL_CAPACITY);
        Self {
            store,
            paths,
            dashboard,
            dashboard_addr,
            has_runtime,
            tx,
            containers: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn containers(&self) -> MutexGuard<'_, HashMap<String, ContainerStatus>> {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the cache with the runtime's full listing.
    pub(crate) fn set_containers(&self, list: Vec<ContainerStatus>) {
        let mut cache = self.containers();
        cache.clear();
        cache.extend(list.into_iter().map(|s| (s.name.to_string(), s)));
    }

    /// The last known state of `name`'s container.
    pub fn container_status(&self, name: &str) -> Option<ContainerStatus> {
        self.containers().get(name).cloned()
    }

    /// The status row of one agent.
    pub fn row(&self, record: &AgentRecord) -> Result<AgentStatusRow> {
        // The page is proxied by the dashboard (see `http::agent_proxy`),
        // for agents that have a container.
        let url = record
            .port
            .filter(|_| record.has_container)
            .and(self.dashboard_addr)
            .map(|addr| format!("http://{addr}/agent/{}/", record.name));
        let container = self.container_status(&record.name);
        let checkpoint = AgentName::parse(&record.name)
            .ok()
            .and_then(|name| crate::checkpoint::last(&self.paths, &name));
        Ok(AgentStatusRow {
            name: record.name.clone(),
            running: container.as_ref().is_some_and(|c| c.running),
            failed: container.as_ref().is_some_and(|c| c.failed),
            needs_update: record.needs_update,
            needs_login: record.needs_login,
            deployed_sha: record.deployed_sha.clone(),
            pending_reminders: self.store.pending_reminder_count(&record.name)?,
            paused: record.paused,
            parent: record.parent.clone(),
            active_model: record.active_model.clone(),
            status_text: record.status_text.clone(),
            status_set_at: record.status_set_at,
            url,
            node_down: container
                .as_ref()
                .and_then(|c| c.node.as_ref())
                .is_some_and(|n| n.down),
            // Where it runs; where its state is pinned while it does not.
            node: container
                .and_then(|c| c.node)
                .map(|n| n.hostname)
                .or_else(|| record.node.clone()),
            checkpoint_at: checkpoint.map(|c| c.taken_at),
            checkpoint_bytes: checkpoint.map(|c| c.bytes),
        })
    }

    /// Status rows of the agents in `scope` (every agent when empty). An
    /// agent destroyed with its state kept has no row: it is not a stopped
    /// agent but a tombstone (`list` still names it).
    pub fn rows(&self, scope: &Scope) -> Result<Vec<AgentStatusRow>> {
        let records = if scope.is_all() {
            self.store.agents()?
        } else {
            scope
                .agent_names
                .iter()
                .map(|n| require_agent(&self.store, n))
                .collect::<Result<_>>()?
        };
        records
            .iter()
            .filter(|r| !self.is_kept_state(r))
            .map(|r| self.row(r))
            .collect()
    }

    /// Whether `record` is kept state without a container (destroyed, or a
    /// state dir this hive found on disk): the dashboard's tombstones. A
    /// hive without a runtime has no containers at all, so none of its
    /// agents is a tombstone there.
    pub fn is_kept_state(&self, record: &AgentRecord) -> bool {
        self.has_runtime && !record.has_container && record.name != MANAGER_AGENT
    }

    /// Publishes an agent's current status to status subscribers and the
    /// dashboard. Failures are logged: a missed frame must not fail the
    /// mutation that caused it.
    pub fn publish(&self, name: &str) {
        let (row, kept) = match self.store.agent(name) {
            Ok(Some(record)) => (self.row(&record), self.is_kept_state(&record)),
            Ok(None) => return,
            Err(e) => (Err(e.into()), false),
        };
        match row {
            Ok(row) => {
                // Kept state has no `agent_status` row, so no change of one
                // either (the dashboard moves it to its tombstones).
                if !kept {
                    let _ = self.tx.send(row.clone());
                }
                self.dashboard
                    .emit(|seq| DashboardEvent::ContainerStateChanged {
                        seq,
                        container: row,
                    });
            }
            Err(e) => tracing::warn!(agent = name, "status not published: {e}"),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AgentStatusRow> {
        self.tx.subscribe()
    }
}
