//! `hive agent mcp`: the hive tools as an MCP server over stdio (rmcp),
//! launched by the engine.
//!
//! Every tool call becomes one JSON line to the agent's own socket
//! (identity is the socket, so no call names its sender); the answer is
//! rendered as text and ends with an inbox status line. A refusal comes back
//! as a tool error (`isError`), so the model sees the daemon's reason.
//! stdout belongs to the protocol; logs go to stderr.

use std::path::PathBuf;
use std::time::Duration;

use hive_proto::{
    AgentAnswer, AgentName, AgentRequest, AgentResponse, AgentStatusRow, LooseEnd, LooseEndKind,
    ManagerOnlyRequest, Recipient, Task, TaskFilter, TaskStatus,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{ErrorData, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

use crate::client::SocketClient;
use crate::{Role, files, wake};

/// The server's name in the engine's MCP config: tools reach the model as
/// `mcp__hive__<tool>`.
pub const SERVER_NAME: &str = "hive";

/// Slack on top of a `recv` wait before a socket call gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The tool server: a socket client plus the role's tools.
#[derive(Clone)]
pub struct HiveTools {
    client: SocketClient,
    state_dir: Option<PathBuf>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for HiveTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiveTools")
            .field("socket", &self.client.path())
            .finish_non_exhaustive()
    }
}

/// The tool names a role has (without the `mcp__hive__` prefix).
pub fn tool_names(role: Role) -> Vec<String> {
    HiveTools::router(role)
        .list_all()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

/// Serves the tools on stdin/stdout until the client goes away.
pub async fn serve_stdio(
    role: Role,
    socket: PathBuf,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let server = HiveTools::new(role, SocketClient::new(socket), state_dir);
    let running = server.serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}

impl HiveTools {
    pub fn new(role: Role, client: SocketClient, state_dir: Option<PathBuf>) -> Self {
        Self {
            client,
            state_dir,
            tool_router: Self::router(role),
        }
    }

    fn router(role: Role) -> ToolRouter<Self> {
        match role {
            Role::Agent => Self::agent_router() + Self::task_router(),
            Role::Manager => {
                Self::agent_router()
                    + Self::task_router()
                    + Self::manager_router()
                    + Self::manager_task_router()
            }
        }
    }

    /// Relays one request and renders the answer with `render`.
    async fn relay<T: Serialize + Sync>(
        &self,
        request: &T,
        wait: Duration,
        render: impl FnOnce(AgentResponse) -> String,
    ) -> CallToolResult {
        match self.client.raw_answer(request, wait + CALL_TIMEOUT).await {
            Ok(AgentAnswer {
                response: AgentResponse::Err { message },
                unread,
            }) => self.finish(Err(message), unread).await,
            Ok(AgentAnswer { response, unread }) => self.finish(Ok(render(response)), unread).await,
            Err(e) => self.finish(Err(e.to_string()), None).await,
        }
    }

    /// Appends the inbox status line; an `Err` becomes a tool error. The
    /// count rides on core's answer; only a call that never reached core
    /// (refused here) asks for it.
    async fn finish(&self, text: Result<String, String>, unread: Option<u64>) -> CallToolResult {
        let unread = match unread {
            Some(n) => Some(n),
            None => match self.client.request(&AgentRequest::Status).await {
                Ok(AgentResponse::Status { unread }) => Some(unread),
                _ => None,
            },
        };
        let status = match unread {
            Some(unread) => format!("[inbox: {unread} unread]"),
            None => "[inbox: unknown]".to_owned(),
        };
        match text {
            Ok(text) => {
                CallToolResult::success(vec![ContentBlock::text(format!("{text}\n\n{status}"))])
            }
            Err(message) => CallToolResult::error(vec![ContentBlock::text(format!(
                "refused: {message}\n\n{status}"
            ))]),
        }
    }

    /// A lifecycle verb on one agent: the name checked, the request relayed,
    /// `<past> <name>` on success.
    async fn lifecycle(
        &self,
        raw: &str,
        request: impl FnOnce(AgentName) -> ManagerOnlyRequest,
        past: &str,
    ) -> CallToolResult {
        match name(raw) {
            Ok(name) => {
                let done = format!("{past} {name}");
                self.manager(request(name), &done).await
            }
            Err(e) => self.finish(Err(e), None).await,
        }
    }

    async fn manager(&self, request: ManagerOnlyRequest, done: &str) -> CallToolResult {
        let done = done.to_owned();
        self.relay(&request, Duration::ZERO, move |answer| match answer {
            AgentResponse::ApprovalQueued { id } => format!(
                "approval #{id} queued for the operator; the verdict will arrive as a message \
                 from system"
            ),
            AgentResponse::Agents { agents } => render_agents(&agents),
            AgentResponse::Ok => done,
            other => render_other(&other),
        })
        .await
    }
}

/// Checks a name argument. The error already names the argument and why
/// (`invalid agent name "../x": …`), so it is not wrapped again.
fn name(raw: &str) -> Result<AgentName, String> {
    AgentName::parse(raw).map_err(|e| e.to_string())
}

/// Checks a `to` argument (an agent name, `operator` or `*`), the same
/// way.
fn recipient(raw: &str) -> Result<Recipient, String> {
    Recipient::parse(raw).map_err(|e| e.to_string())
}

/// Checks an optional `to` argument.
fn maybe_recipient(raw: Option<&str>) -> Result<Option<Recipient>, String> {
    raw.map(recipient).transpose()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SendArgs {
    /// Recipient: an agent name, `manager`, `operator`, or `*` (every other agent).
    pub to: String,
    /// The message (markdown is fine).
    pub body: String,
    /// The id of the message this answers.
    #[serde(default)]
    pub in_reply_to: Option<i64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RecvArgs {
    /// Seconds to wait for a first message (default 0, at most 180).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
    /// Most messages to pop (default 1, at most 32).
    #[serde(default)]
    pub max: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AskArgs {
    /// The question.
    pub question: String,
    /// Answers to choose from (free text if empty).
    #[serde(default)]
    pub options: Vec<String>,
    /// Several options may be picked.
    #[serde(default)]
    pub multi: bool,
    /// Expire unanswered after this many seconds.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Ask a peer agent instead of the operator.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AnswerArgs {
    /// The question's id (from the question_asked event).
    pub id: i64,
    pub answer: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RemindArgs {
    /// What to tell the recipient when the reminder fires.
    pub message: String,
    /// Unix time to fire at (give this or `in_seconds`).
    #[serde(default)]
    pub at: Option<i64>,
    /// Seconds from now to fire in (give this or `at`).
    #[serde(default)]
    pub in_seconds: Option<u64>,
    /// Remind another agent instead of yourself.
    #[serde(default)]
    pub to: Option<String>,
    /// A file under /state or /shared to point the recipient at.
    #[serde(default)]
    pub file_path: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CancelLooseEndArgs {
    /// `question`, `reminder` or (manager) `approval`.
    pub kind: KindArg,
    pub id: i64,
}

/// [`LooseEndKind`] with a schema.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindArg {
    Approval,
    Question,
    Reminder,
}

impl From<KindArg> for LooseEndKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Approval => LooseEndKind::Approval,
            KindArg::Question => LooseEndKind::Question,
            KindArg::Reminder => LooseEndKind::Reminder,
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SetStatusArgs {
    /// One line for the dashboard (empty clears it).
    pub text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NameArgs {
    /// The agent's name.
    pub name: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NameDescriptionArgs {
    /// The agent's name.
    pub name: String,
    /// What it is for, shown to the operator with the approval.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ApplyCommitArgs {
    /// The agent whose config to deploy.
    pub agent: String,
    /// A commit sha (7-40 hex) in the agent's proposed config repo; never a branch name.
    pub commit_ref: String,
    /// What the change does, shown to the operator with the diff.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct GetLogsArgs {
    /// The agent whose output to read.
    pub agent: String,
    /// How many trailing lines (default 100).
    #[serde(default)]
    pub lines: Option<u32>,
}

#[tool_router(router = agent_router)]
impl HiveTools {
    #[tool(
        description = "Send a message to an agent, `manager`, `operator` (the human) or `*` (every other agent)."
    )]
    async fn send(&self, Parameters(a): Parameters<SendArgs>) -> Result<CallToolResult, ErrorData> {
        let to = match recipient(&a.to) {
            Ok(to) => to,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = AgentRequest::Send {
            to: to.clone(),
            body: a.body,
            in_reply_to: a.in_reply_to,
        };
        Ok(self
            .relay(&request, Duration::ZERO, move |_| format!("sent to {to}"))
            .await)
    }

    #[tool(
        description = "Pop messages from your inbox without ending the turn. Popped messages count as handled when the turn succeeds."
    )]
    async fn recv(&self, Parameters(a): Parameters<RecvArgs>) -> Result<CallToolResult, ErrorData> {
        let wait = a
            .wait_seconds
            .unwrap_or(0)
            .min(hive_proto::MAX_WAIT_SECONDS);
        // An exact lease, named at once: the rows are the turn's (the
        // harness's ack covers them) only once this relay has read them.
        let request = AgentRequest::Recv {
            wait_seconds: Some(wait),
            max: a.max,
            lease_seconds: Some(hive_proto::MAX_LEASE_SECONDS),
        };
        let answer = self
            .client
            .raw_answer(&request, Duration::from_secs(wait) + CALL_TIMEOUT)
            .await;
        Ok(match answer {
            Ok(AgentAnswer {
                response: AgentResponse::Messages { messages, lease },
                unread,
            }) => {
                let held = match lease {
                    Some(lease) => self
                        .client
                        .call(&AgentRequest::RenewLease { lease })
                        .await
                        .map(|_| ()),
                    None => Ok(()),
                };
                match held {
                    Ok(()) => self.finish(Ok(wake::render_recv(&messages)), unread).await,
                    Err(e) => {
                        self.finish(
                            Err(format!(
                                "the popped messages could not be held and went back to your inbox: {e}"
                            )),
                            None,
                        )
                        .await
                    }
                }
            }
            Ok(AgentAnswer {
                response: AgentResponse::Err { message },
                unread,
            }) => self.finish(Err(message), unread).await,
            Ok(AgentAnswer { response, unread }) => {
                self.finish(Ok(render_other(&response)), unread).await
            }
            Err(e) => self.finish(Err(e.to_string()), None).await,
        })
    }

    #[tool(
        description = "Ask the operator (or `to` a peer agent) a question. Returns at once; the answer arrives later as a message from system."
    )]
    async fn ask(&self, Parameters(a): Parameters<AskArgs>) -> Result<CallToolResult, ErrorData> {
        let to = match maybe_recipient(a.to.as_deref()) {
            Ok(to) => to,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = AgentRequest::Ask {
            question: a.question,
            options: a.options,
            multi: a.multi,
            ttl_seconds: a.ttl_seconds,
            to,
        };
        Ok(self
            .relay(&request, Duration::ZERO, |answer| match answer {
                AgentResponse::QuestionQueued { id } => format!(
                    "question #{id} queued; the answer will arrive as a message from system"
                ),
                other => render_other(&other),
            })
            .await)
    }

    #[tool(description = "Answer a question a peer agent asked you.")]
    async fn answer(
        &self,
        Parameters(a): Parameters<AnswerArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let id = a.id;
        let request = AgentRequest::Answer {
            id: a.id,
            answer: a.answer,
        };
        Ok(self
            .relay(&request, Duration::ZERO, move |_| {
                format!("answered question #{id}")
            })
            .await)
    }

    #[tool(
        description = "Wake yourself (or `to` another agent) later with a message, at a unix time `at` or `in_seconds` from now. Costs nothing while it waits."
    )]
    async fn remind(
        &self,
        Parameters(a): Parameters<RemindArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let to = match maybe_recipient(a.to.as_deref()) {
            Ok(to) => to,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = AgentRequest::Remind {
            message: a.message,
            at: a.at,
            in_seconds: a.in_seconds,
            to,
            file_path: a.file_path,
        };
        Ok(self
            .relay(&request, Duration::ZERO, |answer| match answer {
                AgentResponse::ReminderQueued { id, due_at } => {
                    let delta = due_at - crate::bus::now_unix();
                    format!("reminder #{id} set for unix time {due_at} (in {delta}s)")
                }
                other => render_other(&other),
            })
            .await)
    }

    #[tool(
        description = "List what is pending on you: approvals, unanswered questions, reminders (hive-wide for the manager)."
    )]
    async fn get_loose_ends(&self) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .relay(
                &AgentRequest::GetLooseEnds,
                Duration::ZERO,
                |answer| match answer {
                    AgentResponse::LooseEnds { loose_ends } => render_loose_ends(&loose_ends),
                    other => render_other(&other),
                },
            )
            .await)
    }

    #[tool(description = "Withdraw one of your loose ends: a question or a reminder.")]
    async fn cancel_loose_end(
        &self,
        Parameters(a): Parameters<CancelLooseEndArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let (kind, id) = (LooseEndKind::from(a.kind), a.id);
        let request = AgentRequest::CancelLooseEnd { kind, id };
        Ok(self
            .relay(&request, Duration::ZERO, move |_| {
                format!("cancelled {} #{id}", kind_name(kind))
            })
            .await)
    }

    #[tool(description = "Who you are in this hive: your name and role.")]
    async fn whoami(&self) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .relay(
                &AgentRequest::Whoami,
                Duration::ZERO,
                |answer| match answer {
                    AgentResponse::Whoami { name, role } => format!("you are {name} ({role})"),
                    other => render_other(&other),
                },
            )
            .await)
    }

    #[tool(description = "Set the one-line status the dashboard shows for you (empty clears it).")]
    async fn set_status(
        &self,
        Parameters(a): Parameters<SetStatusArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::SetStatus { text: a.text };
        Ok(self
            .relay(&request, Duration::ZERO, |_| "status set".to_owned())
            .await)
    }

    #[tool(
        description = "Ask for another turn right after this one ends, to continue work without waiting for a message."
    )]
    async fn request_next_turn(&self) -> Result<CallToolResult, ErrorData> {
        let text = match &self.state_dir {
            Some(dir) => std::fs::write(
                dir.join(files::NEXT_TURN_MARKER),
                b"requested by the agent\n",
            )
            .map(|()| "another turn starts when this one ends".to_owned())
            .map_err(|e| format!("cannot request another turn: {e}")),
            None => Err("no state dir: cannot request another turn".to_owned()),
        };
        Ok(self.finish(text, None).await)
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskCreateArgs {
    /// One line saying what is to be done.
    pub title: String,
    /// The detail (markdown); put long material in a file under /shared and link it.
    #[serde(default)]
    pub body: String,
    /// Ids of tasks that must be done before this one can be claimed.
    #[serde(default)]
    pub depends_on: Vec<i64>,
    /// `msg:<id>` for a message, or a path under /shared or /state.
    #[serde(default)]
    pub links: Vec<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskListArgs {
    /// `mine`, `claimable`, `active` (default: everything not done or cancelled) or `all`.
    #[serde(default)]
    pub filter: Option<FilterArg>,
}

/// [`TaskFilter`] with a schema.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilterArg {
    Mine,
    Claimable,
    Active,
    All,
}

impl From<FilterArg> for TaskFilter {
    fn from(f: FilterArg) -> Self {
        match f {
            FilterArg::Mine => TaskFilter::Mine,
            FilterArg::Claimable => TaskFilter::Claimable,
            FilterArg::Active => TaskFilter::Active,
            FilterArg::All => TaskFilter::All,
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskIdArgs {
    /// The task's id.
    pub id: i64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskUpdateArgs {
    pub id: i64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// Replaces the dependency list.
    #[serde(default)]
    pub depends_on: Option<Vec<i64>>,
    /// Replaces the link list.
    #[serde(default)]
    pub links: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskNoteArgs {
    pub id: i64,
    /// What was done, or why.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskBlockArgs {
    pub id: i64,
    /// What it waits on.
    pub reason: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskAssignArgs {
    pub id: i64,
    /// The agent to reserve it for.
    pub agent: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TaskReorderArgs {
    pub id: i64,
    /// Board position: lower comes first.
    pub rank: i64,
}

#[tool_router(router = task_router)]
impl HiveTools {
    /// Relays a task verb and renders the task it answers.
    async fn task_verb(&self, request: &(impl Serialize + Sync), done: &str) -> CallToolResult {
        let done = done.to_owned();
        self.relay(request, Duration::ZERO, move |answer| match answer {
            AgentResponse::Task { task } => format!("{done}: {}", render_task(&task)),
            other => render_other(&other),
        })
        .await
    }

    #[tool(
        description = "Put a task on the hive's shared board. It is claimable once every task in `depends_on` is done."
    )]
    async fn task_create(
        &self,
        Parameters(a): Parameters<TaskCreateArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskCreate {
            title: a.title,
            body: a.body,
            depends_on: a.depends_on,
            links: a.links,
        };
        Ok(self.task_verb(&request, "created").await)
    }

    #[tool(
        description = "The shared task board in order: `mine`, `claimable` (what you can claim now), `active` (default) or `all`."
    )]
    async fn task_list(
        &self,
        Parameters(a): Parameters<TaskListArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskList {
            filter: a.filter.map(TaskFilter::from).unwrap_or_default(),
        };
        Ok(self
            .relay(&request, Duration::ZERO, |answer| match answer {
                AgentResponse::Tasks { tasks } if tasks.is_empty() => "(no tasks)".to_owned(),
                AgentResponse::Tasks { tasks } => {
                    tasks.iter().map(render_task).collect::<Vec<_>>().join("\n")
                }
                other => render_other(&other),
            })
            .await)
    }

    #[tool(description = "One task with its body, links and history.")]
    async fn task_show(
        &self,
        Parameters(a): Parameters<TaskIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskShow { id: a.id };
        Ok(self
            .relay(&request, Duration::ZERO, |answer| match answer {
                AgentResponse::TaskDetail { task, history } => {
                    let mut s = render_task(&task);
                    if !task.body.is_empty() {
                        s.push_str(&format!("\n\n{}", task.body));
                    }
                    if !task.links.is_empty() {
                        s.push_str(&format!("\n\nlinks: {}", task.links.join(", ")));
                    }
                    s.push_str("\n\nhistory:");
                    for e in history {
                        s.push_str(&format!("\n- {} {} {}", e.at, e.actor, e.action));
                        if let Some(note) = e.note {
                            s.push_str(&format!(": {note}"));
                        }
                    }
                    s
                }
                other => render_other(&other),
            })
            .await)
    }

    #[tool(
        description = "Claim a task (it must be open with every dependency done, and not reserved for another agent). Claiming a task you blocked resumes it. Your claim lasts while your container lives."
    )]
    async fn task_claim(
        &self,
        Parameters(a): Parameters<TaskIdArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskClaim { id: a.id };
        Ok(self.task_verb(&request, "claimed").await)
    }

    #[tool(
        description = "Change a task you hold (or created and nobody holds): title, body, dependencies, links."
    )]
    async fn task_update(
        &self,
        Parameters(a): Parameters<TaskUpdateArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskUpdate {
            id: a.id,
            title: a.title,
            body: a.body,
            depends_on: a.depends_on,
            links: a.links,
        };
        Ok(self.task_verb(&request, "updated").await)
    }

    #[tool(description = "Mark a task you hold done.")]
    async fn task_complete(
        &self,
        Parameters(a): Parameters<TaskNoteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskComplete {
            id: a.id,
            note: a.note,
        };
        Ok(self.task_verb(&request, "completed").await)
    }

    #[tool(
        description = "Stop on a task you hold, saying what it waits on; claim it again to resume."
    )]
    async fn task_block(
        &self,
        Parameters(a): Parameters<TaskBlockArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskBlock {
            id: a.id,
            reason: a.reason,
        };
        Ok(self.task_verb(&request, "blocked").await)
    }

    #[tool(
        description = "Cancel a task: one you created that nobody holds (the manager: any unfinished task)."
    )]
    async fn task_cancel(
        &self,
        Parameters(a): Parameters<TaskNoteArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = AgentRequest::TaskCancel {
            id: a.id,
            reason: a.note,
        };
        Ok(self.task_verb(&request, "cancelled").await)
    }
}

