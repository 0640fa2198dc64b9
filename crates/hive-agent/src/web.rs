//! The per-agent web server (axum) on a unix socket: `/api/state`, the
//! live stream (`/events/stream` SSE, `/events/history` backfill), turn
//! stats, the inbox and loose ends (read through the agent socket), the
//! login probe and the engine's interactive login
//! (`/api/login/{start,session,input,cancel}`, [`crate::login::Logins`]),
//! and the controls (cancel, compact, model, new session, answering a
//! peer's question as this agent).
//!
//! It listens on `--page-socket` (in the page dir core reaches; in a
//! container `/run/hive/page/page.sock`), never on TCP. Core serves the
//! page itself and proxies everything else under `/agent/<name>/` on the
//! dashboard, behind the operator credential. The agent can reach this
//! socket too, from inside its container, so nothing here may do what the
//! agent could not already do with its own tools: a message *from the
//! operator* is core's (`POST /agent/<name>/api/send`), not this server's.
//! Every answer still carries the pages' security headers.

use std::convert::Infallible;
use std::path::Path as FsPath;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use hive_proto::live::TurnState;
use hive_proto::{AgentRequest, AgentResponse, InboxRow, LiveFrame, LooseEnd};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::state::{Shared, StateView};
use crate::stats::TurnRecord;

/// Frames `/events/history` returns unless asked for fewer.
const DEFAULT_HISTORY: usize = 2000;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/state", get(state))
        .route("/api/turns", get(turns))
        .route("/api/inbox", get(inbox))
        .route("/api/loose-ends", get(loose_ends))
        .route("/api/login", get(login))
        .route("/api/login/start", post(login_start))
        .route("/api/login/session", get(login_session))
        .route("/api/login/input", post(login_input))
        .route("/api/login/cancel", post(login_cancel))
        .route("/api/cancel", post(cancel))
        .route("/api/compact", post(compact))
        .route("/api/model", post(model))
        .route("/api/new-session", post(new_session))
        .route("/api/answer", post(answer))
        .route("/events/history", get(history))
        .route("/events/stream", get(stream))
        .fallback(not_found)
        .layer(axum::middleware::map_response(with_headers))
        .with_state(shared)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("web server stopped: {e}");
    }
}

/// Binds the page socket at `path`, replacing a stale one (the page dir
/// is this harness's own).
pub fn bind(path: &FsPath) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

/// An HTTP error: the one `IntoResponse` for failures.
#[derive(Debug)]
pub struct WebError {
    status: StatusCode,
    message: String,
}

impl WebError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "ok": false, "error": self.message })),
        )
            .into_response()
    }
}

#[derive(Debug, Serialize)]
struct Ok {
    ok: bool,
}

const OK: Json<Ok> = Json(Ok { ok: true });

async fn state(State(shared): State<Arc<Shared>>) -> Json<StateView> {
    Json(shared.view())
}

