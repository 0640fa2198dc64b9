//! The operator's task-board actions from the dashboard: `POST /api/tasks`
//! (create, optionally reserved for an agent), `/api/tasks/{id}/assign`,
//! `/api/tasks/{id}/cancel` — the same [`crate::tasks::Tasks`]
//! verbs as `hive task add|assign|cancel`. The board changes only through
//! the `task_changed` events they cause.

use axum::extract::{Path, State};
use axum::response::Json;
use hive_proto::{NewTask, OPERATOR_RECIPIENT};
use serde::Deserialize;

use super::actions::Body;
use super::{App, Outcome, agent_name};
use crate::error::Result;

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    depends_on: Vec<i64>,
    #[serde(default)]
    assignee: Option<String>,
}

/// `POST /api/tasks` `{title, body?, depends_on?, assignee?}`.
pub(super) async fn create(
    State(app): State<App>,
    Body(body): Body<CreateBody>,
) -> Result<Json<Outcome>> {
    let assignee = body.assignee.as_deref().map(agent_name).transpose()?;
    let new = NewTask {
        title: body.title,
        body: body.body,
        depends_on: body.depends_on,
        links: Vec::new(),
    };
    app.coord.tasks.add(&new, assignee.as_ref())?;
    Ok(Json(Outcome::done()))
}

#[derive(Debug, Deserialize)]
pub(super) struct AssignBody {
    agent: String,
}

/// `POST /api/tasks/{id}/assign` `{agent}`.
pub(super) async fn assign(
    State(app): State<App>,
    Path(id): Path<i64>,
    Body(body): Body<AssignBody>,
) -> Result<Json<Outcome>> {
    let agent = agent_name(&body.agent)?;
    app.coord.tasks.assign(OPERATOR_RECIPIENT, id, &agent)?;
    Ok(Json(Outcome::done()))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/tasks/{id}/cancel` `{reason?}`.
pub(super) async fn cancel(
    State(app): State<App>,
    Path(id): Path<i64>,
    Body(body): Body<CancelBody>,
) -> Result<Json<Outcome>> {
    app.coord
        .tasks
        .cancel(OPERATOR_RECIPIENT, id, body.reason.as_deref())?;
    Ok(Json(Outcome::done()))
}
