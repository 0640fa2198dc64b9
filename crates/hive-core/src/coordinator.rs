//! Shared state of the daemon: the store, the paths, the event channels and
//! the set of bound agent sockets.
//!
//! Everything a socket handler, the scheduler or the dashboard does goes
//! through one `Arc<Coordinator>`; mutations publish what they changed on
//! the dashboard bus and on the agent-status channel that
//! `subscribe_agent_status` streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use hive_proto::dashboard::TransientKind;
use hive_proto::{AgentName, AgentStatusRow, DashboardEvent, HelperEvent, MANAGER_AGENT, Scope};
use hive_runtime::{ContainerStatus, Runtime};
use hive_store::{AgentRecord, Store};
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;

use crate::Paths;
use crate::error::{Error, Result};
use crate::events::DashboardBus;

/// Web UI ports: the manager's, and the range other agents draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub manager: u16,
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            manager: 8000,
            first: 8100,
            last: 8999,
        }
    }
}

/// Status rows a slow `subscribe_agent_status` client may fall behind.
const STATUS_CHANNEL_CAPACITY: usize = 256;

/// How agents' containers are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `hive` binary every container runs.
    pub hive_bin: PathBuf,
    /// The engine CLI every container gets (see [`crate::engine`]).
    pub engine_bin: Option<PathBuf>,
    /// The codex CLI every container gets, for `engine = "codex"`.
    pub codex_bin: Option<PathBuf>,
    /// The agent environment as the daemon started (env file, then
    /// `--agent-env`): its model endpoint is the egress proxy's.
    pub agent_env: Vec<(String, String)>,
    /// The `--agent-env` pairs alone, laid over `agent.env` read again at
    /// every container create ([`crate::engine::agent_env`]).
    pub agent_env_args: Vec<(String, String)>,
    pub ports: PortRange,
    /// Where applied config repos are mirrored, if anywhere.
    pub mirror: Option<hive_config::MirrorConfig>,
    /// The operator's dashboard credential (given, or generated at start
    /// and written to `<run-dir>/operator-token`): every dashboard request
    /// presents it.
    pub operator_token: String,
}

pub struct Coordinator {
    pub store: Store,
    pub paths: Paths,
    pub dashboard: DashboardBus,
    /// The dashboard's bound address, for building agent URLs.
    pub dashboard_addr: Option<SocketAddr>,
    /// The container backend; `None` runs the hive without containers.
    pub runtime: Option<Arc<dyn Runtime>>,
    pub settings: Settings,
    /// Every agent's proposed and applied config repos.
    pub config: hive_config::ConfigRepos,
    /// The egress proxies' model endpoint and each agent's policy.
    pub egress: Arc<crate::egress::Egress>,
    status_tx: broadcast::Sender<AgentStatusRow>,
    shutdown: watch::Sender<bool>,
    /// Accept loops of bound agent sockets, by agent name.
    pub(crate) agent_sockets: Mutex<HashMap<AgentName, AbortHandle>>,
    /// Lifecycle actions in flight, with their start time.
    transients: Mutex<HashMap<AgentName, (TransientKind, i64)>>,
    /// Last known container states, by agent name.
    containers: Mutex<HashMap<String, ContainerStatus>>,
    /// Per-agent deploy queues and the harness reports deploys wait for.
    pub(crate) deploys: crate::deploys::DeployLanes,
    /// Each agent's turn state and last lifecycle action, for the dashboard.
    pub activity: crate::activity::Activity,
}

