//! The operator's dashboard over HTTP: the page and its assets (from
//! `hive-web`), the `/api/state` snapshot, the `/dashboard/stream` SSE
//! channel of [`hive_proto::DashboardEvent`]s, and the operator's actions.
//!
//! Reads: `GET /` (the page), `/assets/{file}`, `/api/state`,
//! `/dashboard/stream`, `/dashboard/history`, `/api/logs/{name}`,
//! `/api/config/{name}`. Actions (POST, JSON in, `{"ok":…}` out):
//! `/api/approvals/{id}/approve|deny`, `/api/request-spawn`,
//! `/api/agents/{name}/{verb}`, `/api/send`,
//! `/api/questions/{id}/answer|cancel`, `/api/tasks`,
//! `/api/tasks/{id}/assign|cancel` ([`tasks`]). Agent pages: `/agent/{name}/…`
//! ([`agent_proxy`]).
//!
//! Access ([`guard`]): every request presents the operator credential
//! (bearer token or the cookie `/login?token=…` sets); a loopback listener
//! also wants a loopback `Host`; a state-changing request from a browser
//! must show it comes from the page's own origin and carry JSON.

mod actions;
mod agent_proxy;
mod guard;
mod state;
mod stream;
mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use hive_proto::AgentName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::coordinator::Coordinator;
use crate::error::Error;

pub(crate) use state::with_diffs;
pub use state::{FlowMessage, PendingApproval, StateSnapshot, TransientView};
pub use stream::Fanout;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    coord: Arc<Coordinator>,
    fanout: Arc<Fanout>,
}

/// The dashboard's routes. Starts the SSE fan-out task, so it must be
/// called inside a tokio runtime.
pub fn router(coord: Arc<Coordinator>) -> Router {
    let fanout = Fanout::start(coord.clone());
    let app = App { coord, fanout };
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/api/state", get(state::state))
        .route("/dashboard/stream", get(stream::stream))
        .route("/dashboard/history", get(state::history))
        .route("/api/logs/{name}", get(logs))
        .route("/api/config/{name}", get(config))
        .route("/api/approvals/{id}/approve", post(actions::approve))
        .route("/api/approvals/{id}/deny", post(actions::deny))
        .route("/api/request-spawn", post(actions::request_spawn))
        .route("/api/agents/{name}/{verb}", post(actions::agent_verb))
        .route("/api/send", post(actions::send))
        .route("/api/questions/{id}/answer", post(actions::answer))
        .route("/api/questions/{id}/cancel", post(actions::cancel))
        .route("/api/tasks", post(tasks::create))
        .route("/api/tasks/{id}/assign", post(tasks::assign))
        .route("/api/tasks/{id}/cancel", post(tasks::cancel))
        .merge(agent_proxy::routes())
        .fallback(not_found)
        .route(guard::LOGIN_PATH, get(login))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::guard,
        ))
        .with_state(app)
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// `GET /login?token=…`: trades the operator token for an HttpOnly,
/// same-site-strict cookie and goes to `/`.
async fn login(State(app): State<App>, Query(query): Query<LoginQuery>) -> Response {
    use axum::http::HeaderValue;
    let token = app.coord.settings.operator_token.as_str();
    let given = query.token.unwrap_or_default();
    if !guard::same_secret(&given, token) {
        return (StatusCode::FORBIDDEN, "wrong operator token").into_response();
    }
    let cookie = format!(
        "{}={given}; HttpOnly; SameSite=Strict; Path=/",
        guard::COOKIE
    );
    let mut response = (StatusCode::SEE_OTHER, "logged in").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/"));
    response
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

async fn index() -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(hive_web::DASHBOARD_HTML),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match hive_web::asset(&file) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset.body,
        )
            .into_response(),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(Outcome::failed("no such page or endpoint")),
    )
        .into_response()
}

/// The body of every action's answer, and of every error.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    pub fn done() -> Self {
        Self {
            ok: true,
            error: None,
        }
    }

    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
        }
    }
}

