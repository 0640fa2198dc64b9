//! The broker beside Redis Streams, in one run, through their real sockets.
//!
//! Starts `hive serve --runtime none` and `redis-server` (on a unix socket,
//! AOF `appendfsync everysec`: both durable against a process crash, as
//! sqlite WAL `synchronous=NORMAL` is) in a temp dir, then drives each with
//! the same loop: per batch of 32, hive = `send_batch` (32 messages) +
//! `recv{max 32, lease}` + `ack_turn{lease}`, Redis = 32 `XADD` pipelined +
//! `XREADGROUP COUNT 32` + `XACK`. Then the long-poll wake (a parked
//! `recv` / `XREADGROUP BLOCK` to the arrival of one message), and 100
//! agents sending at once. Those two also run against a floor: a null
//! server (this program again, run with `HIVE_BENCH_NULL_SERVER`) on the
//! daemon's tokio runtime, which answers a `send` with hive's own bytes
//! and a parked `recv` with a fixed message once some `send` arrives, and
//! does nothing else; same client, same loop, so what it reads is what
//! this machine and these client threads allow any server. Prints
//! figures and the hive/Redis ratio; asserts nothing. Run it with
//! `scripts/bench-broker` (installs `redis-server` if missing). An
//! argument (`scripts/bench-broker -- hive`) runs only the figures whose
//! name contains it, for a profiler; `HIVE_BENCH_WRAP` (e.g. `valgrind
//! --tool=callgrind`) runs the daemon under a profiler.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hive_proto::{
    AgentAnswer, AgentRequest, AgentResponse, DeliveredMessage, OutgoingMessage, Recipient,
};

const BATCH: usize = 32;
const MESSAGES: usize = 20_000;
const RUNS: usize = 7;
const WAKE_SAMPLES: usize = 2_000;
const AGENTS: usize = 100;
const SENDS_PER_AGENT: usize = 100;
const BODY_BYTES: usize = 200;
/// Set to a socket path, this program is the null server on it.
const NULL_SERVER_ENV: &str = "HIVE_BENCH_NULL_SERVER";

