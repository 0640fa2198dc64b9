//! The `swarm` backend: one Docker Swarm service `h-<agent>-<hive>` per agent, via the Engine API.
//!
//! Runs on a swarm manager node (`open` refuses any other engine). Each
//! agent is one replicated service whose replica count is core's switch:
//! `create` defines it with 0 replicas, `start` sets 1 and forces a new
//! task, `stop` sets 0 and waits for the task to end. The restart condition
//! is `none`: Swarm never restarts an agent, core decides (so its crash
//! watch stays exact).
//!
//! **Hives on one swarm.** Services, their task containers and their
//! networks carry the labels [`HIVE_LABEL`]`=<hive>` and
//! [`AGENT_LABEL`]`=<agent>` as the docker backend's containers do; every
//! call by name checks them, and a service of our name without them is
//! [`Error::Foreign`], never touched.
//!
//! **The view** is the docker backend's, wired in one place
//! ([`crate::docker::mounts`]): the skeleton image built locally (its
//! swarm flavour, [`SWARM_IMAGE`]), the node's `/usr` read-only,
//! read-only root, the engine's init, the agent's uid:gid, memory and
//! nano-CPU limits. What a node other than core's cannot have is not
//! bound: `/state` and `/shared` are volumes of the node
//! ([`volume`]), the curated `/etc` is the image's plus the agent's own
//! `passwd` and `group` as Swarm configs (`files.rs`), and on the link
//! the credential is secrets and the link dir a tmpfs (`link.rs`). The
//! manager (the config repos) and the unix transport (core's sockets)
//! bind core's files: their services are pinned to core's node.
//!
//! **Privileges.** A task has no capability (`CapabilityDrop ALL`, which
//! every Engine with API 1.41 takes), so a setuid-root binary of the
//! bound `/usr` gains none. `no_new_privs` (docker's `no-new-privileges`)
//! only where the Engine's API takes it on a service (1.44, Engine 25,
//! `service::NO_NEW_PRIVILEGES_API`). Below, `connect` warns so
//! ([`SwarmRuntime::no_new_privs`] says which) and the Engine leaves it
//! unset: core's harness (`hive agent serve`, the task's program) sets it
//! on itself before it starts the engine, so every process of the agent
//! has it, but under another program (a test's) such a binary still runs
//! as uid 0 (with no capability). The link relay is a plain container
//! with both on any Engine (`link.rs`).
//!
//! **The network.** A swarm service cannot use the `none` network, and
//! without one it would join the default bridge (a way out). Each agent
//! gets its own `--internal` overlay network `h-<agent>-<hive>`: an
//! interface with no route and no peer, so, as on docker, the only ways
//! out are the unix sockets bound in.
//!
//! **Placement.** The spec's constraints (from the approved `agent.toml`)
//! and, once the agent was first placed, `node.id==<its node>`: its
//! `/state` volume lives there, so it runs there or not at all (a new
//! volume generation is how core starts it elsewhere on purpose). A task the
//! scheduler cannot place fails `start` with the scheduler's words.
//!
//! **Exits** come from the engine's event stream: the docker backend's
//! watcher ([`crate::docker::events`]) follows the task containers' `start`
//! and `die` (they carry our labels), so a crash is reported as it
//! happens; `start` and `stop` wait for the task they asked for by reading
//! the service's tasks. Logs are the service logs API.

mod files;
pub mod lease;
mod link;
mod service;
mod tasks;
pub mod volume;
mod watch;

pub use watch::node_down;

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerStateStatusEnum, LocalNodeState, NetworkCreateRequest, Service, ServiceSpec, Task,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    LogsOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures_util::StreamExt;
use hive_proto::AgentName;
use tokio::sync::broadcast;

use crate::docker::events::Exits;
use crate::docker::image::Flavour;
use crate::docker::{AGENT_LABEL, HIVE_LABEL, engine, status};
use crate::{ContainerSpec, ContainerStatus, Error, HiveId, Node, Result, Runtime, StateChange};

