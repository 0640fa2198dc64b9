//! The `bwrap` backend: each container a bubblewrap sandbox.
//!
//! The command line is `setpriv --reuid=<uid> --regid=<gid> --clear-groups
//! -- bwrap <flags> -- /run/hive/bin/hive <args>`: bwrap runs as the agent's
//! own unprivileged host uid ([`ContainerSpec::user`]) and so sets up its
//! namespaces inside a user namespace of its own (uid mapped to itself):
//!
//! - new user, mount, pid, ipc, uts and network namespaces (`--unshare-pid
//!   --unshare-ipc --unshare-uts --unshare-net`); the network namespace has
//!   only `lo`, so the host's loopback (the dashboard, peers' sockets,
//!   abstract unix sockets) is out of reach; the only way out is core's
//!   egress proxy socket, bound at [`mount::EGRESS`]; hostname `h-<agent>`;
//! - the host system read-only: `/usr`, `/nix` if present, and `/bin`,
//!   `/sbin`, `/lib*` as the symlinks or directories they are on the host;
//!   `/etc` is the curated one ([`crate::etc`]) from the spec's `etc_dir`,
//!   never the host's (no `shadow`); a fresh `/proc` (with `/proc/sys`
//!   read-only), a minimal `/dev` (null, zero, full, random, urandom, tty,
//!   pts, shm: no `kmsg`), tmpfs `/tmp` and `/run`;
//! - the hive binary read-only at [`mount::HIVE_BIN`], the state dir at
//!   [`mount::STATE`], the shared dir at [`mount::SHARED`], the agent's own
//!   socket at [`mount::SOCKET`], the egress socket at [`mount::EGRESS`],
//!   the page dir at [`mount::PAGE_DIR`], the control dir read-only at
//!   [`mount::CONTROL`], then the spec's binds, each read-only or
//!   read-write as it says; nothing else of the host is visible, and
//!   nothing of it is writable but those binds (and only where the uid may
//!   write: the state dir is the agent's, core's files are not);
//! - `--cap-drop ALL` (with `no_new_privs`, which bwrap always sets);
//! - a seccomp filter ([`crate::seccomp`], Docker's default profile as a
//!   deny-list: no keyring, bpf, userfaultfd, perf events, io_uring,
//!   mounts, other namespaces, ptrace…), compiled by core at every start
//!   and passed with `--seccomp FD` from a sealed memfd the supervisor
//!   hands down ([`CommandLine::inherit`]): no file anyone could swap;
//! - `--unshare-user --disable-userns` where bwrap has it (0.8.0 on): no
//!   nested user namespace even through a path the filter missed. Older
//!   bwraps run without (the filter still refuses `CLONE_NEWUSER`), and the
//!   probe says so in the log;
//! - `--die-with-parent` and `--new-session`; working dir `/state`;
//! - the environment is [`base_env`] with the in-sandbox paths, passed
//!   through bwrap's own environment (bwrap hands it on unchanged), so
//!   secrets in it never show up in the process list;
//! - CPU and memory limits through cgroups ([`crate::cgroup`]), entered by
//!   the supervisor before bwrap starts.
//!
//! Running bwrap as the agent's uid means it needs search access to the
//! host paths it binds: core keeps its roots traversable (`o+x`).
//!
//! The probe starts a sandbox with the same filter, so a kernel or bwrap
//! that cannot load it makes the backend unavailable, with bwrap's reason;
//! a start never falls back to an unfiltered sandbox (bwrap exits if the
//! filter does not load).
//!
//! Gotchas found on the way:
//!
//! - Run as root without `--cap-drop ALL`, bwrap keeps every capability,
//!   and `mount -o remount,rw,bind /usr` inside makes the host's `/usr`
//!   writable. Hence the drop.
//! - Root without capabilities may still write most of `/proc/sys`, which
//!   is host-global (`vm.swappiness`…); bwrap 0.8 does not cover it, so it
//!   is bound read-only over itself.
//! - bwrap does not forward signals (containers/bubblewrap#369): a SIGTERM
//!   to the outer bwrap kills it at once and `--die-with-parent` then
//!   SIGKILLs the sandbox. So a polite stop sends SIGTERM to the program
//!   and its children directly (found under the outer bwrap in `/proc`,
//!   skipping the sandbox's init), and only after the grace SIGKILLs the
//!   outer bwrap, which takes the whole pid namespace with it.
//! - A bind whose host path does not exist makes bwrap fail at start (the
//!   exit is reported like any other), not at `create`.
//! - `--disable-userns` wants an explicit `--unshare-user`, even where
//!   bwrap makes the user namespace anyway (unprivileged).
//! - bwrap reads the filter from the descriptor's offset to its end: the
//!   memfd is rewound after it is written.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::child::{CommandLine, Launcher};
use crate::probe::{find_program, help_mentions, run_check_inheriting};
use crate::process::{Inside, base_env};
use crate::{ContainerSpec, Error, Result, mount};

