//! Per-agent sockets and the manager socket.
//!
//! The caller is whoever the socket belongs to: a request never names its
//! sender. The manager socket accepts the whole agent surface plus the
//! privileged verbs of [`ManagerOnlyRequest`].

use std::sync::Arc;
use std::time::Duration;

use hive_proto::{
    AgentAnswer, AgentName, AgentRequest, AgentResponse, DEFAULT_WAIT_SECONDS, LooseEndKind,
    MAX_LEASE_SECONDS, MAX_RECV_BATCH, MAX_WAIT_SECONDS, MIN_LEASE_SECONDS, ManagerOnlyRequest,
    ManagerRequest, OutgoingMessage, Recipient,
};
use hive_store::Popped;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::AbortHandle;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::jsonl;
use crate::listener::{self, Connection};

/// Most rows `recent` returns.
const MAX_RECENT: u64 = 500;
/// Longest `set_status` text.
const MAX_STATUS_LEN: usize = 200;
/// Furthest ahead a reminder may be set.
const MAX_REMINDER_DELAY: i64 = 365 * 24 * 3600;

/// Serves one connection on `agent`'s socket: request lines one after
/// another, each answered in order, until the client closes (or sends a
/// line that cannot be framed). Every answer carries the agent's unread
/// count.
///
/// Exact leases (a `recv` with `lease_seconds`) handed out on this
/// connection belong to it until the client names them (`renew_lease`,
/// `ack_turn{lease}`); those still unnamed when the connection ends go
/// back unflagged, since nobody read them.
pub async fn handle<R, W>(coord: Arc<Coordinator>, agent: AgentName, mut conn: Connection<R, W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut unheld: Vec<i64> = Vec::new();
    // A harness report counts for the container started before this
    // connection opened (see `DeployLanes::harness_reported`).
    let opened = tokio::time::Instant::now();
    while let Some(line) = conn.request_line().await {
        let fatal = matches!(&line, Err(e) if e.is_fatal());
        let decoded = line.and_then(|line| {
            // The verbs of every turn, in one pass (no manager-only verb
            // is among them).
            if let Some(hot) = AgentRequest::decode_hot(&line) {
                return Ok(ManagerRequest::Agent(hot));
            }
            if agent.is_manager() {
                jsonl::decode::<ManagerRequest>(&line)
            } else {
                jsonl::decode::<AgentRequest>(&line).map(ManagerRequest::Agent)
            }
        });
        let request = match decoded {
            Ok(request) => request,
            Err(e) => {
                let answered = answer(&coord, &agent, &mut conn, AgentResponse::err(e.to_string()))
                    .await
                    .is_ok();
                if fatal || !answered {
                    break;
                }
                continue;
            }
        };
        tracing::debug!(%agent, ?request, "agent request");
        let answered = match request {
            ManagerRequest::Agent(AgentRequest::Recv {
                wait_seconds,
                max,
                lease_seconds,
            }) => {
                recv(
                    &coord,
                    &agent,
                    &mut conn,
                    RecvArgs {
                        wait_seconds,
                        max,
                        lease_seconds,
                    },
                    &mut unheld,
                )
                .await
            }
            ManagerRequest::Agent(request) => {
                // A lease the client names is one it read.
                if let AgentRequest::RenewLease { lease }
                | AgentRequest::AckTurn {
                    lease: Some(lease), ..
                } = &request
                {
                    unheld.retain(|l| l != lease);
                }
                if matches!(request, AgentRequest::HarnessState { .. }) {
                    coord.deploys.harness_reported(&agent, opened);
                }
                let response = agent_verb(&coord, &agent, request)
                    .await
                    .unwrap_or_else(error_response);
                answer(&coord, &agent, &mut conn, response).await.is_ok()
            }
            ManagerRequest::Manager(request) => {
                let response = manager_verb(&coord, request)
                    .await
                    .unwrap_or_else(error_response);
                answer(&coord, &agent, &mut conn, response).await.is_ok()
            }
        };
        if !answered {
            break;
        }
    }
    for lease in unheld {
        match coord.store.release_lease(lease) {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(%agent, lease, n, "connection closed before its lease was named: rows back, unflagged")
            }
            Err(e) => tracing::error!(%agent, lease, "could not release a lease: {e}"),
        }
    }
}

