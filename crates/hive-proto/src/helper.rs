//! Events core pushes into an agent's inbox as a message from `system`,
//! the JSON body tagged `event`.

use serde::{Deserialize, Serialize};

use crate::ApprovalStatus;

/// Out-of-band events from core, mostly to the manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HelperEvent {
    /// An approval was approved, denied, failed, cancelled or superseded; if approved,
    /// its action has already run.
    ApprovalResolved {
        id: i64,
        agent: String,
        commit_ref: String,
        status: ApprovalStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// For a deploy: the config commit the agent runs now (the approved
        /// one, or the previous one after a failure or a supersession).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        running_sha: Option<String>,
    },
    /// An agent was spawned; `ok=false` means the spawn failed.
    Spawned {
        agent: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An agent was rebuilt with its deployed config.
    Rebuilt {
        agent: String,
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An agent's container was stopped on purpose; state is unchanged.
    Killed { agent: String },
    /// An agent's container was torn down (state kept unless purged).
    Destroyed { agent: String },
    /// A container stopped with no lifecycle action in flight.
    ContainerCrash {
        agent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A peer agent asked this agent a question; reply with `answer`.
    QuestionAsked {
        id: i64,
        asker: String,
        question: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        options: Vec<String>,
        #[serde(default)]
        multi: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_at: Option<i64>,
    },
    /// A question this agent asked was answered, expired (`[expired]`) or
    /// cancelled (`[cancelled]`).
    QuestionAnswered {
        id: i64,
        question: String,
        answer: String,
        answerer: String,
    },
    /// An agent's engine has no valid credentials.
    NeedsLogin { agent: String },
    /// An agent's engine logged in.
    LoggedIn { agent: String },
    /// An agent runs a config older than its deployed one.
    NeedsUpdate { agent: String },
    /// The tasks an agent held went back to open: its container crashed or
    /// was destroyed (a claim is a lease on its life).
    TaskReleased {
        id: i64,
        title: String,
        agent: String,
        reason: String,
    },
    /// An agent's subscription quota is used up: it is parked (its
    /// messages wait) and resumes by itself at `until` (unix seconds).
    QuotaReached { agent: String, until: i64 },
    /// The operator answered "raise" to an agent over its budget: commit a
    /// larger `[budget]` in its `agent.toml` and request its deploy.
    BudgetRaiseRequested { agent: String, answer: String },
    /// A task was reserved for this agent: claim it when it is claimable.
    TaskAssigned { id: i64, title: String, by: String },
}
