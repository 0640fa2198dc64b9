//! The skeleton image of the docker backend: built locally `FROM scratch`
//! from an in-memory tar context (empty mount points plus the host's
//! top-level symlinks), labelled with the host layout it mirrors, rebuilt
//! when that layout changes; never pulled.
//!
//! The swarm backend's flavour ([`Flavour::Swarm`]) also carries what a
//! task on any node cannot get from core's host: the part of the curated
//! `/etc` every agent shares ([`crate::etc::write_common`], the agent's own
//! `passwd` and `group` come as Swarm configs), and `/state` and
//! `/shared` mode 1777, which a new volume mounted there takes (the
//! volume is made by the node, owned by root; sticky, so on `/shared` no
//! agent removes another's files). Its label adds a hash of the context,
//! so a change of the host's `/etc` rebuilds it.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, RemoveImageOptions};
use futures_util::StreamExt;

use super::{BASE_IMAGE, BASE_LABEL, BASE_REPOSITORY, engine, status};
use crate::{Error, Result};

/// Top-level host paths that are either bound read-only (directories) or
/// recreated as symlinks in the skeleton (symlinks, e.g. merged `/usr`).
/// Not `/sbin`: the engine mounts its init at `/sbin/docker-init`, which
/// needs a writable mount point, so the skeleton's `/sbin` is an empty
/// directory (`/usr/sbin` stays on `PATH`).
pub(super) const HOST_ROOTS: &[&str] = &["bin", "lib", "lib32", "lib64", "libx32"];

/// Bumped when the skeleton changes, so that older builds are replaced.
const SKELETON_VERSION: &str = "2";

/// Host directories always bound read-only into a skeleton container.
pub(super) const HOST_DIRS: &[&str] = &["usr"];

/// Empty directories of the skeleton: mount points and a few expected dirs.
const SKELETON_DIRS: &[&str] = &[
    "usr", "etc", "sbin", "state", "shared", "agents", "applied", "tmp", "run", "proc", "sys",
    "dev", "var", "var/tmp", "root",
];

/// Which backend a skeleton is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// Mount points only: docker binds `/etc`, `/state` and `/shared`.
    Docker,
    /// With the shared curated `/etc`, and `/state` and `/shared` open to
    /// the volumes mounted there (see the module docs).
    Swarm,
}

/// Ensures `image`; returns whether it is a skeleton (host system bound
/// in at run time).
pub(crate) async fn ensure(
    docker: &Docker,
    build: &tokio::sync::Mutex<()>,
    image: &str,
    flavour: Flavour,
) -> Result<bool> {
    let ours = image.starts_with(BASE_REPOSITORY);
    let (layout, context) = if ours {
        let context = tokio::task::spawn_blocking(move || skeleton_context(flavour))
            .await
            .map_err(|e| Error::Failed(format!("build the image context: {e}")))?
            .map_err(Error::io("build the image context"))?;
        let layout = match flavour {
            Flavour::Docker => host_layout(),
            Flavour::Swarm => format!("{} swarm={:016x}", host_layout(), crate::fnv1a(&context)),
        };
        (layout, context)
    } else {
        (host_layout(), Vec::new())
    };
    let _guard = build.lock().await;
    let mut replaced = None;
    match docker.inspect_image(image).await {
        Ok(found) => {
            replaced = found.id;
            let label = found
                .config
                .and_then(|c| c.labels)
                .and_then(|mut labels| labels.remove(BASE_LABEL));
            match label {
                Some(built_for) if ours && built_for != layout => {
                    tracing::info!(image, "rebuilding: built for another host layout");
                }
                Some(_) => return Ok(true),
                None if ours => {
                    tracing::info!(image, "rebuilding: not a hyperhive skeleton");
                }
                None => return Ok(false),
            }
        }
        Err(e) if status(&e) == Some(404) => {
            if !ours {
                return Err(Error::Failed(format!(
                    "image {image} is not on the docker engine and hyperhive does not pull \
                     images: build or load it first, or use {BASE_IMAGE}"
                )));
            }
        }
        Err(e) => return Err(engine(format!("inspect image {image}"))(e)),
    }
    build_skeleton(docker, image, &layout, context).await?;
    if let Some(old) = replaced {
        // Untagged now; the engine refuses while containers still use it.
        let removed = docker.remove_image(&old, None::<RemoveImageOptions>, None);
        if let Err(e) = removed.await {
            tracing::debug!(image, "kept the replaced image {old}: {e}");
        }
    }
    Ok(true)
}

