//! host.sock: the operator's admin verbs.
//!
//! Every response is a [`HostResponse`] (`{"version":1,"ok":…}` then `error`
//! or one payload key). `subscribe_agent_status` acknowledges, then streams
//! one single-row response per status change until the client leaves.

use std::sync::Arc;

use hive_proto::{AgentName, HiveUrls, HostRequest, HostResponse, OPERATOR_RECIPIENT, QuestionRow};
use tokio::sync::broadcast::error::RecvError;

use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::jsonl;
use crate::lifecycle::ScopeVerb;
use crate::listener::Connection;

/// Serves one host.sock connection: request lines one after another, each
/// answered in order, until the client closes. A stream
/// (`subscribe_agent_status`, `logs{follow}`) takes the connection over
/// for as long as the client stays.
pub async fn handle(coord: Arc<Coordinator>, mut conn: Connection) {
    while let Some(line) = conn.request_line().await {
        let fatal = matches!(&line, Err(e) if e.is_fatal());
        let request = match line.and_then(|line| jsonl::decode::<HostRequest>(&line)) {
            Ok(request) => request,
            Err(e) => {
                let answered = conn.respond(&HostResponse::error(e.to_string())).await;
                if fatal || answered.is_err() {
                    return;
                }
                continue;
            }
        };
        tracing::debug!(?request, "host request");
        if request == HostRequest::SubscribeAgentStatus {
            subscribe(&coord, &mut conn).await;
            return;
        }
        if let HostRequest::Logs {
            name,
            lines,
            follow: true,
        } = &request
        {
            follow_logs(&coord, &mut conn, name, lines.unwrap_or(DEFAULT_LOG_LINES)).await;
            return;
        }
        let response = dispatch(&coord, request)
            .await
            .unwrap_or_else(|e| HostResponse::error(e.to_string()));
        if let Err(e) = conn.respond(&response).await {
            tracing::debug!("host client left before its response: {e}");
            return;
        }
    }
}

/// Answers one request (every verb but `subscribe_agent_status`).
pub async fn dispatch(coord: &Arc<Coordinator>, request: HostRequest) -> Result<HostResponse> {
    use HostRequest::*;
    let ok = HostResponse::success();
    Ok(match request {
        Spawn { name } => {
            if name.is_manager() {
                return Err(crate::error::Error::refused(
                    "the manager is ensured by core at startup, not spawned",
                ));
            }
            coord.lifecycle.spawn(&name).await.map(|()| ok)?
        }
        RequestSpawn { name, description } => HostResponse::approvals(vec![
            coord
                .approvals
                .request_spawn(&name, description.as_deref())?,
        ]),
        Kill { name } => coord.lifecycle.stop(&name).await.map(|()| ok)?,
        Destroy { name, purge } => coord.lifecycle.destroy(&name, purge).await.map(|()| ok)?,
        Rebuild { name } => coord.lifecycle.rebuild(&name).await.map(|()| ok)?,
        Checkpoint { name } => {
            coord.lifecycle.checkpoint(&name).await?;
            HostResponse::agent_statuses(coord.status.rows(&hive_proto::Scope {
                agent_names: vec![name],
            })?)
        }
        Move { name, node } => {
            HostResponse::approvals(vec![coord.approvals.request_move(&name, &node)?])
        }
        List => HostResponse::agents(coord.store.agents()?.into_iter().map(|a| a.name).collect()),
        Pending => HostResponse::approvals(coord.store.pending_approvals()?),
        Approve { id } => coord.approvals.approve(id).await.map(|_| ok)?,
        Deny { id, note } => coord
            .approvals
            .deny(id, note.as_deref())
            .await
            .map(|_| ok)?,
        Rollback { name, id } => {
            HostResponse::approvals(vec![coord.configs.request_rollback(&name, id).await?])
        }
        AgentStatus { scope } => HostResponse::agent_statuses(coord.status.rows(&scope)?),
        Start { scope } => coord
            .lifecycle
            .scope(ScopeVerb::Start, &scope)
            .await
            .map(|_| ok)?,
        Stop { scope, graceful: _ } => {
            HostResponse::stopped(coord.lifecycle.scope(ScopeVerb::Stop, &scope).await?)
        }
        Restart { name } => coord.lifecycle.restart(&name).await.map(|()| ok)?,
        SetPaused { name, paused } => coord.lifecycle.set_paused(&name, paused).map(|()| ok)?,
        Urls => HostResponse::urls(hive_urls(coord)?),
        Questions => HostResponse::questions(
            coord
                .store
                .pending_questions()?
                .into_iter()
                .map(QuestionRow::from)
                .collect(),
        ),
        Answer { id, answer } => {
            coord.budget.operator_answer(id, &answer).await?;
            ok
        }
        CancelQuestion { id } => {
            let q = coord.store.cancel_question(id, OPERATOR_RECIPIENT)?;
            coord.dashboard.question_resolved(&q);
            ok
        }
        Show { id } => {
            let approval = coord.store.approval(id)?;
            if approval.kind == hive_proto::ApprovalKind::ApplyCommit {
                let shown = crate::http::with_diffs(coord, vec![approval])
                    .await?
                    .remove(0);
                if let Some(e) = shown.diff_error {
                    return Err(crate::error::Error::refused(format!(
                        "approval #{id}: its diff cannot be computed: {e}"
                    )));
                }
                HostResponse::approval_with_diff(shown.approval, shown.diff)
            } else {
                HostResponse::approval_with_diff(approval, None)
            }
        }
        Send { to, body } => coord.operator_send(&to, &body).map(|_| ok)?,
        Logs {
            name,
            lines,
            follow: _,
        } => {
            let lines = lines.unwrap_or(DEFAULT_LOG_LINES).min(MAX_LOG_LINES) as usize;
            HostResponse::logs(coord.lifecycle.logs(&name, lines).await?)
        }
        Tasks { filter } => HostResponse::tasks(coord.tasks.operator_list(filter)?),
        TaskAdd {
            title,
            body,
            depends_on,
            assignee,
        } => {
            let new = hive_proto::NewTask {
                title,
                body,
                depends_on,
                links: Vec::new(),
            };
            HostResponse::tasks(vec![coord.tasks.add(&new, assignee.as_ref())?])
        }
        TaskAssign { id, agent } => {
            HostResponse::tasks(vec![coord.tasks.assign(OPERATOR_RECIPIENT, id, &agent)?])
        }
        TaskCancel { id, reason } => HostResponse::tasks(vec![coord.tasks.cancel(
            OPERATOR_RECIPIENT,
            id,
            reason.as_deref(),
        )?]),
        SubscribeAgentStatus => unreachable_subscribe(),
    })
}

