//! The host files core readies right before a container is created.
//!
//! Every backend binds the same files: the agent's socket, the egress
//! socket, its page dir (the one dir of core's it may write), the control
//! and etc dirs (core's, read-only), `/state`, `/shared` and config repos.
//! With an unprivileged agent user ([`agent_user`]) they
//! must also be usable by that uid: `/state` and the page dir are the
//! agent's, the sockets are its (mode 0660), `/shared` is
//! `root:`[`AGENT_GID`] mode 3770 (setgid, so agents share what they put
//! there; sticky, so none renames or removes another's files), read-only binds are world-readable, and the roots core owns are
//! searchable by others (bwrap runs as the agent's uid and must reach what
//! it binds). The walks here never follow a symlink, and skip a file with
//! more than one hard link (a link to a host file planted while agents
//! still ran as root): core never hands a host file to an agent.

use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::Path;

use anyhow::Context;
use hive_runtime::{AgentUser, ContainerSpec};

use crate::paths::{Paths, create_dir};

/// The gid every agent's program runs with; `/shared` belongs to it.
pub const AGENT_GID: u32 = 100_000;

/// The unprivileged host user an agent's program runs as: one uid per
/// agent, from its stored, unique and stable web port (the manager's 8000
/// gives uid 108000), and the common [`AGENT_GID`].
pub fn agent_user(port: u16) -> AgentUser {
    AgentUser {
        uid: 100_000 + u32::from(port),
        gid: AGENT_GID,
    }
}