fn main() {
    if let Some(socket) = std::env::var_os(NULL_SERVER_ENV) {
        return null_server(Path::new(&socket));
    }
    // `cargo bench` passes `--bench`; anything else names what to run.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let dir = tempfile::tempdir().unwrap();
    let redis_bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let hive = Daemon::hive(dir.path());
    let redis = Daemon::redis(dir.path(), &redis_bin);
    let floor = Daemon::floor(dir.path());
    let body = "x".repeat(BODY_BYTES);

    println!(
        "broker vs Redis Streams: {MESSAGES} messages per run, median of {RUNS}, body {BODY_BYTES} B"
    );
    // The loops take turns, run by run (hive, hive, Redis, Redis, then
    // again), so a drift in the machine's speed reaches both sides alike;
    // the ratio is taken pair by pair.
    let loops: Vec<(&str, Loop)> = [
        ("hive send_batch+recv+ack_turn", Loop::HiveBatch),
        ("hive 32 pipelined send+recv+ack_turn", Loop::HivePipelined),
        (
            "redis 32 pipelined XADD+XREADGROUP+XACK",
            Loop::RedisPipelined,
        ),
        (
            "redis 32 XADD (unpipelined)+XREADGROUP+XACK",
            Loop::RedisUnpipelined,
        ),
    ]
    .into_iter()
    .filter(|(name, _)| wanted(name))
    .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::with_capacity(RUNS); loops.len()];
    for _ in 0..RUNS {
        for ((_, run), rates) in loops.iter().zip(&mut rates) {
            rates.push(run.throughput(&hive, &redis, &body));
        }
    }
    let median = |xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
    };
    for ((name, _), rates) in loops.iter().zip(&rates) {
        let (mid, lo, hi) = median(rates);
        println!("  {name}: {mid:.0} msgs/s (runs {lo:.0}..{hi:.0})");
    }
    let of = |which: fn(&Loop) -> bool| loops.iter().position(|(_, l)| which(l));
    if let (Some(h), Some(r)) = (
        of(|l| matches!(l, Loop::HiveBatch)),
        of(|l| matches!(l, Loop::RedisPipelined)),
    ) {
        let ratios: Vec<f64> = rates[h].iter().zip(&rates[r]).map(|(h, r)| h / r).collect();
        let (mid, lo, hi) = median(&ratios);
        println!(
            "  ratio hive/redis (batch 32, pipelined), run by run: median {mid:.2}x (runs {lo:.2}..{hi:.2})"
        );
    }

    if wanted("long-poll wake") {
        let hive_wake = hive.cpu_over(WAKE_SAMPLES, || wake_jsonl(&hive, &body));
        let redis_wake = redis.cpu_over(WAKE_SAMPLES, || wake_redis(&redis, &body));
        let floor_wake = floor.cpu_over(WAKE_SAMPLES, || wake_jsonl(&floor, &body));
        println!(
            "long-poll wake ({WAKE_SAMPLES} samples; server CPU per round of send, recv, ack):"
        );
        report("  hive recv", hive_wake);
        report("  redis XREADGROUP BLOCK", redis_wake);
        report("  floor (a server that does no work) recv", floor_wake);
    }

    if wanted("agents sending at once") {
        println!(
            "{AGENTS} agents sending at once, {SENDS_PER_AGENT} single sends each, after one \
             first send on each new connection, all at once (CPU per send, server and \
             clients; a closed loop, so its mean latency is at least {AGENTS} x the CPU of a \
             send, server's and client's, / the {cores} cores):",
            cores = cores()
        );
        for (name, run) in [
            ("hive", concurrent_jsonl(&hive, &body)),
            ("redis", concurrent_redis(&redis, &body)),
            (
                "floor (a server that does no work)",
                concurrent_jsonl(&floor, &body),
            ),
        ] {
            let mut first = run.first;
            first.sort_unstable();
            println!(
                "  {name} first sends: p50 {:.3} ms, max {:.3} ms",
                first[first.len() / 2].as_secs_f64() * 1e3,
                first[first.len() - 1].as_secs_f64() * 1e3,
            );
            report(&format!("  {name} send latency"), run.measured);
        }
    }
}

/// Latencies of one loop, and the CPU it took per operation: the
/// server's and, where known, its clients'.
struct Measured {
    samples: Vec<Duration>,
    server_cpu: Duration,
    clients_cpu: Option<Duration>,
}

fn report(name: &str, measured: Measured) {
    let Measured {
        mut samples,
        server_cpu,
        clients_cpu,
    } = measured;
    samples.sort_unstable();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap();
    let mut cpu = format!("server CPU {:.1} us", us(server_cpu));
    if let Some(clients) = clients_cpu {
        cpu.push_str(&format!(", clients {:.1} us", us(clients)));
    }
    println!(
        "{name}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms; {cpu}",
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(pick(1.0)),
        ms(mean)
    );
}

/// The CPUs this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Time every live thread of process `pid` has spent on a CPU
/// (`/proc/<pid>/task/*/schedstat`, its first field in ns).
fn process_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Time the calling thread has spent on a CPU.
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

#[derive(Clone, Copy)]
enum Loop {
    HiveBatch,
    HivePipelined,
    RedisPipelined,
    RedisUnpipelined,
}

