//! Message hop over the link against the unix socket: agent `a` sends
//! one message to agent `b`, whose `recv` is parked; the hop is the time
//! from `a` writing its `send` line to `b` reading the delivered message.
//! Both agents keep one persistent connection each, on their unix sockets
//! (`mcp.sock`) or on the TLS link (`hive_proto::link`, the client the
//! harness's link uses, with the credentials core issues). The daemon's
//! parts run in this process (one 2-worker runtime with the clients); the
//! store is a real sqlite file. Prints p50/p99/max; asserts nothing.
//!
//! `HOP_SAMPLES` (per transport, default 2000) changes the run.

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_agent::link::{Dialer, LinkConfig};
use hive_core::Paths;
use hive_core::coordinator::Coordinator;
use hive_core::link::Link;
use hive_core::settings::Settings;
use hive_proto::AgentName;
use hive_store::Store;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixStream};

type BoxError = Box<dyn Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let samples: usize = std::env::var("HOP_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let dir = tempfile::tempdir()?;
        let paths = Paths::new(dir.path().join("state"), dir.path().join("run"));
        paths.create_roots().map_err(|e| format!("{e:#}"))?;
        let store = Store::open(&paths.database())?;
        let (a, b) = (AgentName::parse("a")?, AgentName::parse("b")?);
        for name in [&a, &b] {
            store.register_agent(name)?;
            paths
                .create_agent_dirs(name)
                .map_err(|e| format!("{e:#}"))?;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let link = Arc::new(Link::open(&paths, addr.clone(), None).map_err(|e| format!("{e:#}"))?);
        for name in [&a, &b] {
            link.issue(&paths, name, None)
                .map_err(|e| format!("{e:#}"))?;
        }
        let settings = Settings {
            hive_bin: "/bin/false".into(),
            engine_bin: None,
            codex_bin: None,
            agent_env: Vec::new(),
            agent_env_args: Vec::new(),
            ports: Default::default(),
            mirror: None,
            operator_token: "bench-token-0123456789".to_owned(),
            link: Some(link.clone()),
        };
        let coord = Coordinator::new(store, paths.clone(), None, None, settings, None);
        for name in [&a, &b] {
            hive_core::agent_server::serve_agent_socket(&coord, name.clone())
                .map_err(|e| format!("{e:#}"))?;
        }
        tokio::spawn(hive_core::link_server::serve(coord.clone(), link, listener));

        println!("link_hop: {samples} hops per transport, a → b with b's recv parked");
        println!(
            "{:<28} {:>9} {:>9} {:>9}",
            "transport", "p50 µs", "p99 µs", "max µs"
        );
        let unix = hops(
            samples,
            UnixStream::connect(paths.agent_socket(&a)).await?,
            UnixStream::connect(paths.agent_socket(&b)).await?,
        )
        .await?;
        report("unix socket", &unix);
        let dial = |name: &AgentName| {
            Dialer::load(&LinkConfig {
                addr: addr.clone(),
                credentials: hive_core::link::credential_dir(&paths, name),
            })
        };
        let (da, db) = (
            dial(&a).map_err(|e| format!("{e:#}"))?,
            dial(&b).map_err(|e| format!("{e:#}"))?,
        );
        let tls = hops(
            samples,
            da.dial(hive_proto::link::ALPN_AGENT).await?,
            db.dial(hive_proto::link::ALPN_AGENT).await?,
        )
        .await?;
        report("tls link (loopback)", &tls);
        println!(
            "added by the link: p50 {:.0} µs, p99 {:.0} µs",
            p(&tls, 50) - p(&unix, 50),
            p(&tls, 99) - p(&unix, 99)
        );
        coord.shut_down();
        Ok::<_, BoxError>(())
    })
}

/// `samples` hops from `sender` (agent a) to `receiver` (agent b).
async fn hops<S, R>(samples: usize, sender: S, receiver: R) -> Result<Vec<Duration>, BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let mut sender = BufReader::new(sender);
    let mut receiver = BufReader::new(receiver);
    let mut line = String::new();
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        receiver
            .get_mut()
            .write_all(b"{\"cmd\":\"recv\",\"wait_seconds\":10,\"max\":1}\n")
            .await?;
        // Let the recv park before the send.
        tokio::time::sleep(Duration::from_micros(500)).await;
        let start = Instant::now();
        sender
            .get_mut()
            .write_all(
                format!("{{\"cmd\":\"send\",\"to\":\"b\",\"body\":\"hop {i}\"}}\n").as_bytes(),
            )
            .await?;
        line.clear();
        receiver.read_line(&mut line).await?;
        let hop = start.elapsed();
        if !line.contains("\"messages\"") || !line.contains(&format!("hop {i}\"")) {
            return Err(format!("unexpected recv answer: {line}").into());
        }
        line.clear();
        sender.read_line(&mut line).await?;
        // The first tenth warms up.
        if i >= samples / 10 {
            out.push(hop);
        }
        if i % 64 == 63 {
            receiver
                .get_mut()
                .write_all(b"{\"cmd\":\"ack_turn\"}\n")
                .await?;
            line.clear();
            receiver.read_line(&mut line).await?;
        }
    }
    Ok(out)
}

fn p(v: &[Duration], pct: usize) -> f64 {
    let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    v[(v.len() * pct / 100).min(v.len() - 1)]
}

fn report(what: &str, v: &[Duration]) {
    let max = v.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1e6);
    println!(
        "{:<28} {:>9.0} {:>9.0} {:>9.0}",
        what,
        p(v, 50),
        p(v, 99),
        max
    );
}
