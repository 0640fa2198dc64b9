//! The dashboard's one event channel, stamped with a monotonic `seq`.
//!
//! Every in-process change a browser reacts to is published here; a
//! forwarder mirrors the broker's own sent/delivered broadcast onto it so
//! the broker never knows about presentation. `seq` is assigned and the
//! event sent under one lock, so subscribers see strictly increasing `seq`
//! and a snapshot taken at `current_seq()` can be merged with a buffered
//! stream by dropping frames with `seq <= snapshot.seq`.

use std::sync::Mutex;

use hive_proto::DashboardEvent;
use tokio::sync::broadcast;

/// Frames a slow subscriber may fall behind before it lags.
const CHANNEL_CAPACITY: usize = 1024;

pub struct DashboardBus {
    seq: Mutex<u64>,
    tx: broadcast::Sender<DashboardEvent>,
}

impl Default for DashboardBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            seq: Mutex::new(0),
            tx,
        }
    }
}

impl DashboardBus {
    /// Publishes the event `make` builds from the next `seq`.
    pub fn emit(&self, make: impl FnOnce(u64) -> DashboardEvent) {
        let mut seq = self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *seq += 1;
        // No subscriber is fine: the dashboard may simply be closed.
        let _ = self.tx.send(make(*seq));
    }

    /// The `seq` of the last published event.
    pub fn current_seq(&self) -> u64 {
        *self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DashboardEvent> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_monotonic() {
        let bus = DashboardBus::default();
        let mut rx = bus.subscribe();
        for _ in 0..3 {
            bus.emit(|seq| DashboardEvent::TransientCleared {
                seq,
                name: "a".into(),
            });
        }
        let seqs: Vec<u64> = (0..3).map(|_| rx.try_recv().unwrap().seq()).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(bus.current_seq(), 3);
    }
}
