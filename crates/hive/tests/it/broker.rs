//! The broker over real sockets: persistent connections, batched send,
//! the unread count on every answer, exact leases and their expiry, and a
//! daemon killed with SIGKILL in the middle of a flood.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hive_proto::DeliveredMessage;
use serde_json::{Value, json};

use crate::support::{Hive, eventually, read_line};

/// One persistent connection to a socket, spoken to line by line.
struct Line {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Line {
    fn open(socket: &Path) -> std::io::Result<Line> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Line {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Writes `lines`, each with its newline, in one write.
    fn write(&mut self, lines: &[Value]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend(serde_json::to_vec(line).map_err(std::io::Error::other)?);
            bytes.push(b'\n');
        }
        self.writer.write_all(&bytes)
    }

    fn read(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without answering",
            ));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }

    fn call(&mut self, request: Value) -> std::io::Result<Value> {
        self.write(&[request])?;
        self.read()
    }
}

fn messages(answer: &Value) -> Vec<DeliveredMessage> {
    assert_eq!(answer["kind"], "messages", "{answer}");
    serde_json::from_value(answer["messages"].clone()).unwrap()
}

fn bodies(messages: &[DeliveredMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

#[test]
fn pipelined_requests_on_one_connection_are_answered_in_order() {
    let hive = Hive::start(&["alice", "bob"]);
    let mut alice = Line::open(&hive.agent_socket("alice")).unwrap();
    // Every line in one write, before reading any answer.
    let requests: Vec<Value> = (0..20)
        .map(|i| json!({"cmd": "send", "to": "bob", "body": format!("m{i}")}))
        .chain([
            json!({"cmd": "whoami"}),
            json!({"cmd": "nonsense"}),
            json!({"cmd": "send_batch", "messages": [
                {"to": "bob", "body": "b1"}, {"to": "bob", "body": "b2"}]}),
            json!({"cmd": "status"}),
        ])
        .collect();
    alice.write(&requests).unwrap();
    for _ in 0..20 {
        assert_eq!(alice.read().unwrap(), json!({"kind": "ok", "unread": 0}));
    }
    assert_eq!(
        alice.read().unwrap(),
        json!({"kind": "whoami", "name": "alice", "role": "agent", "unread": 0})
    );
    let refused = alice.read().unwrap();
    assert_eq!(refused["kind"], "err", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("unknown verb `nonsense`"),
        "{refused}"
    );
    assert_eq!(
        alice.read().unwrap(),
        json!({"kind": "sent", "ids": [21, 22], "unread": 0})
    );
    assert_eq!(
        alice.read().unwrap(),
        json!({"kind": "status", "unread": 0})
    );

    // bob pipelines a recv, an ack of its lease and a status.
    let mut bob = Line::open(&hive.agent_socket("bob")).unwrap();
    let got = bob
        .call(json!({"cmd": "recv", "max": 32, "lease_seconds": 60}))
        .unwrap();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("m{i}"))
        .chain(["b1".into(), "b2".into()])
        .collect();
    assert_eq!(bodies(&messages(&got)), expected);
    assert_eq!(got["unread"], 0);
    let lease = got["lease"].clone();
    bob.write(&[
        json!({"cmd": "ack_turn", "lease": lease}),
        json!({"cmd": "recv", "wait_seconds": 0}),
    ])
    .unwrap();
    assert_eq!(bob.read().unwrap(), json!({"kind": "ok", "unread": 0}));
    assert_eq!(
        bob.read().unwrap(),
        json!({"kind": "messages", "messages": [], "unread": 0})
    );
}

#[test]
fn a_client_that_sends_one_line_and_closes_is_served_as_before() {
    let hive = Hive::start(&["alice", "bob"]);
    for socket in [hive.agent_socket("alice"), hive.host_socket()] {
        let request: &[u8] = if socket == hive.host_socket() {
            b"{\"cmd\":\"list\"}\n"
        } else {
            b"{\"cmd\":\"whoami\"}\n"
        };
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reader = BufReader::new(stream);
        let answer = read_line(&mut reader);
        assert!(
            answer.starts_with(r#"{"kind":"whoami","name":"alice""#)
                || answer.starts_with(r#"{"version":1,"ok":true"#),
            "{answer}"
        );
        // Then core closes: nothing more, no second answer.
        let mut rest = String::new();
        assert_eq!(reader.read_line(&mut rest).unwrap(), 0, "{rest}");
    }
    // The original's recv, one connection, then ack_turn on another.
    hive.agent("alice", r#"{"cmd":"send","to":"bob","body":"hi"}"#);
    let got = hive.recv("bob", 5, 8);
    assert_eq!(got.len(), 1);
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"ack_turn"}"#),
        r#"{"kind":"ok"}"#
    );
    assert_eq!(
        hive.agent("bob", r#"{"cmd":"requeue_inflight"}"#),
        r#"{"kind":"ok"}"#
    );
    assert!(hive.recv("bob", 0, 8).is_empty());
}

#[test]
fn the_unread_count_rides_on_every_answer() {
    let hive = Hive::start(&["alice", "bob"]);
    let mut bob = Line::open(&hive.agent_socket("bob")).unwrap();
    assert_eq!(bob.call(json!({"cmd": "whoami"})).unwrap()["unread"], 0);
    let mut alice = Line::open(&hive.agent_socket("alice")).unwrap();
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"to": "bob", "body": format!("n{i}")}))
        .collect();
    alice
        .call(json!({"cmd": "send_batch", "messages": batch}))
        .unwrap();
    // bob's own answers say what waits for bob.
    assert_eq!(
        bob.call(json!({"cmd": "get_loose_ends"})).unwrap()["unread"],
        5
    );
    let got = bob.call(json!({"cmd": "recv", "max": 2})).unwrap();
    assert_eq!(bodies(&messages(&got)), ["n0", "n1"]);
    assert_eq!(got["unread"], 3, "{got}");
    assert_eq!(
        bob.call(json!({"cmd": "send", "to": "alice", "body": "x"}))
            .unwrap()["unread"],
        3
    );
    assert_eq!(bob.call(json!({"cmd": "ack_turn"})).unwrap()["unread"], 3);
    let refused = bob
        .call(json!({"cmd": "send", "to": "nobody", "body": "x"}))
        .unwrap();
    assert_eq!(
        (refused["kind"].clone(), refused["unread"].clone()),
        (json!("err"), json!(3))
    );
}

