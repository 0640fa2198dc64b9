//! `hive serve`: start every part of the daemon and run until a signal.
//!
//! Order matters: the store opens (and migrates) first, the dashboard
//! listener binds next so agent URLs can be built, known agents are
//! reconciled between the database and the state dir, then every socket is
//! bound and the timers start. SIGTERM or SIGINT stops accepting, removes
//! the socket files and returns; the store is durable at every step.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use hive_proto::{AgentName, DashboardEvent};
use hive_store::{MessageEvent, Store};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::coordinator::Coordinator;
use crate::{Paths, agent_server, host_server, http, listener, scheduler};

/// Container backends this build can drive.
pub const RUNTIMES: &[&str] = &["none"];

/// Everything `hive serve` is told on its command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub paths: Paths,
    /// Where the dashboard listens; `None` disables it.
    pub dashboard: Option<SocketAddr>,
    /// `auto` or one of [`RUNTIMES`].
    pub runtime: String,
}

/// What a started daemon tells its operator.
#[derive(Debug, Clone)]
pub struct Started {
    pub host_socket: std::path::PathBuf,
    pub dashboard: Option<SocketAddr>,
    pub runtime: &'static str,
}

/// Picks the runtime. Only `none` exists until container backends land.
fn choose_runtime(requested: &str) -> anyhow::Result<&'static str> {
    match requested {
        "auto" => {
            tracing::info!(
                "runtime auto: no container backend is built into this hive yet; running with \
                 --runtime none (lifecycle verbs will say so)"
            );
            Ok("none")
        }
        "none" => Ok("none"),
        other => bail!(
            "runtime `{other}` is not available in this build (available: auto, {})",
            RUNTIMES.join(", ")
        ),
    }
}

/// Runs the daemon until SIGTERM/SIGINT. `on_started` is called once every
/// socket is bound.
pub async fn run(config: ServeConfig, on_started: impl FnOnce(&Started)) -> anyhow::Result<()> {
    let runtime = choose_runtime(&config.runtime)?;
    let paths = config.paths;
    paths.create_roots()?;
    let store = Store::open(&paths.database())
        .with_context(|| format!("open {}", paths.database().display()))?;

    let dashboard = match config.dashboard {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                bail!(
                    "refusing to bind the dashboard to {addr}: it has no operator credential yet, \
                     so it binds loopback only (e.g. 127.0.0.1:{})",
                    addr.port()
                );
            }
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

    let coord = Arc::new(Coordinator::new(store, paths.clone(), dashboard_addr));
    for name in reconcile_agents(&coord)? {
        serve_agent_socket(&coord, name)?;
    }

    let host = listener::bind(&paths.host_socket())?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let coord = coord.clone();
        tasks.spawn(listener::accept_loop(host, move |stream| {
            host_server::handle(coord.clone(), stream)
        }));
    }
    tasks.spawn(scheduler::run(coord.clone()));
    tasks.spawn(scheduler::vacuum(coord.clone()));
    tasks.spawn(forward_broker_events(coord.clone()));
    if let Some(tcp) = dashboard {
        tasks.spawn(http::serve(coord.clone(), tcp));
    }

    on_started(&Started {
        host_socket: paths.host_socket(),
        dashboard: dashboard_addr,
        runtime,
    });
    tracing::info!(host_socket = %paths.host_socket().display(), runtime, "hive serving");

    wait_for_signal().await?;
    tracing::info!("shutting down");
    coord.shut_down();
    tasks.abort_all();
    for (_, handle) in coord
        .agent_sockets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
    {
        handle.abort();
    }
    remove_sockets(&coord)?;
    Ok(())
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

/// Binds `name`'s socket and serves it until shutdown.
pub fn serve_agent_socket(coord: &Arc<Coordinator>, name: AgentName) -> anyhow::Result<()> {
    let socket = listener::bind(&coord.paths.agent_socket(&name))?;
    let task = {
        let (coord, name) = (coord.clone(), name.clone());
        tokio::spawn(listener::accept_loop(socket, move |stream| {
            agent_server::handle(coord.clone(), name.clone(), stream)
        }))
    };
    let previous = coord
        .agent_sockets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name, task.abort_handle());
    if let Some(previous) = previous {
        previous.abort();
    }
    Ok(())
}

/// Mirrors the broker's sent/delivered broadcast onto the dashboard bus.
async fn forward_broker_events(coord: Arc<Coordinator>) {
    let mut rx = coord.store.subscribe();
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            () = coord.shutting_down() => return,
        };
        match event {
            Ok(MessageEvent::Sent(m)) => coord.dashboard.emit(|seq| DashboardEvent::Sent {
                seq,
                id: m.id,
                from: m.from,
                to: m.to,
                body: m.body,
                at: m.at,
                in_reply_to: m.in_reply_to,
                file_refs: Vec::new(),
            }),
            Ok(MessageEvent::Delivered(m)) => {
                coord.dashboard.emit(|seq| DashboardEvent::Delivered {
                    seq,
                    id: m.id,
                    from: m.from,
                    to: m.to,
                    body: m.body,
                    at: m.at,
                    in_reply_to: m.in_reply_to,
                    file_refs: Vec::new(),
                })
            }
            Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "dashboard forwarder lagged"),
            Err(RecvError::Closed) => return,
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn remove_sockets(coord: &Coordinator) -> anyhow::Result<()> {
    let mut sockets = vec![coord.paths.host_socket()];
    for record in coord.store.agents()? {
        if let Ok(name) = AgentName::parse(&record.name) {
            sockets.push(coord.paths.agent_socket(&name));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_choice() {
        assert_eq!(choose_runtime("auto").unwrap(), "none");
        assert_eq!(choose_runtime("none").unwrap(), "none");
        assert_eq!(
            choose_runtime("docker").unwrap_err().to_string(),
            "runtime `docker` is not available in this build (available: auto, none)"
        );
    }
}
