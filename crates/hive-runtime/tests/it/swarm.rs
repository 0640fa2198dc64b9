//! The `swarm` backend against the real local engine in a single-node swarm: lifecycle, exits from the event stream, logs, the sandbox, placement.
//!
//! Each test holds a [`SwarmLease`] (the engine joins a single-node swarm
//! if it is in none, and leaves it after the last holder only if a holder
//! made it); it skips (printing why) where the engine cannot be a swarm
//! manager, and fails so under `CI`. Agent names carry the test process id;
//! a guard removes the test's services and networks even when it fails.

use std::time::Duration;

use hive_proto::AgentName;
use hive_runtime::swarm::SwarmRuntime;
use hive_runtime::swarm::lease::SwarmLease;
use hive_runtime::{ContainerStatus, Error, HiveId, Runtime};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    Layout, all_gone, assert_breaches_failed, assert_isolated, breach, engine, next_change, one,
    read_report, sandbox_specs, sleep_pid, unique,
};

/// A runtime on the local engine's swarm and the hold on that swarm, or
/// `None` (printed) where the engine cannot be a swarm manager.
async fn runtime() -> Option<(SwarmRuntime, SwarmLease)> {
    let lease = match SwarmLease::acquire().await {
        Ok(lease) => lease,
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have a docker engine that can run a swarm: {reason}"
            );
            println!("skipping: no swarm: {reason}");
            return None;
        }
    };
    let runtime = SwarmRuntime::connect(None, test_hive()).await.unwrap();
    Some((runtime, lease))
}

fn test_hive() -> HiveId {
    HiveId::of(std::path::Path::new("/hyperhive-runtime-swarm-tests"))
}

/// Removes the named agents' services and networks when dropped (before
/// the lease it is declared after).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let docker = engine().await;
                for name in names {
                    let service = format!("h-{name}-{}", test_hive());
                    let _ = docker.delete_service(&service).await;
                    for _ in 0..50 {
                        match docker.remove_network(&service).await {
                            Err(bollard::errors::Error::DockerResponseServerError {
                                status_code: 404,
                                ..
                            })
                            | Ok(()) => break,
                            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                        }
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

/// The swarm's id of this node.
async fn this_node() -> String {
    engine()
        .await
        .info()
        .await
        .unwrap()
        .swarm
        .unwrap()
        .node_id
        .unwrap()
}

#[tokio::test]
async fn swarm_lifecycle_exits_and_logs() {
    let Some((rt, _lease)) = runtime().await else {
        return;
    };
    let layout = Layout::new();
    let (me, other) = (unique("sw-a"), unique("sw-b"));
    let _cleanup = Cleanup(vec![me.clone(), other.clone()]);
    let (spec, _other) = sandbox_specs(&layout, &me, &other);
    let name = spec.name.clone();
    let mut changes = rt.subscribe();

    rt.create(&spec).await.unwrap();
    let status = ours(rt.list().await.unwrap(), &name);
    assert_eq!(status.len(), 1);
    assert!(!status[0].running && !status[0].failed);
    // The grace a task on a node core's engine is not gets: core's, as
    // the Engine holds it in the service.
    let service = engine()
        .await
        .inspect_service(&rt.service_name(&name), None)
        .await
        .unwrap();
    let grace = service
        .spec
        .and_then(|s| s.task_template?.container_spec?.stop_grace_period);
    assert_eq!(
        grace,
        Some(i64::try_from(hive_runtime::STOP_GRACE.as_nanos()).unwrap())
    );
    rt.start(&name).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(change.running && change.expected);
    let status = ours(rt.list().await.unwrap(), &name);
    assert!(status[0].running, "{status:?}");
    let node = status[0].node.clone().expect("the node it runs on");
    assert_eq!(node.id, this_node().await);
    // /tmp and /var/tmp as docker's where the Engine's API takes tmpfs
    // options, noexec (and said so at connect) where it does not: the
    // mounts the task's container has.
    let mounts =
        std::fs::read_to_string(format!("/proc/{}/mounts", status[0].pid.unwrap())).unwrap();
    for target in ["/tmp", "/var/tmp"] {
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("no {target} in {mounts}"));
        assert!(line.starts_with("tmpfs "), "{line}");
        let options: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
        assert!(
            options.contains(&"nosuid") && options.contains(&"nodev"),
            "{line}"
        );
        assert_eq!(options.contains(&"noexec"), !rt.tmp_exec(), "{line}");
    }

    let mut report = read_report(&spec).await;
    assert_ne!(one(&report, "pid"), "1", "the program runs as PID 1");
    assert!(one(&report, "init").starts_with("/sbin/docker-init -- "));
    report.insert("pid".into(), vec!["2".into()]);
    assert_isolated(&report, &spec, "swarm");
    let sleep = sleep_pid(&report);
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

    // Killed from outside: the event stream reports it as a crash, and
    // Swarm does not restart it (core decides).
    let pid = status[0].pid.expect("a running task's host pid");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && !change.expected, "{change:?}");
    assert_eq!(change.detail.as_deref(), Some("killed by SIGKILL"));
    all_gone(&report, sleep).await;
    let status = ours(rt.list().await.unwrap(), &name);
    assert!(!status[0].running && status[0].failed, "{status:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !ours(rt.list().await.unwrap(), &name)[0].running,
        "swarm restarted it"
    );

    // Started again, then stopped on purpose: a polite SIGTERM, expected.
    std::fs::remove_file(spec.state_dir.join("report")).unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&spec).await;
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert!(spec.state_dir.join("term").exists(), "no polite SIGTERM");
    let status = ours(rt.list().await.unwrap(), &name);
    assert!(!status[0].running && !status[0].failed, "{status:?}");
    rt.stop(&name, Duration::from_secs(1)).await.unwrap(); // a no-op

    // Destroy removes the service; /state survives into the next one.
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

    // Re-created while running: stopped first (an expected death), never
    // two tasks on one /state.
    rt.create(&spec).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert!(!ours(rt.list().await.unwrap(), &name)[0].running);
    rt.destroy(&name).await.unwrap();
}

