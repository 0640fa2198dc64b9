//! Bounded JSON-lines framing for every socket core serves.
//!
//! One request line in, one response line out. A line is read in small
//! chunks into a buffer that grows only as bytes arrive, and every byte of
//! buffer past a small first chunk is charged to a process-wide
//! [`LineBudget`] before it is allocated: a single line stops at
//! [`hive_proto::MAX_REQUEST_LINE`], and all partial lines together stop
//! at the budget, however many connections hold one. The free first chunk
//! (bounded by the connection caps) keeps small requests answerable while
//! the budget is spent. A request that is over-long, over budget, not UTF-8, not JSON,
//! or names an unknown verb is answered with an error naming the problem.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use hive_proto::MAX_REQUEST_LINE;

/// Bytes of line buffer all connections of the daemon may hold at once.
pub const LINE_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// The first allocation of a connection's line buffer, not charged to the
/// budget; it doubles from here up to one line's maximum as bytes arrive.
const FIRST_CHUNK: usize = 1024;
/// Largest buffer a reader keeps between lines; a bigger one is freed once
/// its line has been handed out.
const KEEP_CAPACITY: usize = 4 * 1024;

/// Why a request line could not be decoded; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request line exceeds {MAX_REQUEST_LINE} bytes")]
    TooLong,
    #[error("the daemon is holding too many partial request lines; try again")]
    OverBudget,
    #[error("request is not valid UTF-8")]
    NotUtf8,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown verb `{verb}`: {expected}")]
    UnknownVerb { verb: String, expected: String },
    #[error("invalid `{verb}` request: {reason}")]
    Invalid { verb: String, reason: String },
}

impl RequestError {
    /// The line could not be framed (its bytes were dropped): the
    /// connection cannot go on and is closed after the answer.
    pub fn is_fatal(&self) -> bool {
        matches!(self, RequestError::TooLong | RequestError::OverBudget)
    }
}

/// Bytes of line buffer shared by every reader that draws on it: a
/// semaphore whose permits are bytes.
#[derive(Debug)]
pub struct LineBudget(Semaphore);

impl LineBudget {
    pub const fn new(bytes: usize) -> Self {
        Self(Semaphore::const_new(bytes))
    }

    /// The daemon's one budget of [`LINE_BUDGET_BYTES`].
    pub fn global() -> &'static LineBudget {
        static GLOBAL: LineBudget = LineBudget::new(LINE_BUDGET_BYTES);
        &GLOBAL
    }

    /// Bytes not charged to any reader.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }

    fn take(&self, bytes: usize) -> bool {
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        match self.0.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    fn give(&self, bytes: usize) {
        if bytes > 0 {
            self.0.add_permits(bytes);
        }
    }
}

/// What one [`LineReader::fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// This many bytes arrived.
    Read(usize),
    /// The client closed its end (or the read failed).
    Eof,
    /// The buffer already holds more than one line may be: nothing read.
    Full,
    /// The budget could not cover a bigger buffer: nothing read.
    OverBudget,
}

