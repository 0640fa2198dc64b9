//! The dashboard's snapshots: `/api/state` (everything the page shows) and
//! `/dashboard/history` (recent message flow), each with the `seq` it was
//! taken at.
//!
//! `seq` is read before the state it reports, so a client that subscribed
//! first and drops buffered frames with `seq <= snapshot.seq` loses nothing
//! (an event racing the snapshot may show in both; events carry ids and the
//! client applies them idempotently).

use std::collections::HashSet;

use axum::extract::{Query, State};
use axum::response::Json;
use hive_proto::dashboard::{LastActionView, TombstoneView, TransientKind, TurnStateView};
use hive_proto::{
    AgentName, AgentStatusRow, Approval, ApprovalKind, InboxRow, OPERATOR_RECIPIENT, QuestionRow,
};
use serde::{Deserialize, Serialize};

use super::App;
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};

/// Resolved approvals the snapshot includes.
const HISTORY_LIMIT: u64 = 200;
/// Operator inbox rows the snapshot includes.
const INBOX_LIMIT: u64 = 50;
/// Messages of the flow the snapshot includes.
const FLOW_LIMIT: usize = 200;
/// Most messages `/dashboard/history` returns.
const HISTORY_MAX: usize = 2000;

/// The dashboard's cold-load snapshot.
#[derive(Debug, Serialize)]
pub struct StateSnapshot {
    pub seq: u64,
    /// The container backend, `None` for `--runtime none`.
    pub runtime: Option<&'static str>,
    /// A status row per agent with a container (kept-state agents are
    /// listed under tombstones).
    pub agents: Vec<AgentStatusRow>,
    pub transients: Vec<TransientView>,
    /// What each agent's harness last said it was doing.
    pub turn_states: Vec<TurnStateView>,
    /// The last lifecycle action on each agent, with its result.
    pub last_actions: Vec<LastActionView>,
    pub tombstones: Vec<TombstoneView>,
    pub approvals: Vec<PendingApproval>,
    pub approval_history: Vec<Approval>,
    /// Every pending question: to the operator (no `target`) and between
    /// agents.
    pub questions: Vec<QuestionRow>,
    /// The operator's last messages, newest first.
    pub inbox: Vec<InboxRow>,
    /// The last messages through the broker, oldest first.
    pub messages: Vec<FlowMessage>,
    /// The task board in order, done and cancelled tasks included.
    pub tasks: Vec<hive_proto::Task>,
}

/// A lifecycle action in flight.
#[derive(Debug, Serialize)]
pub struct TransientView {
    pub name: String,
    pub transient_kind: TransientKind,
    pub since_unix: i64,
}

/// A pending approval; a config deploy carries its diff against the config
/// deployed now (recomputed, so it is current even after other deploys).
#[derive(Debug, Serialize)]
pub struct PendingApproval {
    #[serde(flatten)]
    pub approval: Approval,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff_error: Option<String>,
}

/// One message of the flow.
#[derive(Debug, Clone, Serialize)]
pub struct FlowMessage {
    pub id: i64,
    pub from: String,
    pub to: String,
    pub body: String,
    pub at: i64,
}

/// `GET /api/state`.
pub(super) async fn state(State(app): State<App>) -> Result<Json<StateSnapshot>> {
    let coord = &app.coord;
    let seq = coord.dashboard.current_seq();
    let pending = coord.store.pending_approvals()?;
    let mut transients: Vec<TransientView> = coord
        .lifecycle
        .transients()
        .iter()
        .map(|(name, (kind, since))| TransientView {
            name: name.to_string(),
            transient_kind: *kind,
            since_unix: *since,
        })
        .collect();
    transients.sort_by(|a, b| a.name.cmp(&b.name));
    let questions = coord
        .store
        .pending_questions()?
        .into_iter()
        .map(QuestionRow::from)
        .collect();
    let snapshot = StateSnapshot {
        seq,
        runtime: coord.lifecycle.runtime_name(),
        agents: coord.status.rows(&Default::default())?,
        transients,
        turn_states: coord.activity.turns(),
        last_actions: coord.activity.actions(),
        tombstones: coord.lifecycle.tombstones()?,
        approvals: Vec::new(),
        approval_history: coord.store.approval_history(HISTORY_LIMIT)?,
        questions,
        inbox: coord.store.recent(OPERATOR_RECIPIENT, INBOX_LIMIT)?,
        messages: flow(coord, FLOW_LIMIT)?,
        tasks: coord.tasks.operator_list(hive_proto::TaskFilter::All)?,
    };
    Ok(Json(StateSnapshot {
        approvals: with_diffs(coord, pending).await?,
        ..snapshot
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    limit: Option<usize>,
}

/// What `/dashboard/history` returns.
#[derive(Debug, Serialize)]
pub(super) struct History {
    seq: u64,
    messages: Vec<FlowMessage>,
}

/// `GET /dashboard/history?limit=N`: the last messages through the broker,
/// oldest first.
pub(super) async fn history(
    State(app): State<App>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<History>> {
    let seq = app.coord.dashboard.current_seq();
    let limit = query.limit.unwrap_or(FLOW_LIMIT).clamp(1, HISTORY_MAX);
    Ok(Json(History {
        seq,
        messages: flow(&app.coord, limit)?,
    }))
}

/// The last `limit` messages addressed to anyone, oldest first: the newest
/// of every recipient's inbox, merged by id.
fn flow(coord: &Coordinator, limit: usize) -> Result<Vec<FlowMessage>> {
    let mut recipients: Vec<String> = coord.store.agents()?.into_iter().map(|a| a.name).collect();
    recipients.push(OPERATOR_RECIPIENT.to_owned());
    let mut seen = HashSet::new();
    let mut messages = Vec::new();
    let per_recipient = u64::try_from(limit).unwrap_or(u64::MAX);
    for to in recipients {
        for row in coord.store.recent(&to, per_recipient)? {
            if seen.insert(row.id) {
                messages.push(FlowMessage {
                    id: row.id,
                    from: row.from,
                    to: to.clone(),
                    body: row.body,
                    at: row.at,
                });
            }
        }
    }
    messages.sort_unstable_by_key(|m| m.id);
    let skip = messages.len().saturating_sub(limit);
    messages.drain(..skip);
    Ok(messages)
}

/// Pending approvals, each config deploy with its diff against what runs.
pub(crate) async fn with_diffs(
    coord: &Coordinator,
    pending: Vec<Approval>,
) -> Result<Vec<PendingApproval>> {
    let repos = coord.configs.repos().clone();
    tokio::task::spawn_blocking(move || {
        pending
            .into_iter()
            .map(|approval| {
                let (diff, diff_error) = if approval.kind == ApprovalKind::ApplyCommit {
                    // `prepare` on a proposal already copied into applied
                    // only re-checks it and diffs it: objects present are
                    // never copied twice.
                    match AgentName::parse(&approval.agent)
                        .map_err(|e| e.to_string())
                        .and_then(|name| {
                            repos
                                .prepare(&name, &approval.commit_ref)
                                .map_err(|e| e.to_string())
                        }) {
                        Ok(prepared) => (Some(prepared.diff), None),
                        Err(e) => (None, Some(e)),
                    }
                } else {
                    (None, None)
                };
                PendingApproval {
                    approval,
                    diff,
                    diff_error,
                }
            })
            .collect()
    })
    .await
    .map_err(|e| Error::Internal(format!("diff task failed: {e}")))
}
