//! Binding unix sockets and running their accept loops.
//!
//! Each connection gets its own task, so a slow or silent client never
//! holds up another; a semaphore caps concurrent connections per socket.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::jsonl::{self, RequestError};
use crate::paths::{self, MAX_SOCKET_PATH};

/// Concurrent connections one socket serves; more wait in the backlog.
const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    F: Fn(UnixStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One accepted connection, split for the request/response exchange.
pub struct Connection {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Connection {
    pub fn new(stream: UnixStream) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader: BufReader::new(reader),
            writer,
        }
    }

    /// Reads the request line within [`REQUEST_TIMEOUT`]. `None`: the client
    /// left or stalled, and there is nobody to answer.
    pub async fn request_line(&mut self) -> Option<Result<String, RequestError>> {
        match tokio::time::timeout(REQUEST_TIMEOUT, jsonl::read_line(&mut self.reader)).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                tracing::debug!("read failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!("client sent no request within {REQUEST_TIMEOUT:?}");
                None
            }
        }
    }

    /// Writes one response line.
    pub async fn respond<T: serde::Serialize>(&mut self, response: &T) -> std::io::Result<()> {
        jsonl::write_line(&mut self.writer, response).await
    }
}
