//! Filesystem work under trees an agent or the manager can write, without
//! ever following a link planted there.
//!
//! Agent-writable trees: every agent's `/state` (`Paths::agent_state`), its
//! page dir (`Paths::page_dir`), `/shared`, and the manager's `/agents`
//! (`Paths::proposed_dir`, where `proposed/<name>/config` is the manager's).
//! A hive upgraded from the old layout also has `agents/<name>/` entries the
//! manager could write then; `Paths::migrate_layout` sweeps those.
//!
//! Everything here starts from a trusted root (the state dir the operator
//! configured) and walks each component below it from a directory fd with
//! `O_NOFOLLOW | O_DIRECTORY`: a symbolic link on the way is refused, never
//! followed nor replaced. Files are written under a fresh name and renamed
//! over the target, so a planted hard link is replaced, never written
//! through. Deletes unlink names (a link, never its target); size walks
//! never leave the tree.
//!
//! What makes `proposed/` race-free is ownership: `proposed/` and
//! `proposed/<name>/` are core's (0755), so a manager running as its own
//! uid cannot replace a component between core's check and libgit2's use
//! of the path. While the manager still runs as root these checks refuse
//! what was planted before, and narrow the rest to a race.

use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hive_proto::AgentName;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, unlinkat};

/// A refusal or failure of a no-follow operation.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A component on the way is a symbolic link: someone planted it.
    #[error(
        "refusing {}: {component} is a symbolic link planted in an agent-writable tree",
        path.display()
    )]
    Planted { path: PathBuf, component: String },
    /// A component on the way is not a directory.
    #[error("refusing {}: {component} is not a directory", path.display())]
    NotADirectory { path: PathBuf, component: String },
    /// The path is not below the root it must stay in.
    #[error("refusing {}: not a plain path below {}", path.display(), root.display())]
    Outside { path: PathBuf, root: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, FsError>;

fn io(context: impl FnOnce() -> String) -> impl FnOnce(Errno) -> FsError {
    move |errno| FsError::Io {
        context: context(),
        source: std::io::Error::from(errno),
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// A directory held open by fd; every operation is relative to it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens `path`, which must lie below the trusted `root`, component by
    /// component without following links. `None` when a component is
    /// missing.
    pub fn open(root: &Path, path: &Path) -> Result<Option<Dir>> {
        let mut dir = Self::root(root)?;
        for name in components(root, path)? {
            match dir.child(&name)? {
                Some(next) => dir = next,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// Like [`Dir::open`], creating missing components with `mode`.
    pub fn create(root: &Path, path: &Path, mode: u32) -> Result<Dir> {
        let mut dir = Self::root(root)?;
        for name in components(root, path)? {
            dir = dir.create_child(&name, mode)?;
        }
        Ok(dir)
    }

    /// The trusted root itself (links in it are the operator's choice).
    fn root(root: &Path) -> Result<Dir> {
        let fd = openat(
            AT_FDCWD,
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io(|| format!("open {}", root.display())))?;
        Ok(Dir {
            fd,
            path: root.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// What `name` is, without following it; `None` when absent.
    pub fn kind(&self, name: &OsStr) -> Result<Option<FileStat>> {
        match fstatat(self.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io(|| format!("stat {}", self.path.join(name).display()))(e)),
        }
    }

    /// The subdirectory `name`, refusing a link; `None` when absent.
    pub fn child(&self, name: &OsStr) -> Result<Option<Dir>> {
        let path = self.path.join(name);
        match openat(self.fd(), name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir { fd, path })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                let component = name.to_string_lossy().into_owned();
                match self.kind(name)? {
                    Some(stat) if is(&stat, SFlag::S_IFLNK) => {
                        Err(FsError::Planted { path, component })
                    }
                    Some(_) => Err(FsError::NotADirectory { path, component }),
                    None => Err(io(|| format!("open {}", path.display()))(e)),
                }
            }
            Err(e) => Err(io(|| format!("open {}", path.display()))(e)),
        }
    }

    /// The subdirectory `name`, made with `mode` if absent (by `mkdirat` on
    /// the fd held, so nothing can redirect it).
    pub fn create_child(&self, name: &OsStr, mode: u32) -> Result<Dir> {
        match mkdirat(self.fd(), name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(io(|| format!("create {}", self.path.join(name).display()))(
                    e,
                ));
            }
        }
        self.child(name)?.ok_or_else(|| FsError::Io {
            context: format!("open {}", self.path.join(name).display()),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    /// Sets this directory's mode (umask does not apply).
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        fchmod(self.fd(), Mode::from_bits_truncate(mode))
            .map_err(io(|| format!("chmod {}", self.path.display())))
    }

    /// Makes this directory owned by core's own user, when core is root.
    pub fn own(&self) -> Result<()> {
        let stat = fstat(self.fd()).map_err(io(|| format!("stat {}", self.path.display())))?;
        let uid = Uid::effective();
        if !uid.is_root() || (stat.st_uid == 0 && stat.st_gid == 0) {
            return Ok(());
        }
        fchown(self.fd(), Some(uid), Some(Gid::from_raw(0)))
            .map_err(io(|| format!("chown {}", self.path.display())))
    }

    /// Writes `bytes` to `name` (mode 0644): a fresh file renamed over the
    /// target, so a link planted at `name` is replaced, never written
    /// through.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_file_as(name, bytes, 0o644, None)
    }

    /// [`Dir::write_file`] with `mode`, and owned by `owner` (uid, gid)
    /// before it takes the name: a secret readable only by its owner.
    pub fn write_file_as(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.path.join(name);
        let fd = openat(
            self.fd(),
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(io(|| format!("write {}", path.display())))?;
        let file = std::fs::File::from(fd);
        let written =
            (&file)
                .write_all(bytes)
                .map_err(|source| FsError::Io {
                    context: format!("write {}", path.display()),
                    source,
                })
                .and_then(|()| match owner {
                    Some((uid, gid)) => std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                        .map_err(|source| FsError::Io {
                            context: format!("chown {}", path.display()),
                            source,
                        }),
                    None => Ok(()),
                })
                .and_then(|()| {
                    renameat(self.fd(), tmp.as_str(), self.fd(), name)
                        .map_err(io(|| format!("write {}", path.display())))
                });
        if written.is_err() {
            let _ = unlinkat(self.fd(), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        written
    }

    /// Creates `name` new (mode `mode`), refusing any entry already there:
    /// a planted link is never followed.
    pub fn create_new(&self, name: &str, mode: u32) -> Result<std::fs::File> {
        openat(
            self.fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map(std::fs::File::from)
        .map_err(io(|| format!("create {}", self.path.join(name).display())))
    }

    /// Opens `name` to read if it is a regular file with no other hard
    /// link (one could be a host file): `None` when absent, a symbolic
    /// link, or anything else.
    pub fn open_own_file(&self, name: &str) -> Result<Option<(std::fs::File, FileStat)>> {
        let Some((fd, stat)) = self.open_entry(OsStr::new(name))? else {
            return Ok(None);
        };
        if !is(&stat, SFlag::S_IFREG) || stat.st_nlink > 1 {
            return Ok(None);
        }
        // Opened non-blocking (no fifo may stall it); a regular file reads
        // the same without.
        nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(io(|| format!("open {}", self.path.join(name).display())))?;
        Ok(Some((std::fs::File::from(fd), stat)))
    }

    /// Renames `from` over `to`, both in this directory (a link at `to` is
    /// replaced, never followed).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        renameat(self.fd(), from, self.fd(), to)
            .map_err(io(|| format!("rename to {}", self.path.join(to).display())))
    }

    /// Makes `to` a second hard link of `from`, both in this directory; a
    /// link at `from` is never followed.
    pub fn hard_link(&self, from: &str, to: &str) -> Result<()> {
        nix::unistd::linkat(self.fd(), from, self.fd(), to, AtFlags::empty())
            .map_err(io(|| format!("link {}", self.path.join(to).display())))
    }

    /// Bytes free for an unprivileged writer on this directory's
    /// filesystem.
    pub fn free_bytes(&self) -> Result<u64> {
        let stat = nix::sys::statvfs::fstatvfs(self.fd())
            .map_err(io(|| format!("statvfs {}", self.path.display())))?;
        #[allow(clippy::useless_conversion)]
        let free =
            u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size()));
        Ok(free)
    }

    /// Unlinks `name` (a link itself, never its target); absent is fine.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        match unlinkat(self.fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io(|| format!("remove {}", self.path.join(name).display()))(
                e,
            )),
        }
    }

    /// Removes `name` and everything below it; a link at `name` is
    /// unlinked, not followed. Absent is fine.
    pub fn remove_tree(&self, name: &OsStr) -> Result<()> {
        let path = self.path.join(name);
        let Some(stat) = self.kind(name)? else {
            return Ok(());
        };
        if !is(&stat, SFlag::S_IFDIR) {
            return match unlinkat(self.fd(), name, UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(io(|| format!("remove {}", path.display()))(e)),
            };
        }
        // std's remove_dir_all opens every level with O_NOFOLLOW and unlinks
        // links as names (CVE-2022-21658 fixed in 1.58.1); reaching it
        // through the fd held pins the parent chain checked above.
        let mut pinned = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        pinned.push(name);
        match std::fs::remove_dir_all(&pinned) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(FsError::Io {
                context: format!("remove {}", path.display()),
                source,
            }),
        }
    }

    /// Hands `name` and everything below it to `uid`:`gid`, without
    /// following links. Regular files with more than one link are left as
    /// they are (a hard link may be a host file) and logged.
    pub fn chown_tree(&self, name: &OsStr, uid: u32, gid: u32) -> Result<()> {
        let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
        let Some(stat) = self.kind(name)? else {
            return Ok(());
        };
        if !is(&stat, SFlag::S_IFDIR) {
            return self.chown_entry(name, &stat, uid, gid);
        }
        let Some(top) = self.child(name)? else {
            return Ok(());
        };
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            fchown(dir.fd(), Some(uid), Some(gid))
                .map_err(io(|| format!("chown {}", dir.path.display())))?;
            for entry in dir.entries()? {
                let Some(stat) = dir.kind(&entry)? else {
                    continue;
                };
                if is(&stat, SFlag::S_IFDIR) {
                    if let Some(sub) = dir.child(&entry)? {
                        stack.push(sub);
                    }
                } else {
                    dir.chown_entry(&entry, &stat, uid, gid)?;
                }
            }
        }
        Ok(())
    }

    /// Makes `name` and everything below it readable by others (dirs
    /// gain `o+rx`, regular files `o+r`), by fd: a link is never followed,
    /// so swapping a component for a link mid-walk changes nothing outside
    /// the tree; hard-linked files are left as they are.
    pub fn readable_tree(&self, name: &OsStr) -> Result<()> {
        let Some(top) = self.child(name)? else {
            return Ok(());
        };
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            let stat = fstat(dir.fd()).map_err(io(|| format!("stat {}", dir.path.display())))?;
            if stat.st_mode & 0o005 != 0o005 {
                fchmod(
                    dir.fd(),
                    Mode::from_bits_truncate((stat.st_mode & 0o7777) | 0o005),
                )
                .map_err(io(|| format!("chmod {}", dir.path.display())))?;
            }
            for entry in dir.entries()? {
                match dir.kind(&entry)? {
                    Some(stat) if is(&stat, SFlag::S_IFDIR) => {
                        if let Ok(Some(sub)) = dir.child(&entry) {
                            stack.push(sub);
                        }
                    }
                    Some(stat) if is(&stat, SFlag::S_IFREG) => dir.readable_file(&entry)?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Opens `name` without following a link (nor blocking on a fifo) and
    /// stats the very inode opened; `None` if it is gone or a link.
    fn open_entry(&self, name: &OsStr) -> Result<Option<(OwnedFd, FileStat)>> {
        let path = self.path.join(name);
        let fd = match openat(
            self.fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(io(|| format!("open {}", path.display()))(e)),
        };
        let stat = fstat(fd.as_fd()).map_err(io(|| format!("stat {}", path.display())))?;
        Ok(Some((fd, stat)))
    }

    fn readable_file(&self, name: &OsStr) -> Result<()> {
        let path = self.path.join(name);
        let Some((fd, stat)) = self.open_entry(name)? else {
            return Ok(());
        };
        if !is(&stat, SFlag::S_IFREG) || stat.st_nlink > 1 || stat.st_mode & 0o004 != 0 {
            return Ok(());
        }
        fchmod(
            fd.as_fd(),
            Mode::from_bits_truncate((stat.st_mode & 0o7777) | 0o004),
        )
        .map_err(io(|| format!("chmod {}", path.display())))
    }

    fn chown_entry(&self, name: &OsStr, stat: &FileStat, uid: Uid, gid: Gid) -> Result<()> {
        let path = self.path.join(name);
        if is(stat, SFlag::S_IFLNK) {
            // The link itself; its target is untouched.
            return fchownat(
                self.fd(),
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io(|| format!("chown {}", path.display())));
        }
        if !is(stat, SFlag::S_IFREG) {
            return Ok(());
        }
        // Open, then check and chown the very inode opened.
        let Some((fd, stat)) = self.open_entry(name)? else {
            return Ok(());
        };
        if !is(&stat, SFlag::S_IFREG) {
            return Ok(());
        }
        if stat.st_nlink > 1 {
            tracing::warn!(path = %path.display(), "not chowned: a hard-linked file");
            return Ok(());
        }
        fchown(fd.as_fd(), Some(uid), Some(gid)).map_err(io(|| format!("chown {}", path.display())))
    }

    /// The names in this directory (without `.` and `..`).
    pub fn entries(&self) -> Result<Vec<OsString>> {
        let fd = openat(self.fd(), ".", DIR_FLAGS, Mode::empty())
            .map_err(io(|| format!("read {}", self.path.display())))?;
        let mut dir =
            nix::dir::Dir::from_fd(fd).map_err(io(|| format!("read {}", self.path.display())))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(io(|| format!("read {}", self.path.display())))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(names)
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether `stat` is of file type `kind` (`S_IFDIR`, `S_IFLNK`, …).
pub fn is(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == kind
}

/// The names of `path` below `root`; only plain components.
fn components(root: &Path, path: &Path) -> Result<Vec<OsString>> {
    let outside = || FsError::Outside {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    };
    let rel = path.strip_prefix(root).map_err(|_| outside())?;
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name.to_owned()),
            _ => Err(outside()),
        })
        .collect()
}

/// How deep [`usage`] walks; a deeper tree is not counted beyond it.
const MAX_DEPTH: usize = 64;

/// Total size of the regular files below `path` and the newest
/// modification time, walking by fd: links are neither followed nor
/// counted; a hard-linked file counts its size (it is a real file). A
/// missing or planted `path` is `(0, 0)`.
pub fn usage(root: &Path, path: &Path) -> (u64, i64) {
    let (mut bytes, mut newest) = (0u64, 0i64);
    let Ok(Some(top)) = Dir::open(root, path) else {
        return (0, 0);
    };
    let mut stack = vec![(top, 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = dir.entries() else { continue };
        for entry in entries {
            let Ok(Some(stat)) = dir.kind(&entry) else {
                continue;
            };
            newest = newest.max(stat.st_mtime);
            if is(&stat, SFlag::S_IFREG) {
                bytes = bytes.saturating_add(u64::try_from(stat.st_size).unwrap_or(0));
            } else if is(&stat, SFlag::S_IFDIR)
                && depth < MAX_DEPTH
                && let Ok(Some(sub)) = dir.child(&entry)
            {
                stack.push((sub, depth + 1));
            }
        }
    }
    (bytes, newest)
}

/// Mode of `proposed/` and `proposed/<name>/`: core's, readable by all, so
/// the manager can neither rename nor replace them.
pub const PROPOSED_DIR_MODE: u32 = 0o755;

/// Makes `proposed/<name>/` a real directory core owns (mode
/// [`PROPOSED_DIR_MODE`]) and checks that `config` below it, and its
/// `.git` and `.git/objects` where present, are no links: what core opens
/// with libgit2 next is the manager's repo, not a host directory.
/// `proposed` is `Paths::proposed_dir`, below `root` (`Paths::state_dir`).
pub fn prepare_proposed(root: &Path, proposed: &Path, name: &AgentName) -> Result<()> {
    let proposed = proposed_dir(root, proposed)?;
    let dir = proposed.create_child(OsStr::new(name.as_str()), PROPOSED_DIR_MODE)?;
    dir.own()?;
    dir.set_mode(PROPOSED_DIR_MODE)?;
    let Some(config) = dir.child(OsStr::new("config"))? else {
        return Ok(());
    };
    if let Some(git) = config.child(OsStr::new(".git"))? {
        git.child(OsStr::new("objects"))?;
    }
    Ok(())
}

fn proposed_dir(root: &Path, proposed: &Path) -> Result<Dir> {
    let proposed = Dir::create(root, proposed, PROPOSED_DIR_MODE)?;
    proposed.own()?;
    proposed.set_mode(PROPOSED_DIR_MODE)?;
    Ok(proposed)
}

/// Gives `name`'s proposed config repo (`proposed/<name>/config`) to the
/// manager's `uid`:`gid` so it can commit, keeping `proposed/` and
/// `proposed/<name>/` core's (0755). Call it once the manager runs as its
/// own uid, after the repo exists (`Configs::ensure`).
pub fn chown_proposed(
    root: &Path,
    proposed: &Path,
    name: &AgentName,
    (uid, gid): (u32, u32),
) -> Result<()> {
    prepare_proposed(root, proposed, name)?;
    let dir = proposed_dir(root, proposed)?
        .child(OsStr::new(name.as_str()))?
        .ok_or_else(|| FsError::Io {
            context: format!("open {}", proposed.join(name.as_str()).display()),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
    dir.chown_tree(OsStr::new("config"), uid, gid)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::paths::Paths;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let host = tmp.path().join("host");
        std::fs::create_dir_all(root.join("tree")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        (tmp, root, host)
    }

    #[test]
    fn a_planted_directory_link_is_refused_by_name() {
        let (_tmp, root, host) = setup();
        std::os::unix::fs::symlink(&host, root.join("tree/sub")).unwrap();
        let err = Dir::create(&root, &root.join("tree/sub/deeper"), 0o751).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing {}: sub is a symbolic link planted in an agent-writable tree",
                root.join("tree/sub").display()
            )
        );
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0);
        assert!(matches!(
            Dir::open(&root, &root.join("tree/sub")),
            Err(FsError::Planted { .. })
        ));
        assert!(matches!(
            Dir::open(&root, &root.join("tree/../x")),
            Err(FsError::Outside { .. })
        ));
    }

    #[test]
    fn writes_replace_planted_links_and_never_write_through() {
        let (_tmp, root, host) = setup();
        let secret = host.join("secret");
        std::fs::write(&secret, "host data").unwrap();
        let dir = Dir::open(&root, &root.join("tree")).unwrap().unwrap();
        std::os::unix::fs::symlink(&secret, root.join("tree/sym")).unwrap();
        std::fs::hard_link(&secret, root.join("tree/hard")).unwrap();
        dir.write_file("sym", b"core").unwrap();
        dir.write_file("hard", b"core").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host data");
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
        for name in ["sym", "hard"] {
            let meta = std::fs::symlink_metadata(root.join("tree").join(name)).unwrap();
            assert!(meta.is_file(), "{name} is now core's own file");
            assert_eq!(
                std::fs::read(root.join("tree").join(name)).unwrap(),
                b"core"
            );
        }
        // Removing unlinks the name only.
        std::os::unix::fs::symlink(&secret, root.join("tree/sym2")).unwrap();
        dir.remove_file("sym2").unwrap();
        dir.remove_file("absent").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host data");
        assert_eq!(
            std::fs::read_dir(root.join("tree")).unwrap().count(),
            2,
            "no temp file left"
        );
    }

    #[test]
    fn own_files_are_read_and_made_without_following_links() {
        let (_tmp, root, host) = setup();
        let secret = host.join("secret");
        std::fs::write(&secret, "host data").unwrap();
        let dir = Dir::open(&root, &root.join("tree")).unwrap().unwrap();
        std::os::unix::fs::symlink(&secret, root.join("tree/sym")).unwrap();
        std::fs::hard_link(&secret, root.join("tree/hard")).unwrap();
        std::fs::write(root.join("tree/own"), "core").unwrap();
        assert!(dir.open_own_file("sym").unwrap().is_none());
        assert!(dir.open_own_file("hard").unwrap().is_none());
        assert!(dir.open_own_file("absent").unwrap().is_none());
        let (mut file, stat) = dir.open_own_file("own").unwrap().unwrap();
        let mut read = String::new();
        std::io::Read::read_to_string(&mut file, &mut read).unwrap();
        assert_eq!((read.as_str(), stat.st_size), ("core", 4));
        // Creating at a planted name fails; nothing is written through.
        assert!(dir.create_new("sym", 0o600).is_err());
        assert!(dir.create_new("hard", 0o600).is_err());
        // A second link of a link is the link itself, not its target.
        dir.hard_link("sym", "sym2").unwrap();
        assert!(
            std::fs::symlink_metadata(root.join("tree/sym2"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        dir.rename("own", "sym").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("tree/sym")).unwrap(),
            "core"
        );
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host data");
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 2, "hard only");
        assert!(dir.free_bytes().unwrap() > 0);
    }

    #[test]
    fn remove_tree_unlinks_links_and_leaves_their_targets() {
        let (_tmp, root, host) = setup();
        std::fs::write(host.join("keep"), "host data").unwrap();
        std::fs::create_dir_all(root.join("tree/gone/deep")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("tree/gone/deep/link")).unwrap();
        std::fs::hard_link(host.join("keep"), root.join("tree/gone/hard")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("tree/toplink")).unwrap();
        let dir = Dir::open(&root, &root.join("tree")).unwrap().unwrap();
        dir.remove_tree(OsStr::new("gone")).unwrap();
        dir.remove_tree(OsStr::new("toplink")).unwrap();
        dir.remove_tree(OsStr::new("absent")).unwrap();
        assert_eq!(std::fs::read_dir(root.join("tree")).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_to_string(host.join("keep")).unwrap(),
            "host data"
        );
    }

    #[test]
    fn usage_counts_files_and_hard_links_but_not_links() {
        let (_tmp, root, host) = setup();
        let big = host.join("big");
        std::fs::write(&big, vec![0u8; 1 << 20]).unwrap();
        std::fs::write(root.join("tree/small"), b"12345").unwrap();
        std::os::unix::fs::symlink(&big, root.join("tree/link")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("tree/dirlink")).unwrap();
        std::fs::create_dir(root.join("tree/sub")).unwrap();
        std::fs::write(root.join("tree/sub/more"), b"123").unwrap();
        assert_eq!(usage(&root, &root.join("tree")).0, 8);
        let host_small = host.join("small");
        std::fs::write(&host_small, b"1234567").unwrap();
        std::fs::hard_link(&host_small, root.join("tree/hard")).unwrap();
        let (bytes, newest) = usage(&root, &root.join("tree"));
        assert_eq!(bytes, 15, "a hard link is a real file");
        assert!(newest > 0);
        // A planted top dir is not walked at all.
        std::os::unix::fs::symlink(&host, root.join("planted")).unwrap();
        assert_eq!(usage(&root, &root.join("planted")), (0, 0));
    }

    #[test]
    fn a_planted_proposed_dir_is_refused_and_its_target_stays_empty() {
        let (_tmp, root, host) = setup();
        let paths = Paths::new(&root, root.join("run"));
        let coder = AgentName::parse("coder").unwrap();
        std::fs::create_dir_all(paths.proposed_dir()).unwrap();
        std::os::unix::fs::symlink(&host, paths.proposed_dir().join("coder")).unwrap();
        let err = paths.prepare_proposed(&coder).unwrap_err();
        assert!(matches!(err, FsError::Planted { .. }), "{err}");
        std::fs::remove_file(paths.proposed_dir().join("coder")).unwrap();
        std::fs::create_dir(paths.proposed_dir().join("coder")).unwrap();
        std::os::unix::fs::symlink(&host, paths.agent_config(&coder)).unwrap();
        assert!(matches!(
            paths.prepare_proposed(&coder),
            Err(FsError::Planted { .. })
        ));
        std::fs::remove_file(paths.agent_config(&coder)).unwrap();
        std::fs::create_dir_all(paths.agent_config(&coder)).unwrap();
        std::os::unix::fs::symlink(&host, paths.agent_config(&coder).join(".git")).unwrap();
        assert!(matches!(
            paths.prepare_proposed(&coder),
            Err(FsError::Planted { .. })
        ));
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0);
        let mode = std::fs::metadata(paths.proposed_dir().join("coder"))
            .unwrap()
            .mode();
        assert_eq!(mode & 0o7777, PROPOSED_DIR_MODE);
    }

    #[test]
    fn chown_proposed_hands_over_the_repo_only() {
        if !Uid::effective().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let (_tmp, root, host) = setup();
        let paths = Paths::new(&root, root.join("run"));
        let coder = AgentName::parse("coder").unwrap();
        let config = paths.agent_config(&coder);
        std::fs::create_dir_all(config.join(".git/objects")).unwrap();
        std::fs::write(config.join("agent.toml"), "x").unwrap();
        let host_file = host.join("shadow");
        std::fs::write(&host_file, "secret").unwrap();
        std::fs::hard_link(&host_file, config.join("hard")).unwrap();
        std::os::unix::fs::symlink(&host_file, config.join("link")).unwrap();
        paths.chown_proposed(&coder, 108_000, 100_000).unwrap();
        for path in [
            &config,
            &config.join(".git/objects"),
            &config.join("agent.toml"),
        ] {
            let meta = std::fs::metadata(path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (108_000, 100_000), "{path:?}");
        }
        let link = std::fs::symlink_metadata(config.join("link")).unwrap();
        assert_eq!(link.uid(), 108_000, "the link itself");
        let host_meta = std::fs::metadata(&host_file).unwrap();
        assert_eq!(
            (host_meta.uid(), host_meta.gid()),
            (0, 0),
            "host file untouched"
        );
        for dir in [paths.proposed_dir(), paths.proposed_dir().join("coder")] {
            let meta = std::fs::metadata(&dir).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755), "{dir:?}");
        }
    }
}
