//! Randomized checks of the hot decoders against the general way: random
//! requests and answers, written with shuffled members, spacing, escapes,
//! explicit nulls and unknown members, then mutated a character at a time.
//! Whatever the line, the one-pass decoding either leaves it to the general
//! way or gives exactly what the general way gives; and `messages` lines are
//! the bytes serde writes.
//!
//! The generator is a seeded xorshift, so a failure repeats: every message
//! names the seed and iteration.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde_json::{Map, Value};

use super::{decode, decode_answer};
use crate::Recipient;
use crate::agent::{
    AgentAnswer, AgentRequest, AgentResponse, DeliveredMessage, ManagerRequest, OutgoingMessage,
};

const SEED: u64 = 0x2545_f491_4f6c_dd1d;
const ITERATIONS: u64 = 2000;

/// A small deterministic generator (xorshift), one per iteration so any
/// iteration replays alone.
struct Rng(u64);

impl Rng {
    fn new(iteration: u64) -> Self {
        let mut rng = Rng((SEED ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
        for _ in 0..8 {
            rng.next();
        }
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    fn maybe<T>(&mut self, make: impl FnOnce(&mut Self) -> T) -> Option<T> {
        (!self.one_in(2)).then(|| make(self))
    }
}

/// Characters a string is drawn from: every escape JSON has, the bytes
/// just outside them, multi-byte and astral characters. No `@` (see
/// [`RAW`]).
const CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '"',
    '\\',
    '/',
    '\n',
    '\r',
    '\t',
    '\u{0}',
    '\u{1}',
    '\u{8}',
    '\u{c}',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    'é',
    '✓',
    '\u{2028}',
    '\u{2029}',
    '\u{fffd}',
    '\u{feff}',
    '🐝',
    '\u{10ffff}',
    '<',
    '&',
    '\'',
    '{',
    '}',
    '[',
    ']',
    ':',
    ',',
];

fn string(rng: &mut Rng) -> String {
    let len = match rng.below(10) {
        0 => 0,
        1 => 100 + rng.below(700),
        _ => 1 + rng.below(12),
    };
    if rng.one_in(2) {
        // Nothing to escape: the path that copies strings whole.
        (0..len)
            .map(|_| *rng.pick(&['a', 'q', '7', ' ', '-', 'é', '🐝']))
            .collect()
    } else {
        (0..len).map(|_| *rng.pick(CHARS)).collect()
    }
}

fn int(rng: &mut Rng) -> i64 {
    match rng.below(6) {
        0 => *rng.pick(&[0, 1, -1, i64::MIN, i64::MAX, i64::MIN + 1]),
        1 => rng.next() as i64,
        _ => rng.below(1000) as i64,
    }
}

fn uint(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => *rng.pick(&[0, 1, u64::MAX, i64::MAX as u64, i64::MAX as u64 + 1]),
        1 => rng.next(),
        _ => rng.below(1000) as u64,
    }
}

fn small(rng: &mut Rng) -> u32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, 32, u32::MAX]),
        _ => rng.below(100) as u32,
    }
}

fn recipient(rng: &mut Rng) -> Recipient {
    let to = *rng.pick(&[
        "bob",
        "operator",
        "*",
        "a",
        "z9-",
        "abcdefghijklmnopqrstuvwxyz012345",
    ]);
    Recipient::parse(to).unwrap()
}

fn ids(rng: &mut Rng) -> Vec<i64> {
    (0..rng.below(5)).map(|_| int(rng)).collect()
}

fn request(rng: &mut Rng) -> AgentRequest {
    match rng.below(10) {
        0 | 1 => AgentRequest::Send {
            to: recipient(rng),
            body: string(rng),
            in_reply_to: rng.maybe(int),
        },
        2 | 3 => AgentRequest::SendBatch {
            messages: (0..rng.below(5))
                .map(|_| OutgoingMessage {
                    to: recipient(rng),
                    body: string(rng),
                    in_reply_to: rng.maybe(int),
                })
                .collect(),
        },
        4 | 5 => AgentRequest::Recv {
            wait_seconds: rng.maybe(uint),
            max: rng.maybe(small),
            lease_seconds: rng.maybe(uint),
        },
        6 | 7 => AgentRequest::AckTurn {
            ids: rng.maybe(ids),
            lease: rng.maybe(int),
        },
        8 => match rng.below(6) {
            0 => AgentRequest::Status,
            1 => AgentRequest::Whoami,
            2 => AgentRequest::RequeueInflight,
            3 => AgentRequest::RenewLease { lease: int(rng) },
            4 => AgentRequest::Recent { limit: uint(rng) },
            _ => AgentRequest::SetStatus { text: string(rng) },
        },
        _ => match rng.below(2) {
            0 => AgentRequest::Answer {
                id: int(rng),
                answer: string(rng),
            },
            _ => AgentRequest::Ask {
                question: string(rng),
                options: (0..rng.below(3)).map(|_| string(rng)).collect(),
                multi: rng.one_in(2),
                ttl_seconds: rng.maybe(uint),
                to: rng.maybe(recipient),
            },
        },
    }
}

