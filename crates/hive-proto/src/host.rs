//! The host admin socket (`<run-dir>/host.sock`): the operator's verbs.
//!
//! One JSON line in, one JSON line out per connection (except
//! `subscribe_agent_status`, which keeps streaming single-row responses).
//! Every response begins `{"version":1,"ok":…` followed by `error` or one
//! payload key; absent keys are omitted.

use serde::{Deserialize, Serialize};

use crate::{AgentName, HOST_PROTOCOL_VERSION, Recipient};

/// Requests on the host admin socket, tagged `cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum HostRequest {
    /// Create and start an agent directly, bypassing the approval queue.
    Spawn { name: AgentName },
    /// Queue a spawn approval; the operator approves it later. Answers with
    /// the queued approval in `approvals`.
    RequestSpawn {
        name: AgentName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Stop an agent's container (graceful); state is unchanged.
    Kill { name: AgentName },
    /// Tear an agent's container down. State and config repos are kept
    /// unless `purge`.
    Destroy {
        name: AgentName,
        #[serde(default)]
        purge: bool,
    },
    /// Re-apply the deployed config to an agent's container.
    Rebuild { name: AgentName },
    /// Copy a running agent's `/state` over the link into core's kept
    /// checkpoint. Answers the agent's status row (with the checkpoint).
    Checkpoint { name: AgentName },
    /// Queue a `move` approval: the agent to `node` (checkpoint, stop,
    /// re-pin, start there from the checkpoint). Answers the approval.
    Move { name: AgentName, node: String },
    /// Names of every known agent.
    List,
    /// Pending approvals.
    Pending,
    /// Approve a pending approval; its action runs immediately.
    Approve { id: i64 },
    /// Deny a pending approval, optionally with a reason for the manager.
    Deny {
        id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// One status row per agent in `scope` (empty: every agent).
    AgentStatus {
        #[serde(default, skip_serializing_if = "Scope::is_all")]
        scope: Scope,
    },
    /// Acknowledge, then stream one single-row `agent_statuses` response per
    /// change for as long as the client stays connected.
    SubscribeAgentStatus,
    /// Start the agents in `scope` (empty: every agent).
    Start {
        #[serde(default)]
        scope: Scope,
    },
    /// Stop the agents in `scope` (empty: every agent); `graceful` lets the
    /// harness finish its turn first.
    Stop {
        #[serde(default)]
        scope: Scope,
        #[serde(default)]
        graceful: bool,
    },
    /// Stop then start one agent.
    Restart { name: AgentName },
    /// Set or clear the pause marker the harness honours between turns.
    SetPaused { name: AgentName, paused: bool },
    /// Where the hive is reached (`HiveUrls`).
    Urls,
    /// Questions waiting for an answer (to the operator or between agents).
    Questions,
    /// Answer a question as the operator. Options are picked by text here;
    /// several (for a multi question) are joined with ", ".
    Answer { id: i64, answer: String },
    /// Withdraw a question; the asker hears `[cancelled]`.
    CancelQuestion { id: i64 },
    /// One approval, with its diff when it is a config deploy.
    Show { id: i64 },
    /// Send a message from the operator to an agent (or `*`).
    Send { to: Recipient, body: String },
    /// Queue an approval that redeploys the config of `deployed/<id>`.
    /// Answers with the queued approval in `approvals`.
    Rollback { name: AgentName, id: i64 },
    /// The last `lines` lines (default 100) its container printed, in
    /// `logs`, escape sequences removed; with `follow`, further responses
    /// carry new lines as they come, until the client leaves.
    Logs {
        name: AgentName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow: bool,
    },
    /// The task board (`active` unless `filter` says otherwise). Answers
    /// `tasks`.
    Tasks {
        #[serde(default)]
        filter: crate::TaskFilter,
    },
    /// Put a task on the board as the operator, optionally reserved for
    /// `assignee`. Answers `tasks` with the one task.
    TaskAdd {
        title: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        body: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        depends_on: Vec<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignee: Option<AgentName>,
    },
    /// Reserve a task for an agent. Answers `tasks` with the one task.
    TaskAssign { id: i64, agent: AgentName },
    /// Cancel a task. Answers `tasks` with the one task.
    TaskCancel {
        id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A set of agents a verb applies to; empty means every agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub agent_names: Vec<AgentName>,
}

impl Scope {
    pub fn is_all(&self) -> bool {
        self.agent_names.is_empty()
    }

    pub fn one(name: AgentName) -> Self {
        Self {
            agent_names: vec![name],
        }
    }
}

/// The one response shape of host.sock. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostResponse {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_statuses: Option<Vec<AgentStatusRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<Approval>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<HiveUrls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions: Option<Vec<QuestionRow>>,
    /// `show`: a config approval's diff against the config deployed now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// `stop`: what was left running, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_running: Option<Vec<KeptRunning>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<crate::Task>>,
}

/// An agent a scoped `stop` left running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptRunning {
    pub name: String,
    pub reason: String,
}

impl HostResponse {
    fn empty(ok: bool) -> Self {
        Self {
            version: HOST_PROTOCOL_VERSION,
            ok,
            error: None,
            agents: None,
            agent_statuses: None,
            approvals: None,
            urls: None,
            logs: None,
            questions: None,
            diff: None,
            kept_running: None,
            tasks: None,
        }
    }

