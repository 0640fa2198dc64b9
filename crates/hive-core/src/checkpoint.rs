//! Checkpoints: an agent's `/state` copied over the link
//! (`hive_proto::link::ALPN_STATE`) into a file core keeps, and copied
//! back into a fresh `/state` when its agent starts with a restore
//! pending (after a move to another node).
//!
//! Core cannot reach a remote node's volume, and never unpacks agent-made
//! bytes onto a host path: a checkpoint is an opaque tar the harness made,
//! stored as one file under `agents/<name>/checkpoints/` (core's own dir,
//! which no container sees), written to a temp file and renamed over the
//! last good one only once it arrived whole and under the cap. Only the
//! harness unpacks it, inside its own container (`hive-agent`'s
//! `restore.rs`), refusing entries that leave `/state`.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_proto::AgentName;
use hive_proto::link::{RestoreDone, RestoreOffer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::Paths;
use crate::error::{Error, Result};
use crate::link::{Link, PageStream};
use crate::safe_fs::{Dir, FsError};

/// The dir in `agents/<name>/` that holds them.
const CHECKPOINTS: &str = "checkpoints";
/// The kept checkpoint's file name.
const FILE: &str = "state.tar";
/// The checkpoint `FILE` replaced, kept one more round.
const PREV: &str = "state.prev.tar";
/// Set when the harness refused or could not be served its restore: why.
const RESTORE_FAILED: &str = "restore-failed";
/// The marker: the next start of this agent restores the checkpoint.
const RESTORE_PENDING: &str = "restore-pending";
/// How long a restoring harness has to unpack and say so.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);
/// Free space a checkpoint leaves on core's disk: a take that would eat
/// into it is cut off.
const FREE_RESERVE: u64 = 2 << 30;

/// How long a purge waits for a take it cancelled to end.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// Per checkpoint dir: the take in flight, or the purge that fences
/// takes off. One take per agent at a time, and none while it is purged.
static TAKING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<PathBuf, Slot>>> =
    std::sync::LazyLock::new(Default::default);
/// The checkpoint dirs with a restore being served: one per agent.
static RESTORING: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
    std::sync::LazyLock::new(Default::default);

enum Slot {
    /// A take in flight: `cancel` stops it; `ended` closes once it ended
    /// (and removed what it wrote).
    Taking {
        cancel: watch::Sender<bool>,
        ended: watch::Receiver<()>,
    },
    /// Its agent is being purged: no take starts.
    Purging,
}

fn taking() -> std::sync::MutexGuard<'static, std::collections::HashMap<PathBuf, Slot>> {
    TAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A take's claim on its dir, held until dropped.
struct Take {
    dir: PathBuf,
    /// Turns true (or closes) when a purge cancels this take.
    cancel: watch::Receiver<bool>,
    /// Dropped with the take: the purge waiting on it goes on.
    _ended: watch::Sender<()>,
}

impl Take {
    /// Claims `dir`, or says why not: another take, or a purge.
    fn claim(dir: PathBuf) -> std::result::Result<Self, &'static str> {
        let mut held = taking();
        match held.get(&dir) {
            Some(Slot::Taking { .. }) => return Err("another checkpoint of it is being taken"),
            Some(Slot::Purging) => return Err("it is being purged"),
            None => {}
        }
        let (cancel_tx, cancel) = watch::channel(false);
        let (ended_tx, ended) = watch::channel(());
        held.insert(
            dir.clone(),
            Slot::Taking {
                cancel: cancel_tx,
                ended,
            },
        );
        Ok(Self {
            dir,
            cancel,
            _ended: ended_tx,
        })
    }

    /// Until a purge cancels this take.
    async fn cancelled(&mut self) {
        // An error is the sender gone: only a purge takes it away.
        let _ = self.cancel.wait_for(|cancelled| *cancelled).await;
    }
}

impl Drop for Take {
    fn drop(&mut self) {
        let mut held = taking();
        // A purge's fence in its place stays.
        if matches!(held.get(&self.dir), Some(Slot::Taking { .. })) {
            held.remove(&self.dir);
        }
    }
}

/// Keeps checkpoints of one agent from being taken while it is purged;
/// dropping it lets takes start again (they find no agent).
pub struct PurgeFence {
    dir: PathBuf,
}

