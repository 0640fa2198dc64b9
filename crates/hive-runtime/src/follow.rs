//! Waking a followed log when its container prints, instead of re-reading
//! it on a timer: inotify on the directory of a supervised child's log
//! file, the engine's own follow stream for docker, and a tick only for a
//! backend with neither (or where inotify cannot be had).
//!
//! An [`OutputWatch`] says only "there may be more": the follower re-reads
//! the tail and diffs it, so a spurious wake costs a read and a missed
//! event is impossible as long as the watch is made before the first read.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use inotify::{EventStream, Inotify, WatchMask};

/// How often a backend without events is re-read: the old poll.
pub const TICK: Duration = Duration::from_millis(500);

/// Wakes when a container may have printed more.
pub struct OutputWatch(Inner);

enum Inner {
    File(Box<EventStream<[u8; 1024]>>),
    Stream(BoxStream<'static, ()>),
    Tick(tokio::time::Interval),
}

impl OutputWatch {
    /// Watches the directory of `log` (the file may not exist yet, and
    /// every write to it is a `MODIFY` of an entry there); a tick where
    /// inotify cannot be had.
    pub fn file(log: &Path) -> Self {
        let dir = log.parent().unwrap_or(Path::new("/"));
        let watch = Inotify::init().and_then(|inotify| {
            inotify.watches().add(
                dir,
                WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
            )?;
            inotify.into_event_stream([0; 1024])
        });
        match watch {
            Ok(events) => Self(Inner::File(Box::new(events))),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "no inotify for a followed log, re-reading every {TICK:?}: {e}");
                Self::tick()
            }
        }
    }

    /// Wakes on each chunk of `chunks` (the Engine's follow of a
    /// container's or service's output, from now on); once it ends or
    /// fails (the container stopped), on a tick, so a container started
    /// again is still followed.
    pub fn chunks<T: Send + 'static, E: Send + 'static>(
        chunks: impl futures_util::Stream<Item = std::result::Result<T, E>> + Send + 'static,
    ) -> Self {
        Self(Inner::Stream(
            chunks
                .take_while(|chunk| std::future::ready(chunk.is_ok()))
                .map(drop)
                .boxed(),
        ))
    }

    /// Wakes every [`TICK`].
    pub fn tick() -> Self {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.reset();
        Self(Inner::Tick(interval))
    }

    /// Resolves once there may be more output.
    pub async fn changed(&mut self) {
        match &mut self.0 {
            Inner::File(events) => match events.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("inotify on a followed log: {e}; re-reading every {TICK:?}");
                    *self = Self::tick();
                }
                None => *self = Self::tick(),
            },
            Inner::Stream(stream) => {
                if stream.next().await.is_none() {
                    *self = Self::tick();
                }
            }
            Inner::Tick(interval) => {
                interval.tick().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[tokio::test]
    async fn a_write_to_the_log_wakes_its_watch_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("container.log");
        let mut watch = OutputWatch::file(&log);
        let quiet = tokio::time::timeout(Duration::from_millis(800), watch.changed()).await;
        assert!(quiet.is_err(), "woke with nothing written (a tick?)");
        let mut file = std::fs::File::create(&log).unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("the log's creation is seen");
        file.write_all(b"hello\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .expect("a write is seen");
    }
}
