//! `hive agent …`: the harness's command line (`serve`, `mcp`, and the
//! hidden `bench`). Paths come from the environment every container gets
//! (`HIVE_AGENT`, `HIVE_SOCKET`, `HIVE_STATE_DIR`, `HIVE_SHARED_DIR`,
//! `HIVE_PAGE_SOCKET`, `HIVE_CONTROL_DIR`), each overridable by a flag. The
//! socket is the `hive` binary's global `--socket` (env `HIVE_SOCKET`),
//! handed to [`run`] by the entry point.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hive_proto::{AgentRequest, AgentResponse};
use tokio::sync::watch;

use crate::client::SocketClient;
use crate::engine::claude::Claude;
use crate::engine::codex::Codex;
use crate::harness::{Config, Harness};
use crate::state::Shared;
use crate::{Role, bench, bus, mcp, web};

/// Built-in tools the engine may use without asking (the container is the
/// blast radius); override with `--allow-tool` / `HIVE_ALLOWED_TOOLS`.
pub const DEFAULT_ALLOWED_TOOLS: &str =
    "Bash,Edit,Write,Read,Glob,Grep,NotebookEdit,TodoWrite,Task,WebFetch,WebSearch";

/// Run inside an agent's container.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the turn loop, the live event bus and the agent's web UI.
    Serve(Box<ServeArgs>),
    /// Serve the hive tools over MCP on stdio (launched by the engine).
    Mcp(McpArgs),
    /// Measure the harness's own overhead per turn and its idle memory.
    #[command(hide = true)]
    Bench(bench::BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Which tool surface the agent gets.
    #[arg(long, value_enum, env = "HIVE_ROLE", default_value = "agent")]
    pub role: Role,
    /// The agent's name (asked of the socket with `whoami` if absent).
    #[arg(long, env = "HIVE_AGENT")]
    pub agent: Option<String>,
    /// The backend that runs this harness (core sets it). In any sandbox
    /// (not `process`) the harness sets `no_new_privs` on itself first.
    #[arg(long, env = "HIVE_RUNTIME")]
    pub runtime: Option<String>,
    /// Persistent state: the engine's cwd and HOME, histories, markers.
    #[arg(long, env = "HIVE_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The hive-wide shared directory.
    #[arg(long, env = "HIVE_SHARED_DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Files core writes for the harness (deployed config, pause marker);
    /// read-only inside a sandbox. Default: `<state-dir>/.hive`.
    #[arg(long, env = "HIVE_CONTROL_DIR")]
    pub control_dir: Option<PathBuf>,
    /// The agent's read-only config repo (for its `prompt.md`).
    #[arg(long, env = "HIVE_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// The unix socket the agent's page is served on (core proxies it at
    /// `/agent/<name>/` on the dashboard; absent: no page).
    #[arg(long, env = "HIVE_PAGE_SOCKET")]
    pub page_socket: Option<PathBuf>,
    /// Core's egress proxy socket: the engine's only way out, bridged to
    /// a loopback port it gets as `HTTPS_PROXY`/`HTTP_PROXY`.
    #[arg(long, env = "HIVE_EGRESS_SOCKET")]
    pub egress_socket: Option<PathBuf>,
    /// The claude binary (a bare name searches PATH).
    #[arg(long, env = "HIVE_CLAUDE_BIN", default_value = "claude")]
    pub claude_bin: PathBuf,
    /// The codex binary (a bare name searches PATH).
    #[arg(long, env = "HIVE_CODEX_BIN", default_value = "codex")]
    pub codex_bin: PathBuf,
    /// The engine when the deployed config names none: `claude` or
    /// `codex`.
    #[arg(long, env = "HIVE_ENGINE", default_value = "claude")]
    pub engine: String,
    /// The model when none was chosen from the web UI.
    #[arg(long, env = "HIVE_MODEL", default_value = "sonnet")]
    pub model: String,
    /// Tools the engine may use unasked besides the hive tools.
    #[arg(
        long = "allow-tool",
        env = "HIVE_ALLOWED_TOOLS",
        value_delimiter = ',',
        default_value = DEFAULT_ALLOWED_TOOLS
    )]
    pub allowed_tools: Vec<String>,
    /// Wall-clock limit of one turn, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub turn_timeout: u64,
    /// Seconds between SIGINT and SIGKILL when a turn is cancelled.
    #[arg(long, default_value_t = 10)]
    pub cancel_grace: u64,
    /// Long-poll of the turn loop's `recv`, in seconds (at most 180).
    #[arg(long, default_value_t = 180)]
    pub recv_wait: u64,
    /// Most messages one turn takes.
    #[arg(long, default_value_t = 8)]
    pub recv_max: u32,
    /// Context tokens above which a clean turn is followed by a checkpoint
    /// and a compaction (0: never).
    #[arg(long, default_value_t = 150_000)]
    pub context_watermark: u64,
    /// Engine runs per turn for ordinary failures.
    #[arg(long, default_value_t = 2)]
    pub max_attempts: u32,
    /// First wait after a rate limit, in seconds (doubles, up to 16×).
    #[arg(long, env = "HIVE_RATE_LIMIT_BACKOFF", default_value_t = 60)]
    pub rate_limit_backoff: u64,
    /// How often to re-check the pause marker and credentials, in ms.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    #[arg(long, value_enum, env = "HIVE_ROLE", default_value = "agent")]
    pub role: Role,
    /// The agent's state dir (for `request_next_turn`).
    #[arg(long, env = "HIVE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Whether our own log (on stderr) may carry colour: only for a terminal,