/// Reads newline-terminated lines from `R`, holding at most one line's
/// maximum plus one byte, every byte past [`FIRST_CHUNK`] charged to a
/// [`LineBudget`].
/// Bytes after a line stay buffered for the next one.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes of `buf`'s capacity past [`FIRST_CHUNK`] (or of the last line
    /// handed out, until the next read) charged to `budget`.
    charged: usize,
    budget: &'static LineBudget,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(inner: R, budget: &'static LineBudget) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            charged: 0,
            budget,
        }
    }

    /// Bytes received and not yet returned as a line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Reads one line of at most [`MAX_REQUEST_LINE`] bytes (newline and
    /// a preceding `\r` excluded). `Ok(None)` means the client closed
    /// without completing a line. Cancel-safe: bytes read before a
    /// cancellation stay buffered.
    ///
    /// The returned line stays charged to the budget until the next read
    /// or fill (or until the reader is dropped): the caller decodes it in
    /// between.
    pub async fn read_line(&mut self) -> std::io::Result<Option<Result<String, RequestError>>> {
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf.shrink_to(KEEP_CAPACITY.max(self.buf.len()));
        }
        self.settle();
        let mut scanned = 0;
        loop {
            if let Some(at) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + at;
                if end > MAX_REQUEST_LINE {
                    return Ok(Some(Err(self.too_long())));
                }
                return Ok(Some(self.take_line(end)));
            }
            scanned = self.buf.len();
            match self.fill().await? {
                Fill::Read(_) => {}
                Fill::Eof if self.buf.is_empty() => return Ok(None),
                // A last line without its newline still counts.
                Fill::Eof => {
                    let end = self.buf.len();
                    return Ok(Some(self.take_line(end)));
                }
                Fill::Full => return Ok(Some(Err(self.too_long()))),
                Fill::OverBudget => {
                    self.release();
                    return Ok(Some(Err(RequestError::OverBudget)));
                }
            }
        }
    }

    /// Reads what the client sends next into the buffer (growing it, on
    /// budget, up to one line's maximum plus one byte). Cancel-safe.
    pub async fn fill(&mut self) -> std::io::Result<Fill> {
        self.settle();
        if self.buf.len() > MAX_REQUEST_LINE {
            return Ok(Fill::Full);
        }
        if self.buf.len() == self.buf.capacity() && !self.grow() {
            return Ok(Fill::OverBudget);
        }
        // `buf` has spare capacity, so `read_buf` fills it without growing.
        match self.inner.read_buf(&mut self.buf).await? {
            0 => Ok(Fill::Eof),
            n => Ok(Fill::Read(n)),
        }
    }

    /// Doubles the buffer, capped at one line's maximum plus one byte,
    /// charging the difference first.
    fn grow(&mut self) -> bool {
        let cap = self.buf.capacity();
        let target = (cap * 2).clamp(FIRST_CHUNK, MAX_REQUEST_LINE + 1);
        let extra = chargeable(target).saturating_sub(self.charged);
        if !self.budget.take(extra) {
            return false;
        }
        self.charged += extra;
        self.buf.reserve_exact(target - self.buf.len());
        self.settle_up();
        true
    }

    /// Hands out `buf[..end]` as the line and keeps what follows it.
    fn take_line(&mut self, end: usize) -> Result<String, RequestError> {
        let rest = self.buf.split_off((end + 1).min(self.buf.len()));
        let mut line = std::mem::replace(&mut self.buf, rest);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|_| RequestError::NotUtf8)
    }

    fn too_long(&mut self) -> RequestError {
        self.release();
        RequestError::TooLong
    }

    /// Frees the buffer (its connection is about to be answered and closed).
    fn release(&mut self) {
        self.buf = Vec::new();
        self.settle();
    }

    /// Returns the charge beyond the buffer's capacity (a line handed out,
    /// a buffer shrunk or freed).
    fn settle(&mut self) {
        let cap = chargeable(self.buf.capacity());
        if cap < self.charged {
            self.budget.give(self.charged - cap);
            self.charged = cap;
        }
    }

    /// The allocator may round a reservation up; charge what was really
    /// allocated (`take` failing here only means it is briefly over).
    fn settle_up(&mut self) {
        let cap = chargeable(self.buf.capacity());
        if cap > self.charged && self.budget.take(cap - self.charged) {
            self.charged = cap;
        }
    }
}

/// The part of a buffer of `capacity` bytes that the budget pays for.
fn chargeable(capacity: usize) -> usize {
    capacity.saturating_sub(FIRST_CHUNK)
}

impl<R> Drop for LineReader<R> {
    fn drop(&mut self) {
        self.budget.give(self.charged);
    }
}

/// Decodes a request tagged `cmd`, turning serde's messages into ones an
/// operator can act on.
pub fn decode<T: DeserializeOwned>(line: &str) -> Result<T, RequestError> {
    // The common case in one pass; the slow path below only names errors.
    if let Ok(request) = serde_json::from_str(line) {
        return Ok(request);
    }
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| RequestError::Malformed(e.to_string()))?;
    let verb = match value.get("cmd") {
        Some(serde_json::Value::String(verb)) => verb.clone(),
        Some(_) => return Err(RequestError::Malformed("`cmd` must be a string".into())),
        None if value.is_object() => {
            return Err(RequestError::Malformed("missing `cmd` field".into()));
        }
        None => return Err(RequestError::Malformed("expected a JSON object".into())),
    };
    serde_json::from_value(value).map_err(|e| {
        let reason = e.to_string();
        match reason.strip_prefix(&format!("unknown variant `{verb}`, ")) {
            Some(expected) => RequestError::UnknownVerb {
                verb,
                expected: expected.to_owned(),
            },
            None => RequestError::Invalid { verb, reason },
        }
    })
}

/// Writes `line` (one JSON document, no newline) and a newline, and
/// flushes.
pub async fn write_raw_line<W: AsyncWrite + Unpin>(
    writer: &mut W,
    line: &str,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.flush().await
}

