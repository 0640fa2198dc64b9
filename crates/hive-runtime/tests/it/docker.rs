//! The `docker` backend against the real local engine: isolation, state, events, logs, image.
//!
//! Each test skips (printing why) when no engine answers. Agent names carry
//! the test process id, so parallel tests and other runs never share a
//! container; a guard removes the test's containers even when it fails.

use std::path::Path;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder};
use hive_proto::AgentName;
use hive_runtime::docker::{self, BASE_LABEL, DockerRuntime};
use hive_runtime::{Error, Runtime};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Layout, eventually, next_change};

/// A runtime on the local engine, or `None` (printed) if there is none.
async fn runtime(image: Option<String>) -> Option<DockerRuntime> {
    if let Err(reason) = docker::probe().await {
        println!("skipping: docker engine not available: {reason}");
        return None;
    }
    Some(DockerRuntime::connect(image).await.unwrap())
}

/// A test-unique agent name: `<prefix>-<pid>`.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

async fn engine() -> Docker {
    Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// Force-removes the named agents' containers when dropped, pass or fail.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // Drop runs inside the test's runtime: clean up on a thread of our own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let docker = engine().await;
                for name in names {
                    let options = RemoveContainerOptionsBuilder::default().force(true).build();
                    let _ = docker
                        .remove_container(&format!("h-{name}"), Some(options))
                        .await;
                }
            });
        })
        .join();
    }
}

fn mnt_ns() -> String {
    std::fs::read_link("/proc/self/ns/mnt")
        .unwrap()
        .display()
        .to_string()
}

