//! The whole agent lifecycle, implemented once for every surface.
//!
//! spawn → (start | stop | restart | rebuild)* → destroy [purge]. Each
//! action holds a transient (a [`TransientGuard`], cleared on drop) so the
//! dashboard shows a spinner and the crash watch knows a stop was meant;
//! each one emits its helper event to the manager and the state events the
//! dashboard needs. Only this module calls the runtime: [`Lifecycle`]
//! holds it, with the components an action reports to (status, tasks,
//! the manager's inbox) and reads from (config, ports, deploy reports).
//!
//! The agent's pause marker and starting or stopping a scope of agents
//! are here too: each is a state of the agent's container as the harness
//! or the runtime sees it.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hive_config::Deployed;
use hive_proto::dashboard::{TombstoneView, TransientKind};
use hive_proto::{AgentName, DashboardEvent, HelperEvent, KeptRunning, SYSTEM_SENDER, Scope};
use hive_runtime::follow::OutputWatch;
use hive_runtime::{Bind, ContainerSpec, ContainerStatus, Runtime, StateChange};
use hive_store::Store;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use crate::Paths;
use crate::activity::Activity;
use crate::checkpoint::{self, Checkpoint};
use crate::config::Configs;
use crate::deploys::DeployLanes;
use crate::egress::Egress;
use crate::error::{Error, Result};
use crate::events::{DashboardBus, notify_manager};
use crate::ports::AgentPorts;
use crate::sandbox_files::agent_user;
use crate::settings::Settings;
use crate::status::{Status, require_agent};
use crate::tasks::Tasks;

/// How long a stopping container gets after SIGTERM before SIGKILL (the
/// runtime's: swarm fixes it in each service ahead of any stop).
pub const STOP_GRACE: Duration = hive_runtime::STOP_GRACE;
/// The grace each container gets when the daemon shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a rebuild waits for another action on the same agent.
const BUSY_WAIT: Duration = Duration::from_secs(120);
/// How long `hive checkpoint` and a move wait for a checkpoint.
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a move waits for the moved agent's harness to restore its
/// checkpoint before it moves it back.
const MOVE_RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

/// Binds an agent's socket and serves it, answering the accept loop's
/// handle. The socket's handler needs all of core (which holds
/// lifecycle), so the daemon's assembly gives lifecycle this function
/// (`agent_server::serve_agent_socket`) rather than lifecycle naming it.
pub type SocketServer = Box<dyn Fn(&AgentName) -> anyhow::Result<AbortHandle> + Send + Sync>;

/// The container backend as the daemon selected it; `None` runs the hive
/// without containers. Others hand it to lifecycle without using it.
pub type Backend = Option<Arc<dyn Runtime>>;

/// The backend's name (`docker`, `bwrap`, …), for components built
/// before lifecycle (see [`crate::ports::AgentPorts::new`]).
pub fn backend_name(runtime: &Backend) -> Option<&'static str> {
    runtime.as_ref().map(|r| r.name())
}

/// Where an agent's state lives under a runtime that schedules across
/// hosts ([`Lifecycle::state_placement`], [`Lifecycle::repin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePlacement {
    /// The node (its id) it is pinned to; `None` before its first start.
    pub node: Option<String>,
    /// Its state volume's generation (see `hive_runtime::Placement`).
    pub generation: u32,
}

/// A verb applied to a scope of agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeVerb {
    Start,
    Stop,
}

/// What lifecycle is built from.
pub struct Parts {
    pub store: Store,
    pub paths: Paths,
    pub settings: Settings,
    pub dashboard_addr: Option<SocketAddr>,
    pub runtime: Backend,
    pub dashboard: Arc<DashboardBus>,
    pub egress: Arc<Egress>,
    pub activity: Arc<Activity>,
    pub deploys: Arc<DeployLanes>,
    pub status: Arc<Status>,
    pub tasks: Tasks,
    pub configs: Arc<Configs>,
    pub ports: AgentPorts,
    pub serve_socket: SocketServer,
}

/// The agent lifecycle: the one holder of the runtime.
pub struct Lifecycle {
    store: Store,
    paths: Paths,
    settings: Settings,
    /// The dashboard's address, which an agent's page links to.
    dashboard_addr: Option<SocketAddr>,
    /// The container backend; `None` runs the hive without containers.
    runtime: Backend,
    dashboard: Arc<DashboardBus>,
    /// A recreated container's egress policy holds from its start.
    egress: Arc<Egress>,
    activity: Arc<Activity>,
    /// The harness reports a rebuild waits for.
    deploys: Arc<DeployLanes>,
    status: Arc<Status>,
    /// Claims end with their holder's container.
    tasks: Tasks,
    configs: Arc<Configs>,
    ports: AgentPorts,
    serve_socket: SocketServer,
    /// Accept loops of bound agent sockets, by agent name.
    agent_sockets: Mutex<HashMap<AgentName, AbortHandle>>,
    /// Lifecycle actions in flight, with their start time.
    transients: Mutex<HashMap<AgentName, (TransientKind, i64)>>,
}

/// A lifecycle action in flight; dropping it clears the transient.
pub struct TransientGuard {
    lifecycle: Arc<Lifecycle>,
    name: AgentName,
    kind: TransientKind,
}

impl TransientGuard {
    /// Ends the action, recording its result for the dashboard (the
    /// transient itself may be too brief for anyone to see).
    pub fn finish<T>(self, result: &Result<T>) {
        let error = result.as_ref().err().map(ToString::to_string);
        let action = self.lifecycle.activity.action_finished(
            self.name.as_str(),
            self.kind,
            error.as_deref(),
            hive_store::now_unix(),
        );
        self.lifecycle
            .dashboard
            .emit(|seq| DashboardEvent::LifecycleFinished { seq, action });
    }
}

impl Drop for TransientGuard {
    fn drop(&mut self) {
        self.lifecycle.transients().remove(&self.name);
        let name = self.name.to_string();
        self.lifecycle
            .dashboard
            .emit(|seq| DashboardEvent::TransientCleared { seq, name });
    }
}

fn transient_word(kind: TransientKind) -> &'static str {
    match kind {
        TransientKind::Spawning => "spawning",
        TransientKind::Starting => "starting",
        TransientKind::Stopping => "stopping",
        TransientKind::Restarting => "restarting",
        TransientKind::Rebuilding => "rebuilding",
        TransientKind::Destroying => "destroying",
        TransientKind::Moving => "moving",
    }
}

