//! host.sock: the operator's admin verbs.
//!
//! Every response is a [`HostResponse`] (`{"version":1,"ok":…}` then `error`
//! or one payload key). `subscribe_agent_status` acknowledges, then streams
//! one single-row response per status change until the client leaves.

use std::sync::Arc;

use hive_proto::{AgentUrl, HostRequest, HostResponse};
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;

use crate::actions::Lifecycle;
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::jsonl;
use crate::listener::Connection;

/// Serves one host.sock connection.
pub async fn handle(coord: Arc<Coordinator>, stream: UnixStream) {
    let mut conn = Connection::new(stream);
    let Some(line) = conn.request_line().await else {
        return;
    };
    let request = match line.and_then(|line| jsonl::decode::<HostRequest>(&line)) {
        Ok(request) => request,
        Err(e) => {
            let _ = conn.respond(&HostResponse::error(e.to_string())).await;
            return;
        }
    };
    tracing::debug!(?request, "host request");
    if request == HostRequest::SubscribeAgentStatus {
        subscribe(&coord, &mut conn).await;
        return;
    }
    let response = dispatch(&coord, request).unwrap_or_else(|e| HostResponse::error(e.to_string()));
    if let Err(e) = conn.respond(&response).await {
        tracing::debug!("host client left before its response: {e}");
    }
}

/// Answers one request (every verb but `subscribe_agent_status`).
pub fn dispatch(coord: &Coordinator, request: HostRequest) -> Result<HostResponse> {
    use HostRequest::*;
    let ok = HostResponse::success();
    Ok(match request {
        Spawn { name } => coord.lifecycle(Lifecycle::Spawn, &name).map(|()| ok)?,
        RequestSpawn { name, description } => {
            HostResponse::approvals(vec![coord.request_spawn(&name, description.as_deref())?])
        }
        Kill { name } => coord.lifecycle(Lifecycle::Stop, &name).map(|()| ok)?,
        Destroy { name, purge } => coord.destroy(&name, purge).map(|()| ok)?,
        Rebuild { name } => coord.lifecycle(Lifecycle::Rebuild, &name).map(|()| ok)?,
        List => HostResponse::agents(coord.store.agents()?.into_iter().map(|a| a.name).collect()),
        Pending => HostResponse::approvals(coord.store.pending_approvals()?),
        Approve { id } => coord.approve(id).map(|_| ok)?,
        Deny { id, note } => coord.deny(id, note.as_deref()).map(|_| ok)?,
        AgentStatus { scope } => HostResponse::agent_statuses(coord.agent_statuses(&scope)?),
        Start { scope } => coord
            .lifecycle_scope(Lifecycle::Start, &scope)
            .map(|()| ok)?,
        Stop { scope, graceful: _ } => coord
            .lifecycle_scope(Lifecycle::Stop, &scope)
            .map(|()| ok)?,
        Restart { name } => coord.lifecycle(Lifecycle::Restart, &name).map(|()| ok)?,
        SetPaused { name, paused } => coord.set_paused(&name, paused).map(|()| ok)?,
        Urls => HostResponse::urls(
            coord
                .agent_statuses(&Default::default())?
                .into_iter()
                .filter_map(|row| {
                    Some(AgentUrl {
                        url: row.url?,
                        name: row.name,
                    })
                })
                .collect(),
        ),
        Send { to, body } => coord.operator_send(&to, &body).map(|_| ok)?,
        SubscribeAgentStatus => unreachable_subscribe(),
    })
}

/// `subscribe_agent_status` streams and is handled before dispatch; if it
/// ever reaches here the client still gets a plain answer.
fn unreachable_subscribe() -> HostResponse {
    HostResponse::error("subscribe_agent_status streams; it cannot be dispatched as one request")
}

async fn subscribe(coord: &Coordinator, conn: &mut Connection) {
    // Subscribe before acknowledging so no change between the two is lost.
    let mut rx = coord.subscribe_status();
    if conn.respond(&HostResponse::success()).await.is_err() {
        return;
    }
    loop {
        let row = tokio::select! {
            row = rx.recv() => row,
            () = coord.shutting_down() => return,
            // The client never sends again; a readable EOF means it left.
            gone = client_gone(&mut conn.reader) => { if gone { return } else { continue } }
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
                let Ok(rows) = coord.agent_statuses(&Default::default()) else {
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

/// Resolves `true` when the client closed its end, `false` if it sent
/// (and we discarded) stray bytes.
async fn client_gone<R: tokio::io::AsyncRead + Unpin>(reader: &mut R) -> bool {
    use tokio::io::AsyncReadExt;
    let mut scratch = [0u8; 256];
    !matches!(reader.read(&mut scratch).await, Ok(n) if n > 0)
}
