//! The harness's side of checkpoints (`hive_proto::link::ALPN_STATE`):
//! a tar of `/state` streamed to core when core asks on the state tunnel,
//! and, at start, the checkpoint core offers unpacked into `/state` before
//! the first turn.
//!
//! The checkpoint is whatever this container's `/state` held, and the
//! bytes core hands back are whatever this agent's credential sent: both
//! are the agent's. So a restore checks every entry before it writes any
//! (relative paths of plain components only; files, dirs and symlinks
//! only; no entry at or below a symlink of the archive, so nothing is
//! written through one), then unpacks with `tar`'s own guard that no
//! write lands outside `/state`. A symlink itself is restored as it was,
//! whatever its target (a venv's `bin/python -> /usr/bin/python3`):
//! making one writes nothing through it, and inside its own container
//! the agent could make it anyway.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hive_proto::link::{ALPN_STATE, PageOpen, RestoreDone, RestoreOffer, StateOpen};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::Dialer;

/// Where a restore keeps the checkpoint while it checks and unpacks it
/// (in `/state`: the volume has the room, `/tmp` may be memory). Never
/// part of a checkpoint.
pub const RESTORE_FILE: &str = ".hive-restore.tar";
/// Wait before a lost state tunnel is opened again.
const REDIAL: Duration = Duration::from_secs(1);

/// Writes a tar of `root` to `out`: dirs, regular files and symlinks (not
/// followed); sockets, fifos and devices are left out. A file that
/// changes while read keeps the length its header says.
pub fn write_tar<W: Write>(root: &Path, out: W) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    add_dir(&mut builder, root, Path::new(""))?;
    builder.into_inner()
}

fn add_dir<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut entries = std::fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && name == RESTORE_FILE {
            continue;
        }
        let path = rel.join(&name);
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut header = tar::Header::new_gnu();
        header.set_metadata(&meta);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_size(0);
            b.append_data(&mut header, &path, std::io::empty())?;
            add_dir(b, root, &path)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            header.set_size(0);
            b.append_link(&mut header, &path, &target)?;
        } else if kind.is_file() {
            let file = match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(entry.path())
            {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let len = meta.len();
            header.set_size(len);
            // Exactly `len` bytes whatever happens to the file meanwhile.
            let data = file.take(len).chain(std::io::repeat(0)).take(len);
            b.append_data(&mut header, &path, data)?;
        }
    }
    Ok(())
}

/// Unpacks the tar at `archive` into `root`, checking every entry before
/// writing any. Answers how many entries it wrote.
pub fn unpack(root: &Path, archive: &Path) -> anyhow::Result<usize> {
    let open =
        || std::fs::File::open(archive).with_context(|| format!("open {}", archive.display()));
    let mut links: HashSet<PathBuf> = HashSet::new();
    let mut checked = tar::Archive::new(open()?);
    for entry in checked.entries().context("read the checkpoint")? {
        let entry = entry.context("read the checkpoint")?;
        let raw = entry.path().context("an entry's path")?.into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let path = inside(&raw).with_context(|| format!("entry {}", raw.display()))?;
        if path.as_os_str().is_empty() && !kind.is_dir() {
            bail!("entry {}: not a path in /state", raw.display());
        }
        if path == Path::new(RESTORE_FILE) {
            bail!(
                "entry {}: a name the restore keeps for itself",
                raw.display()
            );
        }
        if path.ancestors().any(|a| links.contains(a)) {
            bail!("entry {}: goes through a link", raw.display());
        }
        if kind.is_symlink() {
            entry
                .link_name()
                .context("a link's target")?
                .with_context(|| format!("entry {}: a link without a target", raw.display()))?;
            links.insert(path);
        } else if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "entry {}: a {kind:?} entry (only files, dirs and symlinks are restored)",
                raw.display()
            );
        }
    }
    let mut archive = tar::Archive::new(open()?);
    archive.set_overwrite(true);
    let mut written = 0;
    for entry in archive.entries().context("read the checkpoint")? {
        let mut entry = entry.context("read the checkpoint")?;
        if entry.header().entry_type().is_pax_global_extensions() {
            continue;
        }
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !entry
            .unpack_in(root)
            .with_context(|| format!("unpack {path}"))?
        {
            bail!("entry {path}: refused by tar (outside /state)");
        }
        written += 1;
    }
    Ok(written)
}

/// `path` as plain components below the root (`.` dropped); refused when
/// absolute or with `..`.
fn inside(path: &Path) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => bail!("a path with `..`"),
            Component::RootDir | Component::Prefix(_) => bail!("an absolute path"),
        }
    }
    Ok(out)
}

