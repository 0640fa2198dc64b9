//! `hive agent bench` (hidden): the harness's own cost, measured on the
//! real daemon (`hive serve --runtime none` in a temp dir) and the real
//! `hive agent serve`, with a trivial fake engine (a shell script that
//! prints one `result` line) so the engine's time is near zero.
//!
//! Prints, per turn: `recv` answered → engine spawned, engine exited →
//! `ack_turn` answered (both from the turn-stats rows the harness writes),
//! message sent → turn acked as the operator sees it; and the idle RSS of
//! `hive agent serve`.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::files;
use crate::process::{CommandSpec, Io, spawn};
use crate::stats::StatsStore;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Turns to measure.
    #[arg(long, default_value_t = 30)]
    pub turns: usize,
    /// Keep the temp dir (printed) for inspection.
    #[arg(long)]
    pub keep: bool,
}

const FAKE_ENGINE: &str = r#"#!/bin/sh
cat >/dev/null
echo '{"type":"system","subtype":"init","session_id":"bench","model":"fake","tools":[],"mcp_servers":[]}'
echo '{"type":"assistant","message":{"id":"m","model":"fake","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":1,"output_tokens":1}}}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","usage":{"input_tokens":1,"output_tokens":1},"total_cost_usd":0}'
"#;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("hive-agent-bench-{}", std::process::id()));
    let result = bench(&exe, &dir, &args).await;
    if args.keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn bench(exe: &Path, dir: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let state = dir.join("state");
    let run = dir.join("run");
    let agent_state = state.join("agents/bench/state");
    std::fs::create_dir_all(&agent_state)?;
    let engine = dir.join("fake-claude");
    std::fs::write(&engine, FAKE_ENGINE)?;
    set_executable(&engine)?;

    // The daemon.
    let mut daemon_spec = CommandSpec::new(exe).args([
        "serve",
        "--state-dir",
        &state.display().to_string(),
        "--run-dir",
        &run.display().to_string(),
        "--dashboard",
        "off",
        "--runtime",
        "none",
    ]);
    daemon_spec.stdout = Io::Piped;
    daemon_spec.stderr = Io::Inherit;
    daemon_spec = daemon_spec.env("HIVE_LOG", "warn");
    let mut daemon = spawn(&daemon_spec).context("starting hive serve")?;
    let stdout = daemon.child.stdout.take().context("daemon stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next_line().await? {
            Some(line) if line.starts_with("hive: runtime") => break,
            Some(_) => {}
            None => bail!("hive serve exited before it was ready"),
        }
    }
    let host = run.join("host.sock");
    let socket = run.join("agents/bench/mcp.sock");

    // The harness, with the fake engine.
    let mut harness_spec = CommandSpec::new(exe).args([
        "agent",
        "serve",
        "--role",
        "agent",
        "--state-dir",
        &agent_state.display().to_string(),
        "--claude-bin",
        &engine.display().to_string(),
        "--poll-ms",
        "50",
        "--context-watermark",
        "0",
    ]);
    harness_spec = harness_spec
        .env("HIVE_SOCKET", socket.display().to_string())
        .env("HIVE_AGENT", "bench")
        .env("ANTHROPIC_API_KEY", "bench")
        .env("HIVE_LOG", "warn");
    harness_spec.env_remove = vec!["HIVE_PAGE_SOCKET".into()];
    harness_spec.stdout = Io::Null;
    harness_spec.stderr = Io::Inherit;
    let harness = spawn(&harness_spec).context("starting hive agent serve")?;
    let pid = harness.pid().context("harness pid")?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_kib(pid)?;

    let stats_path = agent_state.join(files::TURN_STATS_DB);
    let mut round_trips = Vec::new();
    for i in 0..args.turns {
        let sent = Instant::now();
        let answer = host_request(
            &host,
            &format!(r#"{{"cmd":"send","to":"bench","body":"ping {i}"}}"#),
        )
        .await?;
        if !answer.contains(r#""ok":true"#) {
            bail!("send refused: {answer}");
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(stats) = StatsStore::open(&stats_path)
                && let Ok(rows) = stats.recent(1)
                && rows.len() == 1
                && rows[0].id == Some(i64::try_from(i + 1)?)
                && rows[0].post_engine_us.is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("turn {i} did not finish within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        round_trips.push(sent.elapsed());
    }
    let busy_rss = rss_kib(pid)?;
    let rows = StatsStore::open(&stats_path)?.recent(args.turns)?;
    let pre: Vec<u64> = rows.iter().filter_map(|r| r.pre_engine_us).collect();
    let post: Vec<u64> = rows.iter().filter_map(|r| r.post_engine_us).collect();
    let total: Vec<u64> = rows.iter().map(|r| r.duration_ms * 1000).collect();
    let trips: Vec<u64> = round_trips
        .iter()
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .collect();

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "hive agent bench: {} turns, fake engine (sh script), real daemon",
        rows.len()
    )?;
    writeln!(out, "{:<34} {:>9} {:>9} {:>9}", "", "p50", "p90", "max")?;
    for (label, values) in [
        ("recv answered -> engine spawned", &pre),
        ("engine exited -> ack_turn done", &post),
        ("turn_start -> turn_end", &total),
        ("operator send -> turn acked", &trips),
    ] {
        writeln!(
            out,
            "{label:<34} {:>9} {:>9} {:>9}",
            fmt_us(percentile(values, 50)),
            fmt_us(percentile(values, 90)),
            fmt_us(values.iter().copied().max().unwrap_or(0)),
        )?;
    }
    writeln!(out, "idle RSS of hive agent serve: {idle_rss} KiB")?;
    writeln!(out, "RSS after {} turns: {busy_rss} KiB", rows.len())?;
    drop(harness);
    drop(daemon);
    Ok(())
}

async fn host_request(socket: &Path, line: &str) -> anyhow::Result<String> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    Ok(answer)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

fn set_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

fn percentile(values: &[u64], p: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[((sorted.len() - 1) * p / 100).min(sorted.len() - 1)]
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}
