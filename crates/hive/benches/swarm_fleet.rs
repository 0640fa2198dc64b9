//! N agents (default 100) on a real single-node swarm, on the link: the
//! spawn-all wall time, the memory they hold, and a message hop between
//! them over the TLS link through the relay.
//!
//! The bench joins the engine to a single-node swarm if it is in none
//! ([`SwarmLease`], left again at the end only if it made it), makes an
//! internal bridge network for the link, and starts `hive serve --runtime
//! swarm --agent-transport tls --link-network …` with no engine (its
//! `HIVE_CLAUDE_BIN` unset): every harness runs, links, and parks in
//! `engine_missing` without polling `recv`, so no model is ever called and
//! messages wait in the inboxes. It spawns the agents (4 host-socket
//! requests in flight), waits until all run, then prints:
//! - memory: each task container's cgroup usage (sum, mean, max), the
//!   relay's, and the daemon's RSS and PSS (`/proc/<pid>/smaps_rollup`);
//! - the hop: agent `i` sends to agent `i+1` while the latter's `recv` is
//!   parked, timed from writing `send` to reading the delivered message;
//!   both ends are this process holding copies of the agents' own
//!   credentials, dialling the relay's address on the link network — the
//!   relay pipes to core as it does for the harnesses on their overlays.
//!
//! Then it removes everything of the hive (services, relay, secrets,
//! networks) and its own link network. Run:
//! `cargo bench -p hive --bench swarm_fleet -- 100` (`HOP_SAMPLES`,
//! default 2000, changes the hop count).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly
#![allow(clippy::disallowed_methods)] // starts the daemon and the docker CLI

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hive_agent::link::{Dialer, LinkConfig};
use hive_runtime::HiveId;
use hive_runtime::swarm::lease::SwarmLease;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};

