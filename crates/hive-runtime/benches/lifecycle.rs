//! Prints spawn-to-running and crash-detection latency per backend.
//!
//! For each backend this machine can run: create + start a container whose
//! program writes `/state/ready` and sleeps; time until that file exists
//! (spawn to running). Then SIGKILL its main process from outside and time
//! until the backend reports the exit (crash detection). Medians of
//! `ROUNDS` rounds. Run with `cargo bench -p hive-runtime --bench lifecycle`.
//! `swarm` runs last, in a single-node swarm the bench makes (and leaves
//! again) when the engine is in none ([`SwarmLease`]); each round creates
//! the agent's service and network from nothing, as a spawn does. Backend
//! names after `--` measure only those (`-- docker swarm`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hive_proto::AgentName;
use hive_runtime::swarm::lease::SwarmLease;
use hive_runtime::{ContainerSpec, Runtime};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const ROUNDS: usize = 7;

fn spec(root: &std::path::Path, name: &AgentName) -> ContainerSpec {
    let state_dir = root.join(name.as_str()).join("state");
    let shared_dir = root.join("shared");
    let socket = root.join(name.as_str()).join("mcp.sock");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::create_dir_all(&shared_dir).unwrap();
    std::fs::write(&socket, "").unwrap();
    let agent_dir = root.join(name.as_str());
    let (egress, page, control) = (
        agent_dir.join("egress.sock"),
        agent_dir.join("page"),
        agent_dir.join("control"),
    );
    std::fs::write(&egress, "").unwrap();
    std::fs::create_dir_all(&page).unwrap();
    std::fs::create_dir_all(&control).unwrap();
    // As core runs agents: an unprivileged uid owning its files (root only)
    // under a memory limit.
    let user = nix::unistd::geteuid().is_root().then(|| {
        use std::os::unix::fs::{PermissionsExt, chown};
        let user = hive_runtime::AgentUser {
            uid: 108_999,
            gid: 100_000,
        };
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for path in [&state_dir, &page, &egress, &socket] {
            chown(path, Some(user.uid), Some(user.gid)).unwrap();
        }
        user
    });
    ContainerSpec {
        name: name.clone(),
        program: PathBuf::from("/bin/sh"),
        engine_bin: None,
        args: vec![
            "-c".into(),
            "echo up > \"$HIVE_STATE_DIR/ready\"; exec sleep 300".into(),
        ],
        env: Vec::new(),
        state_dir,
        shared_dir,
        socket,
        binds: Vec::new(),
        log_path: root.join(name.as_str()).join("container.log"),
        image: None,
        egress_socket: egress,
        page_dir: page,
        control_dir: control,
        etc_dir: agent_dir.join("etc"),
        limits: hive_runtime::Limits {
            memory_bytes: user.map(|_| 512 << 20),
            cpu_millis: None,
        },
        user,
        placement: hive_runtime::Placement::default(),
        transport: hive_runtime::Transport::Unix,
    }
}

/// `file` in the spec's state volume, on this node (swarm).
async fn volume_file(runtime: &dyn Runtime, spec: &ContainerSpec, file: &str) -> PathBuf {
    let volume = runtime
        .state_volume(&spec.name, spec.placement.generation)
        .unwrap();
    let docker = bollard::Docker::connect_with_local_defaults().unwrap();
    PathBuf::from(docker.inspect_volume(&volume).await.unwrap().mountpoint).join(file)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(backend: &str, runtime: &dyn Runtime) {
    let root = tempfile::tempdir().unwrap();
    let name = AgentName::parse(&format!("bench-{}", std::process::id())).unwrap();
    let spec = spec(root.path(), &name);
    // Known once the first task made the state volume (swarm); kept
    // across rounds, as destroy keeps the volume.
    let mut ready = runtime
        .state_volume(&name, spec.placement.generation)
        .is_none()
        .then(|| spec.state_dir.join("ready"));
    let mut changes = runtime.subscribe();
    let (mut up, mut crash) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        if let Some(ready) = &ready {
            let _ = std::fs::remove_file(ready);
        }
        let t = Instant::now();
        runtime.create(&spec).await.unwrap();
        runtime.start(&name).await.unwrap();
        let file = match &ready {
            Some(file) => file.clone(),
            None => ready
                .insert(volume_file(runtime, &spec, "ready").await)
                .clone(),
        };
        while !file.exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        up.push(t.elapsed());

        let pid = loop {
            let listed = runtime.list().await.unwrap();
            if let Some(pid) = listed.iter().find(|s| s.name == name).and_then(|s| s.pid) {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        while changes.try_recv().is_ok() {}
        let t = Instant::now();
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
        loop {
            let change = tokio::time::timeout(Duration::from_secs(30), changes.recv())
                .await
                .expect("no exit reported within 30 s")
                .unwrap();
            if change.name == name && !change.running {
                break;
            }
        }
        crash.push(t.elapsed());
        runtime.destroy(&name).await.unwrap();
    }
    runtime.purge_state(&name, &spec.placement).await.unwrap();
    println!(
        "{backend:8} spawn_to_running median {:>8.1} ms   crash_detection median {:>7.1} ms   ({ROUNDS} rounds)",
        median(up).as_secs_f64() * 1e3,
        median(crash).as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |backend: &str| named.is_empty() || named.iter().any(|n| n == backend);
    for backend in hive_runtime::BACKENDS.iter().filter(|b| wanted(b)) {
        match hive_runtime::open(backend, &hive_runtime::HiveId::of(&std::env::temp_dir())).await {
            Ok(runtime) => measure(backend, &*runtime).await,
            Err(reason) => println!("{backend:8} skipped: {reason}"),
        }
    }
    if !wanted("swarm") {
        return;
    }
    let lease = match SwarmLease::acquire().await {
        Ok(lease) => lease,
        Err(reason) => return println!("swarm    skipped: {reason}"),
    };
    match hive_runtime::open("swarm", &hive_runtime::HiveId::of(&std::env::temp_dir())).await {
        Ok(runtime) => measure("swarm", &*runtime).await,
        Err(reason) => println!("swarm    skipped: {reason}"),
    }
    drop(lease);
}