use tasks::{Phase, current, phase};

/// The image services run unless told otherwise: the skeleton's swarm
/// flavour ([`Flavour::Swarm`]), built locally; every node needs it.
pub const SWARM_IMAGE: &str = "hyperhive/base:swarm";

/// How long a task may wait for a node before `start` gives up on it.
const PLACEMENT_WAIT: Duration = Duration::from_secs(5);

/// How long `start` waits for a placed task to run (no image is pulled).
const START_WAIT: Duration = Duration::from_secs(60);

/// How often `start`, `stop` and `destroy` read the tasks they wait for.
const WAIT_STEP: Duration = Duration::from_millis(100);
/// How many tasks one start tries when the Engine fails them before their
/// process runs ([`tasks::failed_before_running`]).
const START_TRIES: u32 = 3;

/// Why a start's task did not come to run.
enum NotRunning {
    /// The Engine failed task `task` before its process ran: a new task
    /// may do.
    NeverRan {
        task: String,
        why: Error,
    },
    Other(Error),
}

impl From<Error> for NotRunning {
    fn from(e: Error) -> Self {
        NotRunning::Other(e)
    }
}

impl NotRunning {
    fn into_error(self) -> Error {
        match self {
            NotRunning::NeverRan { why: e, .. } | NotRunning::Other(e) => e,
        }
    }
}

/// Docker Swarm services, one per agent.
pub struct SwarmRuntime {
    docker: Docker,
    hive: HiveId,
    image: String,
    exits: std::sync::Arc<Exits>,
    /// Exits on other nodes, and nodes going down.
    watch: watch::TaskWatch,
    build: tokio::sync::Mutex<()>,
    /// Held while the link relay is made, connected, or removed.
    relay: tokio::sync::Mutex<()>,
    /// Whether the Engine's API gives a task's tmpfs mounts docker's
    /// flags (`/tmp` exec); below [`service::TMPFS_OPTIONS_API`] they are
    /// `noexec`.
    tmpfs_flags: bool,
    /// Whether the Engine's API sets `no_new_privs` on a task; below
    /// [`service::NO_NEW_PRIVILEGES_API`] it cannot.
    no_new_privs: bool,
}

/// Whether the local engine is a manager of an active swarm; the reason if
/// not.
pub async fn probe() -> std::result::Result<(), String> {
    let docker = crate::docker::connect_engine().await?;
    check_manager(&docker).await
}

async fn check_manager(docker: &Docker) -> std::result::Result<(), String> {
    let info = docker
        .info()
        .await
        .map_err(|e| format!("docker engine did not answer: {e}"))?;
    let swarm = info.swarm.unwrap_or_default();
    manager_problem(
        swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY),
        swarm.control_available == Some(true),
    )
    .map_or(Ok(()), Err)
}

/// Why an engine in swarm `state` (a manager if `manager`) cannot run a
/// hive's agents, if it cannot.
fn manager_problem(state: LocalNodeState, manager: bool) -> Option<String> {
    if state != LocalNodeState::ACTIVE {
        return Some(format!(
            "this docker engine is not in a swarm (state {state}): run `docker swarm init` \
             here, or run the hive on a manager node of your swarm"
        ));
    }
    (!manager).then(|| {
        "this docker engine is a swarm worker, not a manager: run the hive on a manager node"
            .to_owned()
    })
}

impl SwarmRuntime {
    /// Connects to the local engine, checks that it is a swarm manager, and
    /// starts following its events. Acts only on services of `hive`.
    pub async fn connect(default_image: Option<String>, hive: HiveId) -> Result<Self> {
        Self::connect_with(default_image, hive, true).await
    }

