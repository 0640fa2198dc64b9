//! The `docker` backend against the real local engine: isolation, state, events, logs, image.
//!
//! Each test skips (printing why) when no engine answers. Agent names carry
//! the test process id, so parallel tests and other runs never share a
//! container; a guard removes the test's containers even when it fails.

use std::time::{Duration, Instant};

use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder};
use hive_proto::AgentName;
use hive_runtime::docker::{self, BASE_LABEL, DockerRuntime};
use hive_runtime::{ContainerStatus, Error, HiveId, Runtime};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    BREACH_MEMORY, Layout, all_gone, assert_breaches_failed, assert_isolated, assert_unprivileged,
    breach, engine, next_change, one, read_report, sandbox_specs, sleep_pid, unique,
};

/// A runtime on the local engine, or `None` (printed) if there is none.
async fn runtime(image: Option<String>) -> Option<DockerRuntime> {
    if let Err(reason) = docker::probe().await {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have a docker engine: {reason}"
        );
        println!("skipping: docker engine not available: {reason}");
        return None;
    }
    Some(DockerRuntime::connect(image, test_hive()).await.unwrap())
}

/// The hive these tests' runtimes serve.
fn test_hive() -> HiveId {
    HiveId::of(std::path::Path::new("/hyperhive-runtime-tests"))
}

/// A second hive on the same engine.
fn other_hive() -> HiveId {
    HiveId::of(std::path::Path::new("/hyperhive-runtime-tests-other"))
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
                    for hive in [test_hive(), other_hive()] {
                        let options = RemoveContainerOptionsBuilder::default().force(true).build();
                        let _ = docker
                            .remove_container(&format!("h-{name}-{hive}"), Some(options))
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

fn ours(list: Vec<ContainerStatus>, name: &AgentName) -> Vec<ContainerStatus> {
    list.into_iter().filter(|s| &s.name == name).collect()
}

#[tokio::test]
async fn sandbox_view_lifecycle_and_logs() {
    let Some(rt) = runtime(None).await else {
        return;
    };
    let layout = Layout::new();
    let (me, other) = (unique("dk-a"), unique("dk-b"));
    let _cleanup = Cleanup(vec![me.clone(), other.clone()]);
    let (spec, _other) = sandbox_specs(&layout, &me, &other);
    let name = spec.name.clone();
    let mut changes = rt.subscribe();

    let t0 = Instant::now();
    rt.create(&spec).await.unwrap();
    let created = t0.elapsed();
    let status = ours(rt.list().await.unwrap(), &name);
    assert_eq!(status.len(), 1);
    assert!(!status[0].running && !status[0].failed);
    let t1 = Instant::now();
    rt.start(&name).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    println!(
        "docker: create {created:?}, start to its start event {:?}",
        t1.elapsed()
    );
    assert!(change.running && change.expected);

    let mut report = read_report(&spec).await;
    // The engine's init (tini) is PID 1 but its child is not pid 2: runc's
    // setup used the first pids of the namespace. Not being PID 1 is what
    // the shared check stands for.
    assert_ne!(one(&report, "pid"), "1", "the program runs as PID 1");
    assert!(one(&report, "init").starts_with("/sbin/docker-init -- "));
    report.insert("pid".into(), vec!["2".into()]);
    assert_isolated(&report, &spec, "docker");
    let sleep = sleep_pid(&report);
    assert_unprivileged(sleep);
    let expected = format!("hello from {me}");
    let mut logs = Vec::new();
    for _ in 0..200 {
        logs = rt.logs(&name, 10).await.unwrap();
        if !logs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(logs, [expected.as_str()]);
    // A followed log waits on the Engine's follow stream: a quiet program
    // wakes nobody (the fallback tick would, every 500 ms).
    let mut watch = rt.watch_output(&name).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), watch.changed())
            .await
            .is_err(),
        "a followed log woke with nothing printed"
    );

    // Killed from outside, by its host pid (the init's): reported through
    // the event stream, as a failure; nothing of it is left.
    let status = ours(rt.list().await.unwrap(), &name);
    assert!(status[0].running && !status[0].failed);
    let pid = status[0].pid.expect("a running container's host pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && !change.expected, "{change:?}");
    assert_eq!(change.detail.as_deref(), Some("killed by SIGKILL"));
    let status = ours(rt.list().await.unwrap(), &name);
    assert!(!status[0].running && status[0].failed && status[0].pid.is_none());
    all_gone(&report, sleep).await;

    // Restarted, then stopped on purpose: the program gets a polite
    // SIGTERM (forwarded by the init) and exits 0; not a failure.
    std::fs::remove_file(spec.state_dir.join("report")).unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&spec).await;
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert_eq!(change.detail.as_deref(), Some("exited 0"));
    assert!(spec.state_dir.join("term").exists(), "no polite SIGTERM");
    let status = ours(rt.list().await.unwrap(), &name);
    assert!(!status[0].running && !status[0].failed, "{status:?}");
    rt.stop(&name, Duration::from_secs(1)).await.unwrap(); // stopped: a no-op
    assert_eq!(
        rt.logs(&name, 10).await.unwrap(),
        [expected.as_str(), expected.as_str()]
    );
    assert_eq!(rt.logs(&name, 1).await.unwrap(), [expected.as_str()]);

    // Destroy removes it; /state survives into the next container.
    rt.destroy(&name).await.unwrap();
    assert!(ours(rt.list().await.unwrap(), &name).is_empty());
    assert!(matches!(
        rt.start(&name).await,
        Err(Error::NoSuchContainer(_))
    ));
    rt.destroy(&name).await.unwrap(); // gone: a no-op
    std::fs::remove_file(spec.state_dir.join("report")).unwrap();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&spec).await;
    let boots = std::fs::read_to_string(spec.state_dir.join("boots")).unwrap();
    assert_eq!(boots.lines().count(), 3);

    // Re-creating over a running container replaces it: an expected death.
    rt.create(&spec).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert!(!ours(rt.list().await.unwrap(), &name)[0].running);
    rt.destroy(&name).await.unwrap();
}

