//! A runtime whose containers are supervised child processes.
//!
//! `process`, `bwrap` and `nspawn` all run one child per container; they
//! differ only in the command line their [`Launcher`] builds. The child
//! leads its own process group, its stdout and stderr are appended to the
//! spec's log file, and a watcher task reports its exit the moment it
//! happens — crash detection without polling. A pidfile next to the log
//! lets a restarted daemon kill a leftover group from a crashed one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hive_proto::AgentName;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{broadcast, watch};

use crate::{ContainerSpec, ContainerStatus, Error, Result, Runtime, StateChange};

/// The command a launcher wants run for a container.
#[derive(Debug)]
pub struct CommandLine {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The child's whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory on the host.
    pub cwd: PathBuf,
    /// Descriptors the child inherits at their own numbers (the args name
    /// them: bwrap's `--seccomp FD`); every other one of the daemon's is
    /// close-on-exec. The parent's copies close when the line is dropped.
    pub inherit: Vec<OwnedFd>,
}

/// Builds the command line of one kind of child-supervised container.
pub trait Launcher: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Why this backend cannot run here, if it cannot.
    fn probe(&self) -> std::result::Result<(), String>;
    fn command(&self, spec: &ContainerSpec) -> Result<CommandLine>;
    /// For launchers whose supervised process does not pass SIGTERM on
    /// (bwrap): a polite stop signals the container's own processes, those
    /// at least this many levels below the supervised one (so a sandbox's
    /// init is spared); the group gets SIGKILL only after the grace.
    /// `None`: SIGTERM the supervised process group.
    fn polite_stop_depth(&self) -> Option<usize> {
        None
    }
    /// Whether the supervised process itself runs as the spec's user
    /// (bwrap, unprivileged in a user namespace); if not, the launcher
    /// switches users inside its container (nspawn) or there is none.
    fn runs_as_user(&self) -> bool {
        false
    }
    /// Work done once at `create`, before any start (the curated `/etc`).
    fn prepare(&self, _spec: &ContainerSpec) -> Result<()> {
        Ok(())
    }
}

struct Entry {
    spec: ContainerSpec,
    /// Present while the child runs; flips to `true` when it exited.
    exited: Option<watch::Receiver<bool>>,
    pid: Option<u32>,
    /// A `stop` is in flight: the exit that follows is not a failure.
    stopping: bool,
    failed: bool,
}

pub struct ChildRuntime<L> {
    launcher: L,
    containers: Arc<Mutex<HashMap<AgentName, Entry>>>,
    changes: broadcast::Sender<StateChange>,
}

impl<L: Launcher> ChildRuntime<L> {
    pub fn new(launcher: L) -> Self {
        let (changes, _) = broadcast::channel(256);
        Self {
            launcher,
            containers: Arc::default(),
            changes,
        }
    }

    pub fn launcher(&self) -> &L {
        &self.launcher
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<AgentName, Entry>> {
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn pidfile(log_path: &Path) -> PathBuf {
    log_path.with_extension("pid")
}

/// Kills the process group a previous daemon left running for this
/// container, if the pidfile names one that is still alive.
fn kill_leftover(log_path: &Path) {
    let path = pidfile(log_path);
    let Ok(text) = read_nofollow(&path) else {
        return;
    };
    if let Ok(pid) = text.trim().parse::<i32>()
        && pid > 1
        && killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok()
    {
        tracing::warn!(pid, "killed a container left running by a previous daemon");
    }
    let _ = std::fs::remove_file(path);
}

/// Reads `path` unless it is a symbolic link.
fn read_nofollow(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Writes the pidfile as a new file: whatever was at its name (a link
/// included) is unlinked first, never written through.
fn write_pidfile(path: &Path, pid: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(format!("{pid}\n").as_bytes())
}

/// Opens the container log for appending, refusing a symbolic link or a
/// file with other hard links at its name (it could be a host file).
fn open_log(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    let meta = log
        .metadata()
        .map_err(Error::io(format!("stat {}", path.display())))?;
    if meta.nlink() > 1 {
        return Err(Error::io(format!("open {}", path.display()))(
            std::io::Error::other("refusing a log file with other hard links"),
        ));
    }
    Ok(log)
}

fn describe(status: std::io::Result<ExitStatus>) -> (bool, String) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) if s.success() => (true, "exited 0".into()),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (false, format!("exit code {code}")),
            (None, Some(sig)) => {
                let name =
                    Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
                (false, format!("killed by {name}"))
            }
            _ => (false, format!("{s}")),
        },
        Err(e) => (false, format!("wait failed: {e}")),
    }
}

#[async_trait::async_trait]
impl<L: Launcher> Runtime for ChildRuntime<L> {
    fn name(&self) -> &'static str {
        self.launcher.name()
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<()> {
        self.launcher.command(spec)?; // refuse a spec the launcher cannot run, now
        kill_leftover(&spec.log_path);
        // Refuse limits this host cannot enforce, now rather than at start.
        crate::cgroup::prepare(spec)?;
        self.launcher.prepare(spec)?;
        let mut containers = self.lock();
        match containers.get_mut(&spec.name) {
            Some(entry) => entry.spec = spec.clone(),
            None => {
                let entry = Entry {
                    spec: spec.clone(),
                    exited: None,
                    pid: None,
                    stopping: false,
                    failed: false,
                };
                containers.insert(spec.name.clone(), entry);
            }
        }
        Ok(())
    }

