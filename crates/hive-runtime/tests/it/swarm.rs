//! The `swarm` backend against the real local engine in a single-node swarm: lifecycle, exits from the event stream, logs, the sandbox, placement.
//!
//! Each test holds a [`SwarmLease`] (the engine joins a single-node swarm
//! if it is in none, and leaves it after the last holder only if a holder
//! made it); it skips (printing why) where the engine cannot be a swarm
//! manager, and fails so under `CI`. Agent names carry the test process id;
//! a guard removes the test's services and networks even when it fails.

use std::time::Duration;

use bollard::query_parameters::RemoveVolumeOptions;
use hive_proto::AgentName;
use hive_runtime::swarm::SwarmRuntime;
use hive_runtime::swarm::lease::SwarmLease;
use hive_runtime::{ContainerSpec, ContainerStatus, Error, HiveId, Runtime};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    Layout, SETUID_UID, all_gone, assert_breaches_failed, assert_isolated, assert_no_capabilities,
    assert_unprivileged, breach, docker_leaves_open, engine, next_change, one, read_report,
    sandbox_specs, sleep_pid, unique,
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
                    // Its state volumes (ours or planted by the test), once
                    // the deleted service's task containers are gone.
                    for generation in 0..3 {
                        let volume = format!("h-{name}-{}-state-{generation}", test_hive());
                        for _ in 0..100 {
                            match docker
                                .remove_volume(&volume, None::<RemoveVolumeOptions>)
                                .await
                            {
                                Err(bollard::errors::Error::DockerResponseServerError {
                                    status_code: 409,
                                    ..
                                }) => tokio::time::sleep(Duration::from_millis(200)).await,
                                _ => break,
                            }
                        }
                    }
                }
                // The test hive's shared volume, unless another test's
                // agent still has it.
                let shared = format!("h-{}-shared", test_hive());
                let _ = docker
                    .remove_volume(&shared, None::<RemoveVolumeOptions>)
                    .await;
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

/// The host dir of one of our volumes on this node.
async fn volume_dir(volume: &str) -> std::path::PathBuf {
    engine()
        .await
        .inspect_volume(volume)
        .await
        .unwrap_or_else(|e| panic!("volume {volume}: {e}"))
        .mountpoint
        .into()
}

/// `spec` as the host sees its files once its task ran on this node:
/// `/state` and `/shared` are the node's volumes, not the spec's dirs.
async fn on_node(rt: &SwarmRuntime, spec: &ContainerSpec) -> ContainerSpec {
    let state = rt.state_volume(&spec.name, spec.placement.generation);
    ContainerSpec {
        state_dir: volume_dir(&state).await,
        shared_dir: volume_dir(&rt.shared_volume()).await,
        ..spec.clone()
    }
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
    let host = on_node(&rt, &spec).await;
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

    let mut report = read_report(&host).await;
    assert_ne!(one(&report, "pid"), "1", "the program runs as PID 1");
    assert!(one(&report, "init").starts_with("/sbin/docker-init -- "));
    report.insert("pid".into(), vec!["2".into()]);
    assert_isolated(&report, &host, "swarm");
    let sleep = sleep_pid(&report);
    // No capability, as on docker; `no_new_privs` where the Engine's API
    // sets it (and said so at connect where it does not).
    if rt.no_new_privs() {
        assert_unprivileged(sleep);
    } else {
        assert_no_capabilities(sleep);
    }
    // What the Engine holds, after start rewrote the spec it read back.
    let held = engine()
        .await
        .inspect_service(&rt.service_name(&name), None)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.task_template?.container_spec)
        .unwrap();
    assert_eq!(held.capability_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(held.capability_add, None);
    assert_eq!(
        held.privileges.and_then(|p| p.no_new_privileges) == Some(true),
        rt.no_new_privs()
    );
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
    std::fs::remove_file(host.state_dir.join("report")).unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&host).await;
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    let change = next_change(&mut changes, &me).await;
    assert!(!change.running && change.expected, "{change:?}");
    assert!(host.state_dir.join("term").exists(), "no polite SIGTERM");
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
    std::fs::remove_file(host.state_dir.join("report")).unwrap();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&host).await;
    let boots = std::fs::read_to_string(host.state_dir.join("boots")).unwrap();
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
    let mut b = breach(&layout, &me, 108_204);
    let mut changes = rt.subscribe();
    rt.create(&b.spec).await.unwrap();
    rt.start(&b.spec.name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    b.spec = on_node(&rt, &b.spec).await;
    let report = read_report(&b.spec).await;
    let mut open = docker_leaves_open().await;
    if !rt.no_new_privs() {
        open.push(SETUID_UID);
    }
    assert_breaches_failed(&b, &report, &open);
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
    // On the unix transport it binds core's sockets: it runs on core's
    // node whatever its pin says.
    spec.placement.node = Some("nosuchnode0000000000000000".into());
    rt.create(&spec).await.unwrap();
    rt.start(&spec.name).await.unwrap();
    let status = ours(rt.list().await.unwrap(), &spec.name);
    assert_eq!(
        status[0].node.as_ref().map(|n| n.id.clone()),
        Some(this_node().await)
    );
    rt.destroy(&spec.name).await.unwrap();
}

