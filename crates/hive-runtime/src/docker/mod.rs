//! The `docker` backend: one Docker Engine container `h-<agent>` per agent, via the Engine API.
//!
//! Talks to the local engine over its unix socket with `bollard`; nothing
//! shells out to the `docker` CLI. The engine must share this host's
//! filesystem: binds name host paths.
//!
//! **Hives on one engine.** A runtime serves one hive ([`HiveId`], from its
//! state dir). Its containers are named `h-<agent>-<hive>` (hostname
//! `h-<agent>`) and carry the labels [`HIVE_LABEL`]`=<hive>` and
//! [`AGENT_LABEL`]`=<agent>`; `list`, the event watcher (an engine-side
//! label filter) and every call by name act only on containers with this
//! hive's label. A container with our name but not our label (another
//! hive's, or not made by hyperhive) is never removed, started, stopped nor
//! reported: `create` refuses with [`Error::Foreign`]. The skeleton image
//! is shared by every hive: it is the same for the same host layout.
//!
//! **The image.** By default containers run [`BASE_IMAGE`], a skeleton
//! built locally `FROM scratch` through the build API from a tar context
//! made in memory (no registry is ever contacted): empty mount points plus
//! the host's top-level symlinks (`/bin -> usr/bin` on a merged-usr host).
//! At run time the host's `/usr` (and `/bin`, `/lib*` where they are real
//! directories) and the curated `/etc` ([`crate::etc`], written into the
//! spec's `etc_dir`; never the host's) are bound read-only, which gives the
//! dynamically linked `hive` binary and the agent's tools a working system. Any image
//! named `hyperhive/base:*` is ours and is (re)built when absent or built
//! for another host layout; any other image must already be on the engine,
//! runs without the host binds, and is never pulled.
//!
//! **The view.** The root filesystem is read-only; `/tmp`, `/var/tmp` and
//! `/run` are tmpfs (the engine mounts shallower targets first, so the
//! `/run/hive/...` binds land on top of the `/run` tmpfs). `/state`,
//! `/shared`, the agent's socket at `/run/hive/mcp.sock`, core's egress
//! proxy socket at `/run/hive/egress.sock`, the page dir at
//! `/run/hive/page`, the control dir at `/run/hive/control` (read-only), the
//! `hive` binary at `/run/hive/bin/hive` (read-only) and the spec's binds
//! are bind mounts whose sources must exist. The engine's init is PID 1 (it
//! forwards the stop signal and reaps orphans); the program is its child,
//! runs as the spec's unprivileged uid:gid (the daemon's without one) in
//! `/state`, with hostname `h-<agent>`. The network is `none`: a namespace
//! with only `lo`, so the host's loopback is out of reach and the only way
//! out is the egress socket. `/dev` is the engine's default (no `kmsg`),
//! with its default seccomp profile; the spec's limits become the
//! container's memory and nano-CPUs. Containers never restart on their
//! own; their output goes to the engine's `json-file` log (10 MB × 3).
//!
//! **Exits.** A background task follows the engine's event stream
//! (`start`/`die` of our label) and forwards each as a [`StateChange`],
//! reconnecting if the stream ends; after a reconnect it compares the
//! containers' states with what it last reported and reports the
//! difference. A death is expected when a `stop`, `destroy` or `create` of
//! this runtime caused it; a container is failed when it exited non-zero
//! (or was OOM-killed) and its death was not expected. That intent lives in
//! memory: after a daemon restart, a container stopped earlier with a
//! non-zero code lists as failed.

pub(crate) mod events;
pub(crate) mod image;

use events::{Exits, list_ours};
use image::{HOST_DIRS, HOST_ROOTS};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::MutexGuard;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig, Mount, MountType, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use hive_proto::AgentName;
use tokio::sync::broadcast;

use crate::{ContainerSpec, ContainerStatus, Error, HiveId, Result, Runtime, StateChange, mount};