#[test]
fn a_batched_send_is_all_or_nothing() {
    let hive = Hive::start(&["alice", "bob", "carol"]);
    let mut alice = Line::open(&hive.agent_socket("alice")).unwrap();
    // A bad recipient (unknown, or not even a name) refuses the batch.
    for bad in ["nobody", "../x"] {
        let refused = alice
            .call(json!({"cmd": "send_batch", "messages": [
                {"to": "bob", "body": "first"},
                {"to": "carol", "body": "second"},
                {"to": bad, "body": "third"}]}))
            .unwrap();
        assert_eq!(refused["kind"], "err", "{refused}");
        assert!(
            refused["message"].as_str().unwrap().contains(bad),
            "{refused}"
        );
    }
    let empty = alice
        .call(json!({"cmd": "send_batch", "messages": [
            {"to": "bob", "body": "fine"}, {"to": "bob", "body": "  "}]}))
        .unwrap();
    assert_eq!(
        empty["message"], "message 2: the message is empty",
        "{empty}"
    );
    assert_eq!(
        alice
            .call(json!({"cmd": "send_batch", "messages": []}))
            .unwrap()["kind"],
        "err"
    );
    // Nothing of them reached anyone.
    assert!(hive.recv("bob", 0, 32).is_empty());
    assert!(hive.recv("carol", 0, 32).is_empty());

    // A good batch: one id per row, `*` one row per other agent (the
    // manager included).
    let sent = alice
        .call(json!({"cmd": "send_batch", "messages": [
            {"to": "bob", "body": "one"},
            {"to": "*", "body": "all"},
            {"to": "carol", "body": "two", "in_reply_to": 1}]}))
        .unwrap();
    assert_eq!(sent["kind"], "sent", "{sent}");
    let ids: Vec<i64> = serde_json::from_value(sent["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 5, "{sent}");
    let bob: Vec<String> = hive
        .recv("bob", 0, 32)
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bob, ["one", "all"]);
    let carol = hive.recv("carol", 0, 32);
    assert_eq!(carol.len(), 2);
    assert_eq!(carol[1]["in_reply_to"], 1);
}

/// The race of the issue: a long-poll's answer is written just as its
/// client goes away. With exact leases the rows come back unflagged and
/// the next holder's `ack_turn{lease}` acks only what it read.
#[test]
fn a_client_that_leaves_during_recv_loses_nothing_over_1000_tries() {
    let hive = Hive::start(&["alice", "bob"]);
    let mut alice = Line::open(&hive.agent_socket("alice")).unwrap();
    let mut bob = Line::open(&hive.agent_socket("bob")).unwrap();
    let mut seen = Vec::new();
    let mut pending_answers = 0;
    for i in 0..1000u64 {
        let mut leaving = Line::open(&hive.agent_socket("bob")).unwrap();
        leaving
            .write(&[json!({"cmd": "recv", "wait_seconds": 5, "max": 32, "lease_seconds": 60})])
            .unwrap();
        // Give the long-poll time to park (most tries), then send.
        if i % 4 != 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        alice
            .call(json!({"cmd": "send", "to": "bob", "body": format!("m{i}")}))
            .unwrap();
        std::thread::sleep(Duration::from_micros((i * 7919) % 3000));
        drop(leaving);
        // The next holder reads everything that was not read, exactly once.
        let got = bob
            .call(json!({"cmd": "recv", "wait_seconds": 5, "max": 32, "lease_seconds": 60}))
            .unwrap();
        let got_messages = messages(&got);
        assert!(!got_messages.is_empty(), "m{i} never came back");
        assert!(got_messages.iter().all(|m| !m.redelivered), "{got}");
        pending_answers += got_messages.len();
        seen.extend(got_messages);
        let lease = got["lease"].clone();
        assert_eq!(
            bob.call(json!({"cmd": "renew_lease", "lease": lease}))
                .unwrap()["kind"],
            "ok"
        );
        assert_eq!(
            bob.call(json!({"cmd": "ack_turn", "lease": lease}))
                .unwrap()["kind"],
            "ok"
        );
    }
    let expected: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&seen), expected);
    assert_eq!(pending_answers, 1000);
    let status = bob.call(json!({"cmd": "status"})).unwrap();
    assert_eq!(status["unread"], 0);
    // Nothing left in flight either: requeue finds nothing to put back.
    bob.call(json!({"cmd": "requeue_inflight"})).unwrap();
    assert!(hive.recv("bob", 0, 32).is_empty());
}