/// Writes `response` with the agent's unread count.
async fn answer<R, W>(
    coord: &Coordinator,
    agent: &AgentName,
    conn: &mut Connection<R, W>,
    response: AgentResponse,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let unread = match coord.store.unread(agent.as_str()) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::error!(%agent, "unread count: {e}");
            None
        }
    };
    let line = AgentAnswer { response, unread }
        .to_line()
        .map_err(std::io::Error::other)?;
    conn.respond_line(&line).await
}

fn error_response(e: Error) -> AgentResponse {
    AgentResponse::err(e.to_string())
}

/// A `recv` request's fields.
struct RecvArgs {
    wait_seconds: Option<u64>,
    max: Option<u32>,
    lease_seconds: Option<u64>,
}

/// Long-polls for messages, then hands them over. If the response cannot be
/// written (the client left), the popped rows go back to the inbox: a client
/// that disconnects during a long-poll loses nothing. An exact lease that
/// was written joins `unheld`. Returns whether the answer was written.
///
/// A client that hangs up while the poll waits ends it at once (its fd and
/// slot are not held until `wait_seconds`), and so does eviction by a
/// newcomer on a full socket; both are answered with an empty batch, as if
/// the wait had run out — nothing was popped, so nothing needs returning.
async fn recv<R, W>(
    coord: &Coordinator,
    agent: &AgentName,
    conn: &mut Connection<R, W>,
    args: RecvArgs,
    unheld: &mut Vec<i64>,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let wait = Duration::from_secs(
        args.wait_seconds
            .unwrap_or(DEFAULT_WAIT_SECONDS)
            .min(MAX_WAIT_SECONDS),
    );
    let max = args.max.unwrap_or(1).clamp(1, MAX_RECV_BATCH);
    let lease_for = args
        .lease_seconds
        .map(|s| Duration::from_secs(s.clamp(MIN_LEASE_SECONDS, MAX_LEASE_SECONDS)));
    let popped = tokio::select! {
        popped = coord.store.recv_wait(agent.as_str(), wait, max, lease_for) => popped,
        () = coord.shutting_down() => Ok(Popped::default()),
        // A client that only shut down its write side still reads the
        // empty answer; for one that is gone the write fails at once.
        why = conn.interrupted() => {
            tracing::debug!(%agent, ?why, "recv ended before its wait");
            Ok(Popped::default())
        }
    };
    let Popped { messages, lease } = match popped {
        Ok(popped) => popped,
        Err(e) => {
            return answer(coord, agent, conn, AgentResponse::err(e.to_string()))
                .await
                .is_ok();
        }
    };
    let ids: Vec<i64> = messages.iter().map(|m| m.id).collect();
    match answer(
        coord,
        agent,
        conn,
        AgentResponse::Messages { messages, lease },
    )
    .await
    {
        Ok(()) => {
            if let (Some(lease), Some(_)) = (lease, lease_for) {
                unheld.push(lease);
            }
            true
        }
        Err(e) => {
            if !ids.is_empty() {
                tracing::info!(%agent, count = ids.len(), "recv client left: returning messages ({e})");
                if let Err(e) = coord.store.undeliver(agent.as_str(), &ids) {
                    tracing::error!(%agent, ?ids, "could not return undelivered messages: {e}");
                }
            }
            false
        }
    }
}