/// The image containers run unless told otherwise; built locally.
pub const BASE_IMAGE: &str = "hyperhive/base:local";

/// Images named with this prefix are hyperhive's skeleton, built locally.
pub const BASE_REPOSITORY: &str = "hyperhive/base:";

/// Label naming the agent a container belongs to.
pub const AGENT_LABEL: &str = "hyperhive.agent";

/// Label naming the hive ([`HiveId`]) a container belongs to.
pub const HIVE_LABEL: &str = "hyperhive.hive";

/// Label of a skeleton image: the host layout it was built for. Containers
/// of an image with this label get the host system bound in.
pub const BASE_LABEL: &str = "hyperhive.base";
/// The tmpfs mounts of every container: target, mount options.
pub(crate) const TMPFS: &[(&str, &str)] = &[
    ("/tmp", "rw,exec,nosuid,nodev,mode=1777"),
    ("/var/tmp", "rw,exec,nosuid,nodev,mode=1777"),
    ("/run", "rw,nosuid,nodev,mode=755"),
];
/// Docker Engine containers, one per agent.
pub struct DockerRuntime {
    docker: Docker,
    hive: HiveId,
    image: String,
    exits: Exits,
    /// One image build at a time.
    build: tokio::sync::Mutex<()>,
}

/// Whether the local Docker Engine answers; the reason if not.
pub async fn probe() -> std::result::Result<(), String> {
    let docker = connect_engine().await?;
    docker
        .ping()
        .await
        .map(|_| ())
        .map_err(|e| format!("docker engine did not answer a ping: {e}"))
}