    /// [`SwarmRuntime::connect`] without the engine's event stream, its
    /// node taken for another's: every exit is the task watch's to report,
    /// as it is for a task on another node. For tests of that watch on a
    /// single-node swarm.
    #[doc(hidden)]
    pub async fn connect_as_another_node(
        default_image: Option<String>,
        hive: HiveId,
    ) -> Result<Self> {
        Self::connect_with(default_image, hive, false).await
    }

    async fn connect_with(default_image: Option<String>, hive: HiveId, here: bool) -> Result<Self> {
        let unavailable = |reason| Error::Unavailable {
            runtime: "swarm",
            reason,
        };
        let docker = crate::docker::connect_engine().await.map_err(unavailable)?;
        check_manager(&docker).await.map_err(unavailable)?;
        let (exits, local) = if here {
            let info = docker.info().await.map_err(engine("docker info"))?;
            let local = info.swarm.and_then(|s| s.node_id).filter(|n| !n.is_empty());
            (Exits::follow(docker.clone(), hive.clone()), local)
        } else {
            (Exits::without_events(docker.clone(), hive.clone()), None)
        };
        let exits = std::sync::Arc::new(exits);
        let watch = watch::TaskWatch::start(docker.clone(), hive.clone(), exits.clone(), local);
        let api = docker.client_version();
        let tmpfs_flags = (api.major_version, api.minor_version) >= service::TMPFS_OPTIONS_API;
        if !tmpfs_flags {
            let (major, minor) = service::TMPFS_OPTIONS_API;
            tracing::warn!(
                "swarm: this docker engine speaks API {}.{}, which mounts a task's /tmp, \
                 /var/tmp and /run noexec (no tmpfs options before API {major}.{minor}, \
                 Engine 27): agents on swarm cannot run what they write there",
                api.major_version,
                api.minor_version
            );
        }
        let no_new_privs = (api.major_version, api.minor_version) >= service::NO_NEW_PRIVILEGES_API;
        if !no_new_privs {
            let (major, minor) = service::NO_NEW_PRIVILEGES_API;
            tracing::warn!(
                "swarm: this docker engine speaks API {}.{}, which cannot set no_new_privs on a \
                 task (no Privileges.NoNewPrivileges before API {major}.{minor}, Engine 25): \
                 agents on swarm have no capability, and no_new_privs only from their \
                 harness, which sets it on itself before it starts the engine",
                api.major_version,
                api.minor_version
            );
        }
        Ok(Self {
            docker,
            hive,
            image: default_image.unwrap_or_else(|| SWARM_IMAGE.to_owned()),
            exits,
            watch,
            build: tokio::sync::Mutex::new(()),
            relay: tokio::sync::Mutex::new(()),
            tmpfs_flags,
            no_new_privs,
        })
    }

    /// Whether a task's `/tmp` and `/var/tmp` are mounted `exec` as
    /// docker's are: the Engine's API takes tmpfs options (API 1.46,
    /// Engine 27, on); `false`: they are `noexec`.
    pub fn tmp_exec(&self) -> bool {
        self.tmpfs_flags
    }

