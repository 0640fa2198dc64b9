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

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EventMessage,
    HostConfig, HostConfigLogConfig, Mount, MountType, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptions, StartContainerOptions, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use hive_proto::AgentName;
use nix::sys::signal::Signal;
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

/// Top-level host paths that are either bound read-only (directories) or
/// recreated as symlinks in the skeleton (symlinks, e.g. merged `/usr`).
/// Not `/sbin`: the engine mounts its init at `/sbin/docker-init`, which
/// needs a writable mount point, so the skeleton's `/sbin` is an empty
/// directory (`/usr/sbin` stays on `PATH`).
const HOST_ROOTS: &[&str] = &["bin", "lib", "lib32", "lib64", "libx32"];

/// Bumped when the skeleton changes, so that older builds are replaced.
const SKELETON_VERSION: &str = "2";

/// Host directories always bound read-only into a skeleton container.
const HOST_DIRS: &[&str] = &["usr"];

/// Empty directories of the skeleton: mount points and a few expected dirs.
const SKELETON_DIRS: &[&str] = &[
    "usr", "etc", "sbin", "state", "shared", "agents", "applied", "tmp", "run", "proc", "sys",
    "dev", "var", "var/tmp", "root",
];

/// The tmpfs mounts of every container: target, mount options.
const TMPFS: &[(&str, &str)] = &[
    ("/tmp", "rw,exec,nosuid,nodev,mode=1777"),
    ("/var/tmp", "rw,exec,nosuid,nodev,mode=1777"),
    ("/run", "rw,nosuid,nodev,mode=755"),
];

/// Pause before reconnecting to the event stream.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Docker Engine containers, one per agent.
pub struct DockerRuntime {
    docker: Docker,
    hive: HiveId,
    image: String,
    changes: broadcast::Sender<StateChange>,
    stopping: Stopping,
    /// One image build at a time.
    build: tokio::sync::Mutex<()>,
    events: tokio::task::JoinHandle<()>,
}

impl Drop for DockerRuntime {
    fn drop(&mut self) {
        self.events.abort();
    }
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
async fn connect_engine() -> std::result::Result<Docker, String> {
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
        let (changes, _) = broadcast::channel(256);
        let stopping = Stopping::default();
        let watcher = Watcher {
            docker: docker.clone(),
            hive: hive.clone(),
            tracker: Tracker {
                hive: hive.clone(),
                changes: changes.clone(),
                stopping: stopping.clone(),
                reported: HashMap::new(),
            },
        };
        let events = tokio::spawn(watcher.run(now_nanos()));
        Ok(Self {
            docker,
            hive,
            image: default_image.unwrap_or_else(|| BASE_IMAGE.to_owned()),
            changes,
            stopping,
            build: tokio::sync::Mutex::new(()),
            events,
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
        let ours = image.starts_with(BASE_REPOSITORY);
        let layout = host_layout();
        let _guard = self.build.lock().await;
        let mut replaced = None;
        match self.docker.inspect_image(image).await {
            Ok(found) => {
                replaced = found.id;
                let label = found
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|mut labels| labels.remove(BASE_LABEL));
                match label {
                    Some(built_for) if ours && built_for != layout => {
                        tracing::info!(image, "rebuilding: built for another host layout");
                    }
                    Some(_) => return Ok(true),
                    None if ours => {
                        tracing::info!(image, "rebuilding: not a hyperhive skeleton");
                    }
                    None => return Ok(false),
                }
            }
            Err(e) if status(&e) == Some(404) => {
                if !ours {
                    return Err(Error::Failed(format!(
                        "image {image} is not on the docker engine and hyperhive does not pull \
                         images: build or load it first, or use {BASE_IMAGE}"
                    )));
                }
            }
            Err(e) => return Err(engine(format!("inspect image {image}"))(e)),
        }
        self.build_skeleton(image, &layout).await?;
        if let Some(old) = replaced {
            // Untagged now; the engine refuses while containers still use it.
            let removed = self
                .docker
                .remove_image(&old, None::<RemoveImageOptions>, None);
            if let Err(e) = removed.await {
                tracing::debug!(image, "kept the replaced image {old}: {e}");
            }
        }
        Ok(true)
    }

    async fn build_skeleton(&self, image: &str, layout: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let context = skeleton_context().map_err(Error::io("build the image context"))?;
        let labels = HashMap::from([(BASE_LABEL, layout)]);
        let options = BuildImageOptionsBuilder::default()
            .t(image)
            .labels(&labels)
            .rm(true)
            .forcerm(true)
            .build();
        let mut progress =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = progress.next().await {
            let step = step.map_err(engine(format!("build image {image}")))?;
            if let Some(line) = step.stream.as_deref().map(str::trim)
                && !line.is_empty()
            {
                tracing::debug!(image, "{line}");
            }
        }
        tracing::info!(image, elapsed = ?started.elapsed(), "built the base image");
        Ok(())
    }

    fn stopping(&self) -> MutexGuard<'_, HashSet<String>> {
        lock(&self.stopping)
    }