/// A client for the local engine, its API version negotiated down to the
/// engine's (the client's default is newer than e.g. Engine 20.10's 1.41).
pub(crate) async fn connect_engine() -> std::result::Result<Docker, String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot reach the docker engine: {e}"))?;
    docker
        .negotiate_version()
        .await
        .map_err(|e| format!("cannot reach the docker engine: {e}"))
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` if it is a `unix://`
    /// address, else `/var/run/docker.sock`) and starts following its
    /// events. `default_image` replaces [`BASE_IMAGE`]; a spec's own image
    /// overrides both. It acts only on containers of `hive`. Must be called
    /// inside a tokio runtime.
    pub async fn connect(default_image: Option<String>, hive: HiveId) -> Result<Self> {
        let docker = connect_engine()
            .await
            .map_err(|reason| Error::Unavailable {
                runtime: "docker",
                reason,
            })?;
        let exits = Exits::follow(docker.clone(), hive.clone());
        Ok(Self {
            docker,
            hive,
            image: default_image.unwrap_or_else(|| BASE_IMAGE.to_owned()),
            exits,
            build: tokio::sync::Mutex::new(()),
        })
    }

    /// The engine's name of `agent`'s container: `h-<agent>-<hive>`.
    pub fn container_name(&self, agent: &AgentName) -> String {
        format!("h-{agent}-{}", self.hive)
    }

    /// The image containers run when their spec names none.
    pub fn image(&self) -> &str {
        &self.image
    }
    /// Makes sure the default image is on the engine, building it if it is
    /// ours ([`BASE_REPOSITORY`]) and absent or built for another layout.
    pub async fn ensure_image(&self) -> Result<()> {
        self.ensure(&self.image).await.map(|_| ())
    }

    /// Ensures `image`; returns whether it is a skeleton (host system bound
    /// in at run time).
    async fn ensure(&self, image: &str) -> Result<bool> {
        image::ensure(&self.docker, &self.build, image).await
    }

    fn stopping(&self) -> MutexGuard<'_, HashSet<String>> {
        self.exits.stopping()
    }

    fn container_config(&self, spec: &ContainerSpec, skeleton: bool) -> ContainerCreateBody {
        let image = spec.image.clone().unwrap_or_else(|| self.image.clone());
        let env = crate::process::base_env(spec, "docker", crate::process::Inside::sandbox(spec))
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mounts = mounts(spec, skeleton);
        let network = match &spec.transport {
            // Only `lo`: the way out is core's egress proxy socket.
            crate::Transport::Unix => "none".to_owned(),
            // The network on which only core's link listener answers
            // (checked at `create`).
            crate::Transport::Tls(link) => {
                link.network.clone().unwrap_or_else(|| "none".to_owned())
            }
        };
        ContainerCreateBody {
            image: Some(image),
            entrypoint: Some(vec![mount::HIVE_BIN.to_owned()]),
            cmd: Some(spec.args.clone()),
            env: Some(env),
            working_dir: Some(mount::STATE.to_owned()),
            hostname: Some(spec.container_name()),
            // The agent's unprivileged user; without one, the daemon's own.
            user: Some(match spec.user {
                Some(user) => format!("{}:{}", user.uid, user.gid),
                None => format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid()),
            }),
            labels: Some(HashMap::from([
                (AGENT_LABEL.to_owned(), spec.name.to_string()),
                (HIVE_LABEL.to_owned(), self.hive.to_string()),
            ])),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                tmpfs: Some(
                    TMPFS
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                readonly_rootfs: Some(true),
                // The agent runs unprivileged; with no capabilities and no
                // new privileges, a setuid binary of the host's `/usr` (a
                // skeleton image binds it) cannot make it root with the
                // engine's default capabilities.
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                // The engine's init (tini) as PID 1: forwards the stop
                // signal and reaps orphans; the program runs as its child.
                init: Some(true),
                network_mode: Some(network),
                memory: spec
                    .limits
                    .memory_bytes
                    .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
                nano_cpus: spec.limits.cpu_millis.map(|m| i64::from(m) * 1_000_000),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_owned()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), "10m".to_owned()),
                        ("max-file".to_owned(), "3".to_owned()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The id of the agent's container, if there is one of ours.
    async fn id_of(&self, name: &AgentName) -> Result<Option<String>> {
        match self.inspect(name).await {
            Ok(inspect) => Ok(inspect.id),
            Err(Error::NoSuchContainer(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The agent's container, if it is ours: one with the name but not
    /// this hive's label is [`Error::Foreign`].
    async fn inspect(&self, name: &AgentName) -> Result<ContainerInspectResponse> {
        let container = self.container_name(name);
        let inspect = self
            .docker
            .inspect_container(&container, None)
            .await
            .map_err(for_agent(name, "inspect"))?;
        let labels = inspect.config.as_ref().and_then(|c| c.labels.as_ref());
        let hive = labels.and_then(|l| l.get(HIVE_LABEL));
        let agent = labels.and_then(|l| l.get(AGENT_LABEL));
        if hive.map(String::as_str) != Some(self.hive.as_str())
            || agent.map(String::as_str) != Some(name.as_str())
        {
            return Err(Error::Foreign { container });
        }
        Ok(inspect)
    }

    /// The id of the agent's container, checked to be ours.
    async fn owned_id(&self, name: &AgentName) -> Result<String> {
        self.inspect(name)
            .await?
            .id
            .ok_or_else(|| Error::NoSuchContainer(name.clone()))
    }
}

/// Every bind of a container of `spec`: the host system (for a skeleton
/// image), the `hive` binary and engine, `/state`, `/shared`, the agent's
/// sockets, page and control dirs (or, on the link, its credential and
/// link dir), and the spec's own binds. The one place
/// the docker and swarm backends wire a container to the host's files.
pub(crate) fn mounts(spec: &ContainerSpec, skeleton: bool) -> Vec<Mount> {
    let mut mounts = Vec::new();
    if skeleton {
        mounts.extend(system_mounts(Some(&spec.etc_dir)));
    }
    mounts.push(bind(&spec.program, mount::HIVE_BIN, true));
    if let Some(engine) = &spec.engine_bin {
        mounts.push(bind(engine, mount::CLAUDE_BIN, true));
    }
    mounts.push(bind(&spec.state_dir, mount::STATE, false));
    mounts.push(bind(&spec.shared_dir, mount::SHARED, false));
    match &spec.transport {
        crate::Transport::Unix => {
            mounts.push(bind(&spec.socket, mount::SOCKET, false));
            mounts.push(bind(&spec.egress_socket, mount::EGRESS, false));
            mounts.push(bind(&spec.page_dir, mount::PAGE_DIR, false));
            mounts.push(bind(&spec.control_dir, mount::CONTROL, true));
        }
        crate::Transport::Tls(link) => {
            mounts.push(bind(&link.credentials, mount::CREDENTIAL, true));
            mounts.push(bind(&link.link_dir, mount::LINK, false));
        }
    }
    for extra in &spec.binds {
        mounts.push(bind(
            &extra.host,
            &extra.container.to_string_lossy(),
            extra.read_only,
        ));
    }
    mounts
}

/// The host system a skeleton container runs on, read-only: `/usr`, the
/// root dirs of the host's layout, and `etc` (a curated dir) as `/etc`.
pub(crate) fn system_mounts(etc: Option<&Path>) -> Vec<Mount> {
    let mut mounts = Vec::new();
    for dir in HOST_DIRS {
        mounts.push(bind(&Path::new("/").join(dir), &format!("/{dir}"), true));
    }
    if let Some(etc) = etc {
        mounts.push(bind(etc, "/etc", true));
    }
    for dir in HOST_ROOTS {
        let host = Path::new("/").join(dir);
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            mounts.push(bind(&host, &format!("/{dir}"), true));
        }
    }
    mounts
}

/// Writes the curated `/etc` of `spec` (for a skeleton image) off the
/// async threads.
pub(crate) async fn write_etc(spec: &ContainerSpec) -> Result<()> {
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || crate::etc::write_etc(&spec))
        .await
        .map_err(|e| Error::Failed(format!("write the curated /etc: {e}")))?
}

pub(crate) fn bind(host: &Path, container: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(container.to_owned()),
        source: Some(host.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The HTTP status of an engine error, if it is one.
pub(crate) fn status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(crate) fn engine(what: impl Into<String>) -> impl FnOnce(EngineError) -> Error {
    let what = what.into();
    move |e| Error::Failed(format!("docker: {what}: {e}"))
}

/// Maps "no such container" to [`Error::NoSuchContainer`].
fn for_agent<'a>(name: &'a AgentName, what: &'a str) -> impl FnOnce(EngineError) -> Error + 'a {
    move |e| match status(&e) {
        Some(404) => Error::NoSuchContainer(name.clone()),
        _ => Error::Failed(format!("docker: {what} h-{name}: {e}")),
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<()> {
        if let crate::Transport::Tls(link) = &spec.transport
            && link.network.is_none()
        {
            return Err(Error::Failed(format!(
                "h-{}: the tls transport on docker needs the network that reaches core's \
                 link listener (`hive serve --link-network`)",
                spec.name
            )));
        }
        let image = spec.image.clone().unwrap_or_else(|| self.image.clone());
        let skeleton = self.ensure(&image).await?;
        if skeleton {
            write_etc(spec).await?;
        }
        let name = self.container_name(&spec.name);
        // A foreign container of that name is refused here, never removed.
        if let Some(id) = self.id_of(&spec.name).await? {
            self.stopping().insert(id.clone());
            let remove = RemoveContainerOptionsBuilder::default().force(true).build();
            match self.docker.remove_container(&id, Some(remove)).await {
                Ok(()) => tracing::info!(agent = %spec.name, "removed a stale container {name}"),
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => return Err(engine(format!("remove stale {name}"))(e)),
            }
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), self.container_config(spec, skeleton))
            .await
            .map_err(engine(format!("create {name}")))?;
        for warning in created.warnings {
            tracing::warn!(agent = %spec.name, "docker: {warning}");
        }
        Ok(())
    }

    async fn start(&self, name: &AgentName) -> Result<()> {
        let id = self.owned_id(name).await?;
        // Starting a running container answers 304, which is a success.
        self.docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map_err(for_agent(name, "start"))
    }

    async fn stop(&self, name: &AgentName, grace: Duration) -> Result<()> {
        let inspect = self.inspect(name).await?;
        if inspect.state.and_then(|s| s.running) != Some(true) {
            return Ok(());
        }
        let Some(id) = inspect.id else {
            return Err(Error::NoSuchContainer(name.clone()));
        };
        self.stopping().insert(id.clone());
        // The engine sends the stop signal (SIGTERM), waits `t` seconds,
        // then SIGKILLs, and answers once the container is gone.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let t = i32::try_from(secs).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(t).build();
        self.docker
            .clone()
            .with_timeout(grace + Duration::from_secs(60))
            .stop_container(&id, Some(options))
            .await
            .map_err(for_agent(name, "stop"))
    }

    /// Idempotent: destroying a container that does not exist is a no-op,
    /// and so is one of that name that is not ours (it is left alone).
    async fn destroy(&self, name: &AgentName) -> Result<()> {
        let id = match self.id_of(name).await {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(()),
            Err(e @ Error::Foreign { .. }) => {
                tracing::warn!(agent = %name, "not removed: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        self.stopping().insert(id.clone());
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(&id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine(format!("remove h-{name}"))(e)),
        }
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        let found = list_ours(&self.docker, &self.hive)
            .await
            .map_err(engine("list containers"))?;
        let mut list = Vec::with_capacity(found.len());
        for (name, id) in found {
            let inspect = match self.docker.inspect_container(&id, None).await {
                Ok(i) => i,
                Err(e) if status(&e) == Some(404) => continue, // removed meanwhile
                Err(e) => return Err(engine(format!("inspect h-{name}"))(e)),
            };
            let state = inspect.state.unwrap_or_default();
            let running = state.running == Some(true);
            let ended = matches!(
                state.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            let bad_exit = state.exit_code.unwrap_or(0) != 0
                || state.oom_killed == Some(true)
                || state.status == Some(ContainerStateStatusEnum::DEAD);
            let failed = !running && ended && bad_exit && !self.stopping().contains(&id);
            let pid = state
                .pid
                .filter(|_| running)
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p > 0);
            list.push(ContainerStatus {
                name,
                running,
                failed,
                pid,
                node: None,
            });
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.exits.subscribe()
    }

    fn survives_daemon(&self) -> bool {
        true
    }

    async fn logs(&self, name: &AgentName, lines: usize) -> Result<Vec<String>> {
        if lines == 0 {
            return Ok(Vec::new());
        }
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let id = self.owned_id(name).await?;
        let mut stream = self.docker.logs(&id, Some(options));
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(chunk.map_err(for_agent(name, "logs"))?.as_ref());
        }
        Ok(last_lines(&text, lines))
    }

    async fn watch_output(&self, name: &AgentName) -> Result<crate::follow::OutputWatch> {
        let id = self.owned_id(name).await?;
        // The stream ends when the container stops.
        Ok(crate::follow::OutputWatch::chunks(
            self.docker.logs(&id, Some(follow_from_now())),
        ))
    }
}

/// The last `lines` lines of a container's output as the log API gave it.
pub(crate) fn last_lines(text: &[u8], lines: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].iter().map(|l| (*l).to_owned()).collect()
}

/// The Engine's log options for a follow of output from now on (`tail 0`):
/// each chunk it forwards is a wake ([`crate::follow::OutputWatch::chunks`]).
pub(crate) fn follow_from_now() -> bollard::query_parameters::LogsOptions {
    LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(true)
        .tail("0")
        .build()
}
