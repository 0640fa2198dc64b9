//! The per-agent socket (`<run-dir>/agents/<name>/mcp.sock`, seen inside the
//! container as `/run/hive/mcp.sock`) and the manager socket
//! (`<run-dir>/manager/mcp.sock`).
//!
//! The caller's identity is the socket it came in on: no request carries a
//! `from`. The manager socket speaks the whole agent surface plus the
//! privileged [`ManagerOnlyRequest`] verbs; both answer [`AgentResponse`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod hot;

use crate::task::{Task, TaskEvent, TaskFilter};
use crate::{AgentName, AgentStatusRow, ApprovalKind, Recipient};

/// Requests on a per-agent socket (and the agent half of the manager
/// socket), tagged `cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AgentRequest {
    /// Send a message to an agent, `operator`, or `*` (every other agent).
    Send {
        to: Recipient,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<i64>,
    },
    /// Send many messages (to one or many recipients) in one transaction:
    /// all are stored or none (a bad recipient refuses the whole batch).
    /// Answers `sent` with one id per stored row, in order.
    SendBatch { messages: Vec<OutgoingMessage> },
    /// Pop up to `max` (default 1, cap 32) messages, long-polling up to
    /// `wait_seconds` (default 30, cap 180) for the first one. Popped rows
    /// stay in flight, under the lease the answer names, until `ack_turn`.
    ///
    /// With `lease_seconds` (exact leases, our harness): the rows belong to
    /// this connection until the client names the lease (`renew_lease` or
    /// `ack_turn`); if the connection closes first they go back unflagged
    /// (the client never saw them). A named lease lasts `lease_seconds`
    /// (1–3600) from its last renewal; when it runs out core puts its rows
    /// back flagged `redelivered`.
    Recv {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease_seconds: Option<u64>,
    },
    /// The client holds the rows of `lease` (it read them): keeps them in
    /// flight for another lease period.
    RenewLease { lease: i64 },
    /// How many messages wait in this agent's inbox. Non-mutating.
    Status,
    /// The last `limit` messages addressed to this agent, newest first.
    /// Non-mutating.
    Recent { limit: u64 },
    /// The turn succeeded. With `ids` and/or `lease`: exactly those rows
    /// (this agent's, in flight) are done, and nothing else. With neither
    /// (the original's clients): every message popped since the last ack.
    AckTurn {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ids: Option<Vec<i64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<i64>,
    },
    /// Harness boot: put every popped-but-unacked message back in the inbox,
    /// flagged `redelivered`.
    RequeueInflight,
    /// Ask the operator (default) or a peer agent (`to`) a question. Answers
    /// `question_queued`; the answer arrives later as a
    /// `question_answered` helper event.
    Ask {
        question: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        options: Vec<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        multi: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Recipient>,
    },
    /// Answer a question addressed to this agent.
    Answer { id: i64, answer: String },
    /// Wake this agent (or `to`) later with `message`, at a unix time `at`
    /// or `in_seconds` from now. Costs no tokens while it waits.
    Remind {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_seconds: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Recipient>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_path: Option<String>,
    },
    /// Everything pending on this agent (hive-wide on the manager socket).
    GetLooseEnds,
    /// Withdraw one of this agent's own loose ends.
    CancelLooseEnd { kind: LooseEndKind, id: i64 },
    /// Who am I, by the socket I came in on.
    Whoami,
    /// Set the one-line status shown on the dashboard (empty clears it).
    SetStatus { text: String },
    /// The harness reports its turn state and model whenever either
    /// changes; core shows them on the status row and tells the manager
    /// when the agent needs a login or has logged in.
    HarnessState {
        state: crate::live::TurnState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// What the harness's credentials probe last found; absent until it
        /// has run (a state reported before it, such as the `idle` of a
        /// fresh boot, says nothing about the login).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        logged_in: Option<bool>,
        /// The state's detail (the tool running, a rate limit's retry).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// When the state ends by itself, unix seconds: the reset of a
        /// `quota` state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<i64>,
    },
    /// Put a task on the shared board (open; claimable once every task in
    /// `depends_on` is done). Answers `task`.
    TaskCreate {
        title: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        body: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        depends_on: Vec<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<String>,
    },
    /// The board in order: `mine`, `claimable`, `active` (default) or `all`.
    /// Answers `tasks`.
    TaskList {
        #[serde(default)]
        filter: TaskFilter,
    },
    /// One task with its history. Answers `task_detail`.
    TaskShow { id: i64 },
    /// Take an open task whose dependencies are done (or resume one this
    /// agent blocked). Answers `task`.
    TaskClaim { id: i64 },
    /// Change a task's fields (its holder, or its creator while it is
    /// open). `depends_on` and `links` replace the lists. Answers `task`.
    TaskUpdate {
        id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        depends_on: Option<Vec<i64>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        links: Option<Vec<String>>,
    },
    /// Mark a task this agent holds done. Answers `task`.
    TaskComplete {
        id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Stop on a task this agent holds, saying why. Answers `task`.
    TaskBlock { id: i64, reason: String },
    /// Cancel a task: the manager any, an agent one it created that nobody
    /// holds. Answers `task`.
    TaskCancel {
        id: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// The manager socket's privileged verbs, tagged `cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ManagerOnlyRequest {
    /// Queue a spawn approval for a new agent (or a tombstone's revival).
    RequestSpawn {
        name: AgentName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Stop an agent (graceful). The manager cannot stop itself.
    Kill { name: AgentName },
    /// Start a stopped agent.
    Start { name: AgentName },
    /// Stop then start an agent.
    Restart { name: AgentName },
    /// Queue an approval to deploy `commit_ref` (7–40 hex) of the agent's
    /// proposed config repo.
    RequestApplyCommit {
        agent: AgentName,
        commit_ref: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Queue an approval to seed an agent's proposed config repo before it
    /// is spawned (two-step spawn).
    RequestInitConfig {
        name: AgentName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// Rebuild an agent with its deployed config.
    Update { name: AgentName },
    /// Every known agent with its status.
    List,
    /// The last `lines` (default 100) lines an agent's container printed.
    GetLogs {
        name: AgentName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
    },
    /// Reserve a task for an agent (it goes back to open for that agent to
    /// claim; the agent is told). Answers `task`.
    TaskAssign { id: i64, agent: AgentName },
    /// Move a task on the board: lower `rank` first. Answers `task`.
    TaskReorder { id: i64, rank: i64 },
}

/// A request on the manager socket: the agent surface or a privileged verb.
///
/// On the wire both halves are flat objects tagged `cmd`; decoding routes
/// on the tag, so an unknown verb is reported as such.
#[derive(Debug, Clone, PartialEq)]
pub enum ManagerRequest {
    Agent(AgentRequest),
    Manager(ManagerOnlyRequest),
}

impl AgentRequest {
    /// Decodes a `send`, `send_batch`, `recv` or `ack_turn` line whose
    /// `cmd` comes first in one pass, without the intermediate tree serde
    /// builds for an internally tagged enum; `None` for any other line
    /// (decode it the general way, whose errors name the problem).
    pub fn decode_hot(line: &str) -> Option<AgentRequest> {
        hot::decode(line)
    }
}

impl ManagerRequest {
    /// The verbs only the manager socket accepts.
    pub const MANAGER_ONLY: &'static [&'static str] = &[
        "request_spawn",
        "kill",
        "start",
        "restart",
        "request_apply_commit",
        "request_init_config",
        "update",
        "list",
        "get_logs",
        "task_assign",
        "task_reorder",
    ];
}

impl Serialize for ManagerRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ManagerRequest::Agent(r) => r.serialize(serializer),
            ManagerRequest::Manager(r) => r.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ManagerRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let manager_only = value
            .get("cmd")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|cmd| Self::MANAGER_ONLY.contains(&cmd));
        if manager_only {
            ManagerOnlyRequest::deserialize(value)
                .map(Self::Manager)
                .map_err(D::Error::custom)
        } else {
            AgentRequest::deserialize(value)
                .map(Self::Agent)
                .map_err(D::Error::custom)
        }
    }
}

