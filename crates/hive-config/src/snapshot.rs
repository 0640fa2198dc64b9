//! A core-owned copy of the objects of a manager's proposed repo.
//!
//! The manager owns `proposed/<name>/config` and everything in it, and
//! core reads that repo as root. Opened in place, libgit2 would honour
//! whatever the manager wrote there: `objects/info/alternates` or
//! `commondir` naming any repo on the host (whose objects core would then
//! copy into the applied repo, which the manager reads), and a checked
//! file can be swapped for a link the moment after the check. So core
//! never opens that repo: it copies the loose objects and packs, file by
//! file, through directory descriptors opened without following links
//! (`openat` semantics through `/proc/self/fd`), into a fresh bare repo of
//! its own, and reads only that. `info/` is never copied; neither is
//! anything that is not a regular file; the copy is capped in size.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use git2::Repository;

use crate::error::{Error, IoContext, Result};

/// The most bytes of objects core copies out of a proposed repo.
pub const MAX_BYTES: u64 = 64 << 20;

/// A bare repo core made, holding a copy of the proposed repo's objects;
/// removed on drop.
pub struct Snapshot {
    pub repo: Repository,
    _dir: tempfile::TempDir,
}

/// Copies the objects of the repo at `proposed` (`<root>/<rel…>` where
/// `root` is trusted and every component below it is opened without
/// following links) into a fresh bare repo under `scratch`. `None` when the
/// proposed repo does not exist or has no objects dir.
pub fn take(root: &Path, rel: &Path, scratch: &Path) -> Result<Option<Snapshot>> {
    let Some((git, mut shown)) = open_git_dir(root, rel)? else {
        return Ok(None);
    };
    shown.push("objects");
    let dir = match open_dir(&child(&git, "objects".as_ref())) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refusal(e, &shown)),
    };
    std::fs::create_dir_all(scratch).io(|| format!("create {}", scratch.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("proposed-")
        .tempdir_in(scratch)
        .io(|| format!("create a snapshot dir in {}", scratch.display()))?;
    let repo = Repository::init_bare(tmp.path()).map_err(|e| Error::Git {
        context: format!("create snapshot repo in {}", tmp.path().display()),
        message: e.message().to_owned(),
    })?;
    let objects = tmp.path().join("objects");
    let mut budget = MAX_BYTES;
    for entry in list(&dir).io(|| format!("read {}", shown.display()))? {
        let Some(name) = entry.to_str() else { continue };
        let is_fanout = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !(is_fanout || name == "pack") {
            continue; // `info/` (alternates) above all: never copied
        }
        let Ok(sub) = open_dir(&child(&dir, name.as_ref())) else {
            continue; // a link or a file where a dir belongs: skipped
        };
        let target = objects.join(name);
        std::fs::create_dir_all(&target).io(|| format!("create {}", target.display()))?;
        for file in list(&sub).io(|| format!("read {}/{name}", shown.display()))? {
            let Some(file_name) = file.to_str() else {
                continue;
            };
            let wanted = if is_fanout {
                file_name.len() == 38 && file_name.bytes().all(|b| b.is_ascii_hexdigit())
            } else {
                file_name.ends_with(".pack") || file_name.ends_with(".idx")
            };
            if wanted {
                copy_file(
                    &child(&sub, file.as_ref()),
                    &target.join(file_name),
                    &mut budget,
                )?;
            }
        }
    }
    Ok(Some(Snapshot { repo, _dir: tmp }))
}

/// The commit `HEAD` of the repo at `<root>/<rel…>` names, read the way
/// [`take`] reads (no link followed, nothing opened by libgit2): a
/// detached sha, or a branch under `refs/heads/`, loose or packed. `None`
/// when there is no repo, or its `HEAD` names no commit.
pub fn head(root: &Path, rel: &Path) -> Result<Option<git2::Oid>> {
    let Some((git, _)) = open_git_dir(root, rel)? else {
        return Ok(None);
    };
    let Some(head) = read_small(&child(&git, "HEAD".as_ref())) else {
        return Ok(None);
    };
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref: ") else {
        return Ok(git2::Oid::from_str(head).ok());
    };
    let Some(branch) = name.strip_prefix("refs/heads/") else {
        return Ok(None);
    };
    // git's own rule (no `..`, no component starting with `.`, no
    // control characters), checked by libgit2 without opening anything.
    if !git2::Reference::is_valid_name(name) {
        return Ok(None);
    }
    let parts: Vec<&str> = branch.split('/').collect();
    let (leaf, dirs) = parts.split_last().unwrap_or((&"", &[]));
    let loose = ["refs", "heads"]
        .iter()
        .chain(dirs)
        .try_fold(
            git.try_clone().io(|| "duplicate a descriptor".to_owned())?,
            |dir, part| open_dir(&child(&dir, part.as_ref())).ok(),
        )
        .and_then(|dir| read_small(&child(&dir, leaf.as_ref())));
    if let Some(oid) = loose.and_then(|text| git2::Oid::from_str(text.trim()).ok()) {
        return Ok(Some(oid));
    }
    let packed = read_small(&child(&git, "packed-refs".as_ref())).unwrap_or_default();
    Ok(packed.lines().find_map(|line| {
        let (sha, refname) = line.split_once(' ')?;
        (refname == name)
            .then(|| git2::Oid::from_str(sha).ok())
            .flatten()
    }))
}