impl Loop {
    fn throughput(self, hive: &Daemon, redis: &Daemon, body: &str) -> f64 {
        let started = Instant::now();
        match self {
            Loop::HiveBatch | Loop::HivePipelined => {
                let mut alice = Jsonl::open(&hive.socket("alice"));
                let mut bob = Jsonl::open(&hive.socket("bob"));
                for _ in 0..MESSAGES / BATCH {
                    if let Loop::HiveBatch = self {
                        let messages: Vec<OutgoingMessage> = (0..BATCH)
                            .map(|_| OutgoingMessage {
                                to: to("bob"),
                                body: body.to_owned(),
                                in_reply_to: None,
                            })
                            .collect();
                        let sent = alice.call(&AgentRequest::SendBatch { messages });
                        assert!(matches!(sent, AgentResponse::Sent { .. }), "{sent:?}");
                    } else {
                        let send = send(to("bob"), body);
                        alice.write(&vec![send; BATCH]);
                        for _ in 0..BATCH {
                            assert_eq!(alice.read(), AgentResponse::Ok);
                        }
                    }
                    let (got, lease) = bob.recv(BATCH as u32, 5);
                    assert_eq!(got, BATCH);
                    assert_eq!(bob.ack(lease), AgentResponse::Ok);
                }
            }
            Loop::RedisPipelined | Loop::RedisUnpipelined => {
                let mut writer = Resp::open(&redis.socket("redis"));
                let mut reader = Resp::open(&redis.socket("redis"));
                for _ in 0..MESSAGES / BATCH {
                    if let Loop::RedisPipelined = self {
                        let adds: Vec<Vec<&str>> = (0..BATCH)
                            .map(|_| vec!["XADD", "bench", "*", "body", body])
                            .collect();
                        writer.write(&adds);
                        for _ in 0..BATCH {
                            writer.read();
                        }
                    } else {
                        for _ in 0..BATCH {
                            writer.call(&["XADD", "bench", "*", "body", body]);
                        }
                    }
                    let got = reader.call(&[
                        "XREADGROUP",
                        "GROUP",
                        "g",
                        "c",
                        "COUNT",
                        "32",
                        "STREAMS",
                        "bench",
                        ">",
                    ]);
                    let ids = stream_ids(&got);
                    assert_eq!(ids.len(), BATCH);
                    let mut ack = vec!["XACK", "bench", "g"];
                    ack.extend(ids.iter().map(String::as_str));
                    reader.call(&ack);
                }
            }
        }
        MESSAGES as f64 / started.elapsed().as_secs_f64()
    }
}

/// The entry ids of an `XREADGROUP` reply.
fn stream_ids(reply: &Reply) -> Vec<String> {
    let Reply::Array(streams) = reply else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for stream in streams {
        if let Reply::Array(parts) = stream
            && let Some(Reply::Array(entries)) = parts.get(1)
        {
            for entry in entries {
                if let Reply::Array(fields) = entry
                    && let Some(Reply::Bulk(id)) = fields.first()
                {
                    ids.push(id.clone());
                }
            }
        }
    }
    ids
}

/// A parked `recv` on bob's socket until alice's `send` wakes it: hive,
/// or the floor.
fn wake_jsonl(server: &Daemon, body: &str) -> Vec<Duration> {
    let (tx, rx) = mpsc::channel();
    let bob_socket = server.socket("bob");
    let waiter = std::thread::spawn(move || {
        let mut bob = Jsonl::open(&bob_socket);
        for _ in 0..WAKE_SAMPLES {
            let (_, lease) = bob.recv(1, 10);
            let woke = Instant::now();
            bob.ack(lease);
            tx.send(woke).unwrap();
        }
    });
    let mut alice = Jsonl::open(&server.socket("alice"));
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        // Let the waiter park.
        std::thread::sleep(Duration::from_micros(300));
        let sent = Instant::now();
        alice.call(&send(to("bob"), body));
        samples.push(rx.recv().unwrap() - sent);
    }
    waiter.join().unwrap();
    samples
}

fn wake_redis(redis: &Daemon, body: &str) -> Vec<Duration> {
    let (tx, rx) = mpsc::channel();
    let socket = redis.socket("redis");
    let waiter = std::thread::spawn(move || {
        let mut reader = Resp::open(&socket);
        for _ in 0..WAKE_SAMPLES {
            let got = reader.call(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "10000",
                "COUNT",
                "1",
                "STREAMS",
                "wake",
                ">",
            ]);
            let woke = Instant::now();
            let ids = stream_ids(&got);
            let mut ack = vec!["XACK", "wake", "g"];
            ack.extend(ids.iter().map(String::as_str));
            reader.call(&ack);
            tx.send(woke).unwrap();
        }
    });
    let mut writer = Resp::open(&redis.socket("redis"));
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        std::thread::sleep(Duration::from_micros(300));
        let sent = Instant::now();
        writer.call(&["XADD", "wake", "*", "body", body]);
        samples.push(rx.recv().unwrap() - sent);
    }
    waiter.join().unwrap();
    samples
}