const LINK_PORT: u16 = 17990;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request line on the host socket; the answer line.
fn host(run: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(run.join("host.sock")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .unwrap();
    stream.write_all(format!("{request}\n").as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

fn name(i: usize) -> String {
    format!("a{i:03}")
}

/// Removes the hive's services, relay, secrets and networks and the
/// bench's link network, and stops the daemon, when dropped.
struct Cleanup {
    hive: HiveId,
    network: String,
    daemon: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let filter = format!("label=hyperhive.hive={}", self.hive);
        let services: Vec<String> = docker(&["service", "ls", "-q", "--filter", &filter])
            .lines()
            .map(str::to_owned)
            .collect();
        if !services.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(services.iter().map(String::as_str));
            docker(&args);
        }
        for relay in docker(&["ps", "-aq", "--filter", &filter]).lines() {
            docker(&["rm", "-f", relay]);
        }
        for secret in docker(&["secret", "ls", "-q", "--filter", &filter]).lines() {
            docker(&["secret", "rm", secret]);
        }
        for config in docker(&["config", "ls", "-q", "--filter", &filter]).lines() {
            docker(&["config", "rm", config]);
        }
        // The agents' state and shared volumes, once their tasks are gone.
        for _ in 0..150 {
            let volumes = docker(&["volume", "ls", "-q", "--filter", &filter]);
            if volumes.trim().is_empty() {
                break;
            }
            for volume in volumes.lines() {
                docker(&["volume", "rm", volume]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for _ in 0..150 {
            let networks = docker(&["network", "ls", "-q", "--filter", &filter]);
            if networks.trim().is_empty() {
                break;
            }
            for network in networks.lines() {
                docker(&["network", "rm", network]);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        docker(&["network", "rm", &self.network]);
    }
}

/// A task container's memory charge: its cgroup's usage (v2 or v1).
fn container_memory(id: &str) -> Option<u64> {
    let candidates = [
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.current"),
        format!("/sys/fs/cgroup/docker/{id}/memory.current"),
        format!("/sys/fs/cgroup/memory/docker/{id}/memory.usage_in_bytes"),
        format!("/sys/fs/cgroup/memory/system.slice/docker-{id}.scope/memory.usage_in_bytes"),
    ];
    candidates
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
}

/// `Rss` and `Pss` of `pid`, in kB.
fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    let agents: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let samples: usize = std::env::var("HOP_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lease = match rt.block_on(SwarmLease::acquire()) {
        Ok(lease) => lease,
        Err(reason) => return println!("swarm_fleet skipped: {reason}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (state, run) = (dir.path().join("state"), dir.path().join("run"));
    let network = format!("hive-bench-fleet-{}", std::process::id());
    let mut cleanup = Cleanup {
        hive: HiveId::of(&state),
        network: network.clone(),
        daemon: None,
    };
    docker(&["network", "rm", &network]);
    let made = docker(&[
        "network",
        "create",
        "--internal",
        "--label",
        "hyperhive.test=bench",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        &network,
    ]);
    assert!(!made.trim().is_empty(), "docker network create {network}");
    let gateway = docker(&[
        "network",
        "inspect",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
        &network,
    ])
    .trim()
    .to_owned();
    let link = format!("{gateway}:{LINK_PORT}");
    let ports = format!("18701-{}", 18701 + agents + 10);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("serve")
        .arg("--state-dir")
        .arg(&state)
        .arg("--run-dir")
        .arg(&run)
        .args(["--dashboard", "127.0.0.1:0", "--runtime", "swarm"])
        .args(["--manager-port", "18700", "--agent-ports", &ports])
        .args(["--agent-transport", "tls", "--link-listen", &link])
        .args(["--link-network", &network])
        .env("HIVE_LOG", "warn")
        .env_remove("HIVE_CLAUDE_BIN")
        .env_remove("HIVE_CODEX_BIN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let daemon_pid = child.id();
    cleanup.daemon = Some(child);
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "hive serve exited");
        if line.starts_with("hive: runtime") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));

    println!("swarm_fleet: {agents} agents on a single-node swarm, link over TLS via the relay");
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= agents {
                        break;
                    }
                    let request = format!(r#"{{"cmd":"spawn","name":"{}"}}"#, name(i));
                    let answer = host(&run, &request);
                    assert!(
                        answer.contains(r#""ok":true"#),
                        "spawn {}: {answer}",
                        name(i)
                    );
                }
            });
        }
    });
    // All running, by core's own status.
    let all: Vec<String> = (0..agents).map(name).collect();
    let scope = serde_json::json!({"cmd":"agent_status","scope":{"agent_names":all}});
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let answer: serde_json::Value =
            serde_json::from_str(&host(&run, &scope.to_string())).unwrap();
        let running = answer["agent_statuses"].as_array().map_or(0, |rows| {
            rows.iter().filter(|r| r["running"] == true).count()
        });
        if running == agents {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {running} of {agents} running"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let spawn_all = start.elapsed();
    println!(
        "spawn all {agents} (4 in flight) to running: {:.1} s ({:.0} ms per agent)",
        spawn_all.as_secs_f64(),
        spawn_all.as_secs_f64() * 1e3 / agents as f64
    );
    // Let the harnesses link and settle before measuring memory.
    std::thread::sleep(Duration::from_secs(15));

    let hive = cleanup.hive.to_string();
    let task_filter = [
        format!("label=hyperhive.hive={hive}"),
        "label=com.docker.swarm.service.id".to_owned(),
    ];
    let ids = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &task_filter[0],
        "--filter",
        &task_filter[1],
    ]);
    let mut memory: Vec<u64> = ids.lines().filter_map(container_memory).collect();
    memory.sort_unstable();
    let sum: u64 = memory.iter().sum();
    println!(
        "task containers: {} (agents + manager); memory sum {:.0} MiB, mean {:.1} MiB, median {:.1} MiB, max {:.1} MiB",
        memory.len(),
        mib(sum),
        mib(sum) / memory.len().max(1) as f64,
        mib(memory.get(memory.len() / 2).copied().unwrap_or(0)),
        mib(memory.last().copied().unwrap_or(0)),
    );
    let relay = format!("h-link-relay-{hive}");
    let relay_id = docker(&["inspect", "-f", "{{.Id}}", &relay]);
    if let Some(bytes) = container_memory(relay_id.trim()) {
        println!("relay container: {:.1} MiB", mib(bytes));
    }
    let (rss, pss) = rss_pss(daemon_pid);
    println!(
        "daemon: RSS {:.1} MiB, PSS {:.1} MiB",
        rss as f64 / 1024.0,
        pss as f64 / 1024.0
    );

    // Hops over the link, through the relay's address on the link network.
    let relay_ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        &relay,
    ])
    .trim()
    .to_owned();
    let hops = rt.block_on(hops(
        &state,
        &format!("{relay_ip}:{LINK_PORT}"),
        agents,
        samples,
    ));
    println!(
        "hop a(i) → a(i+1) over the link via the relay ({} samples): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        hops.len(),
        p(&hops, 50),
        p(&hops, 99),
        p(&hops, 100)
    );
    let idle = std::fs::read_to_string(format!("/proc/{daemon_pid}/stat")).unwrap();
    let fields: Vec<&str> = idle
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    println!(
        "daemon CPU so far: utime {} + stime {} ticks",
        fields[11], fields[12]
    );
    drop(cleanup);
    drop(lease);
}

