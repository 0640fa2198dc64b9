//! The `process` backend: supervision, logs, exit reporting.

use std::time::Duration;

use hive_runtime::Runtime;
use hive_runtime::child::ChildRuntime;
use hive_runtime::process::ProcessLauncher;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::support::{Layout, eventually, next_change};

#[tokio::test]
async fn lifecycle_logs_and_crash_reports() {
    let layout = Layout::new();
    let rt = ChildRuntime::new(ProcessLauncher);
    let spec = layout.spec(
        "alice",
        "/bin/sh",
        &[
            "-c",
            "echo agent=$HIVE_AGENT state=$HIVE_STATE_DIR extra=$EXTRA; pwd; exec sleep 300",
        ],
    );
    let name = spec.name.clone();
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    assert!(!rt.list().await.unwrap()[0].running);

    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, "alice").await.running);
    let expected = format!("agent=alice state={} extra=1", spec.state_dir.display());
    let log_path = spec.log_path.clone();
    eventually("the log line", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains(&expected))
    })
    .await;
    let logs = rt.logs(&name, 10).await.unwrap();
    assert_eq!(logs, [expected, spec.state_dir.display().to_string()]);

    // Killed from outside: reported at once, as a failure.
    let pid = rt.list().await.unwrap()[0].pid.unwrap();
    killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let change = next_change(&mut changes, "alice").await;
    assert!(!change.running && !change.expected);
    assert_eq!(change.detail.as_deref(), Some("killed by SIGKILL"));
    let status = &rt.list().await.unwrap()[0];
    assert!(!status.running && status.failed);

    // Restarted, then stopped on purpose: not a failure.
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, "alice").await.running);
    rt.stop(&name, Duration::from_secs(5)).await.unwrap();
    let change = next_change(&mut changes, "alice").await;
    assert!(!change.running && change.expected);
    assert_eq!(change.detail.as_deref(), Some("killed by SIGTERM"));
    let status = &rt.list().await.unwrap()[0];
    assert!(!status.running && !status.failed);

    rt.destroy(&name).await.unwrap();
    assert!(rt.list().await.unwrap().is_empty());
    assert!(rt.start(&name).await.is_err());
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let layout = Layout::new();
    let rt = ChildRuntime::new(ProcessLauncher);
    let spec = layout.spec(
        "stubborn",
        "/bin/sh",
        &["-c", "trap '' TERM; while :; do sleep 1; done"],
    );
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    // Let the shell install its trap.
    tokio::time::sleep(Duration::from_millis(200)).await;
    rt.stop(&spec.name, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(!rt.list().await.unwrap()[0].running);
}