fn is_hot(request: &AgentRequest) -> bool {
    matches!(
        request,
        AgentRequest::Send { .. }
            | AgentRequest::SendBatch { .. }
            | AgentRequest::Recv { .. }
            | AgentRequest::AckTurn { .. }
    )
}

fn delivered(rng: &mut Rng) -> DeliveredMessage {
    DeliveredMessage {
        id: int(rng),
        from: string(rng),
        to: string(rng),
        body: string(rng),
        at: int(rng),
        in_reply_to: rng.maybe(int),
        redelivered: rng.one_in(2),
    }
}

fn answer(rng: &mut Rng) -> AgentAnswer {
    let unread = rng.maybe(uint);
    let response = match rng.below(8) {
        0 | 1 => AgentResponse::Ok,
        2 | 3 => AgentResponse::Sent { ids: ids(rng) },
        4..=6 => AgentResponse::Messages {
            messages: (0..rng.below(4)).map(|_| delivered(rng)).collect(),
            lease: rng.maybe(int),
        },
        _ => match rng.below(2) {
            0 => AgentResponse::err(string(rng)),
            // `status` carries the unread count as its own member.
            _ => {
                let unread = uint(rng);
                return AgentAnswer {
                    response: AgentResponse::Status { unread },
                    unread: Some(unread),
                };
            }
        },
    };
    AgentAnswer { response, unread }
}

fn is_hot_answer(answer: &AgentAnswer) -> bool {
    matches!(
        answer.response,
        AgentResponse::Ok | AgentResponse::Sent { .. } | AgentResponse::Messages { .. }
    )
}

/// A value for a member nobody knows.
fn unknown_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::from(int(rng)),
        3 => Value::from(*rng.pick(&[1.5, -0.0, 1e300, -2.5e-300, 0.1])),
        4 => Value::String(string(rng)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| unknown_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|_| (string(rng), unknown_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// Names no request, answer or message has.
const UNKNOWN_NAMES: &[&str] = &["x", "unknown", "", "Cmd", "KIND", "to_", "é", "ids2", " "];

/// A string value starting with this is written as the JSON text after it.
const RAW: &str = "@@raw:";

/// JSON the general way refuses or reads with care, as the value of an
/// unknown member.
fn hostile(rng: &mut Rng) -> String {
    let depth = 100 + rng.below(60);
    match rng.below(10) {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)),
        2 => "1e400".into(),
        3 => "-1e400".into(),
        4 => r#""\ud800""#.into(),
        5 => r#""a\udc00b""#.into(),
        6 => r#""\ud83d\ude00""#.into(),
        7 => "123456789012345678901234567890".into(),
        8 => "-0".into(),
        _ => "1e308".into(),
    }
}

/// Every object in `value`, depth first: the `n`th gets `key: member`
/// (and `n` counts down past the others).
fn insert_somewhere(value: &mut Value, n: &mut usize, key: &str, member: &Value) -> bool {
    match value {
        Value::Object(map) => {
            if *n == 0 {
                map.insert(key.to_owned(), member.clone());
                return true;
            }
            *n -= 1;
            map.values_mut()
                .any(|v| insert_somewhere(v, n, key, member))
        }
        Value::Array(items) => items
            .iter_mut()
            .any(|v| insert_somewhere(v, n, key, member)),
        _ => false,
    }
}

fn objects(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(objects).sum::<usize>(),
        Value::Array(items) => items.iter().map(objects).sum(),
        _ => 0,
    }
}