/// [`concurrent`] single `send`s on the agent sockets: hive, or the floor.
fn concurrent_jsonl(server: &Daemon, body: &str) -> Concurrent {
    let send = send(to("sink"), body);
    concurrent(
        server,
        |i| Jsonl::open(&server.socket(&format!("a{i}"))),
        move |conn: &mut Jsonl| assert_eq!(conn.call(&send), AgentResponse::Ok),
    )
}

fn concurrent_redis(redis: &Daemon, body: &str) -> Concurrent {
    let body = body.to_owned();
    concurrent(
        redis,
        |_| Resp::open(&redis.socket("redis")),
        move |conn: &mut Resp| {
            conn.call(&["XADD", "sink", "*", "body", &body]);
        },
    )
}

/// What [`concurrent`] measured: each client's first send, and then
/// the sends all of them made at once.
struct Concurrent {
    first: Vec<Duration>,
    measured: Measured,
}

/// [`AGENTS`] clients of `server` (`open(i)`), each on its own thread:
/// all send once at the same moment (a new connection's first send,
/// timed apart), then all start together and send [`SENDS_PER_AGENT`]
/// times, each again as soon as it is answered. The server's CPU and the
/// clients' are taken over those sends only.
fn concurrent<C: Send + 'static>(
    server: &Daemon,
    open: impl Fn(usize) -> C,
    send: impl Fn(&mut C) + Clone + Send + 'static,
) -> Concurrent {
    // The clients and this thread, which takes the server's CPU.
    let start = std::sync::Arc::new(std::sync::Barrier::new(AGENTS + 1));
    let threads: Vec<_> = (0..AGENTS)
        .map(|i| {
            let mut conn = open(i);
            let send = send.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let first = Instant::now();
                send(&mut conn);
                let first = first.elapsed();
                start.wait();
                let started_cpu = thread_cpu();
                let samples = (0..SENDS_PER_AGENT)
                    .map(|_| {
                        let started = Instant::now();
                        send(&mut conn);
                        started.elapsed()
                    })
                    .collect::<Vec<_>>();
                (first, samples, thread_cpu().saturating_sub(started_cpu))
            })
        })
        .collect();
    start.wait();
    start.wait();
    let meter = server.cpu_meter();
    let mut first = Vec::with_capacity(AGENTS);
    let mut samples = Vec::with_capacity(AGENTS * SENDS_PER_AGENT);
    let mut clients_cpu = Duration::ZERO;
    for thread in threads {
        let (one, sent, cpu) = thread.join().unwrap();
        first.push(one);
        samples.extend(sent);
        clients_cpu += cpu;
    }
    let sends = AGENTS * SENDS_PER_AGENT;
    Concurrent {
        first,
        measured: Measured {
            samples,
            server_cpu: meter.per_op(sends),
            clients_cpu: Some(clients_cpu / u32::try_from(sends).unwrap()),
        },
    }
}

/// A daemon this benchmark started, killed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
    kind: &'static str,
}

impl Daemon {
    fn hive(root: &Path) -> Daemon {
        let dir = root.join("hive");
        let agents = ["alice", "bob", "sink"]
            .into_iter()
            .map(str::to_owned)
            .chain((0..AGENTS).map(|i| format!("a{i}")));
        for name in agents {
            std::fs::create_dir_all(dir.join("state/agents").join(name).join("state")).unwrap();
        }
        // `HIVE_BENCH_WRAP="valgrind --tool=callgrind"` runs the daemon
        // under that command (its profile is written at the SIGTERM that
        // ends the run).
        let wrap = std::env::var("HIVE_BENCH_WRAP").unwrap_or_default();
        let mut argv: Vec<String> = wrap.split_whitespace().map(str::to_owned).collect();
        argv.push(env!("CARGO_BIN_EXE_hive").to_owned());
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("serve")
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--run-dir")
            .arg(dir.join("run"))
            .args(["--runtime", "none"])
            .env("HIVE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        loop {
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "hive serve exited");
            if line.starts_with("hive: runtime") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Daemon {
            child,
            dir,
            kind: "hive",
        }
    }

