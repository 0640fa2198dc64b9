//! The whole agent lifecycle, implemented once for every surface.
//!
//! spawn → (start | stop | restart | rebuild)* → destroy [purge]. Each
//! action holds a transient (a [`TransientGuard`], cleared on drop) so the
//! dashboard shows a spinner and the crash watch knows a stop was meant;
//! each one emits its helper event to the manager and the state events the
//! dashboard needs. Only this module calls the runtime.

use std::sync::Arc;
use std::time::Duration;

use hive_config::Deployed;
use hive_proto::dashboard::{TombstoneView, TransientKind};
use hive_proto::{AgentName, DashboardEvent, HelperEvent, SYSTEM_SENDER};
use hive_runtime::{AgentUser, Bind, ContainerSpec, ContainerStatus, Runtime, StateChange};
use tokio::sync::broadcast::error::RecvError;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::sandbox_files::agent_user;

/// How long a stopping container gets after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// The grace each container gets when the daemon shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a rebuild waits for another action on the same agent.
const BUSY_WAIT: Duration = Duration::from_secs(120);

/// A lifecycle action in flight; dropping it clears the transient.
pub struct TransientGuard {
    coord: Arc<Coordinator>,
    name: AgentName,
    kind: TransientKind,
}

impl TransientGuard {
    /// Ends the action, recording its result for the dashboard (the
    /// transient itself may be too brief for anyone to see).
    pub fn finish<T>(self, result: &Result<T>) {
        let error = result.as_ref().err().map(ToString::to_string);
        let action = self.coord.activity.action_finished(
            self.name.as_str(),
            self.kind,
            error.as_deref(),
            hive_store::now_unix(),
        );
        self.coord
            .dashboard
            .emit(|seq| DashboardEvent::LifecycleFinished { seq, action });
    }
}

impl Drop for TransientGuard {
    fn drop(&mut self) {
        self.coord.transients().remove(&self.name);
        let name = self.name.to_string();
        self.coord
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
    }
}

