//! The operator's actions from the dashboard: POST, JSON in, `{"ok":true}`
//! or `{"ok":false,"error":…}` out (errors through core's one
//! `IntoResponse`).
//!
//! Each action is the same component verb host.sock uses. Actions run
//! on their own task: a browser that navigates away mid-rebuild does not
//! cancel the rebuild. The page changes only through the dashboard events
//! the action causes.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::response::Json;
use hive_proto::{OPERATOR_RECIPIENT, Recipient};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{App, Outcome, agent_name};
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};

/// A JSON body whose rejection is an ordinary `{"ok":false,"error":…}`.
pub(super) struct Body<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| Body(value))
            .map_err(|e| Error::refused(e.body_text()))
    }
}

/// Runs `action` to completion on its own task, whatever the client does.
async fn detached<F>(action: F) -> Result<Json<Outcome>>
where
    F: Future<Output = Result<()>> + Send + 'static,
{
    tokio::spawn(action)
        .await
        .map_err(|e| Error::Internal(format!("action task failed: {e}")))??;
    Ok(Json(Outcome::done()))
}

/// `POST /api/approvals/{id}/approve`: runs the approval's action.
pub(super) async fn approve(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<Outcome>> {
    let coord = app.coord;
    detached(async move { coord.approvals.approve(id).await.map(drop) }).await
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DenyBody {
    #[serde(default)]
    note: Option<String>,
}

/// `POST /api/approvals/{id}/deny` `{note?}`: the note reaches the manager.
pub(super) async fn deny(
    State(app): State<App>,
    Path(id): Path<i64>,
    Body(body): Body<DenyBody>,
) -> Result<Json<Outcome>> {
    let coord = app.coord;
    let note = body.note.filter(|n| !n.trim().is_empty());
    detached(async move { coord.approvals.deny(id, note.as_deref()).await.map(drop) }).await
}

#[derive(Debug, Deserialize)]
pub(super) struct SpawnBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
}

/// `POST /api/request-spawn` `{name, description?}`: queues a spawn
/// approval (revives kept state of the same name).
pub(super) async fn request_spawn(
    State(app): State<App>,
    Body(body): Body<SpawnBody>,
) -> Result<Json<Outcome>> {
    let name = agent_name(&body.name)?;
    let description = body.description.filter(|d| !d.trim().is_empty());
    app.coord
        .approvals
        .request_spawn(&name, description.as_deref())?;
    Ok(Json(Outcome::done()))
}

/// `POST /api/agents/{name}/{verb}`, verb one of `start`, `stop`,
/// `restart`, `rebuild`, `destroy` (keeps state), `purge` (destroy and
/// delete state), `pause`, `resume`.
pub(super) async fn agent_verb(
    State(app): State<App>,
    Path((name, verb)): Path<(String, String)>,
) -> Result<Json<Outcome>> {
    let name = agent_name(&name)?;
    let coord: Arc<Coordinator> = app.coord;
    match verb.as_str() {
        "start" => detached(async move { coord.lifecycle.start(&name).await }).await,
        "stop" => detached(async move { coord.lifecycle.stop(&name).await }).await,
        "restart" => detached(async move { coord.lifecycle.restart(&name).await }).await,
        "rebuild" => detached(async move { coord.lifecycle.rebuild(&name).await }).await,
        "destroy" => detached(async move { coord.lifecycle.destroy(&name, false).await }).await,
        "purge" => detached(async move { coord.lifecycle.destroy(&name, true).await }).await,
        "pause" | "resume" => {
            coord.lifecycle.set_paused(&name, verb == "pause")?;
            Ok(Json(Outcome::done()))
        }
        other => Err(Error::refused(format!(
            "unknown verb {other:?}: use start, stop, restart, rebuild, destroy, purge, pause or resume"
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct SendBody {
    to: String,
    body: String,
}

/// `POST /api/send` `{to, body}`: a message from the operator to an agent
/// (or `*`).
pub(super) async fn send(
    State(app): State<App>,
    Body(body): Body<SendBody>,
) -> Result<Json<Outcome>> {
    // The form's text, parsed here, at the edge, like every other `to`.
    let to = Recipient::parse(body.to.trim()).map_err(hive_store::Error::from)?;
    app.coord.operator_send(&to, &body.body)?;
    Ok(Json(Outcome::done()))
}

#[derive(Debug, Deserialize)]
pub(super) struct AnswerBody {
    answer: String,
}

/// `POST /api/questions/{id}/answer` `{answer}`: the operator answers (or
/// overrides a peer question); the asker hears it.
pub(super) async fn answer(
    State(app): State<App>,
    Path(id): Path<i64>,
    Body(body): Body<AnswerBody>,
) -> Result<Json<Outcome>> {
    app.coord.budget.operator_answer(id, &body.answer).await?;
    Ok(Json(Outcome::done()))
}

/// `POST /api/questions/{id}/cancel`: withdraws a question; the asker hears
/// `[cancelled]`.
pub(super) async fn cancel(State(app): State<App>, Path(id): Path<i64>) -> Result<Json<Outcome>> {
    let q = app.coord.store.cancel_question(id, OPERATOR_RECIPIENT)?;
    app.coord.dashboard.question_resolved(&q);
    Ok(Json(Outcome::done()))
}