    fn redis(root: &Path, bin: &str) -> Daemon {
        let dir = root.join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("redis.sock");
        let child = Command::new(bin)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec", "--save", "", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin}: {e} (scripts/bench-broker installs redis-server)")
            });
        await_socket(&socket, "redis-server");
        let daemon = Daemon {
            child,
            dir,
            kind: "redis",
        };
        let mut conn = Resp::open(&daemon.socket("redis"));
        for stream in ["bench", "wake"] {
            conn.call(&["XGROUP", "CREATE", stream, "g", "$", "MKSTREAM"]);
        }
        daemon
    }

    /// The null server (this program, [`null_server`]) on one socket
    /// that stands for every agent's.
    fn floor(root: &Path) -> Daemon {
        let dir = root.join("floor");
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("floor.sock");
        let child = Command::new(std::env::current_exe().unwrap())
            .env(NULL_SERVER_ENV, &socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        await_socket(&socket, "the null server");
        Daemon {
            child,
            dir,
            kind: "floor",
        }
    }

    /// Runs `run` (a loop of `ops` operations against this server) and
    /// measures the server's CPU over it, per operation.
    fn cpu_over(&self, ops: usize, run: impl FnOnce() -> Vec<Duration>) -> Measured {
        let meter = self.cpu_meter();
        let samples = run();
        Measured {
            samples,
            server_cpu: meter.per_op(ops),
            clients_cpu: None,
        }
    }

    /// Starts taking this server's CPU.
    fn cpu_meter(&self) -> CpuMeter {
        CpuMeter {
            pid: self.child.id(),
            before: process_cpu(self.child.id()),
        }
    }

    fn socket(&self, name: &str) -> PathBuf {
        match self.kind {
            "redis" => self.dir.join("redis.sock"),
            "floor" => self.dir.join("floor.sock"),
            _ => self.dir.join("run/agents").join(name).join("mcp.sock"),
        }
    }
}

/// A server's CPU from when it was started ([`Daemon::cpu_meter`]).
struct CpuMeter {
    pid: u32,
    before: Duration,
}

impl CpuMeter {
    /// The server's CPU since it started, per one of `ops` operations.
    fn per_op(&self, ops: usize) -> Duration {
        // A thread that ended meanwhile takes its time with it.
        process_cpu(self.pid).saturating_sub(self.before) / u32::try_from(ops).unwrap()
    }
}

