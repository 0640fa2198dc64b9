//! One deploy of an agent at a time: per-agent lanes that queue approved
//! deploys in approval order, and the harness reports a deploy waits for
//! before it counts as `deployed/`.
//!
//! An approval that meets a deploy in progress waits its turn; when its
//! turn comes and a later approval of the same agent is already queued
//! behind it, it is superseded (that later one deploys instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use hive_proto::AgentName;
use tokio::sync::{Mutex as AsyncMutex, Notify, OwnedMutexGuard};

/// How long a started container gets to have its harness report in.
pub const HEALTH_BOUND: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct DeployLanes {
    lanes: Mutex<HashMap<AgentName, Lane>>,
    /// By agent, when the newest connection a harness state report came
    /// on was opened: a report on a connection opened after a container
    /// started is that container's harness (a late report of the stopped
    /// one, still in its old connection, is not).
    reports: Mutex<HashMap<AgentName, Instant>>,
    reported: Notify,
}

#[derive(Default)]
struct Lane {
    turn: Arc<AsyncMutex<()>>,
    /// The last ticket handed out, and the approval it belongs to.
    newest: (u64, i64),
}

/// A place in an agent's deploy queue.
pub struct Ticket {
    n: u64,
    turn: Arc<AsyncMutex<()>>,
}

/// What waiting in the lane gave: the turn, or the approval that
/// supersedes this one.
pub enum Turn {
    Mine(OwnedMutexGuard<()>),
    Superseded { by: i64 },
}

impl DeployLanes {
    fn lanes(&self) -> MutexGuard<'_, HashMap<AgentName, Lane>> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reports(&self) -> MutexGuard<'_, HashMap<AgentName, Instant>> {
        self.reports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `approve` (the approval's status change) and, if it succeeds,
    /// queues approval `id` of `name` behind every deploy queued before,
    /// as one step: two approvals of one agent queue in the order their
    /// approvals happened, however their tasks are scheduled after.
    pub fn approve_and_join<T, E>(
        &self,
        name: &AgentName,
        id: i64,
        approve: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, Ticket), E> {
        let mut lanes = self.lanes();
        let approved = approve()?;
        Ok((approved, Self::join_locked(&mut lanes, name, id)))
    }

    /// Queues approval `id` of `name`, behind every deploy queued before.
    pub fn join(&self, name: &AgentName, id: i64) -> Ticket {
        Self::join_locked(&mut self.lanes(), name, id)
    }

    fn join_locked(lanes: &mut HashMap<AgentName, Lane>, name: &AgentName, id: i64) -> Ticket {
        let lane = lanes.entry(name.clone()).or_default();
        let n = lane.newest.0 + 1;
        lane.newest = (n, id);
        Ticket {
            n,
            turn: lane.turn.clone(),
        }
    }

    /// Waits for `ticket`'s turn (tokio's mutex is fair: first queued,
    /// first served).
    pub async fn wait(&self, name: &AgentName, ticket: Ticket) -> Turn {
        let guard = ticket.turn.clone().lock_owned().await;
        let newest = self.lanes().get(name).map(|l| l.newest);
        match newest {
            Some((n, by)) if n > ticket.n => Turn::Superseded { by },
            _ => Turn::Mine(guard),
        }
    }

    /// Records a harness state report of `name`, made on a connection
    /// opened at `opened`.
    pub fn harness_reported(&self, name: &AgentName, opened: Instant) {
        let mut reports = self.reports();
        let newest = reports.entry(name.clone()).or_insert(opened);
        *newest = (*newest).max(opened);
        drop(reports);
        self.reported.notify_waiters();
    }

    /// Whether `name`'s harness reported on a connection opened at or
    /// after `since`.
    pub fn reported_since(&self, name: &AgentName, since: Instant) -> bool {
        self.reports()
            .get(name)
            .is_some_and(|opened| *opened >= since)
    }

    /// Resolves at the next harness report (of any agent) or after `max`.
    pub async fn next_report(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.reported.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_report_of_the_stopped_harness_is_not_the_new_ones() {
        let lanes = DeployLanes::default();
        let alice = AgentName::parse("alice").unwrap();
        let old_connection = Instant::now();
        let started = old_connection + Duration::from_millis(5);
        // The stopped harness's last report, read after the new start.
        lanes.harness_reported(&alice, old_connection);
        assert!(!lanes.reported_since(&alice, started));
        // The new harness reports on a connection of its own.
        lanes.harness_reported(&alice, started + Duration::from_millis(1));
        assert!(lanes.reported_since(&alice, started));
        // A later stale report does not take that back.
        lanes.harness_reported(&alice, old_connection);
        assert!(lanes.reported_since(&alice, started));
    }

    #[tokio::test]
    async fn a_queued_later_approval_supersedes_the_waiting_one() {
        let lanes = DeployLanes::default();
        let alice = AgentName::parse("alice").unwrap();
        let first = lanes.join(&alice, 1);
        let Turn::Mine(running) = lanes.wait(&alice, first).await else {
            panic!("the only deploy waits for nothing");
        };
        let second = lanes.join(&alice, 2);
        let third = lanes.join(&alice, 3);
        drop(running);
        assert!(matches!(
            lanes.wait(&alice, second).await,
            Turn::Superseded { by: 3 }
        ));
        assert!(matches!(lanes.wait(&alice, third).await, Turn::Mine(_)));
    }
}
