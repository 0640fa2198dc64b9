//! Events on the dashboard's one SSE channel (`/dashboard/stream`), tagged
//! `kind`, each stamped with a monotonic per-process `seq`.
//!
//! Clients subscribe first, then fetch a snapshot (which returns the `seq`
//! it was taken at), then replay their buffer dropping frames with
//! `seq <= snapshot.seq`: nothing shown twice, nothing lost.

use serde::{Deserialize, Serialize};

use crate::{AgentStatusRow, ApprovalKind, ApprovalStatus};

/// One container row on the dashboard: the same shape `agent_status` gives.
pub type ContainerView = AgentStatusRow;

/// A broker message as both `sent` and `delivered` carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    /// Broker row id, for reply threads.
    pub id: i64,
    pub from: String,
    pub to: String,
    pub body: String,
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<i64>,
}

/// Every change the dashboard reacts to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DashboardEvent {
    /// A message entered the broker.
    Sent {
        seq: u64,
        #[serde(flatten)]
        message: MessageView,
    },
    /// A message was popped by its recipient.
    Delivered {
        seq: u64,
        #[serde(flatten)]
        message: MessageView,
    },
    /// A new approval is pending. `diff` is raw unified diff text.
    ApprovalAdded {
        seq: u64,
        id: i64,
        agent: String,
        approval_kind: ApprovalKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha_short: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// A pending approval reached a terminal state.
    ApprovalResolved {
        seq: u64,
        id: i64,
        agent: String,
        approval_kind: ApprovalKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha_short: Option<String>,
        status: ApprovalStatus,
        resolved_at: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// A question was queued. `target` absent: asked of the operator.
    QuestionAdded {
        seq: u64,
        id: i64,
        asker: String,
        question: String,
        options: Vec<String>,
        multi: bool,
        asked_at: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// A question was answered, expired or cancelled.
    QuestionResolved {
        seq: u64,
        id: i64,
        answer: String,
        answerer: String,
        answered_at: i64,
        cancelled: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// A lifecycle action started; the client ticks elapsed time from
    /// `since_unix` itself.
    TransientSet {
        seq: u64,
        name: String,
        transient_kind: TransientKind,
        since_unix: i64,
    },
    /// The lifecycle action resolved (success or failure).
    TransientCleared { seq: u64, name: String },
    /// A container row appeared or changed; clients upsert by name.
    ContainerStateChanged { seq: u64, container: ContainerView },
    /// A container row is gone.
    ContainerRemoved { seq: u64, name: String },
    /// The full tombstone list after any change to it.
    TombstonesChanged {
        seq: u64,
        tombstones: Vec<TombstoneView>,
    },
    /// The full list of deployed config inputs after any deploy.
    MetaInputsChanged {
        seq: u64,
        inputs: Vec<MetaInputView>,
    },
    /// A hive-wide update started (`true`) or finished (`false`).
    MetaUpdateRunning { seq: u64, running: bool },
    /// The full rebuild queue after any change to it.
    RebuildQueueChanged { seq: u64, queue: Vec<QueueEntry> },
    /// A task was created or changed; clients upsert by id.
    TaskChanged { seq: u64, task: crate::Task },
    /// An agent's harness reported a new turn state.
    TurnStateChanged {
        seq: u64,
        #[serde(flatten)]
        turn: TurnStateView,
    },
    /// A lifecycle action finished, with its result.
    LifecycleFinished {
        seq: u64,
        #[serde(flatten)]
        action: LastActionView,
    },
}

/// What an agent's harness last said it was doing, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnStateView {
    pub name: String,
    pub state: crate::live::TurnState,
    /// The harness's detail (a tool's name, a rate limit's retry): agent
    /// text, shown as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub since_unix: i64,
}

/// The last lifecycle action on an agent and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastActionView {
    pub name: String,
    pub action: TransientKind,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at_unix: i64,
}

/// A lifecycle action in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransientKind {
    Spawning,
    Starting,
    Stopping,
    Restarting,
    Rebuilding,
    Destroying,
    /// Checkpoint, stop, re-pin to another node, start there.
    Moving,
}

/// Kept state of an agent with no container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TombstoneView {
    pub name: String,
    pub state_bytes: u64,
    pub modified_at: i64,
    /// The engine's credentials survive in the state dir.
    pub has_credentials: bool,
}

/// One agent's deployed config revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaInputView {
    pub name: String,
    pub rev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One entry of the rebuild queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: u64,
    pub agent: String,
    /// `queued` / `running` / `done` / `failed`.
    pub status: String,
    pub enqueued_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl DashboardEvent {
    /// The event's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            DashboardEvent::Sent { seq, .. }
            | DashboardEvent::Delivered { seq, .. }
            | DashboardEvent::ApprovalAdded { seq, .. }
            | DashboardEvent::ApprovalResolved { seq, .. }
            | DashboardEvent::QuestionAdded { seq, .. }
            | DashboardEvent::QuestionResolved { seq, .. }
            | DashboardEvent::TransientSet { seq, .. }
            | DashboardEvent::TransientCleared { seq, .. }
            | DashboardEvent::ContainerStateChanged { seq, .. }
            | DashboardEvent::ContainerRemoved { seq, .. }
            | DashboardEvent::TombstonesChanged { seq, .. }
            | DashboardEvent::MetaInputsChanged { seq, .. }
            | DashboardEvent::MetaUpdateRunning { seq, .. }
            | DashboardEvent::RebuildQueueChanged { seq, .. }
            | DashboardEvent::TurnStateChanged { seq, .. }
            | DashboardEvent::LifecycleFinished { seq, .. }
            | DashboardEvent::TaskChanged { seq, .. } => *seq,
        }
    }
}