    fn container_config(&self, spec: &ContainerSpec, skeleton: bool) -> ContainerCreateBody {
        let image = spec.image.clone().unwrap_or_else(|| self.image.clone());
        let env = crate::process::base_env(spec, "docker", crate::process::Inside::SANDBOX)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut mounts = Vec::new();
        if skeleton {
            for dir in HOST_DIRS {
                mounts.push(bind(&Path::new("/").join(dir), &format!("/{dir}"), true));
            }
            mounts.push(bind(&spec.etc_dir, "/etc", true));
            for dir in HOST_ROOTS {
                let host = Path::new("/").join(dir);
                if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                    mounts.push(bind(&host, &format!("/{dir}"), true));
                }
            }
        }
        mounts.push(bind(&spec.program, mount::HIVE_BIN, true));
        if let Some(engine) = &spec.engine_bin {
            mounts.push(bind(engine, mount::CLAUDE_BIN, true));
        }
        mounts.push(bind(&spec.state_dir, mount::STATE, false));
        mounts.push(bind(&spec.shared_dir, mount::SHARED, false));
        mounts.push(bind(&spec.socket, mount::SOCKET, false));
        mounts.push(bind(&spec.egress_socket, mount::EGRESS, false));
        mounts.push(bind(&spec.page_dir, mount::PAGE_DIR, false));
        mounts.push(bind(&spec.control_dir, mount::CONTROL, true));
        for extra in &spec.binds {
            mounts.push(bind(
                &extra.host,
                &extra.container.to_string_lossy(),
                extra.read_only,
            ));
        }
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
                // The engine's init (tini) as PID 1: forwards the stop
                // signal and reaps orphans; the program runs as its child.
                init: Some(true),
                // Only `lo`: the way out is core's egress proxy socket.
                network_mode: Some("none".to_owned()),
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

fn bind(host: &Path, container: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(container.to_owned()),
        source: Some(host.to_string_lossy().into_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The skeleton version and the host's top-level layout it mirrors:
/// `v1 bin=usr/bin lib/ ...` (`=` a symlink, `/` a directory).
fn host_layout() -> String {
    let mut parts = vec![format!("v{SKELETON_VERSION}")];
    for dir in HOST_ROOTS {
        let host = Path::new("/").join(dir);
        if let Ok(target) = std::fs::read_link(&host) {
            parts.push(format!("{dir}={}", target.display()));
        } else if host.is_dir() {
            parts.push(format!("{dir}/"));
        }
    }
    parts.join(" ")
}

/// The build context of the skeleton: a Dockerfile copying `rootfs/`.
fn skeleton_context() -> std::io::Result<Vec<u8>> {
    use tar::{EntryType, Header};
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = b"FROM scratch\nCOPY rootfs/ /\n";
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(dockerfile.len() as u64);
    tar.append_data(&mut header, "Dockerfile", &dockerfile[..])?;

    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        // The engine copies an image dir's mode onto the tmpfs mounted
        // there: the agent's uid must be able to write its temp files.
        header.set_mode(if matches!(path, "tmp" | "var/tmp") {
            0o1777
        } else {
            0o755
        });
        header.set_size(0);
        tar.append_data(&mut header, format!("rootfs/{path}/"), std::io::empty())
    };
    dir(&mut tar, "")?;
    for path in SKELETON_DIRS {
        dir(&mut tar, path)?;
    }
    for name in HOST_ROOTS {
        let host = Path::new("/").join(name);
        if let Ok(target) = std::fs::read_link(&host) {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, format!("rootfs/{name}"), target)?;
        } else if host.is_dir() {
            dir(&mut tar, name)?;
        }
    }
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    tar.append_link(&mut header, "rootfs/var/run", "../run")?;
    tar.into_inner()
}

/// The HTTP status of an engine error, if it is one.
fn status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine(what: impl Into<String>) -> impl FnOnce(EngineError) -> Error {
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

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// How a container stopped, worded like the child backends: `exited 0`,
/// `exit code 1`, `killed by SIGKILL` (the engine reports death by signal
/// N as exit code 128+N).
fn describe_exit(code: i64) -> String {
    if code == 0 {
        return "exited 0".to_owned();
    }
    let signal = (129..=192)
        .contains(&code)
        .then(|| i32::try_from(code - 128).ok())
        .flatten()
        .and_then(|n| Signal::try_from(n).ok());
    if let Some(signal) = signal {
        return format!("killed by {signal}");
    }
    format!("exit code {code}")
}

/// Ids of containers a `stop`, `destroy` or `create` of ours is stopping
/// or stopped: their death is expected, not a failure. An id leaves the
/// set when the watcher sees the container start again (or destroyed), in
/// event order, so a late death event is never misread.
type Stopping = Arc<Mutex<HashSet<String>>>;

fn lock(set: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The background task following the engine's events.
struct Watcher {
    docker: Docker,
    hive: HiveId,
    tracker: Tracker,
}

/// What the watcher has reported, and the turning of engine events and
/// container states into [`StateChange`]s.
struct Tracker {
    /// Events of containers without this hive's label are ignored.
    hive: HiveId,
    changes: broadcast::Sender<StateChange>,
    stopping: Stopping,
    /// Last state reported per agent, and its container id: drops replayed
    /// duplicates and lets a reconnect report what happened while the
    /// stream was down.
    reported: HashMap<AgentName, (bool, String)>,
}

impl Watcher {
    /// Follows the engine's events for our containers from `since` (unix
    /// nanoseconds) on, forever, forwarding starts and deaths.
    async fn run(mut self, since: i64) {
        let ours = format!("{HIVE_LABEL}={}", self.hive);
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("label", vec![AGENT_LABEL, ours.as_str()]),
            ("event", vec!["start", "die", "destroy"]),
        ]);
        let mut since = since;
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                // Events from here on are replayed by the new stream; what
                // happened before is read from the containers' states.
                since = now_nanos();
                match self.states().await {
                    Ok(now) => self.tracker.reconcile(&now),
                    Err(e) => {
                        tracing::warn!("docker events: cannot list containers: {e}");
                        continue;
                    }
                }
            }
            first = false;
            let since_text = format!("{}.{:09}", since / 1_000_000_000, since % 1_000_000_000);
            let options = EventsOptionsBuilder::default()
                .since(&since_text)
                .filters(&filters)
                .build();
            let mut stream = self.docker.events(Some(options));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => self.tracker.handle(&event),
                    Err(e) => {
                        tracing::warn!("docker events: {e}; reconnecting");
                        break;
                    }
                }
            }
            tracing::debug!("docker event stream ended; reconnecting");
        }
    }

    /// Every container of ours: agent, id, running, exit code.
    async fn states(&self) -> std::result::Result<Vec<State>, EngineError> {
        let mut states = Vec::new();
        for (name, id) in list_ours(&self.docker, &self.hive).await? {
            let inspect = match self.docker.inspect_container(&id, None).await {
                Ok(i) => i,
                Err(e) if status(&e) == Some(404) => continue,
                Err(e) => return Err(e),
            };
            let state = inspect.state.unwrap_or_default();
            states.push(State {
                name,
                id,
                running: state.running == Some(true),
                exit_code: state.exit_code,
            });
        }
        Ok(states)
    }
}