    pub fn success() -> Self {
        Self::empty(true)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            error: Some(message.into()),
            ..Self::empty(false)
        }
    }

    pub fn agents(agents: Vec<String>) -> Self {
        Self {
            agents: Some(agents),
            ..Self::empty(true)
        }
    }

    pub fn agent_statuses(rows: Vec<AgentStatusRow>) -> Self {
        Self {
            agent_statuses: Some(rows),
            ..Self::empty(true)
        }
    }

    pub fn approvals(approvals: Vec<Approval>) -> Self {
        Self {
            approvals: Some(approvals),
            ..Self::empty(true)
        }
    }

    pub fn urls(urls: HiveUrls) -> Self {
        Self {
            urls: Some(urls),
            ..Self::empty(true)
        }
    }

    pub fn logs(lines: Vec<String>) -> Self {
        Self {
            logs: Some(lines),
            ..Self::empty(true)
        }
    }

    pub fn questions(questions: Vec<QuestionRow>) -> Self {
        Self {
            questions: Some(questions),
            ..Self::empty(true)
        }
    }

    /// `show`: the approval, and its diff when it is a config deploy.
    pub fn approval_with_diff(approval: Approval, diff: Option<String>) -> Self {
        Self {
            approvals: Some(vec![approval]),
            diff,
            ..Self::empty(true)
        }
    }

    /// `stop`: done, naming what was left running.
    pub fn stopped(kept_running: Vec<KeptRunning>) -> Self {
        Self {
            kept_running: (!kept_running.is_empty()).then_some(kept_running),
            ..Self::empty(true)
        }
    }

    pub fn tasks(tasks: Vec<crate::Task>) -> Self {
        Self {
            tasks: Some(tasks),
            ..Self::empty(true)
        }
    }
}

/// One agent's status, as `agent_status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatusRow {
    pub name: String,
    pub running: bool,
    pub failed: bool,
    pub needs_update: bool,
    pub needs_login: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_sha: Option<String>,
    pub pending_reminders: u64,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    pub status_set_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The host it runs (or is pinned) on, under a runtime that schedules
    /// across hosts (`swarm`); absent on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The swarm finds that node down (its agents there stopped with
    /// it); absent while it is up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_down: bool,
    /// When its last checkpoint (its `/state` copied over the link) was
    /// taken; absent with none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    pub checkpoint_at: Option<i64>,
    /// That checkpoint's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_bytes: Option<u64>,
}

/// Where the hive is reached (the original's `HiveUrls`); each agent's own
/// page is the `url` of its `agent_status` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiveUrls {
    /// The host the dashboard is served on.
    pub domain: String,
    /// The dashboard's address.
    pub home: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
}

/// A question waiting for an answer, as `questions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuestionRow {
    pub id: i64,
    pub asker: String,
    /// The peer asked; absent: the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub question: String,
    /// Suggested answers; free text is always allowed too.
    #[serde(default)]
    pub options: Vec<String>,
    /// Whether several options may be picked (joined with ", ").
    #[serde(default)]
    pub multi: bool,
    #[serde(with = "crate::rfc3339")]
    pub asked_at: i64,
    /// When the question expires unanswered.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    pub deadline_at: Option<i64>,
}

/// A request waiting for (or resolved by) the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: i64,
    pub agent: String,
    #[serde(default)]
    pub kind: ApprovalKind,
    /// For `apply_commit`: the git sha to apply. Otherwise empty.
    pub commit_ref: String,
    /// For `apply_commit`: the commit core fetched into the applied repo,
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_sha: Option<String>,
    #[serde(with = "crate::rfc3339")]
    pub requested_at: i64,
    pub status: ApprovalStatus,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::rfc3339::option"
    )]
    pub resolved_at: Option<i64>,
    /// The operator's deny reason or the failure's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What the requester said the change is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What an approval, when granted, triggers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    /// Apply a manager-proposed config commit.
    #[default]
    ApplyCommit,
    /// Create and start a new agent (or revive a tombstone).
    Spawn,
    /// Seed an agent's proposed config repo before its spawn.
    InitConfig,
    /// Move an agent to another node (its `commit_ref` names the node):
    /// checkpoint, stop, re-pin, start there from the checkpoint.
    Move,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::ApplyCommit => "apply_commit",
            ApprovalKind::Spawn => "spawn",
            ApprovalKind::InitConfig => "init_config",
            ApprovalKind::Move => "move",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ApprovalKind::ApplyCommit,
            ApprovalKind::Spawn,
            ApprovalKind::InitConfig,
            ApprovalKind::Move,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    /// Approved, but its action failed; `note` carries the error.
    Failed,
    /// Withdrawn before the operator decided.
    Cancelled,
    /// An approved deploy that a later approved deploy of the same agent,
    /// queued behind it, replaced before its turn came; `note` names it.
    Superseded,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Failed => "failed",
            ApprovalStatus::Cancelled => "cancelled",
            ApprovalStatus::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Denied,
            Self::Failed,
            Self::Cancelled,
            Self::Superseded,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}
