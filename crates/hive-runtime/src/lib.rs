//! The container backends of hyperhive behind one [`Runtime`] trait.
//!
//! A runtime turns a [`ContainerSpec`] — which program to run, which host
//! directories to bind where — into a running, isolated container named
//! `h-<agent>` (on docker and nspawn, whose names are host-wide,
//! `h-<agent>-<hive>`: [`HiveId`] keeps hives on one host apart), and reports every running→stopped transition on a
//! broadcast channel so core can detect crashes without polling. Backends
//! that supervise a child process (`process`, `bwrap`, `nspawn`) share
//! [`child::ChildRuntime`] and differ only in their [`child::Launcher`]:
//! the command line they build. Core never spawns a container itself; only
//! its lifecycle module calls a runtime.
//!
//! Every backend gives the program the same view: `/state` (persistent;
//! on `swarm` a volume of the node, [`Placement::generation`]), `/shared`
//! (hive-wide; on `swarm`, per node), `/run/hive/mcp.sock` (its own socket only) and
//! the extra binds of the spec (config repos). The `process` backend has no
//! isolation and passes host paths instead, through the same environment
//! variables ([`env`]).

use std::path::PathBuf;
use std::time::Duration;

use hive_proto::AgentName;
use tokio::sync::broadcast;

pub mod bwrap;
pub mod cgroup;
pub mod child;
pub mod docker;
pub mod etc;
pub mod follow;
mod inherit;
pub mod nspawn;
pub mod plain;
pub mod probe;
pub mod process;
pub mod seccomp;
pub mod swarm;

/// Where a container's program finds its world, inside any sandbox.
pub mod mount {
    pub const STATE: &str = "/state";
    pub const SHARED: &str = "/shared";
    pub const SOCKET: &str = "/run/hive/mcp.sock";
    /// The `hive` binary, bind-mounted read-only.
    pub const HIVE_BIN: &str = "/run/hive/bin/hive";
    /// The engine (the `claude` CLI) the daemon found on the host, bound
    /// read-only; the harness is told it in [`super::env::CLAUDE_BIN`].
    pub const CLAUDE_BIN: &str = "/run/hive/bin/claude";
    /// Core's egress proxy for this agent (a unix socket core serves); the
    /// only way out of a sandbox's own network namespace.
    pub const EGRESS: &str = "/run/hive/egress.sock";
    /// Directory the harness binds its page socket in (agent-writable; core
    /// reaches the page through it and never follows a link in it).
    pub const PAGE_DIR: &str = "/run/hive/page";
    /// The harness's page socket inside [`PAGE_DIR`].
    pub const PAGE_SOCKET: &str = "/run/hive/page/page.sock";
    /// Files core writes for the harness (deployed config, pause marker),
    /// bound read-only: the agent can read them, never plant anything there.
    pub const CONTROL: &str = "/run/hive/control";
    /// Under [`super::Transport::Tls`]: the agent's credential, bound
    /// read-only.
    pub const CREDENTIAL: &str = "/run/hive/credential";
    /// Under [`super::Transport::Tls`]: the dir the harness's link makes
    /// the usual sockets and control files in.
    pub const LINK: &str = "/run/hive/link";
}

/// Environment variables every backend sets for the container's program.
pub mod env {
    /// The agent's name.
    pub const AGENT: &str = "HIVE_AGENT";
    /// Its socket (as the program sees it).
    pub const SOCKET: &str = "HIVE_SOCKET";
    /// Its persistent state dir (as the program sees it).
    pub const STATE_DIR: &str = "HIVE_STATE_DIR";
    /// The hive-wide shared dir (as the program sees it).
    pub const SHARED_DIR: &str = "HIVE_SHARED_DIR";
    /// Which backend runs it.
    pub const RUNTIME: &str = "HIVE_RUNTIME";
    /// Core's egress proxy socket (as the program sees it).
    pub const EGRESS_SOCKET: &str = "HIVE_EGRESS_SOCKET";
    /// Where the harness binds its page socket (as the program sees it).
    pub const PAGE_SOCKET: &str = "HIVE_PAGE_SOCKET";
    /// The read-only control dir core writes (as the program sees it).
    pub const CONTROL_DIR: &str = "HIVE_CONTROL_DIR";
    /// The engine binary (as the program sees it), when the spec has one.
    pub const CLAUDE_BIN: &str = "HIVE_CLAUDE_BIN";
}

