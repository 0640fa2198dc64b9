//! The `nspawn` backend: each container a `systemd-nspawn` machine `h-<agent>-<hive>`.
//!
//! The machine is a volatile view of the host OS: `--directory=/
//! --volatile=yes` gives a tmpfs root with the host's `/usr` read-only
//! (nspawn adds the merged-usr `/bin`, `/lib`… symlinks), and we bind the
//! curated `/etc` ([`crate::etc`], from the spec's `etc_dir`; never the
//! host's, so no `shadow`) and `/nix` (where it exists) read-only on top.
//! Then the same binds as every backend: the hive binary read-only at
//! [`mount::HIVE_BIN`], the state dir at [`mount::STATE`], the shared dir
//! at [`mount::SHARED`], the agent's own socket at [`mount::SOCKET`], the
//! egress socket at [`mount::EGRESS`], the page dir at
//! [`mount::PAGE_DIR`], the control dir read-only at [`mount::CONTROL`]
//! and the spec's binds. The program runs as PID 2 under nspawn's stub
//! init (`--as-pid2`), as the curated passwd's `agent` user — the spec's
//! unprivileged host uid (`--user=agent`; nspawn itself runs as root and
//! has no user namespace) — in `/state`, with [`base_env`] set through
//! `--setenv=NAME` (the values travel in nspawn's own environment, not on
//! its command line, so secrets never show up in the process list). Its
//! stdout and stderr go straight to the log (`--console=pipe`: no pty, no
//! `\r\n`).
//!
//! The machine is named `h-<agent>-<hive>` (hostname `h-<agent>`), where
//! `<hive>` hashes the hive's agents dir like [`crate::cgroup`]: nspawn keeps
//! per-machine state under `/run/systemd/nspawn/propagate/<machine>`, which
//! two hives with an agent of the same name would otherwise share (and the
//! first to stop would remove).
//!
//! The machine has a network namespace of its own with only `lo`
//! (`--private-network`): the host's loopback is out of reach, and the
//! only way out is core's egress proxy socket. `/dev` is nspawn's minimal
//! one (null, zero, full, random, urandom, tty, pts, shm, no `kmsg`), and
//! nspawn applies its default seccomp filter, plus [`DENIED_SYSCALLS`],
//! which that filter allows (systemd 252) and the bwrap backend's denies
//! ([`crate::seccomp`]). CPU and memory limits are
//! cgroups ([`crate::cgroup`]) the supervisor enters before `unshare`
//! starts; nspawn (`--keep-unit`) stays in them.
//!
//! Without systemd as PID 1 (our sandboxes, containers in general) this
//! needs `--register=no` (no machined) and `--keep-unit` (no scope unit
//! over D-Bus); without either nspawn fails with `Failed to open system
//! bus`. It worked on a hybrid cgroup v1 host (named `systemd` hierarchy
//! present) with systemd 252.
//!
//! nspawn runs as PID 1 of a pid namespace of its own, under
//! `unshare --pid --fork --kill-child=SIGKILL`: SIGKILL to nspawn does
//! *not* take its machine down (the machine's init has no parent-death
//! signal and lives in a session of its own), but the death of the init of
//! an enclosing pid namespace kills everything in it, nested namespaces
//! included. So the command line is
//! `unshare … -- systemd-nspawn <flags> -- /run/hive/bin/hive <args>`.
//!
//! Stopping: the supervisor SIGTERMs the process group of `unshare`, which
//! holds `unshare` (it blocks SIGTERM and waits) and nspawn (the machine
//! runs in a session of its own). nspawn catches SIGTERM (through a
//! signalfd, so it arrives even though nspawn is a namespace init) and,
//! with `--kill-signal=SIGRTMIN+3`, asks the stub init to halt: it sends the
//! program SIGTERM then SIGHUP and, once it exits, exits too, taking
//! everything left in the machine with it. nspawn then exits with the
//! program's exit code. The default kill signal without `--boot` is
//! SIGKILL, and the stub init ignores SIGTERM itself, so neither would give
//! a graceful stop. If the grace runs out, SIGKILL to the group (or to
//! `unshare` alone: `--kill-child`) ends nspawn's namespace and with it the
//! machine.
//!
//! Gotchas found on the way:
//!
//! - Killed with SIGKILL, a bare nspawn leaves its machine running,
//!   reparented to the host's init: hence the enclosing pid namespace.
//! - nspawn's default capability set keeps `CAP_SYS_ADMIN`, and
//!   `mount -o remount,rw,bind /usr` inside makes the host's `/usr`
//!   writable. Hence `--drop-capability=all --no-new-privileges=yes`.
//! - The program gets SIGHUP right after SIGTERM on a stop; one that wants
//!   to shut down gracefully must handle (or ignore) SIGHUP too.
//! - `--directory=/` alone is refused ("Spawning container on root
//!   directory is not supported"); `--ephemeral` on a non-btrfs host
//!   *copies the whole root* next to it (`/.#machine.…`) — never use it.
//! - nspawn must not link journals (`--link-journal=no`) nor write
//!   `resolv.conf` or `localtime` into the read-only `/etc`:
//!   `--resolv-conf=off --timezone=off`.
//! - Where the host's `/run` is not a tmpfs (no systemd), nspawn prints
//!   "Attempted to remove disk file system under
//!   /run/systemd/nspawn/propagate/<machine>…" into the log on every exit
//!   (it removes the empty dir anyway). A killed nspawn leaves that dir
//!   behind; harmless, the next start reuses it.
//! - `--bind=SRC:DST` splits at colons; colons and backslashes in paths are
//!   escaped with a backslash.
//! - Variables in nspawn's own environment also steer nspawn
//!   (`SYSTEMD_NSPAWN_*`, `SYSTEMD_LOG_*`); a spec should not set those.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::child::{CommandLine, Launcher};
use crate::probe::{find_program, run_check};
use crate::process::{Inside, base_env};
use crate::{ContainerSpec, Error, Result, mount};

