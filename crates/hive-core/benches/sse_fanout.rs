//! Dashboard SSE fan-out benchmark: the real dashboard router on loopback,
//! 1, 100 and 1,000 `/dashboard/stream` clients, events published on the
//! dashboard bus at a steady rate. Prints, per client count, the events per
//! second delivered (summed over clients) and the publish-to-receive
//! latency (p50, p99, max); asserts nothing about time.
//!
//! `SSE_RATE` (events/s, default 200), `SSE_SECONDS` (default 5) and
//! `SSE_CLIENTS` (comma-separated, default `1,100,1000`) change the run.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The operator credential every dashboard request presents.
const TOKEN: &str = "bench-operator-token-0123456789";

use hive_core::Paths;
use hive_core::coordinator::Coordinator;
use hive_core::settings::Settings;
use hive_proto::{DashboardEvent, MessageView};
use hive_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn Error + Send + Sync>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), BoxError> {
    raise_fd_limit();
    let rate: u64 = env_or("SSE_RATE", 200);
    let seconds: u64 = env_or("SSE_SECONDS", 5);
    let counts: Vec<usize> = std::env::var("SSE_CLIENTS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let paths = Paths::new(dir.path().join("state"), dir.path().join("run"));
        paths.create_roots().map_err(|e| format!("{e:#}"))?;
        let store = Store::open(&paths.database())?;
        let settings = Settings {
            hive_bin: "/bin/false".into(),
            engine_bin: None,
            codex_bin: None,
            agent_env: Vec::new(),
            agent_env_args: Vec::new(),
            ports: Default::default(),
            mirror: None,
            operator_token: TOKEN.to_owned(),
            link: None,
        };
        let coord = Coordinator::new(store, paths, None, None, settings, None);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(hive_core::http::serve(coord.clone(), listener));
        let base = Instant::now();
        println!(
            "sse_fanout: {rate} events/s for {seconds} s per run, server and clients on one 2-worker runtime"
        );
        for &clients in &counts {
            run(&coord, addr, base, clients, rate, seconds).await?;
        }
        coord.shut_down();
        Ok::<_, BoxError>(())
    })
}

async fn run(
    coord: &Arc<Coordinator>,
    addr: std::net::SocketAddr,
    base: Instant,
    clients: usize,
    rate: u64,
    seconds: u64,
) -> Result<(), BoxError> {
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(clients);
    let total = rate * seconds;
    for _ in 0..clients {
        let ready = ready.clone();
        tasks.push(tokio::spawn(client(addr, base, ready, total)));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Acquire) < clients {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {clients} clients subscribed",
                ready.load(Ordering::Acquire)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for id in 0..total {
        ticker.tick().await;
        let sent_us = base.elapsed().as_micros().to_string();
        coord.dashboard.emit(|seq| DashboardEvent::Sent {
            seq,
            message: MessageView {
                id: i64::try_from(id).unwrap_or(i64::MAX),
                from: "bench".into(),
                to: "everyone".into(),
                body: sent_us,
                at: 0,
                in_reply_to: None,
            },
        });
    }
    let publish_elapsed = started.elapsed();

    let mut latencies = Vec::with_capacity(clients * total as usize);
    let mut received = 0usize;
    let mut incomplete = 0usize;
    let mut last_receive = started;
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(60), task).await??;
        match outcome {
            Ok(report) => {
                received += report.latencies.len();
                if report.latencies.len() < total as usize {
                    incomplete += 1;
                }
                last_receive = last_receive.max(report.last);
                latencies.extend(report.latencies);
            }
            Err(e) => return Err(e),
        }
    }
    let window = last_receive.duration_since(started).max(publish_elapsed);
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .map_or_else(|| "-".into(), |us| format!("{:.2} ms", us as f64 / 1000.0))
    };
    println!(
        "clients={clients:>5}: {:>9.0} events/s delivered ({received} of {} frames, {incomplete} clients cut short), \
         publish→receive p50 {}, p99 {}, max {}",
        received as f64 / window.as_secs_f64(),
        clients * total as usize,
        pick(0.50),
        pick(0.99),
        pick(1.0),
    );
    Ok(())
}

struct Report {
    /// Publish-to-receive latency of every frame, in µs.
    latencies: Vec<u64>,
    last: Instant,
}

/// One SSE client: reads `/dashboard/stream` (chunked) until it has seen
/// `expect` frames or the stream ends.
async fn client(
    addr: std::net::SocketAddr,
    base: Instant,
    ready: Arc<AtomicUsize>,
    expect: u64,
) -> Result<Report, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!(
                "GET /dashboard/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut raw = Vec::with_capacity(64 * 1024);
    let mut body = Vec::with_capacity(64 * 1024);
    let mut head_done = false;
    let mut latencies = Vec::with_capacity(expect as usize);
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut subscribed = false;
    while (latencies.len() as u64) < expect {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let now_us = base.elapsed().as_micros() as u64;
        raw.extend_from_slice(&buf[..n]);
        if !head_done {
            let Some(end) = find(&raw, b"\r\n\r\n") else {
                continue;
            };
            raw.drain(..end + 4);
            head_done = true;
        }
        dechunk(&mut raw, &mut body);
        // SSE events end with a blank line.
        while let Some(end) = find(&body, b"\n\n") {
            let event = &body[..end];
            if !subscribed {
                subscribed = true;
                ready.fetch_add(1, Ordering::AcqRel);
            }
            if let Some(sent) = sent_us(event) {
                latencies.push(now_us.saturating_sub(sent));
                last = Instant::now();
            }
            body.drain(..end + 2);
        }
    }
    Ok(Report { latencies, last })
}

/// Moves whole chunks of a chunked body from `raw` to `body`.
fn dechunk(raw: &mut Vec<u8>, body: &mut Vec<u8>) {
    loop {
        let Some(line_end) = find(raw, b"\r\n") else {
            return;
        };
        let size = std::str::from_utf8(&raw[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else {
            return;
        };
        if raw.len() < line_end + 2 + size + 2 {
            return;
        }
        body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        raw.drain(..line_end + 2 + size + 2);
    }
}

/// The publish time carried in a `sent` frame's `body`.
fn sent_us(event: &[u8]) -> Option<u64> {
    let at = find(event, b"\"body\":\"")? + 8;
    let digits = event[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&event[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// 1,000 clients need about 2,000 descriptors: raise the soft limit to the
/// hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("could not raise the fd limit from {soft}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("could not read the fd limit: {e}"),
    }
}