/// One container's state, as read after a reconnect.
#[derive(Debug, Clone)]
struct State {
    name: AgentName,
    id: String,
    running: bool,
    exit_code: Option<i64>,
}

impl Tracker {
    /// Turns a start or death of one of ours into a [`StateChange`].
    fn handle(&mut self, event: &EventMessage) {
        let Some(actor) = &event.actor else { return };
        let (Some(id), Some(attributes)) = (&actor.id, &actor.attributes) else {
            return;
        };
        if attributes.get(HIVE_LABEL).map(String::as_str) != Some(self.hive.as_str()) {
            return; // another hive's (the engine filters these out already)
        }
        let Some(name) = attributes
            .get(AGENT_LABEL)
            .and_then(|n| AgentName::parse(n).ok())
        else {
            return;
        };
        let change = match event.action.as_deref() {
            Some("start") => {
                lock(&self.stopping).remove(id);
                StateChange {
                    name,
                    running: true,
                    expected: true,
                    detail: None,
                }
            }
            Some("die") => {
                let detail = attributes
                    .get("exitCode")
                    .and_then(|c| c.parse::<i64>().ok())
                    .map_or_else(|| "exited".to_owned(), describe_exit);
                StateChange {
                    name,
                    running: false,
                    expected: lock(&self.stopping).contains(id),
                    detail: Some(detail),
                }
            }
            Some("destroy") => {
                lock(&self.stopping).remove(id);
                return;
            }
            _ => return,
        };
        self.report(change, id);
    }