#[derive(Debug, Default, Clone, Copy)]
pub struct BwrapLauncher;

/// Namespace and privilege flags, shared by the probe and the containers.
const ISOLATION: &[&str] = &[
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-net",
    "--cap-drop",
    "ALL",
];

/// Top-level host paths a sandbox sees read-only, where they exist.
const HOST_SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/nix",
];

impl Launcher for BwrapLauncher {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    /// bwrap does not pass SIGTERM on: signal the program and what it
    /// started (outer bwrap → sandbox init → program: depth 2 and below).
    fn polite_stop_depth(&self) -> Option<usize> {
        Some(2)
    }

    fn runs_as_user(&self) -> bool {
        true
    }

    fn prepare(&self, spec: &ContainerSpec) -> Result<()> {
        crate::etc::write_etc(spec)
    }

    fn probe(&self) -> std::result::Result<(), String> {
        let bwrap = find_program("bwrap").ok_or("bwrap not found on PATH")?;
        let mut args: Vec<&OsStr> = Vec::new();
        // As root, probe the way containers run: as an unprivileged uid
        // (bwrap then needs user namespaces).
        let setpriv = find_program("setpriv");
        let as_user = nix::unistd::geteuid().is_root();
        let program = if as_user {
            let setpriv = setpriv
                .as_deref()
                .ok_or("setpriv (util-linux) not found on PATH")?;
            args.extend(["--reuid=65534", "--regid=65534", "--clear-groups", "--"].map(OsStr::new));
            args.push(bwrap.as_os_str());
            setpriv
        } else {
            &bwrap
        };
        args.extend(
            ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
                .iter()
                .chain(ISOLATION)
                .map(OsStr::new),
        );
        if !disables_userns(&bwrap) {
            tracing::warn!(
                "this bwrap lacks --disable-userns (0.8.0 on): nested user namespaces are \
                 refused by the seccomp filter alone"
            );
        }
        let (hardening, filter) = hardening(&bwrap)?;
        args.extend(hardening.iter().map(OsString::as_os_str));
        // The host's `true`, by path: the probe should not depend on `PATH`.
        let true_ = find_program("true").unwrap_or_else(|| PathBuf::from("/bin/true"));
        args.extend([OsStr::new("--"), true_.as_os_str()]);
        run_check_inheriting(program, &args, &[filter])
            .map_err(|e| format!("bwrap cannot create a sandbox with its seccomp filter: {e}"))
    }

    fn command(&self, spec: &ContainerSpec) -> Result<CommandLine> {
        let program = find_program("bwrap").ok_or_else(|| Error::Unavailable {
            runtime: "bwrap",
            reason: "bwrap not found on PATH".into(),
        })?;
        let (hardening, filter) = hardening(&program).map_err(|reason| Error::Unavailable {
            runtime: "bwrap",
            reason,
        })?;
        Ok(CommandLine {
            args: args(spec, hardening)?,
            program,
            env: base_env(spec, self.name(), Inside::SANDBOX),
            cwd: PathBuf::from("/"),
            inherit: vec![filter],
        })
    }
}