impl Lifecycle {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            store,
            paths,
            settings,
            dashboard_addr,
            runtime,
            dashboard,
            egress,
            activity,
            deploys,
            status,
            tasks,
            configs,
            ports,
            serve_socket,
        } = parts;
        Self {
            store,
            paths,
            settings,
            dashboard_addr,
            runtime,
            dashboard,
            egress,
            activity,
            deploys,
            status,
            tasks,
            configs,
            ports,
            serve_socket,
            agent_sockets: Mutex::new(HashMap::new()),
            transients: Mutex::new(HashMap::new()),
        }
    }

    /// The lifecycle actions in flight, with their start time.
    pub(crate) fn transients(&self) -> MutexGuard<'_, HashMap<AgentName, (TransientKind, i64)>> {
        self.transients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn agent_sockets(&self) -> MutexGuard<'_, HashMap<AgentName, AbortHandle>> {
        self.agent_sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Binds `name`'s socket and serves it until shutdown; a socket this
    /// daemon already serves is left as it is.
    pub fn bind_socket(&self, name: &AgentName) -> anyhow::Result<()> {
        let bound = self
            .agent_sockets()
            .get(name)
            .is_some_and(|task| !task.is_finished());
        if bound {
            return Ok(());
        }
        let task = (self.serve_socket)(name)?;
        if let Some(previous) = self.agent_sockets().insert(name.clone(), task) {
            previous.abort();
        }
        Ok(())
    }

    /// Stops serving `name`'s socket.
    fn close_socket(&self, name: &AgentName) {
        if let Some(task) = self.agent_sockets().remove(name) {
            task.abort();
        }
    }

    /// Stops serving every agent socket (at shutdown).
    pub fn close_sockets(&self) {
        for (_, task) in self.agent_sockets().drain() {
            task.abort();
        }
    }

    fn runtime_for(&self, verb: &'static str) -> Result<Arc<dyn Runtime>> {
        self.runtime.clone().ok_or(Error::NoRuntime { verb })
    }

    /// Refuses `verb` when the hive runs with no container backend.
    pub fn require_runtime(&self, verb: &'static str) -> Result<()> {
        self.runtime_for(verb).map(drop)
    }

    /// The container backend's name (`docker`, `bwrap`, …), if any.
    pub fn runtime_name(&self) -> Option<&'static str> {
        self.runtime.as_ref().map(|r| r.name())
    }

    /// Marks `name` as busy with `kind`, refusing a second action on it.
    pub fn begin(
        self: &Arc<Self>,
        name: &AgentName,
        kind: TransientKind,
    ) -> Result<TransientGuard> {
        let since = hive_store::now_unix();
        {
            let mut transients = self.transients();
            if let Some((busy, _)) = transients.get(name) {
                return Err(Error::refused(format!(
                    "{name} is already {}; try again when that finishes",
                    transient_word(*busy)
                )));
            }
            transients.insert(name.clone(), (kind, since));
        }
        let event_name = name.to_string();
        self.dashboard.emit(|seq| DashboardEvent::TransientSet {
            seq,
            name: event_name,
            transient_kind: kind,
            since_unix: since,
        });
        Ok(TransientGuard {
            lifecycle: self.clone(),
            name: name.clone(),
            kind,
        })
    }

    /// [`Lifecycle::begin`], waiting (bounded) for an action already in
    /// flight on `name` to finish instead of refusing.
    async fn begin_when_free(
        self: &Arc<Self>,
        name: &AgentName,
        kind: TransientKind,
    ) -> Result<TransientGuard> {
        let deadline = tokio::time::Instant::now() + BUSY_WAIT;
        loop {
            match self.begin(name, kind) {
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%name, "waiting to {}: {e}", transient_word(kind));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until `name`'s new harness reports in (on a connection opened
    /// after `since`, when its container was about to start); fails when
    /// its container exits first or nothing comes within
    /// [`crate::deploys::HEALTH_BOUND`].
    async fn await_healthy(
        &self,
        runtime: &dyn Runtime,
        name: &AgentName,
        since: tokio::time::Instant,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + crate::deploys::HEALTH_BOUND;
        loop {
            if self.deploys.reported_since(name, since) {
                return Ok(());
            }
            let running = runtime
                .list()
                .await
                .map_err(Error::from)?
                .iter()
                .any(|s| &s.name == name && s.running);
            if !running {
                let tail = self.logs(name, 5).await.unwrap_or_default().join("\n");
                return Err(Error::refused(format!(
                    "{name}'s container exited right after it started: {}",
                    if tail.is_empty() {
                        "no output"
                    } else {
                        tail.as_str()
                    }
                )));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(Error::refused(format!(
                    "{name}'s harness did not report in within {}s of its start",
                    crate::deploys::HEALTH_BOUND.as_secs()
                )));
            }
            self.deploys
                .next_report(left.min(Duration::from_millis(250)))
                .await;
        }
    }

    /// The spec of `name`'s container under the `deployed` config.
    pub fn container_spec(
        &self,
        name: &AgentName,
        web_port: u16,
        deployed: &Deployed,
    ) -> Result<ContainerSpec> {
        let config = &deployed.config;
        let role = if name.is_manager() {
            "manager"
        } else {
            "agent"
        };
        let mut binds = if name.is_manager() {
            vec![
                // The proposed repos only: the manager never sees another
                // agent's state or what core keeps per agent.
                Bind {
                    host: self.paths.proposed_dir(),
                    container: "/agents".into(),
                    read_only: false,
                },
                Bind {
                    host: self.paths.state_dir.join("applied"),
                    container: "/applied".into(),
                    read_only: true,
                },
            ]
        } else if self.settings.link.is_some()
            && self.runtime.as_ref().is_some_and(|r| r.multi_host())
        {
            // It may run on a node without core's files: no view of the
            // manager's live work tree; its deployed config reaches it
            // over the link's control channel.
            Vec::new()
        } else {
            vec![Bind {
                host: self.paths.agent_config(name),
                container: format!("/agents/{name}/config").into(),
                read_only: true,
            }]
        };
        binds.extend(config.mounts.iter().map(|m| Bind {
            host: m.host_path.clone(),
            container: m.container_path.clone(),
            read_only: m.read_only,
        }));
        // The codex CLI, bound like claude's (read-only; the `process`
        // backend binds nothing and passes the host path). First in the
        // environment: an operator's explicit HIVE_CODEX_BIN wins.
        let mut env = Vec::new();
        if let Some(codex) = &self.settings.codex_bin {
            if self.runtime.as_ref().is_some_and(|r| r.name() == "process") {
                env.push((
                    crate::engine::CODEX_BIN_ENV.to_owned(),
                    codex.display().to_string(),
                ));
            } else {
                if self.ports.runs_unprivileged() {
                    crate::engine::warn_unusable(codex);
                }
                binds.push(Bind {
                    host: codex.clone(),
                    container: crate::engine::CODEX_BIN.into(),
                    read_only: true,
                });
                env.push((
                    crate::engine::CODEX_BIN_ENV.to_owned(),
                    crate::engine::CODEX_BIN.to_owned(),
                ));
            }
        }
        env.extend(crate::engine::agent_env(&self.paths, &self.settings)?);
        if let Some(addr) = self.dashboard_addr {
            // The agent's page links questions to the operator's dashboard.
            env.push(("HIVE_DASHBOARD_URL".to_owned(), format!("http://{addr}/")));
        }
        env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(ContainerSpec {
            name: name.clone(),
            program: self.settings.hive_bin.clone(),
            engine_bin: self.settings.engine_bin.clone(),
            args: ["agent", "serve", "--role", role]
                .map(String::from)
                .to_vec(),
            env,
            state_dir: self.paths.agent_state(name),
            shared_dir: self.paths.shared(),
            socket: self.paths.agent_socket(name),
            binds,
            log_path: self.kept_log(name),
            image: config.image.clone(),
            egress_socket: self.paths.egress_socket(name),
            page_dir: self.paths.page_dir(name),
            control_dir: self.paths.control_dir(name),
            etc_dir: self.paths.etc_dir(name),
            user: self.ports.runs_unprivileged().then(|| agent_user(web_port)),
            limits: hive_runtime::Limits {
                memory_bytes: config.resources.memory_bytes(),
                // Checked positive and finite by the config checker.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                cpu_millis: config
                    .resources
                    .cpu
                    .map(|cores| (cores * 1000.0).round().max(1.0) as u32),
            },
            placement: {
                let record = self.store.agent(name.as_str())?;
                hive_runtime::Placement {
                    constraints: config.placement.all_constraints(),
                    node: record.as_ref().and_then(|a| a.node.clone()),
                    generation: record.map_or(0, |a| a.generation),
                }
            },
            transport: match &self.settings.link {
                None => hive_runtime::Transport::Unix,
                Some(link) => hive_runtime::Transport::Tls(hive_runtime::TlsLink {
                    addr: link.addr.clone(),
                    credentials: crate::link::credential_dir(&self.paths, name),
                    link_dir: self.paths.link_dir(name),
                    network: link.network.clone(),
                }),
            },
        })
    }

    /// Builds `name`'s spec, readies the host files it binds (owned by the
    /// agent's user where it has one) and defines the container.
    async fn create_container(
        &self,
        runtime: &dyn Runtime,
        name: &AgentName,
        port: u16,
        deployed: &Deployed,
    ) -> Result<()> {
        let spec = self.container_spec(name, port, deployed)?;
        let paths = self.paths.clone();
        let prepared = spec.clone();
        tokio::task::spawn_blocking(move || crate::sandbox_files::prepare(&paths, &prepared))
            .await
            .map_err(|e| Error::Internal(format!("prepare {name}'s files: {e}")))?
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        if let Some(link) = &self.settings.link {
            // A new container, a new credential: the previous one is cut.
            link.issue(&self.paths, name, spec.user)
                .map_err(|e| Error::Internal(format!("issue {name}'s link credential: {e:#}")))?;
        }
        runtime.create(&spec).await.map_err(Error::from)
    }

    /// Starts `name`'s container and, under a runtime that schedules
    /// across hosts, pins the agent to the node it first ran on: its state
    /// lives there, so every later container runs there or not at all
    /// (moving is an explicit operation, never a reschedule).
    async fn start_pinned(&self, runtime: &dyn Runtime, name: &AgentName) -> Result<()> {
        runtime.start(name).await.map_err(Error::from)?;
        if !runtime.multi_host()
            || self
                .store
                .agent(name.as_str())?
                .is_some_and(|a| a.node.is_some())
        {
            return Ok(());
        }
        let placed = match runtime.list().await {
            Ok(list) => list
                .into_iter()
                .find(|s| &s.name == name)
                .and_then(|s| s.node),
            Err(e) => {
                tracing::warn!(agent = %name, "listing containers to pin it failed: {e}");
                None
            }
        };
        if let Some(node) = placed {
            tracing::info!(agent = %name, node = %node.hostname, "pinned to its first node");
            self.store.set_node(name.as_str(), Some(&node.id))?;
            return Ok(());
        }
        // Unpinned, its next start could land on another node and find an
        // empty volume of the same name there: it does not run unpinned.
        if let Err(e) = runtime.stop(name, STOP_GRACE).await {
            tracing::warn!(agent = %name, "stopping an agent that could not be pinned failed: {e}");
        }
        Err(Error::refused(format!(
            "{name} started, but the node it runs on could not be learned, so it was \
             stopped rather than left without a pin to its state; start it again"
        )))
    }

    /// Pins each running agent a multi-host runtime reports on a node but
    /// the store has no pin for (a daemon that died between a first start
    /// and its pin): its state is on that node's volume now.
    fn pin_unpinned(&self, list: &[ContainerStatus]) {
        for status in list {
            let (Some(node), true) = (&status.node, status.running) else {
                continue;
            };
            let unpinned = self
                .store
                .agent(status.name.as_str())
                .ok()
                .flatten()
                .is_some_and(|a| a.node.is_none());
            if !unpinned {
                continue;
            }
            match self.store.set_node(status.name.as_str(), Some(&node.id)) {
                Ok(()) => {
                    tracing::info!(agent = %status.name, node = %node.hostname, "pinned to the node it runs on")
                }
                Err(e) => tracing::warn!(agent = %status.name, "pinning failed: {e}"),
            }
        }
    }

    /// Where `name`'s state lives under a runtime that schedules across
    /// hosts: the node it is pinned to (none before its first start) and
    /// its state volume's generation. Single-host runtimes ignore both.
    pub fn state_placement(&self, name: &AgentName) -> Result<StatePlacement> {
        let record = require_agent(&self.store, name)?;
        Ok(StatePlacement {
            node: record.node,
            generation: record.generation,
        })
    }

    /// Re-pins `name`'s state: to `node` (`None`: wherever its next start
    /// lands, which then becomes its pin; only onto a fresh volume), and,
    /// when `fresh`, onto the next generation's state volume, new and empty
    /// (the older one is kept until purge). Pinned to another node without
    /// `fresh`, the volume of its name there must already hold its state
    /// (copied by the caller). Refused while its container runs; takes effect at its
    /// next start (every start redefines the container from the spec).
    /// The building block of moving an agent, which copies its state first.
    pub fn repin(
        &self,
        name: &AgentName,
        node: Option<&str>,
        fresh: bool,
    ) -> Result<StatePlacement> {
        let current = self.state_placement(name)?;
        if self
            .status
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            return Err(Error::refused(format!(
                "{name} is running: stop it before it is re-pinned"
            )));
        }
        if node.is_none() && !fresh && current.node.is_some() {
            // Its next start could land on a node without its volume,
            // which would make an empty one of the same name there.
            return Err(Error::refused(format!(
                "{name}'s state is on its node: unpin it only onto a fresh state volume"
            )));
        }
        let generation = if fresh {
            current.generation.checked_add(1).ok_or_else(|| {
                Error::refused(format!("{name}'s state volume generation is exhausted"))
            })?
        } else {
            current.generation
        };
        self.store.set_placement(name.as_str(), node, generation)?;
        tracing::info!(agent = %name, node = node.unwrap_or("(any)"), generation, "re-pinned");
        Ok(StatePlacement {
            node: node.map(str::to_owned),
            generation,
        })
    }

    /// Re-reads every container's state from the runtime.
    pub async fn refresh_containers(&self) {
        let Some(runtime) = &self.runtime else { return };
        match runtime.list().await {
            Ok(list) => {
                if runtime.multi_host() {
                    self.pin_unpinned(&list);
                }
                self.status.set_containers(list);
            }
            Err(e) => tracing::warn!("listing containers failed: {e}"),
        }
    }

    /// Refuses to spawn `name` over an agent that has a container (or one
    /// the runtime reports running): only a new name or a tombstone spawns.
    /// `request_spawn` asks the same at request time.
    pub(crate) fn refuse_existing(&self, name: &AgentName) -> Result<()> {
        let has_container = self
            .store
            .agent(name.as_str())?
            .is_some_and(|record| record.has_container);
        let running = self
            .status
            .container_status(name.as_str())
            .is_some_and(|c| c.running);
        if has_container || running {
            return Err(Error::refused(format!(
                "{name} already has a container: start, restart or rebuild it"
            )));
        }
        Ok(())
    }

    /// Creates and starts `name`'s container: a new agent, or a tombstone
    /// revived with its kept state. The manager is only spawned by core.
    pub async fn spawn(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        let runtime = self.runtime_for("spawn")?;
        self.refuse_existing(name)?;
        let guard = self.begin(name, TransientKind::Spawning)?;
        let result = self.spawn_inner(&*runtime, name).await;
        guard.finish(&result);
        self.after_change(name).await;
        self.publish_tombstones();
        if !name.is_manager() {
            notify_manager(
                &self.store,
                &HelperEvent::Spawned {
                    agent: name.to_string(),
                    ok: result.is_ok(),
                    note: result.as_ref().err().map(ToString::to_string),
                },
            );
        }
        if result.is_ok() {
            self.kick(name, "spawned");
        }
        result
    }

    async fn spawn_inner(self: &Arc<Self>, runtime: &dyn Runtime, name: &AgentName) -> Result<()> {
        self.paths
            .create_agent_dirs(name)
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        self.store.register_agent(name)?;
        let port = self.ports.web_port(name)?;
        self.bind_socket(name)
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        let deployed = self.configs.ensure(name).await?;
        self.create_container(runtime, name, port, &deployed)
            .await?;
        self.store.set_has_container(name.as_str(), true)?;
        self.start_pinned(runtime, name).await?;
        self.store.set_want_running(name.as_str(), true)?;
        Ok(())
    }

    /// Starts a stopped agent (recreating its container definition from the
    /// current spec).
    pub async fn start(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        let runtime = self.prepare("start", name)?;
        let guard = self.begin(name, TransientKind::Starting)?;
        let result = self.start_inner(&*runtime, name).await;
        guard.finish(&result);
        self.after_change(name).await;
        if result.is_ok() {
            self.kick(name, "started");
        }
        result
    }

    async fn start_inner(&self, runtime: &dyn Runtime, name: &AgentName) -> Result<()> {
        if !self
            .status
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            let port = self.ports.web_port(name)?;
            let deployed = self.configs.ensure(name).await?;
            self.create_container(runtime, name, port, &deployed)
                .await?;
            self.start_pinned(runtime, name).await?;
        }
        self.store.set_want_running(name.as_str(), true)?;
        Ok(())
    }

    /// Stops an agent's container; its state and the container remain.
    /// No checkpoint: a stop (a kill, a budget's, the manager's) must not
    /// wait on what the agent sends, nor replace its kept checkpoint with
    /// it; checkpoints are taken by `hive checkpoint` and a move only.
    pub async fn stop(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        let runtime = self.prepare("stop", name)?;
        let guard = self.begin(name, TransientKind::Stopping)?;
        let result = runtime.stop(name, STOP_GRACE).await.map_err(Error::from);
        if result.is_ok() {
            self.store.set_want_running(name.as_str(), false)?;
        }
        guard.finish(&result);
        self.after_change(name).await;
        if result.is_ok() && !name.is_manager() {
            notify_manager(
                &self.store,
                &HelperEvent::Killed {
                    agent: name.to_string(),
                },
            );
        }
        result
    }

    /// The link, which checkpoints travel over, or why `verb` needs it.
    fn state_link(&self, verb: &str) -> Result<&Arc<crate::link::Link>> {
        self.settings.link.as_ref().ok_or_else(|| {
            Error::refused(format!(
                "`{verb}` needs the link: an agent's /state travels over it, and this hive \
                 runs --agent-transport unix"
            ))
        })
    }

    /// Copies `name`'s `/state` over the link into its kept checkpoint.
    pub async fn checkpoint(&self, name: &AgentName) -> Result<Checkpoint> {
        require_agent(&self.store, name)?;
        let link = self.state_link("checkpoint")?;
        checkpoint::take(&self.paths, link, name, CHECKPOINT_TIMEOUT).await
    }

    /// What a move of `name` to `node` would do, in the approval's words;
    /// refused when it could not run: no multi-host runtime or no link, the
    /// node it is on, or no way to its state (its harness unreachable and
    /// no checkpoint kept).
    pub fn plan_move(&self, name: &AgentName, node: &str) -> Result<String> {
        let record = require_agent(&self.store, name)?;
        if name.is_manager() {
            return Err(Error::refused(
                "the manager cannot be moved: it runs on core's node",
            ));
        }
        let runtime = self.runtime_for("move")?;
        if !runtime.multi_host() {
            return Err(Error::refused(format!(
                "`move` needs a runtime that schedules across hosts (swarm); this hive runs {}",
                runtime.name()
            )));
        }
        let link = self.state_link("move")?;
        if node.is_empty()
            || node
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        {
            return Err(Error::refused(format!("{node:?} is not a node id")));
        }
        let from = record.node.as_deref().unwrap_or("no node yet");
        if record.node.as_deref() == Some(node) {
            return Err(Error::refused(format!("{name} is already on node {node}")));
        }
        let reachable =
            link.state_tunnels.has(name) && !checkpoint::restore_pending(&self.paths, name);
        match (reachable, checkpoint::last(&self.paths, name)) {
            (true, _) => Ok(format!(
                "move {name} from node {from} to {node}: checkpoint its /state now, stop it, \
                 start it on {node} from that checkpoint"
            )),
            (false, Some(last)) => Ok(format!(
                "move {name} from node {from} to {node}: its harness cannot be reached (its \
                 node is down, or it is stopped), so its /state comes from the checkpoint of \
                 {}; changes since are lost",
                last.describe()
            )),
            (false, None) => Err(Error::refused(format!(
                "{name} cannot be moved: its harness cannot be reached and it has no \
                 checkpoint, so its /state would be lost"
            ))),
        }
    }

    /// Moves `name` to `node` (an approved `move`): a checkpoint if its
    /// harness is reachable (else the last one), stop, re-pin, and start
    /// there with a restore pending. A failure at any step leaves it
    /// pinned where it was, with its state, and says so.
    pub async fn relocate(self: &Arc<Self>, name: &AgentName, node: &str) -> Result<()> {
        self.plan_move(name, node)?;
        let runtime = self.runtime_for("move")?;
        let guard = self.begin(name, TransientKind::Moving)?;
        let result = self.relocate_inner(&*runtime, name, node).await;
        guard.finish(&result);
        self.after_change(name).await;
        if result.is_ok() {
            self.kick(name, "moved");
        }
        result
    }

    async fn relocate_inner(
        &self,
        runtime: &dyn Runtime,
        name: &AgentName,
        node: &str,
    ) -> Result<()> {
        let link = self.state_link("move")?;
        let record = require_agent(&self.store, name)?;
        let before = self.state_placement(name)?;
        let from_text = before.node.clone().unwrap_or_else(|| "no node".to_owned());
        let was_pending = checkpoint::restore_pending(&self.paths, name);
        if link.state_tunnels.has(name) && !was_pending {
            checkpoint::take(&self.paths, link, name, CHECKPOINT_TIMEOUT)
                .await
                .map_err(|e| {
                    Error::refused(format!("{e}; nothing moved: {name} stays on {from_text}"))
                })?;
        } else if checkpoint::last(&self.paths, name).is_none() {
            return Err(Error::refused(format!(
                "{name} has no checkpoint; nothing moved"
            )));
        }
        let was_running = self
            .status
            .container_status(name.as_str())
            .is_some_and(|c| c.running);
        // Started on the new node only if it was meant to run (a dead
        // node's agent was; one the operator stopped stays stopped).
        let wanted = was_running || record.want_running;
        let port = self.ports.web_port(name)?;
        let deployed = self.configs.ensure(name).await?;
        if record.has_container {
            runtime
                .stop(name, STOP_GRACE)
                .await
                .or_else(ignore_missing)
                .map_err(|e| {
                    Error::refused(format!(
                        "stopping {name} for its move failed: {e}; nothing moved"
                    ))
                })?;
        }
        let moved = async {
            // A fresh, empty state volume on the new node, filled from the
            // checkpoint by its harness before its first turn.
            self.refresh_containers().await;
            self.repin(name, Some(node), true)?;
            checkpoint::set_restore_pending(&self.paths, name, true)?;
            self.create_container(runtime, name, port, &deployed)
                .await?;
            self.store.set_has_container(name.as_str(), true)?;
            if !wanted {
                return Ok(());
            }
            if let Err(e) = runtime.start(name).await {
                // A harness refusing its checkpoint tells core, then exits
                // at once: its reason, not the exit a start may see first.
                return Err(self.restore_refusal(name).await.unwrap_or(Error::from(e)));
            }
            self.await_restore(name).await
        }
        .await;
        let Err(e) = moved else {
            if wanted {
                self.store.set_want_running(name.as_str(), true)?;
                tracing::info!(agent = %name, %node, "moved; its harness restored its checkpoint");
            } else {
                tracing::info!(agent = %name, %node, "moved, stopped; its next start restores");
            }
            return Ok(());
        };
        if wanted {
            let _ = runtime.stop(name, STOP_GRACE).await;
        }
        // Back where it was: its pin and state volume, its flag, its
        // container's spec, and running again if it ran.
        self.store
            .set_placement(name.as_str(), before.node.as_deref(), before.generation)?;
        checkpoint::set_restore_pending(&self.paths, name, was_pending)?;
        let back = async {
            self.create_container(runtime, name, port, &deployed)
                .await?;
            if was_running {
                runtime.start(name).await.map_err(Error::from)?;
            }
            Ok::<_, Error>(())
        }
        .await;
        let now = match (back, was_running) {
            (Ok(()), true) => "running there again".to_owned(),
            (Ok(()), false) => "stopped".to_owned(),
            (Err(back), _) => format!("stopped (starting it there again failed: {back})"),
        };
        Err(Error::refused(format!(
            "moving {name} to node {node} failed: {e}; it stays pinned to {from_text} with \
             its state and checkpoint, {now}"
        )))
    }

    /// Why a moved agent's harness refused its checkpoint, if it says so
    /// within a few seconds (its start failed: it may have exited on the
    /// refusal before core noted the reason).
    async fn restore_refusal(&self, name: &AgentName) -> Option<Error> {
        match self
            .restore_outcome_within(name, Duration::from_secs(3))
            .await
        {
            Some(Err(why)) => Some(Error::refused(why)),
            _ => None,
        }
    }

    /// Until the harness of a moved agent restored its checkpoint (the
    /// marker cleared), or why not: it refused it, or it did not within
    /// [`MOVE_RESTORE_TIMEOUT`].
    async fn await_restore(&self, name: &AgentName) -> Result<()> {
        match self
            .restore_outcome_within(name, MOVE_RESTORE_TIMEOUT)
            .await
        {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(Error::refused(why)),
            None => Err(Error::refused(format!(
                "its harness did not restore its checkpoint within {}s",
                MOVE_RESTORE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The outcome of `name`'s pending restore once there is one (the
    /// marker cleared, or the harness's refusal), polled for up to
    /// `within`.
    async fn restore_outcome_within(
        &self,
        name: &AgentName,
        within: Duration,
    ) -> Option<std::result::Result<(), String>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let outcome = checkpoint::restore_outcome(&self.paths, name);
            if outcome.is_some() || tokio::time::Instant::now() >= deadline {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops then starts an agent with its current spec.
    pub async fn restart(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        let runtime = self.prepare("restart", name)?;
        let guard = self.begin(name, TransientKind::Restarting)?;
        let result = match self.configs.ensure(name).await {
            Ok(deployed) => self.recreate(&*runtime, name, &deployed).await.map(drop),
            Err(e) => Err(e),
        };
        guard.finish(&result);
        self.after_change(name).await;
        if result.is_ok() {
            self.kick(name, "restarted");
        }
        result
    }

    /// Re-applies the deployed config: the container is recreated from it
    /// and started.
    pub async fn rebuild(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        require_agent(&self.store, name)?;
        self.runtime_for("rebuild")?;
        let deployed = self.configs.ensure(name).await?;
        self.rebuild_with(name, &deployed).await
    }

    /// Recreates `name`'s container from `deployed` (the current config,
    /// or an approved candidate not yet marked deployed).
    pub async fn rebuild_with(
        self: &Arc<Self>,
        name: &AgentName,
        deployed: &Deployed,
    ) -> Result<()> {
        let runtime = self.prepare("rebuild", name)?;
        let guard = self
            .begin_when_free(name, TransientKind::Rebuilding)
            .await?;
        let result = match self.recreate(&*runtime, name, deployed).await {
            Ok(since) => self.await_healthy(&*runtime, name, since).await,
            Err(e) => Err(e),
        };
        guard.finish(&result);
        self.after_change(name).await;
        if !name.is_manager() {
            notify_manager(
                &self.store,
                &HelperEvent::Rebuilt {
                    agent: name.to_string(),
                    ok: result.is_ok(),
                    note: result.as_ref().err().map(ToString::to_string),
                },
            );
        }
        if result.is_ok() {
            self.kick(name, "rebuilt");
        }
        result
    }

    /// Stops, recreates and starts `name`'s container; answers when the old
    /// container had stopped (a connection opened later is the new
    /// harness's).
    async fn recreate(
        &self,
        runtime: &dyn Runtime,
        name: &AgentName,
        deployed: &Deployed,
    ) -> Result<tokio::time::Instant> {
        runtime
            .stop(name, STOP_GRACE)
            .await
            .or_else(ignore_missing)
            .map_err(Error::from)?;
        let since = tokio::time::Instant::now();
        let port = self.ports.web_port(name)?;
        self.create_container(runtime, name, port, deployed).await?;
        // The candidate's egress policy holds from its container's start.
        self.egress.set_policy(
            name,
            deployed.config.network.clone(),
            deployed.config.engine,
        );
        self.start_pinned(runtime, name).await?;
        self.store.set_want_running(name.as_str(), true)?;
        Ok(since)
    }

    /// Removes an agent's container, keeping its state (a tombstone) unless
    /// `purge`, which also deletes its state and config repos.
    pub async fn destroy(self: &Arc<Self>, name: &AgentName, purge: bool) -> Result<()> {
        if name.is_manager() {
            let what = if purge { "purged" } else { "destroyed" };
            return Err(Error::refused(format!("the manager cannot be {what}")));
        }
        let record = require_agent(&self.store, name)?;
        let runtime = self.runtime_for("destroy")?;
        let guard = self.begin(name, TransientKind::Destroying)?;
        let result = async {
            // No checkpoint of it is taken while it is purged: one in
            // flight is cancelled (and its temp file gone) before anything
            // is removed, and one asked for after finds no agent.
            let _fence = if purge {
                Some(checkpoint::fence_for_purge(&self.paths, name).await?)
            } else {
                None
            };
            if record.has_container {
                runtime
                    .destroy(name)
                    .await
                    .or_else(ignore_missing)
                    .map_err(Error::from)?;
                self.store.set_has_container(name.as_str(), false)?;
                self.store.set_want_running(name.as_str(), false)?;
            }
            if let Some(link) = &self.settings.link {
                link.revoke(&self.paths, name).map_err(|e| {
                    Error::Internal(format!("revoke {name}'s link credential: {e:#}"))
                })?;
            }
            for approval in self
                .store
                .cancel_pending_approvals_for(name.as_str(), Some("agent destroyed"))?
            {
                tracing::info!(id = approval.id, %name, "cancelled approval of a destroyed agent");
            }
            if purge {
                self.refresh_containers().await;
                self.refuse_live(name)?;
                let state = self.state_placement(name)?;
                let placement = hive_runtime::Placement {
                    constraints: Vec::new(),
                    node: state.node,
                    generation: state.generation,
                };
                runtime
                    .purge_state(name, &placement)
                    .await
                    .map_err(Error::from)?;
                self.purge_files(name)?;
            }
            Ok(())
        }
        .await;
        guard.finish(&result);
        self.refresh_containers().await;
        if purge && result.is_ok() {
            let removed = name.to_string();
            self.dashboard
                .emit(|seq| DashboardEvent::ContainerRemoved { seq, name: removed });
        } else {
            self.status.publish(name.as_str());
        }
        self.publish_tombstones();
        if result.is_ok() {
            self.tasks
                .release_claims(name, "its container was destroyed");
            notify_manager(
                &self.store,
                &HelperEvent::Destroyed {
                    agent: name.to_string(),
                },
            );
        }
        result
    }

    /// Refuses to purge `name` while a container of it runs.
    fn refuse_live(&self, name: &AgentName) -> Result<()> {
        if self
            .status
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            return Err(Error::refused(format!(
                "{name} still has a live container: destroy it first"
            )));
        }
        Ok(())
    }

    fn purge_files(&self, name: &AgentName) -> Result<()> {
        self.refuse_live(name)?;
        self.close_socket(name);
        // Each tree is removed through a parent reached without following
        // links; below it, links are unlinked, never followed.
        let name_os = std::ffi::OsStr::new(name.as_str());
        for parent in [
            self.paths.agents_dir(),
            self.paths.state_dir.join("applied"),
            self.paths.proposed_dir(),
        ] {
            if let Some(dir) = crate::safe_fs::Dir::open(&self.paths.state_dir, &parent)? {
                dir.remove_tree(name_os)?;
            }
        }
        let run_dir = self.paths.agent_run_dir(name);
        if let (Some(parent), Some(last)) = (run_dir.parent(), run_dir.file_name())
            && let Some(dir) = crate::safe_fs::Dir::open(&self.paths.run_dir, parent)?
        {
            dir.remove_tree(last)?;
        }
        self.store.forget_agent(name.as_str())?;
        Ok(())
    }

    /// Checks, in this order, that `name` is known, that there is a
    /// runtime, and that `name` has a container.
    fn prepare(&self, verb: &'static str, name: &AgentName) -> Result<Arc<dyn Runtime>> {
        require_agent(&self.store, name)?;
        let runtime = self.runtime_for(verb)?;
        self.require_container(name)?;
        Ok(runtime)
    }

    fn require_container(&self, name: &AgentName) -> Result<()> {
        let record = require_agent(&self.store, name)?;
        if record.has_container {
            Ok(())
        } else {
            Err(Error::refused(format!(
                "{name} has no container, only kept state: revive it with `hive request-spawn {name}`"
            )))
        }
    }

    /// Refreshes the container cache and publishes `name`'s status.
    async fn after_change(&self, name: &AgentName) {
        self.refresh_containers().await;
        self.status.publish(name.as_str());
    }

    /// Drops a "you were (re)started" note into the agent's inbox, so its
    /// next turn knows to look at its notes.
    pub fn kick(&self, name: &AgentName, what: &str) {
        let body = format!(
            "you were just {what}. /state is intact, and so is your session unless your \
             role changed: check your notes in /state before picking up where you left off."
        );
        if let Err(e) = self
            .store
            .send(SYSTEM_SENDER, &name.clone().into(), &body, None)
        {
            tracing::warn!(%name, "kick not delivered: {e}");
        }
    }

    /// The last `lines` lines `name`'s container printed. Falls back to the
    /// log file core keeps when the runtime no longer holds the container.
    pub async fn logs(&self, name: &AgentName, lines: usize) -> Result<Vec<String>> {
        require_agent(&self.store, name)?;
        let runtime = self.runtime_for("logs")?;
        let raw = match runtime.logs(name, lines).await {
            Err(hive_runtime::Error::NoSuchContainer(_)) => {
                hive_runtime::tail_file(&self.kept_log(name), lines)
                    .await
                    .map_err(Error::from)
            }
            other => other.map_err(Error::from),
        }?;
        // No surface that reads these is a terminal (see `hive_runtime::plain`).
        Ok(raw
            .iter()
            .map(|line| hive_runtime::plain::plain_text(line))
            .collect())
    }

    /// A watch that wakes when `name`'s container may have printed more
    /// (see [`hive_runtime::Runtime::watch_output`]), made before a follower's
    /// first read; on the log file core keeps when the runtime no longer
    /// holds the container, as [`Self::logs`] reads it.
    pub async fn watch_output(&self, name: &AgentName) -> Result<OutputWatch> {
        require_agent(&self.store, name)?;
        let runtime = self.runtime_for("logs")?;
        match runtime.watch_output(name).await {
            Err(hive_runtime::Error::NoSuchContainer(_)) => {
                Ok(OutputWatch::file(&self.kept_log(name)))
            }
            other => other.map_err(Error::from),
        }
    }

    /// The address the runtime's link relay reaches core's link listener
    /// from, if it runs one (see [`hive_runtime::Runtime::link_relay`]);
    /// `None` too when the runtime cannot say now (logged).
    pub async fn link_relay(&self) -> Option<std::net::IpAddr> {
        let runtime = self.runtime.as_ref()?;
        runtime.link_relay().await.unwrap_or_else(|e| {
            tracing::warn!("the link relay's address: {e}");
            None
        })
    }

    /// The log file of `name`'s container: where a child backend appends
    /// its output, and what is read once the runtime no longer holds it.
    fn kept_log(&self, name: &AgentName) -> std::path::PathBuf {
        self.paths.agent_dir(name).join("container.log")
    }

    /// Agents with kept state and no container.
    pub fn tombstones(&self) -> Result<Vec<TombstoneView>> {
        let mut out = Vec::new();
        for record in self.store.agents()? {
            if !self.status.is_kept_state(&record) {
                continue;
            }
            let Ok(name) = AgentName::parse(&record.name) else {
                continue;
            };
            let volume = self
                .runtime
                .as_ref()
                .and_then(|r| r.state_volume(&name, record.generation));
            if let Some(volume) = volume {
                // On a node's volume: nothing core can read here.
                out.push(TombstoneView {
                    name: record.name,
                    state_bytes: 0,
                    modified_at: 0,
                    has_credentials: false,
                    volume: Some(match &record.node {
                        Some(node) => format!("{volume} on node {node}"),
                        None => volume,
                    }),
                });
                continue;
            }
            let state = self.paths.agent_state(&name);
            // The agent wrote this tree: walked without following links.
            let (state_bytes, modified_at) = crate::safe_fs::usage(&self.paths.state_dir, &state);
            let has_credentials = crate::safe_fs::Dir::open(&self.paths.state_dir, &state)
                .ok()
                .flatten()
                .and_then(|dir| dir.kind(std::ffi::OsStr::new(".claude")).ok().flatten())
                .is_some_and(|s| crate::safe_fs::is(&s, nix::sys::stat::SFlag::S_IFDIR));
            out.push(TombstoneView {
                name: record.name,
                state_bytes,
                modified_at,
                has_credentials,
                volume: None,
            });
        }
        Ok(out)
    }

    fn publish_tombstones(&self) {
        match self.tombstones() {
            Ok(tombstones) => {
                self.dashboard
                    .emit(|seq| DashboardEvent::TombstonesChanged { seq, tombstones });
            }
            Err(e) => tracing::warn!("tombstones not published: {e}"),
        }
    }

    /// The agents to start again at startup: those that ran when the last
    /// daemon stopped. Taken before the sockets serve, so an agent spawned
    /// while `resume` runs is never mistaken for one to resume (and
    /// restarted under its spawner's feet).
    pub fn agents_to_resume(&self) -> Vec<AgentName> {
        let Ok(agents) = self.store.agents() else {
            return Vec::new();
        };
        agents
            .into_iter()
            .filter(|r| r.name != hive_proto::MANAGER_AGENT && r.has_container && r.want_running)
            .filter_map(|r| AgentName::parse(&r.name).ok())
            .collect()
    }

    /// At startup: the manager's container exists and runs, and every agent
    /// of `agents` ([`Lifecycle::agents_to_resume`]) is started again.
    pub async fn resume(self: &Arc<Self>, agents: Vec<AgentName>) {
        if self.runtime.is_none() {
            return;
        }
        self.refresh_containers().await;
        let manager = AgentName::manager();
        let manager_record = self.store.agent(manager.as_str()).ok().flatten();
        let outcome = match manager_record {
            Some(r) if r.has_container => self.reattach(&manager).await,
            _ => self.spawn(&manager).await,
        };
        if let Err(e) = outcome {
            tracing::error!("manager not running: {e}");
        }
        for name in agents {
            if let Err(e) = self.reattach(&name).await {
                tracing::error!(agent = %name, "not resumed: {e}");
            }
        }
    }

    /// At shutdown: containers that cannot outlive the daemon are stopped
    /// politely, all at once, keeping `want_running` so the next start
    /// brings them back. Docker containers are left running for the next
    /// `hive serve` to reattach — unless `remove_all` (the foreground
    /// `hive up`): then they are stopped and removed too, and the next start
    /// creates them afresh.
    pub async fn stop_for_shutdown(&self, remove_all: bool) {
        let Some(runtime) = &self.runtime else { return };
        let outlives = runtime.survives_daemon();
        if outlives && !remove_all {
            return;
        }
        self.refresh_containers().await;
        let all: Vec<(AgentName, bool)> = self
            .status
            .containers()
            .values()
            .map(|s| (s.name.clone(), s.running))
            .collect();
        let stops = all.iter().map(|(name, running)| async move {
            if *running && let Err(e) = runtime.stop(name, SHUTDOWN_GRACE).await {
                tracing::warn!(agent = %name, "not stopped at shutdown: {e}");
            }
            if outlives && let Err(e) = runtime.destroy(name).await {
                tracing::warn!(agent = %name, "not removed at shutdown: {e}");
            }
        });
        futures_util::future::join_all(stops).await;
    }

    /// Starts `name` after a daemon restart. A container that outlived the
    /// old daemon (docker) is restarted: it holds a bind of the old socket
    /// file, which this daemon replaced.
    async fn reattach(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        if self
            .status
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            tracing::info!(agent = %name, "restarting a container that outlived the daemon");
            self.restart(name).await
        } else {
            self.start(name).await
        }
    }

    /// Fires `container_crash` when a container stops with no lifecycle
    /// action in flight, from the runtime's own exit reports, until `stop`
    /// resolves.
    pub async fn crash_watch(&self, stop: impl Future<Output = ()>) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let mut changes = runtime.subscribe();
        tokio::pin!(stop);
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = &mut stop => return,
            };
            match change {
                Ok(change) => self.on_change(change).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "crash watch lagged; rescanning");
                    self.refresh_containers().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    async fn on_change(&self, change: StateChange) {
        if !change.running {
            // Whatever its harness last said no longer holds; the next one
            // reports afresh when it boots.
            self.activity.turn_ended(change.name.as_str());
        }
        self.refresh_containers().await;
        self.status.publish(change.name.as_str());
        let busy = self.transients().contains_key(&change.name);
        if change.running || change.expected || busy {
            return;
        }
        tracing::warn!(agent = %change.name, detail = ?change.detail, "container crashed");
        // A claim is a lease on the holder's life: its tasks go back to open
        // before the manager reads of the crash.
        self.tasks
            .release_claims(&change.name, "its container crashed");
        if !change.name.is_manager() {
            notify_manager(
                &self.store,
                &HelperEvent::ContainerCrash {
                    agent: change.name.to_string(),
                    note: change.detail,
                },
            );
        }
    }

    /// Starts or stops every agent in `scope` (all when empty), reporting
    /// each failure by name. Answers the agents a stop of everything left
    /// running on purpose (the manager), with the reason.
    pub async fn scope(
        self: &Arc<Self>,
        verb: ScopeVerb,
        scope: &Scope,
    ) -> Result<Vec<KeptRunning>> {
        let verb_name = match verb {
            ScopeVerb::Start => "start",
            ScopeVerb::Stop => "stop",
        };
        for name in &scope.agent_names {
            require_agent(&self.store, name)?;
        }
        self.require_runtime(verb_name)?;
        let mut kept = Vec::new();
        let names = if scope.is_all() {
            let mut names = Vec::new();
            for record in self.store.agents()?.into_iter().filter(|r| r.has_container) {
                if verb == ScopeVerb::Stop && record.name == hive_proto::MANAGER_AGENT {
                    if self
                        .status
                        .container_status(&record.name)
                        .is_some_and(|c| c.running)
                    {
                        kept.push(KeptRunning {
                            name: record.name,
                            reason: "the manager is left out of stopping every agent; \
                                     name it to stop it (`hive stop manager`)"
                                .to_owned(),
                        });
                    }
                    continue;
                }
                names.push(AgentName::parse(&record.name).map_err(hive_store::Error::from)?);
            }
            names
        } else {
            scope.agent_names.clone()
        };
        let mut failures = Vec::new();
        for name in &names {
            let outcome = match verb {
                ScopeVerb::Start => self.start(name).await,
                ScopeVerb::Stop => self.stop(name).await,
            };
            if let Err(e) = outcome {
                failures.push((name, e));
            }
        }
        if names.len() == 1 && failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        if failures.is_empty() {
            return Ok(kept);
        }
        let each: Vec<String> = failures
            .iter()
            .map(|(name, e)| format!("{name}: {e}"))
            .collect();
        Err(Error::refused(each.join("; ")))
    }

    /// Sets or clears an agent's pause marker. Works whether or not its
    /// container runs.
    pub fn set_paused(&self, name: &AgentName, paused: bool) -> Result<()> {
        require_agent(&self.store, name)?;
        // The control dir is core's (read-only in the container); still
        // reached without following links, and the marker is replaced,
        // never written through.
        let control = crate::safe_fs::Dir::create(
            &self.paths.state_dir,
            &self.paths.control_dir(name),
            crate::paths::DIR_MODE,
        )?;
        if paused {
            control.write_file(hive_proto::control::PAUSED, b"paused by the operator\n")?;
        } else {
            control.remove_file(hive_proto::control::PAUSED)?;
        }
        if let Some(link) = &self.settings.link {
            link.control_changed(name);
        }
        self.store.set_paused(name.as_str(), paused)?;
        self.status.publish(name.as_str());
        Ok(())
    }
}

fn ignore_missing(e: hive_runtime::Error) -> hive_runtime::Result<()> {
    match e {
        hive_runtime::Error::NoSuchContainer(_) => Ok(()),
        e => Err(e),
    }
}

/// A backend that answers [`Lifecycle::link_relay`] (with `relay`) and
/// fails everything else: the link listener's tests play the relay from
/// that address, and the listener asks the runtime nothing more.
#[cfg(test)]
pub(crate) fn relay_only(relay: std::net::IpAddr) -> Backend {
    struct RelayAt(std::net::IpAddr);

    fn unreached() -> hive_runtime::Error {
        hive_runtime::Error::Failed("not reached by the link listener".to_owned())
    }

    #[async_trait::async_trait]
    impl Runtime for RelayAt {
        fn name(&self) -> &'static str {
            "relay-only"
        }
        async fn create(&self, _: &ContainerSpec) -> hive_runtime::Result<()> {
            Err(unreached())
        }
        async fn start(&self, _: &AgentName) -> hive_runtime::Result<()> {
            Err(unreached())
        }
        async fn stop(&self, _: &AgentName, _: Duration) -> hive_runtime::Result<()> {
            Err(unreached())
        }
        async fn destroy(&self, _: &AgentName) -> hive_runtime::Result<()> {
            Err(unreached())
        }
        async fn list(&self) -> hive_runtime::Result<Vec<ContainerStatus>> {
            Err(unreached())
        }
        fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StateChange> {
            tokio::sync::broadcast::channel(1).1
        }
        async fn link_relay(&self) -> hive_runtime::Result<Option<std::net::IpAddr>> {
            Ok(Some(self.0))
        }
        async fn logs(&self, _: &AgentName, _: usize) -> hive_runtime::Result<Vec<String>> {
            Err(unreached())
        }
    }

    Some(Arc::new(RelayAt(relay)))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::coordinator::Coordinator;

    fn coordinator(dir: &Path, tweak: impl FnOnce(&mut Settings)) -> Arc<Coordinator> {
        let paths = crate::Paths::new(dir.join("state"), dir.join("run"));
        paths.create_roots().unwrap();
        let store = hive_store::Store::open(&paths.database()).unwrap();
        let mut settings = Settings {
            codex_bin: None,
            hive_bin: "/usr/bin/hive".into(),
            engine_bin: None,
            agent_env: Vec::new(),
            agent_env_args: Vec::new(),
            ports: crate::settings::PortRange::default(),
            mirror: None,
            operator_token: "test-token-0123456789abcdef".into(),
            link: None,
        };
        tweak(&mut settings);
        Coordinator::new(store, paths, None, None, settings, None)
    }

    /// Every host path a container can see, read-write or not.
    fn visible(spec: &ContainerSpec) -> Vec<PathBuf> {
        let mut seen = vec![
            spec.state_dir.clone(),
            spec.shared_dir.clone(),
            spec.page_dir.clone(),
            spec.control_dir.clone(),
        ];
        seen.extend(spec.binds.iter().map(|b| b.host.clone()));
        seen
    }

    #[test]
    fn no_container_sees_core_files_and_the_manager_sees_no_agent_state() {
        let dir = tempfile::tempdir().unwrap();
        let coord = coordinator(dir.path(), |_| {});
        let deployed = Deployed {
            sha: "0".repeat(40),
            config: hive_config::AgentConfig::default(),
            prompt: String::new(),
        };
        let manager = coord
            .lifecycle
            .container_spec(&AgentName::manager(), 8000, &deployed)
            .unwrap();
        let coder = AgentName::parse("coder").unwrap();
        for bind in &manager.binds {
            assert!(
                !bind.host.starts_with(coord.paths.agents_dir())
                    && !bind.host.starts_with(coord.paths.run_dir.join("agents")),
                "the manager sees {} (agents' state or core's files)",
                bind.host.display()
            );
            assert!(!coord.paths.agent_state(&coder).starts_with(&bind.host));
            assert!(!coord.paths.agents_dir().starts_with(&bind.host));
        }
        let agent = coord
            .lifecycle
            .container_spec(&coder, 8100, &deployed)
            .unwrap();
        for spec in [&manager, &agent] {
            let core_files = [spec.log_path.clone(), spec.log_path.with_extension("pid")];
            for seen in visible(spec) {
                for file in &core_files {
                    assert!(
                        !file.starts_with(&seen),
                        "{} sees {} through {}",
                        spec.name,
                        file.display(),
                        seen.display()
                    );
                }
            }
        }
    }

    /// A re-pin with fresh state names the next volume generation in the
    /// spec the runtime gets, and is refused for an unknown agent.
    #[test]
    fn a_repin_with_fresh_state_reaches_the_spec_as_the_next_generation() {
        let dir = tempfile::tempdir().unwrap();
        let coord = coordinator(dir.path(), |_| {});
        let deployed = Deployed {
            sha: "0".repeat(40),
            config: hive_config::AgentConfig::default(),
            prompt: String::new(),
        };
        let coder = AgentName::parse("coder").unwrap();
        coord.store.register_agent(&coder).unwrap();
        coord.store.set_node("coder", Some("n1")).unwrap();
        let spec = |coord: &Coordinator| {
            coord
                .lifecycle
                .container_spec(&coder, 8100, &deployed)
                .unwrap()
                .placement
        };
        assert_eq!(
            (spec(&coord).node.as_deref(), spec(&coord).generation),
            (Some("n1"), 0)
        );
        let moved = coord.lifecycle.repin(&coder, Some("n2"), true).unwrap();
        assert_eq!(
            moved,
            StatePlacement {
                node: Some("n2".into()),
                generation: 1
            }
        );
        assert_eq!(
            (spec(&coord).node.as_deref(), spec(&coord).generation),
            (Some("n2"), 1)
        );
        // Unpinned onto the same volume: refused (a start elsewhere would
        // find an empty one of its name); onto a fresh one: placed afresh.
        let err = coord.lifecycle.repin(&coder, None, false).unwrap_err();
        assert!(err.to_string().contains("fresh state volume"), "{err}");
        assert_eq!(spec(&coord).node.as_deref(), Some("n2"));
        coord.lifecycle.repin(&coder, None, true).unwrap();
        assert_eq!((spec(&coord).node, spec(&coord).generation), (None, 2));
        let ghost = AgentName::parse("ghost").unwrap();
        assert!(coord.lifecycle.repin(&ghost, None, true).is_err());
    }

    /// The codex CLI reaches a sandbox like claude's: bound read-only at
    /// /run/hive/bin/codex and named in HIVE_CODEX_BIN, before the agent
    /// env (an operator's explicit variable wins).
    #[test]
    fn the_codex_cli_is_bound_read_only_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let coord = coordinator(dir.path(), |settings| {
            settings.codex_bin = Some("/opt/codex/bin/codex".into());
            settings.agent_env_args = vec![("HIVE_CODEX_BIN".into(), "/custom".into())];
        });
        let deployed = Deployed {
            sha: "0".repeat(40),
            config: hive_config::AgentConfig::default(),
            prompt: String::new(),
        };
        let coder = AgentName::parse("coder").unwrap();
        let spec = coord
            .lifecycle
            .container_spec(&coder, 8100, &deployed)
            .unwrap();
        let bind = spec
            .binds
            .iter()
            .find(|b| b.container == Path::new(crate::engine::CODEX_BIN))
            .expect("the codex bind");
        assert_eq!(bind.host, Path::new("/opt/codex/bin/codex"));
        assert!(bind.read_only);
        let named: Vec<&str> = spec
            .env
            .iter()
            .filter(|(k, _)| k == "HIVE_CODEX_BIN")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(named, [crate::engine::CODEX_BIN, "/custom"]);
    }
}