/// Answers every agent verb but `recv`.
pub async fn agent_verb(
    coord: &Coordinator,
    me: &AgentName,
    request: AgentRequest,
) -> Result<AgentResponse> {
    use AgentRequest::*;
    let store = &coord.store;
    Ok(match request {
        Send {
            to,
            body,
            in_reply_to,
        } => {
            let message = OutgoingMessage {
                to,
                body,
                in_reply_to,
            };
            store.send_batch(me.as_str(), vec![message]).await?;
            AgentResponse::Ok
        }
        SendBatch { messages } => AgentResponse::Sent {
            ids: store.send_batch(me.as_str(), messages).await?,
        },
        RenewLease { lease } => {
            store.renew_lease(me.as_str(), lease)?;
            AgentResponse::Ok
        }
        Recv { .. } => return Err(Error::refused("recv is served as a long-poll")),
        Status => AgentResponse::Status {
            unread: store.unread(me.as_str())?,
        },
        Recent { limit } => AgentResponse::Recent {
            rows: store.recent(me.as_str(), limit.min(MAX_RECENT))?,
        },
        AckTurn {
            ids: None,
            lease: None,
        } => {
            store.ack_turn(me.as_str())?;
            AgentResponse::Ok
        }
        AckTurn { ids, lease } => {
            store.ack(me.as_str(), ids.as_deref().unwrap_or_default(), lease)?;
            AgentResponse::Ok
        }
        RequeueInflight => {
            store.requeue_inflight(me.as_str())?;
            AgentResponse::Ok
        }
        Ask {
            question,
            options,
            multi,
            ttl_seconds,
            to,
        } => {
            let q = store.ask(
                me.as_str(),
                to.as_ref(),
                &question,
                &options,
                multi,
                ttl_seconds,
            )?;
            coord.dashboard.question_added(&q);
            AgentResponse::QuestionQueued { id: q.id }
        }
        Answer { id, answer } => {
            let q = store.answer_question(id, me.as_str(), &answer)?;
            coord.dashboard.question_resolved(&q);
            AgentResponse::Ok
        }
        Remind {
            message,
            at,
            in_seconds,
            to,
            file_path,
        } => {
            let due_ms = reminder_due(at, in_seconds)?;
            let target = match to {
                None => None,
                Some(to) => match to {
                    Recipient::Agent(name) => Some(name),
                    _ => return Err(Error::refused("a reminder's `to` must be one agent")),
                },
            };
            if let Some(path) = &file_path {
                check_reminder_path(path)?;
            }
            let r = store.remind(
                me.as_str(),
                target.as_ref(),
                &message,
                due_ms,
                file_path.as_deref(),
            )?;
            coord.status.publish(me.as_str());
            AgentResponse::ReminderQueued {
                id: r.id,
                due_at: r.due_at(),
            }
        }
        GetLooseEnds => {
            let now = hive_store::now_unix();
            let loose_ends = if me.is_manager() {
                store.loose_ends_all(now)?
            } else {
                store.loose_ends_for(me.as_str(), now)?
            };
            AgentResponse::LooseEnds { loose_ends }
        }
        CancelLooseEnd { kind, id } => {
            cancel_loose_end(coord, me, kind, id).await?;
            AgentResponse::Ok
        }
        Whoami => AgentResponse::Whoami {
            name: me.to_string(),
            role: if me.is_manager() { "manager" } else { "agent" }.into(),
        },
        HarnessState {
            state,
            model,
            logged_in,
            note,
            until,
        } => {
            harness_state(coord, me, state, model.as_deref(), logged_in, until)?;
            if let Some(turn) = coord.activity.turn_reported(
                me.as_str(),
                state,
                note.as_deref(),
                hive_store::now_unix(),
            ) {
                coord
                    .dashboard
                    .emit(|seq| hive_proto::DashboardEvent::TurnStateChanged { seq, turn });
            }
            AgentResponse::Ok
        }
        SetStatus { text } => {
            let text = text.trim();
            if text.chars().count() > MAX_STATUS_LEN {
                return Err(Error::refused(format!(
                    "status text is over {MAX_STATUS_LEN} characters"
                )));
            }
            // Core's own notes share the column: an agent's text that reads
            // as one would stop core from acting on the real state.
            if is_core_text(text) {
                return Err(Error::refused(format!(
                    "status text {text:?} reads as core's own note; choose other words"
                )));
            }
            store.set_status_text(me.as_str(), (!text.is_empty()).then_some(text))?;
            coord.status.publish(me.as_str());
            AgentResponse::Ok
        }
        request @ (TaskCreate { .. }
        | TaskList { .. }
        | TaskShow { .. }
        | TaskClaim { .. }
        | TaskUpdate { .. }
        | TaskComplete { .. }
        | TaskBlock { .. }
        | TaskCancel { .. }) => return coord.tasks.agent_verb(me, &request),
    })
}