/// Responses on agent and manager sockets, tagged `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentResponse {
    /// The request succeeded and has nothing to return.
    Ok,
    /// The request was refused or failed; `message` says why.
    Err { message: String },
    /// `recv` result, oldest first; empty when the wait ran out. `lease`
    /// names the rows handed out (absent when there are none).
    Messages {
        messages: Vec<DeliveredMessage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<i64>,
    },
    /// `send_batch` result: the stored rows' ids, in order.
    Sent { ids: Vec<i64> },
    /// `status` result.
    Status { unread: u64 },
    /// `recent` result, newest first.
    Recent { rows: Vec<InboxRow> },
    /// `ask` result: the queued question's id.
    QuestionQueued { id: i64 },
    /// `remind` result.
    ReminderQueued { id: i64, due_at: i64 },
    /// `get_loose_ends` result.
    LooseEnds { loose_ends: Vec<LooseEnd> },
    /// `whoami` result. `role` is `agent` or `manager`.
    Whoami { name: String, role: String },
    /// A manager request queued an approval.
    ApprovalQueued { id: i64 },
    /// Manager `list` result.
    Agents { agents: Vec<AgentStatusRow> },
    /// Manager `get_logs` result, oldest line first.
    Logs { lines: Vec<String> },
    /// A task verb's result: the task as it is now.
    Task { task: Task },
    /// `task_list` result, in board order.
    Tasks { tasks: Vec<Task> },
    /// `task_show` result: the task and its history, oldest first.
    TaskDetail { task: Task, history: Vec<TaskEvent> },
}

