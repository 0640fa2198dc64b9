//! CPU and memory limits for child-supervised containers, through cgroups.
//!
//! Each limited container gets a group `hyperhive/<hive>/<agent>`, where
//! `<hive>` is a hash of the directory that holds the hive's agent dirs
//! (so two hives on one host never share a group). On cgroup v1 the group
//! is made in the `memory` and `cpu` hierarchies (`memory.limit_in_bytes`,
//! `cpu.cfs_quota_us` over `cpu.cfs_period_us`); on a v2 unified hierarchy
//! with both controllers available, in it (`memory.max`, `cpu.max`), the
//! controllers enabled down the path. The child enters its group before it
//! execs the container: [`ChildRuntime`](crate::child::ChildRuntime)
//! starts it through a `sh` that writes its own pid to every
//! `cgroup.procs` and then execs, so nothing the container forks escapes.
//! The group is removed after the child exits.
//!
//! A spec with a limit that this host cannot enforce (no writable memory or
//! cpu controller: not root, cgroups mounted read-only, a v2 hierarchy
//! without the controller) is refused at `create` with the reason.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::{ContainerSpec, Error, Limits, Result};

/// Where cgroup hierarchies are mounted.
pub const ROOT: &str = "/sys/fs/cgroup";

/// The scheduler period limits are expressed in (100 ms, the default).
const CPU_PERIOD_US: u64 = 100_000;

/// One container's groups: the directories, and the `cgroup.procs` files
/// its child writes its pid to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    pub dirs: Vec<PathBuf>,
}

impl Groups {
    /// The `cgroup.procs` file of every group.
    pub fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Removes the groups (empty by now, or soon: a few tries).
    pub fn remove(&self) {
        for dir in &self.dirs {
            for attempt in 0..20 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 19 => {
                        tracing::debug!("left cgroup {} behind: {e}", dir.display());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                }
            }
        }
    }
}

/// `hyperhive/<hive>/<agent>` for `spec` (its log lives in
/// `<agents dir>/<agent>/`).
pub fn relative_path(spec: &ContainerSpec) -> PathBuf {
    let agents_dir = spec
        .log_path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    group_path(agents_dir, &spec.name)
}

/// `hyperhive/<hash of agents_dir>/<agent>`: the group of `agent` in the
/// hive whose agent dirs are in `agents_dir`.
pub fn group_path(agents_dir: &Path, agent: &hive_proto::AgentName) -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    agents_dir.hash(&mut hasher);
    Path::new("hyperhive")
        .join(format!("{:016x}", hasher.finish()))
        .join(agent.as_str())
}

/// Which cgroup layout this host has for limits.
enum Layout {
    V1,
    V2,
}

fn layout(root: &Path) -> std::result::Result<Layout, String> {
    if root.join("memory").join("memory.limit_in_bytes").exists()
        || root.join("cpu").join("cpu.cfs_quota_us").exists()
    {
        return Ok(Layout::V1);
    }
    match std::fs::read_to_string(root.join("cgroup.controllers")) {
        Ok(controllers) => {
            let have: Vec<&str> = controllers.split_whitespace().collect();
            if have.contains(&"memory") && have.contains(&"cpu") {
                Ok(Layout::V2)
            } else {
                Err(format!(
                    "the cgroup v2 hierarchy at {} offers only `{}`",
                    root.display(),
                    controllers.trim()
                ))
            }
        }
        Err(_) => Err(format!(
            "no memory or cpu cgroup controller mounted under {}",
            root.display()
        )),
    }
}

/// Creates `spec`'s groups with its limits set, or says why it cannot;
/// `None` when the spec has no limits.
pub fn prepare(spec: &ContainerSpec) -> Result<Option<Groups>> {
    prepare_under(Path::new(ROOT), spec)
}

