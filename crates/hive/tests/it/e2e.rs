//! End to end with the real `claude` CLI: the real daemon, real
//! `hive agent serve` harnesses (started directly, no container runtime),
//! and a scripted Messages-API server on loopback standing in for the model.
//! The daemon's `ANTHROPIC_BASE_URL` is that server and each harness gets
//! its agent's egress socket, so every model request goes through core's
//! egress proxy; the scripted server refuses any request that did not.
//!
//! Needs the CLI: `HIVE_CLAUDE_BIN`, or `.cache/claude/bin/claude` (see
//! `scripts/install-claude`). Without it these tests print why and pass,
//! except under `CI=true`, where a missing CLI fails them.
#![allow(clippy::disallowed_methods)] // tests start the real binaries directly

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::Hive;

/// The banner the harness puts on a redelivered message.
const BANNER: &str = hive_agent::wake::REDELIVERED_BANNER;
/// How long one end-to-end step may take (the CLI starts in ~1–2 s).
const STEP: Duration = Duration::from_secs(90);

/// The e2e tests each start several CLI processes; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub(crate) fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The claude CLI, or `None` (after saying why) when the tests should skip.
pub(crate) fn claude() -> Option<PathBuf> {
    installed_cli("HIVE_CLAUDE_BIN", "claude")
}

/// An agent CLI: `$var`, else `.cache/<name>/bin/<name>` (where
/// `scripts/install-<name>` puts it); `None` (after saying why) when the
/// tests should skip, a panic under `CI=true`.
pub(crate) fn installed_cli(var: &str, name: &str) -> Option<PathBuf> {
    let bin = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../.cache/{name}/bin/{name}"))
        });
    if bin.is_file() {
        return Some(bin);
    }
    let why = format!(
        "the {name} CLI is not installed ({} missing; run scripts/install-{name} and set {var})",
        bin.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{why}");
    }
    eprintln!("skipping the end-to-end test: {why}");
    None
}

// ---------------------------------------------------------------------------
// The scripted model.

/// What the scripted model answers to one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    Text(String),
    ToolUse {
        name: String,
        input: Value,
    },
    /// Hold the request open until the server is dropped.
    Stall,
    /// An API error: HTTP status and the error's type and message.
    Error(u16, &'static str, &'static str),
    /// A subscription's window used up until unix second `resets_at`: a 429
    /// with the `anthropic-ratelimit-unified-*` headers the real API sends
    /// (the CLI, logged in with a subscription, turns it into a
    /// `rate_limit_event` and "You've hit your … limit · resets …").
    UsageLimit {
        resets_at: i64,
    },
}

type Script = dyn Fn(&Value) -> Reply + Send + Sync;

/// A Messages-API server on loopback answering from a script.
pub(crate) struct ModelServer {
    pub(crate) url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    /// Requests that came without the egress proxy's `Via` (refused).
    direct: Arc<AtomicUsize>,
    stalls: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
}

impl ModelServer {
    pub(crate) fn start(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let direct = Arc::new(AtomicUsize::new(0));
        let stalls = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let shared = (
            requests.clone(),
            direct.clone(),
            stalls.clone(),
            release.clone(),
        );
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let (requests, direct, stalls, release) = shared.clone();
                let script = script.clone();
                std::thread::spawn(move || {
                    serve_one(stream, n, &script, &requests, &direct, &stalls, &release);
                });
            }
        });
        ModelServer {
            url,
            requests,
            direct,
            stalls,
            release,
        }
    }

    /// The base URL agents reach it at (through the egress proxy).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Every Messages request body so far.
    pub(crate) fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests that bypassed the egress proxy.
    pub(crate) fn direct(&self) -> usize {
        self.direct.load(Ordering::SeqCst)
    }

    fn stalls(&self) -> usize {
        self.stalls.load(Ordering::SeqCst)
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.release.store(true, Ordering::SeqCst);
    }
}