/// The manager socket answers the same shapes as an agent socket.
pub type ManagerResponse = AgentResponse;

impl AgentResponse {
    pub fn err(message: impl Into<String>) -> Self {
        AgentResponse::Err {
            message: message.into(),
        }
    }
}

/// One message of a `send_batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingMessage {
    /// An agent, `operator`, or `*`.
    pub to: Recipient,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<i64>,
}

/// One answer line of an agent or manager socket: the response, plus the
/// caller's unread count (`"unread":N`, pending rows of its inbox) on every
/// answer, so no client needs a `status` round trip to show it. `status`
/// carries it as its own field; on the wire it appears once.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentAnswer {
    pub response: AgentResponse,
    pub unread: Option<u64>,
}

impl AgentAnswer {
    /// The answer as one JSON line (no newline). A `messages` answer,
    /// every turn's, is written directly ([`hot::messages_line`]:
    /// the same bytes, without serde's byte-by-byte string escaping).
    pub fn to_line(&self) -> serde_json::Result<String> {
        if let AgentResponse::Messages { messages, lease } = &self.response {
            return hot::messages_line(messages, *lease, self.unread);
        }
        self.to_line_general()
    }

    /// [`AgentAnswer::to_line`] through serde for every response.
    pub(crate) fn to_line_general(&self) -> serde_json::Result<String> {
        let mut line = serde_json::to_string(&self.response)?;
        if let Some(unread) = self.unread
            && !matches!(self.response, AgentResponse::Status { .. })
            && line.ends_with('}')
        {
            // A serialized response is always a JSON object with its tag:
            // one more member before the closing brace.
            line.pop();
            line.push_str(&format!(",\"unread\":{unread}}}"));
        }
        Ok(line)
    }

    /// Reads an answer line (an answer without `unread` is an older core's).
    /// `ok`, `sent` and `messages` with `kind` first, as core writes them,
    /// decode in one pass; any other line through a JSON value.
    pub fn from_line(line: &str) -> serde_json::Result<Self> {
        if let Some(answer) = hot::decode_answer(line) {
            return Ok(answer);
        }
        Self::from_line_general(line)
    }

    /// [`AgentAnswer::from_line`] through a JSON value for every answer.
    pub(crate) fn from_line_general(line: &str) -> serde_json::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let unread = value.get("unread").and_then(serde_json::Value::as_u64);
        let response = AgentResponse::deserialize(value)?;
        Ok(Self { response, unread })
    }
}

/// One message popped by `recv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredMessage {
    /// Broker row id; reply with `in_reply_to` set to it.
    pub id: i64,
    pub from: String,
    pub to: String,
    pub body: String,
    /// When it was sent.
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<i64>,
    /// Popped before, by a harness that died before acking: its effects may
    /// already have happened.
    #[serde(default)]
    pub redelivered: bool,
}

/// One row of an inbox listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxRow {
    pub id: i64,
    pub from: String,
    pub body: String,
    pub at: i64,
}

/// Something pending on an agent, tagged `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LooseEnd {
    /// An approval the operator has not decided.
    Approval {
        id: i64,
        agent: String,
        approval_kind: ApprovalKind,
        commit_ref: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        requested_at: i64,
        age_seconds: i64,
    },
    /// A question not yet answered. `target` absent: asked of the operator.
    Question {
        id: i64,
        asker: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        question: String,
        asked_at: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_at: Option<i64>,
        age_seconds: i64,
    },
    /// A reminder not yet delivered (or parked after repeated failures).
    Reminder {
        id: i64,
        owner: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        message: String,
        due_at: i64,
        age_seconds: i64,
        attempts: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        parked: bool,
    },
}

/// Which kind of loose end `cancel_loose_end` withdraws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LooseEndKind {
    Approval,
    Question,
    Reminder,
}