    fn report(&mut self, change: StateChange, id: &str) {
        let before = self
            .reported
            .insert(change.name.clone(), (change.running, id.to_owned()));
        if before.is_some_and(|(running, was)| running == change.running && was == id) {
            return; // a replayed duplicate
        }
        tracing::info!(
            agent = %change.name,
            "container h-{} {}",
            change.name,
            change.detail.as_deref().unwrap_or("started")
        );
        let _ = self.changes.send(change);
    }

    /// After the event stream was down: reports the agents whose state
    /// (`now`) differs from what was last reported.
    fn reconcile(&mut self, now: &[State]) {
        let mut changed = Vec::new();
        for (name, (was_running, old_id)) in &self.reported {
            let state = now.iter().find(|s| &s.name == name);
            let (running, code, id) =
                state.map_or((false, None, old_id), |s| (s.running, s.exit_code, &s.id));
            if running == *was_running && id == old_id {
                continue;
            }
            let change = StateChange {
                name: name.clone(),
                running,
                expected: running || lock(&self.stopping).contains(old_id),
                detail: (!running)
                    .then(|| code.map_or_else(|| "removed".to_owned(), describe_exit)),
            };
            changed.push((change, id.clone()));
        }
        for (change, id) in changed {
            self.report(change, &id);
        }
    }
}