async fn cancel_loose_end(
    coord: &Coordinator,
    me: &AgentName,
    kind: LooseEndKind,
    id: i64,
) -> Result<()> {
    match kind {
        LooseEndKind::Question => {
            // The store lets the asker, the manager (hive-wide cleanup) and
            // the operator cancel; the asker hears of it unless it cancelled.
            let q = coord.store.cancel_question(id, me.as_str())?;
            coord.dashboard.question_resolved(&q);
        }
        LooseEndKind::Reminder => {
            let owner = coord
                .store
                .pending_reminders(None)?
                .into_iter()
                .find(|r| r.id == id)
                .map(|r| r.owner);
            coord.store.cancel_reminder(id, me.as_str())?;
            if let Some(owner) = owner {
                coord.status.publish(&owner);
            }
        }
        LooseEndKind::Approval => {
            if !me.is_manager() {
                return Err(Error::refused("only the manager can withdraw approvals"));
            }
            coord.approvals.cancel_approval(id).await?;
        }
    }
    Ok(())
}

/// How far ahead a reported quota reset is believed.
const QUOTA_HORIZON_SECS: i64 = 7 * 86_400;

/// Whether a status text is one of core's own notes (engine missing, quota,
/// over budget), which core sets and clears as the harness reports.
fn is_core_text(text: &str) -> bool {
    text.starts_with(crate::engine::MISSING_PREFIX)
        || text.starts_with(hive_proto::live::QUOTA_PREFIX)
        || text == crate::budget::OVER_BUDGET
}