/// The bind sources and the volume names of `agent`'s service as the
/// Engine holds it.
async fn mounts_held(rt: &SwarmRuntime, agent: &AgentName) -> (Vec<String>, Vec<(String, String)>) {
    let service = engine()
        .await
        .inspect_service(&rt.service_name(agent), None)
        .await
        .unwrap();
    let mounts = service
        .spec
        .and_then(|s| s.task_template)
        .and_then(|t| t.container_spec)
        .and_then(|c| c.mounts)
        .unwrap_or_default();
    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for m in mounts {
        match m.typ {
            Some(bollard::models::MountType::BIND) => binds.push(m.source.unwrap_or_default()),
            Some(bollard::models::MountType::VOLUME) => {
                volumes.push((m.target.unwrap_or_default(), m.source.unwrap_or_default()))
            }
            _ => {}
        }
    }
    (binds, volumes)
}

#[tokio::test]
async fn state_is_a_volume_of_ours_kept_at_destroy_fresh_per_generation_removed_at_purge() {
    let Some((rt, _lease)) = runtime().await else {
        return;
    };
    let layout = Layout::new();
    let me = unique("sw-vol");
    let _cleanup = Cleanup(vec![me.clone()]);
    let script = "echo boot >> /state/boots; echo $HIVE_AGENT > /shared/from-$HIVE_AGENT; \
                  touch /state/ready; sleep 1000";
    let mut spec = layout.spec(&me, "/bin/sh", &["-c", script]);
    spec.user = Some(hive_runtime::AgentUser {
        uid: 108_205,
        gid: 100_000,
    });
    let name = spec.name.clone();
    let docker = engine().await;
    rt.create(&spec).await.unwrap();

    // The service the Engine holds: /state and /shared are our volumes,
    // and no bind comes from the hive's dirs for them.
    let (binds, volumes) = mounts_held(&rt, &name).await;
    let state = rt.state_volume(&name, 0);
    assert_eq!(
        volumes,
        [
            ("/state".to_owned(), state.clone()),
            ("/shared".to_owned(), rt.shared_volume())
        ]
    );
    // (The unix transport's sockets and dirs are core's, on core's node.)
    for source in &binds {
        let source = std::path::Path::new(source);
        assert!(
            !source.starts_with(&spec.state_dir)
                && !source.starts_with(&spec.shared_dir)
                && !source.starts_with(&spec.etc_dir),
            "{} bound: {binds:?}",
            source.display()
        );
    }

    // The agent's uid writes its /state; the node made the volume with
    // our labels.
    rt.start(&name).await.unwrap();
    let host = on_node(&rt, &spec).await;
    crate::support::eventually("the agent's first boot", || {
        host.state_dir.join("ready").exists()
    })
    .await;
    let labels = docker.inspect_volume(&state).await.unwrap().labels;
    assert_eq!(labels.get("hyperhive.hive"), Some(&test_hive().to_string()));
    assert_eq!(labels.get("hyperhive.agent"), Some(&me));
    assert_eq!(
        labels.get("hyperhive.volume").map(String::as_str),
        Some("state")
    );
    assert_eq!(
        labels.get("hyperhive.generation").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        std::fs::read_to_string(host.shared_dir.join(format!("from-{me}"))).unwrap(),
        format!("{me}\n")
    );

    // Survives stop and start, and destroy: the next service finds it.
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    std::fs::remove_file(host.state_dir.join("ready")).unwrap();
    rt.start(&name).await.unwrap();
    crate::support::eventually("the second boot", || host.state_dir.join("ready").exists()).await;
    rt.destroy(&name).await.unwrap();
    assert!(
        docker.inspect_volume(&state).await.is_ok(),
        "destroy removed the state"
    );
    std::fs::remove_file(host.state_dir.join("ready")).unwrap();
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    crate::support::eventually("the revived boot", || host.state_dir.join("ready").exists()).await;
    let boots = std::fs::read_to_string(host.state_dir.join("boots")).unwrap();
    assert_eq!(boots.lines().count(), 3, "{boots}");

    // A new generation: a fresh, empty volume; the older one is kept.
    rt.stop(&name, Duration::from_secs(10)).await.unwrap();
    spec.placement.generation = 1;
    rt.create(&spec).await.unwrap();
    rt.start(&name).await.unwrap();
    let fresh = on_node(&rt, &spec).await;
    assert_ne!(fresh.state_dir, host.state_dir);
    crate::support::eventually("the boot on the fresh volume", || {
        fresh.state_dir.join("ready").exists()
    })
    .await;
    let boots = std::fs::read_to_string(fresh.state_dir.join("boots")).unwrap();
    assert_eq!(boots.lines().count(), 1, "{boots}");
    assert!(docker.inspect_volume(&state).await.is_ok());

    // Purge (after destroy) removes every generation: gone from the Engine.
    rt.destroy(&name).await.unwrap();
    rt.purge_state(&name, &spec.placement).await.unwrap();
    for volume in [state, rt.state_volume(&name, 1)] {
        let gone = docker.inspect_volume(&volume).await.unwrap_err();
        assert!(
            gone.to_string().contains("404") || gone.to_string().contains("no such volume"),
            "{volume}: {gone}"
        );
    }
    assert!(
        docker.inspect_volume(&rt.shared_volume()).await.is_ok(),
        "purging one agent removed the hive's shared volume"
    );
}

