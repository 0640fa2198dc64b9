//! Broker benchmark: durable send → recv → ack throughput on a real
//! file-backed store, and the latency from `send` to a waiting `recv_wait`'s
//! wake. Prints figures; asserts nothing about time.

use std::error::Error;
use std::time::{Duration, Instant};

use hive_proto::AgentName;
use hive_store::Store;

const MESSAGES: usize = 20_000;
const WAKE_SAMPLES: usize = 2_000;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.sqlite"))?;
    for name in ["alice", "bob"] {
        store.register_agent(&AgentName::parse(name)?)?;
    }
    let body = "x".repeat(200);

    // Warm the statement cache and the file.
    round_trips(&store, &body, 32, 2_048)?;
    for batch in [1, 32] {
        let elapsed = round_trips(&store, &body, batch, MESSAGES)?;
        let rate = MESSAGES as f64 / elapsed.as_secs_f64();
        println!("send_recv_ack batch={batch}: {rate:.0} msgs/s ({MESSAGES} messages)");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut latencies = runtime.block_on(wake_latencies(store.clone(), &body))?;
    latencies.sort_unstable();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "send_to_wake: p50 {:?}, p99 {:?}, max {:?} ({} samples)",
        pick(0.50),
        pick(0.99),
        pick(1.0),
        latencies.len()
    );
    Ok(())
}

/// Sends `total` messages alice → bob in rounds of `batch` sends, one
/// `recv_batch(batch)` and one `ack_turn` per round.
fn round_trips(
    store: &Store,
    body: &str,
    batch: usize,
    total: usize,
) -> Result<Duration, Box<dyn Error>> {
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        for _ in 0..n {
            store.send("alice", "bob", body, None)?;
        }
        let got = store.recv_batch("bob", u32::try_from(n)?)?;
        if got.len() != n {
            return Err(format!("popped {} of {n}", got.len()).into());
        }
        store.ack_turn("bob")?;
        done += n;
    }
    Ok(start.elapsed())
}

/// A task long-polls bob's inbox; the caller sends one message at a time
/// once the waiter has parked, timing send → wake.
async fn wake_latencies(store: Store, body: &str) -> Result<Vec<Duration>, Box<dyn Error>> {
    let (woke_tx, mut woke_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..WAKE_SAMPLES {
                let got = store.recv_wait("bob", Duration::from_secs(10), 1).await?;
                let woke = Instant::now();
                if got.is_empty() || woke_tx.send(woke).is_err() {
                    break;
                }
                store.ack_turn("bob")?;
            }
            Ok::<(), hive_store::Error>(())
        })
    };
    let mut latencies = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        // Give the waiter time to park on its Notify.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let sent = Instant::now();
        store.send("alice", "bob", body, None)?;
        let Some(woke) = woke_rx.recv().await else {
            return Err("waiter stopped early".into());
        };
        latencies.push(woke.duration_since(sent));
    }
    waiter.await??;
    Ok(latencies)
}