#[tool_router(router = manager_task_router)]
impl HiveTools {
    #[tool(
        description = "Reserve a task for an agent: only it may claim the task, and it is told."
    )]
    async fn task_assign(
        &self,
        Parameters(a): Parameters<TaskAssignArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let agent = match name(&a.agent) {
            Ok(agent) => agent,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = ManagerOnlyRequest::TaskAssign { id: a.id, agent };
        Ok(self.task_verb(&request, "assigned").await)
    }

    #[tool(description = "Move a task on the board: lower `rank` comes first.")]
    async fn task_reorder(
        &self,
        Parameters(a): Parameters<TaskReorderArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = ManagerOnlyRequest::TaskReorder {
            id: a.id,
            rank: a.rank,
        };
        Ok(self.task_verb(&request, "moved").await)
    }
}

/// One task on one line: id, status, holder, title, dependencies.
fn render_task(t: &Task) -> String {
    let mut s = format!("#{} [{}", t.id, t.status.as_str());
    if let Some(who) = &t.assignee {
        let word = if t.status == TaskStatus::Open {
            "for"
        } else {
            "by"
        };
        s.push_str(&format!(" {word} {who}"));
    }
    if t.claimable {
        s.push_str(", claimable");
    }
    s.push_str(&format!("] {}", t.title));
    if !t.depends_on.is_empty() {
        let deps: Vec<String> = t.depends_on.iter().map(|d| format!("#{d}")).collect();
        s.push_str(&format!(" (after {})", deps.join(", ")));
    }
    if let Some(reason) = &t.reason {
        s.push_str(&format!(" — {reason}"));
    }
    s
}