/// Everything a backend needs to create one agent's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: AgentName,
    /// The `hive` binary on the host; sandboxes bind it at
    /// [`mount::HIVE_BIN`].
    pub program: PathBuf,
    /// The engine CLI on the host, if the daemon found one: sandboxes bind
    /// it read-only at [`mount::CLAUDE_BIN`], the `process` backend passes
    /// the host path; either way in [`env::CLAUDE_BIN`].
    pub engine_bin: Option<PathBuf>,
    /// Arguments after the program, e.g. `agent serve --role agent`.
    pub args: Vec<String>,
    /// Extra environment (the hive's and the agent's config), on top of the
    /// [`env`] variables the backend sets.
    pub env: Vec<(String, String)>,
    /// Host dir bound read-write at [`mount::STATE`].
    pub state_dir: PathBuf,
    /// Host dir bound read-write at [`mount::SHARED`].
    pub shared_dir: PathBuf,
    /// The agent's socket on the host, bound at [`mount::SOCKET`].
    pub socket: PathBuf,
    /// Further binds (config repos).
    pub binds: Vec<Bind>,
    /// Host file the container's stdout and stderr are appended to, for
    /// backends that supervise a child.
    pub log_path: PathBuf,
    /// Container image, for backends that use one.
    pub image: Option<String>,
    /// Core's egress proxy socket for this agent on the host, bound at
    /// [`mount::EGRESS`].
    pub egress_socket: PathBuf,
    /// Host dir (agent-writable) bound read-write at [`mount::PAGE_DIR`].
    pub page_dir: PathBuf,
    /// Host dir core writes for the harness, bound read-only at
    /// [`mount::CONTROL`].
    pub control_dir: PathBuf,
    /// Host dir (core-owned) where the backend writes the container's
    /// curated `/etc`.
    pub etc_dir: PathBuf,
    /// The unprivileged user the program runs as; `None`: the daemon's own
    /// (the `process` backend, which isolates nothing).
    pub user: Option<AgentUser>,
    /// CPU and memory limits the backend enforces (or refuses the spec).
    pub limits: Limits,
    /// Where a multi-host backend may run the container (`swarm`); the
    /// single-host backends run it here and ignore this.
    pub placement: Placement,
    /// How the harness reaches core: the unix sockets and dirs above bound
    /// in, or the link over TLS (then none of them is bound).
    pub transport: Transport,
}

/// Where a container may run, for backends that schedule across hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Scheduler constraints from the agent's approved `agent.toml`
    /// (`node.labels.gpu==true`), all of which must hold.
    pub constraints: Vec<String>,
    /// The node (its id) the agent's state lives on, once it was first
    /// placed: the container runs there or not at all.
    pub node: Option<String>,
    /// The generation of the agent's state volume (`swarm`:
    /// `h-<agent>-<hive>-state-<generation>`). Core bumps it, with the
    /// container stopped, to start the agent on a fresh, empty `/state`
    /// (moved or revived on another node); the older volume is left as it
    /// is until purge.
    pub generation: u32,
}

/// How a container's harness reaches core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Transport {
    /// Core's unix sockets and dirs bound in: `socket`, `egress_socket`,
    /// `page_dir` and `control_dir` of the spec. Identity is the socket.
    #[default]
    Unix,
    /// The harness dials core over TCP + TLS (`hive_proto::link`); identity
    /// is the client certificate in `credentials`.
    Tls(TlsLink),
}

/// A container on the link: what it binds and where it dials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsLink {
    /// `host:port` of core's link listener, as the container reaches it.
    pub addr: String,
    /// Host dir of the agent's credential (CA, certificate, key), bound
    /// read-only at [`mount::CREDENTIAL`].
    pub credentials: PathBuf,
    /// Host dir (agent-writable) bound read-write at [`mount::LINK`]: the
    /// link makes its sockets and control files there. A backend on
    /// another host would give a private tmpfs instead.
    pub link_dir: PathBuf,
    /// The container network that reaches `addr` (docker); `None`: the
    /// backend's default.
    pub network: Option<String>,
}

/// A spec for unit tests: agent `coder` as uid 108100, fake paths.
#[cfg(test)]
pub(crate) fn test_spec() -> ContainerSpec {
    ContainerSpec {
        name: AgentName::parse("coder").unwrap_or_else(|e| panic!("{e}")),
        program: "/bin/hive".into(),
        engine_bin: None,
        args: Vec::new(),
        env: Vec::new(),
        state_dir: "/s".into(),
        shared_dir: "/sh".into(),
        socket: "/r/mcp.sock".into(),
        binds: Vec::new(),
        log_path: "/hive/agents/coder/container.log".into(),
        image: None,
        egress_socket: "/r/egress.sock".into(),
        page_dir: "/r/page".into(),
        control_dir: "/c".into(),
        etc_dir: "/e".into(),
        user: Some(AgentUser {
            uid: 108_100,
            gid: 100_000,
        }),
        limits: Limits::default(),
        placement: Placement::default(),
        transport: Transport::Unix,
    }
}

