//! The dashboard's one event channel, stamped with a monotonic `seq`.
//!
//! Every in-process change a browser reacts to is published here; a
//! forwarder mirrors the broker's own sent/delivered broadcast onto it so
//! the broker never knows about presentation. `seq` is assigned and the
//! event sent under one lock, so subscribers see strictly increasing `seq`
//! and a snapshot taken at `current_seq()` can be merged with a buffered
//! stream by dropping frames with `seq <= snapshot.seq`.
//!
//! The manager's own events (helper events in its inbox) go out through
//! [`notify_manager`].

use std::sync::Mutex;

use hive_proto::{DashboardEvent, HelperEvent, MANAGER_AGENT};
use hive_store::{Question, Store};
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

    /// Publishes a newly queued question.
    pub fn question_added(&self, q: &Question) {
        self.emit(|seq| DashboardEvent::QuestionAdded {
            seq,
            id: q.id,
            asker: q.asker.clone(),
            question: q.question.clone(),
            options: q.options.clone(),
            multi: q.multi,
            asked_at: q.asked_at,
            deadline_at: q.deadline_at,
            target: q.target.clone(),
        });
    }

    /// Publishes a resolved (answered, expired, cancelled) question.
    pub fn question_resolved(&self, q: &Question) {
        self.emit(|seq| DashboardEvent::QuestionResolved {
            seq,
            id: q.id,
            answer: q.answer.clone().unwrap_or_default(),
            answerer: q.answerer.clone().unwrap_or_default(),
            answered_at: q.answered_at.unwrap_or_else(hive_store::now_unix),
            cancelled: q.cancelled,
            target: q.target.clone(),
        });
    }
}

/// Pushes a helper event into the manager's inbox. Failures are logged:
/// a lost note must not fail the change it reports.
pub fn notify_manager(store: &Store, event: &HelperEvent) {
    if let Err(e) = store.push_helper_event(MANAGER_AGENT, event) {
        tracing::error!(?event, "helper event not delivered to the manager: {e}");
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
