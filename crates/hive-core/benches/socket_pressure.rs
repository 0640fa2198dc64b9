//! Socket pressure benchmark: the real daemon (`serve::run`, runtime
//! `none`) in a child process — this program re-executed — and clients
//! that behave like a hostile agent. Prints:
//!
//! - `list` latency on host.sock with 1,000 idle connections open, once
//!   with the idle connections opened and left alone, once with every
//!   evicted one reconnecting at once (p50, p99, max);
//! - the daemon's peak and current RSS (`VmHWM`, `VmRSS`) with 1,000
//!   connections each holding a partial line of 1 MiB, and its RSS after
//!   they close;
//! - how long 800 long-polls (`wait_seconds` 180) whose clients hung up
//!   keep their descriptors, and how long a fresh request on that socket
//!   waits meanwhile.
//!
//! Asserts nothing about time. `PRESSURE_ITERATIONS` (default 200) sets
//! the number of `list` requests per run.

#![allow(clippy::disallowed_methods)] // the daemon is this program, re-executed

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hive_core::{Paths, ServeConfig};
use hive_proto::MAX_REQUEST_LINE;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

type BoxError = Box<dyn Error + Send + Sync>;

/// Set in the child: run the daemon in this directory.
const DAEMON_ENV: &str = "SOCKET_PRESSURE_DAEMON_DIR";
const IDLE: usize = 1000;
const POLLERS: usize = 800;

fn main() -> Result<(), BoxError> {
    hive_core::serve::raise_fd_limit();
    if let Ok(dir) = std::env::var(DAEMON_ENV) {
        return daemon(Path::new(&dir));
    }
    let iterations: usize = std::env::var("PRESSURE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let daemon = Daemon::start(dir.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "socket_pressure: daemon pid {} (release, runtime none), clients on one 2-worker runtime",
        daemon.pid()
    );
    runtime.block_on(async {
        idle_flood(&daemon, iterations, false).await?;
        idle_flood(&daemon, iterations, true).await?;
        partial_lines(&daemon).await?;
        hung_up_polls(&daemon).await?;
        Ok::<_, BoxError>(())
    })?;
    drop(daemon);
    Ok(())
}

/// The child: `hive serve --runtime none` in `dir`, printing `ready` once
/// its sockets are bound.
fn daemon(dir: &Path) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = ServeConfig {
            paths: Paths::new(dir.join("state"), dir.join("run")),
            dashboard: None,
            runtime: "none".into(),
            agent_env: Vec::new(),
            claude_bin: None,
            codex_bin: None,
            ports: Default::default(),
            mirror: None,
            operator_token: None,
            foreground: false,
            link: None,
        };
        hive_core::serve::run(config, |_| println!("ready"))
            .await
            .map_err(|e| format!("{e:#}"))
    })?;
    Ok(())
}