/// and never under `NO_COLOR` (<https://no-color.org>). A container log, a
/// file or a pipe gets plain text.
pub fn log_in_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Runs `command`; `socket` is the agent socket (`--socket`/`HIVE_SOCKET`).
pub fn run(command: AgentCommand, socket: Option<PathBuf>) -> anyhow::Result<()> {
    let default_log = match command {
        AgentCommand::Mcp(_) => "warn",
        _ => "info",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HIVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(log_in_colour())
        .try_init();
    if let AgentCommand::Serve(args) = &command
        && args.runtime.as_deref().is_some_and(|r| r != "process")
    {
        // A thread's own, inherited by the threads and processes it
        // makes: set before the first. The engine and all it starts have
        // it, so no setuid binary makes the agent another uid, on a
        // backend that could not set it (swarm below API 1.44).
        nix::sys::prctl::set_no_new_privs().context("set no_new_privs")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let () = match command {
        AgentCommand::Serve(args) => runtime.block_on(serve(*args, need_socket(socket)?)),
        AgentCommand::Mcp(args) => runtime.block_on(mcp::serve_stdio(
            args.role,
            need_socket(socket)?,
            args.state_dir,
        )),
        AgentCommand::Bench(args) => runtime.block_on(bench::run(args)),
    }?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

fn need_socket(socket: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    socket.context("no agent socket: set HIVE_SOCKET or pass --socket")
}

async fn serve(args: ServeArgs, socket: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("state dir {}", args.state_dir.display()))?;
    let control_dir = args
        .control_dir
        .clone()
        .unwrap_or_else(|| args.state_dir.join(".hive"));
    let mut link_paused = None;
    let mut link_deployed = None;
    if let Some(link) = crate::link::LinkConfig::from_env() {
        // No sockets of core's here: the link makes them, and the control
        // files, before anything below reads them.
        let local = crate::link::Local {
            socket: &socket,
            egress: args
                .egress_socket
                .as_deref()
                .filter(|s| !s.as_os_str().is_empty()),
            page: args.page_socket.as_deref(),
            control_dir: &control_dir,
            state: &args.state_dir,
        };
        let linked = crate::link::start(&link, local)
            .await
            .with_context(|| format!("link to core at {}", link.addr))?;
        link_paused = Some(linked.paused);
        link_deployed = Some(linked.files.deployed);
    }
    let client = SocketClient::new(&socket);
    let agent = match args.agent.clone().filter(|a| !a.is_empty()) {
        Some(agent) => agent,
        None => whoami(&client).await?,
    };
    // The deployed config's model is the default; a runtime switch from
    // the web UI (persisted in the state dir) still wins. On the link it
    // is core's word, not the agent-writable copy in the link dir.
    let deployed = match link_deployed {
        Some(text) => text.and_then(|text| crate::deployed::parse(text.as_bytes(), "the link")),
        None => crate::deployed::load(&control_dir),
    };
    let default_model = deployed
        .as_ref()
        .and_then(|d| d.config.model.clone())
        .unwrap_or_else(|| args.model.clone());
    let shared = Shared::new(
        agent.clone(),
        args.role,
        args.state_dir.clone(),
        client,
        default_model.clone(),
    );
    let mut proxy_env = Vec::new();
    if let Some(socket) = args.egress_socket.filter(|s| !s.as_os_str().is_empty()) {
        let addr = crate::egress::start(socket.clone())
            .await
            .context("egress bridge")?;
        tracing::info!(%addr, socket = %socket.display(), "egress bridge");
        proxy_env = crate::egress::proxy_env(addr);
    }
    let engine_name = deployed
        .as_ref()
        .and_then(|d| d.config.engine.clone())
        .unwrap_or(args.engine);
    let engine: Arc<dyn crate::engine::Engine> = match engine_name.as_str() {
        "claude" => Arc::new(Claude::new(args.claude_bin).with_env(proxy_env)),
        "codex" => Arc::new(
            Codex::new(
                args.codex_bin,
                std::env::var(crate::engine::codex::BASE_URL_ENV).ok(),
            )
            .with_env(proxy_env),
        ),
        other => bail!("unknown engine {other:?}: expected claude or codex"),
    };
    if crate::engine::switched(&args.state_dir, engine.name()) {
        // The runtime model switch was a model of the other engine.
        shared.clear_model(default_model.clone());
        shared.bus.note(format!(
            "the engine is now {}: model {default_model}",
            engine.name()
        ));
    }
    shared.login.set_engine(engine.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let mut web_task = None;
    if let Some(path) = &args.page_socket {
        let listener =
            web::bind(path).with_context(|| format!("page socket {}", path.display()))?;
        println!("hive agent: page {}", path.display());
        let mut rx = shutdown_rx.clone();
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        web_task = Some(tokio::spawn(web::serve(shared.clone(), listener, shutdown)));
    }

    tokio::spawn(report_state(shared.clone()));

    let vacuum_bus = shared.bus.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            let n = vacuum_bus.vacuum(bus::KEEP);
            if n > 0 {
                tracing::info!("vacuumed {n} live events");
            }
        }
    });

    let hive_exe = std::env::current_exe().context("locating the hive binary")?;
    let config = Config {
        deployed: deployed.clone(),
        agent,
        role: args.role,
        socket,
        state_dir: args.state_dir,
        control_dir,
        link_paused,
        shared_dir: args.shared_dir,
        config_dir: args.config_dir,
        engine,
        default_model,
        hive_exe,
        extra_allowed_tools: args
            .allowed_tools
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        turn_limit: Duration::from_secs(args.turn_timeout.max(1)),
        grace: Duration::from_secs(args.cancel_grace),
        recv_wait_seconds: args.recv_wait.min(hive_proto::MAX_WAIT_SECONDS),
        recv_max: args.recv_max.clamp(1, hive_proto::MAX_RECV_BATCH),
        context_watermark: args.context_watermark,
        max_attempts: args.max_attempts.max(1),
        rate_limit_backoff: Duration::from_secs(args.rate_limit_backoff.max(1)),
        poll: Duration::from_millis(args.poll_ms.max(10)),
    };
    tracing::info!(?config, "harness starting");
    println!("hive agent: serving {} as {}", config.agent, config.role);
    let harness = tokio::spawn(Harness::new(config, shared, shutdown_rx).run());

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    if let Err(e) = harness.await {
        tracing::error!("turn loop panicked: {e}");
    }
    tracing::debug!("turn loop stopped");
    if let Some(task) = web_task {
        let _ = task.await;
    }
    tracing::debug!("web server stopped");
    Ok(())
}

