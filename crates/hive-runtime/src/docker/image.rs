//! The skeleton image of the docker backend: built locally `FROM scratch`
//! from an in-memory tar context (empty mount points plus the host's
//! top-level symlinks), labelled with the host layout it mirrors, rebuilt
//! when that layout changes; never pulled.

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

/// Ensures `image`; returns whether it is a skeleton (host system bound
/// in at run time).
pub(crate) async fn ensure(
    docker: &Docker,
    build: &tokio::sync::Mutex<()>,
    image: &str,
) -> Result<bool> {
    let ours = image.starts_with(BASE_REPOSITORY);
    let layout = host_layout();
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
    build_skeleton(docker, image, &layout).await?;
    if let Some(old) = replaced {
        // Untagged now; the engine refuses while containers still use it.
        let removed = docker.remove_image(&old, None::<RemoveImageOptions>, None);
        if let Err(e) = removed.await {
            tracing::debug!(image, "kept the replaced image {old}: {e}");
        }
    }
    Ok(true)
}

async fn build_skeleton(docker: &Docker, image: &str, layout: &str) -> Result<()> {
    let started = std::time::Instant::now();
    let context = skeleton_context().map_err(Error::io("build the image context"))?;
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
fn skeleton_context() -> std::io::Result<Vec<u8>> {
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
        header.set_mode(if matches!(path, "tmp" | "var/tmp") {
            0o1777
        } else {
            0o755
        });
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
    tar.into_inner()
}