impl Drop for PurgeFence {
    fn drop(&mut self) {
        taking().remove(&self.dir);
    }
}

/// Fences checkpoints of `name` off for its purge: a take in flight is
/// cancelled, and this answers once it ended and removed its temp file;
/// none starts until the fence is dropped. Refused when a take does not
/// end within [`CANCEL_WAIT`] (nothing is purged then).
pub async fn fence_for_purge(paths: &Paths, name: &AgentName) -> Result<PurgeFence> {
    let dir = dir(paths, name);
    let in_flight = {
        let mut held = taking();
        if matches!(held.get(&dir), Some(Slot::Purging)) {
            return Err(Error::refused(format!("{name} is already being purged")));
        }
        match held.insert(dir.clone(), Slot::Purging) {
            Some(Slot::Taking { cancel, ended }) => {
                cancel.send_replace(true);
                Some(ended)
            }
            _ => None,
        }
    };
    let fence = PurgeFence { dir };
    if let Some(mut ended) = in_flight {
        tracing::info!(agent = %name, "purge: cancelling the checkpoint being taken");
        // `changed` fails once the take's sender is dropped: it ended.
        let wait = async { while ended.changed().await.is_ok() {} };
        tokio::time::timeout(CANCEL_WAIT, wait).await.map_err(|_| {
            Error::refused(format!(
                "a checkpoint of {name} being taken did not stop within {}s of its \
                 cancel; nothing purged",
                CANCEL_WAIT.as_secs()
            ))
        })?;
    }
    Ok(fence)
}

/// Holds `dir` in `set` until dropped; `None` when another holds it.
struct InFlight {
    set: &'static std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    dir: PathBuf,
}

impl InFlight {
    fn claim(
        set: &'static std::sync::Mutex<std::collections::HashSet<PathBuf>>,
        dir: PathBuf,
    ) -> Option<Self> {
        let mut held = set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Built only once claimed: an `InFlight` dropped unclaimed would
        // release the holder's claim (and lock the set it is under).
        held.insert(dir.clone()).then(|| Self { set, dir })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.dir);
    }
}

/// Removes `.incoming-*` files a take cut off by a crash left in `dir`.
fn sweep_incoming(dir: &Dir) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for entry in entries {
        let entry = entry.to_string_lossy();
        if entry.starts_with(".incoming-") {
            let _ = dir.remove_file(&entry);
        }
    }
}

/// One kept checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub taken_at: i64,
    pub bytes: u64,
}

impl Checkpoint {
    /// "12.3 MB, taken 2026-01-02 03:04 UTC".
    pub fn describe(&self) -> String {
        format!(
            "{}, taken {}",
            human_bytes(self.bytes),
            hive_proto::rfc3339::format(self.taken_at)
        )
    }
}

/// `bytes` for people.
pub fn human_bytes(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.1} GB", b / 1e9),
    }
}

/// `agents/<name>/checkpoints/` (the key of its takes and restores; files
/// in it are reached through [`open_dir`] only).
pub fn dir(paths: &Paths, name: &AgentName) -> PathBuf {
    paths.agent_dir(name).join(CHECKPOINTS)
}

/// `name`'s checkpoints dir, opened without following a link on the way
/// (below the state dir): `None` when it or the agent dir is absent.
fn open_dir(paths: &Paths, name: &AgentName) -> std::result::Result<Option<Dir>, FsError> {
    let Some(agent) = Dir::open(&paths.state_dir, &paths.agent_dir(name))? else {
        return Ok(None);
    };
    agent.child(OsStr::new(CHECKPOINTS))
}

/// [`open_dir`], making the checkpoints dir when absent; the agent dir is
/// never made (a purged agent's stays gone).
fn create_dir(paths: &Paths, name: &AgentName) -> std::result::Result<Dir, String> {
    let agent = Dir::open(&paths.state_dir, &paths.agent_dir(name))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{name} is gone (purged)"))?;
    agent
        .create_child(OsStr::new(CHECKPOINTS), crate::paths::DIR_MODE)
        .map_err(|e| e.to_string())
}