/// Readies `spec`'s host files (see the module docs).
pub fn prepare(paths: &Paths, spec: &ContainerSpec) -> anyhow::Result<()> {
    create_dir(&spec.page_dir)?;
    for dir in [&spec.control_dir, &spec.etc_dir] {
        create_dir(dir)?;
        chmod(dir, 0o755)?;
    }
    // The link's dir, like the page dir: core's, the agent's to write in.
    let link_dir = match &spec.transport {
        hive_runtime::Transport::Tls(link) => {
            create_dir(&link.link_dir)?;
            Some(&link.link_dir)
        }
        hive_runtime::Transport::Unix => None,
    };
    let Some(user) = spec.user else {
        return Ok(());
    };
    for root in [&paths.state_dir, &paths.run_dir] {
        let mode = std::fs::metadata(root)
            .with_context(|| format!("stat {}", root.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            chmod(root, (mode & 0o7777) | 0o001)?;
        }
    }
    warn_unsearchable(&spec.program);
    if let Some(engine) = &spec.engine_bin {
        warn_unsearchable(engine);
        crate::engine::warn_unusable(engine);
    }

    let state = &spec.state_dir;
    let owner = std::fs::symlink_metadata(state)
        .with_context(|| format!("stat {}", state.display()))?
        .uid();
    if owner != user.uid {
        // First start as this user: the container is not running, the
        // state is all the agent's.
        tracing::info!(agent = %spec.name, uid = user.uid, "handing {} to the agent's user", state.display());
        in_parent(paths, state, |dir, name| {
            dir.chown_tree(name, user.uid, user.gid)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    for socket in [&spec.socket, &spec.egress_socket] {
        lchown(socket, Some(user.uid), Some(AGENT_GID))
            .with_context(|| format!("chown {}", socket.display()))?;
        if !std::fs::symlink_metadata(socket)?.file_type().is_symlink() {
            chmod(socket, 0o660)?;
        }
    }
    for dir in std::iter::once(&spec.page_dir).chain(link_dir) {
        lchown(dir, Some(user.uid), Some(AGENT_GID))
            .with_context(|| format!("chown {}", dir.display()))?;
        chmod(dir, 0o750)?;
    }
    lchown(&spec.shared_dir, Some(0), Some(AGENT_GID))
        .with_context(|| format!("chown {}", spec.shared_dir.display()))?;
    chmod(&spec.shared_dir, 0o3770)?;

    let proposed = paths.proposed_dir();
    for bind in &spec.binds {
        if bind.host == proposed {
            // The manager's tree of proposed repos: each repo is its own to
            // commit in; `proposed/` and `proposed/<name>/` stay core's, so
            // it can neither rename nor replace them.
            for entry in std::fs::read_dir(&proposed)
                .with_context(|| format!("read {}", proposed.display()))?
            {
                let entry = entry.with_context(|| format!("read {}", proposed.display()))?;
                let Some(name) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| hive_proto::AgentName::parse(n).ok())
                else {
                    continue;
                };
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    paths
                        .chown_proposed(&name, user.uid, user.gid)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        } else if bind.read_only && is_core_path(paths, &bind.host) {
            // Core's read-only trees (config repos): readable by the agent.
            // By fd: `proposed/<name>/config` is the manager's, and it may
            // swap a component for a link while this runs.
            in_parent(paths, &bind.host, |dir, name| dir.readable_tree(name))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    Ok(())
}

/// Runs `f` on `path`'s parent, opened by fd from the core root it lies
/// in, and its name: the tree walks of [`crate::safe_fs::Dir`] never follow
/// a link, even one swapped in while they run.
fn in_parent(
    paths: &Paths,
    path: &Path,
    f: impl FnOnce(&crate::safe_fs::Dir, &std::ffi::OsStr) -> crate::safe_fs::Result<()>,
) -> crate::safe_fs::Result<()> {
    let root = if path.starts_with(&paths.state_dir) {
        &paths.state_dir
    } else {
        &paths.run_dir
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    match crate::safe_fs::Dir::open(root, parent)? {
        Some(dir) => f(&dir, name),
        None => Ok(()),
    }
}

/// Whether `path` lies under one of core's roots (not an operator mount).
fn is_core_path(paths: &Paths, path: &Path) -> bool {
    path.starts_with(&paths.state_dir) || path.starts_with(&paths.run_dir)
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))
}

/// Warns when others cannot search a parent of the hive binary (bwrap,
/// run as the agent's uid, then cannot bind it).
fn warn_unsearchable(program: &Path) {
    for dir in program.ancestors().skip(1) {
        if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o001 == 0
        {
            tracing::warn!(
                "{} is not searchable by others: sandboxes running as an agent's uid cannot reach {}",
                dir.display(),
                program.display()
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_proto::AgentName;

    #[test]
    fn hands_the_state_to_the_agent_without_following_links() {
        if !nix::unistd::geteuid().is_root() {
            return eprintln!("skipping: needs root to chown");
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("s"), dir.path().join("r"));
        paths.create_roots().unwrap();
        let name = AgentName::parse("coder").unwrap();
        paths.create_agent_dirs(&name).unwrap();
        let state = paths.agent_state(&name);
        let outside = dir.path().join("host-file");
        std::fs::write(&outside, "host").unwrap();
        std::fs::create_dir(state.join("sub")).unwrap();
        std::fs::write(state.join("sub/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, state.join("link")).unwrap();
        std::fs::hard_link(&outside, state.join("hard")).unwrap();
        let socket = paths.agent_socket(&name);
        create_dir(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        // Stand-ins for the sockets core binds before any create.
        std::fs::write(paths.egress_socket(&name), "").unwrap();
        let user = agent_user(8100);
        let spec = ContainerSpec {
            name: name.clone(),
            program: "/bin/sh".into(),
            engine_bin: None,
            args: Vec::new(),
            env: Vec::new(),
            state_dir: state.clone(),
            shared_dir: paths.shared(),
            socket: socket.clone(),
            binds: Vec::new(),
            log_path: paths.agent_dir(&name).join("container.log"),
            image: None,
            egress_socket: paths.egress_socket(&name),
            page_dir: paths.page_dir(&name),
            control_dir: paths.control_dir(&name),
            etc_dir: paths.etc_dir(&name),
            user: Some(user),
            limits: hive_runtime::Limits::default(),
            placement: hive_runtime::Placement::default(),
            transport: hive_runtime::Transport::Unix,
        };
        prepare(&paths, &spec).unwrap();
        let uid = |p: &Path| std::fs::symlink_metadata(p).unwrap().uid();
        assert_eq!(uid(&state), 108_100);
        assert_eq!(uid(&state.join("sub/file")), 108_100);
        assert_eq!(uid(&state.join("link")), 108_100);
        assert_eq!(uid(&outside), 0, "followed a link or a hard link");
        assert_eq!(uid(&socket), 108_100);
        assert_eq!(uid(&spec.page_dir), 108_100);
        assert!(spec.egress_socket.exists());
        let shared = std::fs::metadata(paths.shared()).unwrap();
        assert_eq!(
            (shared.gid(), shared.permissions().mode() & 0o7777),
            (AGENT_GID, 0o3770)
        );
        let control = std::fs::metadata(&spec.control_dir).unwrap();
        assert_eq!(control.permissions().mode() & 0o777, 0o755);
    }
}

/// The manager owns `proposed/<name>/config`, which an agent binds
/// read-only: it may swap a dir there for a link to a host dir while core
/// makes the tree readable (a path walk followed it and chmodded the host's
/// files).
#[cfg(test)]
mod swapped_links {
    use super::*;
    use hive_proto::AgentName;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_link_swapped_in_during_the_walk_is_not_followed() {
        if !nix::unistd::geteuid().is_root() {
            return eprintln!("skipping: needs root to chown");
        }
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("s"), dir.path().join("r"));
        paths.create_roots().unwrap();
        let name = AgentName::parse("coder").unwrap();
        paths.create_agent_dirs(&name).unwrap();
        let config = paths.agent_config(&name);
        std::fs::create_dir_all(&config).unwrap();
        // The host's secret dir: root-owned, 0700 dir, 0600 file.
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("victim"), "secret").unwrap();
        std::fs::set_permissions(host.join("victim"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        const N: usize = 64;
        for i in 0..N {
            let d = config.join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("victim"), "").unwrap();
            // o+r missing: the walk adds it, keeping the rest (0o773 -> 0o777)
            std::fs::set_permissions(d.join("victim"), std::fs::Permissions::from_mode(0o773))
                .unwrap();
            std::os::unix::fs::symlink(&host, config.join(format!("l{i}"))).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..N {
                        let _ = nix::fcntl::renameat2(
                            nix::fcntl::AT_FDCWD,
                            &config.join(format!("d{i}")),
                            nix::fcntl::AT_FDCWD,
                            &config.join(format!("l{i}")),
                            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                        );
                    }
                }
            })
        };
        let socket = paths.agent_socket(&name);
        create_dir(socket.parent().unwrap()).unwrap();
        std::fs::write(&socket, "").unwrap();
        let spec = ContainerSpec {
            name: name.clone(),
            program: "/bin/sh".into(),
            args: Vec::new(),
            env: Vec::new(),
            state_dir: paths.agent_state(&name),
            shared_dir: paths.shared(),
            socket: socket.clone(),
            binds: vec![hive_runtime::Bind {
                host: config.clone(),
                container: "/agents/coder/config".into(),
                read_only: true,
            }],
            log_path: paths.agent_dir(&name).join("container.log"),
            image: None,
            egress_socket: paths.egress_socket(&name),
            page_dir: paths.page_dir(&name),
            control_dir: paths.control_dir(&name),
            etc_dir: paths.etc_dir(&name),
            user: Some(agent_user(8100)),
            limits: hive_runtime::Limits::default(),
            placement: hive_runtime::Placement::default(),
            transport: hive_runtime::Transport::Unix,
            engine_bin: None,
        };
        let mut won = None;
        for attempt in 0..200 {
            let _ = prepare(&paths, &spec);
            let mode = std::fs::metadata(host.join("victim"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            if mode != 0o600 {
                won = Some((attempt, mode));
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        let host_mode = std::fs::metadata(&host).unwrap().permissions().mode();
        assert_eq!(host_mode & 0o7777, 0o755);
        assert!(
            won.is_none(),
            "core chmodded a host file through a swapped link: {won:?}"
        );
    }
}