#[tool_router(router = manager_router)]
impl HiveTools {
    #[tool(
        description = "Ask the operator to approve a new agent `name` (or the revival of a destroyed one)."
    )]
    async fn request_spawn(
        &self,
        Parameters(a): Parameters<NameDescriptionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let name = match name(&a.name) {
            Ok(name) => name,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = ManagerOnlyRequest::RequestSpawn {
            name,
            description: a.description,
        };
        Ok(self.manager(request, "requested").await)
    }

    #[tool(description = "Stop an agent's container (graceful); its state is kept.")]
    async fn kill(&self, Parameters(a): Parameters<NameArgs>) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .lifecycle(&a.name, |name| ManagerOnlyRequest::Kill { name }, "stopped")
            .await)
    }

    #[tool(description = "Start a stopped agent.")]
    async fn start(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .lifecycle(
                &a.name,
                |name| ManagerOnlyRequest::Start { name },
                "started",
            )
            .await)
    }

    #[tool(description = "Stop, then start an agent.")]
    async fn restart(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .lifecycle(
                &a.name,
                |name| ManagerOnlyRequest::Restart { name },
                "restarted",
            )
            .await)
    }

    #[tool(description = "Rebuild an agent with its deployed config.")]
    async fn update(
        &self,
        Parameters(a): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(self
            .lifecycle(
                &a.name,
                |name| ManagerOnlyRequest::Update { name },
                "rebuilt",
            )
            .await)
    }

    #[tool(
        description = "Ask the operator to deploy `commit_ref` (a 7-40 hex sha you committed in the agent's proposed config repo)."
    )]
    async fn request_apply_commit(
        &self,
        Parameters(a): Parameters<ApplyCommitArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let agent = match name(&a.agent) {
            Ok(name) => name,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = ManagerOnlyRequest::RequestApplyCommit {
            agent,
            commit_ref: a.commit_ref,
            description: a.description,
        };
        Ok(self.manager(request, "requested").await)
    }

    #[tool(
        description = "Ask the operator to seed agent `name`'s proposed config repo before spawning it."
    )]
    async fn request_init_config(
        &self,
        Parameters(a): Parameters<NameDescriptionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let name = match name(&a.name) {
            Ok(name) => name,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = ManagerOnlyRequest::RequestInitConfig {
            name,
            description: a.description,
        };
        Ok(self.manager(request, "requested").await)
    }

    #[tool(description = "Every agent of the hive with its state.")]
    async fn list(&self) -> Result<CallToolResult, ErrorData> {
        Ok(self.manager(ManagerOnlyRequest::List, "ok").await)
    }

    #[tool(description = "The last `lines` lines of an agent's container output.")]
    async fn get_logs(
        &self,
        Parameters(a): Parameters<GetLogsArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let agent = match name(&a.agent) {
            Ok(name) => name,
            Err(e) => return Ok(self.finish(Err(e), None).await),
        };
        let request = ManagerOnlyRequest::GetLogs {
            name: agent,
            lines: Some(a.lines.unwrap_or(100)),
        };
        Ok(self
            .relay(&request, Duration::ZERO, |answer| match answer {
                AgentResponse::Logs { lines } if lines.is_empty() => "(no output)".to_owned(),
                AgentResponse::Logs { lines } => lines.join("\n"),
                other => render_other(&other),
            })
            .await)
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "hive",
    instructions = "The hyperhive tools: talk to other agents and the operator through the hive's broker."
)]
impl ServerHandler for HiveTools {}