    /// Whether a task runs with `no_new_privs` as docker's containers do:
    /// the Engine's API takes it (API 1.44, Engine 25, on); `false`: it
    /// has no capability, but a setuid binary still changes its uid.
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privs
    }

    /// The swarm's name of `agent`'s service (and of its network).
    pub fn service_name(&self, agent: &AgentName) -> String {
        format!("h-{agent}-{}", self.hive)
    }

    fn stopping(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.exits.stopping()
    }

    fn labels(&self, agent: &AgentName) -> HashMap<String, String> {
        HashMap::from([
            (AGENT_LABEL.to_owned(), agent.to_string()),
            (HIVE_LABEL.to_owned(), self.hive.to_string()),
        ])
    }

    fn is_ours(&self, labels: Option<&HashMap<String, String>>, agent: &AgentName) -> bool {
        labels.and_then(|l| l.get(HIVE_LABEL)).map(String::as_str) == Some(self.hive.as_str())
            && labels.and_then(|l| l.get(AGENT_LABEL)).map(String::as_str) == Some(agent.as_str())
    }

    /// The agent's service, if there is one of ours; one of its name that
    /// is not ours is [`Error::Foreign`].
    async fn service(&self, name: &AgentName) -> Result<Option<Service>> {
        let service_name = self.service_name(name);
        let found = self
            .docker
            .inspect_service(&service_name, None::<InspectServiceOptions>)
            .await;
        let service = match found {
            Ok(s) => s,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine(format!("inspect service {service_name}"))(e)),
        };
        let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
        if !self.is_ours(labels, name) {
            return Err(Error::Foreign {
                container: service_name,
            });
        }
        Ok(Some(service))
    }

    async fn owned_service(&self, name: &AgentName) -> Result<Service> {
        self.service(name)
            .await?
            .ok_or_else(|| Error::NoSuchContainer(name.clone()))
    }

    async fn tasks_of(&self, service_id: &str) -> Result<Vec<Task>> {
        let filters = HashMap::from([("service", vec![service_id])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        self.docker
            .list_tasks(Some(options))
            .await
            .map_err(engine("list tasks"))
    }

    /// Changes the agent's service spec with `change`, read-modify-write
    /// at the version read, again from a fresh read when the swarm moved
    /// the version meanwhile (it does so itself as an update completes).
    async fn update(&self, name: &AgentName, change: impl Fn(&mut ServiceSpec)) -> Result<()> {
        let mut tries = 0;
        loop {
            let service = self.owned_service(name).await?;
            let id = service.id.clone().unwrap_or_default();
            let version = service
                .version
                .as_ref()
                .and_then(|v| v.index)
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or_default();
            let mut spec = service.spec.unwrap_or_default();
            change(&mut spec);
            let options = UpdateServiceOptionsBuilder::default()
                .version(version)
                .build();
            match self.docker.update_service(&id, spec, options, None).await {
                Ok(updated) => {
                    for warning in updated.warnings.unwrap_or_default() {
                        tracing::debug!(agent = %name, "swarm: {warning}");
                    }
                    return Ok(());
                }
                Err(e) if tries < 20 && e.to_string().contains("out of sequence") => {
                    tries += 1;
                    tokio::time::sleep(WAIT_STEP).await;
                }
                Err(e) => return Err(engine(format!("update service h-{name}"))(e)),
            }
        }
    }

    /// Sets the replica count to 0, marks the running task's container as
    /// stopped by us, and waits (up to `wait`) for it to end.
    async fn scale_down(&self, name: &AgentName, service: &Service, wait: Duration) -> Result<()> {
        let id = service.id.clone().unwrap_or_default();
        self.mark_stopping(&self.tasks_of(&id).await?);
        self.update(name, |spec| service::set_replicas(spec, 0))
            .await?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let tasks = self.tasks_of(&id).await?;
            self.mark_stopping(&tasks);
            if !tasks.iter().any(tasks::is_live) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Failed(format!(
                    "h-{name}'s task did not stop within {}s",
                    wait.as_secs()
                )));
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// Their containers' deaths are ours, not crashes.
    fn mark_stopping(&self, tasks: &[Task]) {
        let mut stopping = self.stopping();
        for task in tasks.iter().filter(|t| tasks::is_live(t)) {
            if let Some(id) = tasks::container_id(task) {
                stopping.insert(id.to_owned());
            }
        }
    }

    /// The agent's own internal network (created once; kept across
    /// recreations, removed at destroy).
    async fn ensure_network(&self, name: &AgentName) -> Result<()> {
        let network = self.service_name(name);
        match self.docker.inspect_network(&network, None).await {
            Ok(found) => {
                return if self.is_ours(found.labels.as_ref(), name) {
                    Ok(())
                } else {
                    Err(Error::Foreign { container: network })
                };
            }
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine(format!("inspect network {network}"))(e)),
        }
        let request = NetworkCreateRequest {
            name: network.clone(),
            driver: Some("overlay".to_owned()),
            internal: Some(true),
            // For the hive's link relay (a plain container) alone.
            attachable: Some(true),
            labels: Some(self.labels(name)),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map(drop)
            .map_err(engine(format!("create network {network}")))
    }

    /// Creates the agent's service (and its network, again if the one
    /// found was on its way out: the swarm removes networks lazily).
    async fn create_service(&self, name: &AgentName, spec: ServiceSpec) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.docker.create_service(spec.clone(), None).await {
                Ok(created) => {
                    for warning in created.warnings.unwrap_or_default() {
                        // "could not be accessed on a registry": a local image.
                        tracing::debug!(agent = %name, "swarm: {warning}");
                    }
                    return Ok(());
                }
                Err(e)
                    if tries < 50
                        && status(&e) == Some(500)
                        && e.to_string().contains("network") =>
                {
                    tries += 1;
                    tokio::time::sleep(WAIT_STEP).await;
                    self.ensure_network(name).await?;
                }
                Err(e) => return Err(engine(format!("create service h-{name}"))(e)),
            }
        }
    }

    /// Defines the agent's service as `new`: created, or redefined in
    /// place.
    async fn define(&self, spec: &ContainerSpec, new: ServiceSpec) -> Result<()> {
        match self.service(&spec.name).await? {
            Some(existing) => {
                // Redefined in place, stopped first: never two tasks on
                // one `/state`.
                self.scale_down(&spec.name, &existing, START_WAIT).await?;
                self.update(&spec.name, |current| {
                    let force = current.task_template.as_ref().and_then(|t| t.force_update);
                    *current = new.clone();
                    if let Some(template) = current.task_template.as_mut() {
                        template.force_update = force;
                    }
                })
                .await
            }
            None => self.create_service(&spec.name, new).await,
        }
    }

    /// Removes the agent's network once its last task container left it.
    async fn remove_network(&self, name: &AgentName) {
        let network = self.service_name(name);
        for _ in 0..100 {
            match self.docker.inspect_network(&network, None).await {
                Err(e) if status(&e) == Some(404) => return,
                Ok(found) if !self.is_ours(found.labels.as_ref(), name) => return,
                _ => {}
            }
            match self.docker.remove_network(&network).await {
                Ok(()) => return,
                Err(e) if status(&e) == Some(404) => return,
                // Still has endpoints: the task's container is going away.
                Err(_) => tokio::time::sleep(WAIT_STEP).await,
            }
        }
        tracing::warn!(agent = %name, "kept network {network}: still in use");
    }

    /// This engine's node id.
    async fn local_node(&self) -> Result<String> {
        let info = self.docker.info().await.map_err(engine("info"))?;
        info.swarm
            .and_then(|s| s.node_id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::Failed("this docker engine has no swarm node id".to_owned()))
    }

    /// The swarm's nodes by id: hostname, and whether it is down.
    async fn nodes(&self) -> Result<HashMap<String, (String, bool)>> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(engine("list nodes"))?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let down = node_down(&n).is_some();
                let hostname = n.description.and_then(|d| d.hostname).unwrap_or_default();
                Some((n.id?, (hostname, down)))
            })
            .collect())
    }

    /// Whether `task` runs, failed, and its host pid. The swarm's word
    /// lags its node's: where the task's container is on this engine, its
    /// own state decides (as the event stream reported it).
    async fn task_state(&self, task: &Task) -> Result<(bool, bool, Option<u32>)> {
        let ours = |id: &str| !self.stopping().contains(id);
        if let Some(id) = tasks::container_id(task) {
            match self.docker.inspect_container(id, None).await {
                Ok(inspect) => {
                    let state = inspect.state.unwrap_or_default();
                    let running = state.running == Some(true);
                    let bad_exit =
                        state.exit_code.unwrap_or(0) != 0 || state.oom_killed == Some(true);
                    let pid = state
                        .pid
                        .filter(|_| running)
                        .and_then(|p| u32::try_from(p).ok())
                        .filter(|p| *p > 0);
                    let ended = matches!(
                        state.status,
                        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
                    );
                    return Ok((running, ended && bad_exit && ours(id), pid));
                }
                Err(e) if status(&e) == Some(404) => {} // on another node
                Err(e) => return Err(engine(format!("inspect container {id}"))(e)),
            }
        }
        let running = phase(task) == Phase::Running;
        let failed = tasks::failed(task) && tasks::container_id(task).is_none_or(ours);
        let pid = task
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref()?.pid)
            .filter(|_| running)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        Ok((running, failed, pid))
    }

    /// Waits for the task a start asked for (one not in `before`) to run;
    /// a task the scheduler cannot place, or that fails, is an error.
    async fn await_running(
        &self,
        name: &AgentName,
        id: &str,
        before: &[String],
    ) -> std::result::Result<(), NotRunning> {
        let started = tokio::time::Instant::now();
        loop {
            let tasks = self.tasks_of(id).await?;
            let new = tasks
                .iter()
                .filter(|t| t.id.as_ref().is_some_and(|i| !before.contains(i)))
                .collect::<Vec<_>>();
            let waited = started.elapsed();
            match current(new.iter().copied()).map(|t| (phase(t), t)) {
                Some((Phase::Running, _)) => return Ok(()),
                Some((Phase::Ended, task)) => {
                    let why = Error::Failed(format!(
                        "h-{name}'s task ended as it started: {}",
                        tasks::describe(task)
                    ));
                    return Err(if tasks::failed_before_running(task) {
                        NotRunning::NeverRan {
                            task: task.id.clone().unwrap_or_default(),
                            why,
                        }
                    } else {
                        NotRunning::Other(why)
                    });
                }
                Some((Phase::Unplaced, task)) if waited >= PLACEMENT_WAIT => {
                    return Err(NotRunning::Other(Error::Failed(format!(
                        "h-{name} cannot be placed: {} (its state stays on the node it is \
                         pinned to; change its placement back, or move it)",
                        tasks::describe(task)
                    ))));
                }
                _ if waited >= START_WAIT => {
                    return Err(NotRunning::Other(Error::Failed(format!(
                        "h-{name}'s task did not start within {}s",
                        START_WAIT.as_secs()
                    ))));
                }
                _ => tokio::time::sleep(WAIT_STEP).await,
            }
        }
    }
}