#[derive(Debug, Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn turns(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Vec<TurnRecord>>, WebError> {
    let Some(stats) = &shared.stats else {
        return Ok(Json(Vec::new()));
    };
    stats
        .recent(q.limit.unwrap_or(50).min(1000))
        .map(Json)
        .map_err(|e| WebError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn cancel(State(shared): State<Arc<Shared>>) -> Result<Json<Ok>, WebError> {
    if shared.cancel() {
        shared.bus.note("the operator cancelled the turn");
        Ok(OK)
    } else {
        Err(WebError::new(StatusCode::CONFLICT, "no turn is running"))
    }
}

#[derive(Debug, Deserialize)]
struct ModelBody {
    model: String,
}

async fn model(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<ModelBody>,
) -> Result<Json<Ok>, WebError> {
    shared
        .set_model(&body.model)
        .map(|()| OK)
        .map_err(|e| WebError::new(StatusCode::BAD_REQUEST, e))
}

async fn compact(State(shared): State<Arc<Shared>>) -> Json<Ok> {
    shared.request_compact();
    OK
}

async fn new_session(State(shared): State<Arc<Shared>>) -> Json<Ok> {
    shared.request_new_session();
    OK
}

#[derive(Debug, Deserialize)]
struct AnswerBody {
    id: i64,
    answer: String,
}

/// Answers, as this agent, a question a peer asked it (the operator's own
/// questions are answered on the dashboard, through the daemon).
async fn answer(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<AnswerBody>,
) -> Result<Json<Ok>, WebError> {
    if body.answer.trim().is_empty() {
        return Err(WebError::new(StatusCode::BAD_REQUEST, "empty answer"));
    }
    shared
        .client
        .call(&AgentRequest::Answer {
            id: body.id,
            answer: body.answer,
        })
        .await
        .map(|_| OK)
        .map_err(|e| match e {
            crate::Error::Refused(m) => WebError::new(StatusCode::BAD_REQUEST, m),
            e => WebError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        })
}

#[derive(Debug, Serialize)]
struct History {
    seq: u64,
    events: Vec<LiveFrame>,
}

async fn history(State(shared): State<Arc<Shared>>, Query(q): Query<LimitQuery>) -> Json<History> {
    let (seq, events) = shared.bus.history(q.limit.unwrap_or(DEFAULT_HISTORY));
    Json(History { seq, events })
}

async fn stream(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let frames = BroadcastStream::new(shared.bus.subscribe()).filter_map(|frame| {
        // A lagging client skips frames; it can refetch history.
        let frame = frame.ok()?;
        let data = serde_json::to_string(&frame).ok()?;
        Some(Ok(Event::default().id(frame.seq.to_string()).data(data)))
    });
    Sse::new(frames).keep_alive(KeepAlive::default())
}

/// The agent socket's answer to a read, or a 502.
async fn ask_socket(shared: &Shared, request: &AgentRequest) -> Result<AgentResponse, WebError> {
    shared.client.call(request).await.map_err(|e| match e {
        crate::Error::Refused(m) => WebError::new(StatusCode::BAD_GATEWAY, m),
        e => WebError::new(StatusCode::BAD_GATEWAY, e.to_string()),
    })
}

fn unexpected(answer: &AgentResponse) -> WebError {
    WebError::new(
        StatusCode::BAD_GATEWAY,
        format!("unexpected answer from the daemon: {answer:?}"),
    )
}

#[derive(Debug, Serialize)]
struct Inbox {
    rows: Vec<InboxRow>,
}

/// The last 50 messages addressed to this agent, newest first.
async fn inbox(State(shared): State<Arc<Shared>>) -> Result<Json<Inbox>, WebError> {
    match ask_socket(&shared, &AgentRequest::Recent { limit: 50 }).await? {
        AgentResponse::Recent { rows } => Ok(Json(Inbox { rows })),
        other => Err(unexpected(&other)),
    }
}

#[derive(Debug, Serialize)]
struct LooseEnds {
    agent: String,
    loose_ends: Vec<LooseEnd>,
    /// Where the operator answers questions and decides approvals
    /// (`HIVE_DASHBOARD_URL`, http(s) only), if the harness was told.
    #[serde(skip_serializing_if = "Option::is_none")]
    dashboard: Option<String>,
}

async fn loose_ends(State(shared): State<Arc<Shared>>) -> Result<Json<LooseEnds>, WebError> {
    match ask_socket(&shared, &AgentRequest::GetLooseEnds).await? {
        AgentResponse::LooseEnds { loose_ends } => Ok(Json(LooseEnds {
            agent: shared.agent.clone(),
            loose_ends,
            dashboard: std::env::var("HIVE_DASHBOARD_URL")
                .ok()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://")),
        })),
        other => Err(unexpected(&other)),
    }
}

#[derive(Debug, Serialize)]
struct Login {
    needs_login: bool,
    /// What the credentials probe found missing (the turn loop's note).
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<String>,
    /// Variables that authenticate the engine, any one of them.
    env: &'static [&'static str],
    /// Where an interactive login leaves its credentials.
    credentials_file: String,
    /// Whether the engine's own login can be driven from the page
    /// (`/api/login/start`).
    interactive: bool,
    /// `claude` or `codex`: the page words its help for it.
    engine: &'static str,
}

async fn login(State(shared): State<Arc<Shared>>) -> Json<Login> {
    let view = shared.view();
    let needs_login = view.state == TurnState::NeedsLogin;
    // Each engine words its own help; before the harness has chosen one,
    // the default engine's.
    let engine = shared
        .login
        .engine()
        .unwrap_or_else(|| Arc::new(crate::engine::claude::Claude::new("claude")));
    Json(Login {
        needs_login,
        missing: view.note.filter(|_| needs_login),
        env: engine.auth_env(),
        credentials_file: engine
            .credentials_file(&shared.state_dir)
            .display()
            .to_string(),
        interactive: shared.login.available(&shared.state_dir),
        engine: engine.name(),
    })
}

#[derive(Debug, Serialize)]
struct LoginSessionView {
    /// The current or last session; none before the first start.
    session: Option<crate::login::LoginView>,
}