async fn build_skeleton(
    docker: &Docker,
    image: &str,
    layout: &str,
    context: Vec<u8>,
) -> Result<()> {
    let started = std::time::Instant::now();
    let labels = HashMap::from([(BASE_LABEL, layout)]);
    let options = BuildImageOptionsBuilder::default()
        .t(image)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = progress.next().await {
        let step = step.map_err(engine(format!("build image {image}")))?;
        if let Some(line) = step.stream.as_deref().map(str::trim)
            && !line.is_empty()
        {
            tracing::debug!(image, "{line}");
        }
    }
    tracing::info!(image, elapsed = ?started.elapsed(), "built the base image");
    Ok(())
}

/// The skeleton version and the host's top-level layout it mirrors:
/// `v1 bin=usr/bin lib/ ...` (`=` a symlink, `/` a directory).
fn host_layout() -> String {
    let mut parts = vec![format!("v{SKELETON_VERSION}")];
    for dir in HOST_ROOTS {
        let host = Path::new("/").join(dir);
        if let Ok(target) = std::fs::read_link(&host) {
            parts.push(format!("{dir}={}", target.display()));
        } else if host.is_dir() {
            parts.push(format!("{dir}/"));
        }
    }
    parts.join(" ")
}

/// The build context of the skeleton: a Dockerfile copying `rootfs/`.
/// Every entry has mtime 0, so the same inputs give the same bytes.
fn skeleton_context(flavour: Flavour) -> std::io::Result<Vec<u8>> {
    use tar::{EntryType, Header};
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = b"FROM scratch\nCOPY rootfs/ /\n";
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(dockerfile.len() as u64);
    tar.append_data(&mut header, "Dockerfile", &dockerfile[..])?;

    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut header = Header::new_gnu();
        header.set_entry_type(EntryType::Directory);
        // The engine copies an image dir's mode onto the tmpfs mounted
        // there: the agent's uid must be able to write its temp files.
        let open = match flavour {
            Flavour::Docker => matches!(path, "tmp" | "var/tmp"),
            Flavour::Swarm => matches!(path, "tmp" | "var/tmp" | "state" | "shared"),
        };
        header.set_mode(if open { 0o1777 } else { 0o755 });
        header.set_size(0);
        tar.append_data(&mut header, format!("rootfs/{path}/"), std::io::empty())
    };
    dir(&mut tar, "")?;
    for path in SKELETON_DIRS {
        dir(&mut tar, path)?;
    }
    for name in HOST_ROOTS {
        let host = Path::new("/").join(name);
        if let Ok(target) = std::fs::read_link(&host) {
            let mut header = Header::new_gnu();
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, format!("rootfs/{name}"), target)?;
        } else if host.is_dir() {
            dir(&mut tar, name)?;
        }
    }
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    tar.append_link(&mut header, "rootfs/var/run", "../run")?;
    if flavour == Flavour::Swarm {
        append_common_etc(&mut tar)?;
    }
    tar.into_inner()
}

/// The shared part of the curated `/etc` under `rootfs/etc/`, owned by
/// root: written to a fresh private dir, walked without following links,
/// in name order, then removed.
fn append_common_etc(tar: &mut tar::Builder<Vec<u8>>) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("hyperhive-etc-{}-{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let appended = crate::etc::write_common(&dir, Path::new("/etc"))
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|()| append_tree(tar, &dir, Path::new("rootfs/etc")));
    let removed = std::fs::remove_dir_all(&dir);
    appended.and(removed)
}

fn append_tree(tar: &mut tar::Builder<Vec<u8>>, from: &Path, to: &Path) -> std::io::Result<()> {
    use tar::{EntryType, Header};
    let mut entries = std::fs::read_dir(from)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let path = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        if kind.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            tar.append_link(&mut header, &target, std::fs::read_link(&path)?)?;
        } else if kind.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            tar.append_data(&mut header, &target, std::io::empty())?;
            append_tree(tar, &path, &target)?;
        } else if kind.is_file() {
            let bytes = std::fs::read(&path)?;
            header.set_entry_type(EntryType::Regular);
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, &target, bytes.as_slice())?;
        }
    }
    Ok(())
}
