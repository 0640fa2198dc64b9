//! Binding unix sockets and running their accept loops.
//!
//! Each connection gets its own task, so a slow or silent client never
//! holds up another. A connection is persistent: it carries any number of
//! request lines, answered in order (a client that sends one line and
//! closes is the case of one). [`Connection`] is generic over its read and
//! write halves, so the same serving code can run over another transport. A socket serves at most [`MAX_CONNECTIONS`] at once,
//! and idle connections never make a new client wait: when the cap is
//! reached, the accept loop evicts the connection that has been idle
//! longest — one still waiting for its request line, or one parked in a
//! long-poll or a stream (see [`Connection::interrupted`]). Only when every
//! slot is busy answering a request does a new client wait in the backlog.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

use crate::jsonl::{self, Fill, LineBudget, LineReader, RequestError};
use crate::paths::{self, MAX_SOCKET_PATH};

/// Connections one socket serves at once.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send its first request line, counted
/// from the moment it connects. Our clients write it at once. Between
/// later requests a connection is idle: it stays open for as long as no
/// newcomer needs its slot.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one response line may take to reach a client that reads it.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds `path` with the socket mode, creating its directory. A stale
/// socket file is replaced; a live one (another daemon) is an error.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "socket path {} is {} bytes, over the kernel's {MAX_SOCKET_PATH}: choose a shorter --run-dir",
            path.display(),
            path.as_os_str().len()
        );
    }
    if let Some(dir) = path.parent() {
        paths::create_dir(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is already served by another process: is a hive already running?",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("remove stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    paths::restrict_socket(path)?;
    Ok(listener)
}

/// Accepts connections forever, running `handle` on each in its own task.
pub async fn accept_loop<F, Fut>(listener: UnixListener, handle: F)
where
    F: Fn(Connection) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = slots.admit().await;
        tokio::spawn(handle(Connection::new(stream, slot)));
    }
}

/// Accepts raw streams forever (a socket that does not speak JSON lines:
/// the egress proxy), at most `cap` at once; more wait in the backlog.
/// Only the agent the socket belongs to can fill it.
pub async fn accept_streams<F, Fut>(listener: UnixListener, cap: usize, handle: F)
where
    F: Fn(UnixStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(cap));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let conn = handle(stream);
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The connection slots of a socket that is not a unix listener (an
/// agent's channel on the link): at most [`MAX_CONNECTIONS`], the
/// longest-idle evicted for a newcomer, as on [`accept_loop`]'s sockets.
#[derive(Debug, Clone)]
pub struct Cap(Arc<Slots>);

impl Default for Cap {
    fn default() -> Self {
        Self(Slots::new(MAX_CONNECTIONS))
    }
}

impl Cap {
    /// A connection over `reader` and `writer`, once it has a slot.
    pub async fn admit<R: AsyncRead + Unpin, W>(&self, reader: R, writer: W) -> Connection<R, W> {
        Connection {
            reader: LineReader::new(reader, LineBudget::global()),
            writer,
            slot: self.0.admit().await,
            served: 0,
        }
    }
}

/// The connections of one socket: how many hold a slot, and which of them
/// are idle (evictable), longest idle first.
#[derive(Debug)]
struct Slots {
    cap: usize,
    state: Mutex<SlotState>,
    /// Fires when a slot frees or a connection turns idle.
    changed: Notify,
}

#[derive(Debug, Default)]
struct SlotState {
    live: usize,
    next_idle: u64,
    idle: BTreeMap<u64, Arc<Eviction>>,
}

/// A connection's eviction notice.
#[derive(Debug, Default)]
struct Eviction {
    /// Set (under the slots' lock) when the slot passed to a newcomer.
    evicted: AtomicBool,
    notify: Notify,
}

impl Slots {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            state: Mutex::default(),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection: a free one, else the longest-idle
    /// connection's; waits only while every slot is busy.
    async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(slot) = self.try_admit() {
                return slot;
            }
            changed.await;
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.lock();
        if state.live < self.cap {
            state.live += 1;
        } else {
            let (_, victim) = state.idle.pop_first()?;
            // The victim's slot passes to the newcomer now; the victim
            // closes as soon as its task sees the notice.
            victim.evicted.store(true, Ordering::Relaxed);
            victim.notify.notify_one();
            tracing::debug!("connection cap reached: evicted the longest-idle connection");
        }
        Some(Slot {
            slots: self.clone(),
            eviction: Arc::default(),
        })
    }
}

/// One connection's place among its socket's [`MAX_CONNECTIONS`].
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    eviction: Arc<Eviction>,
}

impl Slot {
    /// Marks the connection idle (evictable) until the guard drops.
    fn idle(&self) -> IdleGuard<'_> {
        let mut state = self.slots.lock();
        let key = if self.eviction.evicted.load(Ordering::Relaxed) {
            None
        } else {
            let key = state.next_idle;
            state.next_idle += 1;
            state.idle.insert(key, self.eviction.clone());
            Some(key)
        };
        drop(state);
        self.slots.changed.notify_waiters();
        IdleGuard { slot: self, key }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        if !self.eviction.evicted.load(Ordering::Relaxed) {
            state.live -= 1;
        }
        drop(state);
        self.slots.changed.notify_waiters();
    }
}