/// The kept checkpoint of `name`, if any (core's own regular file: a link
/// planted in its place is none).
pub fn last(paths: &Paths, name: &AgentName) -> Option<Checkpoint> {
    let dir = open_dir(paths, name).ok()??;
    let (_, stat) = dir.open_own_file(FILE).ok()??;
    Some(Checkpoint {
        taken_at: stat.st_mtime,
        bytes: u64::try_from(stat.st_size).ok()?,
    })
}

/// Whether `name`'s next start restores its checkpoint.
pub fn restore_pending(paths: &Paths, name: &AgentName) -> bool {
    open_dir(paths, name)
        .ok()
        .flatten()
        .is_some_and(|dir| matches!(dir.kind(OsStr::new(RESTORE_PENDING)), Ok(Some(_))))
}

/// How the last restore of `name` ended: `None` while it is pending and
/// nothing failed yet, `Some(Ok)` once done, `Some(Err(why))` once failed.
pub fn restore_outcome(paths: &Paths, name: &AgentName) -> Option<std::result::Result<(), String>> {
    let failed = open_dir(paths, name)
        .ok()
        .flatten()
        .and_then(|dir| dir.open_own_file(RESTORE_FAILED).ok().flatten());
    if let Some((file, _)) = failed {
        let mut why = String::new();
        let _ = file.take(64 * 1024).read_to_string(&mut why);
        return Some(Err(why));
    }
    (!restore_pending(paths, name)).then_some(Ok(()))
}

fn restore_failed(paths: &Paths, name: &AgentName, why: &str) {
    tracing::warn!(agent = %name, "restore failed: {why}");
    let written = create_dir(paths, name).and_then(|dir| {
        dir.write_file(RESTORE_FAILED, why.as_bytes())
            .map_err(|e| e.to_string())
    });
    if let Err(e) = written {
        tracing::warn!(agent = %name, "noting the failed restore failed: {e}");
    }
}

/// Sets or clears `name`'s restore-pending marker (and forgets a failed
/// restore).
pub fn set_restore_pending(paths: &Paths, name: &AgentName, pending: bool) -> Result<()> {
    let dir = create_dir(paths, name).map_err(Error::Internal)?;
    let done = dir.remove_file(RESTORE_FAILED).and_then(|()| {
        if pending {
            dir.write_file(RESTORE_PENDING, b"")
        } else {
            dir.remove_file(RESTORE_PENDING)
        }
    });
    done.map_err(|e| Error::Internal(e.to_string()))
}

/// Asks `name`'s harness for a tar of its `/state` and keeps it, within
/// `timeout`. Nothing replaces the last good checkpoint unless the new
/// one arrived whole and within the link's cap.
pub async fn take(
    paths: &Paths,
    link: &Link,
    name: &AgentName,
    timeout: Duration,
) -> Result<Checkpoint> {
    if restore_pending(paths, name) {
        return Err(Error::refused(format!(
            "{name} has a restore pending: its container's /state is not whole until \
             the harness restored its checkpoint"
        )));
    }
    let mut claim = Take::claim(dir(paths, name))
        .map_err(|why| Error::refused(format!("no checkpoint of {name}: {why}")))?;
    let received = async {
        // Claimed first, so a purge either cancels this take or ran
        // before it: then its agent dir is gone, and is not made again.
        let dir = create_dir(paths, name)?;
        // None in flight: any `.incoming-*` is a crashed take's.
        sweep_incoming(&dir);
        let room = dir
            .free_bytes()
            .map_err(|e| e.to_string())?
            .saturating_sub(FREE_RESERVE);
        if room == 0 {
            return Err(format!(
                "core's disk has less than {} free",
                human_bytes(FREE_RESERVE)
            ));
        }
        let cap = link.checkpoint_cap.min(room);
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("random name: {e}"))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = format!(".incoming-{id}.tar");
        let streamed = async {
            let file = dir.create_new(&tmp, 0o600).map_err(|e| e.to_string())?;
            let stream = link.state_tunnels.open(name).await?;
            receive(stream, file, &dir.path().join(&tmp), cap).await
        };
        let received = tokio::time::timeout(timeout, streamed)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the harness sent no whole checkpoint within {}s",
                    timeout.as_secs()
                ))
            })
            .and_then(|()| keep(&dir, &tmp));
        if received.is_err() {
            let _ = dir.remove_file(&tmp);
        }
        received
    };
    let cancelled = tokio::select! {
        received = received => Some(received),
        () = claim.cancelled() => None,
    };
    let Some(received) = cancelled else {
        // The receive future was dropped: its temp file (if any) goes now,
        // before the claim ends and the purge waiting on it goes on.
        if let Ok(Some(dir)) = open_dir(paths, name) {
            sweep_incoming(&dir);
        }
        drop(claim);
        return Err(Error::refused(format!(
            "no checkpoint of {name}: it is being purged, so the checkpoint being taken \
             was cancelled (the purge removes its kept checkpoints too)"
        )));
    };
    // The claim is held until the answer is read: a purge waiting on it
    // removes nothing under `last`.
    if let Err(e) = received {
        let previous = match last(paths, name) {
            Some(c) => format!("the previous one ({}) is kept", c.describe()),
            None => "there is no previous one".to_owned(),
        };
        return Err(Error::refused(format!(
            "no new checkpoint of {name}: {e}; {previous}"
        )));
    }
    let kept = last(paths, name)
        .ok_or_else(|| Error::Internal(format!("{name}'s checkpoint vanished")))?;
    tracing::info!(agent = %name, bytes = kept.bytes, "checkpoint kept");
    drop(claim);
    Ok(kept)
}

