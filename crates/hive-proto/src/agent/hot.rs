//! The hot agent verbs (`send`, `send_batch`, `recv`, `ack_turn`), and
//! their answers (`ok`, `sent`, `messages`, with the unread count),
//! decoded in one pass.
//!
//! [`AgentRequest`] is tagged `cmd` inside the object, and serde decodes
//! such an enum by first buffering every member into an intermediate tree
//! (each string and number copied), then decoding the variant from that:
//! for a `send_batch` of 32 messages, most of a request's decoding. Every
//! client of ours writes `cmd` first, so when it is first and names a hot
//! verb the members that follow are decoded straight into the variant's
//! fields here. Anything else — another verb, `cmd` not first, a line with
//! any error, a second `cmd`, a member the variant (or a message in it)
//! does not have — is not decoded here ([`decode`] says `None`), and the
//! caller decodes it the general way, whose errors name the problem. Each
//! fields struct mirrors its variant in `agent.rs`; tests decode the same
//! lines both ways, fixed ones and random ones (`random.rs`). Answers,
//! tagged `kind`, go the same way ([`decode_answer`]).

use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};

use super::{AgentAnswer, AgentRequest, AgentResponse, DeliveredMessage, OutgoingMessage};
use crate::Recipient;

/// `line` decoded, if it is a hot verb's with `cmd` first and no error.
pub(crate) fn decode(line: &str) -> Option<AgentRequest> {
    decode_tag_first(line)
}