/// A name from a URL or body, validated before it touches anything.
fn agent_name(name: &str) -> Result<AgentName, Error> {
    AgentName::parse(name).map_err(|e| Error::refused(e.to_string()))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

/// `GET /api/logs/{name}?lines=N`: the container's last lines.
async fn logs(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, Error> {
    let name = agent_name(&name)?;
    let lines = app
        .coord
        .lifecycle
        .logs(&name, query.lines.unwrap_or(200).min(10_000))
        .await?;
    Ok(Json(serde_json::json!({ "name": name, "lines": lines })))
}

/// `GET /api/config/{name}`: the deployed config (`agent.toml` as core
/// reads it, re-serialized) and role prompt.
async fn config(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, Error> {
    let name = agent_name(&name)?;
    crate::status::require_agent(&app.coord.store, &name)?;
    let repos = app.coord.configs.repos().clone();
    let deployed = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || repos.deployed(&name))
            .await
            .map_err(|e| Error::Internal(format!("config task failed: {e}")))?
            .map_err(|e| Error::refused(e.to_string()))?
    };
    let agent_toml = toml::to_string(&deployed.config)
        .map_err(|e| Error::Internal(format!("render agent.toml: {e}")))?;
    Ok(Json(serde_json::json!({
        "name": name,
        "sha": deployed.sha,
        "agent_toml": agent_toml,
        "prompt": deployed.prompt,
    })))
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (status_of(&self), Json(Outcome::failed(self.to_string()))).into_response()
    }
}

/// The HTTP status of an error, by its kind: the client's mistake (4xx)
/// or core's failure (5xx), never one flattened into the other.
fn status_of(e: &Error) -> StatusCode {
    use hive_config::Error as C;
    use hive_runtime::Error as R;
    use hive_store::Error as S;

    use crate::safe_fs::FsError;
    match e {
        Error::UnknownAgent(_)
        | Error::Store(S::NotFound { .. })
        | Error::Config(C::CommitNotFound { .. } | C::NoRepo { .. } | C::NoTag { .. })
        | Error::Runtime(R::NoSuchContainer(_)) => StatusCode::NOT_FOUND,
        Error::Refused(_)
        | Error::NoRuntime { .. }
        | Error::Config(
            C::AmbiguousCommit { .. }
            | C::InvalidConfig { .. }
            | C::EmptyRepo { .. }
            | C::TagConflict(_),
        )
        | Error::Runtime(R::Foreign { .. })
        | Error::Fs(
            FsError::Planted { .. } | FsError::NotADirectory { .. } | FsError::Outside { .. },
        ) => StatusCode::CONFLICT,
        Error::Store(S::Sqlite(_))
        | Error::Config(C::Git { .. } | C::Io { .. } | C::Mirror { .. })
        | Error::Runtime(R::Failed(_) | R::Io { .. })
        | Error::Fs(FsError::Io { .. })
        | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Runtime(R::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Store(_) | Error::Config(C::BadCommitRef(_)) => StatusCode::BAD_REQUEST,
        Error::BadGateway(_) => StatusCode::BAD_GATEWAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_up_to_the_status_code() {
        let git = Error::from(hive_config::Error::Git {
            context: "open the applied repo".into(),
            message: "corrupt".into(),
        });
        assert_eq!(status_of(&git), StatusCode::INTERNAL_SERVER_ERROR, "{git}");
        let bad = Error::from(hive_config::Error::BadCommitRef("zz".into()));
        assert_eq!(status_of(&bad), StatusCode::BAD_REQUEST);
        let planted = Error::from(crate::safe_fs::FsError::Planted {
            path: "/state/agents/x".into(),
            component: "x".into(),
        });
        assert_eq!(status_of(&planted), StatusCode::CONFLICT);
        let gone = Error::from(hive_runtime::Error::NoSuchContainer(
            hive_proto::AgentName::parse("coder").unwrap(),
        ));
        assert_eq!(status_of(&gone), StatusCode::NOT_FOUND);
        // The message is the crate's own, not rewrapped.
        assert_eq!(git.to_string(), "open the applied repo: corrupt");
    }
}