/// Docker specifics: writable scratch dirs, nothing of the host's `/run`
/// (the engine's socket!), the engine's init, and a stop the program
/// ignores.
const DOCKER_PROBE: &str = r#"
trap '' TERM
{
  touch /.probe 2>/dev/null && echo root=writable || echo root=readonly
  for d in /tmp /var/tmp; do touch $d/probe && echo "writable=$d"; done
  echo "run=$(ls /run | tr '\n' ' ')"
  echo "runhive=$(ls /run/hive | tr '\n' ' ')"
  for p in /var/run/docker.sock /run/docker.sock; do [ -e $p ] && echo "seen=$p"; done
  echo "init=$(tr '\0\n' '  ' < /proc/1/cmdline | cut -c1-40)"
} > /state/report.tmp
mv /state/report.tmp /state/report
while :; do sleep 1; done
"#;

#[tokio::test]
async fn docker_view_and_stubborn_stop() {
    let Some(rt) = runtime(None).await else {
        return;
    };
    let layout = Layout::new();
    let me = unique("dk-c");
    let _cleanup = Cleanup(vec![me.clone()]);
    let spec = layout.spec(&me, "/bin/sh", &["-c", DOCKER_PROBE]);
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    let report = read_report(&spec).await;
    assert_eq!(one(&report, "root"), "readonly");
    assert_eq!(report["writable"], ["/tmp", "/var/tmp"]);
    assert_eq!(one(&report, "run").trim(), "hive");
    assert_eq!(
        one(&report, "runhive").trim(),
        "bin control egress.sock mcp.sock page"
    );
    assert!(!report.contains_key("seen"), "{:?}", report.get("seen"));
    let init = one(&report, "init");
    assert!(
        init.starts_with("/sbin/docker-init -- /run/hive/bin/hive"),
        "{init}"
    );

    // SIGTERM ignored: the engine kills it after the grace; still a stop.
    rt.stop(&spec.name, Duration::from_secs(1)).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert_eq!(change.detail.as_deref(), Some("killed by SIGKILL"));
    let status = ours(rt.list().await.unwrap(), &spec.name);
    assert!(!status[0].running && !status[0].failed, "{status:?}");
    rt.destroy(&spec.name).await.unwrap();
}

