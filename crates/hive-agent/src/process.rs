//! The one place the harness spawns processes.
//!
//! [`spawn`] is the only caller of `Command::new` in this crate (the lint
//! `disallowed_methods` forbids it elsewhere). An engine runs in its own
//! process group, so an interrupt or a kill reaches the agent CLI and
//! everything it started (its MCP servers, its shell commands); dropping a
//! [`Spawned`] kills that whole group.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;

/// What happens to one of the child's standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Io {
    #[default]
    Null,
    Piped,
    Inherit,
}

impl Io {
    fn stdio(self) -> std::process::Stdio {
        match self {
            Io::Null => std::process::Stdio::null(),
            Io::Piped => std::process::Stdio::piped(),
            Io::Inherit => std::process::Stdio::inherit(),
        }
    }
}

/// A command line, its environment and where its streams go.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment.
    pub env_remove: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub stdin: Io,
    pub stdout: Io,
    pub stderr: Io,
    /// Run in a new process group (led by the child) that drop kills.
    pub own_group: bool,
}

impl CommandSpec {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            ..Self::default()
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The value this spec sets for `key`, if it sets one.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A running child. Dropping it kills its process group (if it has its
/// own) or the child itself.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    group: Option<Pid>,
}

/// Spawns `spec`. The child is killed when the returned value is dropped.
pub fn spawn(spec: &CommandSpec) -> std::io::Result<Spawned> {
    #[allow(clippy::disallowed_methods)] // the one place the harness spawns a process
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .stdin(spec.stdin.stdio())
        .stdout(spec.stdout.stdio())
        .stderr(spec.stderr.stdio())
        .kill_on_drop(true);
    for key in &spec.env_remove {
        command.env_remove(key);
    }
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    if spec.own_group {
        command.process_group(0);
    }
    let child = command.spawn()?;
    let group = match (spec.own_group, child.id()) {
        (true, Some(pid)) => i32::try_from(pid).ok().map(Pid::from_raw),
        _ => None,
    };
    Ok(Spawned { child, group })
}

impl Spawned {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends `signal` to the child's process group (or to the child).
    pub fn signal(&self, signal: Signal) {
        let target = self.group.or_else(|| {
            self.pid()
                .and_then(|p| i32::try_from(p).ok().map(Pid::from_raw))
        });
        let Some(target) = target else { return };
        let result = if self.group.is_some() {
            killpg(target, signal)
        } else {
            nix::sys::signal::kill(target, signal)
        };
        if let Err(e) = result
            && e != nix::errno::Errno::ESRCH
        {
            tracing::warn!(pid = %target, ?signal, "signal failed: {e}");
        }
    }

    /// SIGINT, then SIGKILL after `grace` if the child is still running.
    pub async fn interrupt(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        self.signal(Signal::SIGINT);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                // Stragglers in the group (a shell command the agent ran)
                // go too.
                self.signal(Signal::SIGKILL);
                status
            }
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.child.wait().await
            }
        }
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.group.is_some() {
            self.signal(Signal::SIGKILL);
        }
        // kill_on_drop reaps the direct child otherwise.
    }
}

/// Records a running engine's process group in `file`, so the next boot
/// can reap it if this harness dies first.
pub fn record_engine(file: &Path, pid: u32) {
    let Some(start) = start_time(pid) else { return };
    if let Err(e) = std::fs::write(file, format!("{pid} {start}\n")) {
        tracing::warn!(file = %file.display(), "cannot record the engine's pid: {e}");
    }
}

/// Forgets the engine recorded in `file`.
pub fn forget_engine(file: &Path) {
    let _ = std::fs::remove_file(file);
}

/// Kills the process group recorded in `file` if its leader is still the
/// same process (same pid and start time). Returns whether it killed one.
pub fn reap_stale_engine(file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    forget_engine(file);
    let mut parts = text.split_whitespace();
    let (Some(Ok(pid)), Some(start)) = (parts.next().map(str::parse::<u32>), parts.next()) else {
        return false;
    };
    if start_time(pid).as_deref() != Some(start) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    tracing::warn!(pid, "killing the engine a previous harness left running");
    killpg(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat`
/// field 22), which tells a live process from a reused pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3; start time is field 22.
    rest.split_whitespace().nth(19).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self() {
        let me = start_time(std::process::id()).unwrap();
        assert!(me.parse::<u64>().is_ok(), "{me}");
        assert_eq!(start_time(u32::MAX), None);
    }

    #[tokio::test]
    async fn reaps_a_recorded_group_and_ignores_a_stale_record() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engine.pid");
        let mut spec = CommandSpec::new("sleep").arg("30");
        spec.own_group = true;
        let mut child = spawn(&spec).unwrap();
        record_engine(&file, child.pid().unwrap());
        assert!(reap_stale_engine(&file));
        let status = child.wait().await.unwrap();
        assert!(!status.success());
        assert!(!file.exists());
        // A record whose start time does not match is not acted on.
        std::fs::write(&file, format!("{} 1\n", std::process::id())).unwrap();
        assert!(!reap_stale_engine(&file));
    }

    #[tokio::test]
    async fn interrupt_ends_a_child() {
        let mut spec = CommandSpec::new("sleep").arg("30");
        spec.own_group = true;
        let mut child = spawn(&spec).unwrap();
        let status = child.interrupt(Duration::from_secs(5)).await.unwrap();
        assert!(!status.success());
    }
}