/// Writes `value` as one JSON line and flushes.
pub async fn write_line<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    value: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_proto::HostRequest;

    fn decode_err(line: &str) -> String {
        decode::<HostRequest>(line).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(
            decode_err("nope"),
            "malformed request: expected ident at line 1 column 2"
        );
        assert_eq!(
            decode_err("[1]"),
            "malformed request: expected a JSON object"
        );
        assert_eq!(
            decode_err(r#"{"name":"a"}"#),
            "malformed request: missing `cmd` field"
        );
        assert_eq!(
            decode_err(r#"{"cmd":7}"#),
            "malformed request: `cmd` must be a string"
        );
        assert!(
            decode_err(r#"{"cmd":"fly"}"#)
                .starts_with("unknown verb `fly`: expected one of `spawn`"),
            "{}",
            decode_err(r#"{"cmd":"fly"}"#)
        );
        assert_eq!(
            decode_err(r#"{"cmd":"spawn"}"#),
            "invalid `spawn` request: missing field `name`"
        );
    }

    fn budget(bytes: usize) -> &'static LineBudget {
        Box::leak(Box::new(LineBudget::new(bytes)))
    }

    async fn line_of(input: &[u8]) -> Option<Result<String, RequestError>> {
        LineReader::new(input, budget(4 * MAX_REQUEST_LINE))
            .read_line()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut two = LineReader::new(
            &b"{\"cmd\":\"list\"}\r\n{\"cmd\":\"pending\"}"[..],
            budget(4096),
        );
        assert_eq!(
            two.read_line().await.unwrap(),
            Some(Ok("{\"cmd\":\"list\"}".into()))
        );
        assert_eq!(
            two.read_line().await.unwrap(),
            Some(Ok("{\"cmd\":\"pending\"}".into())),
            "the bytes after a line are the next line; EOF ends the last"
        );
        assert_eq!(two.read_line().await.unwrap(), None);

        let long = vec![b'x'; MAX_REQUEST_LINE + 10];
        assert_eq!(line_of(&long).await, Some(Err(RequestError::TooLong)));
        let mut long_line = vec![b'x'; MAX_REQUEST_LINE + 1];
        long_line.push(b'\n');
        assert_eq!(line_of(&long_line).await, Some(Err(RequestError::TooLong)));
        let mut exact = vec![b' '; MAX_REQUEST_LINE];
        exact.push(b'\n');
        assert!(matches!(line_of(&exact).await, Some(Ok(_))));
        assert_eq!(
            line_of(b"\xff\xfe\n").await,
            Some(Err(RequestError::NotUtf8))
        );
        assert_eq!(line_of(b"").await, None);
    }

    #[tokio::test]
    async fn partial_lines_share_one_budget() {
        let budget = budget(8 * 1024);
        let (mut a_client, a_server) = tokio::io::duplex(64 * 1024);
        let (mut b_client, b_server) = tokio::io::duplex(64 * 1024);
        let mut a = LineReader::new(a_server, budget);
        let mut b = LineReader::new(b_server, budget);

        a_client.write_all(&[b'a'; 3000]).await.unwrap();
        while a.buffered() < 3000 {
            assert!(matches!(a.fill().await.unwrap(), Fill::Read(_)));
        }
        assert_eq!(
            budget.available(),
            8 * 1024 - 3072,
            "a holds 4 KiB, the first one free"
        );

        b_client.write_all(&[b'b'; 6000]).await.unwrap();
        assert_eq!(
            b.read_line().await.unwrap(),
            Some(Err(RequestError::OverBudget)),
            "b cannot grow past what a leaves"
        );
        assert_eq!(budget.available(), 8 * 1024 - 3072, "b gave back its part");

        a_client.write_all(b"\n").await.unwrap();
        assert_eq!(a.read_line().await.unwrap().unwrap().unwrap().len(), 3000);
        a_client.write_all(b"next").await.unwrap();
        assert!(matches!(a.fill().await.unwrap(), Fill::Read(4)));
        assert_eq!(
            budget.available(),
            8 * 1024,
            "a handed-out line is no longer charged once reading resumes"
        );

        // With the budget spent, a small request still fits the free chunk.
        let (mut c_client, c_server) = tokio::io::duplex(64 * 1024);
        let mut c = LineReader::new(c_server, budget);
        c_client.write_all(&[b'c'; 8000]).await.unwrap();
        while c.buffered() < 8000 {
            assert!(matches!(c.fill().await.unwrap(), Fill::Read(_)));
        }
        assert_eq!(budget.available(), 1024);
        let mut small = LineReader::new(&b"{\"cmd\":\"list\"}\n"[..], budget);
        assert_eq!(
            small.read_line().await.unwrap(),
            Some(Ok("{\"cmd\":\"list\"}".into()))
        );
        drop(c);
        drop(a);
        assert_eq!(
            budget.available(),
            8 * 1024,
            "dropping a reader frees it all"
        );
    }
}
