//! Waking on a file appearing or going, through inotify: the pause marker
//! core writes into the control dir and the credentials a login leaves in
//! the state dir reach a parked harness at once, instead of at its next
//! re-check.
//!
//! A [`DirWatch`] watches whole directories (core replaces the marker by
//! rename, a login creates its credentials dir first): any entry created,
//! removed, moved or written in one of them wakes [`DirWatch::changed`],
//! and the caller looks again. It is made *before* the caller's first look,
//! so a change between that look and the wait is never missed (its event
//! waits in the queue).
//!
//! The `inotify` crate, not `notify`: the harness runs only on Linux (in
//! a sandbox), needs nothing but "something changed in this directory",
//! and `inotify`'s event stream sits on tokio's reactor — `notify` would
//! add a watcher thread, a channel and cross-platform backends for that.

use std::path::Path;

use futures_util::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};

/// The events that may change what a directory holds.
fn changes() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CLOSE_WRITE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// Inotify watches on some directories.
pub struct DirWatch {
    events: EventStream<[u8; 1024]>,
}

impl DirWatch {
    /// Watches each of `dirs` that exists now (a missing one is skipped:
    /// watch its parent to see it appear). Fails only when inotify itself
    /// is not to be had.
    pub fn new<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> std::io::Result<Self> {
        let inotify = Inotify::init()?;
        for dir in dirs {
            match inotify.watches().add(dir, changes()) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Self {
            events: inotify.into_event_stream([0; 1024])?,
        })
    }

    /// Resolves once something changed in a watched directory.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        match self.events.next().await {
            Some(event) => event.map(drop),
            None => Err(std::io::Error::other("the inotify stream ended")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_file_made_removed_or_renamed_in_a_watched_dir_wakes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut watch = DirWatch::new([dir.path()]).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(quiet.is_err(), "woke with nothing changed");

        std::fs::write(dir.path().join("paused.tmp"), b"x").unwrap();
        std::fs::rename(dir.path().join("paused.tmp"), dir.path().join("paused")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("a rename in is seen")
            .unwrap();
        std::fs::remove_file(dir.path().join("paused")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("a removal is seen")
            .unwrap();
    }

    #[tokio::test]
    async fn a_missing_dir_is_skipped_and_its_parent_sees_it_appear() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join(".claude");
        let mut watch = DirWatch::new([dir.path(), sub.as_path()]).unwrap();
        std::fs::create_dir(&sub).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("the new dir is seen")
            .unwrap();
    }
}