/// Reads `key=value` lines of a report file.
fn report(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Writes what the container sees into /state/report (atomically), prints
/// two log lines, then sleeps as PID 1 (which ignores SIGTERM).
const PROBE: &str = r#"
r=/state/report
{
  echo "mnt=$(readlink /proc/self/ns/mnt)"
  touch /usr/.hive-probe 2>/dev/null && echo usr=writable || echo usr=readonly
  touch /etc/.hive-probe 2>/dev/null && echo etc=writable || echo etc=readonly
  touch /.hive-probe 2>/dev/null && echo root=writable || echo root=readonly
  touch /tmp/probe && echo tmp=writable || echo tmp=readonly
  echo "run=$(ls /run | tr '\n' ' ')"
  echo "runhive=$(ls /run/hive | tr '\n' ' ')"
  test -e /run/hive/mcp.sock && echo socket=present || echo socket=absent
  test -x /run/hive/bin/hive && echo hive=executable || echo hive=missing
  test -e "$OTHER_STATE" && echo other_state=visible || echo other_state=hidden
  test -e "$OTHER_SOCKET" && echo other_socket=visible || echo other_socket=hidden
  test -e /var/run/docker.sock && echo docker_sock=visible || echo docker_sock=hidden
  echo "env=$HIVE_AGENT $HIVE_SOCKET $HIVE_STATE_DIR $HIVE_SHARED_DIR $HIVE_WEB_PORT $HIVE_RUNTIME $HOME $EXTRA"
  echo "pwd=$(pwd)"
  echo "shared=$(cat /shared/hello)"
  if [ -f /state/mark ]; then echo "kept=$(cat /state/mark)"; else echo first > /state/mark; echo kept=none; fi
} > $r.tmp
mv $r.tmp $r
echo "out $HIVE_AGENT"
echo "err $HIVE_AGENT" >&2
exec sleep 300
"#;

#[tokio::test]
async fn isolation_state_events_and_logs() {
    let Some(rt) = runtime(None).await else {
        return;
    };
    let layout = Layout::new();
    let (me, other) = (unique("dk-a"), unique("dk-b"));
    let _cleanup = Cleanup(vec![me.clone(), other.clone()]);
    let other_spec = layout.spec(&other, "/bin/sh", &[]);
    let mut spec = layout.spec(&me, "/bin/sh", &["-c", PROBE]);
    spec.env.extend([
        (
            "OTHER_STATE".into(),
            other_spec.state_dir.display().to_string(),
        ),
        (
            "OTHER_SOCKET".into(),
            other_spec.socket.display().to_string(),
        ),
    ]);
    std::fs::write(spec.shared_dir.join("hello"), "shared hi").unwrap();
    let name = spec.name.clone();
    let report_path = spec.state_dir.join("report");
    let mut changes = rt.subscribe();

    let t0 = Instant::now();
    rt.create(&spec).await.unwrap();
    let created = t0.elapsed();
    let ours = |list: Vec<hive_runtime::ContainerStatus>| {
        list.into_iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    };
    let status = ours(rt.list().await.unwrap());
    assert_eq!(status.len(), 1);
    assert!(!status[0].running && !status[0].failed);

    let t1 = Instant::now();
    rt.start(&name).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    println!(
        "docker: create {created:?}, start until the start event {:?}",
        t1.elapsed()
    );
    assert!(change.running && change.expected);
    eventually("the report", || report_path.exists()).await;

    let seen = report(&report_path);
    let get = |k: &str| seen.get(k).map(String::as_str).unwrap_or("<missing>");
    assert_ne!(get("mnt"), mnt_ns(), "same mount namespace as the host");
    assert_eq!(get("usr"), "readonly");
    assert_eq!(get("etc"), "readonly");
    assert_eq!(get("root"), "readonly");
    assert_eq!(get("tmp"), "writable");
    assert_eq!(get("run"), "hive");
    assert_eq!(get("runhive"), "bin mcp.sock");
    assert_eq!(get("socket"), "present");
    assert_eq!(get("hive"), "executable");
    assert_eq!(get("other_state"), "hidden");
    assert_eq!(get("other_socket"), "hidden");
    assert_eq!(get("docker_sock"), "hidden");
    assert_eq!(
        get("env"),
        format!("{me} /run/hive/mcp.sock /state /shared 8100 docker /state 1")
    );
    assert_eq!(get("pwd"), "/state");
    assert_eq!(get("shared"), "shared hi");
    assert_eq!(get("kept"), "none");
    // /state is the host dir: the container's writes are there.
    assert_eq!(
        std::fs::read_to_string(spec.state_dir.join("mark")).unwrap(),
        "first\n"
    );

    // Logs: stdout and stderr, the last lines.
    let expected = [format!("out {me}"), format!("err {me}")];
    let mut logs = Vec::new();
    for _ in 0..100 {
        logs = rt.logs(&name, 10).await.unwrap();
        if logs.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    logs.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(logs, want);
    assert_eq!(rt.logs(&name, 1).await.unwrap().len(), 1);

    // Killed from outside, by its host pid: reported by the event stream,
    // as a failure.
    let status = ours(rt.list().await.unwrap());
    assert!(status[0].running && !status[0].failed);
    let pid = status[0].pid.expect("a running container's host pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && !change.expected);
    assert_eq!(change.detail.as_deref(), Some("killed by SIGKILL"));
    let status = ours(rt.list().await.unwrap());
    assert!(!status[0].running && status[0].failed);

    // Restarted, then stopped on purpose (PID 1 ignores SIGTERM, so the
    // engine escalates after the grace): not a failure.
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    rt.stop(&name, Duration::from_secs(1)).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    let status = ours(rt.list().await.unwrap());
    assert!(!status[0].running && !status[0].failed, "{status:?}");
    rt.stop(&name, Duration::from_secs(1)).await.unwrap(); // stopped: a no-op

    // Destroy removes it; /state survives into a new container.
    rt.destroy(&name).await.unwrap();
    assert!(ours(rt.list().await.unwrap()).is_empty());
    assert!(matches!(
        rt.start(&name).await,
        Err(Error::NoSuchContainer(_))
    ));
    rt.destroy(&name).await.unwrap(); // gone: a no-op
    std::fs::remove_file(&report_path).unwrap();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    eventually("the second report", || report_path.exists()).await;
    assert_eq!(report(&report_path)["kept"], "first");
    // Re-creating over a running container replaces it.
    rt.create(&spec).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert!(!ours(rt.list().await.unwrap())[0].running);
    rt.destroy(&name).await.unwrap();
}

#[tokio::test]
async fn base_image_is_built_when_absent() {
    // A tag of our own repository for this test alone, so removing it
    // cannot disturb containers of other tests.
    let image = format!("hyperhive/base:test-{}", std::process::id());
    let Some(rt) = runtime(Some(image.clone())).await else {
        return;
    };
    let docker = engine().await;
    let remove = || RemoveImageOptionsBuilder::default().force(true).build();
    let _ = docker.remove_image(&image, Some(remove()), None).await;
    assert!(docker.inspect_image(&image).await.is_err());

    let t0 = Instant::now();
    rt.ensure_image().await.unwrap();
    println!("docker: built {image} in {:?}", t0.elapsed());
    let built = docker.inspect_image(&image).await.unwrap();
    let labels = built.config.unwrap().labels.unwrap();
    assert!(labels.contains_key(BASE_LABEL), "{labels:?}");
    rt.ensure_image().await.unwrap(); // present: nothing to do

    // A container of it runs; a failing exit is reported as such.
    let layout = Layout::new();
    let me = unique("dk-img");
    let _cleanup = Cleanup(vec![me.clone()]);
    let spec = layout.spec(&me, "/bin/sh", &["-c", "echo ok > /state/ok; exit 3"]);
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && !change.expected);
    assert_eq!(change.detail.as_deref(), Some("exit code 3"));
    assert_eq!(
        std::fs::read_to_string(spec.state_dir.join("ok")).unwrap(),
        "ok\n"
    );
    let status: Vec<_> = rt
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.name == spec.name)
        .collect();
    assert!(!status[0].running && status[0].failed);
    rt.destroy(&spec.name).await.unwrap();
    let _ = docker.remove_image(&image, Some(remove()), None).await;

    // An image that is not ours and not on the engine is never pulled.
    let mut foreign = spec.clone();
    foreign.image = Some("hyperhive-test/absent:never".into());
    let err = rt.create(&foreign).await.unwrap_err().to_string();
    assert!(err.contains("does not pull"), "{err}");
}

#[tokio::test]
async fn unknown_containers() {
    let Some(rt) = runtime(None).await else {
        return;
    };
    let name = AgentName::parse(&unique("dk-none")).unwrap();
    assert!(matches!(
        rt.start(&name).await,
        Err(Error::NoSuchContainer(_))
    ));
    assert!(matches!(
        rt.stop(&name, Duration::from_secs(1)).await,
        Err(Error::NoSuchContainer(_))
    ));
    assert!(matches!(
        rt.logs(&name, 5).await,
        Err(Error::NoSuchContainer(_))
    ));
    rt.destroy(&name).await.unwrap();
    assert!(rt.reports_exits());
    assert_eq!(rt.name(), "docker");
}
