//! Bounded JSON-lines framing for every socket core serves.
//!
//! One request line in, one response line out. A line is read with a hard
//! cap ([`hive_proto::MAX_REQUEST_LINE`]) so a client can never make the
//! daemon buffer more than that; a request that is over-long, not UTF-8,
//! not JSON, or names an unknown verb is answered with an error naming the
//! problem.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use hive_proto::MAX_REQUEST_LINE;

/// Why a request line could not be decoded; the text goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request line exceeds {MAX_REQUEST_LINE} bytes")]
    TooLong,
    #[error("request is not valid UTF-8")]
    NotUtf8,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown verb `{verb}`: {expected}")]
    UnknownVerb { verb: String, expected: String },
    #[error("invalid `{verb}` request: {reason}")]
    Invalid { verb: String, reason: String },
}

/// Reads one line of at most [`MAX_REQUEST_LINE`] bytes (newline excluded).
/// `Ok(None)` means the client closed without sending anything.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Result<String, RequestError>>> {
    let mut buf = Vec::new();
    let limit = MAX_REQUEST_LINE as u64 + 1;
    let n = (&mut *reader)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > MAX_REQUEST_LINE {
        return Ok(Some(Err(RequestError::TooLong)));
    }
    Ok(Some(
        String::from_utf8(buf).map_err(|_| RequestError::NotUtf8),
    ))
}

/// Decodes a request tagged `cmd`, turning serde's messages into ones an
/// operator can act on.
pub fn decode<T: DeserializeOwned>(line: &str) -> Result<T, RequestError> {
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

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut ok = &b"{\"cmd\":\"list\"}\r\nrest"[..];
        assert_eq!(
            read_line(&mut ok).await.unwrap(),
            Some(Ok("{\"cmd\":\"list\"}".into()))
        );
        let long = vec![b'x'; MAX_REQUEST_LINE + 10];
        let mut reader = &long[..];
        assert_eq!(
            read_line(&mut reader).await.unwrap(),
            Some(Err(RequestError::TooLong))
        );
        let exact = vec![b' '; MAX_REQUEST_LINE];
        let mut reader = &exact[..];
        assert!(matches!(read_line(&mut reader).await.unwrap(), Some(Ok(_))));
        let mut bad = &b"\xff\xfe\n"[..];
        assert_eq!(
            read_line(&mut bad).await.unwrap(),
            Some(Err(RequestError::NotUtf8))
        );
        let mut empty = &b""[..];
        assert_eq!(read_line(&mut empty).await.unwrap(), None);
    }
}