/// [`prepare`] with the cgroup hierarchies under `root`.
pub fn prepare_under(root: &Path, spec: &ContainerSpec) -> Result<Option<Groups>> {
    let Limits {
        memory_bytes,
        cpu_millis,
    } = spec.limits;
    if memory_bytes.is_none() && cpu_millis.is_none() {
        return Ok(None);
    }
    let refuse = |what: &str, reason: String| {
        Error::Failed(format!(
            "{what} limit of h-{} needs a writable {what} cgroup: {reason}",
            spec.name
        ))
    };
    let what = if memory_bytes.is_some() {
        "memory"
    } else {
        "cpu"
    };
    let rel = relative_path(spec);
    let cpu_quota = cpu_millis.map(|m| u64::from(m) * CPU_PERIOD_US / 1000);
    match layout(root).map_err(|reason| refuse(what, reason))? {
        Layout::V1 => {
            let mut dirs = Vec::new();
            if let Some(bytes) = memory_bytes {
                let dir = root.join("memory").join(&rel);
                make(&dir).map_err(|r| refuse("memory", r))?;
                write(&dir, "memory.limit_in_bytes", &bytes.to_string())
                    .map_err(|r| refuse("memory", r))?;
                dirs.push(dir);
            }
            if let Some(quota) = cpu_quota {
                let dir = root.join("cpu").join(&rel);
                make(&dir).map_err(|r| refuse("cpu", r))?;
                write(&dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())
                    .map_err(|r| refuse("cpu", r))?;
                write(&dir, "cpu.cfs_quota_us", &quota.to_string())
                    .map_err(|r| refuse("cpu", r))?;
                dirs.push(dir);
            }
            Ok(Some(Groups { dirs }))
        }
        Layout::V2 => {
            let dir = root.join(&rel);
            make(&dir).map_err(|r| refuse(what, r))?;
            // Controllers must be enabled in every ancestor's subtree.
            let mut at = root.to_path_buf();
            for part in rel.iter() {
                write(&at, "cgroup.subtree_control", "+memory +cpu")
                    .map_err(|r| refuse(what, r))?;
                at.push(part);
            }
            if let Some(bytes) = memory_bytes {
                write(&dir, "memory.max", &bytes.to_string()).map_err(|r| refuse("memory", r))?;
            }
            if let Some(quota) = cpu_quota {
                write(&dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))
                    .map_err(|r| refuse("cpu", r))?;
            }
            Ok(Some(Groups { dirs: vec![dir] }))
        }
    }
}

fn make(dir: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))
}

fn write(dir: &Path, file: &str, value: &str) -> std::result::Result<(), String> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| format!("write {value} to {}: {e}", path.display()))
}

/// The script that puts its own shell into every group given before `--`,
/// then execs the rest of its arguments.
pub const ENTER_SCRIPT: &str =
    r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#;

/// The memory limit of the memory cgroup host pid `pid` is in, as the
/// host sees it (cgroup v1, or v2's `memory.max`).
pub fn memory_limit_of(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(limit) = text.trim().parse()
        {
            return Some(limit);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContainerSpec;

    fn spec(limits: Limits) -> ContainerSpec {
        ContainerSpec {
            limits,
            ..crate::test_spec()
        }
    }

    #[test]
    fn v1_groups_get_the_limits() {
        let root = tempfile::tempdir().unwrap();
        for (ctrl, file) in [
            ("memory", "memory.limit_in_bytes"),
            ("cpu", "cpu.cfs_quota_us"),
        ] {
            std::fs::create_dir_all(root.path().join(ctrl)).unwrap();
            std::fs::write(root.path().join(ctrl).join(file), "-1").unwrap();
        }
        let spec = spec(Limits {
            memory_bytes: Some(1 << 30),
            cpu_millis: Some(1500),
        });
        let groups = prepare_under(root.path(), &spec).unwrap().unwrap();
        let rel = relative_path(&spec);
        assert!(rel.starts_with("hyperhive") && rel.ends_with("coder"));
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        let mem = Path::new("memory").join(&rel);
        let cpu = Path::new("cpu").join(&rel);
        assert_eq!(
            read(mem.join("memory.limit_in_bytes").to_str().unwrap()),
            "1073741824"
        );
        assert_eq!(
            read(cpu.join("cpu.cfs_quota_us").to_str().unwrap()),
            "150000"
        );
        assert_eq!(
            read(cpu.join("cpu.cfs_period_us").to_str().unwrap()),
            "100000"
        );
        assert_eq!(groups.procs().len(), 2);
        // No limits, no groups.
        assert_eq!(
            prepare_under(root.path(), &self::spec(Limits::default())).unwrap(),
            None
        );
    }

    #[test]
    fn unenforceable_limits_are_refused_with_the_reason() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "pids\n").unwrap();
        let spec = spec(Limits {
            memory_bytes: Some(1 << 30),
            cpu_millis: None,
        });
        let err = prepare_under(root.path(), &spec).unwrap_err().to_string();
        assert!(
            err.starts_with("memory limit of h-coder needs a writable memory cgroup: "),
            "{err}"
        );
        assert!(err.contains("offers only `pids`"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = prepare_under(empty.path(), &spec).unwrap_err().to_string();
        assert!(err.contains("no memory or cpu cgroup controller"), "{err}");
    }
}