/// Renames `tmp` over the kept checkpoint, the one it replaces kept as
/// `PREV` (a bad new one still leaves the last one before it). Only
/// core's own file is kept a round: a link planted at `FILE` is replaced,
/// never linked to nor followed.
fn keep(dir: &Dir, tmp: &str) -> std::result::Result<(), String> {
    dir.remove_file(PREV).map_err(|e| e.to_string())?;
    if dir
        .open_own_file(FILE)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        dir.hard_link(FILE, PREV)
            .map_err(|e| format!("keep the previous checkpoint: {e}"))?;
    }
    dir.rename(tmp, FILE)
        .map_err(|e| format!("keep the checkpoint: {e}"))
}

/// Copies the stream into `file` (`tmp`, created new, 0600), refusing
/// more than `cap` bytes, a stream that did not end cleanly, and bytes
/// that are not a whole tar archive (no end-of-archive blocks: cut short).
async fn receive(
    mut stream: PageStream,
    file: std::fs::File,
    tmp: &Path,
    cap: u64,
) -> std::result::Result<(), String> {
    let mut file = tokio::fs::File::from_std(file);
    let mut total: u64 = 0;
    let mut tail = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("the stream broke after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > cap {
            return Err(format!(
                "it is over the cap of {} ({cap} bytes: the link's cap, or core's free \
                 space less a reserve)",
                human_bytes(cap)
            ));
        }
        file.write_all(&buf[..n])
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 1024 {
            tail.drain(..tail.len() - 1024);
        }
    }
    if total < 1024 || !total.is_multiple_of(512) || tail.iter().any(|&b| b != 0) {
        return Err(format!(
            "{total} bytes that are not a whole tar archive (cut short?)"
        ));
    }
    file.sync_all()
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    Ok(())
}