/// This hive's containers: agent name and container id.
async fn list_ours(
    docker: &Docker,
    hive: &HiveId,
) -> std::result::Result<Vec<(AgentName, String)>, EngineError> {
    let ours = format!("{HIVE_LABEL}={hive}");
    let filters = HashMap::from([("label", vec![AGENT_LABEL, ours.as_str()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let name = AgentName::parse(c.labels?.get(AGENT_LABEL)?).ok()?;
            Some((name, c.id?))
        })
        .collect())
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<()> {
        let image = spec.image.clone().unwrap_or_else(|| self.image.clone());
        let skeleton = self.ensure(&image).await?;
        if skeleton {
            let spec = spec.clone();
            tokio::task::spawn_blocking(move || crate::etc::write_etc(&spec))
                .await
                .map_err(|e| Error::Failed(format!("write the curated /etc: {e}")))??;
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
            });
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
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
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        Ok(all[from..].iter().map(|l| (*l).to_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, agent: &str, id: &str, exit: Option<&str>) -> EventMessage {
        let mut attributes = HashMap::from([
            (AGENT_LABEL.to_owned(), agent.to_owned()),
            (HIVE_LABEL.to_owned(), hive().to_string()),
            ("name".to_owned(), format!("h-{agent}")),
        ]);
        if let Some(code) = exit {
            attributes.insert("exitCode".to_owned(), code.to_owned());
        }
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: Some(attributes),
            }),
            ..Default::default()
        }
    }

    fn hive() -> HiveId {
        HiveId::of(Path::new("/hive"))
    }

    fn tracker() -> (Tracker, broadcast::Receiver<StateChange>) {
        let (changes, rx) = broadcast::channel(16);
        let tracker = Tracker {
            hive: hive(),
            changes,
            stopping: Stopping::default(),
            reported: HashMap::new(),
        };
        (tracker, rx)
    }

    fn drain(
        rx: &mut broadcast::Receiver<StateChange>,
    ) -> Vec<(String, bool, bool, Option<String>)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| (c.name.to_string(), c.running, c.expected, c.detail))
            .collect()
    }

    #[test]
    fn exits_are_worded_like_the_child_backends() {
        assert_eq!(describe_exit(0), "exited 0");
        assert_eq!(describe_exit(1), "exit code 1");
        assert_eq!(describe_exit(137), "killed by SIGKILL");
        assert_eq!(describe_exit(143), "killed by SIGTERM");
        assert_eq!(describe_exit(255), "exit code 255");
    }

    #[test]
    fn deaths_we_caused_are_expected_until_the_next_start() {
        let (mut t, mut rx) = tracker();
        t.handle(&event("start", "ann", "c1", None));
        lock(&t.stopping).insert("c1".into());
        t.handle(&event("die", "ann", "c1", Some("143")));
        t.handle(&event("start", "ann", "c1", None));
        t.handle(&event("die", "ann", "c1", Some("137")));
        // Replayed after a reconnect: dropped.
        t.handle(&event("die", "ann", "c1", Some("137")));
        // Not ours (no valid agent label): ignored.
        t.handle(&event("die", "Not A Name", "c9", Some("1")));
        // Another hive's: ignored.
        let mut other = event("die", "ann", "c8", Some("1"));
        if let Some(a) = other.actor.as_mut().and_then(|a| a.attributes.as_mut()) {
            a.insert(HIVE_LABEL.to_owned(), "0123456789abcdef".to_owned());
        }
        t.handle(&other);
        let s = |d: &str| Some(d.to_owned());
        assert_eq!(
            drain(&mut rx),
            [
                ("ann".into(), true, true, None),
                ("ann".into(), false, true, s("killed by SIGTERM")),
                ("ann".into(), true, true, None),
                ("ann".into(), false, false, s("killed by SIGKILL")),
            ]
        );
        t.handle(&event("destroy", "ann", "c1", None));
        assert!(lock(&t.stopping).is_empty());
    }

    #[test]
    fn a_reconnect_reports_what_changed_meanwhile() {
        let (mut t, mut rx) = tracker();
        for (agent, id) in [("ann", "c1"), ("bob", "c2"), ("cat", "c3"), ("dan", "c4")] {
            t.handle(&event("start", agent, id, None));
        }
        drain(&mut rx);
        lock(&t.stopping).insert("c3".into());
        let state = |name: &str, id: &str, running, code| State {
            name: AgentName::parse(name).unwrap(),
            id: id.into(),
            running,
            exit_code: code,
        };
        // ann still runs; bob crashed; cat was stopped by us; dan is gone.
        t.reconcile(&[
            state("ann", "c1", true, None),
            state("bob", "c2", false, Some(2)),
            state("cat", "c3", false, Some(143)),
        ]);
        let mut seen = drain(&mut rx);
        seen.sort();
        let s = |d: &str| Some(d.to_owned());
        assert_eq!(
            seen,
            [
                ("bob".into(), false, false, s("exit code 2")),
                ("cat".into(), false, true, s("killed by SIGTERM")),
                ("dan".into(), false, false, s("removed")),
            ]
        );
        // The replayed deaths that follow are duplicates.
        t.handle(&event("die", "bob", "c2", Some("2")));
        assert!(drain(&mut rx).is_empty());
    }
}