/// A `messages` answer line, byte for byte what serde writes for
/// [`AgentResponse::Messages`] with the unread count after it; strings
/// with nothing to escape (the usual body) are copied whole rather than
/// scanned a byte at a time.
pub(crate) fn messages_line(
    messages: &[DeliveredMessage],
    lease: Option<i64>,
    unread: Option<u64>,
) -> serde_json::Result<String> {
    use std::fmt::Write;
    let size: usize = messages
        .iter()
        .map(|m| m.from.len() + m.to.len() + m.body.len() + 96)
        .sum();
    let mut line = String::with_capacity(size + 64);
    line.push_str(r#"{"kind":"messages","messages":["#);
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let _ = write!(line, r#"{{"id":{},"from":"#, m.id);
        push_str(&mut line, &m.from)?;
        line.push_str(r#","to":"#);
        push_str(&mut line, &m.to)?;
        line.push_str(r#","body":"#);
        push_str(&mut line, &m.body)?;
        let _ = write!(line, r#","at":{}"#, m.at);
        if let Some(parent) = m.in_reply_to {
            let _ = write!(line, r#","in_reply_to":{parent}"#);
        }
        let _ = write!(line, r#","redelivered":{}}}"#, m.redelivered);
    }
    line.push(']');
    if let Some(lease) = lease {
        let _ = write!(line, r#","lease":{lease}"#);
    }
    if let Some(unread) = unread {
        let _ = write!(line, r#","unread":{unread}"#);
    }
    line.push('}');
    Ok(line)
}

/// `s` as a JSON string: whole when nothing in it needs escaping (JSON
/// escapes only `"`, `\` and control characters), else through serde.
fn push_str(line: &mut String, s: &str) -> serde_json::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        line.push('"');
        line.push_str(s);
        line.push('"');
    } else {
        line.push_str(&serde_json::to_string(s)?);
    }
    Ok(())
}

/// `line` decoded as an answer, if it is an `ok`, `sent` or `messages`
/// answer with `kind` first and no error.
pub(crate) fn decode_answer(line: &str) -> Option<AgentAnswer> {
    decode_tag_first(line)
}

/// A value read from an object whose first member is its tag.
trait TagFirst: Sized {
    /// The tag's member name.
    const TAG: &'static str;
    /// Decodes the members after the tag as the variant `tag` names.
    fn after_tag<'de, A: MapAccess<'de>>(
        tag: &'de str,
        rest: MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error>;
}

/// `line` decoded as `T`, if its tag comes first and nothing is wrong.
fn decode_tag_first<T: TagFirst>(line: &str) -> Option<T> {
    serde_json::from_str::<Decoded<T>>(line)
        .ok()
        .map(|decoded| decoded.0)
}

struct Decoded<T>(T);

impl<'de, T: TagFirst> Deserialize<'de> for Decoded<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TagFirstVisitor(PhantomData))
    }
}

struct TagFirstVisitor<T>(PhantomData<T>);

impl<'de, T: TagFirst> Visitor<'de> for TagFirstVisitor<T> {
    type Value = Decoded<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an object whose first member is `{}`", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded<T>, A::Error> {
        // A key with an escape is not borrowed: not decoded here (the
        // general way does).
        if map.next_key::<&'de str>()? != Some(T::TAG) {
            return Err(de::Error::custom("the tag is not first"));
        }
        let tag: &'de str = map.next_value()?;
        T::after_tag(tag, MapAccessDeserializer::new(map)).map(Decoded)
    }
}

impl TagFirst for AgentRequest {
    const TAG: &'static str = "cmd";

    fn after_tag<'de, A: MapAccess<'de>>(
        verb: &'de str,
        rest: MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error> {
        Ok(match verb {
            "send" => {
                let f = SendFields::deserialize(rest)?;
                AgentRequest::Send {
                    to: f.to,
                    body: f.body,
                    in_reply_to: f.in_reply_to,
                }
            }
            "send_batch" => AgentRequest::SendBatch {
                messages: SendBatchFields::deserialize(rest)?
                    .messages
                    .into_iter()
                    .map(OutgoingMessage::from)
                    .collect(),
            },
            "recv" => {
                let f = RecvFields::deserialize(rest)?;
                AgentRequest::Recv {
                    wait_seconds: f.wait_seconds,
                    max: f.max,
                    lease_seconds: f.lease_seconds,
                }
            }
            "ack_turn" => {
                let f = AckTurnFields::deserialize(rest)?;
                AgentRequest::AckTurn {
                    ids: f.ids,
                    lease: f.lease,
                }
            }
            _ => return Err(de::Error::custom("not a hot verb")),
        })
    }
}

impl TagFirst for AgentAnswer {
    const TAG: &'static str = "kind";

    fn after_tag<'de, A: MapAccess<'de>>(
        kind: &'de str,
        rest: MapAccessDeserializer<A>,
    ) -> Result<Self, A::Error> {
        let (response, unread) = match kind {
            "ok" => (AgentResponse::Ok, OkFields::deserialize(rest)?.unread),
            "sent" => {
                let f = SentFields::deserialize(rest)?;
                (AgentResponse::Sent { ids: f.ids }, f.unread)
            }
            "messages" => {
                let f = MessagesFields::deserialize(rest)?;
                (
                    AgentResponse::Messages {
                        messages: f.messages.into_iter().map(DeliveredMessage::from).collect(),
                        lease: f.lease,
                    },
                    f.unread,
                )
            }
            _ => return Err(de::Error::custom("not a hot answer")),
        };
        Ok(AgentAnswer { response, unread })
    }
}

// Every fields struct refuses a member it does not have (a second tag
// among them): serde_json skips an unknown member's value checking only its
// syntax, not what the general way's full parse checks (a number's range, a
// `\u` escape's surrogate pair, the nesting limit), so taking such a line
// here would accept some the general way refuses. Our clients send none.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OkFields {
    #[serde(default)]
    unread: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SentFields {
    ids: Vec<i64>,
    #[serde(default)]
    unread: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesFields {
    messages: Vec<Delivered>,
    #[serde(default)]
    lease: Option<i64>,
    #[serde(default)]
    unread: Option<u64>,
}

/// [`DeliveredMessage`], refusing a member it does not have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delivered {
    id: i64,
    from: String,
    to: String,
    body: String,
    at: i64,
    #[serde(default)]
    in_reply_to: Option<i64>,
    #[serde(default)]
    redelivered: bool,
}

impl From<Delivered> for DeliveredMessage {
    fn from(m: Delivered) -> Self {
        DeliveredMessage {
            id: m.id,
            from: m.from,
            to: m.to,
            body: m.body,
            at: m.at,
            in_reply_to: m.in_reply_to,
            redelivered: m.redelivered,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendFields {
    to: Recipient,
    body: String,
    #[serde(default)]
    in_reply_to: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBatchFields {
    messages: Vec<Outgoing>,
}

/// [`OutgoingMessage`], refusing a member it does not have.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outgoing {
    to: Recipient,
    body: String,
    #[serde(default)]
    in_reply_to: Option<i64>,
}

impl From<Outgoing> for OutgoingMessage {
    fn from(m: Outgoing) -> Self {
        OutgoingMessage {
            to: m.to,
            body: m.body,
            in_reply_to: m.in_reply_to,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecvFields {
    #[serde(default)]
    wait_seconds: Option<u64>,
    #[serde(default)]
    max: Option<u32>,
    #[serde(default)]
    lease_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckTurnFields {
    #[serde(default)]
    ids: Option<Vec<i64>>,
    #[serde(default)]
    lease: Option<i64>,
}

#[cfg(test)]
mod random;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line decodes here exactly as the general way does, or is left
    /// to it.
    #[test]
    fn hot_lines_decode_as_the_general_way_does() {
        let hot = [
            r#"{"cmd":"send","to":"bob","body":"hi"}"#,
            r#"{"cmd":"send","to":"*","body":"all","in_reply_to":7}"#,
            r#"{"cmd":"send","body":"before to","to":"bob"}"#,
            r#"{"cmd":"send_batch","messages":[{"to":"bob","body":"a"},{"to":"*","body":"b\n\"q\"","in_reply_to":3}]}"#,
            r#"{"cmd":"recv"}"#,
            r#"{"cmd":"recv","max":32,"wait_seconds":5,"lease_seconds":60}"#,
            r#"{"cmd":"ack_turn"}"#,
            r#"{"cmd":"ack_turn","lease":12}"#,
            r#"{"cmd":"ack_turn","ids":[1,2,3]}"#,
            r#" { "cmd" : "recv" , "max" : 2 } "#,
        ];
        for line in hot {
            let general: AgentRequest = serde_json::from_str(line).unwrap();
            assert_eq!(decode(line), Some(general), "{line}");
        }
        let general_only = [
            // Not first, another verb, an escaped key.
            r#"{"to":"bob","cmd":"send","body":"hi"}"#,
            r#"{"cmd":"status"}"#,
            r#"{"\u0063md":"recv"}"#,
            // Errors the general way names.
            r#"{"cmd":"send","to":"bob"}"#,
            r#"{"cmd":"send","to":"Bad Name","body":"x"}"#,
            r#"{"cmd":"recv","max":-1}"#,
            r#"{"cmd":"send_batch","messages":{}}"#,
            r#"{"cmd":"recv","cmd":"send"}"#,
            r#"{"cmd":"send","to":"bob","body":"a","body":"b"}"#,
            r#"{"cmd":"recv"} trailing"#,
            r#"{"cmd":"fly"}"#,
            r#"[]"#,
            // A member the variant does not have.
            r#"{"cmd":"send","to":"operator","body":"x","unknown":[1,{"a":2}]}"#,
            r#"{"cmd":"send_batch","messages":[{"to":"bob","body":"a","x":0}]}"#,
        ];
        for line in general_only {
            assert_eq!(decode(line), None, "{line}");
        }
    }

    /// The values of unknown members the general way refuses (found by
    /// `random`: skipping a value checks only its syntax): such a line was
    /// once decoded here.
    #[test]
    fn lines_the_general_way_refuses_are_not_decoded_here() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let refused = ["1e400", r#""\ud800""#, r#""a\udc00b""#, deep.as_str()];
        for value in refused {
            let requests = [
                format!(r#"{{"cmd":"recv","x":{value}}}"#),
                format!(
                    r#"{{"cmd":"send_batch","messages":[{{"to":"bob","body":"","x":{value}}}]}}"#
                ),
            ];
            for line in requests {
                assert!(
                    serde_json::from_str::<AgentRequest>(&line).is_err(),
                    "{line}"
                );
                assert_eq!(decode(&line), None, "{line}");
            }
            let answers = [
                format!(r#"{{"kind":"ok","x":{value}}}"#),
                format!(
                    r#"{{"kind":"messages","messages":[{{"id":1,"from":"a","to":"b","body":"","at":0,"x":{value}}}]}}"#
                ),
            ];
            for line in answers {
                assert!(AgentAnswer::from_line(&line).is_err(), "{line}");
                assert_eq!(decode_answer(&line), None, "{line}");
            }
        }
    }

    /// A `messages` line is the bytes serde writes, whatever its strings
    /// hold.
    #[test]
    fn messages_lines_are_what_serde_writes() {
        let strings = [
            "",
            "plain",
            "x".repeat(200).as_str(),
            "quote \" and back\\slash",
            "tab\tnew\nline\r\u{0}\u{1f}",
            "del \u{7f} é ✓ 🐝",
            "</script>",
        ]
        .map(str::to_owned);
        for (i, s) in strings.iter().enumerate() {
            let message = |id: i64| DeliveredMessage {
                id,
                from: s.clone(),
                to: "bob".into(),
                body: s.clone(),
                at: -5,
                in_reply_to: (id % 2 == 0).then_some(id - 1),
                redelivered: id % 3 == 0,
            };
            let count = i64::try_from(i).unwrap();
            for (lease, unread) in [
                (None, None),
                (Some(7), Some(0)),
                (Some(i64::MAX), Some(u64::MAX)),
            ] {
                let answer = AgentAnswer {
                    response: AgentResponse::Messages {
                        messages: (0..count).map(message).collect(),
                        lease,
                    },
                    unread,
                };
                assert_eq!(answer.to_line().unwrap(), answer.to_line_general().unwrap());
            }
        }
    }

    /// Every answer decodes here exactly as the general way does, or is
    /// left to it.
    #[test]
    fn hot_answers_decode_as_the_general_way_does() {
        let message = DeliveredMessage {
            id: 3,
            from: "alice".into(),
            to: "bob".into(),
            body: "line\n\"quoted\" \u{e9}".into(),
            at: 1_700_000_000,
            in_reply_to: Some(2),
            redelivered: true,
        };
        let answers = [
            AgentAnswer {
                response: AgentResponse::Ok,
                unread: Some(4),
            },
            AgentAnswer {
                response: AgentResponse::Ok,
                unread: None,
            },
            AgentAnswer {
                response: AgentResponse::Sent { ids: vec![7, 8] },
                unread: Some(0),
            },
            AgentAnswer {
                response: AgentResponse::Messages {
                    messages: vec![message.clone(), message],
                    lease: Some(99),
                },
                unread: Some(1),
            },
            AgentAnswer {
                response: AgentResponse::Messages {
                    messages: Vec::new(),
                    lease: None,
                },
                unread: Some(0),
            },
        ];
        for answer in answers {
            let line = answer.to_line().unwrap();
            assert_eq!(line, answer.to_line_general().unwrap());
            assert_eq!(decode_answer(&line), Some(answer.clone()), "{line}");
            assert_eq!(AgentAnswer::from_line(&line).unwrap(), answer, "{line}");
        }
        let general_only = [
            r#"{"kind":"status","unread":3}"#,
            r#"{"kind":"err","message":"no"}"#,
            r#"{"unread":1,"kind":"ok"}"#,
            r#"{"kind":"sent","ids":[1],"kind":"ok"}"#,
            r#"{"kind":"sent"}"#,
            r#"{"kind":"ok"} trailing"#,
            r#"{"kind":"ok","unread":1,"x":null}"#,
            r#"{"kind":"messages","messages":[{"id":1,"from":"a","to":"b","body":"","at":0,"x":0}]}"#,
        ];
        for line in general_only {
            assert_eq!(decode_answer(line), None, "{line}");
        }
        assert_eq!(
            AgentAnswer::from_line(r#"{"unread":1,"kind":"ok"}"#).unwrap(),
            AgentAnswer {
                response: AgentResponse::Ok,
                unread: Some(1)
            }
        );
    }
}