    async fn start(&self, name: &AgentName) -> Result<()> {
        let mut containers = self.lock();
        let entry = containers
            .get_mut(name)
            .ok_or_else(|| Error::NoSuchContainer(name.clone()))?;
        if entry.exited.as_ref().is_some_and(|rx| !*rx.borrow()) {
            return Ok(());
        }
        let line = wrap(
            self.launcher.command(&entry.spec)?,
            &entry.spec,
            self.launcher.runs_as_user(),
        )?;
        let groups = crate::cgroup::prepare(&entry.spec)?;
        let line = match &groups {
            Some(groups) => enter_groups(line, groups)?,
            None => line,
        };
        let log_path = entry.spec.log_path.clone();
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        let log = open_log(&log_path)?;
        let log2 = log.try_clone().map_err(Error::io("clone log handle"))?;
        #[allow(clippy::disallowed_methods)] // the one place containers are spawned
        let mut command = tokio::process::Command::new(&line.program);
        command
            .args(&line.args)
            .env_clear()
            .envs(line.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&line.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true);
        crate::inherit::keep_open(command.as_std_mut(), &line.inherit);
        let mut child = command.spawn().map_err(Error::io(format!(
            "start {} for {name}",
            line.program.display()
        )))?;
        drop(line);
        let pid = child.id();
        if let Some(pid) = pid
            && let Err(e) = write_pidfile(&pidfile(&log_path), pid)
        {
            tracing::warn!(%name, "pidfile not written: {e}");
        }
        let (exited_tx, exited_rx) = watch::channel(false);
        entry.exited = Some(exited_rx);
        entry.pid = pid;
        entry.stopping = false;
        entry.failed = false;
        drop(containers);
        let _ = self.changes.send(StateChange {
            name: name.clone(),
            running: true,
            expected: true,
            detail: None,
        });

        let (containers, changes, name) =
            (self.containers.clone(), self.changes.clone(), name.clone());
        tokio::spawn(async move {
            let (ok, detail) = describe(child.wait().await);
            let _ = std::fs::remove_file(pidfile(&log_path));
            let expected = {
                let mut containers = containers.lock().unwrap_or_else(|p| p.into_inner());
                containers.get_mut(&name).is_none_or(|entry| {
                    entry.failed = !ok && !entry.stopping;
                    entry.pid = None;
                    entry.stopping
                })
            };
            tracing::info!(agent = %name, "container h-{name} {detail}");
            // Announce before waking `stop`, so the exit a stop causes is
            // always reported as expected.
            let _ = changes.send(StateChange {
                name,
                running: false,
                expected,
                detail: Some(detail),
            });
            let _ = exited_tx.send(true);
            // After the report: the last processes may take a moment to go.
            if let Some(groups) = groups {
                let _ = tokio::task::spawn_blocking(move || groups.remove()).await;
            }
        });
        Ok(())
    }

    async fn stop(&self, name: &AgentName, grace: Duration) -> Result<()> {
        let (pid, mut exited) = {
            let mut containers = self.lock();
            let entry = containers
                .get_mut(name)
                .ok_or_else(|| Error::NoSuchContainer(name.clone()))?;
            match (entry.pid, entry.exited.clone()) {
                (Some(pid), Some(exited)) if !*exited.borrow() => {
                    entry.stopping = true;
                    (pid, exited)
                }
                _ => return Ok(()),
            }
        };
        let group =
            Pid::from_raw(i32::try_from(pid).map_err(|_| Error::Failed(format!("pid {pid}")))?);
        if let Some(depth) = self.launcher.polite_stop_depth() {
            for descendant in descendants(pid, depth) {
                let _ = nix::sys::signal::kill(descendant, Signal::SIGTERM);
            }
        } else {
            let _ = killpg(group, Signal::SIGTERM);
        }
        if tokio::time::timeout(grace, exited.wait_for(|done| *done))
            .await
            .is_err()
        {
            tracing::warn!(agent = %name, "no exit within {grace:?} of SIGTERM; sending SIGKILL");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = exited.wait_for(|done| *done).await;
        }
        Ok(())
    }

