//! The `hive` binary: every role of hyperhive in one file — the daemon
//! (`serve`, `up`), the operator's admin CLI, and `paths`.

mod admin;
mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hive_core::{Paths, ServeConfig, Started};

/// Default dashboard address (loopback only).
const DEFAULT_DASHBOARD: &str = "127.0.0.1:7700";

#[derive(Debug, Parser)]
#[command(
    name = "hive",
    version,
    about = "hyperhive: a swarm of LLM coding agents in containers"
)]
struct Cli {
    #[command(flatten)]
    client: admin::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon as a service: at exit, docker containers keep
    /// running for the next start to reattach (see contrib/hyperhive.service).
    Serve(ServeArgs),
    /// Run the daemon in the foreground and say how to reach it; Ctrl-C
    /// stops and removes every container of the hive.
    Up(ServeArgs),
    /// Print where the daemon keeps its state and sockets.
    Paths(DirArgs),
    /// Print the dashboard's login link (reads `<run-dir>/operator-token`).
    DashboardUrl(DashboardUrlArgs),
    /// Run inside an agent's container: the harness and its MCP server.
    #[command(subcommand)]
    Agent(hive_agent::cli::AgentCommand),
    /// Run as the swarm backend's link relay: pipe every TCP connection to
    /// `--listen` to core's link at `--to` (started by the daemon).
    #[command(hide = true)]
    LinkRelay(RelayArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

#[derive(Debug, Clone, Args)]
struct RelayArgs {
    /// Where the relay accepts connections.
    #[arg(long)]
    listen: SocketAddr,
    /// `host:port` of core's link listener.
    #[arg(long)]
    to: String,
}

#[derive(Debug, Clone, Args)]
struct DirArgs {
    /// Persistent state: sqlite, agent state dirs, config repos.
    #[arg(long, env = "HIVE_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Sockets: host.sock, manager/mcp.sock, agents/<name>/mcp.sock.
    #[arg(long, env = "HIVE_RUN_DIR")]
    run_dir: Option<PathBuf>,
}

impl DirArgs {
    fn paths(&self) -> Paths {
        let defaults = Paths::defaults();
        Paths::new(
            self.state_dir.clone().unwrap_or(defaults.state_dir),
            self.run_dir.clone().unwrap_or(defaults.run_dir),
        )
    }
}

#[derive(Debug, Clone, Args)]
struct DashboardUrlArgs {
    #[command(flatten)]
    dirs: DirArgs,
    /// The address the dashboard listens on.
    #[arg(long, default_value = DEFAULT_DASHBOARD)]
    dashboard: SocketAddr,
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    #[command(flatten)]
    dirs: DirArgs,
    /// Dashboard address (loopback), or `off`.
    #[arg(long, default_value = DEFAULT_DASHBOARD, value_parser = parse_dashboard)]
    dashboard: DashboardAddr,
    /// Container backend: `auto` picks the strongest available; `none`
    /// runs without containers; `swarm` (only by name, on a swarm manager
    /// node) runs each agent as a Docker Swarm service.
    #[arg(long, default_value = "auto")]
    runtime: String,
    /// KEY=VALUE every agent's harness gets (repeatable), on top of
    /// `<state-dir>/agent.env`: API endpoints and keys, CLAUDE_CODE_* …
    #[arg(long = "agent-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    agent_env: Vec<(String, String)>,
    /// The `claude` CLI to bind read-only into every agent's container
    /// (default: `claude` on PATH; `scripts/install-claude` fetches one).
    #[arg(long, env = "HIVE_CLAUDE_BIN", value_name = "PATH")]
    claude_bin: Option<PathBuf>,
    /// The `codex` CLI to bind read-only into every agent's container, for
    /// agents whose `engine` is `codex` (default: `codex` on PATH;
    /// `scripts/install-codex` fetches one).
    #[arg(long, env = "HIVE_CODEX_BIN", value_name = "PATH")]
    codex_bin: Option<PathBuf>,
    /// The manager's web UI port.
    #[arg(long, default_value_t = 8000)]
    manager_port: u16,
    /// Ports other agents' web UIs draw from.
    #[arg(long, default_value = "8100-8999", value_parser = parse_port_range)]
    agent_ports: (u16, u16),
    /// Mirror every applied config repo (main and tags) after each change:
    /// a base URL or path under which `<name>.git` lives, or a template
    /// with `{name}`. Best-effort; a down mirror never blocks a deploy.
    #[arg(long, value_name = "URL")]
    mirror_url: Option<String>,
    /// User name for the mirror; the token comes from HIVE_MIRROR_TOKEN and
    /// is never written into any repo.
    #[arg(long, value_name = "USER")]
    mirror_user: Option<String>,
    /// A file holding the operator's dashboard credential (16+ characters;
    /// or HIVE_OPERATOR_TOKEN). Without one, a random token is made at
    /// start. Either way every dashboard request must present it, and it is
    /// written to `<run-dir>/operator-token` (0600).
    #[arg(long, value_name = "PATH")]
    operator_token_file: Option<PathBuf>,
    /// How agents' harnesses reach core: `unix` (core's sockets bound into
    /// each container; identity is the socket) or `tls` (each container
    /// dials the link listener with its own client certificate; for agents
    /// on another host). Default: `tls` on the `swarm` runtime (which then
    /// needs `--link-listen` and `--link-network`), `unix` elsewhere.
    #[arg(long, value_enum)]
    agent_transport: Option<AgentTransport>,
    /// Where the TLS link listens (`--agent-transport tls`).
    #[arg(long, default_value = "127.0.0.1:0")]
    link_listen: SocketAddr,
    /// `host:port` containers dial to reach the link (default: the bound
    /// address).
    #[arg(long, value_name = "HOST:PORT")]
    link_advertise: Option<String>,
    /// The container network that reaches the link (docker: a network on
    /// which only core and agents are).
    #[arg(long, value_name = "NAME")]
    link_network: Option<String>,
    /// The largest checkpoint of an agent's `/state` core keeps, in bytes
    /// (checkpoints travel over the link; a bigger one is refused and the
    /// previous one kept).
    #[arg(long, value_name = "BYTES", default_value_t = hive_core::link::DEFAULT_CHECKPOINT_CAP)]
    checkpoint_cap: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AgentTransport {
    Unix,
    Tls,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    hive_core::engine::parse_env_pair(s).map_err(|e| e.to_string())
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (first, last) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: want FIRST-LAST"))?;
    let port = |p: &str| p.parse::<u16>().map_err(|e| format!("{p:?}: {e}"));
    let (first, last) = (port(first)?, port(last)?);
    if first > last || first == 0 {
        return Err(format!("{s:?}: want 1 <= FIRST <= LAST"));
    }
    Ok((first, last))
}

#[derive(Debug, Clone, Copy)]
struct DashboardAddr(Option<SocketAddr>);

fn parse_dashboard(s: &str) -> Result<DashboardAddr, String> {
    if s == "off" {
        return Ok(DashboardAddr(None));
    }
    s.parse()
        .map(|a| DashboardAddr(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (want HOST:PORT or off)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args, false),
        Command::Up(args) => serve(args, true),
        Command::Paths(dirs) => {
            print_paths(&dirs.paths());
            Ok(())
        }
        Command::DashboardUrl(args) => dashboard_url(&args),
        Command::Agent(cmd) => hive_agent::cli::run(cmd, cli.client.socket.clone()),
        Command::LinkRelay(args) => relay::run(args.listen, args.to),
        Command::Admin(cmd) => {
            let default_socket = Paths::defaults().host_socket();
            admin::run(&cli.client, &default_socket, cmd)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The operator credential from `--operator-token-file` or
/// HIVE_OPERATOR_TOKEN; refused when shorter than 16 characters.
fn operator_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    let token = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("HIVE_OPERATOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    if let Some(token) = &token
        && (token.len() < 16 || !token.chars().all(|c| c.is_ascii_graphic()))
    {
        anyhow::bail!("the operator token must be at least 16 visible ASCII characters");
    }
    Ok(token)
}

/// `hive dashboard-url`: the login link from the running daemon's token.
fn dashboard_url(args: &DashboardUrlArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let file = args.dirs.paths().operator_token();
    let token = std::fs::read_to_string(&file)
        .with_context(|| format!("read {} (is the hive running?)", file.display()))?;
    println!("http://{}/login?token={}", args.dashboard, token.trim());
    Ok(())
}

fn print_paths(paths: &Paths) {
    println!("state dir  {}", paths.state_dir.display());
    println!("run dir    {}", paths.run_dir.display());
    println!("database   {}", paths.database().display());
    println!("host.sock  {}", paths.host_socket().display());
}

/// The transport asked for, or the runtime's default: the link on swarm
/// (whose agents may run on any node), the unix sockets elsewhere.
fn transport(args: &ServeArgs) -> anyhow::Result<AgentTransport> {
    let swarm = args.runtime == "swarm";
    let transport = match args.agent_transport {
        Some(transport) => transport,
        None if swarm => AgentTransport::Tls,
        None => AgentTransport::Unix,
    };
    if swarm && transport == AgentTransport::Unix {
        eprintln!(
            "hive: swarm agents on the unix transport run only on this node (their sockets \
             are this host's paths): pin them here, or use --agent-transport tls"
        );
    }
    if swarm && transport == AgentTransport::Tls {
        anyhow::ensure!(
            args.link_network.is_some(),
            "the swarm runtime links its agents to core over TLS through a relay: give \
             --link-network (a docker bridge network whose gateway is this host) and \
             --link-listen <gateway>:<port>, or --agent-transport unix to run every agent on \
             this node"
        );
        anyhow::ensure!(
            args.link_listen.port() != 0,
            "the swarm runtime's link relay outlives the daemon and dials a fixed address: \
             give --link-listen a port"
        );
    }
    Ok(transport)
}

fn serve(args: ServeArgs, friendly: bool) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HIVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(hive_agent::cli::log_in_colour())
        .init();
    let transport = transport(&args)?;
    let config = ServeConfig {
        paths: args.dirs.paths(),
        dashboard: args.dashboard.0,
        runtime: args.runtime,
        agent_env: args.agent_env,
        claude_bin: args.claude_bin.filter(|p| !p.as_os_str().is_empty()),
        codex_bin: args.codex_bin.filter(|p| !p.as_os_str().is_empty()),
        ports: hive_core::settings::PortRange {
            manager: args.manager_port,
            first: args.agent_ports.0,
            last: args.agent_ports.1,
        },
        mirror: args
            .mirror_url
            .map(|url_template| hive_config::MirrorConfig {
                url_template,
                username: args.mirror_user,
                token: std::env::var("HIVE_MIRROR_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
            }),
        operator_token: operator_token(args.operator_token_file.as_deref())?,
        foreground: friendly,
        link: (transport == AgentTransport::Tls).then_some(hive_core::link::LinkConfig {
            listen: args.link_listen,
            advertise: args.link_advertise,
            network: args.link_network,
            checkpoint_cap: args.checkpoint_cap,
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(hive_core::serve::run(config, |started: &Started| {
        let dashboard = started
            .dashboard
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/"));
        println!("hive: host socket {}", started.host_socket.display());
        println!("hive: dashboard {dashboard}");
        if let Some(link) = started.link {
            println!("hive: link {link}");
        }
        if let Some(login) = &started.login_url {
            println!("hive: log in at {login}");
        }
        if started.containers_outlive {
            println!(
                "hive: runtime {} (containers keep running when this daemon stops; the next \
                 `hive serve` reattaches them; `hive up` removes them at exit instead)",
                started.runtime
            );
        } else {
            println!("hive: runtime {}", started.runtime);
        }
        if friendly {
            println!(
                "hive: try `hive --socket {} status` in another terminal; Ctrl-C stops the hive \
                 and every container of it",
                started.host_socket.display()
            );
        }
    }))
}
