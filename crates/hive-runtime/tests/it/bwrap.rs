//! The `bwrap` backend for real: isolation, persistence, crash reports, stops.

use std::ffi::OsString;
use std::time::Duration;

use hive_runtime::Runtime;
use hive_runtime::bwrap::BwrapLauncher;
use hive_runtime::child::{ChildRuntime, Launcher};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::support::{
    Layout, all_gone, assert_breaches_failed, assert_isolated, breach, eventually, next_change,
    one, read_report, sandbox_specs, sleep_pid,
};

/// Whether bwrap runs here; if not, says why the test is skipped (and
/// fails under CI, which must have it).
fn available() -> bool {
    match BwrapLauncher.probe() {
        Ok(()) => true,
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have bwrap: {reason}"
            );
            eprintln!("skipping: {reason}");
            false
        }
    }
}

/// Whether `args` holds `window` as consecutive arguments.
fn has(args: &[OsString], window: &[&str]) -> bool {
    args.windows(window.len())
        .any(|w| w.iter().zip(window).all(|(a, b)| a == b))
}

#[test]
fn command_line() {
    let layout = Layout::new();
    let (spec, _) = sandbox_specs(&layout, "bw-cmd", "bw-cmd-other");
    let line = match BwrapLauncher.command(&spec) {
        Ok(line) => line,
        Err(e) => return eprintln!("skipping: {e}"),
    };
    eprintln!("{} {:?}", line.program.display(), line.args);
    let args = &line.args;
    let path = |p: &std::path::Path| p.display().to_string();
    for window in [
        &[
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-net",
        ][..],
        &["--cap-drop", "ALL"],
        &["--die-with-parent", "--new-session"],
        &["--hostname", "h-bw-cmd"],
        &["--ro-bind", "/usr", "/usr"],
        &["--ro-bind", &path(&spec.etc_dir), "/etc"],
        &[
            "--bind",
            &path(&spec.egress_socket),
            "/run/hive/egress.sock",
        ],
        &["--bind", &path(&spec.page_dir), "/run/hive/page"],
        &["--ro-bind", &path(&spec.control_dir), "/run/hive/control"],
        &["--ro-bind", "/proc/sys", "/proc/sys"],
        &["--tmpfs", "/run"],
        &["--ro-bind", "/bin/sh", "/run/hive/bin/hive"],
        &["--bind", &path(&spec.state_dir), "/state"],
        &["--bind", &path(&spec.shared_dir), "/shared"],
        &["--bind", &path(&spec.socket), "/run/hive/mcp.sock"],
        &[
            "--ro-bind",
            &path(&spec.binds[0].host),
            "/agents/bw-cmd/config",
        ],
        &["--bind", &path(&spec.binds[1].host), "/scratch"],
        &["--chdir", "/state", "--", "/run/hive/bin/hive", "-c"],
    ] {
        assert!(has(args, window), "{window:?} in {args:?}");
    }
    assert_eq!(
        args.last().map(|a| a.to_str()),
        Some(Some(spec.args[1].as_str()))
    );
    assert!(
        !has(args, &["--ro-bind", "/etc", "/etc"]),
        "the host's /etc is not bound"
    );
    assert!(
        line.env
            .contains(&("HIVE_STATE_DIR".into(), "/state".into()))
    );
    // The seccomp filter: the descriptor bwrap is told of is the one the
    // child inherits, and holds the compiled program.
    use std::os::fd::AsRawFd as _;
    let [filter] = &line.inherit[..] else {
        panic!("one inherited descriptor: {:?}", line.inherit)
    };
    let fd = filter.as_raw_fd().to_string();
    assert!(has(args, &["--seccomp", &fd]), "{args:?}");
    let program = std::fs::read(format!("/proc/self/fd/{fd}")).unwrap();
    assert_eq!(program, hive_runtime::seccomp::bytes().unwrap());
    if has(args, &["--disable-userns"]) {
        assert!(has(args, &["--unshare-user", "--disable-userns"]));
    }
}

