//! The `nspawn` backend: each container a `systemd-nspawn` machine `h-<agent>`.
//!
//! The machine is a volatile view of the host OS: `--directory=/
//! --volatile=yes` gives a tmpfs root with the host's `/usr` read-only
//! (nspawn adds the merged-usr `/bin`, `/lib`… symlinks), and we bind the
//! host's `/etc` (and `/nix`, where it exists) read-only on top. Then the
//! same binds as every backend: the hive binary read-only at
//! [`mount::HIVE_BIN`], the state dir at [`mount::STATE`], the shared dir
//! at [`mount::SHARED`], the agent's own socket at [`mount::SOCKET`] and
//! the spec's binds. The program runs as PID 2 under nspawn's stub init
//! (`--as-pid2`), in `/state`, with [`base_env`] set through `--setenv=NAME`
//! (the values travel in nspawn's own environment, not on its command line,
//! so secrets never show up in the process list). Its stdout and stderr go
//! straight to the log (`--console=pipe`: no pty, no `\r\n`).
//!
//! The network is shared with the host on purpose (no
//! `--private-network`): agents reach the model API and serve their web UI
//! port.
//!
//! Without systemd as PID 1 (our sandboxes, containers in general) this
//! needs `--register=no` (no machined) and `--keep-unit` (no scope unit
//! over D-Bus); without either nspawn fails with `Failed to open system
//! bus`. It worked on a hybrid cgroup v1 host (named `systemd` hierarchy
//! present) with systemd 252.
//!
//! Stopping: the supervisor SIGTERMs nspawn's process group (only nspawn is
//! in it: the machine runs in a session of its own). With
//! `--kill-signal=SIGRTMIN+3` nspawn asks the stub init to halt, which sends
//! the program SIGTERM then SIGHUP and, once it exits, exits too, taking
//! everything left in the pid namespace with it. The default kill signal
//! without `--boot` is SIGKILL, and the stub init ignores SIGTERM itself, so
//! neither would give a graceful stop. If the grace runs out, SIGKILL to
//! nspawn takes the machine down too (its init has a parent-death signal).
//!
//! Gotchas found on the way:
//!
//! - nspawn's default capability set keeps `CAP_SYS_ADMIN`, and
//!   `mount -o remount,rw,bind /usr` inside makes the host's `/usr`
//!   writable. Hence `--drop-capability=all --no-new-privileges=yes`.
//! - The program gets SIGHUP right after SIGTERM on a stop; one that wants
//!   to shut down gracefully must handle (or ignore) SIGHUP too.
//! - `--directory=/` alone is refused ("Spawning container on root
//!   directory is not supported"); `--ephemeral` on a non-btrfs host
//!   *copies the whole root* next to it (`/.#machine.…`) — never use it.
//! - With the host's `/etc`, host and machine ids are equal and nspawn
//!   complains about linking journals: `--link-journal=no`; and it must not
//!   try to write `resolv.conf` or `localtime` into the read-only `/etc`:
//!   `--resolv-conf=off --timezone=off`.
//! - Where the host's `/run` is not a tmpfs (no systemd), nspawn leaves
//!   `/run/systemd/nspawn/propagate/<machine>` behind and prints "Attempted
//!   to remove disk file system under …" into the log on every exit.
//!   Harmless; the next start reuses it.
//! - `--bind=SRC:DST` splits at colons; colons and backslashes in paths are
//!   escaped with a backslash.
//! - Variables in nspawn's own environment also steer nspawn
//!   (`SYSTEMD_NSPAWN_*`, `SYSTEMD_LOG_*`); a spec should not set those.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::bwrap::{check_paths, find_program, run_check};
use crate::child::{CommandLine, Launcher};
use crate::process::base_env;
use crate::{ContainerSpec, Error, Result, mount};

#[derive(Debug, Default, Clone, Copy)]
pub struct NspawnLauncher;

/// Host paths bound read-only over the volatile root, where they exist.
const HOST_SYSTEM: &[&str] = &["/etc", "/nix"];

impl Launcher for NspawnLauncher {
    fn name(&self) -> &'static str {
        "nspawn"
    }

    fn probe(&self) -> std::result::Result<(), String> {
        let nspawn = find_program("systemd-nspawn").ok_or("systemd-nspawn not found on PATH")?;
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(format!("systemd-nspawn needs root; running as uid {uid}"));
        }
        let machine = format!("hive-probe-{}", std::process::id());
        let mut args: Vec<OsString> = machine_args(&machine);
        args.extend(["--", "true"].map(OsString::from));
        run_check(&nspawn, &args).map_err(|e| format!("systemd-nspawn cannot run a machine: {e}"))
    }

    fn command(&self, spec: &ContainerSpec) -> Result<CommandLine> {
        let program = find_program("systemd-nspawn").ok_or_else(|| Error::Unavailable {
            runtime: "nspawn",
            reason: "systemd-nspawn not found on PATH".into(),
        })?;
        check_paths(spec)?;
        let env = base_env(
            spec,
            self.name(),
            mount::SOCKET,
            mount::STATE,
            mount::SHARED,
        );
        let mut args = machine_args(&spec.container_name());
        let mut bind = |flag: &str, host: &Path, container: &Path| {
            let mut arg = OsString::from(flag);
            arg.push(escape(host));
            arg.push(":");
            arg.push(escape(container));
            args.push(arg);
        };
        bind("--bind-ro=", &spec.program, Path::new(mount::HIVE_BIN));
        bind("--bind=", &spec.state_dir, Path::new(mount::STATE));
        bind("--bind=", &spec.shared_dir, Path::new(mount::SHARED));
        bind("--bind=", &spec.socket, Path::new(mount::SOCKET));
        for b in &spec.binds {
            let flag = if b.read_only { "--bind-ro=" } else { "--bind=" };
            bind(flag, &b.host, &b.container);
        }
        args.push(format!("--chdir={}", mount::STATE).into());
        let mut seen = HashSet::new();
        for (name, _) in &env {
            if seen.insert(name.as_str()) {
                args.push(format!("--setenv={name}").into());
            }
        }
        args.extend(["--", mount::HIVE_BIN].map(OsString::from));
        args.extend(spec.args.iter().map(OsString::from));
        Ok(CommandLine {
            program,
            args,
            env,
            cwd: PathBuf::from("/"),
        })
    }
}

/// The flags of every machine, the probe's included: a volatile,
/// unregistered, capability-less view of the host.
fn machine_args(machine: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--directory=/",
        "--volatile=yes",
        "--as-pid2",
        "--console=pipe",
        "--kill-signal=SIGRTMIN+3",
        "--drop-capability=all",
        "--no-new-privileges=yes",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
    ]
    .map(OsString::from)
    .into();
    args.push(format!("--machine={machine}").into());
    for path in HOST_SYSTEM {
        if Path::new(path).is_dir() {
            args.push(format!("--bind-ro={path}").into());
        }
    }
    args
}

/// A path as one side of `--bind=SRC:DST`.
fn escape(path: &Path) -> OsString {
    let mut out = Vec::new();
    for &b in path.as_os_str().as_bytes() {
        if b == b':' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    OsString::from_vec(out)
}

/// A line nspawn prints on every exit where `/run` is not a tmpfs; not a
/// reason for anything.
pub(crate) fn is_noise(line: &str) -> bool {
    line.starts_with("Attempted to remove disk file system under")
}