#[async_trait::async_trait]
impl Runtime for SwarmRuntime {
    fn name(&self) -> &'static str {
        "swarm"
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<()> {
        let image = spec.image.clone().unwrap_or_else(|| self.image.clone());
        // A bind names a host path, never a volume (another agent's).
        spec.check_paths()?;
        self.check_volumes(spec).await?;
        let skeleton =
            crate::docker::image::ensure(&self.docker, &self.build, &image, Flavour::Swarm).await?;
        self.ensure_network(&spec.name).await?;
        let on_link = match &spec.transport {
            crate::Transport::Unix => None,
            crate::Transport::Tls(link) => Some(service::OnLink {
                addr: self.relay_for(spec, link).await?,
                secrets: self.credential_secrets(spec, link).await?,
            }),
        };
        let keep: Vec<String> = on_link
            .iter()
            .flat_map(|l| l.secrets.iter().filter_map(|s| s.secret_id.clone()))
            .collect();
        let configs = self.etc_configs(spec).await?;
        let keep_configs: Vec<String> =
            configs.iter().filter_map(|c| c.config_id.clone()).collect();
        let mut new = service::spec(
            spec,
            service::Parts {
                name: self.service_name(&spec.name),
                image,
                skeleton,
                labels: self.labels(&spec.name),
                volumes: self.volume_mounts(spec),
                configs,
                core_node: self.local_node().await?,
                link: on_link,
            },
        );
        if self.tmpfs_flags {
            service::tmpfs_as_docker(&mut new);
        }
        if self.no_new_privs {
            service::no_new_privileges(&mut new);
        }
        let defined = self.define(spec, new).await;
        // The older secrets and configs (or, had this failed, the new).
        let (keep, keep_configs) = if defined.is_ok() {
            (keep, keep_configs)
        } else {
            (Vec::new(), Vec::new())
        };
        self.remove_secrets(&spec.name, &keep).await;
        self.remove_configs(&spec.name, &keep_configs).await;
        defined
    }

