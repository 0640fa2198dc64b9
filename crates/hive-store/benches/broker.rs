//! Broker benchmark: durable send → recv → ack throughput on a real
//! file-backed store, and the latency from `send` to a waiting `recv_wait`'s
//! wake. Prints figures; asserts nothing about time.
//!
//! An argument (`cargo bench -p hive-store --bench broker -- send_batch`)
//! runs only the figures whose name contains it: one figure alone, for a
//! profiler.

use std::error::Error;
use std::time::{Duration, Instant};

use hive_proto::{AgentName, Recipient};
use hive_store::Store;

const MESSAGES: usize = 20_000;
/// Throughput runs per batch size; the median is reported (disk latency on
/// shared machines is noisy).
const RUNS: usize = 3;
const WAKE_SAMPLES: usize = 2_000;

fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` passes `--bench`; anything else names what to run.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.sqlite"))?;
    for name in ["alice", "bob"] {
        store.register_agent(&AgentName::parse(name)?)?;
    }
    let body = "x".repeat(200);

    let batcher = tokio::runtime::Builder::new_current_thread().build()?;
    // Warm the statement cache and the file.
    round_trips(&store, &body, 32, 2_048, None)?;
    round_trips(&store, &body, 32, 2_048, Some(&batcher))?;
    for (batch, batched) in [(1, None), (32, None), (32, Some(&batcher))] {
        let label = match batched {
            None => format!("{batch}"),
            Some(_) => format!("{batch} (send_batch, exact lease, ack by lease)"),
        };
        if !wanted(&format!("send_recv_ack batch={label}")) {
            continue;
        }
        let mut runs = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            runs.push(round_trips(&store, &body, batch, MESSAGES, batched)?);
        }
        let batch = label;
        runs.sort_by_key(Phases::total);
        let rate = |p: &Phases| MESSAGES as f64 / p.total().as_secs_f64();
        let median = &runs[RUNS / 2];
        let per_msg = |d: Duration| d.as_secs_f64() * 1e6 / MESSAGES as f64;
        println!(
            "send_recv_ack batch={batch}: {:.0} msgs/s (median of {RUNS} runs of {MESSAGES}; \
             range {:.0}..{:.0}; per message: send {:.1} µs, recv {:.1} µs, ack {:.1} µs)",
            rate(median),
            rate(&runs[RUNS - 1]),
            rate(&runs[0]),
            per_msg(median.send),
            per_msg(median.recv),
            per_msg(median.ack),
        );
    }

    if !wanted("send_to_wake") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let wakes = runtime.block_on(wake_latencies(store.clone(), &body))?;
    let report = |name: &str, mut samples: Vec<Duration>| {
        samples.sort_unstable();
        let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "{name}: p50 {:?}, p99 {:?}, max {:?} ({} samples)",
            pick(0.50),
            pick(0.99),
            pick(1.0),
            samples.len()
        );
    };
    report(
        "send_to_wake",
        wakes.iter().map(|w| w.woke - w.send_called).collect(),
    );
    report(
        "committed_to_wake",
        wakes.iter().map(|w| w.woke - w.send_returned).collect(),
    );
    Ok(())
}

/// Time spent in each phase of a run.
#[derive(Default)]
struct Phases {
    send: Duration,
    recv: Duration,
    ack: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.send + self.recv + self.ack
    }
}

/// Sends `total` messages alice → bob in rounds of `batch` sends, one
/// `recv_batch(batch)` and one `ack_turn` per round; with `batched`, each
/// round's sends are one `send_batch` through the group-commit writer and
/// the pop takes an exact lease that the ack names.
fn round_trips(
    store: &Store,
    body: &str,
    batch: usize,
    total: usize,
    batched: Option<&tokio::runtime::Runtime>,
) -> Result<Phases, Box<dyn Error>> {
    let mut phases = Phases::default();
    let mut done = 0;
    let message = hive_proto::OutgoingMessage {
        to: to("bob"),
        body: body.to_owned(),
        in_reply_to: None,
    };
    while done < total {
        let n = batch.min(total - done);
        let start = Instant::now();
        match batched {
            Some(rt) => {
                rt.block_on(store.send_batch("alice", vec![message.clone(); n]))?;
            }
            None => {
                for _ in 0..n {
                    store.send("alice", &to("bob"), body, None)?;
                }
            }
        }
        let sent = Instant::now();
        let lease_for = batched.map(|_| Duration::from_secs(60));
        let got = store.pop("bob", u32::try_from(n)?, lease_for)?;
        if got.messages.len() != n {
            return Err(format!("popped {} of {n}", got.messages.len()).into());
        }
        let received = Instant::now();
        match got.lease.filter(|_| batched.is_some()) {
            Some(lease) => store.ack("bob", &[], Some(lease))?,
            None => store.ack_turn("bob")?,
        };
        let acked = Instant::now();
        phases.send += sent - start;
        phases.recv += received - sent;
        phases.ack += acked - received;
        done += n;
    }
    Ok(phases)
}

/// One send → wake sample.
struct Wake {
    send_called: Instant,
    send_returned: Instant,
    /// When the waiter's `recv_wait` returned the message (popped).
    woke: Instant,
}

/// A task long-polls bob's inbox; the caller sends one message at a time
/// once the waiter has parked, timing send → wake.
async fn wake_latencies(store: Store, body: &str) -> Result<Vec<Wake>, Box<dyn Error>> {
    let (woke_tx, mut woke_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..WAKE_SAMPLES {
                let got = store
                    .recv_wait("bob", Duration::from_secs(10), 1, None)
                    .await?
                    .messages;
                let woke = Instant::now();
                if got.is_empty() || woke_tx.send(woke).is_err() {
                    break;
                }
                store.ack_turn("bob")?;
            }
            Ok::<(), hive_store::Error>(())
        })
    };
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        // Give the waiter time to park on its Notify.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let send_called = Instant::now();
        store.send("alice", &to("bob"), body, None)?;
        let send_returned = Instant::now();
        let Some(woke) = woke_rx.recv().await else {
            return Err("waiter stopped early".into());
        };
        samples.push(Wake {
            send_called,
            send_returned,
            woke,
        });
    }
    waiter.await??;
    Ok(samples)
}

/// The recipient `name` names (a benchmark's own literal: always valid).
fn to(name: &str) -> Recipient {
    Recipient::Agent(AgentName::parse(name).unwrap_or_else(|e| panic!("{e}")))
}
