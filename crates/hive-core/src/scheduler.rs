//! Timers of the daemon: reminder delivery, question TTLs, lease expiry,
//! broker vacuum.
//!
//! The scheduler sleeps until the earliest due reminder or question
//! deadline, or until the store says the schedule changed — no fixed
//! polling interval. Reminder times are unix ms and the sleep is to the
//! millisecond (never short: delivery checks `due_ms <= now` again). Each
//! reminder is delivered in one store transaction, so a crash never sends
//! one twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hive_store::ReminderOutcome;
use tokio::sync::Notify;

use crate::coordinator::Coordinator;

/// How often acked broker rows are vacuumed.
const VACUUM_EVERY: Duration = Duration::from_secs(3600);
/// Acked broker rows older than this are deleted.
const VACUUM_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Wait after a store error before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// Runs reminders and question TTLs until shutdown.
pub async fn run(coord: Arc<Coordinator>) {
    let changed = coord.store.schedule_changed();
    timer(&coord, &changed, "scheduler", tick).await;
}

/// Until shutdown: runs `step`, then sleeps until the unix millisecond it
/// returns (forever on `None`) or until `changed` fires. Interest in
/// `changed` is registered before `step` reads the schedule, so a change
/// made meanwhile is not missed.
async fn timer(
    coord: &Coordinator,
    changed: &Notify,
    what: &str,
    step: impl Fn(&Coordinator) -> hive_store::Result<Option<i64>>,
) {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let sleep_for = match step(coord) {
            Ok(next_due) => next_due.map(until_millis),
            Err(e) => {
                tracing::error!("{what}: {e}");
                Some(ERROR_BACKOFF)
            }
        };
        let sleep = async {
            match sleep_for {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = &mut notified => {}
            () = coord.shutting_down() => return,
        }
    }
}

/// Delivers what is due now; returns when (unix ms) the next thing is due.
fn tick(coord: &Coordinator) -> hive_store::Result<Option<i64>> {
    let now_ms = hive_store::now_millis();
    let now = now_ms.div_euclid(1000);
    for outcome in coord.store.deliver_due_reminders(now_ms)? {
        match outcome {
            ReminderOutcome::Delivered {
                reminder,
                message_id,
            } => {
                tracing::info!(id = reminder.id, owner = %reminder.owner, message_id, "reminder delivered");
                coord.status.publish(&reminder.owner);
            }
            ReminderOutcome::Failed { reminder, error } => {
                tracing::warn!(
                    id = reminder.id,
                    owner = %reminder.owner,
                    attempts = reminder.attempts,
                    parked = reminder.parked,
                    "reminder not delivered: {error}"
                );
                coord.status.publish(&reminder.owner);
            }
        }
    }
    for question in coord.store.expire_questions(now)? {
        tracing::info!(id = question.id, asker = %question.asker, "question expired");
        coord.dashboard.question_resolved(&question);
    }
    let next = [
        coord.store.next_reminder_due()?,
        coord
            .store
            .next_question_deadline()?
            .map(|at| at.saturating_mul(1000)),
    ];
    Ok(next.into_iter().flatten().min())
}

/// Time from now until the unix millisecond `at_ms` (zero if past).
fn until_millis(at_ms: i64) -> Duration {
    let target = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0));
    target
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

/// Puts back the rows whose exact lease ran out (flagged `redelivered` if
/// the lease was held), sleeping until the earliest lease runs out or a
/// new one would run out sooner — so a harness that died mid-turn has its
/// messages redelivered even when no new harness boots.
pub async fn lease_expiry(coord: Arc<Coordinator>) {
    let changed = coord.store.lease_changed();
    timer(&coord, &changed, "lease expiry", expire_leases).await;
}

/// Puts back what ran out; returns when (unix ms) the next lease runs out.
fn expire_leases(coord: &Coordinator) -> hive_store::Result<Option<i64>> {
    let n = coord.store.expire_leases(hive_store::now_millis())?;
    if n > 0 {
        tracing::info!(rows = n, "leases ran out: messages back in their inboxes");
    }
    let next = coord.store.next_lease_expiry()?;
    coord.store.set_lease_alarm(next.unwrap_or(i64::MAX));
    Ok(next)
}

/// Vacuums acked broker rows hourly until shutdown.
pub async fn vacuum(coord: Arc<Coordinator>) {
    let mut every = tokio::time::interval(VACUUM_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = coord.shutting_down() => return,
        }
        match coord.store.vacuum_acked(VACUUM_AGE) {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "vacuumed acked messages"),
            Err(e) => tracing::error!("vacuum failed: {e}"),
        }
    }
}
