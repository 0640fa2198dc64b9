//! Egress proxy benchmark: the latency a model request gains by going
//! through the path a sandboxed engine uses (loopback TCP → the harness's
//! bridge → the agent's egress socket → core's proxy → the model) instead
//! of straight to the model. The model is a local scripted server
//! answering a small POST with a streamed (chunked) SSE response of eight
//! events. Prints p50/p99 of the whole request and of its first byte, for
//! a new connection per request and for one kept-alive connection (a
//! `CONNECT` tunnel through the proxy); asserts nothing about time.
//!
//! `EGRESS_REQUESTS` (per mode, default 2000) changes the run.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_core::egress::{Egress, Proxy};
use hive_proto::AgentName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

type BoxError = Box<dyn Error + Send + Sync>;

const BODY: &str = r#"{"model":"claude-bench","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

fn main() -> Result<(), BoxError> {
    let requests: usize = std::env::var("EGRESS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let model = start_model().await?;
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("egress.sock");
        let env = [("ANTHROPIC_BASE_URL".to_owned(), format!("http://{model}"))];
        let egress = Arc::new(Egress::new(&env, Vec::new(), None));
        let proxy = Proxy::new(egress, AgentName::parse("bench")?);
        tokio::spawn(proxy.bind(&socket).map_err(|e| format!("{e:#}"))?);
        let bridge = start_bridge(socket).await?;

        println!("egress proxy: {requests} requests per mode, SSE answer of 8 events");
        println!(
            "{:<44} {:>9} {:>9} {:>9} {:>9}",
            "mode", "p50 µs", "p99 µs", "1st p50", "1st p99"
        );
        let direct_new = fresh(requests, Target::Direct(model)).await?;
        report("direct, new connection", &direct_new);
        let proxy_new = fresh(requests, Target::Proxy(bridge, model)).await?;
        report("proxy absolute-form, new connection", &proxy_new);
        let direct_kept = kept(requests, Target::Direct(model)).await?;
        report("direct, keep-alive", &direct_kept);
        let tunnel_kept = kept(requests, Target::Tunnel(bridge, model)).await?;
        report("proxy CONNECT tunnel, keep-alive", &tunnel_kept);
        println!(
            "added p50: new connection {:.0} µs, keep-alive tunnel {:.0} µs",
            p(&proxy_new.total, 50) - p(&direct_new.total, 50),
            p(&tunnel_kept.total, 50) - p(&direct_kept.total, 50),
        );
        println!(
            "added p99: new connection {:.0} µs, keep-alive tunnel {:.0} µs",
            p(&proxy_new.total, 99) - p(&direct_new.total, 99),
            p(&tunnel_kept.total, 99) - p(&direct_kept.total, 99),
        );
        Ok::<_, BoxError>(())
    })
}

#[derive(Clone, Copy)]
enum Target {
    Direct(SocketAddr),
    /// Absolute-form requests through the bridge.
    Proxy(SocketAddr, SocketAddr),
    /// A CONNECT tunnel through the bridge.
    Tunnel(SocketAddr, SocketAddr),
}

#[derive(Default)]
struct Samples {
    total: Vec<f64>,
    first: Vec<f64>,
}

fn p(samples: &[f64], pct: usize) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = (sorted.len() * pct / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0.0)
}

fn report(mode: &str, s: &Samples) {
    println!(
        "{mode:<44} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        p(&s.total, 50),
        p(&s.total, 99),
        p(&s.first, 50),
        p(&s.first, 99)
    );
}

/// One request per new connection (including its connect).
async fn fresh(n: usize, target: Target) -> Result<Samples, BoxError> {
    let mut samples = Samples::default();
    for _ in 0..n {
        let start = Instant::now();
        let (mut stream, path) = match target {
            Target::Direct(model) => (TcpStream::connect(model).await?, "/v1/messages".to_owned()),
            Target::Proxy(bridge, model) => (
                TcpStream::connect(bridge).await?,
                format!("http://{model}/v1/messages"),
            ),
            Target::Tunnel(..) => return Err("tunnels are kept alive".into()),
        };
        stream.set_nodelay(true)?;
        let first = request(&mut stream, &path, true).await?;
        samples.first.push(micros(first - start));
        samples.total.push(micros(start.elapsed()));
    }
    Ok(samples)
}

/// `n` requests on one kept-alive connection.
async fn kept(n: usize, target: Target) -> Result<Samples, BoxError> {
    let mut stream = match target {
        Target::Direct(model) => TcpStream::connect(model).await?,
        Target::Tunnel(bridge, model) => {
            let mut s = TcpStream::connect(bridge).await?;
            s.write_all(format!("CONNECT {model} HTTP/1.1\r\nHost: {model}\r\n\r\n").as_bytes())
                .await?;
            let head = read_head(&mut s).await?;
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("CONNECT refused: {head}").into());
            }
            s
        }
        Target::Proxy(..) => return Err("absolute form is measured fresh".into()),
    };
    stream.set_nodelay(true)?;
    let mut samples = Samples::default();
    for _ in 0..n {
        let start = Instant::now();
        let first = request(&mut stream, "/v1/messages", false).await?;
        samples.first.push(micros(first - start));
        samples.total.push(micros(start.elapsed()));
    }
    Ok(samples)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Sends the POST and reads the chunked SSE answer to its end; returns
/// when its first byte arrived.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &str,
    close: bool,
) -> Result<Instant, BoxError> {
    let connection = if close { "close" } else { "keep-alive" };
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: model\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{BODY}",
                BODY.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut first = None;
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("the answer ended early".into());
        }
        first.get_or_insert_with(Instant::now);
        buf.extend_from_slice(&chunk[..n]);
        if buf.ends_with(b"\r\n0\r\n\r\n") {
            return first.ok_or_else(|| "no byte".into());
        }
    }
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, BoxError> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err("closed before the end of the head".into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The scripted model: each request answered with eight SSE events, one
/// chunk (and one write) each, on kept-alive connections.
async fn start_model() -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = serve_model(stream).await;
            });
        }
    });
    Ok(addr)
}

async fn serve_model(mut stream: TcpStream) -> Result<(), BoxError> {
    stream.set_nodelay(true)?;
    loop {
        let head = match read_head(&mut stream).await {
            Ok(head) => head,
            Err(_) => return Ok(()),
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await?;
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .await?;
        for (i, name) in [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        .iter()
        .enumerate()
        {
            let event = format!("event: {name}\ndata: {{\"type\":\"{name}\",\"index\":{i}}}\n\n");
            stream
                .write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())
                .await?;
        }
        stream.write_all(b"0\r\n\r\n").await?;
        if head.to_ascii_lowercase().contains("connection: close") {
            return Ok(());
        }
    }
}

/// The harness's bridge, as `hive_agent::egress` runs it in a sandbox:
/// loopback TCP piped to a fresh egress-socket connection.
async fn start_bridge(socket: PathBuf) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                if let Ok(mut unix) = UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    Ok(addr)
}