/// The state tunnel: for each checkpoint core asks for, a new link
/// connection carrying a tar of `state_dir`.
pub async fn tunnel(dialer: Dialer, state_dir: PathBuf) {
    loop {
        match dialer.dial(ALPN_STATE).await {
            Ok(mut stream) => {
                if open_line(&mut stream, &StateOpen::Tunnel).await.is_ok() {
                    let mut lines = BufReader::new(stream).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let Ok(ask) = serde_json::from_str::<PageOpen>(&line) else {
                            tracing::warn!("link state: a bad line");
                            continue;
                        };
                        let (dialer, state_dir) = (dialer.clone(), state_dir.clone());
                        tokio::spawn(async move {
                            if let Err(e) = send_checkpoint(&dialer, &state_dir, ask).await {
                                tracing::warn!("checkpoint not sent: {e:#}");
                            }
                        });
                    }
                }
            }
            Err(e) => tracing::warn!("link state: {e}"),
        }
        tokio::time::sleep(REDIAL).await;
    }
}

async fn open_line<W: tokio::io::AsyncWrite + Unpin>(
    stream: &mut W,
    open: &StateOpen,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(open).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await?;
    stream.flush().await
}

/// One checkpoint: a tar of `state_dir`, made on a blocking thread and
/// streamed as it is made, then a clean close (so core tells a whole
/// checkpoint from one cut short).
async fn send_checkpoint(dialer: &Dialer, state_dir: &Path, ask: PageOpen) -> anyhow::Result<()> {
    let mut stream = dialer.dial(ALPN_STATE).await.context("dial core")?;
    open_line(&mut stream, &StateOpen::Checkpoint { stream: ask.stream }).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let root = state_dir.to_owned();
    let made = tokio::task::spawn_blocking(move || {
        write_tar(
            &root,
            ChunkWriter {
                tx,
                buf: Vec::new(),
            },
        )?
        .flush()
    });
    while let Some(chunk) = rx.recv().await {
        stream.write_all(&chunk).await.context("send")?;
    }
    made.await
        .context("the tar thread")?
        .context("tar /state")?;
    stream.shutdown().await.context("close")?;
    // Until core closes too: closing with unread bytes (TLS session
    // tickets) would reset the connection before core read the end.
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut sink)).await;
    Ok(())
}

/// Hands what the tar writer makes to the async side in 64 KiB chunks.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.buf);
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the link side is gone"))
    }
}

