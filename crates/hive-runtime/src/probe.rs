//! Host checks the sandbox backends share: finding a program, and a short
//! synchronous trial run whose failure is told in the words of its stderr.
//! A backend probes once, at selection, before it is trusted with agents.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// `name` on the daemon's `PATH`, or in the usual system dirs.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin", "/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How long a probe's trial run may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program args` to completion for a probe (blocking, at most
/// [`PROBE_TIMEOUT`]); on failure, says why in the words of its stderr.
pub(crate) fn run_check<A: AsRef<OsStr>>(
    program: &Path,
    args: &[A],
) -> std::result::Result<(), String> {
    run_check_inheriting(program, args, &[])
}

/// [`run_check`] whose child inherits `fds` (see [`CommandLine::inherit`]).
///
/// [`CommandLine::inherit`]: crate::child::CommandLine::inherit
pub(crate) fn run_check_inheriting<A: AsRef<OsStr>>(
    program: &Path,
    args: &[A],
    fds: &[OwnedFd],
) -> std::result::Result<(), String> {
    let mut command = probe_command(program);
    command
        .args(args.iter().map(AsRef::as_ref))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    crate::inherit::keep_open(&mut command, fds);
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = child.id();
    let mut stderr = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = stderr.as_mut() {
            let _ = pipe.read_to_string(&mut text);
        }
        let _ = tx.send((child.wait(), text));
    });
    let (status, stderr) = match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(done) => done,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(format!("no exit within {PROBE_TIMEOUT:?}"));
        }
    };
    let status = status.map_err(|e| format!("wait for {}: {e}", program.display()))?;
    if status.success() {
        return Ok(());
    }
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_noise(l))
        .collect();
    if said.is_empty() {
        Err(format!("{} failed ({status})", program.display()))
    } else {
        Err(format!("{} ({status})", said.join("; ")))
    }
}

/// `program` to be run for a probe, in `/`, with no input.
fn probe_command(program: &Path) -> std::process::Command {
    #[allow(
        clippy::disallowed_methods,
        reason = "a short synchronous probe, not a container: ChildRuntime spawns those"
    )]
    let mut command = std::process::Command::new(program);
    command.current_dir("/").stdin(Stdio::null());
    command
}

/// Whether `program --help` mentions `flag` (a feature of its version).
pub(crate) fn help_mentions(program: &Path, flag: &str) -> bool {
    let output = probe_command(program).arg("--help").output();
    output.is_ok_and(|out| {
        let text = [out.stdout, out.stderr].concat();
        String::from_utf8_lossy(&text)
            .split_whitespace()
            .any(|word| word == flag)
    })
}

/// A line nspawn prints on every exit where `/run` is not a tmpfs; not a
/// reason for anything.
fn is_noise(line: &str) -> bool {
    line.starts_with("Attempted to remove disk file system under")
}
