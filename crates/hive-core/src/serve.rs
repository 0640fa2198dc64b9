//! `hive serve`: start every part of the daemon and run until a signal.
//!
//! Order matters: the store opens (and migrates) first, the dashboard
//! listener binds next so agent URLs can be built, known agents are
//! reconciled between the database and the state dir, then every socket is
//! bound and the timers start. SIGTERM or SIGINT stops accepting, writes
//! the broker's rows in flight (`Store::stop_broker`), removes the socket
//! files and returns; the store is durable at every step (a crash costs
//! only `redelivered` flags: `Store::recover_broker`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hive_proto::{AgentName, DashboardEvent, MessageView};
use hive_store::{MessageEvent, Store};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::coordinator::Coordinator;
use crate::settings::{PortRange, Settings};
use crate::{Paths, agent_server, host_server, http, listener, scheduler};

/// Everything `hive serve` is told on its command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub paths: Paths,
    /// Where the dashboard listens; `None` disables it.
    pub dashboard: Option<SocketAddr>,
    /// `auto`, `none` or a backend name.
    pub runtime: String,
    /// `KEY=VALUE` pairs every agent's harness gets, on top of the state
    /// dir's `agent.env` file.
    pub agent_env: Vec<(String, String)>,
    /// The engine binary (`--claude-bin`); `None`: `claude` on `PATH`.
    pub claude_bin: Option<std::path::PathBuf>,
    /// The codex CLI (`--codex-bin`), for agents whose engine is `codex`.
    pub codex_bin: Option<std::path::PathBuf>,
    pub ports: PortRange,
    /// Where applied config repos are mirrored, if anywhere.
    pub mirror: Option<hive_config::MirrorConfig>,
    /// The operator's dashboard credential (at least 16 characters); core
    /// generates one when none is given.
    pub operator_token: Option<String>,
    /// Foreground (`hive up`): at exit every container is stopped and
    /// removed, even a backend's that could outlive the daemon (docker).
    /// Otherwise (`hive serve`) docker containers keep running for the next
    /// start to reattach.
    pub foreground: bool,
    /// `--agent-transport tls`: containers dial core's TLS link instead of
    /// getting its unix sockets; `None`: the unix transport.
    pub link: Option<crate::link::LinkConfig>,
}

/// What a started daemon tells its operator.
#[derive(Debug, Clone)]
pub struct Started {
    pub host_socket: std::path::PathBuf,
    pub dashboard: Option<SocketAddr>,
    /// `http://<dashboard>/login?token=…`: the link that logs a browser in.
    pub login_url: Option<String>,
    pub runtime: &'static str,
    /// The containers outlive this daemon: a `hive serve` on docker.
    pub containers_outlive: bool,
    /// Where the TLS link listens, under `--agent-transport tls`.
    pub link: Option<SocketAddr>,
}

/// A fresh operator credential: 32 random bytes, hex.
fn generate_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("generate the operator token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the credential to `path` for the operator's own tools: a new
/// file, mode 0600, owned by the daemon's user (a previous one is replaced,
/// never written through).
fn write_token(path: &std::path::Path, token: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("write {}", path.display()))
}

