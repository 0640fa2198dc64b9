//! One connection to the daemon's host.sock: a request line out, response lines in.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hive_proto::{HostRequest, HostResponse};
use serde::Deserialize;

/// Longest response line accepted, newline excluded.
const MAX_RESPONSE_LINE: u64 = 64 * 1024 * 1024;
/// How long a quick verb (a lookup, a queue entry, a message) may take to answer.
pub(super) const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a lifecycle verb (which may build or stop containers) may take to answer.
const SLOW_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long writing the request line may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a bad response line an error message quotes.
const QUOTE_CHARS: usize = 200;

/// Sends `req` to the daemon at `socket` and returns its one response line,
/// decoded. A response with `ok:false` is returned, not turned into an error.
pub fn request(socket: &Path, req: &HostRequest) -> Result<HostResponse> {
    round_trip(socket, req).map(|(_, response)| response)
}

/// Like [`request`], also returning the raw response line.
pub(super) fn round_trip(socket: &Path, req: &HostRequest) -> Result<(String, HostResponse)> {
    let mut conn = Connection::open(socket)?;
    conn.set_read_timeout(Some(response_timeout(req)))?;
    conn.send(req)?;
    conn.next_response()?.ok_or_else(|| {
        anyhow!(
            "{} closed the connection without answering",
            socket.display()
        )
    })
}

/// How long to wait for the answer to `req`.
fn response_timeout(req: &HostRequest) -> Duration {
    use HostRequest::*;
    match req {
        List
        | Pending
        | AgentStatus { .. }
        | SubscribeAgentStatus
        | Urls
        | Deny { .. }
        | RequestSpawn { .. }
        | SetPaused { .. }
        | Send { .. }
        | Logs { .. }
        | Rollback { .. }
        | Questions
        | Answer { .. }
        | CancelQuestion { .. }
        | Show { .. }
        | Tasks { .. }
        | TaskAdd { .. }
        | TaskAssign { .. }
        | TaskCancel { .. } => QUICK_TIMEOUT,
        Spawn { .. }
        | Kill { .. }
        | Destroy { .. }
        | Rebuild { .. }
        | Checkpoint { .. }
        | Move { .. }
        | Approve { .. }
        | Start { .. }
        | Stop { .. }
        | Restart { .. } => SLOW_TIMEOUT,
    }
}

/// An open connection to host.sock.
pub(super) struct Connection {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    read_timeout: Option<Duration>,
}

impl Connection {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).map_err(|err| connect_error(path, err))?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .context("configuring the admin socket")?;
        Ok(Self {
            path: path.to_owned(),
            reader: BufReader::new(stream),
            read_timeout: None,
        })
    }

    /// Bounds every later read; `None` waits forever.
    pub(super) fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .context("configuring the admin socket")?;
        self.read_timeout = timeout;
        Ok(())
    }

    /// Writes `req` as one JSON line.
    pub(super) fn send(&mut self, req: &HostRequest) -> Result<()> {
        let mut line = serde_json::to_string(req).context("encoding the request")?;
        line.push('\n');
        let stream = self.reader.get_mut();
        stream
            .write_all(line.as_bytes())
            .and_then(|()| stream.flush())
            .with_context(|| format!("sending the request to {}", self.path.display()))
    }

    /// The next response line and its decoding, or `None` once the daemon
    /// has closed the connection.
    pub(super) fn next_response(&mut self) -> Result<Option<(String, HostResponse)>> {
        let mut buf = Vec::new();
        let read = (&mut self.reader)
            .take(MAX_RESPONSE_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|err| self.read_error(err))?;
        if read == 0 {
            return Ok(None);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if read as u64 > MAX_RESPONSE_LINE {
            bail!(
                "{} sent a response line longer than {MAX_RESPONSE_LINE} bytes",
                self.path.display()
            );
        }
        let line = String::from_utf8(buf).map_err(|_| {
            anyhow!(
                "{} sent a response line that is not UTF-8",
                self.path.display()
            )
        })?;
        let response = parse_response(&line)?;
        Ok(Some((line, response)))
    }

    fn read_error(&self, err: io::Error) -> anyhow::Error {
        let path = self.path.display();
        match (err.kind(), self.read_timeout) {
            (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(timeout)) => {
                anyhow!("no answer from {path} within {}s", timeout.as_secs())
            }
            _ => anyhow::Error::new(err).context(format!("reading the response from {path}")),
        }
    }
}