/// `samples` hops, agent `i % n` to agent `i % n + 1`, each end one
/// persistent link connection per agent with a copy of its credential.
async fn hops(state: &Path, addr: &str, n: usize, samples: usize) -> Vec<Duration> {
    let keep = tempfile::tempdir().unwrap();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let copy: PathBuf = keep.path().join(name(i));
        std::fs::create_dir_all(&copy).unwrap();
        let source = state
            .join("agents")
            .join(name(i))
            .join("control/credential");
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::copy(source.join(file), copy.join(file)).unwrap();
        }
        let dialer = Dialer::load(&LinkConfig {
            addr: addr.to_owned(),
            credentials: copy,
        })
        .unwrap();
        let stream = dialer.dial(hive_proto::link::ALPN_AGENT).await.unwrap();
        conns.push(AsyncBufReader::new(stream));
    }
    let mut line = String::new();
    // Drain what core sent at spawn ("you were just spawned").
    for conn in &mut conns {
        for request in [
            "{\"cmd\":\"recv\",\"wait_seconds\":0,\"max\":100}\n",
            "{\"cmd\":\"ack_turn\"}\n",
        ] {
            conn.get_mut().write_all(request.as_bytes()).await.unwrap();
            line.clear();
            conn.read_line(&mut line).await.unwrap();
        }
    }
    let mut out = Vec::with_capacity(samples);
    let warmup = samples / 10;
    for k in 0..samples + warmup {
        let (from, to) = (k % n, (k + 1) % n);
        conns[to]
            .get_mut()
            .write_all(b"{\"cmd\":\"recv\",\"wait_seconds\":10,\"max\":1}\n")
            .await
            .unwrap();
        // Let the recv park before the send.
        tokio::time::sleep(Duration::from_micros(500)).await;
        let start = Instant::now();
        let send = format!(
            "{{\"cmd\":\"send\",\"to\":\"{}\",\"body\":\"hop {k}\"}}\n",
            name(to)
        );
        conns[from]
            .get_mut()
            .write_all(send.as_bytes())
            .await
            .unwrap();
        line.clear();
        conns[to].read_line(&mut line).await.unwrap();
        let hop = start.elapsed();
        assert!(
            line.contains("\"messages\"") && line.contains(&format!("hop {k}\"")),
            "unexpected recv answer: {line}"
        );
        line.clear();
        conns[from].read_line(&mut line).await.unwrap();
        if k >= warmup {
            out.push(hop);
        }
        conns[to]
            .get_mut()
            .write_all(b"{\"cmd\":\"ack_turn\"}\n")
            .await
            .unwrap();
        line.clear();
        conns[to].read_line(&mut line).await.unwrap();
    }
    out
}

fn p(v: &[Duration], pct: usize) -> f64 {
    let mut v: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    v.sort_by(f64::total_cmp);
    v[(v.len() * pct / 100).min(v.len() - 1)]
}
