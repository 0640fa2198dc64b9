//! The `nspawn` backend for real: isolation, persistence, crash reports, stops.

use std::ffi::OsString;
use std::time::Duration;

use hive_runtime::Runtime;
use hive_runtime::child::{ChildRuntime, Launcher};
use hive_runtime::nspawn::NspawnLauncher;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::support::{
    Layout, all_gone, assert_breaches_failed, assert_isolated, breach, eventually, next_change,
    one, read_report, sandbox_specs, sleep_pid,
};

/// Whether nspawn runs here; if not, says why the test is skipped (and
/// fails under CI, which must have it).
fn available() -> bool {
    match NspawnLauncher.probe() {
        Ok(()) => true,
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have nspawn: {reason}"
            );
            eprintln!("skipping: {reason}");
            false
        }
    }
}

#[test]
fn command_line() {
    let layout = Layout::new();
    let (mut spec, _) = sandbox_specs(&layout, "ns-cmd", "ns-cmd-other");
    spec.binds[1].host = layout.root().join("a:b\\c");
    let line = match NspawnLauncher.command(&spec) {
        Ok(line) => line,
        Err(e) => return eprintln!("skipping: {e}"),
    };
    eprintln!("{} {:?}", line.program.display(), line.args);
    let args: Vec<String> = line
        .args
        .iter()
        .map(|a: &OsString| a.to_str().unwrap().to_owned())
        .collect();
    let path = |p: &std::path::Path| p.display().to_string();
    assert!(
        line.program.ends_with("unshare"),
        "{}",
        line.program.display()
    );
    assert_eq!(args[..4], ["--pid", "--fork", "--kill-child=SIGKILL", "--"]);
    assert!(args[4].ends_with("/systemd-nspawn"), "{}", args[4]);
    for arg in [
        "--register=no".to_owned(),
        "--keep-unit".into(),
        "--directory=/".into(),
        "--volatile=yes".into(),
        "--as-pid2".into(),
        "--hostname=h-ns-cmd".into(),
        "--kill-signal=SIGRTMIN+3".into(),
        "--drop-capability=all".into(),
        "--no-new-privileges=yes".into(),
        "--private-network".into(),
        format!("--bind-ro={}:/etc", path(&spec.etc_dir)),
        format!("--bind={}:/run/hive/egress.sock", path(&spec.egress_socket)),
        format!("--bind={}:/run/hive/page", path(&spec.page_dir)),
        format!("--bind-ro={}:/run/hive/control", path(&spec.control_dir)),
        "--bind-ro=/bin/sh:/run/hive/bin/hive".into(),
        format!("--bind={}:/state", path(&spec.state_dir)),
        format!("--bind={}:/shared", path(&spec.shared_dir)),
        format!("--bind={}:/run/hive/mcp.sock", path(&spec.socket)),
        format!(
            "--bind-ro={}:/agents/ns-cmd/config",
            path(&spec.binds[0].host)
        ),
        format!("--bind={}/a\\:b\\\\c:/scratch", path(layout.root())),
        "--chdir=/state".into(),
        "--setenv=HIVE_AGENT".into(),
        "--setenv=EXTRA".into(),
    ] {
        assert!(args.contains(&arg), "{arg} in {args:?}");
    }
    // The machine name carries the hive (its agents dir): another hive's
    // agent of the same name gets another one.
    let machine = |args: &[String]| {
        args.iter()
            .find(|a| a.starts_with("--machine="))
            .cloned()
            .unwrap()
    };
    let ours = machine(&args);
    assert!(ours.starts_with("--machine=h-ns-cmd-"), "{ours}");
    let other = Layout::new();
    let theirs = NspawnLauncher
        .command(&other.spec("ns-cmd", "/bin/sh", &["-c", "true"]))
        .unwrap();
    let theirs: Vec<String> = theirs
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_ne!(machine(&theirs), ours);
    let tail = &args[args.len() - 4..];
    assert_eq!(tail[..3], ["--", "/run/hive/bin/hive", "-c"]);
    assert!(
        !args.iter().any(|a| a == "--bind-ro=/etc"),
        "the host's /etc"
    );
    // Values travel in nspawn's environment, never on its command line.
    assert!(line.env.contains(&("EXTRA".into(), "1".into())));
    assert!(!args.iter().any(|a| a.starts_with("--setenv=EXTRA=")));
}

