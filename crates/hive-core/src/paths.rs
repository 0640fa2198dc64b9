//! Where the daemon keeps its state and its sockets.
//!
//! Run dir: `host.sock`; per agent (`manager/` for the manager,
//! `agents/<name>/` for the others) `mcp.sock` (its broker socket),
//! `egress.sock` (its egress proxy) and `page/` (the one dir the agent may
//! write, where its harness binds `page.sock`).
//! State dir: `hive.sqlite`; `agents/<name>/` holds what core owns of an
//! agent (`container.log`, `control/`, `etc/`) and `state/`, the agent's
//! own `/state`; `proposed/<name>/config/` (the manager's tree, bound at its
//! `/agents`); `applied/<name>/`. Every per-agent path takes an
//! [`AgentName`], so no unvalidated string ever reaches the filesystem.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use hive_proto::AgentName;

use nix::sys::stat::SFlag;
use std::os::fd::AsFd as _;

use crate::safe_fs;

/// Mode of every directory core creates: owner rwx, group r-x, others --x.
pub const DIR_MODE: u32 = 0o751;
/// Mode of every socket core binds: owner and group read-write.
pub const SOCKET_MODE: u32 = 0o660;
/// Longest unix socket path the kernel accepts (`sun_path` minus the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The daemon's two roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn new(state_dir: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            run_dir: run_dir.into(),
        }
    }

    /// `/var/lib/hyperhive` and `/run/hyperhive` as root; the XDG state and
    /// runtime dirs otherwise.
    pub fn defaults() -> Self {
        if running_as_root() {
            return Self::new("/var/lib/hyperhive", "/run/hyperhive");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".local/state"));
        let run = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| std::env::temp_dir().join(format!("hyperhive-{}", current_uid())));
        Self::new(state.join("hyperhive"), run.join("hyperhive"))
    }

    pub fn database(&self) -> PathBuf {
        self.state_dir.join("hive.sqlite")
    }

    pub fn host_socket(&self) -> PathBuf {
        self.run_dir.join("host.sock")
    }

    /// The dashboard's operator credential (0600), for the operator's tools.
    pub fn operator_token(&self) -> PathBuf {
        self.run_dir.join("operator-token")
    }

    /// The run dir of one agent's sockets; the manager's lives apart.
    pub fn agent_run_dir(&self, name: &AgentName) -> PathBuf {
        if name.is_manager() {
            self.run_dir.join("manager")
        } else {
            self.run_dir.join("agents").join(name.as_str())
        }
    }

    /// The socket an agent's harness talks to.
    pub fn agent_socket(&self, name: &AgentName) -> PathBuf {
        self.agent_run_dir(name).join("mcp.sock")
    }

    /// Core's egress proxy socket for the agent.
    pub fn egress_socket(&self, name: &AgentName) -> PathBuf {
        self.agent_run_dir(name).join("egress.sock")
    }

    /// The one run dir the agent may write: its harness binds its page
    /// socket here. Core never follows a link in it.
    pub fn page_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_run_dir(name).join("page")
    }

    /// Where a linked harness (`--agent-transport tls`) makes its sockets
    /// and control files: agent-writable, like the page dir.
    pub fn link_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_run_dir(name).join("link")
    }

    pub fn agents_dir(&self) -> PathBuf {
        self.state_dir.join("agents")
    }

    pub fn agent_dir(&self, name: &AgentName) -> PathBuf {
        self.agents_dir().join(name.as_str())
    }

    /// Persistent `/state` of an agent; survives destroy unless purged.
    pub fn agent_state(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("state")
    }

    /// The manager's tree of proposed config repos, its `/agents`.
    pub fn proposed_dir(&self) -> PathBuf {
        self.state_dir.join("proposed")
    }

    /// The proposed config repo (manager read-write, agent read-only).
    pub fn agent_config(&self, name: &AgentName) -> PathBuf {
        self.proposed_dir().join(name.as_str()).join("config")
    }

    /// Files core writes for the harness (deployed config, pause marker),
    /// bound read-only into the container. No agent can write here.
    pub fn control_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("control")
    }

    /// The container's curated `/etc`, written by the runtime.
    pub fn etc_dir(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("etc")
    }

    /// The applied config repo (core only).
    pub fn applied(&self, name: &AgentName) -> PathBuf {
        self.state_dir.join("applied").join(name.as_str())
    }

    /// Hive-wide shared directory, `/shared` in every container.
    pub fn shared(&self) -> PathBuf {
        self.state_dir.join("shared")
    }

    /// The pause marker the harness checks between turns.
    pub fn pause_marker(&self, name: &AgentName) -> PathBuf {
        self.control_dir(name).join(hive_proto::control::PAUSED)
    }

    /// Creates both roots with [`DIR_MODE`]; `proposed/` (the manager's
    /// `/agents`) is core's and 0755, so the manager can add nothing there.
    pub fn create_roots(&self) -> anyhow::Result<()> {
        for dir in [&self.state_dir, &self.run_dir] {
            create_dir(dir)?;
        }
        for dir in [self.agents_dir(), self.shared()] {
            safe_fs::Dir::create(&self.state_dir, &dir, DIR_MODE)?;
        }
        let proposed = safe_fs::Dir::create(
            &self.state_dir,
            &self.proposed_dir(),
            safe_fs::PROPOSED_DIR_MODE,
        )?;
        proposed.own()?;
        proposed.set_mode(safe_fs::PROPOSED_DIR_MODE)?;
        Ok(())
    }

    /// Creates an agent's state, control, etc and page dirs, without
    /// following a link on the way. The proposed config repo is made (and checked) by
    /// `Configs::ensure`.
    pub fn create_agent_dirs(&self, name: &AgentName) -> anyhow::Result<()> {
        for dir in [
            self.agent_state(name),
            self.control_dir(name),
            self.etc_dir(name),
        ] {
            safe_fs::Dir::create(&self.state_dir, &dir, DIR_MODE)?;
        }
        // In the run dir, which is core's: the agent may write inside its
        // page dir, never replace it.
        create_dir(&self.page_dir(name))
    }

    /// Moves proposed config repos of the old layout
    /// (`agents/<name>/config`, inside the tree the manager could write)
    /// to `proposed/<name>/config`, and unlinks what the manager could have
    /// planted there at the names core uses (a symbolic link, or a
    /// hard-linked file).
    pub fn migrate_layout(&self) -> anyhow::Result<()> {
        for name in self.agents_on_disk()? {
            let Some(agent_dir) = safe_fs::Dir::open(&self.state_dir, &self.agent_dir(&name))?
            else {
                continue;
            };
            sweep_planted(&agent_dir)?;
            let old = std::ffi::OsStr::new("config");
            let new = self.agent_config(&name);
            if agent_dir
                .kind(old)?
                .is_some_and(|s| safe_fs::is(&s, SFlag::S_IFDIR))
                && std::fs::symlink_metadata(&new).is_err()
            {
                // Under the old layout the manager could write this dir:
                // a pidfile it left could name any host process group for
                // the next start to kill.
                if agent_dir
                    .kind(std::ffi::OsStr::new("container.pid"))?
                    .is_some()
                {
                    agent_dir.remove_file("container.pid")?;
                }
                self.prepare_proposed(&name)?;
                let parent =
                    safe_fs::Dir::open(&self.state_dir, &self.proposed_dir().join(name.as_str()))?
                        .with_context(|| format!("open {}", self.proposed_dir().display()))?;
                nix::fcntl::renameat(agent_dir.as_fd(), old, parent.as_fd(), old).with_context(
                    || {
                        format!(
                            "move {} to {}",
                            agent_dir.path().join(old).display(),
                            new.display()
                        )
                    },
                )?;
                tracing::info!(agent = %name, "moved its proposed config repo to {}", new.display());
            }
        }
        Ok(())
    }

    /// Names with a state dir on disk; entries that are not valid names are
    /// skipped with a warning.
    pub fn agents_on_disk(&self) -> anyhow::Result<Vec<AgentName>> {
        let dir = self.agents_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let file_name = entry.file_name();
            match file_name.to_str().map(AgentName::parse) {
                Some(Ok(name)) => names.push(name),
                Some(Err(e)) => tracing::warn!(dir = %entry.path().display(), "skipping: {e}"),
                None => tracing::warn!(dir = %entry.path().display(), "skipping non-utf8 name"),
            }
        }
        names.sort();
        Ok(names)
    }

    /// Makes `proposed/<name>/` core's and checks the repo below it is no
    /// link (see [`safe_fs::prepare_proposed`]).
    pub fn prepare_proposed(&self, name: &AgentName) -> safe_fs::Result<()> {
        safe_fs::prepare_proposed(&self.state_dir, &self.proposed_dir(), name)
    }

    /// Hands `name`'s proposed repo to the manager's `uid`:`gid` (see
    /// [`safe_fs::chown_proposed`]).
    pub fn chown_proposed(&self, name: &AgentName, uid: u32, gid: u32) -> safe_fs::Result<()> {
        safe_fs::chown_proposed(&self.state_dir, &self.proposed_dir(), name, (uid, gid))
    }
}