async fn whoami(client: &SocketClient) -> anyhow::Result<String> {
    match client.call(&AgentRequest::Whoami).await {
        Ok(AgentResponse::Whoami { name, .. }) => Ok(name),
        Ok(other) => bail!("whoami answered {other:?}"),
        Err(e) => Err(e).context("asking the socket who this agent is (set HIVE_AGENT)"),
    }
}

/// Tells core the turn state and model whenever either changes (it shows
/// them on the status row and tells the manager about logins). Re-sends
/// every minute until core has heard the latest.
async fn report_state(shared: std::sync::Arc<Shared>) {
    let mut frames = shared.bus.subscribe();
    let mut every = tokio::time::interval(Duration::from_secs(60));
    type Reported = (
        hive_proto::live::TurnState,
        String,
        Option<bool>,
        Option<String>,
        Option<i64>,
    );
    let mut reported: Option<Reported> = None;
    loop {
        let now = (
            shared.turn_state(),
            shared.model(),
            shared.logged_in(),
            shared.note(),
            shared.state_until(),
        );
        if reported.as_ref() != Some(&now) {
            let request = hive_proto::AgentRequest::HarnessState {
                state: now.0,
                model: Some(now.1.clone()),
                logged_in: now.2,
                note: now.3.clone(),
                until: now.4,
            };
            match shared.client.request(&request).await {
                Ok(hive_proto::AgentResponse::Ok) => reported = Some(now),
                Ok(other) => tracing::debug!(?other, "harness state not recorded"),
                Err(e) => tracing::debug!("harness state not reported: {e}"),
            }
        }
        tokio::select! {
            frame = frames.recv() => {
                if matches!(frame, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            _ = every.tick() => {}
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // systemd-nspawn's stub init follows SIGTERM with SIGHUP at once; with
    // a handler installed (and never acted on) SIGHUP no longer kills the
    // harness before its shutdown is done.
    let _hangup = signal(SignalKind::hangup());
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
