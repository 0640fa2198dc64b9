//! Reminder firing benchmark: the real daemon (`serve::run`, runtime
//! `none`) in this process, one agent that sets 50 reminders over its own
//! socket (`in_seconds` 1–3, set at scattered milliseconds), then waits
//! until every one was delivered. The firing error of each is its stored
//! `delivered_ms - due_ms`, read back through the store; prints how many
//! fired early (must be none), p50, p99 and max late.
//!
//! Asserts nothing about time. `REMINDERS` (default 50) sets the count.

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use hive_core::{Paths, ServeConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

type BoxError = Box<dyn Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let count: i64 = std::env::var("REMINDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("state/agents/alice/state"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(dir.path(), count))
}

async fn run(dir: &Path, count: i64) -> Result<(), BoxError> {
    let config = ServeConfig {
        paths: Paths::new(dir.join("state"), dir.join("run")),
        dashboard: None,
        runtime: "none".into(),
        agent_env: Vec::new(),
        ports: Default::default(),
        mirror: None,
        operator_token: None,
        foreground: false,
        link: None,
        claude_bin: None,
        codex_bin: None,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let started = |_: &hive_core::serve::Started| {
            let _ = ready_tx.send(());
        };
        if let Err(e) = hive_core::serve::run(config, started).await {
            eprintln!("daemon: {e:#}");
        }
    });
    ready_rx.await?;
    let socket = dir.join("run/agents/alice/mcp.sock");
    for i in 0..count {
        let line = format!(
            r#"{{"cmd":"remind","message":"r{i}","in_seconds":{}}}"#,
            1 + i % 3
        );
        let answer = request(&socket, &line).await?;
        if !answer.contains("reminder_queued") {
            return Err(format!("remind answered {answer}").into());
        }
        // Scatter the set times over the millisecond clock.
        tokio::time::sleep(Duration::from_micros(
            u64::try_from(i * 7919 % 13_000).unwrap_or(0),
        ))
        .await;
    }
    let store = hive_store::Store::open(&dir.join("state/hive.sqlite"))?;
    let mut errors = Vec::new();
    for id in 1..=count {
        let reminder = loop {
            let r = store.reminder(id)?;
            if r.delivered_ms.is_some() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        errors.push(reminder.delivered_ms.unwrap_or(0) - reminder.due_ms);
    }
    errors.sort_unstable();
    let early = errors.iter().filter(|e| **e < 0).count();
    let pick = |q: f64| {
        let i = ((errors.len() as f64 - 1.0) * q).round() as usize;
        errors[i.min(errors.len() - 1)]
    };
    println!(
        "reminders: {} fired; early: {early}; late p50 {} ms, p99 {} ms, max {} ms",
        errors.len(),
        pick(0.5),
        pick(0.99),
        errors.last().copied().unwrap_or(0)
    );
    Ok(())
}

async fn request(socket: &Path, line: &str) -> Result<String, BoxError> {
    let mut stream = UnixStream::connect(socket).await?;
    stream.write_all(format!("{line}\n").as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).await?;
    Ok(answer)
}