#[tokio::test]
async fn a_hostile_agent_gets_nowhere() {
    let Some(rt) = runtime(None).await else {
        return;
    };
    let layout = Layout::new();
    let me = unique("dk-hostile");
    let _cleanup = Cleanup(vec![me.clone()]);
    let b = breach(&layout, &me, 108_203);
    let mut changes = rt.subscribe();
    rt.create(&b.spec).await.unwrap();
    rt.start(&b.spec.name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    let report = read_report(&b.spec).await;
    assert_breaches_failed(&b, &report);
    let inspect = engine()
        .await
        .inspect_container(&format!("h-{me}-{}", test_hive()), None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.memory, Some(BREACH_MEMORY as i64));
    rt.destroy(&b.spec.name).await.unwrap();
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
    let status = ours(rt.list().await.unwrap(), &spec.name);
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
    assert_eq!(rt.name(), "docker");
}

/// Waits for a TERM, then exits 0.
const IDLE: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

#[tokio::test]
async fn two_hives_on_one_engine_touch_only_their_own() {
    let Some(a) = runtime(None).await else {
        return;
    };
    let b = DockerRuntime::connect(None, other_hive()).await.unwrap();
    let (layout_a, layout_b) = (Layout::new(), Layout::new());
    // The same agent name in both hives.
    let me = unique("dk-twin");
    let _cleanup = Cleanup(vec![me.clone()]);
    let spec_a = layout_a.spec(&me, "/bin/sh", &["-c", IDLE]);
    let spec_b = layout_b.spec(&me, "/bin/sh", &["-c", IDLE]);
    let name = spec_a.name.clone();
    let (mut changes_a, mut changes_b) = (a.subscribe(), b.subscribe());

    a.create(&spec_a).await.unwrap();
    a.start(&name).await.unwrap();
    assert!(next_change(&mut changes_a, &me).await.running);
    // B's create of its own agent of that name removes nothing of A's.
    b.create(&spec_b).await.unwrap();
    b.start(&name).await.unwrap();
    assert!(next_change(&mut changes_b, &me).await.running);
    for rt in [&a, &b] {
        let status = ours(rt.list().await.unwrap(), &name);
        assert_eq!(status.len(), 1, "{status:?}");
        assert!(status[0].running, "{status:?}");
    }

    // B restarts its agent, then its container crashes, then B destroys it.
    hive_runtime::restart(&b, &name, Duration::from_secs(5))
        .await
        .unwrap();
    let stop = next_change(&mut changes_b, &me).await;
    assert!(!stop.running && stop.expected, "{stop:?}");
    assert!(next_change(&mut changes_b, &me).await.running);
    engine()
        .await
        .kill_container(&b.container_name(&name), None)
        .await
        .unwrap();
    let crash = next_change(&mut changes_b, &me).await;
    assert!(!crash.running && !crash.expected, "{crash:?}");
    b.destroy(&name).await.unwrap();
    assert!(ours(b.list().await.unwrap(), &name).is_empty());

    // A's container lived through all of it, and A heard none of it: the
    // first change A sees after its start is its own stop (the engine
    // orders events, so B's would have come first).
    let status = ours(a.list().await.unwrap(), &name);
    assert!(status[0].running, "{status:?}");
    a.stop(&name, Duration::from_secs(5)).await.unwrap();
    let own = next_change(&mut changes_a, &me).await;
    assert!(!own.running && own.expected, "{own:?}");
    a.destroy(&name).await.unwrap();
    assert!(ours(a.list().await.unwrap(), &name).is_empty());
}

#[tokio::test]
async fn a_foreign_container_of_our_name_is_refused_and_left_alone() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptionsBuilder;
    let Some(rt) = runtime(None).await else {
        return;
    };
    rt.ensure_image().await.unwrap();
    let layout = Layout::new();
    let me = unique("dk-foreign");
    let _cleanup = Cleanup(vec![me.clone()]);
    let spec = layout.spec(&me, "/bin/sh", &["-c", IDLE]);
    let container = rt.container_name(&spec.name);
    // Named like ours, labelled like an agent, but of no hive.
    let docker = engine().await;
    let options = CreateContainerOptionsBuilder::default()
        .name(&container)
        .build();
    let body = ContainerCreateBody {
        image: Some(docker::BASE_IMAGE.to_owned()),
        cmd: Some(vec!["/nothing".to_owned()]),
        labels: Some([(docker::AGENT_LABEL.to_owned(), me.clone())].into()),
        ..Default::default()
    };
    let foreign = docker
        .create_container(Some(options), body)
        .await
        .unwrap()
        .id;

    let err = rt.create(&spec).await.unwrap_err();
    assert!(matches!(err, Error::Foreign { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "a container {container} of another hive (or not made by hyperhive) exists; remove \
             or rename it, or run this hive with another state dir"
        )
    );
    assert!(matches!(
        rt.start(&spec.name).await,
        Err(Error::Foreign { .. })
    ));
    assert!(matches!(
        rt.stop(&spec.name, Duration::from_secs(1)).await,
        Err(Error::Foreign { .. })
    ));
    rt.destroy(&spec.name).await.unwrap();
    assert!(ours(rt.list().await.unwrap(), &spec.name).is_empty());
    // Still there, untouched.
    let inspect = docker.inspect_container(&container, None).await.unwrap();
    assert_eq!(inspect.id.as_deref(), Some(foreign.as_str()));
}