impl Coordinator {
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
            coord: self.clone(),
            name: name.clone(),
            kind,
        })
    }

    /// [`Coordinator::begin`], waiting (bounded) for an action already in
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
                if self.runs_unprivileged() {
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
            log_path: self.paths.agent_dir(name).join("container.log"),
            image: config.image.clone(),
            egress_socket: self.paths.egress_socket(name),
            page_dir: self.paths.page_dir(name),
            control_dir: self.paths.control_dir(name),
            etc_dir: self.paths.etc_dir(name),
            user: self.runs_unprivileged().then(|| agent_user(web_port)),
            limits: hive_runtime::Limits {
                memory_bytes: config.resources.memory_bytes(),
                // Checked positive and finite by the config checker.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                cpu_millis: config
                    .resources
                    .cpu
                    .map(|cores| (cores * 1000.0).round().max(1.0) as u32),
            },
            placement: hive_runtime::Placement {
                constraints: config.placement.all_constraints(),
                node: self.store.agent(name.as_str())?.and_then(|a| a.node),
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
        runtime.create(&spec).await.map_err(Error::from)
    }

    /// Starts `name`'s container and, under a runtime that schedules
    /// across hosts, pins the agent to the node it first ran on: its state
    /// lives there, so every later container runs there or not at all
    /// (moving is an explicit operation, never a reschedule).
    async fn start_pinned(&self, runtime: &dyn Runtime, name: &AgentName) -> Result<()> {
        runtime.start(name).await.map_err(Error::from)?;
        if self
            .store
            .agent(name.as_str())?
            .is_some_and(|a| a.node.is_some())
        {
            return Ok(());
        }
        let placed = runtime
            .list()
            .await
            .map_err(Error::from)?
            .into_iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.node);
        if let Some(node) = placed {
            tracing::info!(agent = %name, node = %node.hostname, "pinned to its first node");
            self.store.set_node(name.as_str(), Some(&node.id))?;
        }
        Ok(())
    }

    /// Whether agents run as their own unprivileged uid: on every backend
    /// but `process` (which isolates nothing), when the daemon is root (a
    /// daemon that is not runs them as itself).
    fn runs_unprivileged(&self) -> bool {
        self.runtime
            .as_ref()
            .is_some_and(|r| r.name() != "process" && crate::paths::running_as_root())
    }

    /// The uid `name` runs as, if not the daemon's own.
    pub fn agent_user_of(&self, name: &AgentName) -> Result<Option<AgentUser>> {
        if !self.runs_unprivileged() {
            return Ok(None);
        }
        Ok(Some(agent_user(self.web_port(name)?)))
    }

    /// The agent's web port, allocating a free one on first use: the
    /// manager's fixed port, else the lowest free port of the range.
    fn web_port(&self, name: &AgentName) -> Result<u16> {
        let agents = self.store.agents()?;
        if let Some(port) = agents
            .iter()
            .find(|a| a.name == name.as_str())
            .and_then(|a| a.port)
        {
            return Ok(port);
        }
        let ports = self.settings.ports;
        let port = if name.is_manager() {
            ports.manager
        } else {
            let taken: std::collections::HashSet<u16> =
                agents.iter().filter_map(|a| a.port).collect();
            (ports.first..=ports.last)
                .find(|p| !taken.contains(p) && *p != ports.manager)
                .ok_or_else(|| {
                    Error::refused(format!(
                        "no free web port left in {}-{}: purge an unused agent or widen the range",
                        ports.first, ports.last
                    ))
                })?
        };
        self.store.set_port(name.as_str(), Some(port))?;
        Ok(port)
    }

    /// The last known state of `name`'s container.
    pub fn container_status(&self, name: &str) -> Option<ContainerStatus> {
        self.containers().get(name).cloned()
    }

    /// Re-reads every container's state from the runtime.
    pub async fn refresh_containers(&self) {
        let Some(runtime) = &self.runtime else { return };
        match runtime.list().await {
            Ok(list) => {
                let mut cache = self.containers();
                cache.clear();
                cache.extend(list.into_iter().map(|s| (s.name.to_string(), s)));
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
            self.notify_manager(&HelperEvent::Spawned {
                agent: name.to_string(),
                ok: result.is_ok(),
                note: result.as_ref().err().map(ToString::to_string),
            });
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
        let port = self.web_port(name)?;
        crate::agent_server::serve_agent_socket(self, name.clone())
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        let deployed = self.ensure_config(name).await?;
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
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            let port = self.web_port(name)?;
            let deployed = self.ensure_config(name).await?;
            self.create_container(runtime, name, port, &deployed)
                .await?;
            self.start_pinned(runtime, name).await?;
        }
        self.store.set_want_running(name.as_str(), true)?;
        Ok(())
    }

    /// Stops an agent's container; its state and the container remain.
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
            self.notify_manager(&HelperEvent::Killed {
                agent: name.to_string(),
            });
        }
        result
    }

    /// Stops then starts an agent with its current spec.
    pub async fn restart(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        let runtime = self.prepare("restart", name)?;
        let guard = self.begin(name, TransientKind::Restarting)?;
        let result = match self.ensure_config(name).await {
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
        self.require_agent(name)?;
        self.runtime_for("rebuild")?;
        let deployed = self.ensure_config(name).await?;
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
            self.notify_manager(&HelperEvent::Rebuilt {
                agent: name.to_string(),
                ok: result.is_ok(),
                note: result.as_ref().err().map(ToString::to_string),
            });
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
        let port = self.web_port(name)?;
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
        let record = self.require_agent(name)?;
        let runtime = self.runtime_for("destroy")?;
        let guard = self.begin(name, TransientKind::Destroying)?;
        let result = async {
            if record.has_container {
                runtime
                    .destroy(name)
                    .await
                    .or_else(ignore_missing)
                    .map_err(Error::from)?;
                self.store.set_has_container(name.as_str(), false)?;
                self.store.set_want_running(name.as_str(), false)?;
            }
            for approval in self
                .store
                .cancel_pending_approvals_for(name.as_str(), Some("agent destroyed"))?
            {
                tracing::info!(id = approval.id, %name, "cancelled approval of a destroyed agent");
            }
            if purge {
                self.refresh_containers().await;
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
            self.publish_status(name.as_str());
        }
        self.publish_tombstones();
        if result.is_ok() {
            self.release_task_claims(name, "its container was destroyed");
            self.notify_manager(&HelperEvent::Destroyed {
                agent: name.to_string(),
            });
        }
        result
    }

    fn purge_files(&self, name: &AgentName) -> Result<()> {
        if self
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            return Err(Error::refused(format!(
                "{name} still has a live container: destroy it first"
            )));
        }
        if let Some(task) = self
            .agent_sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
        {
            task.abort();
        }
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
        self.require_agent(name)?;
        let runtime = self.runtime_for(verb)?;
        self.require_container(name)?;
        Ok(runtime)
    }

    fn require_container(&self, name: &AgentName) -> Result<()> {
        let record = self.require_agent(name)?;
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
        self.publish_status(name.as_str());
    }

    /// Drops a "you were (re)started" note into the agent's inbox, so its
    /// next turn knows to look at its notes.
    pub fn kick(&self, name: &AgentName, what: &str) {
        let body = format!(
            "you were just {what}. /state is intact, and so is your session unless your \
             role changed: check your notes in /state before picking up where you left off."
        );
        if let Err(e) = self.store.send(SYSTEM_SENDER, name.as_str(), &body, None) {
            tracing::warn!(%name, "kick not delivered: {e}");
        }
    }

    /// The last `lines` lines `name`'s container printed. Falls back to the
    /// log file core keeps when the runtime no longer holds the container.
    pub async fn logs(&self, name: &AgentName, lines: usize) -> Result<Vec<String>> {
        self.require_agent(name)?;
        let runtime = self.runtime_for("logs")?;
        let raw = match runtime.logs(name, lines).await {
            Err(hive_runtime::Error::NoSuchContainer(_)) => {
                let path = self.paths.agent_dir(name).join("container.log");
                hive_runtime::tail_file(&path, lines)
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

    /// Agents with kept state and no container.
    pub fn tombstones(&self) -> Result<Vec<TombstoneView>> {
        let mut out = Vec::new();
        for record in self.store.agents()? {
            if !self.is_kept_state(&record) {
                continue;
            }
            let Ok(name) = AgentName::parse(&record.name) else {
                continue;
            };
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
    /// of `agents` ([`Coordinator::agents_to_resume`]) is started again.
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
            .container_status(name.as_str())
            .is_some_and(|s| s.running)
        {
            tracing::info!(agent = %name, "restarting a container that outlived the daemon");
            self.restart(name).await
        } else {
            self.start(name).await
        }
    }
}

fn ignore_missing(e: hive_runtime::Error) -> hive_runtime::Result<()> {
    match e {
        hive_runtime::Error::NoSuchContainer(_) => Ok(()),
        e => Err(e),
    }
}

/// Fires `container_crash` when a container stops with no lifecycle action
/// in flight, from the runtime's own exit reports.
pub async fn crash_watch(coord: Arc<Coordinator>) {
    let Some(runtime) = coord.runtime.clone() else {
        return;
    };
    let mut changes = runtime.subscribe();
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = coord.shutting_down() => return,
        };
        match change {
            Ok(change) => on_change(&coord, change).await,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "crash watch lagged; rescanning");
                coord.refresh_containers().await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn on_change(coord: &Coordinator, change: StateChange) {
    if !change.running {
        // Whatever its harness last said no longer holds; the next one
        // reports afresh when it boots.
        coord.activity.turn_ended(change.name.as_str());
    }
    coord.refresh_containers().await;
    coord.publish_status(change.name.as_str());
    let busy = coord.transients().contains_key(&change.name);
    if change.running || change.expected || busy {
        return;
    }
    tracing::warn!(agent = %change.name, detail = ?change.detail, "container crashed");
    // A claim is a lease on the holder's life: its tasks go back to open
    // before the manager reads of the crash.
    coord.release_task_claims(&change.name, "its container crashed");
    if !change.name.is_manager() {
        coord.notify_manager(&HelperEvent::ContainerCrash {
            agent: change.name.to_string(),
            note: change.detail,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::coordinator::Settings;

    fn coordinator(dir: &Path) -> Coordinator {
        let paths = crate::Paths::new(dir.join("state"), dir.join("run"));
        paths.create_roots().unwrap();
        let store = hive_store::Store::open(&paths.database()).unwrap();
        let settings = Settings {
            codex_bin: None,
            hive_bin: "/usr/bin/hive".into(),
            engine_bin: None,
            agent_env: Vec::new(),
            agent_env_args: Vec::new(),
            ports: crate::coordinator::PortRange::default(),
            mirror: None,
            operator_token: "test-token-0123456789abcdef".into(),
        };
        Coordinator::new(store, paths, None, None, settings)
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
        let coord = coordinator(dir.path());
        let deployed = Deployed {
            sha: "0".repeat(40),
            config: hive_config::AgentConfig::default(),
            prompt: String::new(),
        };
        let manager = coord
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
        let agent = coord.container_spec(&coder, 8100, &deployed).unwrap();
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

    /// The codex CLI reaches a sandbox like claude's: bound read-only at
    /// /run/hive/bin/codex and named in HIVE_CODEX_BIN, before the agent
    /// env (an operator's explicit variable wins).
    #[test]
    fn the_codex_cli_is_bound_read_only_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut coord = coordinator(dir.path());
        coord.settings.codex_bin = Some("/opt/codex/bin/codex".into());
        coord.settings.agent_env_args = vec![("HIVE_CODEX_BIN".into(), "/custom".into())];
        let deployed = Deployed {
            sha: "0".repeat(40),
            config: hive_config::AgentConfig::default(),
            prompt: String::new(),
        };
        let coder = AgentName::parse("coder").unwrap();
        let spec = coord.container_spec(&coder, 8100, &deployed).unwrap();
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