/// The host uid and gid an agent's program runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentUser {
    pub uid: u32,
    pub gid: u32,
}

/// Resource limits of one container; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// CPU in thousandths of a core (`500` = half a core).
    pub cpu_millis: Option<u32>,
}

impl ContainerSpec {
    /// The container's name on the backend: `h-<agent>`.
    pub fn container_name(&self) -> String {
        container_name(&self.name)
    }

    /// Refuses the link on a backend whose sandbox has no network to reach
    /// core with: its agents use the unix transport.
    pub(crate) fn unix_only(&self, runtime: &str) -> Result<()> {
        match self.transport {
            Transport::Unix => Ok(()),
            Transport::Tls(_) => Err(Error::Failed(format!(
                "h-{}: the tls transport needs a network to core, and {runtime} runs agents \
                 with none: use the unix transport on {runtime}",
                self.name
            ))),
        }
    }

    /// Refuses a spec with a relative path: a sandbox has no working dir of
    /// the daemon to resolve it against.
    pub(crate) fn check_paths(&self) -> Result<()> {
        let mut paths = vec![
            ("program", self.program.as_path()),
            ("state dir", &self.state_dir),
            ("shared dir", &self.shared_dir),
            ("socket", &self.socket),
            ("egress socket", &self.egress_socket),
            ("page dir", &self.page_dir),
            ("control dir", &self.control_dir),
            ("etc dir", &self.etc_dir),
        ];
        if let Some(engine) = &self.engine_bin {
            paths.push(("engine binary", engine));
        }
        if let Transport::Tls(link) = &self.transport {
            paths.push(("credential dir", &link.credentials));
            paths.push(("link dir", &link.link_dir));
        }
        for bind in &self.binds {
            paths.push(("bind source", &bind.host));
            paths.push(("bind target", &bind.container));
        }
        match paths.iter().find(|(_, p)| !p.is_absolute()) {
            Some((what, path)) => Err(Error::Failed(format!(
                "{what} of h-{} is not an absolute path: {}",
                self.name,
                path.display()
            ))),
            None => Ok(()),
        }
    }
}

/// The container name of an agent: `h-<agent>`.
pub fn container_name(agent: &AgentName) -> String {
    format!("h-{agent}")
}

/// Which hive a backend serves, so that two hives on one host (one Docker
/// Engine) never touch each other's containers: 16 hex digits of a stable
/// hash (FNV-1a, the same in every build) of the hive's canonical state
/// dir. The docker backend labels every container with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HiveId(String);

impl HiveId {
    /// The identity of the hive whose state lives in `state_dir`: its
    /// canonical path where it exists, else the absolute one.
    pub fn of(state_dir: &std::path::Path) -> Self {
        let path = std::fs::canonicalize(state_dir)
            .or_else(|_| std::path::absolute(state_dir))
            .unwrap_or_else(|_| state_dir.to_path_buf());
        Self(format!(
            "{:016x}",
            fnv1a(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HiveId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a, 64 bits: a hash that stays the same across builds and Rust
/// versions (std's `DefaultHasher` promises neither), for names that
/// outlive the daemon.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// What a backend knows of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: AgentName,
    pub running: bool,
    /// Stopped on its own with a failure (non-zero exit, signal), not by a
    /// `stop`.
    pub failed: bool,
    /// Host pid of the container's main process, where the backend knows it.
    pub pid: Option<u32>,
    /// The host it runs (or last ran) on, for backends that schedule across
    /// hosts (`swarm`); `None` on the single-host backends.
    pub node: Option<Node>,
}

/// A host of a multi-host backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The scheduler's stable id of the node (what an agent is pinned to).
    pub id: String,
    /// Its hostname, for people.
    pub hostname: String,
    /// The scheduler finds it down: what ran there is stopped as far as
    /// core can tell.
    pub down: bool,
}

/// A container started or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub name: AgentName,
    pub running: bool,
    /// The runtime was asked to stop it: a stop, not a crash.
    pub expected: bool,
    /// How it stopped: `exit code 1`, `killed by SIGKILL`, …
    pub detail: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no container h-{0}")]
    NoSuchContainer(AgentName),
    #[error("{runtime} is not available: {reason}")]
    Unavailable {
        runtime: &'static str,
        reason: String,
    },
    /// A container of this hive's name that another hive (or something
    /// other than hyperhive) made: never touched.
    #[error(
        "a container {container} of another hive (or not made by hyperhive) exists; \
         remove or rename it, or run this hive with another state dir"
    )]
    Foreign { container: String },
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// The grace an ordinary stop gives a container between the stop signal
/// and the kill: what core passes to [`Runtime::stop`], and what a backend
/// that must fix it ahead (swarm: a task's own spec, for a node core does
/// not reach) sets.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A container backend.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The backend's name: `process`, `bwrap`, `nspawn`, `docker`, `swarm`.
    fn name(&self) -> &'static str;