/// Records what the harness reports; a change of login state reaches the
/// manager as `needs_login` / `logged_in`.
///
/// The last announced login state is the agent's stored `needs_login`, so
/// it survives harness and daemon restarts: a restart that finds the same
/// state announces nothing. Only a report that knows the login moves it —
/// the `needs_login` state, or the harness's probe result — never the
/// `idle` a harness reports at boot before it has looked.
fn harness_state(
    coord: &Coordinator,
    me: &AgentName,
    state: hive_proto::live::TurnState,
    model: Option<&str>,
    logged_in: Option<bool>,
    until: Option<i64>,
) -> Result<()> {
    let record = crate::status::require_agent(&coord.store, me)?;
    let needs_login = match (state, logged_in) {
        (hive_proto::live::TurnState::NeedsLogin, _) => Some(true),
        (_, Some(logged_in)) => Some(!logged_in),
        (_, None) => None,
    };
    if let Some(needs_login) = needs_login
        && needs_login != record.needs_login
    {
        coord.store.set_needs_login(me.as_str(), needs_login)?;
        if !me.is_manager() {
            let agent = me.to_string();
            crate::events::notify_manager(
                &coord.store,
                &if needs_login {
                    hive_proto::HelperEvent::NeedsLogin { agent }
                } else {
                    hive_proto::HelperEvent::LoggedIn { agent }
                },
            );
        }
    }
    // The status row says the engine is missing, and how to provide it,
    // for as long as the harness reports so.
    // Likewise a quota ("quota until HH:MM UTC" while parked on it, and the
    // manager hears of each new reset time once) and a budget ("over
    // budget", and the operator is asked once what to do).
    let core_text = match (state, until) {
        (hive_proto::live::TurnState::EngineMissing, _) => {
            let engine = coord.egress.engine_of(me).unwrap_or_default();
            Some(crate::engine::missing_text(&coord.settings, engine))
        }
        (hive_proto::live::TurnState::Quota, Some(until)) => {
            // A reset is at most a week ahead (the CLI's windows are five
            // hours and seven days); nothing further is believed.
            let now = hive_store::now_unix();
            Some(hive_proto::live::quota_text(
                until.clamp(now, now + QUOTA_HORIZON_SECS),
            ))
        }
        (hive_proto::live::TurnState::OverBudget, _) => Some(crate::budget::OVER_BUDGET.to_owned()),
        _ => None,
    };
    let says_core_text = record.status_text.as_deref().is_some_and(is_core_text);
    let was_quota = record
        .status_text
        .as_deref()
        .is_some_and(|t| t.starts_with(hive_proto::live::QUOTA_PREFIX));
    match &core_text {
        Some(text) if record.status_text.as_deref() != Some(text.as_str()) => {
            coord.store.set_status_text(me.as_str(), Some(text))?;
            match (state, until) {
                // Once per quota: a moved reset time updates the row only.
                (hive_proto::live::TurnState::Quota, Some(until))
                    if !me.is_manager() && !was_quota =>
                {
                    crate::events::notify_manager(
                        &coord.store,
                        &hive_proto::HelperEvent::QuotaReached {
                            agent: me.to_string(),
                            until,
                        },
                    );
                }
                (hive_proto::live::TurnState::OverBudget, _) => coord.budget.ask(me),
                _ => {}
            }
        }
        Some(_) => {}
        None if says_core_text => coord.store.set_status_text(me.as_str(), None)?,
        None => {}
    }
    if let Some(model) = model.filter(|m| !m.is_empty() && m.len() <= 200)
        && record.active_model.as_deref() != Some(model)
    {
        coord.store.set_active_model(me.as_str(), Some(model))?;
    }
    coord.status.publish(me.as_str());
    Ok(())
}

/// When a reminder is due, in unix ms: `in_seconds` from this millisecond,
/// or the start of the unix second `at` (refused if that second is over).
fn reminder_due(at: Option<i64>, in_seconds: Option<u64>) -> Result<i64> {
    let now_ms = hive_store::now_millis();
    let now = now_ms.div_euclid(1000);
    let due_ms = match (at, in_seconds) {
        (Some(at), None) => {
            if at < now {
                return Err(Error::refused(format!(
                    "a reminder's `at` ({at}) is in the past (now {now}): give a later unix \
                     time, or `in_seconds`"
                )));
            }
            at.saturating_mul(1000)
        }
        (None, Some(secs)) => {
            now_ms.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
        }
        (None, None) => return Err(Error::refused("a reminder needs `at` or `in_seconds`")),
        (Some(_), Some(_)) => {
            return Err(Error::refused(
                "give a reminder `at` or `in_seconds`, not both",
            ));
        }
    };
    if due_ms > now_ms + MAX_REMINDER_DELAY * 1000 {
        return Err(Error::refused("a reminder may be at most one year ahead"));
    }
    Ok(due_ms.max(now_ms))
}

/// A reminder's file must be an absolute, normalised path in the agent's
/// own `/state` or the hive-wide `/shared`.
fn check_reminder_path(path: &str) -> Result<()> {
    let p = std::path::Path::new(path);
    let normal = p.components().all(|c| {
        matches!(
            c,
            std::path::Component::RootDir | std::path::Component::Normal(_)
        )
    });
    if normal && (p.starts_with("/state") || p.starts_with("/shared")) && path.len() <= 4096 {
        Ok(())
    } else {
        Err(Error::refused(format!(
            "reminder file_path {path:?} must be an absolute path under /state or /shared"
        )))
    }
}

