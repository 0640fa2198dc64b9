//! Timers of the daemon: reminder delivery, question TTLs, broker vacuum.
//!
//! The scheduler sleeps until the earliest due reminder or question
//! deadline, or until the store says the schedule changed — no fixed
//! polling interval. Each reminder is delivered in one store transaction,
//! so a crash never sends one twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hive_store::ReminderOutcome;

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
    loop {
        // Register interest before reading the schedule so a change made
        // while we compute the next wake is not missed.
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let sleep_for = match tick(&coord) {
            Ok(next_due) => next_due.map(until_unix),
            Err(e) => {
                tracing::error!("scheduler: {e}");
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

/// Delivers what is due now; returns when the next thing is due.
fn tick(coord: &Coordinator) -> hive_store::Result<Option<i64>> {
    let now = hive_store::now_unix();
    for outcome in coord.store.deliver_due_reminders(now)? {
        match outcome {
            ReminderOutcome::Delivered {
                reminder,
                message_id,
            } => {
                tracing::info!(id = reminder.id, owner = %reminder.owner, message_id, "reminder delivered");
                coord.publish_status(&reminder.owner);
            }
            ReminderOutcome::Failed { reminder, error } => {
                tracing::warn!(
                    id = reminder.id,
                    owner = %reminder.owner,
                    attempts = reminder.attempts,
                    parked = reminder.parked,
                    "reminder not delivered: {error}"
                );
                coord.publish_status(&reminder.owner);
            }
        }
    }
    for question in coord.store.expire_questions(now)? {
        tracing::info!(id = question.id, asker = %question.asker, "question expired");
        coord.publish_question_resolved(&question);
    }
    let next = [
        coord.store.next_reminder_due()?,
        coord.store.next_question_deadline()?,
    ];
    Ok(next.into_iter().flatten().min())
}

/// Time from now until the unix second `at` begins (zero if past).
fn until_unix(at: i64) -> Duration {
    let target = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
    target
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
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