/// Waits up to 10 s for `what` to accept on `socket`.
fn await_socket(socket: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Daemon {
    /// SIGTERM, so a daemon run under a profiler (`HIVE_BENCH_WRAP`) ends
    /// cleanly and writes its profile; SIGKILL if it is still there after
    /// a minute.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor: a server that reads request lines and does no work. Its
/// runtime is the daemon's (`hive serve` builds a default multi-thread
/// one, a worker per core) and, as the daemon does, it serves each
/// connection on its own task, one line after another. A `send` is
/// answered with the bytes hive answers it with and counts one message
/// waiting; a `recv` waits for one (parked, as on hive, when none is
/// there) and is answered with a fixed message; any other line (the
/// `ack_turn` after a `recv`) with `ok`. Ends at SIGTERM, as the daemon.
fn null_server(socket: &Path) {
    let ok = answer_line(AgentResponse::Ok);
    let messages = answer_line(AgentResponse::Messages {
        messages: vec![DeliveredMessage {
            id: 1,
            from: "alice".into(),
            to: "bob".into(),
            body: "x".repeat(BODY_BYTES),
            at: 0,
            in_reply_to: None,
            redelivered: false,
        }],
        lease: Some(1),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let waiting = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (ok, messages, waiting) = (ok.clone(), messages.clone(), waiting.clone());
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(reader).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    // Every client of ours writes `cmd` first.
                    let answer = if line.starts_with(r#"{"cmd":"recv""#) {
                        waiting.acquire().await.unwrap().forget();
                        &messages
                    } else {
                        if line.starts_with(r#"{"cmd":"send","#) {
                            waiting.add_permits(1);
                        }
                        &ok
                    };
                    if writer.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// `response` as hive writes it on an agent socket: unread count and
/// newline included.
fn answer_line(response: AgentResponse) -> String {
    let answer = AgentAnswer {
        response,
        unread: Some(0),
    };
    answer.to_line().unwrap() + "\n"
}

fn to(name: &str) -> Recipient {
    Recipient::parse(name).unwrap()
}

fn send(to: Recipient, body: &str) -> AgentRequest {
    AgentRequest::Send {
        to,
        body: body.to_owned(),
        in_reply_to: None,
    }
}

/// A JSON-lines connection to an agent socket, speaking the protocol's
/// own types as the harness does (`hive-agent`'s `SocketClient`).
struct Jsonl {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Jsonl {
    fn open(socket: &Path) -> Jsonl {
        let stream = UnixStream::connect(socket).unwrap();
        Jsonl {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::with_capacity(1 << 16, stream),
        }
    }

    fn write(&mut self, requests: &[AgentRequest]) {
        let mut bytes = Vec::new();
        for r in requests {
            serde_json::to_writer(&mut bytes, r).unwrap();
            bytes.push(b'\n');
        }
        self.writer.write_all(&bytes).unwrap();
    }

    fn read(&mut self) -> AgentResponse {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        AgentAnswer::from_line(line.trim_end()).unwrap().response
    }

    fn call(&mut self, request: &AgentRequest) -> AgentResponse {
        self.write(std::slice::from_ref(request));
        self.read()
    }

    /// A `recv` of up to `max` under an exact lease: how many came, and
    /// the lease.
    fn recv(&mut self, max: u32, wait: u64) -> (usize, Option<i64>) {
        match self.call(&AgentRequest::Recv {
            wait_seconds: Some(wait),
            max: Some(max),
            lease_seconds: Some(60),
        }) {
            AgentResponse::Messages { messages, lease } => (messages.len(), lease),
            other => panic!("recv answered {other:?}"),
        }
    }

    fn ack(&mut self, lease: Option<i64>) -> AgentResponse {
        self.call(&AgentRequest::AckTurn { ids: None, lease })
    }
}

/// A RESP connection to Redis (the few replies streams use).
struct Resp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

#[derive(Debug)]
enum Reply {
    Simple,
    Int,
    Bulk(String),
    Nil,
    Array(Vec<Reply>),
}

impl Resp {
    fn open(socket: &Path) -> Resp {
        let stream = UnixStream::connect(socket).unwrap();
        Resp {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::with_capacity(1 << 16, stream),
        }
    }

    fn write<S: AsRef<str>>(&mut self, commands: &[Vec<S>]) {
        let mut bytes = Vec::new();
        for command in commands {
            bytes.extend(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                let arg = arg.as_ref();
                bytes.extend(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
            }
        }
        self.writer.write_all(&bytes).unwrap();
    }

    fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Simple,
            ":" => Reply::Int,
            "-" => panic!("redis: {rest}"),
            "$" if rest == "-1" => Reply::Nil,
            "$" => {
                let len: usize = rest.parse().unwrap();
                let mut buf = vec![0; len + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(len);
                Reply::Bulk(String::from_utf8(buf).unwrap())
            }
            "*" if rest == "-1" => Reply::Nil,
            "*" => {
                let n: usize = rest.parse().unwrap();
                Reply::Array((0..n).map(|_| self.read()).collect())
            }
            other => panic!("unexpected RESP type {other:?}"),
        }
    }

    fn call(&mut self, command: &[&str]) -> Reply {
        self.write(&[command.to_vec()]);
        self.read()
    }
}