#[tokio::test]
async fn a_foreign_volume_of_our_name_is_refused_and_untouched() {
    let Some((rt, _lease)) = runtime().await else {
        return;
    };
    let layout = Layout::new();
    let me = unique("sw-foreign");
    let _cleanup = Cleanup(vec![me.clone()]);
    let spec = layout.spec(&me, "/bin/sh", &["-c", "sleep 1000"]);
    let docker = engine().await;
    let name = rt.state_volume(&spec.name, 0);
    // Someone else's volume of our name: not ours (no labels of ours, or
    // another hive's).
    docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(std::collections::HashMap::from([(
                "hyperhive.hive".to_owned(),
                "0000000000000000".to_owned(),
            )])),
            ..Default::default()
        })
        .await
        .unwrap();
    let mountpoint = volume_dir(&name).await;
    std::fs::write(mountpoint.join("theirs"), "keep").unwrap();

    let err = rt.create(&spec).await.unwrap_err();
    assert!(matches!(err, Error::Foreign { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    assert!(
        docker
            .inspect_service(&rt.service_name(&spec.name), None)
            .await
            .is_err(),
        "a service was made on a foreign volume"
    );
    // Purge leaves it: only ours are removed.
    rt.purge_state(&spec.name, &spec.placement).await.unwrap();
    let kept = docker.inspect_volume(&name).await.unwrap();
    assert_eq!(
        kept.labels.get("hyperhive.hive").map(String::as_str),
        Some("0000000000000000")
    );
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("theirs")).unwrap(),
        "keep"
    );

    // An (approved) bind cannot reach another agent's volume by its name:
    // a bind's source is an absolute host path or the spec is refused.
    let other = AgentName::parse("other").unwrap();
    let mut sneaky = layout.spec(&unique("sw-sneaky"), "/bin/sh", &["-c", "sleep 1000"]);
    sneaky.binds.push(hive_runtime::Bind {
        host: rt.state_volume(&other, 0).into(),
        container: "/theirs".into(),
        read_only: false,
    });
    let err = rt.create(&sneaky).await.unwrap_err().to_string();
    assert!(err.contains("not an absolute path"), "{err}");
    assert!(
        docker
            .inspect_service(&rt.service_name(&sneaky.name), None)
            .await
            .is_err()
    );
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
    let host = on_node(&rt, &spec).await;
    read_report(&host).await;

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
    std::fs::remove_file(host.state_dir.join("report")).unwrap();
    rt.start(&name).await.unwrap();
    assert!(next_change(&mut changes, &me).await.running);
    read_report(&host).await;
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