struct Daemon {
    child: Child,
    run_dir: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(DAEMON_ENV, dir)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        if line.trim() != "ready" {
            return Err(format!("daemon said {line:?}").into());
        }
        Ok(Self {
            child,
            run_dir: dir.join("run"),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn host(&self) -> PathBuf {
        self.run_dir.join("host.sock")
    }

    fn manager(&self) -> PathBuf {
        self.run_dir.join("manager/mcp.sock")
    }

    /// A `/proc/<pid>/status` field in MB.
    fn status_mb(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, Iterator::count)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

/// One request, one response line.
async fn roundtrip(socket: &Path, request: &str) -> Result<String, BoxError> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    if answer.is_empty() {
        return Err("closed without an answer".into());
    }
    Ok(answer)
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .map_or_else(
                || "-".into(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1000.0),
            )
    };
    format!("p50 {}, p99 {}, max {}", pick(0.5), pick(0.99), pick(1.0))
}

/// `list` latency with [`IDLE`] silent connections open; with `reconnect`,
/// each one the daemon evicts connects again at once.
async fn idle_flood(daemon: &Daemon, iterations: usize, reconnect: bool) -> Result<(), BoxError> {
    let stop = Arc::new(AtomicBool::new(false));
    let evicted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let mut idlers = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let stream = UnixStream::connect(daemon.host()).await?;
        open.fetch_add(1, Ordering::Relaxed);
        let (socket, stop, evicted, open) =
            (daemon.host(), stop.clone(), evicted.clone(), open.clone());
        idlers.push(tokio::spawn(async move {
            let mut stream = stream;
            loop {
                // Silent until the daemon closes us.
                let mut byte = [0u8; 1];
                let _ = stream.read(&mut byte).await;
                evicted.fetch_add(1, Ordering::Relaxed);
                if !reconnect || stop.load(Ordering::Relaxed) {
                    open.fetch_sub(1, Ordering::Relaxed);
                    return;
                }
                match UnixStream::connect(&socket).await {
                    Ok(s) => stream = s,
                    Err(_) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    let mut samples = Vec::with_capacity(iterations);
    let mut failed = 0;
    for _ in 0..iterations {
        let started = Instant::now();
        match roundtrip(&daemon.host(), r#"{"cmd":"list"}"#).await {
            Ok(_) => samples.push(started.elapsed()),
            Err(_) => failed += 1,
        }
    }
    let still_open = open.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for idler in &idlers {
        idler.abort();
    }
    println!(
        "idle flood ({IDLE} idle on host.sock, {}): list {} over {} requests ({failed} failed); \
         {} idle connections evicted meanwhile, {still_open} open at the end, daemon fds {}",
        if reconnect {
            "each evicted one reconnects at once"
        } else {
            "opened once"
        },
        percentiles(samples),
        iterations,
        evicted.load(Ordering::Relaxed),
        daemon.fds(),
    );
    drop(idlers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// RSS with [`IDLE`] connections each sending a 1 MiB line without its
/// newline, then after they close.
async fn partial_lines(daemon: &Daemon) -> Result<(), BoxError> {
    let before = daemon.status_mb("VmRSS");
    let line = Arc::new(vec![b'x'; MAX_REQUEST_LINE]);
    let mut clients = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let stream = UnixStream::connect(daemon.host()).await?;
        let line = line.clone();
        clients.push(tokio::spawn(async move {
            let mut stream = stream;
            let written = stream.write_all(&line).await.is_ok();
            // Hold the connection until the daemon answers or closes it.
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            (written, !answer.is_empty())
        }));
    }
    // Let every write land (or be refused) well inside the 5 s deadline.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (held_rss, peak) = (daemon.status_mb("VmRSS"), daemon.status_mb("VmHWM"));
    let mut refused = 0;
    let mut closed = 0;
    for client in clients {
        match client.await {
            Ok((_, true)) => refused += 1,
            _ => closed += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "partial lines ({IDLE} × 1 MiB on host.sock): RSS {before:.0} MB before, {held_rss:.0} MB while held, \
         peak (VmHWM) {peak:.0} MB, {:.0} MB after they close; {refused} answered 'over budget', \
         {closed} closed unanswered (evicted or past the 5 s deadline)",
        daemon.status_mb("VmRSS"),
    );
    Ok(())
}

/// [`POLLERS`] long-polls on the manager's socket whose clients hang up:
/// how long until the daemon has closed them, and how long a fresh
/// request waits meanwhile.
async fn hung_up_polls(daemon: &Daemon) -> Result<(), BoxError> {
    let fds_before = daemon.fds();
    let mut pollers = Vec::with_capacity(POLLERS);
    for _ in 0..POLLERS {
        let mut stream = UnixStream::connect(daemon.manager()).await?;
        stream
            .write_all(b"{\"cmd\":\"recv\",\"wait_seconds\":180}\n")
            .await?;
        pollers.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = daemon.fds().saturating_sub(fds_before);
    drop(pollers);
    let hung_up = Instant::now();
    let fresh = roundtrip(&daemon.manager(), r#"{"cmd":"status"}"#).await;
    let fresh_took = hung_up.elapsed();
    let released = loop {
        if daemon.fds() <= fds_before + 2 {
            break Some(hung_up.elapsed());
        }
        if hung_up.elapsed() > Duration::from_secs(200) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "hung-up long-polls ({POLLERS} on the manager socket, wait_seconds 180, {held} fds held): \
         descriptors released {} after the hang-up; a fresh status answered in {:.2} ms ({})",
        released.map_or_else(
            || "not within 200 s".into(),
            |d| format!("{:.3} s", d.as_secs_f64())
        ),
        fresh_took.as_secs_f64() * 1000.0,
        if fresh.is_ok() { "ok" } else { "failed" },
    );
    Ok(())
}