/// Runs the daemon until SIGTERM/SIGINT. `on_started` is called once every
/// socket is bound.
pub async fn run(config: ServeConfig, on_started: impl FnOnce(&Started)) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    raise_fd_limit();
    let paths = Paths::new(
        std::path::absolute(&config.paths.state_dir).context("resolve --state-dir")?,
        std::path::absolute(&config.paths.run_dir).context("resolve --run-dir")?,
    );
    paths.create_roots()?;
    // First: the store is this process's from here on (`SQLITE_VFS`), so a
    // second daemon on a served state dir stops before it changes anything.
    let store = Store::open(&paths.database())
        .with_context(|| format!("open {}", paths.database().display()))?;
    paths.migrate_layout()?;
    // The hive's identity: its state dir, canonical once it exists.
    let hive = hive_runtime::HiveId::of(&paths.state_dir);
    let selection = hive_runtime::select(&config.runtime, &hive).await?;
    for reason in &selection.passed_over {
        tracing::info!("runtime auto: passed over {reason}");
    }
    if selection.name == "process" {
        tracing::warn!(
            "runtime process: agents are NOT isolated: they share the host network, filesystem \
             and uid — for development only"
        );
    }
    let runtime = selection.name;
    let containers_outlive = !config.foreground
        && selection
            .runtime
            .as_ref()
            .is_some_and(|r| r.survives_daemon());
    // With a runtime, an agent without a container is destroyed (its state
    // kept): broadcasts skip it. Without one, no agent has a container.
    store.set_broadcast_needs_container(selection.runtime.is_some());
    // Leases lived in the last daemon's memory: after a clean stop the
    // file says what comes back flagged; after a crash every unacked row
    // comes back flagged `redelivered`.
    let flagged = store
        .recover_broker()
        .context("recover the broker from the last run")?;
    if flagged > 0 {
        tracing::warn!(
            rows = flagged,
            "the last daemon did not stop cleanly: its unacked messages come again flagged redelivered"
        );
    }

    // Every dashboard request presents it, loopback included.
    let operator_token = match config.operator_token {
        Some(token) => token,
        None => generate_token()?,
    };
    write_token(&paths.operator_token(), &operator_token)?;

    let dashboard = match config.dashboard {
        Some(addr) => {
            let tcp = TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind dashboard on {addr}"))?;
            Some(tcp)
        }
        None => None,
    };
    let dashboard_addr = dashboard
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;

    let agent_env = crate::engine::read_agent_env(&paths, &config.agent_env)?;
    for (engine, model) in crate::egress::check_settings(&agent_env, dashboard_addr)? {
        tracing::info!(%model, engine = engine.as_str(), "egress: the model endpoint agents of this engine may reach");
    }
    let mut link_listener = None;
    if let Some(link) = &config.link {
        let tcp = TcpListener::bind(link.listen)
            .await
            .with_context(|| format!("bind the link listener {}", link.listen))?;
        let bound = tcp.local_addr()?;
        let advertise = link.advertise.clone().unwrap_or_else(|| bound.to_string());
        let mut opened = crate::link::Link::open(&paths, advertise, link.network.clone())?;
        opened.checkpoint_cap = link.checkpoint_cap;
        link_listener = Some((tcp, bound, Arc::new(opened)));
    }
    let settings = Settings {
        hive_bin: std::env::current_exe().context("locate the hive binary")?,
        engine_bin: crate::engine::locate(config.claude_bin.as_deref())?,
        codex_bin: crate::engine::locate_codex(config.codex_bin.as_deref())?,
        agent_env,
        agent_env_args: config.agent_env,
        ports: config.ports,
        mirror: config.mirror,
        operator_token: operator_token.clone(),
        link: link_listener.as_ref().map(|(_, _, link)| link.clone()),
    };
    let coord = Coordinator::new(
        store,
        paths.clone(),
        dashboard_addr,
        selection.runtime,
        settings,
        Some(agent_server::serve_agent_socket),
    );
    for name in reconcile_agents(&coord)? {
        coord.lifecycle.bind_socket(&name)?;
    }

    let host = listener::bind(&paths.host_socket())?;
    let mut tasks = tokio::task::JoinSet::new();
    // Before any socket serves: an agent spawned from now on is not one
    // to resume.
    let to_resume = coord.lifecycle.agents_to_resume();
    {
        let coord = coord.clone();
        tasks.spawn(listener::accept_loop(host, move |stream| {
            host_server::handle(coord.clone(), stream)
        }));
    }
    tasks.spawn(scheduler::run(coord.clone()));
    tasks.spawn(scheduler::lease_expiry(coord.clone()));
    tasks.spawn(scheduler::vacuum(coord.clone()));
    tasks.spawn(forward_broker_events(coord.clone()));
    {
        let coord = coord.clone();
        tasks.spawn(async move { coord.lifecycle.crash_watch(coord.shutting_down()).await });
    }
    if let Some(tcp) = dashboard {
        tasks.spawn(http::serve(coord.clone(), tcp));
    }
    let link_addr = link_listener.as_ref().map(|(_, bound, _)| *bound);
    if let Some((tcp, _, link)) = link_listener {
        tasks.spawn(crate::link_server::serve(coord.clone(), link, tcp));
    }

    on_started(&Started {
        host_socket: paths.host_socket(),
        dashboard: dashboard_addr,
        login_url: dashboard_addr.map(|addr| format!("http://{addr}/login?token={operator_token}")),
        runtime,
        containers_outlive,
        link: link_addr,
    });
    tracing::info!(host_socket = %paths.host_socket().display(), runtime, %hive, "hive serving");
    {
        let coord = coord.clone();
        tasks.spawn(async move { coord.lifecycle.resume(to_resume).await });
    }

    signals.wait().await;
    tracing::info!("shutting down");
    coord.lifecycle.stop_for_shutdown(config.foreground).await;
    coord.shut_down();
    tasks.abort_all();
    coord.lifecycle.close_sockets();
    // What is in flight is written down (held rows come back flagged), and
    // nothing more goes out. If that fails, the next start recovers as
    // after a crash; the sockets go either way.
    let stopped = coord
        .store
        .stop_broker()
        .context("write the broker's rows in flight");
    remove_sockets(&coord)?;
    stopped
}