    async fn start(&self, name: &AgentName) -> Result<()> {
        let service = self.owned_service(name).await?;
        let id = service.id.clone().unwrap_or_default();
        let tasks = self.tasks_of(&id).await?;
        if tasks.iter().any(|t| phase(t) == Phase::Running) {
            return Ok(());
        }
        let mut before: Vec<String> = tasks.iter().filter_map(|t| t.id.clone()).collect();
        let mut tries = 1;
        let started = loop {
            let tried = async {
                self.update(name, |spec| {
                    service::set_replicas(spec, 1);
                    // A new task even when the replica count was 1 (the last ended).
                    if let Some(template) = spec.task_template.as_mut() {
                        template.force_update = Some(template.force_update.unwrap_or(0) + 1);
                    }
                })
                .await?;
                self.await_running(name, &id, &before).await
            };
            match tried.await {
                Err(NotRunning::NeverRan { task, why }) if tries < START_TRIES => {
                    tracing::warn!(agent = %name, "the engine failed the task before it ran, trying a new one: {why}");
                    tries += 1;
                    before.push(task);
                }
                // Any failure, on any try, goes to the scale-down below.
                other => break other.map_err(NotRunning::into_error),
            }
        };
        match started {
            Ok(()) => {
                self.watch.wake();
                Ok(())
            }
            Err(e) => {
                // Never left to start later on its own.
                let service = self.owned_service(name).await?;
                if let Err(down) = self.scale_down(name, &service, START_WAIT).await {
                    tracing::warn!(agent = %name, "after a failed start: {down}");
                }
                Err(e)
            }
        }
    }

