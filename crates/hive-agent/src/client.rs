//! The agent socket's client: JSON lines over persistent connections.
//!
//! A request takes an idle connection from a small pool (or opens one),
//! writes its line, reads its answer line and puts the connection back, so
//! consecutive requests share one connection and concurrent ones get their
//! own. A request whose future is dropped midway (a long-poll `recv` given
//! up) drops its connection with it: core then knows the answer, if any,
//! was never read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hive_proto::{AgentAnswer, AgentRequest, AgentResponse, MAX_REQUEST_LINE};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::error::{Error, Result};

/// Slack on top of a long-poll's own wait before the client gives up.
const RESPONSE_SLACK: Duration = Duration::from_secs(30);
/// Idle connections kept per client.
const POOL_SIZE: usize = 4;

/// One open connection to the socket.
#[derive(Debug)]
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Conn {
    /// Whether core closed this idle connection (evicted, or restarted).
    fn closed(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(
            self.reader.get_ref().try_read(&mut probe),
            Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
        ) || !self.reader.buffer().is_empty()
    }
}

/// Talks to one agent (or the manager) socket.
#[derive(Debug, Clone)]
pub struct SocketClient {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl SocketClient {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            idle: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request`, returns the daemon's answer with the unread count
    /// it carries (an `err` answer is returned as is, not as an `Err`).
    pub async fn answer(&self, request: &AgentRequest) -> Result<AgentAnswer> {
        let wait = match request {
            AgentRequest::Recv { wait_seconds, .. } => {
                Duration::from_secs(wait_seconds.unwrap_or(hive_proto::DEFAULT_WAIT_SECONDS))
            }
            _ => Duration::ZERO,
        };
        self.raw_answer(request, wait + RESPONSE_SLACK).await
    }

    /// [`answer`](Self::answer) without the unread count.
    pub async fn request(&self, request: &AgentRequest) -> Result<AgentResponse> {
        Ok(self.answer(request).await?.response)
    }

    /// Like [`request`](Self::request), with an `err` answer turned into
    /// [`Error::Refused`].
    pub async fn call(&self, request: &AgentRequest) -> Result<AgentResponse> {
        match self.request(request).await? {
            AgentResponse::Err { message } => Err(Error::Refused(message)),
            response => Ok(response),
        }
    }

    /// Sends any serializable request line (used for manager verbs and for
    /// verbs this build's protocol does not know yet).
    pub async fn raw_answer<T: Serialize + ?Sized>(
        &self,
        request: &T,
        timeout: Duration,
    ) -> Result<AgentAnswer> {
        let answer = self.raw_line(request, timeout).await?;
        AgentAnswer::from_line(&answer).map_err(|e| self.err(format!("bad answer {answer:?}: {e}")))
    }

    /// Like [`raw_answer`](Self::raw_answer), returning the answer as plain
    /// JSON (for answers this build's protocol does not know).
    pub async fn raw_value<T: Serialize + ?Sized>(
        &self,
        request: &T,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let answer = self.raw_line(request, timeout).await?;
        serde_json::from_str(&answer).map_err(|e| self.err(format!("bad answer {answer:?}: {e}")))
    }

    async fn raw_line<T: Serialize + ?Sized>(
        &self,
        request: &T,
        timeout: Duration,
    ) -> Result<String> {
        let mut line = serde_json::to_string(request).map_err(|e| self.err(e))?;
        line.push('\n');
        match tokio::time::timeout(timeout, self.roundtrip(&line)).await {
            Ok(result) => result,
            Err(_) => Err(self.err(format!("no answer within {}s", timeout.as_secs()))),
        }
    }

    /// An idle pooled connection core has not closed, else a new one.
    async fn checkout(&self) -> Result<(Conn, bool)> {
        loop {
            let pooled = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match pooled {
                Some(conn) if conn.closed() => continue,
                Some(conn) => return Ok((conn, true)),
                None => break,
            }
        }
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| self.err(format!("connect: {e}")))?;
        let (read, writer) = stream.into_split();
        Ok((
            Conn {
                reader: BufReader::new(read),
                writer,
            },
            false,
        ))
    }

    async fn roundtrip(&self, line: &str) -> Result<String> {
        let (mut conn, reused) = self.checkout().await?;
        if let Err(e) = conn.writer.write_all(line.as_bytes()).await {
            if !reused {
                return Err(self.err(format!("write: {e}")));
            }
            // Core closed the pooled connection before reading anything:
            // the line went nowhere, so a fresh connection may carry it.
            conn = self.checkout_fresh().await?;
            conn.writer
                .write_all(line.as_bytes())
                .await
                .map_err(|e| self.err(format!("write: {e}")))?;
        }
        let mut answer = String::new();
        let n = (&mut conn.reader)
            .take(MAX_REQUEST_LINE as u64 * 8)
            .read_line(&mut answer)
            .await
            .map_err(|e| self.err(format!("read: {e}")))?;
        if n == 0 || !answer.ends_with('\n') {
            return Err(self.err("the daemon closed the connection without answering"));
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < POOL_SIZE {
            idle.push(conn);
        }
        answer.truncate(answer.trim_end().len());
        Ok(answer)
    }

    async fn checkout_fresh(&self) -> Result<Conn> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(self.checkout().await?.0)
    }

    fn err(&self, message: impl ToString) -> Error {
        Error::Socket {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }
}