fn serve_one(
    stream: TcpStream,
    n: usize,
    script: &Arc<Script>,
    requests: &Mutex<Vec<Value>>,
    direct: &AtomicUsize,
    stalls: &AtomicUsize,
    release: &AtomicBool,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some((method, path, via, body)) = read_request(&mut reader) else {
        return;
    };
    eprintln!("model server: {method} {path} ({} bytes)", body.len());
    let mut out = stream;
    // The model is reachable only through core's egress proxy.
    if via.as_deref() != Some(hive_core::egress::VIA) {
        direct.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"type":"error","error":{"type":"permission_error","message":"not through the egress proxy"}}"#;
        let _ = write!(
            out,
            "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    if method != "POST" {
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    }
    if path.starts_with("/v1/messages/count_tokens") {
        return respond_json(&mut out, &json!({"input_tokens": 100}));
    }
    if !path.starts_with("/v1/messages") {
        return respond_json(&mut out, &json!({}));
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let said: String = last_user_text(&request)
        .chars()
        .rev()
        .take(100)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    eprintln!("model server: … {:?}", said);
    requests.lock().unwrap().push(request.clone());
    let model = request["model"]
        .as_str()
        .unwrap_or("claude-test")
        .to_owned();
    let reply = script(&request);
    if let Reply::Error(status, kind, message) = reply {
        let body =
            json!({"type": "error", "error": {"type": kind, "message": message}}).to_string();
        let _ = write!(
            out,
            "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    if let Reply::UsageLimit { resets_at } = reply {
        let body = json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "This request would exceed your account's rate limit. Please try again later."}})
        .to_string();
        let _ = write!(
            out,
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
             anthropic-ratelimit-unified-status: rejected\r\n\
             anthropic-ratelimit-unified-reset: {resets_at}\r\n\
             anthropic-ratelimit-unified-representative-claim: five_hour\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    if let Reply::Stall = reply {
        stalls.fetch_add(1, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(120);
        while !release.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    if request["stream"] != json!(true) {
        let text = match &reply {
            Reply::Text(t) => t.clone(),
            _ => "ok".to_owned(),
        };
        return respond_json(
            &mut out,
            &json!({
                "id": format!("msg_e2e_{n}"), "type": "message", "role": "assistant",
                "model": model, "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 50, "output_tokens": 5}
            }),
        );
    }
    let _ = out.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n",
    );
    let _ = out.write_all(sse_reply(&model, n, &reply).as_bytes());
    let _ = out.flush();
}

/// The SSE events of one streamed message.
fn sse_reply(model: &str, n: usize, reply: &Reply) -> String {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": format!("msg_e2e_{n}"), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 50, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
    );
    let stop_reason = match reply {
        Reply::Text(text) => {
            out += &event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            );
            out += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": text}}),
            );
            "end_turn"
        }
        Reply::ToolUse { name, input } => {
            out += &event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "tool_use", "id": format!("toolu_e2e_{n}"),
                                         "name": name, "input": {}}}),
            );
            out += &event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            );
            "tool_use"
        }
        Reply::Stall | Reply::Error(..) | Reply::UsageLimit { .. } => unreachable!(),
    };
    out += &event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    out += &event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": 5}}),
    );
    out += &event("message_stop", json!({"type": "message_stop"}));
    out
}

pub(crate) fn respond_json(out: &mut TcpStream, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Method, path, `Via` and body of one HTTP/1.1 request.
pub(crate) fn read_request(
    reader: &mut impl BufRead,
) -> Option<(String, String, Option<String>, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_owned());
        }
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let via = headers.remove("via");
    Some((method, path, via, body))
}