    async fn destroy(&self, name: &AgentName) -> Result<()> {
        self.stop(name, Duration::from_secs(10)).await?;
        self.lock().remove(name);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerStatus>> {
        let containers = self.lock();
        let mut list: Vec<ContainerStatus> = containers
            .iter()
            .map(|(name, entry)| ContainerStatus {
                name: name.clone(),
                running: entry.exited.as_ref().is_some_and(|rx| !*rx.borrow()),
                failed: entry.failed,
                pid: entry.pid,
                node: None,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    async fn logs(&self, name: &AgentName, lines: usize) -> Result<Vec<String>> {
        let path = {
            let containers = self.lock();
            let entry = containers
                .get(name)
                .ok_or_else(|| Error::NoSuchContainer(name.clone()))?;
            entry.spec.log_path.clone()
        };
        crate::tail_file(&path, lines).await
    }

    async fn watch_output(&self, name: &AgentName) -> Result<crate::follow::OutputWatch> {
        let containers = self.lock();
        let entry = containers
            .get(name)
            .ok_or_else(|| Error::NoSuchContainer(name.clone()))?;
        Ok(crate::follow::OutputWatch::file(&entry.spec.log_path))
    }
}

/// `line` run as the spec's user, when the launcher's supervised process
/// is to run as it: through `setpriv`, which drops root's supplementary
/// groups too (and with them every capability).
fn wrap(line: CommandLine, spec: &ContainerSpec, runs_as_user: bool) -> Result<CommandLine> {
    let Some(user) = spec.user.filter(|_| runs_as_user) else {
        return Ok(line);
    };
    let setpriv = crate::probe::find_program("setpriv").ok_or_else(|| Error::Unavailable {
        runtime: "bwrap",
        reason: "setpriv (util-linux) not found on PATH: needed to run agents unprivileged".into(),
    })?;
    let mut args: Vec<OsString> = vec![
        format!("--reuid={}", user.uid).into(),
        format!("--regid={}", user.gid).into(),
        "--clear-groups".into(),
        "--".into(),
        line.program.into(),
    ];
    args.extend(line.args);
    Ok(CommandLine {
        program: setpriv,
        args,
        env: line.env,
        cwd: line.cwd,
        inherit: line.inherit,
    })
}

/// `line` started by a `sh` that first enters `groups` (as the daemon's
/// user, before any switch), then execs it: every process of the
/// container is born in them.
fn enter_groups(line: CommandLine, groups: &crate::cgroup::Groups) -> Result<CommandLine> {
    let sh = crate::probe::find_program("sh").unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        crate::cgroup::ENTER_SCRIPT.into(),
        "hive-cgroup".into(),
    ];
    args.extend(groups.procs().into_iter().map(OsString::from));
    args.push("--".into());
    args.push(line.program.into());
    args.extend(line.args);
    Ok(CommandLine {
        program: sh,
        args,
        env: line.env,
        cwd: line.cwd,
        inherit: line.inherit,
    })
}

/// Every process at least `min_depth` levels below `root` (1: its
/// children), found by walking `/proc` (host pids, so this sees into a
/// sandbox's pid namespace).
fn descendants(root: u32, min_depth: usize) -> Vec<Pid> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_pid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut queue = vec![(root, 0)];
    while let Some((pid, depth)) = queue.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if depth + 1 >= min_depth
                && let Ok(raw) = i32::try_from(child)
            {
                found.push(Pid::from_raw(raw));
            }
            queue.push((child, depth + 1));
        }
    }
    found
}

/// The parent pid from `/proc/<pid>/stat` (the field after the command,
/// which is parenthesised and may itself contain spaces and parentheses).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_descendants() {
        #[allow(clippy::disallowed_methods)] // a throwaway child for the walk
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let me = std::process::id();
        let below: Vec<i32> = descendants(me, 1).iter().map(|p| p.as_raw()).collect();
        assert!(below.contains(&(child.id() as i32)), "{below:?}");
        assert!(below.len() >= 2, "the shell and its sleep: {below:?}");
        assert_eq!(parent_pid(child.id()), Some(me));
        let grandchildren: Vec<i32> = descendants(me, 2).iter().map(|p| p.as_raw()).collect();
        assert!(
            !grandchildren.contains(&(child.id() as i32)),
            "{grandchildren:?}"
        );
        let _ = child.kill();
        let _ = child.wait();
        for pid in descendants(me, 1) {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        }
    }
}