/// Starts the engine's interactive login (replacing a running one).
async fn login_start(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<LoginSessionView>, WebError> {
    let view = shared
        .start_login()
        .map_err(|e| WebError::new(StatusCode::CONFLICT, e))?;
    Ok(Json(LoginSessionView {
        session: Some(view),
    }))
}

async fn login_session(State(shared): State<Arc<Shared>>) -> Json<LoginSessionView> {
    Json(LoginSessionView {
        session: shared.login.view(),
    })
}

#[derive(Debug, Deserialize)]
struct LoginInput {
    line: String,
}

/// One line (the code the browser shows) to the login's stdin.
async fn login_input(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<LoginInput>,
) -> Result<Json<Ok>, WebError> {
    shared
        .login
        .send_line(&body.line)
        .await
        .map(|()| OK)
        .map_err(|e| WebError::new(StatusCode::CONFLICT, e))
}

async fn login_cancel(State(shared): State<Arc<Shared>>) -> Result<Json<Ok>, WebError> {
    if shared.login.cancel() {
        shared.bus.note("the operator cancelled the login");
        Ok(OK)
    } else {
        Err(WebError::new(StatusCode::CONFLICT, "no login is running"))
    }
}

async fn not_found() -> Response {
    WebError::new(StatusCode::NOT_FOUND, "no such endpoint").into_response()
}

/// The pages' security headers on every answer.
async fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in hive_web::guard::RESPONSE_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One HTTP/1.1 request on the page socket; the status and the JSON body.
    async fn request(
        addr: &FsPath,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::UnixStream::connect(addr).await.unwrap();
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: page\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let status = answer[9..12].parse().unwrap();
        let json = answer.split_once("\r\n\r\n").unwrap().1;
        (status, serde_json::from_str(json).unwrap())
    }

    /// The login endpoints drive `claude auth login` (a fake CLI here:
    /// prints a URL and a prompt, reads the code, writes the credentials
    /// file, exits 0).
    #[tokio::test]
    async fn login_endpoints_drive_the_engine_login() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("claude");
        std::fs::write(
            &bin,
            "#!/bin/sh\n[ \"$1 $2\" = 'auth login' ] || exit 3\n\
             echo 'visit: https://claude.example/oauth'\nprintf 'Paste code here > '\n\
             read -r code\nmkdir -p \"$HOME/.claude\"\n\
             echo \"{\\\"claudeAiOauth\\\":\\\"$code\\\"}\" > \"$HOME/.claude/.credentials.json\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let shared = Shared::new(
            "a".into(),
            crate::Role::Agent,
            state.clone(),
            crate::client::SocketClient::new(dir.path().join("none.sock")),
            "sonnet".into(),
        );
        let socket = dir.path().join("page.sock");
        let listener = bind(&socket).unwrap();
        let addr = socket.as_path();
        tokio::spawn(serve(shared.clone(), listener, std::future::pending()));

        let (status, body) = request(addr, "POST", "/api/login/start", Some("{}")).await;
        assert_eq!(status, 409, "no engine yet: {body}");
        shared
            .login
            .set_engine(Arc::new(crate::engine::claude::Claude::new(&bin)));
        let (_, body) = request(addr, "GET", "/api/login", None).await;
        assert_eq!(body["interactive"], true);
        let (status, body) = request(addr, "GET", "/api/login/session", None).await;
        assert_eq!((status, &body["session"]), (200, &serde_json::Value::Null));
        let (status, body) =
            request(addr, "POST", "/api/login/input", Some(r#"{"line":"x"}"#)).await;
        assert_eq!(status, 409, "{body}");

        // Retried: exec of a just-written file can meet ETXTBSY while
        // another test thread forks.
        let mut attempt = 0;
        let (status, body) = loop {
            let (status, body) = request(addr, "POST", "/api/login/start", Some("{}")).await;
            attempt += 1;
            if status == 200 || attempt == 5 || !body.to_string().contains("busy") {
                break (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["session"]["running"], true);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, body) = request(addr, "GET", "/api/login/session", None).await;
            let lines = body["session"]["lines"].as_array().unwrap().clone();
            if lines.last().is_some_and(|l| l == "Paste code here > ") {
                assert_eq!(lines[0], "visit: https://claude.example/oauth");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let (status, body) = request(
            addr,
            "POST",
            "/api/login/input",
            Some(r#"{"line":"the-code"}"#),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let session = loop {
            let (_, body) = request(addr, "GET", "/api/login/session", None).await;
            if body["session"]["running"] == false {
                break body["session"].clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(session["exit"]["code"], 0, "{session}");
        assert_eq!(session["exit"]["logged_in"], true, "{session}");
        let creds =
            std::fs::read_to_string(crate::engine::claude::credentials_file(&state)).unwrap();
        assert!(creds.contains("the-code"));
        let (status, _) = request(addr, "POST", "/api/login/cancel", Some("{}")).await;
        assert_eq!(status, 409, "nothing runs");

        // What the agent must not do as the operator is not served here.
        let (status, _) = request(addr, "POST", "/api/send", Some(r#"{"body":"x"}"#)).await;
        assert_eq!(status, 404, "a message from the operator is core's");
        let (status, _) = request(addr, "GET", "/", None).await;
        assert_eq!(status, 404, "the page itself is core's");
    }
}