struct IdleGuard<'a> {
    slot: &'a Slot,
    key: Option<u64>,
}

impl IdleGuard<'_> {
    /// Resolves once the slot has passed to a newcomer.
    async fn evicted(&self) {
        let eviction = &self.slot.eviction;
        let notified = eviction.notify.notified();
        if self.key.is_none() || eviction.evicted.load(Ordering::Relaxed) {
            return;
        }
        notified.await;
    }
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.slot.slots.lock().idle.remove(&key);
        }
    }
}

/// Why [`Connection::interrupted`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// The client closed its end (or its socket failed).
    HungUp,
    /// The socket's cap was reached and this was the longest-idle
    /// connection: its slot went to a newcomer.
    Evicted,
}

/// One accepted connection: a budgeted line reader, the write half, and
/// its slot (released when the connection drops).
pub struct Connection<R = OwnedReadHalf, W = OwnedWriteHalf> {
    reader: LineReader<R>,
    writer: W,
    slot: Slot,
    /// Request lines read so far.
    served: u64,
}

impl Connection {
    fn new(stream: UnixStream, slot: Slot) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader: LineReader::new(reader, LineBudget::global()),
            writer,
            slot,
            served: 0,
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    /// Reads the next request line — the first within [`REQUEST_TIMEOUT`];
    /// until it is complete the connection is idle and may be evicted
    /// (unless the line is already waiting to be read). `None`: the client
    /// left, stalled or was evicted, and there is nobody to answer.
    pub async fn request_line(&mut self) -> Option<Result<String, RequestError>> {
        let idle = self.slot.idle();
        let deadline = if self.served == 0 {
            REQUEST_TIMEOUT
        } else {
            // Persistent: no deadline between requests, only eviction.
            Duration::MAX
        };
        self.served += 1;
        let read = tokio::time::timeout(deadline, self.reader.read_line());
        tokio::select! {
            read = read => match read {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => {
                    tracing::debug!("read failed: {e}");
                    None
                }
                Err(_) => {
                    tracing::debug!("client sent no request within {REQUEST_TIMEOUT:?}");
                    None
                }
            },
            // Eviction is for silent clients: a line that has already
            // arrived is served even though its slot went to a newcomer.
            () = idle.evicted() => match self.reader.read_line().now_or_never() {
                Some(Ok(line)) => line,
                _ => None,
            },
        }
    }

    /// Waits, as an idle connection, until the client hangs up or the slot
    /// is needed by a newcomer. For a long-poll or a stream, raced against
    /// whatever it waits for: anything the client sends meanwhile stays
    /// buffered for its next request line. Cancel-safe.
    pub async fn interrupted(&mut self) -> Interrupted {
        let idle = self.slot.idle();
        tokio::select! {
            () = hung_up(&mut self.reader) => Interrupted::HungUp,
            () = idle.evicted() => Interrupted::Evicted,
        }
    }

    /// Writes one response line within [`WRITE_TIMEOUT`].
    pub async fn respond<T: serde::Serialize>(&mut self, response: &T) -> std::io::Result<()> {
        within_write_timeout(jsonl::write_line(&mut self.writer, response)).await
    }

    /// Writes one already-encoded response line within [`WRITE_TIMEOUT`].
    pub async fn respond_line(&mut self, line: &str) -> std::io::Result<()> {
        within_write_timeout(jsonl::write_raw_line(&mut self.writer, line)).await
    }
}

async fn within_write_timeout(
    write: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("client read no response within {WRITE_TIMEOUT:?}"),
            ))
        })
}

/// Resolves when the read half reaches EOF or fails. Bytes that arrive are
/// kept; once the buffer is full (or off budget) it stops watching.
async fn hung_up<R: AsyncRead + Unpin>(reader: &mut LineReader<R>) {
    loop {
        match reader.fill().await {
            Ok(Fill::Read(_)) => {}
            Ok(Fill::Eof) | Err(_) => return,
            Ok(Fill::Full | Fill::OverBudget) => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_socket_evicts_its_longest_idle_connection() {
        let slots = Slots::new(2);
        let busy = slots.admit().await;
        let first = slots.admit().await;
        let first_idle = first.idle();
        // The cap is reached; the only idle connection goes.
        let third = slots.admit().await;
        first_idle.evicted().await;
        drop(first_idle);
        drop(first);
        assert_eq!(slots.lock().live, 2, "the evicted slot passed on");

        // Every slot busy: a newcomer waits until one frees.
        assert!(slots.try_admit().is_none());
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.admit().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(busy);
        let fourth = waiting.await.unwrap();
        assert_eq!(slots.lock().live, 2);

        // Turning idle makes a waiting newcomer take the slot.
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.admit().await }
        });
        tokio::task::yield_now().await;
        let idle = third.idle();
        idle.evicted().await;
        waiting.await.unwrap();
        drop(fourth);
    }
}