    /// Defines (or redefines) a container from `spec` without starting it.
    async fn create(&self, spec: &ContainerSpec) -> Result<()>;

    /// Starts a created container. Starting a running one is a no-op.
    async fn start(&self, name: &AgentName) -> Result<()>;

    /// Stops a container: a polite signal, then after `grace` a hard kill.
    /// Stopping a stopped container is a no-op.
    async fn stop(&self, name: &AgentName, grace: Duration) -> Result<()>;

    /// Stops and removes a container. State dirs on the host are untouched.
    async fn destroy(&self, name: &AgentName) -> Result<()>;

    /// Every container this backend holds for the hive.
    async fn list(&self) -> Result<Vec<ContainerStatus>>;

    /// Running/stopped transitions, as they happen: every backend reports
    /// exits (nothing polls [`Runtime::list`] for them).
    fn subscribe(&self) -> broadcast::Receiver<StateChange>;

    /// Removes, at purge, the agent's state that the backend holds itself
    /// (`swarm`: its state volumes of every generation). The single-host
    /// backends keep `/state` in the spec's host dir, which core removes:
    /// nothing to do.
    async fn purge_state(&self, name: &AgentName, placement: &Placement) -> Result<()> {
        let _ = (name, placement);
        Ok(())
    }

    /// The name of the agent's state volume of `generation`, where the
    /// backend keeps `/state` in one (`swarm`) rather than in the spec's
    /// host dir; `None` on the single-host backends.
    fn state_volume(&self, name: &AgentName, generation: u32) -> Option<String> {
        let _ = (name, generation);
        None
    }

    /// Whether containers outlive the daemon (docker). If not (children of
    /// the daemon), core stops them when it shuts down and starts them
    /// again at its next start.
    fn survives_daemon(&self) -> bool {
        false
    }

    /// Whether it runs containers on more than one host (`swarm`): then
    /// [`ContainerStatus::node`] says where, and [`ContainerSpec::placement`]
    /// is honoured.
    fn multi_host(&self) -> bool {
        false
    }

    /// The address core's link listener sees the hive's link relay
    /// connect from, for a backend that pipes its agents' link through
    /// one (`swarm`): core believes the relay's header naming each agent
    /// end ([`hive_proto::link::RelayHeader`]) from this address alone.
    /// `None`: no relay (now).
    async fn link_relay(&self) -> Result<Option<std::net::IpAddr>> {
        Ok(None)
    }

    /// The last `lines` lines the container printed.
    async fn logs(&self, name: &AgentName, lines: usize) -> Result<Vec<String>>;

    /// A watch that wakes when the container may have printed more than
    /// [`Runtime::logs`] shows now: made before that read, so nothing
    /// printed between the two is missed. The default re-reads on a tick,
    /// for a backend with no event to wait on.
    async fn watch_output(&self, name: &AgentName) -> Result<follow::OutputWatch> {
        let _ = name;
        Ok(follow::OutputWatch::tick())
    }
}

/// Stop then start.
pub async fn restart(runtime: &dyn Runtime, name: &AgentName, grace: Duration) -> Result<()> {
    runtime.stop(name, grace).await?;
    runtime.start(name).await
}

/// The last `lines` lines of a log file (empty if it does not exist yet);
/// a symbolic link at `path` is refused, not followed.
pub async fn tail_file(path: &std::path::Path, lines: usize) -> Result<Vec<String>> {
    let read = async {
        use tokio::io::AsyncReadExt as _;
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .await?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let text = match read.await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", path.display()))(e)),
    };
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    Ok(all[from..].iter().map(|l| (*l).to_owned()).collect())
}

/// The runtime a hive runs with, and why stronger ones were passed over.
pub struct Selection {
    /// `None` for `--runtime none`.
    pub runtime: Option<std::sync::Arc<dyn Runtime>>,
    pub name: &'static str,
    /// One line per stronger backend `auto` did not pick, with the reason.
    pub passed_over: Vec<String>,
}