/// A harness at start asks whether to restore: nothing, or the kept
/// checkpoint's bytes, after which the marker is cleared only when the
/// harness says it unpacked them (and core's ack tells it so). A restore
/// pending with no checkpoint kept is closed without an offer: the
/// harness must not run on an empty `/state` as if it were the agent's.
pub async fn serve_restore<S>(paths: &Paths, name: &AgentName, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(_restoring) = InFlight::claim(&RESTORING, dir(paths, name)) else {
        return tracing::warn!(agent = %name, "a second restore at once: closed");
    };
    let (reader, mut writer) = tokio::io::split(stream);
    let offer = match (restore_pending(paths, name), last(paths, name)) {
        (true, Some(c)) => Some(c),
        (true, None) => {
            restore_failed(
                paths,
                name,
                "a restore is pending but no checkpoint is kept (refused: it would run on an \
                 empty /state)",
            );
            // A clean close with no offer: the harness reads an end.
            let _ = writer.shutdown().await;
            return;
        }
        (false, _) => None,
    };
    let Some(checkpoint) = offer else {
        let none = RestoreOffer {
            bytes: None,
            taken_at: None,
        };
        let _ = crate::jsonl::write_line(&mut writer, &none).await;
        return;
    };
    let served = async {
        let (file, stat) = open_dir(paths, name)
            .map_err(std::io::Error::other)?
            .and_then(|dir| dir.open_own_file(FILE).transpose())
            .transpose()
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("the checkpoint vanished"))?;
        let mut file = tokio::fs::File::from_std(file);
        let bytes = u64::try_from(stat.st_size).map_err(std::io::Error::other)?;
        let offer = RestoreOffer {
            bytes: Some(bytes),
            taken_at: Some(checkpoint.taken_at),
        };
        crate::jsonl::write_line(&mut writer, &offer).await?;
        let sent = tokio::io::copy(&mut (&mut file).take(bytes), &mut writer).await?;
        writer.flush().await?;
        if sent != bytes {
            return Err(std::io::Error::other("the checkpoint shrank while sent"));
        }
        let mut line = String::new();
        BufReader::new(reader.take(64 * 1024))
            .read_line(&mut line)
            .await?;
        let done: RestoreDone = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(done)
    };
    match tokio::time::timeout(RESTORE_TIMEOUT, served).await {
        Ok(Ok(RestoreDone { ok: true, .. })) => {
            if let Err(e) = set_restore_pending(paths, name, false) {
                return tracing::error!(agent = %name, "restore done, marker kept: {e}");
            }
            let ack = RestoreDone {
                ok: true,
                error: None,
            };
            let _ = crate::jsonl::write_line(&mut writer, &ack).await;
            tracing::info!(agent = %name, "restored from its checkpoint");
        }
        Ok(Ok(RestoreDone { error, .. })) => restore_failed(
            paths,
            name,
            &format!(
                "the harness refused its checkpoint: {}",
                error.unwrap_or_default()
            ),
        ),
        Ok(Err(e)) => tracing::warn!(agent = %name, "restore broke off: {e}"),
        Err(_) => tracing::warn!(agent = %name, "restore timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_checkpoint_keeps_the_one_it_replaces() {
        let root = tempfile::tempdir().unwrap();
        let dir = Dir::open(root.path(), root.path()).unwrap().unwrap();
        let (tmp, kept, prev) = (
            root.path().join(".incoming-1.tar"),
            root.path().join(FILE),
            root.path().join(PREV),
        );
        std::fs::write(&tmp, "first").unwrap();
        keep(&dir, ".incoming-1.tar").unwrap();
        assert!(!prev.exists());
        std::fs::write(&tmp, "second").unwrap();
        keep(&dir, ".incoming-1.tar").unwrap();
        std::fs::write(&tmp, "third").unwrap();
        keep(&dir, ".incoming-1.tar").unwrap();
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), "third");
        assert_eq!(std::fs::read_to_string(&prev).unwrap(), "second");
        assert!(!tmp.exists());
    }

    /// An agent dir below a fresh state dir, and a host dir beside it
    /// holding `secret`.
    fn planted_setup() -> (tempfile::TempDir, Paths, AgentName, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path().join("state"), root.path().join("run"));
        let name = AgentName::parse("eng").unwrap();
        std::fs::create_dir_all(paths.agent_dir(&name)).unwrap();
        let host = root.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("secret"), "host data").unwrap();
        (root, paths, name, host)
    }

    fn host_untouched(host: &Path) {
        assert_eq!(
            std::fs::read_to_string(host.join("secret")).unwrap(),
            "host data"
        );
        let mut names: Vec<_> = std::fs::read_dir(host)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["secret"], "nothing written into the host dir");
    }

    #[test]
    fn a_planted_checkpoints_dir_link_is_neither_followed_nor_written_through() {
        let (_root, paths, name, host) = planted_setup();
        std::fs::write(host.join(FILE), "host tar").unwrap();
        std::fs::write(host.join(RESTORE_PENDING), "").unwrap();
        std::os::unix::fs::symlink(&host, dir(&paths, &name)).unwrap();
        let err = set_restore_pending(&paths, &name, true).unwrap_err();
        assert!(err.to_string().contains("symbolic link planted"), "{err}");
        assert!(set_restore_pending(&paths, &name, false).is_err());
        restore_failed(&paths, &name, "why");
        // Nothing read through it either: no checkpoint, nothing pending.
        assert_eq!(last(&paths, &name), None);
        assert!(!restore_pending(&paths, &name));
        assert_eq!(create_dir(&paths, &name).err().unwrap(), err.to_string());
        std::fs::remove_file(host.join(FILE)).unwrap();
        std::fs::remove_file(host.join(RESTORE_PENDING)).unwrap();
        host_untouched(&host);
    }

    #[test]
    fn planted_checkpoint_files_are_replaced_never_written_through_nor_served() {
        let (_root, paths, name, host) = planted_setup();
        let ckpt = dir(&paths, &name);
        std::fs::create_dir(&ckpt).unwrap();
        let secret = host.join("secret");
        for planted in [RESTORE_FAILED, RESTORE_PENDING, FILE] {
            std::os::unix::fs::symlink(&secret, ckpt.join(planted)).unwrap();
        }
        std::fs::hard_link(&secret, ckpt.join(PREV)).unwrap();
        // A link at the kept name is no checkpoint (nothing to offer).
        assert_eq!(last(&paths, &name), None);
        assert!(
            restore_outcome(&paths, &name).is_none(),
            "pending, not failed"
        );
        restore_failed(&paths, &name, "refused");
        set_restore_pending(&paths, &name, true).unwrap();
        std::fs::write(ckpt.join(".incoming-1.tar"), "new").unwrap();
        let d = open_dir(&paths, &name).unwrap().unwrap();
        keep(&d, ".incoming-1.tar").unwrap();
        for name in [RESTORE_PENDING, FILE] {
            let meta = std::fs::symlink_metadata(ckpt.join(name)).unwrap();
            assert!(meta.is_file(), "{name} is core's own file now");
        }
        assert!(!ckpt.join(PREV).exists(), "the planted one is not kept");
        assert_eq!(std::fs::read(ckpt.join(FILE)).unwrap(), b"new");
        host_untouched(&host);
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
        // A hard link of a host file at the kept name is not core's file:
        // not offered, and the harness asking is served nothing of it.
        std::fs::remove_file(ckpt.join(FILE)).unwrap();
        std::fs::hard_link(&secret, ckpt.join(FILE)).unwrap();
        assert_eq!(last(&paths, &name), None);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let served = rt.block_on(async {
            let (core, mut harness) = tokio::io::duplex(64 * 1024);
            serve_restore(&paths, &name, core).await;
            let mut got = Vec::new();
            harness.read_to_end(&mut got).await.unwrap();
            got
        });
        assert!(
            !String::from_utf8_lossy(&served).contains("host data"),
            "{served:?}"
        );
        let why = match restore_outcome(&paths, &name) {
            Some(Err(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(why.contains("no checkpoint"), "{why}");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host data");
    }

    #[tokio::test]
    async fn a_purge_cancels_the_take_in_flight_and_fences_new_ones_off() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path(), root.path().join("run"));
        let name = AgentName::parse("eng").unwrap();
        let mut take = Take::claim(dir(&paths, &name)).unwrap();
        let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taking = tokio::spawn({
            let ended = ended.clone();
            async move {
                take.cancelled().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                ended.store(true, std::sync::atomic::Ordering::SeqCst);
                drop(take);
            }
        });
        let fence = fence_for_purge(&paths, &name).await.unwrap();
        assert!(
            ended.load(std::sync::atomic::Ordering::SeqCst),
            "the fence waits for the take to end"
        );
        taking.await.unwrap();
        assert_eq!(
            Take::claim(dir(&paths, &name)).err(),
            Some("it is being purged")
        );
        assert!(fence_for_purge(&paths, &name).await.is_err());
        drop(fence);
        assert!(Take::claim(dir(&paths, &name)).is_ok());
    }

    #[test]
    fn one_take_per_agent_and_crashed_ones_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Take::claim(dir.path().to_owned()).unwrap();
        assert!(Take::claim(dir.path().to_owned()).is_err());
        drop(first);
        assert!(Take::claim(dir.path().to_owned()).is_ok());
        std::fs::write(dir.path().join(".incoming-ab.tar"), "left").unwrap();
        std::fs::write(dir.path().join(FILE), "kept").unwrap();
        let held = Dir::open(dir.path(), dir.path()).unwrap().unwrap();
        sweep_incoming(&held);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE]);
        assert!(held.free_bytes().unwrap() > 0);
    }
}
