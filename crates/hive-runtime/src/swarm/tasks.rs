//! Reading a swarm service's tasks: which one is current, and whether it
//! runs, waits for a node, or ended (and how).

use bollard::models::{Task, TaskState};

/// Where a task is, as core cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not yet on a node; the scheduler's reason in its status, if any.
    Unplaced,
    /// On a node, on its way to running.
    Starting,
    Running,
    /// Complete, failed, rejected, shut down, orphaned or removed.
    Ended,
}

pub(super) fn phase(task: &Task) -> Phase {
    match state(task) {
        TaskState::NEW | TaskState::ALLOCATED | TaskState::PENDING => Phase::Unplaced,
        TaskState::ASSIGNED
        | TaskState::ACCEPTED
        | TaskState::PREPARING
        | TaskState::READY
        | TaskState::STARTING => Phase::Starting,
        TaskState::RUNNING => Phase::Running,
        TaskState::COMPLETE
        | TaskState::SHUTDOWN
        | TaskState::FAILED
        | TaskState::REJECTED
        | TaskState::REMOVE
        | TaskState::ORPHANED => Phase::Ended,
    }
}

fn state(task: &Task) -> TaskState {
    task.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(TaskState::NEW)
}

/// Whether the task holds (or may soon hold) a container.
pub(super) fn is_live(task: &Task) -> bool {
    phase(task) != Phase::Ended
}

/// Whether it ended badly (non-zero exit, rejected by its node).
pub(super) fn failed(task: &Task) -> bool {
    matches!(state(task), TaskState::FAILED | TaskState::REJECTED)
}

pub(super) fn container_id(task: &Task) -> Option<&str> {
    task.status
        .as_ref()?
        .container_status
        .as_ref()?
        .container_id
        .as_deref()
        .filter(|id| !id.is_empty())
}

/// The task that stands for the service now: the newest.
pub(super) fn current<'a>(tasks: impl Iterator<Item = &'a Task>) -> Option<&'a Task> {
    tasks.max_by_key(|t| created_key(t.created_at.as_deref().unwrap_or_default()))
}

/// An RFC 3339 time as the engine writes it (trailing zeros of the
/// fraction trimmed) made comparable as text: the fraction padded to nine
/// digits.
fn created_key(at: &str) -> String {
    let Some(zone) = at.rfind(['Z', '+']).filter(|i| *i > 10) else {
        return at.to_owned();
    };
    let (time, zone) = at.split_at(zone);
    let (whole, fraction) = time.split_once('.').unwrap_or((time, ""));
    format!("{whole}.{fraction:0<9}{zone}")
}

/// The task's state and the engine's words for it: `failed: task:
/// non-zero exit (3)`, `pending: no suitable node (…)`.
pub(super) fn describe(task: &Task) -> String {
    let status = task.status.as_ref();
    let words = status
        .and_then(|s| s.err.as_deref().filter(|e| !e.is_empty()))
        .or_else(|| status.and_then(|s| s.message.as_deref()))
        .unwrap_or("no reason given");
    format!("{}: {words}", state(task))
}

/// Whether `task` failed in the Engine before its process ran: the
/// container could not be started (moby/moby#48783: on Engine 20.10 the
/// tmpfs of a task's secrets can fail to remount read-only while many
/// tasks start). Nothing of the agent ran, so a new task may be tried.
pub(super) fn failed_before_running(task: &Task) -> bool {
    failed(task)
        && task
            .status
            .as_ref()
            .and_then(|s| s.err.as_deref())
            .is_some_and(|err| err.starts_with("starting container failed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::TaskStatus;

    fn task(id: &str, at: &str, state: TaskState) -> Task {
        Task {
            id: Some(id.into()),
            created_at: Some(at.into()),
            status: Some(TaskStatus {
                state: Some(state),
                err: Some("no suitable node (scheduling constraints not satisfied)".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_newest_task_is_current_whatever_the_digits_of_its_time() {
        let tasks = [
            task("old", "2026-11-29T12:41:39.9Z", TaskState::FAILED),
            task("new", "2026-11-29T12:41:39.123456789Z", TaskState::RUNNING),
            task("mid", "2026-11-29T12:41:39.12Z", TaskState::SHUTDOWN),
        ];
        // "…39.9Z" sorts after "…39.12…Z" as text; as a time it is the newest.
        assert_eq!(current(tasks.iter()).unwrap().id.as_deref(), Some("old"));
        let tasks = [
            task("a", "2026-11-29T12:41:39Z", TaskState::FAILED),
            task("b", "2026-11-29T12:41:39.5Z", TaskState::RUNNING),
        ];
        assert_eq!(current(tasks.iter()).unwrap().id.as_deref(), Some("b"));
    }

    #[test]
    fn phases_and_words() {
        let pending = task("p", "2026-11-29T12:00:00Z", TaskState::PENDING);
        assert_eq!(phase(&pending), Phase::Unplaced);
        assert!(describe(&pending).starts_with("pending: no suitable node"));
        assert!(failed(&task("f", "x", TaskState::REJECTED)));
        assert!(!failed(&task("s", "x", TaskState::SHUTDOWN)));
        assert!(!is_live(&task("s", "x", TaskState::COMPLETE)));
        assert!(is_live(&task("s", "x", TaskState::PREPARING)));
    }

    /// Only a task the Engine could not start is one nothing of the agent
    /// ran in; a task whose process exited is not.
    #[test]
    fn a_task_the_engine_could_not_start_never_ran() {
        let with = |state, err: &str| {
            let mut t = task("t", "x", state);
            if let Some(status) = t.status.as_mut() {
                status.err = Some(err.into());
            }
            t
        };
        let busy = "starting container failed: unable to remount dir as readonly: mount \
                    tmpfs:/var/lib/docker/containers/7d9b/mounts/secrets, flags: 0x21, data: \
                    uid=0,gid=0: device or resource busy";
        assert!(failed_before_running(&with(TaskState::FAILED, busy)));
        assert!(!failed_before_running(&with(
            TaskState::FAILED,
            "task: non-zero exit (1)"
        )));
        assert!(!failed_before_running(&with(TaskState::RUNNING, busy)));
    }
}