/// The original's `HiveUrls`: where the dashboard is served. A hive
/// without a dashboard has no address to give.
fn hive_urls(coord: &Coordinator) -> Result<HiveUrls> {
    let addr = coord.dashboard_addr.ok_or_else(|| {
        crate::error::Error::refused("this hive serves no dashboard, so it has no URLs")
    })?;
    Ok(HiveUrls {
        domain: addr.ip().to_string(),
        home: format!("http://{addr}/"),
        forge: None,
        matrix: None,
    })
}

/// `subscribe_agent_status` streams and is handled before dispatch; if it
/// ever reaches here the client still gets a plain answer.
fn unreachable_subscribe() -> HostResponse {
    HostResponse::error("subscribe_agent_status streams; it cannot be dispatched as one request")
}

/// Lines `logs` returns when the request does not say.
const DEFAULT_LOG_LINES: u32 = 100;
/// Most lines one `logs` response carries.
const MAX_LOG_LINES: u32 = 10_000;
/// Lines of tail compared between reads to find what is new.
const FOLLOW_WINDOW: usize = 500;

/// Sends the tail, then every new line as it appears, until the client
/// leaves or the daemon stops.
async fn follow_logs(coord: &Coordinator, conn: &mut Connection, name: &AgentName, lines: u32) {
    // Made before the first read: whatever is printed after it wakes us.
    let mut watch = match coord.lifecycle.watch_output(name).await {
        Ok(watch) => watch,
        Err(e) => {
            let _ = conn.respond(&HostResponse::error(e.to_string())).await;
            return;
        }
    };
    // One read gives both the answer and what later reads are compared
    // with: a second read would lose what was printed between the two.
    let asked = lines.min(MAX_LOG_LINES) as usize;
    let tail = match coord.lifecycle.logs(name, asked.max(FOLLOW_WINDOW)).await {
        Ok(tail) => tail,
        Err(e) => {
            let _ = conn.respond(&HostResponse::error(e.to_string())).await;
            return;
        }
    };
    let first = tail[tail.len().saturating_sub(asked)..].to_vec();
    if conn.respond(&HostResponse::logs(first)).await.is_err() {
        return;
    }
    let mut seen = tail[tail.len().saturating_sub(FOLLOW_WINDOW)..].to_vec();
    loop {
        tokio::select! {
            () = watch.changed() => {}
            () = coord.shutting_down() => return,
            // The client never sends again: it left, or a newcomer on a
            // full socket needed the slot.
            _ = conn.interrupted() => return,
        }
        let Ok(now) = coord.lifecycle.logs(name, FOLLOW_WINDOW).await else {
            continue;
        };
        let fresh = new_lines(&seen, &now);
        if !fresh.is_empty()
            && conn
                .respond(&HostResponse::logs(fresh.to_vec()))
                .await
                .is_err()
        {
            return;
        }
        seen = now;
    }
}

/// The lines of `now` after its longest overlap with the end of `before`
/// (both are tails of the same growing log).
fn new_lines<'a>(before: &[String], now: &'a [String]) -> &'a [String] {
    let overlap = (0..=before.len().min(now.len()))
        .rev()
        .find(|&k| before[before.len() - k..] == now[..k])
        .unwrap_or(0);
    &now[overlap..]
}

async fn subscribe(coord: &Coordinator, conn: &mut Connection) {
    // Subscribe before acknowledging so no change between the two is lost.
    let mut rx = coord.status.subscribe();
    if conn.respond(&HostResponse::success()).await.is_err() {
        return;
    }
    loop {
        let row = tokio::select! {
            row = rx.recv() => row,
            () = coord.shutting_down() => return,
            // The client never sends again: it left, or a newcomer on a
            // full socket needed the slot.
            _ = conn.interrupted() => return,
        };
        match row {
            Ok(row) => {
                if conn
                    .respond(&HostResponse::agent_statuses(vec![row]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "status subscriber lagged; resending every row");
                let Ok(rows) = coord.status.rows(&Default::default()) else {
                    return;
                };
                for row in rows {
                    if conn
                        .respond(&HostResponse::agent_statuses(vec![row]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::new_lines;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn new_lines_of_a_growing_tail() {
        assert_eq!(new_lines(&v(&["a", "b"]), &v(&["a", "b", "c"])), v(&["c"]));
        assert_eq!(
            new_lines(&v(&["a", "b", "c"]), &v(&["b", "c", "d", "e"])),
            v(&["d", "e"])
        );
        assert_eq!(new_lines(&v(&["a"]), &v(&["a"])), Vec::<String>::new());
        assert_eq!(new_lines(&v(&[]), &v(&["x"])), v(&["x"]));
        assert_eq!(new_lines(&v(&["x"]), &v(&["y", "z"])), v(&["y", "z"]));
    }
}