/// The same meaning as `value` (a request's or an answer's JSON): absent
/// optional members sometimes written `null`, `redelivered: false`
/// sometimes left out, nested objects sometimes written as arrays of their
/// members (serde reads a struct from either).
fn vary(value: &mut Value, rng: &mut Rng) {
    let Value::Object(top) = value else {
        return;
    };
    let tag = top
        .get("cmd")
        .or_else(|| top.get("kind"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let own: &[&str] = match tag.as_str() {
        "send" => &["in_reply_to"],
        "recv" => &["wait_seconds", "max", "lease_seconds"],
        "ack_turn" => &["ids", "lease"],
        "messages" => &["lease"],
        _ => &[],
    };
    for key in own {
        if !top.contains_key(*key) && rng.one_in(3) {
            top.insert((*key).into(), Value::Null);
        }
    }
    if tag != "status" && !top.contains_key("unread") && top.contains_key("kind") && rng.one_in(4) {
        top.insert("unread".into(), Value::Null);
    }
    if let Some(Value::Array(nested)) = top.get_mut("messages") {
        for message in nested {
            let Value::Object(fields) = message else {
                continue;
            };
            if !fields.contains_key("in_reply_to") && rng.one_in(3) {
                // Absent, written `null`.
                fields.insert("in_reply_to".into(), Value::Null);
            }
            if fields.get("redelivered") == Some(&Value::Bool(false)) && rng.one_in(2) {
                fields.shift_remove("redelivered");
            }
            if rng.one_in(8) {
                // serde reads a struct from the array of its members'
                // values in declaration order, trailing defaults left out.
                let order: &[&str] = if fields.contains_key("id") {
                    &[
                        "id",
                        "from",
                        "to",
                        "body",
                        "at",
                        "in_reply_to",
                        "redelivered",
                    ]
                } else {
                    &["to", "body", "in_reply_to"]
                };
                let items: Vec<Value> = order
                    .iter()
                    .map_while(|k| fields.get(*k).cloned())
                    .collect();
                if items.len() == fields.len() {
                    *message = Value::Array(items);
                }
            }
        }
    }
}

/// How a line is written: spacing and escapes change nothing it means;
/// a duplicated member does.
struct Style {
    spaced: bool,
    escaped: bool,
    duplicates: bool,
}

impl Style {
    fn random(rng: &mut Rng) -> Self {
        Style {
            spaced: rng.one_in(3),
            escaped: rng.one_in(4),
            duplicates: false,
        }
    }
}

fn space(out: &mut String, style: &Style, rng: &mut Rng) {
    if style.spaced && rng.one_in(3) {
        for _ in 0..1 + rng.below(2) {
            out.push(*rng.pick(&[' ', '\t', '\n', '\r']));
        }
    }
}

/// Writes `s` as a JSON string; says whether it escaped anything JSON
/// does not require.
fn write_str(out: &mut String, s: &str, style: &Style, rng: &mut Rng) -> bool {
    if let Some(raw) = s.strip_prefix(RAW) {
        out.push_str(raw);
        return true;
    }
    let mut optional = false;
    let escapes = style.escaped && rng.one_in(2);
    out.push('"');
    for c in s.chars() {
        if escapes && rng.one_in(3) {
            optional = true;
            if c == '/' && rng.one_in(2) {
                out.push_str("\\/");
                continue;
            }
            let mut units = [0; 2];
            for unit in c.encode_utf16(&mut units) {
                if rng.one_in(2) {
                    out.push_str(&format!("\\u{unit:04x}"));
                } else {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            continue;
        }
        match c {
            '"' | '\\' | '\u{0}'..='\u{1f}' => {
                out.push_str(&serde_json::to_string(&c.to_string()).unwrap()[1..]);
                out.pop();
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    optional
}

fn write_value(out: &mut String, value: &Value, style: &Style, rng: &mut Rng) {
    match value {
        Value::String(s) => {
            write_str(out, s, style, rng);
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    space(out, style, rng);
                    out.push(',');
                }
                space(out, style, rng);
                write_value(out, item, style, rng);
            }
            space(out, style, rng);
            out.push(']');
        }
        Value::Object(map) => {
            write_object(out, map, "", false, style, rng);
        }
        _ => out.push_str(&value.to_string()),
    }
}

/// Writes `map` with its members shuffled (`tag` kept first when
/// `tag_first`); says whether the line's first member is `tag` with a
/// string value, both written without an escape.
fn write_object(
    out: &mut String,
    map: &Map<String, Value>,
    tag: &str,
    tag_first: bool,
    style: &Style,
    rng: &mut Rng,
) -> bool {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    if tag_first && members.first().is_some_and(|(k, _)| *k == tag) {
        rng.shuffle(&mut members[1..]);
    } else if rng.one_in(2) {
        rng.shuffle(&mut members);
    }
    let other;
    if style.duplicates && !members.is_empty() && rng.one_in(2) {
        let (key, value) = *rng.pick(&members);
        other = unknown_value(rng, 0);
        let value = if rng.one_in(2) { value } else { &other };
        let at = rng.below(members.len() + 1);
        members.insert(at, (key, value));
    }
    let mut plain_tag_first = false;
    out.push('{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            space(out, style, rng);
            out.push(',');
        }
        space(out, style, rng);
        let key_escaped = write_str(out, key, style, rng);
        space(out, style, rng);
        out.push(':');
        space(out, style, rng);
        let value_escaped = match value {
            Value::String(s) => write_str(out, s, style, rng),
            _ => {
                write_value(out, value, style, rng);
                true
            }
        };
        if i == 0 {
            plain_tag_first = *key == tag && !key_escaped && !value_escaped;
        }
    }
    space(out, style, rng);
    out.push('}');
    plain_tag_first
}

/// `value` (an object tagged `tag`) written in `style`; says whether the
/// tag came first, unescaped.
fn render(value: &Value, tag: &str, style: &Style, rng: &mut Rng) -> (String, bool) {
    let Value::Object(map) = value else {
        panic!("not an object: {value}");
    };
    let mut line = String::new();
    space(&mut line, style, rng);
    let tag_first = rng.below(4) != 0;
    let plain_tag_first = write_object(&mut line, map, tag, tag_first, style, rng);
    space(&mut line, style, rng);
    (line, plain_tag_first)
}

/// Adds up to two unknown members anywhere in `value` (hostile JSON with
/// `hostile`); says whether it added any.
fn add_unknown(value: &mut Value, hostile_json: bool, rng: &mut Rng) -> bool {
    let mut added = false;
    for _ in 0..rng.below(3) {
        let member = if hostile_json {
            Value::String(format!("{RAW}{}", hostile(rng)))
        } else {
            unknown_value(rng, 0)
        };
        let key = *rng.pick(UNKNOWN_NAMES);
        let mut n = rng.below(objects(value));
        added |= insert_somewhere(value, &mut n, key, &member);
    }
    added
}

/// Characters a mutation inserts: JSON's punctuation and the starts of its
/// tokens, and what is never allowed raw in a string.
const MUTANTS: &[char] = &[
    '{', '}', '[', ']', ':', ',', '"', '\\', '0', '1', '9', '-', '+', '.', 'e', 'E', 'n', 'u', 'l',
    't', 'r', 'f', 'a', 's', 'x', ' ', '\n', '\u{0}', '\u{1f}', 'é', '🐝',
];

fn mutate(line: &str, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = line.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let len = chars.len();
        match rng.below(7) {
            0 if len > 0 => {
                chars.remove(rng.below(len));
            }
            1 => chars.insert(rng.below(len + 1), *rng.pick(MUTANTS)),
            2 if len > 0 => chars[rng.below(len)] = *rng.pick(MUTANTS),
            3 => chars.truncate(rng.below(len + 1)),
            4 => chars.extend(
                rng.pick(&[" ", "\n", " \t\r\n", "x", "}", ",", "{}", "]", "\u{0}", "0"])
                    .chars(),
            ),
            5 if len > 1 => {
                let at = rng.below(len - 1);
                chars.swap(at, at + 1);
            }
            _ if len > 0 => {
                let from = rng.below(len);
                let to = from + rng.below((len - from).min(24)) + 1;
                let span: Vec<char> = chars[from..to].to_vec();
                let at = rng.below(len + 1);
                chars.splice(at..at, span);
            }
            _ => chars.push('{'),
        }
    }
    chars.into_iter().collect()
}

/// `decode_hot(line)`, which never panics, and only ever gives what the
/// general way gives, on either socket.
fn hot_request(line: &str, at: &str) -> Option<AgentRequest> {
    let hot = catch_unwind(AssertUnwindSafe(|| decode(line)))
        .unwrap_or_else(|_| panic!("{at}: decode_hot panicked on {line:?}"));
    if let Some(hot) = &hot {
        let general = serde_json::from_str::<AgentRequest>(line);
        assert_eq!(
            general.as_ref().ok(),
            Some(hot),
            "{at}: hot and general disagree on {line:?} (general: {general:?})"
        );
        let manager = serde_json::from_str::<ManagerRequest>(line);
        assert_eq!(
            manager.as_ref().ok(),
            Some(&ManagerRequest::Agent(hot.clone())),
            "{at}: hot and manager disagree on {line:?} (manager: {manager:?})"
        );
    }
    hot
}

/// `AgentAnswer::from_line(line)`, checked: the one-pass decoding never
/// panics and only ever gives what the general way gives, and `from_line`
/// is the general way's result, errors alike.
fn answer_from(line: &str, at: &str) -> (Option<AgentAnswer>, Result<AgentAnswer, String>) {
    let hot = catch_unwind(AssertUnwindSafe(|| decode_answer(line)))
        .unwrap_or_else(|_| panic!("{at}: decode_answer panicked on {line:?}"));
    let general = AgentAnswer::from_line_general(line).map_err(|e| e.to_string());
    if let Some(hot) = &hot {
        assert_eq!(
            general.as_ref().ok(),
            Some(hot),
            "{at}: hot and general disagree on {line:?} (general: {general:?})"
        );
    }
    let public = AgentAnswer::from_line(line).map_err(|e| e.to_string());
    assert_eq!(public, general, "{at}: from_line on {line:?}");
    (hot, general)
}

#[test]
fn random_requests_decode_hot_as_the_general_way_does() {
    let (mut hot_taken, mut mutants_taken) = (0, 0);
    for i in 0..ITERATIONS {
        let at = format!("seed {SEED:#x} iteration {i}");
        let rng = &mut Rng::new(i);
        let request = request(rng);
        // As our clients write it.
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            hot_request(&line, &at),
            is_hot(&request).then(|| request.clone()),
            "{at}: {line}"
        );

        // The same request written another way.
        let mut value = serde_json::to_value(&request).unwrap();
        vary(&mut value, rng);
        let unknown = rng.one_in(3) && add_unknown(&mut value, false, rng);
        let (line, plain_tag_first) = render(&value, "cmd", &Style::random(rng), rng);
        let general = serde_json::from_str::<AgentRequest>(&line);
        assert_eq!(
            general.as_ref().ok(),
            Some(&request),
            "{at}: general on {line:?}: {general:?}"
        );
        let hot = hot_request(&line, &at);
        let expected = plain_tag_first && is_hot(&request) && !unknown;
        assert_eq!(
            hot,
            expected.then(|| request.clone()),
            "{at}: hot on {line:?}"
        );
        hot_taken += usize::from(hot.is_some());

        // Hostile unknown members, duplicated members, and mutations.
        let mut value = serde_json::to_value(&request).unwrap();
        add_unknown(&mut value, rng.one_in(2), rng);
        let mut style = Style::random(rng);
        style.duplicates = rng.one_in(3);
        let (line, _) = render(&value, "cmd", &style, rng);
        hot_request(&line, &at);
        for _ in 0..4 {
            let mutant = mutate(&line, rng);
            mutants_taken += usize::from(hot_request(&mutant, &at).is_some());
        }
    }
    println!(
        "{ITERATIONS} requests: {hot_taken} rewritten lines and {mutants_taken} mutants decoded hot"
    );
    assert!(hot_taken > 0 && mutants_taken > 0);
}

#[test]
fn random_answers_write_and_read_as_the_general_way_does() {
    let (mut hot_taken, mut mutants_taken) = (0, 0);
    for i in 0..ITERATIONS {
        let at = format!("seed {SEED:#x} iteration {i}");
        let rng = &mut Rng::new(i);
        let answer = answer(rng);
        let line = answer.to_line().unwrap();
        assert_eq!(line, answer.to_line_general().unwrap(), "{at}: {answer:?}");
        let (hot, general) = answer_from(&line, &at);
        assert_eq!(general, Ok(answer.clone()), "{at}: {line}");
        assert_eq!(
            hot,
            is_hot_answer(&answer).then(|| answer.clone()),
            "{at}: {line}"
        );

        // The same answer written another way.
        let mut value: Value = serde_json::from_str(&line).unwrap();
        vary(&mut value, rng);
        let unknown = rng.one_in(3) && add_unknown(&mut value, false, rng);
        let (line, plain_tag_first) = render(&value, "kind", &Style::random(rng), rng);
        let (hot, general) = answer_from(&line, &at);
        assert_eq!(general, Ok(answer.clone()), "{at}: general on {line:?}");
        let expected = plain_tag_first && is_hot_answer(&answer) && !unknown;
        assert_eq!(
            hot,
            expected.then(|| answer.clone()),
            "{at}: hot on {line:?}"
        );
        hot_taken += usize::from(hot.is_some());

        // Hostile unknown members, duplicated members, and mutations.
        let mut value: Value = serde_json::from_str(&answer.to_line().unwrap()).unwrap();
        add_unknown(&mut value, rng.one_in(2), rng);
        let mut style = Style::random(rng);
        style.duplicates = rng.one_in(3);
        let (line, _) = render(&value, "kind", &style, rng);
        let _ = answer_from(&line, &at);
        for _ in 0..4 {
            let mutant = mutate(&line, rng);
            mutants_taken += usize::from(answer_from(&mutant, &at).0.is_some());
        }
    }
    println!(
        "{ITERATIONS} answers: {hot_taken} rewritten lines and {mutants_taken} mutants decoded hot"
    );
    assert!(hot_taken > 0 && mutants_taken > 0);
}