    /// The task stops with the grace its spec was made with
    /// ([`crate::STOP_GRACE`], what core passes here); `grace` bounds the
    /// wait beyond it. Not the Engine's stop of the task's container: a
    /// task ending under a service that still wants it fails, and Engine
    /// 20.10's swarm manager can then crash on the service's removal
    /// (a nil task in `SetServiceTasksRemove`).
    async fn stop(&self, name: &AgentName, grace: Duration) -> Result<()> {
        let service = self.owned_service(name).await?;
        let wait = grace.max(crate::STOP_GRACE) + Duration::from_secs(60);
        self.scale_down(name, &service, wait).await
    }

    async fn destroy(&self, name: &AgentName) -> Result<()> {
        let service = match self.service(name).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.remove_secrets(name, &[]).await;
                self.remove_configs(name, &[]).await;
                self.release_relay(name).await;
                self.remove_network(name).await;
                return Ok(());
            }
            Err(e @ Error::Foreign { .. }) => {
                tracing::warn!(agent = %name, "not removed: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let id = service.id.clone().unwrap_or_default();
        // Stopped first, so that its end is ours and the network frees.
        if let Err(e) = self.scale_down(name, &service, START_WAIT).await {
            tracing::warn!(agent = %name, "destroying: {e}");
        }
        match self.docker.delete_service(&id).await {
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine(format!("remove service h-{name}"))(e)),
        }
        self.remove_secrets(name, &[]).await;
        self.remove_configs(name, &[]).await;
        self.release_relay(name).await;
        self.remove_network(name).await;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        let ours = format!("{HIVE_LABEL}={}", self.hive);
        let filters = HashMap::from([("label", vec![AGENT_LABEL, ours.as_str()])]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let services = self
            .docker
            .list_services(Some(options))
            .await
            .map_err(engine("list services"))?;
        let nodes = self.nodes().await?;
        let mut list = Vec::with_capacity(services.len());
        for service in services {
            let labels = service.spec.as_ref().and_then(|s| s.labels.as_ref());
            let Some(name) = labels
                .and_then(|l| l.get(AGENT_LABEL))
                .and_then(|n| AgentName::parse(n).ok())
            else {
                continue;
            };
            let tasks = self
                .tasks_of(service.id.as_deref().unwrap_or_default())
                .await?;
            let task = current(tasks.iter());
            let (mut running, mut failed, mut pid) = match task {
                Some(task) => self.task_state(task).await?,
                None => (false, false, None),
            };
            let node = task.and_then(|t| t.node_id.clone()).map(|id| {
                let (hostname, down) = nodes
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| (id.clone(), false));
                Node { hostname, id, down }
            });
            // On a node that is down: ended with it, unless we stopped it.
            if running && node.as_ref().is_some_and(|n| n.down) {
                let ours = task
                    .and_then(tasks::container_id)
                    .is_some_and(|id| self.stopping().contains(id));
                (running, failed, pid) = (false, !ours, None);
            }
            list.push(ContainerStatus {
                name,
                running,
                failed,
                pid,
                node,
            });
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.exits.subscribe()
    }

    fn state_volume(&self, name: &AgentName, generation: u32) -> Option<String> {
        Some(SwarmRuntime::state_volume(self, name, generation))
    }

    /// Removes the agent's state volumes of every generation on this
    /// engine's node (ours only); one on another node is named in the
    /// error, not claimed gone.
    async fn purge_state(&self, name: &AgentName, placement: &crate::Placement) -> Result<()> {
        let here = self.local_node().await?;
        let elsewhere = placement.node.as_deref().filter(|node| *node != here);
        self.remove_state_volumes(name, elsewhere).await
    }

    fn survives_daemon(&self) -> bool {
        true
    }

    fn multi_host(&self) -> bool {
        true
    }

    async fn link_relay(&self) -> Result<Option<std::net::IpAddr>> {
        self.relay_addr().await
    }

    async fn logs(&self, name: &AgentName, lines: usize) -> Result<Vec<String>> {
        if lines == 0 {
            return Ok(Vec::new());
        }
        let service = self.owned_service(name).await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let id = service.id.unwrap_or_default();
        let mut stream = self.docker.service_logs(&id, Some(options));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => text.extend_from_slice(chunk.as_ref()),
                Err(e) if status(&e) == Some(404) => {
                    return Err(Error::NoSuchContainer(name.clone()));
                }
                Err(e) => return Err(engine(format!("logs of h-{name}"))(e)),
            }
        }
        Ok(crate::docker::last_lines(&text, lines))
    }

    async fn watch_output(&self, name: &AgentName) -> Result<crate::follow::OutputWatch> {
        let service = self.owned_service(name).await?;
        // Across the service's tasks.
        let id = service.id.unwrap_or_default();
        Ok(crate::follow::OutputWatch::chunks(
            self.docker
                .service_logs(&id, Some(crate::docker::follow_from_now())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_manager_of_an_active_swarm_runs_a_hive() {
        assert_eq!(manager_problem(LocalNodeState::ACTIVE, true), None);
        let inactive = manager_problem(LocalNodeState::INACTIVE, false).unwrap();
        assert!(
            inactive.contains("not in a swarm (state inactive)"),
            "{inactive}"
        );
        let worker = manager_problem(LocalNodeState::ACTIVE, false).unwrap();
        assert!(worker.contains("a swarm worker, not a manager"), "{worker}");
        assert!(manager_problem(LocalNodeState::PENDING, true).is_some());
    }
}