#[tokio::test]
async fn a_hostile_agent_gets_nowhere() {
    let Some((rt, _lease)) = runtime().await else {
        return;
    };
    let layout = Layout::new();
    let me = unique("sw-hostile");
    let _cleanup = Cleanup(vec![me.clone()]);
    let b = breach(&layout, &me, 108_204);
    let mut changes = rt.subscribe();
    rt.create(&b.spec).await.unwrap();
    rt.start(&b.spec.name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    let report = read_report(&b.spec).await;
    assert_breaches_failed(&b, &report);
    // Its only network is its own internal one: no route out, no peer.
    let docker = engine().await;
    let network = format!("h-{me}-{}", test_hive());
    let inspect = docker.inspect_network(&network, None).await.unwrap();
    assert_eq!(inspect.internal, Some(true));
    // Besides the agent, at most the node's load-balancer endpoint.
    let mut containers = inspect.containers.unwrap_or_default();
    containers.retain(|id, _| !id.starts_with("lb-"));
    assert_eq!(containers.len(), 1, "{containers:?}");
    let pid = ours(rt.list().await.unwrap(), &b.spec.name)[0].pid.unwrap();
    let id = containers.keys().next().unwrap();
    let container = docker.inspect_container(id, None).await.unwrap();
    assert_eq!(
        container.state.and_then(|s| s.pid),
        Some(i64::from(pid)),
        "the network's one container is the agent's"
    );
    let attached = container
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default();
    assert_eq!(
        attached.keys().collect::<Vec<_>>(),
        [&network],
        "other networks"
    );
    rt.destroy(&b.spec.name).await.unwrap();
    assert!(
        docker.inspect_network(&network, None).await.is_err(),
        "its network outlived it"
    );
}

#[tokio::test]
async fn placement_no_node_meets_is_refused_and_the_pin_holds() {
    let Some((rt, _lease)) = runtime().await else {
        return;
    };
    let layout = Layout::new();
    let me = unique("sw-place");
    let _cleanup = Cleanup(vec![me.clone()]);
    let mut spec = layout.spec(&me, "/bin/sh", &["-c", "echo up; sleep 1000"]);
    spec.placement.constraints = vec!["node.labels.hyperhive-test-nowhere==yes".into()];
    rt.create(&spec).await.unwrap();
    let err = rt.start(&spec.name).await.unwrap_err().to_string();
    assert!(err.contains("cannot be placed"), "{err}");
    assert!(err.contains("no suitable node"), "{err}");
    // Not left waiting for a node to start on later.
    let status = ours(rt.list().await.unwrap(), &spec.name);
    assert!(!status[0].running, "{status:?}");

    // Pinned to this node: it runs here.
    spec.placement.constraints = vec!["node.role==manager".into()];
    spec.placement.node = Some(this_node().await);
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    let status = ours(rt.list().await.unwrap(), &spec.name);
    assert!(status[0].running, "{status:?}");
    // Pinned to a node that is not in the swarm: refused, not moved.
    spec.placement.node = Some("nosuchnode0000000000000000".into());
    rt.create(&spec).await.unwrap();
    let err = rt.start(&spec.name).await.unwrap_err().to_string();
    assert!(err.contains("cannot be placed"), "{err}");
    rt.destroy(&spec.name).await.unwrap();
}

/// What the local event stream cannot report — a task ending on another
/// node — the task watch does: here the runtime takes this node for
/// another's and follows no events, so every report is the watch's. A
/// task killed from outside is reported once, as a crash in the swarm's
/// words; a stop of ours is expected. And the node state the watch reads
/// is the Engine's own answer for this node (up), and down once it says so.
#[tokio::test]
async fn an_exit_no_event_reports_comes_from_the_task_watch_once() {
    let Some((_events, _lease)) = runtime().await else {
        return;
    };
    let rt = SwarmRuntime::connect_as_another_node(None, test_hive())
        .await
        .unwrap();
    let layout = Layout::new();
    let (me, other) = (unique("sw-w"), unique("sw-x"));
    let _cleanup = Cleanup(vec![me.clone(), other.clone()]);
    let (spec, _other) = sandbox_specs(&layout, &me, &other);
    let name = spec.name.clone();
    let mut changes = rt.subscribe();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(change.running && change.expected, "{change:?}");
    read_report(&spec).await;

    let status = ours(rt.list().await.unwrap(), &name);
    kill(
        Pid::from_raw(status[0].pid.unwrap() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && !change.expected, "{change:?}");
    let detail = change.detail.unwrap_or_default();
    assert!(detail.starts_with("failed: "), "{detail}");
    // Once: the watch reads the ended task again at each poll.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let again: Vec<_> = std::iter::from_fn(|| changes.try_recv().ok())
        .filter(|c| c.name == name)
        .collect();
    assert!(again.is_empty(), "{again:?}");

    // Started again and stopped by us: expected.
    std::fs::remove_file(spec.state_dir.join("report")).unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&spec).await;
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    rt.destroy(&name).await.unwrap();

    let mut node = engine()
        .await
        .inspect_node(&this_node().await)
        .await
        .unwrap();
    assert_eq!(hive_runtime::swarm::node_down(&node), None);
    let hostname = node.description.clone().unwrap().hostname.unwrap();
    if let Some(status) = node.status.as_mut() {
        status.state = Some(bollard::models::NodeState::DOWN);
        status.message = Some("heartbeat failure".into());
    }
    assert_eq!(
        hive_runtime::swarm::node_down(&node),
        Some(format!("node {hostname} is down (heartbeat failure)"))
    );
}