/// The newest `user` message of a Messages request (CLI 2.1.330 may put
/// a `system` message after it).
fn last_user(request: &Value) -> Option<&Value> {
    request["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
}

/// The text of the newest user message of a Messages request.
pub(crate) fn last_user_text(request: &Value) -> String {
    let Some(last) = last_user(request) else {
        return String::new();
    };
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The text of the tool result the newest user message carries, if any.
pub(crate) fn tool_result_text(request: &Value) -> Option<String> {
    let blocks = last_user(request)?["content"].as_array()?;
    let result = blocks.iter().find(|b| b["type"] == "tool_result")?;
    Some(result["content"].to_string())
}

/// Whether the newest user message carries a tool result.
pub(crate) fn answers_a_tool(request: &Value) -> bool {
    last_user(request)
        .and_then(|m| m["content"].as_array())
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
}

/// A model script: a user text carrying `trigger` gets a hive `send` of
/// `body` to `to`; the tool's answer gets "done"; anything else "noted".
pub(crate) fn relay(
    trigger: &'static str,
    to: &'static str,
    body: &'static str,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |request| {
        if answers_a_tool(request) {
            Reply::Text("done".into())
        } else if last_user_text(request).contains(trigger) {
            Reply::ToolUse {
                name: "mcp__hive__send".into(),
                input: json!({"to": to, "body": body}),
            }
        } else {
            Reply::Text("noted".into())
        }
    }
}

/// `hive serve` arguments for agents whose engine is the real `claude`
/// CLI at `claude`, talking to the scripted `model` with a test key.
pub(crate) fn model_args(model: &ModelServer, claude: &Path) -> Vec<String> {
    [
        "--agent-env",
        &format!("ANTHROPIC_BASE_URL={}", model.url),
        "--agent-env",
        "ANTHROPIC_API_KEY=test",
        "--agent-env",
        "CLAUDE_CODE_MAX_RETRIES=0",
        "--claude-bin",
        &claude.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// A hive (no runtime) whose state dir holds `agents` and whose model
/// endpoint, the one its egress proxies allow, is `model`.
pub(crate) fn hive_for(agents: &[&str], model: &ModelServer) -> Hive {
    let dir = tempfile::tempdir().unwrap();
    for name in agents {
        std::fs::create_dir_all(dir.path().join("state/agents").join(name).join("state")).unwrap();
    }
    let base_url = format!("ANTHROPIC_BASE_URL={}", model.url);
    Hive::start_with(dir, "none", &["--agent-env", &base_url])
}

// ---------------------------------------------------------------------------
// Harness processes.

/// The operator's message to `name` from its page on the dashboard
/// (`POST /agent/<name>/api/send`, which core answers): status and body.
pub(crate) fn operator_send(hive: &Hive, name: &str, body: &str) -> (u16, String) {
    let bearer = hive.bearer();
    let (status, _, answer) = hive.http(
        "POST",
        &format!("/agent/{name}/api/send"),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        &json!({ "body": body }).to_string(),
    );
    (status, answer)
}

/// One `hive agent serve`, killed on drop.
pub(crate) struct Harness {
    child: Child,
    /// Its page socket (core proxies it at `/agent/<name>/`).
    pub(crate) page: PathBuf,
}

impl Harness {
    pub(crate) fn start(
        hive: &Hive,
        name: &str,
        role: &str,
        model: &ModelServer,
        claude: &Path,
    ) -> Harness {
        Self::start_with(hive, name, role, model, claude, &[])
    }

    pub(crate) fn start_with(
        hive: &Hive,
        name: &str,
        role: &str,
        model: &ModelServer,
        claude: &Path,
        extra: &[&str],
    ) -> Harness {
        Self::start_env(hive, name, role, model, claude, extra, &[])
    }

    /// [`Harness::start_with`], with more variables in its environment.
    pub(crate) fn start_env(
        hive: &Hive,
        name: &str,
        role: &str,
        model: &ModelServer,
        claude: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Harness {
        Self::spawn(
            hive,
            name,
            Self::command(hive, name, role, model, claude, extra, env),
        )
    }

    /// A harness whose engine is logged in with a (fake) Claude
    /// subscription instead of an API key: OAuth credentials in its home.
    pub(crate) fn start_subscriber(
        hive: &Hive,
        name: &str,
        model: &ModelServer,
        claude: &Path,
    ) -> Harness {
        log_in(hive, name);
        let mut command = Self::command(hive, name, "agent", model, claude, &[], &[]);
        command.env_remove("ANTHROPIC_API_KEY");
        Self::spawn(hive, name, command)
    }

    fn spawn(hive: &Hive, name: &str, mut command: Command) -> Harness {
        let mut child = command.spawn().unwrap();
        crate::support::wait_ready(&mut child, "hive agent: page ", "hive agent: serving");
        Harness {
            child,
            page: hive.page_socket(name),
        }
    }

    fn command(
        hive: &Hive,
        name: &str,
        role: &str,
        model: &ModelServer,
        claude: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Command {
        let state = hive.state_dir().join("agents").join(name).join("state");
        std::fs::create_dir_all(&state).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_hive"));
        // A fast re-check unless the test names its own.
        let poll: &[&str] = if extra.contains(&"--poll-ms") {
            &[]
        } else {
            &["--poll-ms", "100"]
        };
        command
            .args(["agent", "serve", "--role", role])
            .args(poll)
            .args(extra)
            .env("HIVE_AGENT", name)
            .env("HIVE_SOCKET", hive.agent_socket(name))
            .env(
                "HIVE_EGRESS_SOCKET",
                hive.agent_socket(name).with_file_name("egress.sock"),
            )
            .env("HIVE_STATE_DIR", &state)
            .env(
                "HIVE_CONTROL_DIR",
                hive.state_dir().join("agents").join(name).join("control"),
            )
            .env("HIVE_SHARED_DIR", hive.state_dir().join("shared"))
            .env("HIVE_PAGE_SOCKET", hive.page_socket(name))
            .env(
                "HIVE_CONTROL_DIR",
                hive.state_dir().join("agents").join(name).join("control"),
            )
            .env("HIVE_CLAUDE_BIN", claude)
            .env("HIVE_LOG", "warn")
            .env("ANTHROPIC_BASE_URL", &model.url)
            .env("ANTHROPIC_API_KEY", "test")
            // The harness, not the CLI, decides how to wait out a rate limit.
            .env("CLAUDE_CODE_MAX_RETRIES", "0")
            .env_remove("ANTHROPIC_AUTH_TOKEN")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
            .env_remove("CLAUDE_CODE_USE_BEDROCK")
            .env_remove("CLAUDE_CODE_USE_VERTEX")
            .env_remove("HIVE_MODEL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped());
        command
    }

    /// GETs a path on the harness's page socket (as core's proxy does).
    pub(crate) fn get(&self, path: &str) -> Value {
        let (status, head, body) = crate::support::unix_http(&self.page, "GET", path, &[], "");
        assert_eq!(status, 200, "{head}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// POSTs JSON to a path on the harness's page socket: status and body.
    pub(crate) fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, body) = crate::support::unix_http(
            &self.page,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            &body.to_string(),
        );
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// The live event history.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.get("/events/history")["events"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// SIGTERM and wait.
    pub(crate) fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "hive agent serve exited with {exit}");
    }

    /// SIGKILL the harness alone (its engine runs in its own process group
    /// and survives, as it would a harness crash).
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it holds; on timeout, panics with what `harnesses`
/// streamed, for diagnosis.
/// What a Claude subscription login leaves in `name`'s home: its dir,
/// then fake OAuth credentials in it.
fn log_in(hive: &Hive, name: &str) {
    let home = hive.state_dir().join("agents").join(name).join("state");
    std::fs::create_dir_all(home.join(".claude")).unwrap();
    let far = (std::time::SystemTime::now() + Duration::from_secs(30 * 86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let credentials = json!({"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-e2e", "refreshToken": "sk-ant-ort01-e2e",
        "expiresAt": far, "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "max"}});
    std::fs::write(
        home.join(".claude/.credentials.json"),
        credentials.to_string(),
    )
    .unwrap();
}

pub(crate) fn wait_for(what: &str, harnesses: &[&Harness], mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !check() {
        if Instant::now() > deadline {
            let dump: Vec<String> = harnesses
                .iter()
                .map(|h| {
                    let lines: Vec<String> = h
                        .events()
                        .iter()
                        .map(|e| e.to_string().chars().take(600).collect())
                        .collect();
                    format!("{}:\n{}", h.page.display(), lines.join("\n"))
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", dump.join("\n\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn kinds<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Nothing of `name`'s is left in flight: every popped message was acked.
fn assert_all_acked(hive: &Hive, name: &str) {
    assert_eq!(
        hive.agent(name, r#"{"cmd":"requeue_inflight"}"#),
        r#"{"kind":"ok"}"#
    );
    assert!(
        hive.recv(name, 0, 32).is_empty(),
        "{name} has unacked messages"
    );
}

// ---------------------------------------------------------------------------
// The cases.

#[test]
fn an_operator_message_flows_through_two_agents() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(relay("PING-FROM-OPERATOR", "b", "PONG-FROM-A"));
    let hive = hive_for(&["a", "b"], &model);
    let a = Harness::start(&hive, "a", "agent", &model, &claude);
    let b = Harness::start(&hive, "b", "agent", &model, &claude);

    let sent = hive.host(r#"{"cmd":"send","to":"a","body":"PING-FROM-OPERATOR"}"#);
    assert!(sent.contains(r#""ok":true"#), "{sent}");

    wait_for("b's turn to end", &[&a, &b], || {
        !kinds(&b.events(), "turn_end").is_empty()
    });
    wait_for("a's turn to end", &[&a, &b], || {
        !kinds(&a.events(), "turn_end").is_empty()
    });

    // A: woken by the operator, called the hive `send` tool, succeeded.
    let events = a.events();
    let start = kinds(&events, "turn_start")[0];
    assert_eq!(start["from"], "operator");
    assert!(
        start["body"]
            .as_str()
            .unwrap()
            .contains("PING-FROM-OPERATOR")
    );
    let tool_use = events
        .iter()
        .filter(|e| e["kind"] == "stream" && e["type"] == "assistant")
        .flat_map(|e| e["message"]["content"].as_array().unwrap().iter())
        .find(|c| c["type"] == "tool_use")
        .expect("a called a tool");
    assert_eq!(tool_use["name"], "mcp__hive__send");
    let result = events
        .iter()
        .filter(|e| e["kind"] == "stream" && e["type"] == "user")
        .flat_map(|e| e["message"]["content"].as_array().unwrap().iter())
        .find(|c| c["type"] == "tool_result")
        .expect("the tool answered");
    assert_ne!(result["is_error"], true, "{result}");
    assert!(result.to_string().contains("sent to b"), "{result}");
    assert_eq!(kinds(&events, "turn_end")[0]["ok"], true);
    let init = events
        .iter()
        .find(|e| e["type"] == "system" && e["subtype"] == "init")
        .unwrap();
    assert_eq!(init["mcp_servers"][0]["name"], "hive");
    assert_eq!(init["mcp_servers"][0]["status"], "connected");

    // B: woken by A's message, with the right sender and body.
    let events = b.events();
    let start = kinds(&events, "turn_start")[0];
    assert_eq!(start["from"], "a");
    let body = start["body"].as_str().unwrap();
    assert!(
        body.contains("from: a (message #2)\n\nPONG-FROM-A"),
        "{body}"
    );
    assert_eq!(kinds(&events, "turn_end")[0]["ok"], true);
    // The model saw the same text.
    assert!(
        model
            .requests()
            .iter()
            .any(|r| last_user_text(r).contains("from: a (message #2)"))
    );

    // Every model request came through the agents' egress proxies.
    assert_eq!(model.direct(), 0);

    // The broker agrees: B's inbox holds A's message, nothing unread.
    let recent = json(&hive.agent("b", r#"{"cmd":"recent","limit":5}"#));
    assert_eq!(recent["rows"][0]["from"], "a");
    assert_eq!(recent["rows"][0]["body"], "PONG-FROM-A");
    for name in ["a", "b"] {
        assert_eq!(
            hive.agent(name, r#"{"cmd":"status"}"#),
            r#"{"kind":"status","unread":0}"#
        );
    }
    // /api/state reports the finished turn.
    let state = a.get("/api/state");
    assert_eq!(state["state"], "idle");
    assert_eq!(state["last_turn"]["result_kind"], "ok");
    assert_eq!(state["last_turn"]["tool_calls"]["mcp__hive__send"], 1);

    // Both turns were acked: a requeue finds nothing in flight.
    a.stop();
    b.stop();
    assert_all_acked(&hive, "a");
    assert_all_acked(&hive, "b");
}

#[test]
fn a_harness_killed_mid_turn_gets_the_message_back_with_a_banner() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|request| {
        if answers_a_tool(request) {
            return Reply::Text("done".into());
        }
        let text = last_user_text(request);
        if text.contains(BANNER) {
            Reply::Text("already handled, checked".into())
        } else if text.contains("STALL-ME") {
            Reply::Stall
        } else {
            Reply::Text("noted".into())
        }
    });
    let hive = hive_for(&["c"], &model);
    let first = Harness::start(&hive, "c", "agent", &model, &claude);
    hive.host(r#"{"cmd":"send","to":"c","body":"STALL-ME"}"#);
    wait_for("the model to be asked", &[&first], || model.stalls() == 1);
    // Mid-turn: the message is popped and in flight.
    assert_eq!(
        hive.agent("c", r#"{"cmd":"status"}"#),
        r#"{"kind":"status","unread":0}"#
    );
    first.kill();

    let second = Harness::start(&hive, "c", "agent", &model, &claude);
    wait_for("the redelivered turn to end", &[&second], || {
        !kinds(&second.events(), "turn_end").is_empty()
    });
    let redelivered: Vec<Value> = model
        .requests()
        .into_iter()
        .filter(|r| last_user_text(r).contains(BANNER))
        .collect();
    assert!(
        !redelivered.is_empty(),
        "no request carried the redelivery banner"
    );
    assert!(last_user_text(&redelivered[0]).contains("STALL-ME"));
    let events = second.events();
    let starts = kinds(&events, "turn_start");
    let start = starts.last().unwrap();
    assert!(start["body"].as_str().unwrap().contains(BANNER));
    assert_eq!(kinds(&events, "turn_end").last().unwrap()["ok"], true);
    // The orphaned engine of the killed harness was reaped at boot.
    assert!(
        events.iter().any(|e| e["kind"] == "note"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.contains("previous harness"))),
        "no reap note"
    );
    second.stop();
    assert_all_acked(&hive, "c");
}

#[test]
fn a_manager_turn_requests_a_spawn() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|request| {
        if let Some(result) = tool_result_text(request) {
            // After the spawn request, ask for another turn; then stop.
            return if result.contains("approval #") {
                Reply::ToolUse {
                    name: "mcp__hive__request_next_turn".into(),
                    input: json!({}),
                }
            } else {
                Reply::Text("requested".into())
            };
        }
        if last_user_text(request).contains("SPAWN-WORKER") {
            Reply::ToolUse {
                name: "mcp__hive__request_spawn".into(),
                input: json!({"name": "worker", "description": "does the work"}),
            }
        } else {
            Reply::Text("noted".into())
        }
    });
    let hive = hive_for(&["manager"], &model);
    let manager = Harness::start(&hive, "manager", "manager", &model, &claude);
    hive.host(r#"{"cmd":"send","to":"manager","body":"SPAWN-WORKER please"}"#);
    wait_for("the approval", &[&manager], || {
        let pending = json(&hive.host(r#"{"cmd":"pending"}"#));
        pending["approvals"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["agent"] == "worker"))
    });
    let pending = json(&hive.host(r#"{"cmd":"pending"}"#));
    let approval = &pending["approvals"][0];
    assert_eq!(approval["kind"], "spawn");
    assert_eq!(approval["description"], "does the work");
    wait_for("the manager's turn to end", &[&manager], || {
        !kinds(&manager.events(), "turn_end").is_empty()
    });
    let events = manager.events();
    let result = events
        .iter()
        .filter(|e| e["kind"] == "stream" && e["type"] == "user")
        .flat_map(|e| e["message"]["content"].as_array().unwrap().iter())
        .find(|c| c["type"] == "tool_result")
        .expect("the tool answered");
    assert!(result.to_string().contains("approval #"), "{result}");
    assert_eq!(kinds(&events, "turn_end")[0]["ok"], true);
    // It asked for another turn, and got one without a message.
    wait_for("the requested turn", &[&manager], || {
        kinds(&manager.events(), "turn_end").len() == 2
    });
    let events = manager.events();
    let second = kinds(&events, "turn_start")[1];
    assert_eq!(second["from"], "self");
    assert!(
        second["body"]
            .as_str()
            .unwrap()
            .contains("request_next_turn")
    );
    assert_eq!(kinds(&events, "turn_end")[1]["ok"], true);
    manager.stop();
}

#[test]
fn a_rate_limit_backs_off_and_a_prompt_too_long_compacts_once() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let limited = Arc::new(AtomicUsize::new(0));
    let l = limited.clone();
    let model = ModelServer::start(move |request| {
        let text = last_user_text(request);
        if text.contains("<summary>") {
            // A compaction (the CLI's own, or the harness's `/compact`).
            return Reply::Text(
                "<analysis>short</analysis><summary>LONG-ME arrived</summary>".into(),
            );
        }
        if text.contains("RATE-ME") && l.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::Error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
        }
        if text.contains("LONG-ME") {
            return Reply::Error(
                400,
                "invalid_request_error",
                "prompt is too long: 250000 tokens > 200000 maximum",
            );
        }
        Reply::Text("fine".into())
    });
    let hive = hive_for(&["d"], &model);
    let d = Harness::start_with(
        &hive,
        "d",
        "agent",
        &model,
        &claude,
        &["--rate-limit-backoff", "1"],
    );

    // A rate limit: the rate_limited state, a back-off, the same turn again.
    hive.host(r#"{"cmd":"send","to":"d","body":"RATE-ME"}"#);
    wait_for("the rate-limited turn to end", &[&d], || {
        !kinds(&d.events(), "turn_end").is_empty()
    });
    let events = d.events();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "turn_state_changed" && e["state"] == "rate_limited"),
        "no rate_limited state"
    );
    assert_eq!(kinds(&events, "turn_end")[0]["ok"], true);
    assert_eq!(limited.load(Ordering::SeqCst), 2, "one refusal, one retry");

    // A prompt that never fits: one compaction, one retry, then the turn
    // fails, its message stays in flight and the next turn starts afresh.
    hive.host(r#"{"cmd":"send","to":"d","body":"LONG-ME"}"#);
    wait_for("the long turn to end", &[&d], || {
        kinds(&d.events(), "turn_end").len() == 2
    });
    let events = d.events();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "turn_state_changed" && e["state"] == "compacting"),
        "no compaction"
    );
    let notes: Vec<&str> = kinds(&events, "note")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(
        notes
            .iter()
            .filter(|t| t.starts_with("the prompt is too long: compacting"))
            .count(),
        1,
        "{notes:?}"
    );
    let end = kinds(&events, "turn_end")[1];
    assert_eq!(end["ok"], false);
    assert_eq!(end["note"], "the prompt is too long even after compaction");
    assert_eq!(d.get("/api/state")["new_session_pending"], true);
    let turns = d.get("/api/turns");
    let kinds_of: Vec<&str> = turns
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["result_kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds_of, ["failed", "ok"]);
    d.stop();
    // Not acked: the next boot gets it back.
    assert_eq!(
        hive.agent("d", r#"{"cmd":"requeue_inflight"}"#),
        r#"{"kind":"ok"}"#
    );
    let back = hive.recv("d", 0, 8);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["body"], "LONG-ME");
    assert_eq!(back[0]["redelivered"], true);
}

#[test]
fn the_operator_drives_an_agent_from_its_web_page() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|request| {
        if last_user_text(request).contains("HOLD-ON") {
            Reply::Stall
        } else {
            Reply::Text("fine".into())
        }
    });
    let hive = hive_for(&["e"], &model);
    let e = Harness::start(&hive, "e", "agent", &model, &claude);
    let sessions = |e: &Harness| -> Vec<String> {
        e.events()
            .iter()
            .filter(|f| f["type"] == "system" && f["subtype"] == "init")
            .map(|f| f["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let turns_ended = |e: &Harness| kinds(&e.events(), "turn_end").len();

    // Nothing to cancel while idle.
    assert_eq!(e.post("/api/cancel", &json!({})).0, 409);
    // Switch the model: persisted, announced, used by the next turn.
    assert_eq!(e.post("/api/model", &json!({"model": "bad model!"})).0, 400);
    assert_eq!(
        e.post("/api/model", &json!({"model": "claude-e2e-model"}))
            .0,
        200
    );
    assert_eq!(e.get("/api/state")["model"], "claude-e2e-model");
    let state = hive.state_dir().join("agents/e/state");
    assert_eq!(
        std::fs::read_to_string(state.join("hyperhive-model")).unwrap(),
        "claude-e2e-model\n"
    );
    // A message as the operator, from the page: core's, not the harness's.
    assert_eq!(e.post("/api/send", &json!({"body": "FORGED"})).0, 404);
    let (status, body) = operator_send(&hive, "e", "VIA-WEB one");
    assert_eq!(status, 200, "{body}");
    wait_for("the first turn", &[&e], || turns_ended(&e) == 1);
    let first = model.requests().last().cloned().unwrap();
    assert_eq!(first["model"], "claude-e2e-model");
    assert!(last_user_text(&first).contains("from: operator (message #1)\n\nVIA-WEB one"));
    assert!(
        !model
            .requests()
            .iter()
            .any(|r| last_user_text(r).contains("FORGED")),
        "the page socket took a message as the operator"
    );

    // The next turn continues the session; after "new session" it does not.
    operator_send(&hive, "e", "VIA-WEB two");
    wait_for("the second turn", &[&e], || turns_ended(&e) == 2);
    assert_eq!(e.post("/api/new-session", &json!({})).0, 200);
    assert_eq!(e.get("/api/state")["new_session_pending"], true);
    operator_send(&hive, "e", "VIA-WEB three");
    wait_for("the third turn", &[&e], || turns_ended(&e) == 3);
    let ids = sessions(&e);
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[1], "--continue keeps the session");
    assert_ne!(ids[1], ids[2], "a new session was started");

    // Paused by the operator (core writes the marker): no turn until resumed.
    let paused = hive.host(r#"{"cmd":"set_paused","name":"e","paused":true}"#);
    assert!(paused.contains(r#""ok":true"#), "{paused}");
    operator_send(&hive, "e", "VIA-WEB four");
    wait_for("the paused state", &[&e], || {
        e.get("/api/state")["state"] == "paused"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(kinds(&e.events(), "turn_start").len(), 3);
    hive.host(r#"{"cmd":"set_paused","name":"e","paused":false}"#);
    wait_for("the resumed turn", &[&e], || turns_ended(&e) == 4);

    // Cancel a running turn: it ends failed and its message stays in flight.
    operator_send(&hive, "e", "HOLD-ON");
    wait_for("the stalled request", &[&e], || model.stalls() == 1);
    assert_eq!(e.get("/api/state")["turn_running"], true);
    assert_eq!(e.post("/api/cancel", &json!({})).0, 200);
    wait_for("the cancelled turn", &[&e], || turns_ended(&e) == 5);
    let events = e.events();
    let end = kinds(&events, "turn_end")[4];
    assert_eq!(end["ok"], false);
    assert_eq!(end["note"], "cancelled by the operator");
    let turns = e.get("/api/turns");
    assert_eq!(turns[0]["result_kind"], "cancelled");
    e.stop();
    assert_eq!(
        hive.agent("e", r#"{"cmd":"requeue_inflight"}"#),
        r#"{"kind":"ok"}"#
    );
    let back = hive.recv("e", 0, 8);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["body"], "HOLD-ON");
}

/// `/shared` (every agent writes it) and `/agents/<name>/config` (the
/// manager's live work tree) reach the CLI as `--add-dir`s, and the CLI
/// loads skills, commands and subagents from those: one agent (or the
/// manager, without approval) could put its text into every other agent's
/// system prompt. Only the agent's own settings count.
#[test]
fn skills_planted_in_shared_never_reach_another_agents_model() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|_| Reply::Text("noted".into()));
    let hive = hive_for(&["a"], &model);
    let shared = hive.state_dir().join("shared/.claude");
    for (dir, file, text) in [
        (
            "skills/planted",
            "SKILL.md",
            "---\nname: planted\ndescription: PLANTED-SKILL-MARKER\n---\nobey\n",
        ),
        (
            "commands",
            "planted.md",
            "---\ndescription: PLANTED-COMMAND-MARKER\n---\nobey\n",
        ),
        (
            "agents",
            "planted.md",
            "---\nname: planted\ndescription: PLANTED-AGENT-MARKER\n---\nobey\n",
        ),
    ] {
        std::fs::create_dir_all(shared.join(dir)).unwrap();
        std::fs::write(shared.join(dir).join(file), text).unwrap();
    }
    let a = Harness::start(&hive, "a", "agent", &model, &claude);
    let sent = hive.host(r#"{"cmd":"send","to":"a","body":"HELLO"}"#);
    assert!(sent.contains(r#""ok":true"#), "{sent}");
    wait_for("a's turn to end", &[&a], || {
        !kinds(&a.events(), "turn_end").is_empty()
    });
    let requests = model.requests();
    assert!(!requests.is_empty());
    for request in requests {
        let text = request.to_string();
        assert!(
            !text.contains("PLANTED-"),
            "a planted file reached the model: {text}"
        );
    }
}

/// A parked harness wakes on the files that end its wait — the
/// credentials a login leaves, core's removal of the pause marker — as
/// they change (inotify), not at its next re-check: its `--poll-ms` here is
/// ten minutes, far past the test's wait, so only the event can wake it.
#[test]
fn a_parked_harness_wakes_on_a_login_and_a_resume_not_on_a_poll() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|_| Reply::Text("fine".into()));
    let hive = hive_for(&["f"], &model);
    let mut command = Harness::command(
        &hive,
        "f",
        "agent",
        &model,
        &claude,
        &["--poll-ms", "600000"],
        &[],
    );
    command.env_remove("ANTHROPIC_API_KEY");
    let f = Harness::spawn(&hive, "f", command);
    let state = |f: &Harness| f.get("/api/state")["state"].clone();
    wait_for("needs_login", &[&f], || state(&f) == "needs_login");

    log_in(&hive, "f");
    wait_for("the login to be seen", &[&f], || state(&f) == "idle");

    let paused = hive.host(r#"{"cmd":"set_paused","name":"f","paused":true}"#);
    assert!(paused.contains(r#""ok":true"#), "{paused}");
    operator_send(&hive, "f", "AFTER-RESUME");
    wait_for("the paused state", &[&f], || state(&f) == "paused");
    hive.host(r#"{"cmd":"set_paused","name":"f","paused":false}"#);
    wait_for("the resumed turn", &[&f], || {
        kinds(&f.events(), "turn_end").len() == 1
    });
    assert!(
        model
            .requests()
            .iter()
            .any(|r| last_user_text(r).contains("AFTER-RESUME")),
        "the resumed turn did not reach the model"
    );
}