/// At start, before the first turn: asks core whether a checkpoint waits
/// to be restored and, if one does, unpacks it into `state_dir` and says
/// so. An error means the harness must not run turns on a `/state` that
/// is not the agent's.
pub async fn restore(dialer: &Dialer, state_dir: &Path) -> anyhow::Result<()> {
    let stream = dialer.dial(ALPN_STATE).await.context("dial core")?;
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    open_line(&mut writer, &StateOpen::Restore).await?;
    let mut line = String::new();
    reader.read_line(&mut line).await.context("core's offer")?;
    if line.is_empty() {
        bail!("core closed the restore without an offer: a restore it cannot serve (see its log)");
    }
    let offer: RestoreOffer =
        serde_json::from_str(&line).with_context(|| format!("core's offer {line:?}"))?;
    let Some(bytes) = offer.bytes else {
        return Ok(());
    };
    tracing::info!(bytes, taken_at = ?offer.taken_at, "restoring a checkpoint into /state");
    let tmp = state_dir.join(RESTORE_FILE);
    let unpacked = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("create {}", tmp.display()))?;
        let got = tokio::io::copy(&mut (&mut reader).take(bytes), &mut file)
            .await
            .context("receive the checkpoint")?;
        if got != bytes {
            bail!("the checkpoint was cut short ({got} of {bytes} bytes)");
        }
        file.sync_all().await?;
        drop(file);
        let (root, archive) = (state_dir.to_owned(), tmp.clone());
        tokio::task::spawn_blocking(move || unpack(&root, &archive))
            .await
            .context("the unpack thread")?
    }
    .await;
    let _ = std::fs::remove_file(&tmp);
    let done = match &unpacked {
        Ok(_) => RestoreDone {
            ok: true,
            error: None,
        },
        Err(e) => RestoreDone {
            ok: false,
            error: Some(format!("{e:#}")),
        },
    };
    let mut line = serde_json::to_string(&done)?;
    line.push('\n');
    writer.write_all(line.as_bytes()).await?;
    writer.flush().await?;
    let entries = unpacked.context("restore the checkpoint")?;
    let mut ack = String::new();
    reader.read_line(&mut ack).await.context("core's ack")?;
    match serde_json::from_str::<RestoreDone>(&ack) {
        Ok(RestoreDone { ok: true, .. }) => {
            tracing::info!(entries, "restored the checkpoint");
            Ok(())
        }
        _ => bail!("core did not take the restore as done ({ack:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(dir: &Path, build: impl FnOnce(&mut tar::Builder<std::fs::File>)) -> PathBuf {
        let path = dir.join("a.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
        build(&mut b);
        b.finish().unwrap();
        path
    }

    fn file(b: &mut tar::Builder<std::fs::File>, path: &str, body: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Written raw: `append_data` itself refuses `..`.
        let name = h.as_old_mut().name.as_mut();
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, body).unwrap();
    }

    fn link(b: &mut tar::Builder<std::fs::File>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn a_checkpoint_round_trips_files_dirs_and_links() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("notes/deep")).unwrap();
        std::fs::write(from.path().join("notes/deep/a.txt"), b"remember").unwrap();
        std::os::unix::fs::symlink("notes/deep/a.txt", from.path().join("a")).unwrap();
        std::fs::write(from.path().join(RESTORE_FILE), b"left out").unwrap();
        let tar = write_tar(from.path(), Vec::new()).unwrap();
        let to = tempfile::tempdir().unwrap();
        let path = to.path().join("in.tar");
        std::fs::write(&path, &tar).unwrap();
        let state = to.path().join("state");
        std::fs::create_dir(&state).unwrap();
        unpack(&state, &path).unwrap();
        assert_eq!(
            std::fs::read(state.join("notes/deep/a.txt")).unwrap(),
            b"remember"
        );
        assert_eq!(std::fs::read(state.join("a")).unwrap(), b"remember");
        assert!(!state.join(RESTORE_FILE).exists());
    }

    /// A venv, the claude installer's `.local/bin` and pnpm's
    /// `node_modules` all keep links to absolute paths and up out of
    /// their dir: restored as they were.
    #[test]
    fn a_restore_keeps_ordinary_links_to_anywhere() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("venv/bin")).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3", from.path().join("venv/bin/python"))
            .unwrap();
        std::os::unix::fs::symlink("python", from.path().join("venv/bin/python3")).unwrap();
        std::os::unix::fs::symlink("../../..", from.path().join("venv/bin/up")).unwrap();
        std::fs::write(from.path().join("venv/pyvenv.cfg"), b"home = /usr/bin").unwrap();
        let tar = write_tar(from.path(), Vec::new()).unwrap();
        let to = tempfile::tempdir().unwrap();
        let path = to.path().join("in.tar");
        std::fs::write(&path, &tar).unwrap();
        let state = to.path().join("state");
        std::fs::create_dir(&state).unwrap();
        unpack(&state, &path).unwrap();
        let bin = state.join("venv/bin");
        assert_eq!(
            std::fs::read_link(bin.join("python")).unwrap(),
            Path::new("/usr/bin/python3")
        );
        assert_eq!(
            std::fs::read_link(bin.join("python3")).unwrap(),
            Path::new("python")
        );
        assert_eq!(
            std::fs::read_link(bin.join("up")).unwrap(),
            Path::new("../../..")
        );
        assert_eq!(
            std::fs::read(state.join("venv/pyvenv.cfg")).unwrap(),
            b"home = /usr/bin"
        );
    }

    type Build = Box<dyn Fn(&mut tar::Builder<std::fs::File>)>;

    #[test]
    fn a_restore_refuses_entries_that_leave_state_and_writes_nothing() {
        let cases: Vec<(&str, Build)> = vec![
            ("..", Box::new(|b| file(b, "../escaped", b"x"))),
            ("absolute", Box::new(|b| file(b, "/tmp/escaped", b"x"))),
            (
                "goes through a link",
                Box::new(|b| {
                    link(b, "sub", "real");
                    file(b, "sub/x", b"x");
                }),
            ),
            (
                "goes through a link",
                Box::new(|b| {
                    link(b, "etc", "/etc");
                    file(b, "etc/planted", b"x");
                }),
            ),
            (
                "goes through a link",
                Box::new(|b| {
                    link(b, "up", "../..");
                    file(b, "up/tmp/planted", b"x");
                }),
            ),
            (
                "goes through a link",
                Box::new(|b| {
                    link(b, "bin", "/usr/bin");
                    link(b, "bin", "/tmp");
                }),
            ),
        ];
        for (what, build) in cases {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            std::fs::create_dir(&state).unwrap();
            let path = archive(dir.path(), |b| {
                file(b, "ok.txt", b"fine");
                build(b);
            });
            let err = format!("{:#}", unpack(&state, &path).unwrap_err());
            assert!(err.contains(what), "{what}: {err}");
            assert_eq!(
                std::fs::read_dir(&state).unwrap().count(),
                0,
                "{what}: something was written"
            );
            assert!(!dir.path().join("escaped").exists());
        }
    }
}