/// Decodes one response line, saying whether it was not JSON at all or JSON
/// of the wrong shape.
pub(super) fn parse_response(line: &str) -> Result<HostResponse> {
    let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
        format!(
            "the daemon sent a line that is not valid JSON: {}",
            quote(line)
        )
    })?;
    HostResponse::deserialize(value).with_context(|| {
        format!(
            "the daemon sent a line that is not a host response: {}",
            quote(line)
        )
    })
}

/// `line`, shortened for an error message.
fn quote(line: &str) -> String {
    if line.chars().count() <= QUOTE_CHARS {
        format!("{line:?}")
    } else {
        let head: String = line.chars().take(QUOTE_CHARS).collect();
        format!("{head:?}…")
    }
}

/// Turns a failed connect into a message that says what to do about it.
pub(super) fn connect_error(path: &Path, err: io::Error) -> anyhow::Error {
    let shown = path.display();
    match err.kind() {
        io::ErrorKind::NotFound => anyhow!("no socket at {shown} — is `hive serve` running?"),
        io::ErrorKind::ConnectionRefused => {
            let is_socket = std::fs::symlink_metadata(path).map(|m| m.file_type().is_socket());
            match is_socket {
                Ok(false) => anyhow!("{shown} is not a socket — check --socket / HIVE_SOCKET"),
                _ => anyhow!(
                    "connection refused at {shown}: nothing is listening (a stale socket?) — \
                     is `hive serve` running?"
                ),
            }
        }
        io::ErrorKind::PermissionDenied => anyhow!(
            "permission denied connecting to {shown} — run as the daemon's user, or check the \
             socket's and its directory's permissions"
        ),
        _ => anyhow::Error::new(err).context(format!("cannot connect to {shown}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_say_what_to_do() {
        let path = Path::new("/run/hive/host.sock");
        let message = |kind: io::ErrorKind| format!("{:#}", connect_error(path, kind.into()));
        assert_eq!(
            message(io::ErrorKind::NotFound),
            "no socket at /run/hive/host.sock — is `hive serve` running?"
        );
        assert_eq!(
            message(io::ErrorKind::ConnectionRefused),
            "connection refused at /run/hive/host.sock: nothing is listening (a stale socket?) — \
             is `hive serve` running?"
        );
        assert_eq!(
            message(io::ErrorKind::PermissionDenied),
            "permission denied connecting to /run/hive/host.sock — run as the daemon's user, or \
             check the socket's and its directory's permissions"
        );
        assert!(message(io::ErrorKind::InvalidInput).starts_with("cannot connect to /run/hive/"));
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse_response("hello").unwrap_err();
        assert!(
            format!("{err:#}")
                .starts_with("the daemon sent a line that is not valid JSON: \"hello\""),
            "{err:#}"
        );
        let err = parse_response(r#"{"version":1}"#).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(
                r#"the daemon sent a line that is not a host response: "{\"version\":1}""#
            ),
            "{err:#}"
        );
        let long = "x".repeat(500);
        let err = format!("{:#}", parse_response(&long).unwrap_err());
        assert!(
            err.contains(&format!("\"{}\"…", "x".repeat(QUOTE_CHARS))),
            "{err}"
        );
    }

    #[test]
    fn lifecycle_verbs_get_the_long_timeout() {
        let name = hive_proto::AgentName::parse("coder").unwrap();
        assert_eq!(response_timeout(&HostRequest::List), QUICK_TIMEOUT);
        assert_eq!(
            response_timeout(&HostRequest::Rebuild { name }),
            SLOW_TIMEOUT
        );
    }
}