fn kind_name(kind: LooseEndKind) -> &'static str {
    match kind {
        LooseEndKind::Approval => "approval",
        LooseEndKind::Question => "question",
        LooseEndKind::Reminder => "reminder",
    }
}

fn render_other(answer: &AgentResponse) -> String {
    match answer {
        AgentResponse::Ok => "ok".to_owned(),
        AgentResponse::Status { unread } => format!("{unread} unread"),
        AgentResponse::Messages { messages, .. } => wake::render_recv(messages),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

fn render_agents(agents: &[AgentStatusRow]) -> String {
    if agents.is_empty() {
        return "(no agents)".to_owned();
    }
    agents
        .iter()
        .map(|a| {
            let mut flags = vec![if a.running { "running" } else { "stopped" }];
            if a.failed {
                flags.push("failed");
            }
            if a.paused {
                flags.push("paused");
            }
            if a.needs_login {
                flags.push("needs login");
            }
            if a.needs_update {
                flags.push("needs update");
            }
            let mut line = format!("{}: {}", a.name, flags.join(", "));
            if let Some(model) = &a.active_model {
                line.push_str(&format!("; model {model}"));
            }
            if a.pending_reminders > 0 {
                line.push_str(&format!("; {} reminders", a.pending_reminders));
            }
            if let Some(status) = &a.status_text {
                line.push_str(&format!("; status: {status}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_loose_ends(ends: &[LooseEnd]) -> String {
    if ends.is_empty() {
        return "nothing pending".to_owned();
    }
    ends.iter()
        .map(|end| match end {
            LooseEnd::Approval {
                id,
                agent,
                approval_kind,
                commit_ref,
                description,
                age_seconds,
                ..
            } => {
                let mut s = format!("approval #{id}: {} for {agent}", approval_kind.as_str());
                if !commit_ref.is_empty() {
                    s.push_str(&format!(" ({commit_ref})"));
                }
                if let Some(d) = description {
                    s.push_str(&format!(" — {d}"));
                }
                s.push_str(&format!(", waiting {age_seconds}s"));
                s
            }
            LooseEnd::Question {
                id,
                asker,
                target,
                question,
                age_seconds,
                ..
            } => format!(
                "question #{id} from {asker} to {}: {question} (open {age_seconds}s)",
                target.as_deref().unwrap_or("operator")
            ),
            LooseEnd::Reminder {
                id,
                owner,
                target,
                message,
                due_at,
                parked,
                last_error,
                ..
            } => {
                let mut s = format!(
                    "reminder #{id} by {owner} for {} due at {due_at}: {message}",
                    target.as_deref().unwrap_or(owner)
                );
                if *parked {
                    s.push_str(" [parked]");
                }
                if let Some(e) = last_error {
                    s.push_str(&format!(" (last error: {e})"));
                }
                s
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_sets() {
        let agent = tool_names(Role::Agent);
        for tool in [
            "send",
            "recv",
            "ask",
            "answer",
            "remind",
            "get_loose_ends",
            "cancel_loose_end",
            "whoami",
            "set_status",
            "request_next_turn",
            "task_create",
            "task_list",
            "task_show",
            "task_claim",
            "task_update",
            "task_complete",
            "task_block",
            "task_cancel",
        ] {
            assert!(agent.iter().any(|t| t == tool), "{tool} missing");
        }
        assert_eq!(agent.len(), 18);
        let manager = tool_names(Role::Manager);
        assert_eq!(manager.len(), 29);
        for tool in [
            "request_spawn",
            "get_logs",
            "list",
            "update",
            "task_assign",
            "task_reorder",
        ] {
            assert!(manager.iter().any(|t| t == tool), "{tool} missing");
            assert!(!agent.iter().any(|t| t == tool), "{tool} leaked");
        }
    }

    /// A stand-in for core's socket, persistent as core's: every answer
    /// says 3 unread, `request_spawn` is refused as core refuses a live
    /// agent, anything else is `ok`.
    fn fake_core(dir: &std::path::Path) -> SocketClient {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let path = dir.join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = if line.contains(r#""cmd":"status""#) {
                            r#"{"kind":"status","unread":3}"#
                        } else if line.contains(r#""cmd":"request_spawn""#) {
                            r#"{"kind":"err","message":"coder already has a container: start, restart or rebuild it","unread":3}"#
                        } else {
                            r#"{"kind":"ok","unread":3}"#
                        };
                        write
                            .write_all(format!("{answer}\n").as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        SocketClient::new(path)
    }

    /// `(is_error, text)` of a tool result.
    fn text(result: &CallToolResult) -> (bool, String) {
        let v = serde_json::to_value(result).unwrap();
        (
            v["isError"].as_bool().unwrap_or(false),
            v["content"][0]["text"].as_str().unwrap().to_owned(),
        )
    }

    #[tokio::test]
    async fn every_result_and_refusal_ends_with_the_unread_line() {
        let dir = tempfile::tempdir().unwrap();
        let tools = HiveTools::new(Role::Manager, fake_core(dir.path()), None);
        let bad_name = "refused: invalid agent name \"../x\": must start with a-z \
                        (names match ^[a-z][a-z0-9-]{0,31}$)\n\n[inbox: 3 unread]";
        let args = |name: &str| {
            Parameters(NameDescriptionArgs {
                name: name.to_owned(),
                description: None,
            })
        };
        let spawn = tools.request_spawn(args("../x")).await.unwrap();
        assert_eq!(text(&spawn), (true, bad_name.to_owned()));
        let kill = tools
            .kill(Parameters(NameArgs {
                name: "../x".to_owned(),
            }))
            .await
            .unwrap();
        assert_eq!(text(&kill), (true, bad_name.to_owned()));
        let logs = tools
            .get_logs(Parameters(GetLogsArgs {
                agent: "../x".to_owned(),
                lines: None,
            }))
            .await
            .unwrap();
        assert_eq!(text(&logs), (true, bad_name.to_owned()));
        // Core's refusal, once, with the line.
        let spawn = tools.request_spawn(args("coder")).await.unwrap();
        assert_eq!(
            text(&spawn),
            (
                true,
                "refused: coder already has a container: start, restart or rebuild it\n\n\
                 [inbox: 3 unread]"
                    .to_owned()
            )
        );
        let sent = tools
            .send(Parameters(SendArgs {
                to: "bob".to_owned(),
                body: "hi".to_owned(),
                in_reply_to: None,
            }))
            .await
            .unwrap();
        assert_eq!(
            text(&sent),
            (false, "sent to bob\n\n[inbox: 3 unread]".to_owned())
        );
    }
}
