//! The per-agent web server (axum): a minimal page, `/api/state`, the live
//! stream (`/events/stream` SSE, `/events/history` backfill) and the
//! operator's controls (cancel, model, new session, send).
//!
//! It binds loopback by default: its POST endpoints act as the operator
//! with no authentication, so exposing them beyond the host is a runtime's
//! explicit choice (`--web-bind 0.0.0.0` where a container has its own
//! network namespace and the port is published to the host's loopback).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use hive_proto::{AgentRequest, LiveFrame};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::state::{Shared, StateView};
use crate::stats::TurnRecord;

/// Frames `/events/history` returns unless asked for fewer.
const DEFAULT_HISTORY: usize = 2000;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/state", get(state))
        .route("/api/turns", get(turns))
        .route("/api/cancel", post(cancel))
        .route("/api/model", post(model))
        .route("/api/new-session", post(new_session))
        .route("/api/send", post(send))
        .route("/events/history", get(history))
        .route("/events/stream", get(stream))
        .with_state(shared)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!("web server stopped: {e}");
    }
}

/// Binds `addr`; the caller learns the real port from the listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
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

async fn new_session(State(shared): State<Arc<Shared>>) -> Json<Ok> {
    shared.request_new_session();
    OK
}

#[derive(Debug, Deserialize)]
struct SendBody {
    body: String,
}

async fn send(
    State(shared): State<Arc<Shared>>,
    Json(body): Json<SendBody>,
) -> Result<Json<Ok>, WebError> {
    if body.body.trim().is_empty() {
        return Err(WebError::new(StatusCode::BAD_REQUEST, "empty message"));
    }
    shared
        .client
        .call(&AgentRequest::OperatorMsg { body: body.body })
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

async fn index(State(shared): State<Arc<Shared>>) -> Html<String> {
    // The agent name is validated by core (`AgentName`: lowercase
    // alphanumerics and dashes); escape anyway.
    let name = shared
        .agent
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Html(PAGE.replace("{name}", &name))
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{name} · hyperhive</title>
<style>
body{font:14px ui-monospace,monospace;background:#1e1e2e;color:#cdd6f4;margin:1em}
#log{white-space:pre-wrap;border-left:2px solid #45475a;padding-left:.5em}
.note{color:#fab387}.turn{color:#89b4fa;margin-top:.6em}.err{color:#f38ba8}
button,input{font:inherit}
</style></head><body>
<h1>{name}</h1>
<p>state <b id="state">…</b> · model <b id="model">…</b> · ctx <b id="ctx">–</b>
 <button id="cancel">cancel turn</button> <button id="fresh">new session</button></p>
<form id="send"><input id="body" size="60" placeholder="message as operator"> <button>send</button></form>
<div id="log"></div>
<script>
const log=document.getElementById('log');let seen=0;
function row(cls,text){const d=document.createElement('div');d.className=cls;d.textContent=text;log.appendChild(d);}
function show(f){if(f.seq<=seen)return;seen=f.seq;
 if(f.kind==='turn_start')row('turn','▶ '+f.from+': '+f.body);
 else if(f.kind==='turn_end')row(f.ok?'turn':'turn err','■ turn '+(f.ok?'ok':'failed')+(f.note?' — '+f.note:''));
 else if(f.kind==='note')row('note','! '+f.text);
 else if(f.kind==='stream'){const m=f.message||{};(m.content||[]).forEach(c=>{
   if(c.type==='text')row('',c.text);else if(c.type==='tool_use')row('','→ '+c.name+' '+JSON.stringify(c.input));
   else if(c.type==='tool_result')row('','← '+(typeof c.content==='string'?c.content:JSON.stringify(c.content)));});
   if(f.type==='result')row('note','result: '+f.subtype);}
 else if(f.kind==='turn_state_changed')document.getElementById('state').textContent=f.state;
 else if(f.kind==='model_changed')document.getElementById('model').textContent=f.model;
 else if(f.kind==='token_usage_changed')document.getElementById('ctx').textContent=f.ctx.input_tokens+f.ctx.cache_read_input_tokens+f.ctx.cache_creation_input_tokens;}
const buf=[];let ready=false;const es=new EventSource('/events/stream');
es.onmessage=e=>{const f=JSON.parse(e.data);ready?show(f):buf.push(f);};
Promise.all([fetch('/api/state').then(r=>r.json()),fetch('/events/history').then(r=>r.json())]).then(([s,h])=>{
 document.getElementById('state').textContent=s.state;document.getElementById('model').textContent=s.model;
 h.events.forEach(show);seen=Math.max(seen,h.seq);ready=true;buf.forEach(show);});
const post=(u,b)=>fetch(u,{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify(b||{})});
document.getElementById('cancel').onclick=()=>post('/api/cancel');
document.getElementById('fresh').onclick=()=>post('/api/new-session');
document.getElementById('send').onsubmit=e=>{e.preventDefault();const b=document.getElementById('body');post('/api/send',{body:b.value});b.value='';};
</script></body></html>
"#;