/// Raises the soft limit on open files to the hard one: every socket may
/// hold [`listener::MAX_CONNECTIONS`] connections, and a default soft
/// limit of 1,024 would run out with two busy sockets.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!("could not raise the open-file limit from {soft}: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("could not read the open-file limit: {e}"),
    }
}

/// Makes the database and the state dir agree on who the agents are: the
/// manager always, every valid state dir on disk, every registered agent.
fn reconcile_agents(coord: &Coordinator) -> anyhow::Result<Vec<AgentName>> {
    coord.store.register_agent(&AgentName::manager())?;
    for name in coord.paths.agents_on_disk()? {
        coord.store.register_agent(&name)?;
    }
    let mut names = Vec::new();
    for record in coord.store.agents()? {
        let name = AgentName::parse(&record.name)
            .with_context(|| format!("agent {:?} in the database", record.name))?;
        coord.paths.create_agent_dirs(&name)?;
        names.push(name);
    }
    Ok(names)
}

/// Mirrors the broker's sent/delivered broadcast onto the dashboard bus
/// (the broker publishes it only while a dashboard stream is open: the
/// snapshot a browser reads when its stream opens holds the rest).
async fn forward_broker_events(coord: Arc<Coordinator>) {
    let mut rx = coord.store.subscribe();
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            () = coord.shutting_down() => return,
        };
        match event {
            Ok(MessageEvent::Sent(m)) => coord.dashboard.emit(|seq| message_event(seq, m, false)),
            Ok(MessageEvent::Delivered(m)) => {
                coord.dashboard.emit(|seq| message_event(seq, m, true))
            }
            Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "dashboard forwarder lagged"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// A broker row as the dashboard's `sent` or `delivered` event.
fn message_event(seq: u64, m: hive_store::MessageRow, delivered: bool) -> DashboardEvent {
    let hive_store::MessageRow {
        id,
        from,
        to,
        body,
        at,
        in_reply_to,
    } = m;
    let message = MessageView {
        id,
        from,
        to,
        body,
        at,
        in_reply_to,
    };
    if delivered {
        DashboardEvent::Delivered { seq, message }
    } else {
        DashboardEvent::Sent { seq, message }
    }
}

/// SIGTERM and SIGINT, installed before the daemon says it is ready so a
/// signal that follows the announcement at once is never fatal.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

fn remove_sockets(coord: &Coordinator) -> anyhow::Result<()> {
    let mut sockets = vec![coord.paths.host_socket(), coord.paths.operator_token()];
    for record in coord.store.agents()? {
        if let Ok(name) = AgentName::parse(&record.name) {
            sockets.push(coord.paths.agent_socket(&name));
            sockets.push(coord.paths.egress_socket(&name));
        }
    }
    for socket in sockets {
        if let Err(e) = std::fs::remove_file(&socket)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("remove {}: {e}", socket.display());
        }
    }
    Ok(())
}