/// Answers the manager's privileged verbs.
pub async fn manager_verb(
    coord: &Arc<Coordinator>,
    request: ManagerOnlyRequest,
) -> Result<AgentResponse> {
    use ManagerOnlyRequest::*;
    let manager_itself = |name: &AgentName, verb: &str| {
        if name.is_manager() {
            Err(Error::refused(format!("the manager cannot {verb} itself")))
        } else {
            Ok(())
        }
    };
    Ok(match request {
        RequestSpawn { name, description } => {
            let approval = coord
                .approvals
                .request_spawn(&name, description.as_deref())?;
            AgentResponse::ApprovalQueued { id: approval.id }
        }
        Kill { name } => {
            manager_itself(&name, "stop")?;
            coord.lifecycle.stop(&name).await?;
            AgentResponse::Ok
        }
        Start { name } => {
            coord.lifecycle.start(&name).await?;
            AgentResponse::Ok
        }
        Restart { name } => {
            manager_itself(&name, "restart")?;
            coord.lifecycle.restart(&name).await?;
            AgentResponse::Ok
        }
        Update { name } => {
            coord.lifecycle.rebuild(&name).await?;
            AgentResponse::Ok
        }
        RequestApplyCommit {
            agent,
            commit_ref,
            description,
        } => {
            let approval = coord
                .configs
                .request_apply_commit(&agent, &commit_ref, description.as_deref())
                .await?;
            AgentResponse::ApprovalQueued { id: approval.id }
        }
        RequestInitConfig { name, description } => {
            let approval = coord
                .configs
                .request_init_config(&name, description.as_deref())?;
            AgentResponse::ApprovalQueued { id: approval.id }
        }
        GetLogs { name, lines } => {
            let lines = lines.unwrap_or(100).min(10_000) as usize;
            AgentResponse::Logs {
                lines: coord.lifecycle.logs(&name, lines).await?,
            }
        }
        List => AgentResponse::Agents {
            agents: coord.status.rows(&Default::default())?,
        },
        request @ (TaskAssign { .. } | TaskReorder { .. }) => {
            return coord.tasks.manager_verb(&request);
        }
    })
}

/// Binds `name`'s socket and its egress proxy's, and serves both until
/// shutdown (or until the answered handle is aborted). Lifecycle calls this
/// through [`crate::coordinator::ServeSocket`], keeping the handle.
pub fn serve_agent_socket(
    coord: &Arc<Coordinator>,
    name: AgentName,
) -> anyhow::Result<AbortHandle> {
    let socket = listener::bind(&coord.paths.agent_socket(&name))?;
    let egress = crate::egress::Proxy::new(coord.egress.clone(), name.clone())
        .bind(&coord.paths.egress_socket(&name))?;
    let task = {
        let coord = coord.clone();
        let agent = listener::accept_loop(socket, move |stream| {
            handle(coord.clone(), name.clone(), stream)
        });
        tokio::spawn(async move {
            tokio::join!(agent, egress);
        })
    };
    Ok(task.abort_handle())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminder_paths() {
        for ok in ["/state/notes.md", "/shared/plan/x.txt"] {
            assert!(check_reminder_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "notes.md",
            "/etc/passwd",
            "/state/../etc/passwd",
            "/statefoo/x",
        ] {
            assert!(check_reminder_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reminder_due_times() {
        let now_ms = hive_store::now_millis();
        let now = now_ms / 1000;
        assert!(reminder_due(None, Some(60)).unwrap() >= now_ms + 60_000);
        assert!(reminder_due(Some(now + 5), None).unwrap() == (now + 5) * 1000);
        let err = reminder_due(Some(1), None).unwrap_err().to_string();
        assert!(
            err.starts_with("a reminder's `at` (1) is in the past (now "),
            "{err}"
        );
        assert!(reminder_due(None, None).is_err());
        assert!(reminder_due(Some(now), Some(1)).is_err());
        assert!(reminder_due(None, Some(u64::MAX)).is_err());
    }
}