#[derive(Debug, Default, Clone, Copy)]
pub struct NspawnLauncher;

/// Host paths bound read-only over the volatile root, where they exist.
const HOST_SYSTEM: &[&str] = &["/nix"];

impl Launcher for NspawnLauncher {
    fn name(&self) -> &'static str {
        "nspawn"
    }

    fn prepare(&self, spec: &ContainerSpec) -> Result<()> {
        crate::etc::write_etc(spec)
    }

    fn probe(&self) -> std::result::Result<(), String> {
        let (unshare, nspawn) = programs()?;
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(format!("systemd-nspawn needs root; running as uid {uid}"));
        }
        // Unique even for probes running at once: each machine has a
        // propagation dir of its name on the host.
        static PROBES: AtomicU32 = AtomicU32::new(0);
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        let machine = format!("hive-probe-{}-{n}", std::process::id());
        let mut args: Vec<OsString> = machine_args(&nspawn, &machine);
        args.extend(["--", "true"].map(OsString::from));
        run_check(&unshare, &args).map_err(|e| format!("systemd-nspawn cannot run a machine: {e}"))
    }

    fn command(&self, spec: &ContainerSpec) -> Result<CommandLine> {
        let (unshare, nspawn) = programs().map_err(|reason| Error::Unavailable {
            runtime: "nspawn",
            reason,
        })?;
        spec.unix_only("nspawn")?;
        spec.check_paths()?;
        let env = base_env(spec, self.name(), Inside::SANDBOX);
        let mut args = machine_args(&nspawn, &machine_name(spec));
        args.push(format!("--hostname={}", spec.container_name()).into());
        let mut bind = |flag: &str, host: &Path, container: &Path| {
            let mut arg = OsString::from(flag);
            arg.push(escape(host));
            arg.push(":");
            arg.push(escape(container));
            args.push(arg);
        };
        bind("--bind-ro=", &spec.program, Path::new(mount::HIVE_BIN));
        if let Some(engine) = &spec.engine_bin {
            bind("--bind-ro=", engine, Path::new(mount::CLAUDE_BIN));
        }
        bind("--bind=", &spec.state_dir, Path::new(mount::STATE));
        bind("--bind=", &spec.shared_dir, Path::new(mount::SHARED));
        bind("--bind=", &spec.socket, Path::new(mount::SOCKET));
        bind("--bind=", &spec.egress_socket, Path::new(mount::EGRESS));
        bind("--bind=", &spec.page_dir, Path::new(mount::PAGE_DIR));
        bind("--bind-ro=", &spec.control_dir, Path::new(mount::CONTROL));
        bind("--bind-ro=", &spec.etc_dir, Path::new("/etc"));
        for b in &spec.binds {
            let flag = if b.read_only { "--bind-ro=" } else { "--bind=" };
            bind(flag, &b.host, &b.container);
        }
        args.push(format!("--chdir={}", mount::STATE).into());
        if spec.user.is_some_and(|u| u.uid != 0) {
            args.push(format!("--user={}", crate::etc::USER_NAME).into());
        }
        let mut seen = HashSet::new();
        for (name, _) in &env {
            if seen.insert(name.as_str()) {
                args.push(format!("--setenv={name}").into());
            }
        }
        args.extend(["--", mount::HIVE_BIN].map(OsString::from));
        args.extend(spec.args.iter().map(OsString::from));
        Ok(CommandLine {
            program: unshare,
            args,
            env,
            cwd: PathBuf::from("/"),
            inherit: Vec::new(),
        })
    }
}

/// `h-<agent>-<hive>`: unique per hive on this host, at most 2 + 32 + 1 +
/// 16 characters (a machine name may have 64).
fn machine_name(spec: &ContainerSpec) -> String {
    let agents_dir = spec
        .log_path
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let hive = crate::fnv1a(agents_dir.as_os_str().as_bytes());
    format!("{}-{hive:016x}", spec.container_name())
}

/// `unshare` and `systemd-nspawn`, or which of them is missing.
fn programs() -> std::result::Result<(PathBuf, PathBuf), String> {
    let find = |name: &str| find_program(name).ok_or_else(|| format!("{name} not found on PATH"));
    Ok((find("unshare")?, find("systemd-nspawn")?))
}

/// Syscalls nspawn's default filter lets through that no agent needs and
/// that widen the kernel's reach (the `~` makes it a deny-list: `EPERM`).
/// `unshare` and `setns` go whole: nspawn cannot look at their flags.
/// `clone` with namespace flags stays open here (not filterable by name).
const DENIED_SYSCALLS: &str = "--system-call-filter=~userfaultfd io_uring_setup io_uring_enter \
     io_uring_register unshare setns";

/// `unshare`'s arguments up to the machine's command, the probe's
/// included: nspawn in a pid namespace of its own, running a volatile,
/// unregistered, capability-less view of the host.
fn machine_args(nspawn: &Path, machine: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["--pid", "--fork", "--kill-child=SIGKILL", "--"]
        .map(OsString::from)
        .into();
    args.push(nspawn.into());
    args.extend(
        [
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
            "--private-network",
            DENIED_SYSCALLS,
        ]
        .map(OsString::from),
    );
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