/// Backends in the order `auto` prefers them: strongest isolation first
/// (Docker adds a seccomp profile and cgroups to what nspawn gives; bwrap
/// has namespaces only; process has nothing).
pub const BACKENDS: &[&str] = &["docker", "nspawn", "bwrap", "process"];

/// Backends that run only when asked for by name: `swarm` schedules
/// agents across the hosts of a Docker Swarm, which `auto` never assumes.
pub const EXPLICIT_BACKENDS: &[&str] = &["swarm"];

/// Every backend name, for error messages.
fn all_backends() -> String {
    [BACKENDS, EXPLICIT_BACKENDS].concat().join(", ")
}

/// Opens backend `name` for the hive `hive` if this machine can run it, or
/// says why not.
pub async fn open(
    name: &str,
    hive: &HiveId,
) -> std::result::Result<std::sync::Arc<dyn Runtime>, String> {
    use std::sync::Arc;
    async fn probe_blocking<L: child::Launcher + Copy>(
        launcher: L,
    ) -> std::result::Result<(), String> {
        tokio::task::spawn_blocking(move || launcher.probe())
            .await
            .map_err(|e| format!("probe failed: {e}"))?
    }
    match name {
        "docker" => {
            docker::probe().await?;
            let runtime = docker::DockerRuntime::connect(None, hive.clone())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(runtime))
        }
        "swarm" => {
            let runtime = swarm::SwarmRuntime::connect(None, hive.clone())
                .await
                .map_err(|e| match e {
                    Error::Unavailable { reason, .. } => reason,
                    e => e.to_string(),
                })?;
            Ok(Arc::new(runtime))
        }
        "nspawn" => {
            probe_blocking(nspawn::NspawnLauncher).await?;
            Ok(Arc::new(child::ChildRuntime::new(nspawn::NspawnLauncher)))
        }
        "bwrap" => {
            probe_blocking(bwrap::BwrapLauncher).await?;
            Ok(Arc::new(child::ChildRuntime::new(bwrap::BwrapLauncher)))
        }
        "process" => Ok(Arc::new(child::ChildRuntime::new(process::ProcessLauncher))),
        other => Err(format!(
            "`{other}` is not a backend (choose auto, none, {})",
            all_backends()
        )),
    }
}

/// Picks the runtime for `requested` (`auto`, `none` or a backend name),
/// for the hive `hive`.
pub async fn select(requested: &str, hive: &HiveId) -> Result<Selection> {
    match requested {
        "none" => Ok(Selection {
            runtime: None,
            name: "none",
            passed_over: Vec::new(),
        }),
        "auto" => {
            let mut passed_over = Vec::new();
            for name in BACKENDS {
                match open(name, hive).await {
                    Ok(runtime) => {
                        return Ok(Selection {
                            runtime: Some(runtime),
                            name,
                            passed_over,
                        });
                    }
                    Err(reason) => passed_over.push(format!("{name}: {reason}")),
                }
            }
            Err(Error::Unavailable {
                runtime: "auto",
                reason: passed_over.join("; "),
            })
        }
        requested => match BACKENDS
            .iter()
            .chain(EXPLICIT_BACKENDS)
            .find(|b| **b == requested)
        {
            Some(name) => match open(name, hive).await {
                Ok(runtime) => Ok(Selection {
                    runtime: Some(runtime),
                    name,
                    passed_over: Vec::new(),
                }),
                Err(reason) => Err(Error::Unavailable {
                    runtime: name,
                    reason,
                }),
            },
            None => Err(Error::Unavailable {
                runtime: "runtime",
                reason: format!(
                    "`{requested}` is not a backend (choose auto, none, {})",
                    all_backends()
                ),
            }),
        },
    }
}

#[cfg(test)]
mod hive_id_tests {
    use super::*;

    #[test]
    fn hive_ids_are_stable_fnv1a_of_the_state_dir() {
        // The published FNV-1a 64 vectors: an id never changes with a build.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let missing = std::path::Path::new("/nonexistent-hive/state");
        assert_eq!(
            HiveId::of(missing).as_str(),
            format!("{:016x}", fnv1a(b"/nonexistent-hive/state"))
        );
        // A state dir reached through a link is the same hive.
        let dir = std::env::temp_dir().join(format!("hive-id-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("real")).unwrap();
        let _ = std::fs::remove_file(dir.join("link"));
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
        assert_eq!(HiveId::of(&dir.join("link")), HiveId::of(&dir.join("real")));
        assert_ne!(HiveId::of(&dir.join("real")), HiveId::of(missing));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
