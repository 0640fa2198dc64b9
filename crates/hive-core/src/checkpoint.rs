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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_proto::AgentName;
use hive_proto::link::{RestoreDone, RestoreOffer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::Paths;
use crate::error::{Error, Result};
use crate::link::{Link, PageStream};

/// The kept checkpoint's file name.
const FILE: &str = "state.tar";
/// The marker: the next start of this agent restores the checkpoint.
const RESTORE_PENDING: &str = "restore-pending";
/// How long a restoring harness has to unpack and say so.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

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

/// `agents/<name>/checkpoints/`.
pub fn dir(paths: &Paths, name: &AgentName) -> PathBuf {
    paths.agent_dir(name).join("checkpoints")
}

/// The kept checkpoint of `name`, if any.
pub fn last(paths: &Paths, name: &AgentName) -> Option<Checkpoint> {
    let meta = std::fs::symlink_metadata(dir(paths, name).join(FILE)).ok()?;
    if !meta.is_file() {
        return None;
    }
    let taken_at = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Checkpoint {
        taken_at: i64::try_from(taken_at).ok()?,
        bytes: meta.len(),
    })
}

/// Whether `name`'s next start restores its checkpoint.
pub fn restore_pending(paths: &Paths, name: &AgentName) -> bool {
    dir(paths, name).join(RESTORE_PENDING).exists()
}

/// Sets or clears `name`'s restore-pending marker.
pub fn set_restore_pending(paths: &Paths, name: &AgentName, pending: bool) -> Result<()> {
    let marker = dir(paths, name).join(RESTORE_PENDING);
    let done = if pending {
        crate::paths::create_dir(&dir(paths, name))
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        std::fs::write(&marker, b"")
    } else {
        match std::fs::remove_file(&marker) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    done.map_err(|e| Error::Internal(format!("{}: {e}", marker.display())))
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
    let received = async {
        let stream = link.state_tunnels.open(name).await?;
        let dir = dir(paths, name);
        crate::paths::create_dir(&dir).map_err(|e| format!("{e:#}"))?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| format!("random name: {e}"))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!(".incoming-{id}.tar"));
        let received = tokio::time::timeout(timeout, receive(stream, &tmp, link.checkpoint_cap))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the harness sent no whole checkpoint within {}s",
                    timeout.as_secs()
                ))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, dir.join(FILE))
                    .map_err(|e| format!("keep the checkpoint: {e}"))
            });
        if received.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        received
    };
    if let Err(e) = received.await {
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
    Ok(kept)
}

/// Copies the stream into `tmp` (created new, 0600), refusing more than
/// `cap` bytes, a stream that did not end cleanly, and bytes that are not
/// a whole tar archive (no end-of-archive blocks: cut short).
async fn receive(mut stream: PageStream, tmp: &Path, cap: u64) -> std::result::Result<(), String> {
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?
    };
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
                "it is over the cap of {} ({cap} bytes)",
                human_bytes(cap)
            ));
        }
        file.write_all(&buf[..n])
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
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    Ok(())
}

/// A harness at start asks whether to restore: nothing, or the kept
/// checkpoint's bytes, after which the marker is cleared only when the
/// harness says it unpacked them (and core's ack tells it so).
pub async fn serve_restore<S>(paths: &Paths, name: &AgentName, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let offer = match (restore_pending(paths, name), last(paths, name)) {
        (true, Some(c)) => Some(c),
        (true, None) => {
            tracing::error!(agent = %name, "a restore is pending but no checkpoint is kept");
            None
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
        let mut file = tokio::fs::File::open(dir(paths, name).join(FILE)).await?;
        let bytes = file.metadata().await?.len();
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
        Ok(Ok(RestoreDone { error, .. })) => {
            tracing::warn!(agent = %name, "the harness refused its checkpoint: {}",
                error.unwrap_or_default());
        }
        Ok(Err(e)) => tracing::warn!(agent = %name, "restore broke off: {e}"),
        Err(_) => tracing::warn!(agent = %name, "restore timed out"),
    }
}