impl Coordinator {
    pub fn new(
        store: Store,
        paths: Paths,
        dashboard_addr: Option<SocketAddr>,
        runtime: Option<Arc<dyn Runtime>>,
        settings: Settings,
    ) -> Self {
        let (status_tx, _) = broadcast::channel(STATUS_CHANNEL_CAPACITY);
        let (shutdown, _) = watch::channel(false);
        let egress = crate::egress::Egress::new(
            &settings.agent_env,
            dashboard_addr.into_iter().collect(),
            Some(hive_config::ConfigRepos::new(&paths.state_dir)),
        );
        Self {
            config: hive_config::ConfigRepos::new(&paths.state_dir),
            egress: Arc::new(egress),
            store,
            paths,
            dashboard: DashboardBus::default(),
            dashboard_addr,
            runtime,
            settings,
            status_tx,
            shutdown,
            agent_sockets: Mutex::new(HashMap::new()),
            transients: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            deploys: crate::deploys::DeployLanes::default(),
            activity: crate::activity::Activity::default(),
        }
    }

    pub(crate) fn transients(&self) -> MutexGuard<'_, HashMap<AgentName, (TransientKind, i64)>> {
        self.transients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn containers(&self) -> MutexGuard<'_, HashMap<String, ContainerStatus>> {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks every task to stop.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Coordinator::shut_down`] has been called.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which is shutdown too.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// The record of a known agent, or [`Error::UnknownAgent`].
    pub fn require_agent(&self, name: &AgentName) -> Result<AgentRecord> {
        self.store
            .agent(name.as_str())?
            .ok_or_else(|| Error::UnknownAgent(name.clone()))
    }

    /// The status row of one agent.
    pub fn status_row(&self, record: &AgentRecord) -> Result<AgentStatusRow> {
        // The page is proxied by the dashboard (see `http::agent_proxy`),
        // for agents that have a container.
        let url = record
            .port
            .filter(|_| record.has_container)
            .and(self.dashboard_addr)
            .map(|addr| format!("http://{addr}/agent/{}/", record.name));
        let container = self.container_status(&record.name);
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
            // Where it runs; where its state is pinned while it does not.
            node: container
                .and_then(|c| c.node)
                .map(|n| n.hostname)
                .or_else(|| record.node.clone()),
        })
    }

    /// Status rows of the agents in `scope` (every agent when empty). An
    /// agent destroyed with its state kept has no row: it is not a stopped
    /// agent but a tombstone (`list` still names it).
    pub fn agent_statuses(&self, scope: &Scope) -> Result<Vec<AgentStatusRow>> {
        let records = if scope.is_all() {
            self.store.agents()?
        } else {
            scope
                .agent_names
                .iter()
                .map(|n| self.require_agent(n))
                .collect::<Result<_>>()?
        };
        records
            .iter()
            .filter(|r| !self.is_kept_state(r))
            .map(|r| self.status_row(r))
            .collect()
    }

    /// Whether `record` is kept state without a container (destroyed, or a
    /// state dir this hive found on disk): the dashboard's tombstones. A
    /// hive without a runtime has no containers at all, so none of its
    /// agents is a tombstone there.
    pub fn is_kept_state(&self, record: &AgentRecord) -> bool {
        self.runtime.is_some() && !record.has_container && record.name != MANAGER_AGENT
    }

    /// Publishes an agent's current status to status subscribers and the
    /// dashboard. Failures are logged: a missed frame must not fail the
    /// mutation that caused it.
    pub fn publish_status(&self, name: &str) {
        let (row, kept) = match self.store.agent(name) {
            Ok(Some(record)) => (self.status_row(&record), self.is_kept_state(&record)),
            Ok(None) => return,
            Err(e) => (Err(e.into()), false),
        };
        match row {
            Ok(row) => {
                // Kept state has no `agent_status` row, so no change of one
                // either (the dashboard moves it to its tombstones).
                if !kept {
                    let _ = self.status_tx.send(row.clone());
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

    pub fn subscribe_status(&self) -> broadcast::Receiver<AgentStatusRow> {
        self.status_tx.subscribe()
    }

    /// Pushes a helper event into the manager's inbox.
    pub fn notify_manager(&self, event: &HelperEvent) {
        if let Err(e) = self.store.push_helper_event(MANAGER_AGENT, event) {
            tracing::error!(?event, "helper event not delivered to the manager: {e}");
        }
    }
}