#[tokio::test]
async fn isolates_persists_reports_crashes_and_stops() {
    if !available() {
        return;
    }
    let layout = Layout::new();
    let (spec, _other) = sandbox_specs(&layout, "ns-alice", "ns-bob");
    let name = spec.name.clone();
    let rt = ChildRuntime::new(NspawnLauncher);
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, "ns-alice").await.running);

    let report = read_report(&spec).await;
    assert_isolated(&report, &spec, "nspawn");
    assert!(
        one(&report, "init").starts_with("(sd-stubinit)"),
        "{report:?}"
    );
    let logs = rt.logs(&name, 10).await.unwrap();
    assert!(logs.contains(&"hello from ns-alice".to_owned()), "{logs:?}");

    // Killed from outside: reported at once, and nothing of it survives.
    let sleep = sleep_pid(&report);
    let pid = rt.list().await.unwrap()[0].pid.unwrap();
    killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let change = next_change(&mut changes, "ns-alice").await;
    assert!(!change.running && !change.expected, "{change:?}");
    all_gone(&report, sleep).await;

    // Destroyed and created again: /state survives.
    rt.destroy(&name).await.unwrap();
    std::fs::remove_file(spec.state_dir.join("report")).unwrap();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, "ns-alice").await.running);
    let report = read_report(&spec).await;
    let boots = std::fs::read_to_string(spec.state_dir.join("boots")).unwrap();
    assert_eq!(boots, "boot\nboot\n");

    // Stopped gracefully: the program gets SIGTERM, exits, and takes the
    // whole tree with it.
    let sleep = sleep_pid(&report);
    rt.stop(&name, Duration::from_secs(30)).await.unwrap();
    let change = next_change(&mut changes, "ns-alice").await;
    assert!(!change.running && change.expected, "{change:?}");
    assert_eq!(change.detail.as_deref(), Some("exited 0"));
    assert!(spec.state_dir.join("term").exists(), "no SIGTERM seen");
    all_gone(&report, sleep).await;
    let status = &rt.list().await.unwrap()[0];
    assert!(!status.running && !status.failed);
    rt.destroy(&name).await.unwrap();
}

#[tokio::test]
async fn stop_escalates_and_takes_the_machine_down() {
    if !available() {
        return;
    }
    let layout = Layout::new();
    let (mut spec, _) = sandbox_specs(&layout, "ns-stubborn", "ns-stubborn-other");
    // Ignores the polite signals, then runs the usual script (whose own
    // traps cannot undo an ignore inherited by a non-interactive shell).
    let script = format!(
        "trap '' TERM HUP; exec /bin/sh -c '{}'",
        spec.args[1].replace('\'', r"'\''")
    );
    spec.args[1] = script;
    let rt = ChildRuntime::new(NspawnLauncher);
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    assert!(next_change(&mut changes, "ns-stubborn").await.running);
    let report = read_report(&spec).await;
    let sleep = sleep_pid(&report);
    rt.stop(&spec.name, Duration::from_millis(500))
        .await
        .unwrap();
    let change = next_change(&mut changes, "ns-stubborn").await;
    assert!(!change.running && change.expected, "{change:?}");
    assert_eq!(change.detail.as_deref(), Some("killed by SIGKILL"));
    assert!(!spec.state_dir.join("term").exists());
    all_gone(&report, sleep).await;
}

#[tokio::test]
async fn a_hostile_agent_gets_nowhere() {
    if !available() {
        return;
    }
    let layout = Layout::new();
    let b = breach(&layout, "ns-hostile", 108_202);
    let rt = ChildRuntime::new(NspawnLauncher);
    let mut changes = rt.subscribe();
    rt.create(&b.spec).await.unwrap();
    rt.start(&b.spec.name).await.unwrap();
    assert!(next_change(&mut changes, "ns-hostile").await.running);
    let report = read_report(&b.spec).await;
    assert_breaches_failed(&b, &report, &[]);
    let group = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(hive_runtime::cgroup::relative_path(&b.spec));
    assert!(group.is_dir(), "{}", group.display());
    rt.stop(&b.spec.name, Duration::from_secs(30))
        .await
        .unwrap();
    eventually("the container's cgroup to go", || !group.exists()).await;
    rt.destroy(&b.spec.name).await.unwrap();
}
