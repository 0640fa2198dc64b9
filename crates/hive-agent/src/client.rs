//! The agent socket's client: one JSON line out, one JSON line back, one
//! connection per request (a long-poll `recv` simply holds it open).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_proto::{AgentRequest, AgentResponse, MAX_REQUEST_LINE};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::error::{Error, Result};

/// Slack on top of a long-poll's own wait before the client gives up.
const RESPONSE_SLACK: Duration = Duration::from_secs(30);

/// Talks to one agent (or the manager) socket.
#[derive(Debug, Clone)]
pub struct SocketClient {
    path: PathBuf,
}

impl SocketClient {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request`, returns the daemon's answer (an `err` answer is
    /// returned as is, not as an `Err`).
    pub async fn request(&self, request: &AgentRequest) -> Result<AgentResponse> {
        let wait = match request {
            AgentRequest::Recv { wait_seconds, .. } => {
                Duration::from_secs(wait_seconds.unwrap_or(hive_proto::DEFAULT_WAIT_SECONDS))
            }
            _ => Duration::ZERO,
        };
        self.raw(request, wait + RESPONSE_SLACK).await
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
    pub async fn raw<T: Serialize + ?Sized>(
        &self,
        request: &T,
        timeout: Duration,
    ) -> Result<AgentResponse> {
        let answer = self.raw_line(request, timeout).await?;
        serde_json::from_str(&answer).map_err(|e| self.err(format!("bad answer {answer:?}: {e}")))
    }

    /// Like [`raw`](Self::raw), returning the answer as plain JSON (for
    /// answers this build's protocol does not know).
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
        let line = serde_json::to_string(request).map_err(|e| self.err(e))?;
        match tokio::time::timeout(timeout, self.roundtrip(&line)).await {
            Ok(result) => result,
            Err(_) => Err(self.err(format!("no answer within {}s", timeout.as_secs()))),
        }
    }

    async fn roundtrip(&self, line: &str) -> Result<String> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| self.err(format!("connect: {e}")))?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| self.err(format!("write: {e}")))?;
        let mut reader = BufReader::new(read).take(MAX_REQUEST_LINE as u64 * 8);
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .await
            .map_err(|e| self.err(format!("read: {e}")))?;
        if n == 0 {
            return Err(self.err("the daemon closed the connection without answering"));
        }
        Ok(answer.trim_end().to_owned())
    }

    fn err(&self, message: impl ToString) -> Error {
        Error::Socket {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }
}
