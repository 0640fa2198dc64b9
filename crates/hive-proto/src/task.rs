//! The shared task board: a task as every surface shows it (agent and
//! manager sockets, host.sock, the dashboard), its status and its history.
//!
//! A claim is a lease tied to the claiming agent's container: when the
//! container crashes or is destroyed core puts the task back to `open` and
//! tells the manager (`task_released`), as it returns a message in flight.

use serde::{Deserialize, Serialize};

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Nobody holds it; claimable once its dependencies are done (and by
    /// its assignee only, if it has one).
    Open,
    /// An agent holds it (a lease on its container's life).
    Claimed,
    /// Its holder stopped on it, with a reason; the holder may claim it
    /// again to resume.
    Blocked,
    Done,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Open,
        TaskStatus::Claimed,
        TaskStatus::Blocked,
        TaskStatus::Done,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Claimed => "claimed",
            TaskStatus::Blocked => "blocked",
            TaskStatus::Done => "done",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Done and cancelled tasks never change again.
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Done | TaskStatus::Cancelled)
    }
}

/// One task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: i64,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    /// `operator`, `manager` or the agent that created it.
    pub creator: String,
    /// Who holds it (claimed, blocked) or who it is reserved for (open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    pub status: TaskStatus,
    /// Why it is blocked (or why it was cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tasks that must be done before this one can be claimed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<i64>,
    /// Messages (`msg:<id>`) and files (`/shared/…`, `/state/…`) it refers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Board order: lower first.
    pub rank: i64,
    /// Open with every dependency done.
    pub claimable: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One line of a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub at: i64,
    /// Who did it: an agent, `manager`, `operator` or `system`.
    pub actor: String,
    /// `created`, `claimed`, `updated`, `blocked`, `completed`, `assigned`,
    /// `reordered`, `cancelled`, `released`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Which tasks a listing shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFilter {
    /// Held by or assigned to the caller.
    Mine,
    /// What the caller could claim now.
    Claimable,
    /// Every task that is not done or cancelled.
    #[default]
    Active,
    /// Every task.
    All,
}

/// A new task's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
}

/// Changes to a task's fields; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Replaces the dependency list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<i64>>,
    /// Replaces the link list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
}