/// Whether `bwrap` has `--disable-userns` (asked once).
fn disables_userns(bwrap: &Path) -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| help_mentions(bwrap, "--disable-userns"))
}

/// The flags past [`ISOLATION`] that narrow what the sandboxed program may
/// ask of the kernel, and the seccomp filter's memfd they name, which the
/// child must inherit.
fn hardening(bwrap: &Path) -> std::result::Result<(Vec<OsString>, OwnedFd), String> {
    let filter = crate::seccomp::memfd()?;
    let mut flags: Vec<OsString> = vec!["--seccomp".into(), filter.as_raw_fd().to_string().into()];
    if disables_userns(bwrap) {
        flags.extend(["--unshare-user".into(), "--disable-userns".into()]);
    }
    Ok((flags, filter))
}

/// bwrap's arguments for `spec`, [`ISOLATION`] and `hardening` first.
fn args(spec: &ContainerSpec, hardening: Vec<OsString>) -> Result<Vec<OsString>> {
    spec.unix_only("bwrap")?;
    spec.check_paths()?;
    let mut args: Vec<OsString> = ISOLATION.iter().map(OsString::from).collect();
    args.extend(hardening);
    let mut push = |items: &[&OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
    let os = OsStr::new;
    let hostname = spec.container_name();
    push(&[
        os("--die-with-parent"),
        os("--new-session"),
        os("--hostname"),
        os(&hostname),
    ]);
    for path in HOST_SYSTEM {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(path).map_err(Error::io(format!("read link {path}")))?;
                push(&[os("--symlink"), target.as_os_str(), os(path)]);
            }
            Ok(meta) if meta.is_dir() => push(&[os("--ro-bind"), os(path), os(path)]),
            _ => {}
        }
    }
    push(&[
        os("--proc"),
        os("/proc"),
        os("--ro-bind"),
        os("/proc/sys"),
        os("/proc/sys"),
        os("--dev"),
        os("/dev"),
        os("--tmpfs"),
        os("/tmp"),
        os("--tmpfs"),
        os("/run"),
        os("--ro-bind"),
        spec.etc_dir.as_os_str(),
        os("/etc"),
    ]);
    push(&[
        os("--ro-bind"),
        spec.program.as_os_str(),
        os(mount::HIVE_BIN),
    ]);
    if let Some(engine) = &spec.engine_bin {
        push(&[os("--ro-bind"), engine.as_os_str(), os(mount::CLAUDE_BIN)]);
    }
    push(&[os("--bind"), spec.state_dir.as_os_str(), os(mount::STATE)]);
    push(&[os("--bind"), spec.shared_dir.as_os_str(), os(mount::SHARED)]);
    push(&[os("--bind"), spec.socket.as_os_str(), os(mount::SOCKET)]);
    push(&[
        os("--bind"),
        spec.egress_socket.as_os_str(),
        os(mount::EGRESS),
    ]);
    push(&[os("--bind"), spec.page_dir.as_os_str(), os(mount::PAGE_DIR)]);
    push(&[
        os("--ro-bind"),
        spec.control_dir.as_os_str(),
        os(mount::CONTROL),
    ]);
    for bind in &spec.binds {
        let flag = if bind.read_only {
            "--ro-bind"
        } else {
            "--bind"
        };
        push(&[os(flag), bind.host.as_os_str(), bind.container.as_os_str()]);
    }
    push(&[
        os("--chdir"),
        os(mount::STATE),
        os("--"),
        os(mount::HIVE_BIN),
    ]);
    args.extend(spec.args.iter().map(OsString::from));
    Ok(args)
}
