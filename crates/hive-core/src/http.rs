//! The dashboard's HTTP API: the `/api/state` snapshot and the
//! `/dashboard/stream` SSE channel of [`DashboardEvent`]s.
//!
//! The snapshot reads `seq` before the state it reports, so a client that
//! subscribes first and drops buffered frames with `seq <= snapshot.seq`
//! loses nothing (an event racing the snapshot may show in both; events
//! carry ids for that).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures_util::Stream;
use hive_proto::{AgentStatusRow, Approval};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::coordinator::Coordinator;
use crate::error::Error;

/// Resolved approvals the snapshot includes.
const HISTORY_LIMIT: u64 = 30;

/// The dashboard's cold-load snapshot.
#[derive(Debug, Serialize)]
pub struct StateSnapshot {
    pub seq: u64,
    pub agents: Vec<AgentStatusRow>,
    pub approvals: Vec<Approval>,
    pub approval_history: Vec<Approval>,
    pub questions: Vec<QuestionRow>,
}

/// A pending question as the dashboard lists it.
#[derive(Debug, Serialize)]
pub struct QuestionRow {
    pub id: i64,
    pub asker: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub question: String,
    pub options: Vec<String>,
    pub multi: bool,
    pub asked_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<i64>,
}

pub fn router(coord: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/state", get(state))
        .route("/dashboard/stream", get(stream))
        .route("/api/logs/{name}", get(logs))
        .with_state(coord)
}

pub async fn serve(coord: Arc<Coordinator>, listener: TcpListener) {
    let app = router(coord.clone());
    let shutdown = async move { coord.shutting_down().await };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("dashboard server stopped: {e}");
    }
}

/// Until the dashboard page lands, `/` says what this server offers.
async fn index() -> &'static str {
    "hyperhive dashboard API\n\n\
     GET /api/state          snapshot of agents, approvals and questions, with its seq\n\
     GET /dashboard/stream   server-sent DashboardEvents, each with a seq\n"
}

async fn state(State(coord): State<Arc<Coordinator>>) -> Result<Json<StateSnapshot>, Error> {
    let seq = coord.dashboard.current_seq();
    let questions = coord
        .store
        .pending_questions()?
        .into_iter()
        .map(|q| QuestionRow {
            id: q.id,
            asker: q.asker,
            target: q.target,
            question: q.question,
            options: q.options,
            multi: q.multi,
            asked_at: q.asked_at,
            deadline_at: q.deadline_at,
        })
        .collect();
    Ok(Json(StateSnapshot {
        seq,
        agents: coord.agent_statuses(&Default::default())?,
        approvals: coord.store.pending_approvals()?,
        approval_history: coord.store.approval_history(HISTORY_LIMIT)?,
        questions,
    }))
}

#[derive(Debug, serde::Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

/// `GET /api/logs/{name}?lines=N`: the container's last lines.
async fn logs(
    State(coord): State<Arc<Coordinator>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let name = hive_proto::AgentName::parse(&name).map_err(|e| Error::refused(e.to_string()))?;
    let lines = coord
        .logs(&name, query.lines.unwrap_or(200).min(10_000))
        .await?;
    Ok(Json(serde_json::json!({ "name": name, "lines": lines })))
}

async fn stream(
    State(coord): State<Arc<Coordinator>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = BroadcastStream::new(coord.dashboard.subscribe()).filter_map(|event| {
        // A lagged client misses frames; it resyncs from /api/state.
        let event = event.ok()?;
        Event::default().json_data(&event).ok().map(Ok)
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::UnknownAgent(_) | Error::Store(hive_store::Error::NotFound { .. }) => {
                StatusCode::NOT_FOUND
            }
            Error::Refused(_) | Error::NoRuntime { .. } => StatusCode::CONFLICT,
            Error::Store(hive_store::Error::Sqlite(_)) | Error::Io(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Error::Store(_) => StatusCode::BAD_REQUEST,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