#[tokio::test]
async fn isolates_persists_reports_crashes_and_stops() {
    if !available() {
        return;
    }
    let layout = Layout::new();
    let (spec, _other) = sandbox_specs(&layout, "bw-alice", "bw-bob");
    let name = spec.name.clone();
    let rt = ChildRuntime::new(BwrapLauncher);
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, "bw-alice").await.running);

    let report = read_report(&spec).await;
    assert_isolated(&report, &spec, "bwrap");
    assert!(one(&report, "init").contains("bwrap --"), "{report:?}");
    let logs = rt.logs(&name, 10).await.unwrap();
    assert!(logs.contains(&"hello from bw-alice".to_owned()), "{logs:?}");

    // Killed from outside: reported at once, and nothing of it survives.
    let sleep = sleep_pid(&report);
    let pid = rt.list().await.unwrap()[0].pid.unwrap();
    killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let change = next_change(&mut changes, "bw-alice").await;
    assert!(!change.running && !change.expected, "{change:?}");
    all_gone(&report, sleep).await;

    // Destroyed and created again: /state survives.
    rt.destroy(&name).await.unwrap();
    std::fs::remove_file(spec.state_dir.join("report")).unwrap();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, "bw-alice").await.running);
    let report = read_report(&spec).await;
    let boots = std::fs::read_to_string(spec.state_dir.join("boots")).unwrap();
    assert_eq!(boots, "boot\nboot\n");

    // Stopped: the program gets SIGTERM (delivered to the sandbox's own
    // processes, since bwrap does not forward it), then the tree dies.
    let sleep = sleep_pid(&report);
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    let change = next_change(&mut changes, "bw-alice").await;
    assert!(!change.running && change.expected, "{change:?}");
    all_gone(&report, sleep).await;
    assert!(
        spec.state_dir.join("term").exists(),
        "the program saw SIGTERM"
    );
    let status = &rt.list().await.unwrap()[0];
    assert!(!status.running && !status.failed);
    rt.destroy(&name).await.unwrap();
}

#[tokio::test]
async fn a_missing_bind_fails_at_start() {
    if !available() {
        return;
    }
    let layout = Layout::new();
    let (mut spec, _) = sandbox_specs(&layout, "bw-broken", "bw-broken-other");
    spec.binds[0].host = layout.root().join("no-such-dir");
    let rt = ChildRuntime::new(BwrapLauncher);
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    assert!(next_change(&mut changes, "bw-broken").await.running);
    let change = next_change(&mut changes, "bw-broken").await;
    assert!(!change.running && !change.expected, "{change:?}");
    let log_path = spec.log_path.clone();
    eventually("bwrap's complaint in the log", || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("no-such-dir"))
    })
    .await;
}

#[tokio::test]
async fn a_hostile_agent_gets_nowhere() {
    if !available() {
        return;
    }
    let layout = Layout::new();
    let b = breach(&layout, "bw-hostile", 108_201);
    let rt = ChildRuntime::new(BwrapLauncher);
    let mut changes = rt.subscribe();
    rt.create(&b.spec).await.unwrap();
    rt.start(&b.spec.name).await.unwrap();
    assert!(next_change(&mut changes, "bw-hostile").await.running);
    let report = read_report(&b.spec).await;
    assert_breaches_failed(&b, &report, &[]);
    // `clone3` says ENOSYS, so libc falls back to `clone`, whose namespace
    // flags the filter sees.
    assert_eq!(one(&report, "syscall_clone3"), "ENOSYS");
    // x32 numbers (same audit arch) are refused whole: not a way around
    // the deny-list (a kernel without x32 would say ENOSYS).
    if cfg!(target_arch = "x86_64") {
        assert_eq!(one(&report, "syscall_x32_getpid"), "EPERM");
    }
    // bwrap itself runs as the agent's uid, not only the program.
    let pid = rt.list().await.unwrap()[0].pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Uid:\t108201\t"), "{status}");
    let group = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(hive_runtime::cgroup::relative_path(&b.spec));
    assert!(group.is_dir(), "{}", group.display());
    rt.stop(&b.spec.name, Duration::from_secs(10))
        .await
        .unwrap();
    eventually("the container's cgroup to go", || !group.exists()).await;
    rt.destroy(&b.spec.name).await.unwrap();
}