#[test]
fn ack_turn_with_ids_leaves_unseen_rows_in_flight() {
    let hive = Hive::start(&["alice", "bob"]);
    let mut alice = Line::open(&hive.agent_socket("alice")).unwrap();
    let batch: Vec<Value> = ["a", "b", "c"]
        .iter()
        .map(|b| json!({"to": "bob", "body": b}))
        .collect();
    alice
        .call(json!({"cmd": "send_batch", "messages": batch}))
        .unwrap();
    let mut bob = Line::open(&hive.agent_socket("bob")).unwrap();
    let first = bob
        .call(json!({"cmd": "recv", "max": 2, "lease_seconds": 60}))
        .unwrap();
    let first_messages = messages(&first);
    assert_eq!(bodies(&first_messages), ["a", "b"]);
    bob.call(json!({"cmd": "renew_lease", "lease": first["lease"]}))
        .unwrap();
    // The harness only read "a" (say); "b" and the never-popped "c" stay.
    assert_eq!(
        bob.call(json!({"cmd": "ack_turn", "ids": [first_messages[0].id]}))
            .unwrap(),
        json!({"kind": "ok", "unread": 1})
    );
    // "b" is still in flight (not handed out again), "c" is next.
    let next = bob
        .call(json!({"cmd": "recv", "max": 32, "wait_seconds": 0}))
        .unwrap();
    assert_eq!(bodies(&messages(&next)), ["c"]);
    // A harness restart brings "b" back flagged (it was held), and "c"
    // (held by the original-style recv) too; "a" is done.
    bob.call(json!({"cmd": "requeue_inflight"})).unwrap();
    let again = messages(
        &bob.call(json!({"cmd": "recv", "max": 32, "wait_seconds": 0}))
            .unwrap(),
    );
    assert_eq!(bodies(&again), ["b", "c"]);
    assert!(again.iter().all(|m| m.redelivered));
    // Someone else's ids ack nothing of bob's.
    let mut alice_acks = Line::open(&hive.agent_socket("alice")).unwrap();
    alice_acks
        .call(json!({"cmd": "ack_turn", "ids": [again[0].id, again[1].id]}))
        .unwrap();
    bob.call(json!({"cmd": "requeue_inflight"})).unwrap();
    assert_eq!(hive.recv("bob", 0, 32).len(), 2);
}