/// `<root>/<rel…>/.git`, every component below `root` opened without
/// following links, with the path to name in messages; `None` when some
/// component does not exist.
fn open_git_dir(root: &Path, rel: &Path) -> Result<Option<(File, PathBuf)>> {
    let mut dir = open_dir(root).io(|| format!("open {}", root.display()))?;
    let mut shown = root.to_path_buf();
    for component in rel
        .components()
        .chain([std::path::Component::Normal(".git".as_ref())])
    {
        shown.push(component);
        match open_dir(&child(&dir, component.as_os_str())) {
            Ok(next) => dir = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(refusal(e, &shown)),
        }
    }
    Ok(Some((dir, shown)))
}

/// An error opening `shown`, naming a planted link as such.
fn refusal(e: std::io::Error, shown: &Path) -> Error {
    if is_link_refusal(&e) {
        return Error::Io {
            context: format!(
                "refusing {}: a symbolic link or non-directory planted in the manager's repo",
                shown.display()
            ),
            source: e,
        };
    }
    Error::Io {
        context: format!("open {}", shown.display()),
        source: e,
    }
}

/// A small regular file's text (a ref, `HEAD`, `packed-refs`), opened
/// without following a link; `None` when it is missing, not a regular
/// file, not text or over 1 MiB.
fn read_small(path: &Path) -> Option<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `name` beneath the directory `dir` holds, as a path the kernel
/// resolves from that descriptor.
fn child(dir: &File, name: &std::ffi::OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name)
}

fn open_dir(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(path)
}

fn is_link_refusal(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ELOOP) | Some(nix::libc::ENOTDIR)
    )
}

fn list(dir: &File) -> std::io::Result<Vec<std::ffi::OsString>> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string());
    std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

/// Copies one regular file (opened without following a link), charging
/// its size to `budget`.
fn copy_file(from: &Path, to: &Path, budget: &mut u64) -> Result<()> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(from)
    {
        Ok(file) => file,
        Err(_) => return Ok(()), // a link or something unopenable: skipped
    };
    let meta = file.metadata().io(|| format!("stat {}", to.display()))?;
    if !meta.is_file() {
        return Ok(());
    }
    if meta.len() > *budget {
        return Err(Error::Io {
            context: format!(
                "the proposed repo's objects are over {} MiB: repack or prune it",
                MAX_BYTES >> 20
            ),
            source: std::io::ErrorKind::FileTooLarge.into(),
        });
    }
    *budget -= meta.len();
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(meta.len())
        .read_to_end(&mut bytes)
        .io(|| format!("read {}", to.display()))?;
    std::fs::write(to, bytes).io(|| format!("write {}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_in(repo: &Repository, text: &str) -> git2::Oid {
        let blob = repo.blob(text.as_bytes()).unwrap();
        let mut tree = repo.treebuilder(None).unwrap();
        tree.insert("agent.toml", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        repo.commit(None, &sig, &sig, "c", &tree, &[]).unwrap()
    }

    #[test]
    fn alternates_and_links_are_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A host repo the manager must not reach through alternates.
        let host = Repository::init(root.join("host")).unwrap();
        let secret = commit_in(&host, "TOP-SECRET\n");
        let proposed = Repository::init(root.join("proposed/coder/config")).unwrap();
        let own = commit_in(&proposed, "model = \"sonnet\"\n");
        let objects = root.join("proposed/coder/config/.git/objects");
        std::fs::create_dir_all(objects.join("info")).unwrap();
        std::fs::write(
            objects.join("info/alternates"),
            format!("{}\n", root.join("host/.git/objects").display()),
        )
        .unwrap();
        // And a fan-out dir that is a link to the host repo's.
        let secret_hex = secret.to_string();
        std::os::unix::fs::symlink(
            root.join("host/.git/objects").join(&secret_hex[..2]),
            objects.join("zz"),
        )
        .unwrap();
        let snap = take(root, Path::new("proposed/coder/config"), &root.join("tmp"))
            .unwrap()
            .unwrap();
        assert!(snap.repo.find_commit(own).is_ok());
        assert!(snap.repo.find_commit(secret).is_err());
    }

    #[test]
    fn a_linked_repo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        Repository::init(root.join("host")).unwrap();
        std::fs::create_dir_all(root.join("proposed/coder")).unwrap();
        std::os::unix::fs::symlink(root.join("host"), root.join("proposed/coder/config")).unwrap();
        let err = take(root, Path::new("proposed/coder/config"), &root.join("tmp"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("refusing"), "{err}");
    }
}
