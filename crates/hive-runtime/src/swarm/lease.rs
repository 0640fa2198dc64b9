//! A shared hold on a single-node swarm for tests and benchmarks: the engine
//! is put in a swarm when it is in none, and left again by the last holder,
//! only if a holder put it there.
//!
//! Holders on one machine (test threads, test processes, other checkouts)
//! agree through a directory ([`DIR`], or `HIVE_SWARM_LEASE_DIR`): a `lock`
//! file every step holds an exclusive lock on, a `users/` entry per holder
//! (`<pid>-<n>`, pruned when its process is gone), and `initialised`, the
//! node id of the swarm a holder initialised. A swarm someone else made (no
//! `initialised`, or another node id in it) is never left.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::models::{LocalNodeState, SwarmInitRequest};
use bollard::query_parameters::LeaveSwarmOptionsBuilder;

/// The default lease directory.
pub const DIR: &str = "/tmp/hyperhive-swarm-lease";

/// One holder's hold; released (and the swarm left, if this was the last
/// holder of a swarm a holder initialised) on drop.
pub struct SwarmLease {
    dir: PathBuf,
    user: PathBuf,
}

fn dir() -> PathBuf {
    std::env::var_os("HIVE_SWARM_LEASE_DIR").map_or_else(|| PathBuf::from(DIR), PathBuf::from)
}

/// The lease directory's lock, held while the returned file lives.
fn locked(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir.join("users")).map_err(|e| format!("{}: {e}", dir.display()))?;
    for d in [dir.to_path_buf(), dir.join("users")] {
        // Shared by every user of the machine's engine.
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777));
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("lock"))
        .map_err(|e| format!("{}/lock: {e}", dir.display()))?;
    lock.lock()
        .map_err(|e| format!("lock {}/lock: {e}", dir.display()))?;
    Ok(lock)
}

async fn node_state(docker: &Docker) -> Result<(LocalNodeState, String, bool), String> {
    let info = docker.info().await.map_err(|e| e.to_string())?;
    let swarm = info.swarm.unwrap_or_default();
    Ok((
        swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY),
        swarm.node_id.unwrap_or_default(),
        swarm.control_available == Some(true),
    ))
}

impl SwarmLease {
    /// Holds the local engine's swarm, initialising a single-node one
    /// (`--advertise-addr 127.0.0.1`) if the engine is in none. Fails with
    /// the reason when the engine cannot be a swarm manager.
    pub async fn acquire() -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = dir();
        let docker = super::super::docker::connect_engine().await?;
        let _lock = locked(&dir)?;
        let marker = dir.join("initialised");
        let (state, node, manager) = node_state(&docker).await?;
        match state {
            LocalNodeState::INACTIVE => {
                let request = SwarmInitRequest {
                    listen_addr: Some("127.0.0.1:2377".to_owned()),
                    advertise_addr: Some("127.0.0.1".to_owned()),
                    ..Default::default()
                };
                let node = docker
                    .init_swarm(request)
                    .await
                    .map_err(|e| format!("docker swarm init: {e}"))?;
                std::fs::write(&marker, node.trim()).map_err(|e| format!("{e}"))?;
            }
            LocalNodeState::ACTIVE if manager => {
                let ours = std::fs::read_to_string(&marker).unwrap_or_default();
                if ours.trim() != node {
                    // A swarm somebody else made: never ours to leave.
                    let _ = std::fs::remove_file(&marker);
                }
            }
            LocalNodeState::ACTIVE => {
                return Err("this engine is a swarm worker, not a manager".to_owned());
            }
            other => return Err(format!("this engine's swarm is {other}")),
        }
        let user = dir.join("users").join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::File::create(&user)
            .and_then(|mut f| f.write_all(b"hyperhive swarm lease\n"))
            .map_err(|e| format!("{}: {e}", user.display()))?;
        Ok(Self { dir, user })
    }

    async fn release(dir: PathBuf, user: PathBuf) -> Result<(), String> {
        let _lock = locked(&dir)?;
        let _ = std::fs::remove_file(&user);
        let mut left = 0;
        for entry in std::fs::read_dir(dir.join("users")).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            match pid {
                // A holder that died without releasing.
                Some(pid) if !Path::new(&format!("/proc/{pid}")).exists() => {
                    let _ = std::fs::remove_file(entry.path());
                }
                _ => left += 1,
            }
        }
        let marker = dir.join("initialised");
        let Ok(initialised) = std::fs::read_to_string(&marker) else {
            return Ok(());
        };
        if left > 0 {
            return Ok(());
        }
        let docker = super::super::docker::connect_engine().await?;
        let (state, node, _) = node_state(&docker).await?;
        if state == LocalNodeState::ACTIVE && node == initialised.trim() {
            let options = LeaveSwarmOptionsBuilder::default().force(true).build();
            docker
                .leave_swarm(Some(options))
                .await
                .map_err(|e| format!("docker swarm leave: {e}"))?;
        }
        let _ = std::fs::remove_file(&marker);
        Ok(())
    }
}

impl Drop for SwarmLease {
    fn drop(&mut self) {
        let (dir, user) = (self.dir.clone(), self.user.clone());
        // Drop may run inside a runtime: release on a thread of our own.
        let released = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(Self::release(dir, user))
        })
        .join();
        match released {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("releasing the swarm lease: {e}"),
            Err(_) => tracing::warn!("releasing the swarm lease panicked"),
        }
    }
}