#[test]
fn an_expired_lease_comes_back_with_the_redelivery_banner() {
    let hive = Hive::start(&["alice", "bob"]);
    hive.agent("alice", r#"{"cmd":"send","to":"bob","body":"held"}"#);
    // A harness holds its batch, then dies without a restart: nobody
    // calls requeue_inflight, and the socket stays quiet.
    let mut dying = Line::open(&hive.agent_socket("bob")).unwrap();
    let got = dying
        .call(json!({"cmd": "recv", "max": 8, "lease_seconds": 1}))
        .unwrap();
    assert_eq!(bodies(&messages(&got)), ["held"]);
    dying
        .call(json!({"cmd": "renew_lease", "lease": got["lease"]}))
        .unwrap();
    drop(dying);
    // An unnamed lease on a live connection runs out too, unflagged.
    hive.agent("alice", r#"{"cmd":"send","to":"bob","body":"unseen"}"#);
    let mut quiet = Line::open(&hive.agent_socket("bob")).unwrap();
    let unseen = quiet
        .call(json!({"cmd": "recv", "max": 8, "lease_seconds": 1}))
        .unwrap();
    assert_eq!(bodies(&messages(&unseen)), ["unseen"]);

    let started = Instant::now();
    let mut bob = Line::open(&hive.agent_socket("bob")).unwrap();
    let back = bob
        .call(json!({"cmd": "recv", "max": 8, "wait_seconds": 30, "lease_seconds": 60}))
        .unwrap();
    let mut back = messages(&back);
    if back.len() < 2 {
        let more = bob
            .call(json!({"cmd": "recv", "max": 8, "wait_seconds": 30}))
            .unwrap();
        back.extend(messages(&more));
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(bodies(&back), ["held", "unseen"]);
    assert_eq!(
        back.iter().map(|m| m.redelivered).collect::<Vec<_>>(),
        [true, false]
    );
    // What the next turn's prompt shows for them.
    let prompt = hive_agent::wake::wake_prompt(&back, 0);
    assert_eq!(
        prompt.matches(hive_agent::wake::REDELIVERED_BANNER).count(),
        1,
        "{prompt}"
    );
    // A renewal of a lease that ran out is refused: drop the batch.
    let late = bob
        .call(json!({"cmd": "renew_lease", "lease": got["lease"]}))
        .unwrap();
    assert_eq!(late["kind"], "err", "{late}");
    drop(quiet);
}

/// Everything the flood's clients saw, by body.
#[derive(Default)]
struct Ledger {
    /// Bodies whose send was answered.
    acked: HashSet<String>,
    /// Every delivery the receiver held, in order: (body, redelivered).
    seen: Vec<(String, bool)>,
}

/// One persistent connection that reconnects when the daemon is gone.
struct Reconnecting {
    socket: PathBuf,
    line: Option<Line>,
}

/// Why a request got no answer.
#[derive(Debug)]
enum Lost {
    /// No connection: the request never left, it may be sent again.
    Unsent,
    /// Written, unanswered: it may or may not have taken effect.
    Unknown,
}

impl Reconnecting {
    fn call(&mut self, request: Value) -> Result<Value, Lost> {
        if self.line.is_none() {
            self.line = Line::open(&self.socket).ok();
        }
        let Some(line) = self.line.as_mut() else {
            std::thread::sleep(Duration::from_millis(10));
            return Err(Lost::Unsent);
        };
        line.call(request).map_err(|_| {
            self.line = None;
            Lost::Unknown
        })
    }
}

/// SIGKILL at random points of a 1,000-message flood from three
/// concurrent senders: every acknowledged send is delivered, and a
/// delivery seen twice is flagged `redelivered` the second time.
#[test]
fn kill_9_during_a_flood_loses_nothing() {
    let mut hive = Hive::start(&["alice", "bob", "carol", "dave"]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("kill -9 flood: seed {seed}");
    let mut rng = seed | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sending = Arc::new(AtomicBool::new(true));
    let run_dir = hive.run_dir();
    let socket = |name: &str| run_dir.join("agents").join(name).join("mcp.sock");

    let senders: Vec<_> = ["alice", "carol", "dave"]
        .into_iter()
        .enumerate()
        .map(|(k, name)| {
            let ledger = ledger.clone();
            let mut conn = Reconnecting {
                socket: socket(name),
                line: None,
            };
            std::thread::spawn(move || {
                let mut i = 0;
                // 334 + 333 + 333 = 1,000 messages, some single, some batched.
                let total = if k == 0 { 334 } else { 333 };
                while i < total {
                    let n = if i % 3 == 0 { (total - i).min(8) } else { 1 };
                    let batch: Vec<String> = (i..i + n).map(|j| format!("{name}-{j}")).collect();
                    let request = if n == 1 {
                        json!({"cmd": "send", "to": "bob", "body": batch[0]})
                    } else {
                        json!({"cmd": "send_batch", "messages": batch
                            .iter()
                            .map(|b| json!({"to": "bob", "body": b}))
                            .collect::<Vec<_>>()})
                    };
                    match conn.call(request) {
                        Ok(answer) => {
                            assert_eq!(answer["kind"], if n == 1 { "ok" } else { "sent" });
                            ledger.lock().unwrap().acked.extend(batch);
                        }
                        Err(Lost::Unsent) => continue,
                        // Maybe stored, maybe not: never resent.
                        Err(Lost::Unknown) => {}
                    }
                    i += n;
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    let receiver = {
        let ledger = ledger.clone();
        let sending = sending.clone();
        let mut conn = Reconnecting {
            socket: socket("bob"),
            line: None,
        };
        std::thread::spawn(move || {
            let mut idle_rounds = 0;
            while sending.load(Ordering::Relaxed) || idle_rounds < 3 {
                let Ok(got) = conn
                    .call(json!({"cmd": "recv", "wait_seconds": 1, "max": 32, "lease_seconds": 2}))
                else {
                    continue;
                };
                if got["kind"] != "messages" {
                    continue;
                }
                let batch = messages(&got);
                if batch.is_empty() {
                    idle_rounds += 1;
                    continue;
                }
                idle_rounds = 0;
                // Ours only once core knows we hold them.
                let held = conn.call(json!({"cmd": "renew_lease", "lease": got["lease"]}));
                if !held.is_ok_and(|a| a["kind"] == "ok") {
                    continue;
                }
                ledger
                    .lock()
                    .unwrap()
                    .seen
                    .extend(batch.iter().map(|m| (m.body.clone(), m.redelivered)));
                let _ = conn.call(json!({"cmd": "ack_turn", "lease": got["lease"]}));
            }
        })
    };

    for kill in 0..4 {
        std::thread::sleep(Duration::from_millis(30 + next(150)));
        let pid = nix::unistd::Pid::from_raw(i32::try_from(hive.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        hive.child.wait().unwrap();
        let acked = ledger.lock().unwrap().acked.len();
        eprintln!("kill {kill}: {acked} sends acknowledged so far");
        let dir = std::mem::replace(&mut hive.dir, tempfile::tempdir().unwrap());
        // The killed daemon is reaped: its Drop must not signal that pid.
        std::mem::forget(std::mem::replace(&mut hive, Hive::start_in(dir)));
    }
    for sender in senders {
        sender.join().unwrap();
    }
    let acked = ledger.lock().unwrap().acked.clone();
    assert!(acked.len() > 100, "only {} sends acknowledged", acked.len());
    eventually("every acknowledged send to be delivered", || {
        let seen: HashSet<String> = ledger
            .lock()
            .unwrap()
            .seen
            .iter()
            .map(|(b, _)| b.clone())
            .collect();
        acked.is_subset(&seen)
    });
    sending.store(false, Ordering::Relaxed);
    receiver.join().unwrap();

    let ledger = ledger.lock().unwrap();
    let mut times: HashMap<&str, usize> = HashMap::new();
    for (body, redelivered) in &ledger.seen {
        let n = times.entry(body).or_default();
        assert!(
            *n == 0 || *redelivered,
            "{body} delivered again without the redelivered flag (seed {seed})"
        );
        *n += 1;
    }
    eprintln!(
        "{} acknowledged, {} deliveries, {} distinct",
        acked.len(),
        ledger.seen.len(),
        times.len()
    );
}
