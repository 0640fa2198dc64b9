//! The host admin socket (`<run-dir>/host.sock`): the operator's verbs.
//!
//! One JSON line in, one JSON line out per connection (except
//! `subscribe_agent_status`, which keeps streaming single-row responses).
//! Every response begins `{"version":1,"ok":…` followed by `error` or one
//! payload key; absent keys are omitted.

use serde::{Deserialize, Serialize};

use crate::{AgentName, HOST_PROTOCOL_VERSION};

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
    /// Per-agent web UI addresses.
    Urls,
    /// Send a message from the operator to an agent (or `*`).
    Send { to: String, body: String },
    /// The last `lines` lines (default 100) its container printed, in
    /// `logs`; with `follow`, further responses carry new lines as they
    /// come, until the client leaves.
    /// Queue an approval that redeploys the config of `deployed/<id>`.
    /// Answers with the queued approval in `approvals`.
    Rollback { name: AgentName, id: i64 },
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
    pub urls: Option<Vec<AgentUrl>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<crate::Task>>,
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

    pub fn urls(urls: Vec<AgentUrl>) -> Self {
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_set_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// One agent's web UI address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUrl {
    pub name: String,
    pub url: String,
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
    pub requested_at: i64,
    pub status: ApprovalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::ApplyCommit => "apply_commit",
            ApprovalKind::Spawn => "spawn",
            ApprovalKind::InitConfig => "init_config",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ApprovalKind::ApplyCommit,
            ApprovalKind::Spawn,
            ApprovalKind::InitConfig,
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