/// Creates `dir` and its parents with [`DIR_MODE`] (existing dirs keep
/// their mode).
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Sets a bound socket's mode to [`SOCKET_MODE`].
pub fn restrict_socket(path: &Path) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("chmod {}", path.display()))
}

/// The names core uses in `agents/<name>/`; in the old layout the manager
/// could write there.
const CORE_NAMES: [&str; 6] = [
    "state",
    "control",
    "etc",
    "container.log",
    "container.pid",
    "checkpoints",
];

/// Unlinks a symbolic link, or a regular file with other hard links, at a
/// name core uses in `agents/<name>/`.
fn sweep_planted(agent_dir: &safe_fs::Dir) -> anyhow::Result<()> {
    for name in CORE_NAMES {
        let Some(stat) = agent_dir.kind(std::ffi::OsStr::new(name))? else {
            continue;
        };
        if safe_fs::is(&stat, SFlag::S_IFLNK)
            || (safe_fs::is(&stat, SFlag::S_IFREG) && stat.st_nlink > 1)
        {
            agent_dir.remove_file(name)?;
            tracing::warn!(
                path = %agent_dir.path().join(name).display(),
                "removed a link planted where core keeps its own file"
            );
        }
    }
    Ok(())
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

pub(crate) fn running_as_root() -> bool {
    current_uid() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = Paths::new("/s", "/r");
        let coder = AgentName::parse("coder").unwrap();
        assert_eq!(p.host_socket(), Path::new("/r/host.sock"));
        assert_eq!(
            p.agent_socket(&AgentName::manager()),
            Path::new("/r/manager/mcp.sock")
        );
        assert_eq!(
            p.agent_socket(&coder),
            Path::new("/r/agents/coder/mcp.sock")
        );
        assert_eq!(p.database(), Path::new("/s/hive.sqlite"));
        assert_eq!(p.agent_state(&coder), Path::new("/s/agents/coder/state"));
        assert_eq!(
            p.agent_config(&coder),
            Path::new("/s/proposed/coder/config")
        );
        assert_eq!(p.control_dir(&coder), Path::new("/s/agents/coder/control"));
        assert_eq!(p.page_dir(&coder), Path::new("/r/agents/coder/page"));
        assert_eq!(
            p.egress_socket(&AgentName::manager()),
            Path::new("/r/manager/egress.sock")
        );
        assert_eq!(p.applied(&coder), Path::new("/s/applied/coder"));
    }

    #[test]
    fn a_planted_checkpoints_link_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(dir.path().join("s"), dir.path().join("run"));
        let coder = AgentName::parse("coder").unwrap();
        std::fs::create_dir_all(p.agent_dir(&coder)).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let planted = p.agent_dir(&coder).join("checkpoints");
        std::os::unix::fs::symlink(&elsewhere, &planted).unwrap();
        p.migrate_layout().unwrap();
        assert!(std::fs::symlink_metadata(&planted).is_err());
        assert!(elsewhere.is_dir());
    }

    #[test]
    fn agents_on_disk_skips_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = Paths::new(dir.path(), dir.path().join("run"));
        for name in ["good", "Bad", "also-good"] {
            std::fs::create_dir_all(p.agents_dir().join(name)).unwrap();
        }
        std::fs::write(p.agents_dir().join("file"), "").unwrap();
        let names: Vec<String> = p
            .agents_on_disk()
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names, ["also-good", "good"]);
    }
}
