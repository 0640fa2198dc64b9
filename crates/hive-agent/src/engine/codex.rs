//! The `codex` engine (the Codex CLI, `codex-cli` 0.147.0 checked):
//! `codex exec --json --skip-git-repo-check
//! --dangerously-bypass-approvals-and-sandbox -c <provider…> -c
//! <mcp_servers…> [-c developer_instructions=<role>] [--add-dir <dir>…] -m
//! <model> [resume --last] -`, prompt on stdin, cwd and HOME the state dir
//! (so its sessions live in `<state>/.codex`).
//!
//! The model endpoint is a provider of our own (`model_providers.hive`,
//! `wire_api = "responses"`) at the agent environment's `OPENAI_BASE_URL`
//! (default [`DEFAULT_BASE_URL`]): the CLI ignores the variable itself, and
//! the built-in provider first tries a websocket at the same URL. Retries
//! are off (`request_max_retries = 0`): the harness decides how to wait
//! out a rate limit. The key is `OPENAI_API_KEY` (`env_key`); without it,
//! the credentials of `codex login` (`<state>/.codex/auth.json`).
//!
//! Approvals and codex's own sandbox are bypassed: the container is the
//! sandbox, and `codex exec` otherwise cancels every MCP tool call. Its
//! JSON events are mapped to the shared vocabulary in
//! [`super::codex_events`].

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::codex_events::{self, UsageLedger};
use super::{Engine, EngineRequest, RunKind, Verdict};
use crate::process::{CommandSpec, Io};
use crate::stream::{Observation, ParseError, StreamEvent};

/// The endpoint when the agent environment names none.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
/// The variable naming the endpoint (read by the harness, not the CLI).
pub const BASE_URL_ENV: &str = "OPENAI_BASE_URL";
/// The variable holding the API key (read by the CLI, `env_key`).
pub const API_KEY_ENV: &str = "OPENAI_API_KEY";
/// The login: one line from the operator, to `codex login --with-api-key`
/// (`$0` is the codex binary).
const LOGIN_SCRIPT: &str = "printf 'Paste an OpenAI API key (codex keeps it in ~/.codex/auth.json) > '; \
     IFS= read -r key || exit 1; printf '%s\\n' \"$key\" | exec \"$0\" login --with-api-key";

/// The provider id the harness configures.
const PROVIDER: &str = "hive";

/// The Codex CLI.
#[derive(Debug)]
pub struct Codex {
    bin: PathBuf,
    base_url: String,
    /// Set for every run on top of the harness's environment (the egress
    /// proxy).
    env: Vec<(String, String)>,
    usage: UsageLedger,
}

impl Codex {
    /// `base_url`: the agent environment's `OPENAI_BASE_URL`, if any.
    pub fn new(bin: impl Into<PathBuf>, base_url: Option<String>) -> Self {
        Self {
            bin: bin.into(),
            base_url: base_url
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
            env: Vec::new(),
            usage: UsageLedger::default(),
        }
    }

    /// Adds variables every run (turns and logins) gets.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env.extend(env);
        self
    }

    fn base(&self, state_dir: &Path) -> CommandSpec {
        let mut spec = CommandSpec::new(&self.bin);
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        spec = spec.env("HOME", state_dir.display().to_string());
        spec.cwd = Some(state_dir.to_owned());
        spec.stdin = Io::Piped;
        spec.stdout = Io::Piped;
        spec.stderr = Io::Piped;
        spec.own_group = true;
        spec
    }

    /// `-c` overrides of the model provider.
    fn provider(&self) -> Vec<String> {
        let key = |k: &str, v: String| format!("model_providers.{PROVIDER}.{k}={v}");
        let mut out = vec![
            format!("model_provider={}", toml_str(PROVIDER)),
            key("name", toml_str(PROVIDER)),
            key("base_url", toml_str(&self.base_url)),
            key("wire_api", toml_str("responses")),
            key("supports_websockets", "false".into()),
            key("request_max_retries", "0".into()),
            key("stream_max_retries", "0".into()),
        ];
        if has_api_key(|k| std::env::var(k).ok()) {
            out.push(key("env_key", toml_str(API_KEY_ENV)));
        } else {
            out.push(key("requires_openai_auth", "true".into()));
        }
        out
    }
}

fn has_api_key(env: impl Fn(&str) -> Option<String>) -> bool {
    env(API_KEY_ENV).is_some_and(|v| !v.trim().is_empty())
}

impl Engine for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }

    fn auth_env(&self) -> &'static [&'static str] {
        &[API_KEY_ENV]
    }

    fn credentials_file(&self, home: &Path) -> PathBuf {
        credentials_file(home)
    }

    fn program(&self) -> &Path {
        &self.bin
    }

    fn command(&self, req: &EngineRequest<'_>) -> CommandSpec {
        self.usage.open(req.state_dir);
        let mut spec = self.base(req.state_dir).args([
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
        ]);
        let mut overrides = self.provider();
        overrides.extend(mcp_overrides(
            &req.mcp.servers,
            &req.mcp.allowed_tools,
            req.kind,
        ));
        if let Some(role) = req.role_prompt.filter(|r| !r.is_empty()) {
            overrides.push(format!("developer_instructions={}", toml_str(role)));
        }
        for o in overrides {
            spec = spec.arg("-c").arg(o);
        }
        for dir in req.extra_dirs {
            spec = spec.arg("--add-dir").arg(dir.display().to_string());
        }
        spec = spec.arg("-m").arg(req.model);
        if req.continue_session {
            spec = spec.args(["resume", "--last"]);
        }
        spec.arg("-")
    }

    /// Never run: [`Engine::can_compact`] is false.
    fn compact_prompt(&self) -> String {
        String::new()
    }

    fn can_compact(&self) -> bool {
        false
    }

    fn parse(&self, line: &str) -> Result<(StreamEvent, Value), ParseError> {
        codex_events::parse_line(line, &self.usage)
    }

    fn verdict(&self, obs: &Observation, exit_ok: bool) -> Verdict {
        verdict(obs, exit_ok)
    }

    fn credentials(&self, home: &Path) -> Result<String, String> {
        probe(home, |key| std::env::var(key).ok())
    }

    /// `codex login --with-api-key`, fed the one line the operator pastes
    /// on the agent page: it writes `<state>/.codex/auth.json`, which the
    /// next run uses (`requires_openai_auth`). The CLI reads the key to
    /// EOF and the page keeps the pipe open, so a shell reads the line and
    /// hands it over; the key is never an argument. (`codex login
    /// --device-auth`, the ChatGPT sign-in, needs `auth.openai.com`, which
    /// the default `"model"` egress refuses.)
    fn login_command(&self, state_dir: &Path) -> Option<CommandSpec> {
        let mut spec = self.base(state_dir);
        spec.program = PathBuf::from("sh");
        Some(spec.args(["-c", LOGIN_SCRIPT, &self.bin.display().to_string()]))
    }
}

/// Where `codex login` leaves the credentials (HOME is the state dir).
pub fn credentials_file(home: &Path) -> PathBuf {
    home.join(".codex/auth.json")
}

/// `Ok(where the credentials come from)` or `Err(what is missing)`.
pub fn probe(home: &Path, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let file = credentials_file(home);
    super::find_credentials(&[API_KEY_ENV], &file, env).ok_or_else(|| {
        format!(
            "no credentials: set {API_KEY_ENV} in the agent's environment, or log in (codex \
             login) so that {} exists",
            file.display()
        )
    })
}

/// The `-c` overrides that give codex the MCP servers: `mcpServers`-shaped
/// entries (`command`, `args`, `env`) as `mcp_servers.<name>.*`; a server
/// other than the hive's gets only the tools `allowed` names
/// (`mcp__<name>__<tool>`, or `mcp__<name>` for all of them) as
/// `enabled_tools`. A compaction run gets none.
fn mcp_overrides(
    servers: &serde_json::Map<String, Value>,
    allowed: &[String],
    kind: RunKind,
) -> Vec<String> {
    if kind == RunKind::Compact {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, server) in servers {
        let key = |k: &str, v: String| format!("mcp_servers.{}.{k}={v}", toml_key(name));
        let command = server["command"].as_str().unwrap_or_default();
        out.push(key("command", toml_str(command)));
        let args: Vec<String> = server["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(toml_str).collect())
            .unwrap_or_default();
        out.push(key("args", format!("[{}]", args.join(", "))));
        if let Some(env) = server["env"].as_object().filter(|e| !e.is_empty()) {
            let pairs: Vec<String> = env
                .iter()
                .filter_map(|(k, v)| Some(format!("{} = {}", toml_key(k), toml_str(v.as_str()?))))
                .collect();
            out.push(key("env", format!("{{{}}}", pairs.join(", "))));
        }
        if name != crate::mcp::SERVER_NAME {
            let all = format!("mcp__{name}");
            if !allowed.contains(&all) {
                let prefix = format!("mcp__{name}__");
                let tools: Vec<String> = allowed
                    .iter()
                    .filter_map(|t| t.strip_prefix(&prefix))
                    .map(toml_str)
                    .collect();
                out.push(key("enabled_tools", format!("[{}]", tools.join(", "))));
            }
        }
    }
    out
}

/// A TOML basic string (JSON's escapes are TOML's, and serde_json never
/// writes `\/`).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_owned()
    } else {
        toml_str(k)
    }
}

/// Classifies a codex run from its `turn.completed`/`turn.failed` line
/// (mapped to a result, see [`codex_events`]) and exit status. Messages
/// as codex-cli 0.147.0 prints them: `exceeded retry limit, last status:
/// 429 Too Many Requests`; `Codex ran out of room in the model's context
/// window…` (or the API's `context_length_exceeded` body); `unexpected
/// status 401 Unauthorized: …`; ``Missing environment variable:
/// `OPENAI_API_KEY`.``
pub fn verdict(obs: &Observation, exit_ok: bool) -> Verdict {
    let result = obs.result.as_ref();
    if let Some(r) = result
        && !r.is_error
        && exit_ok
    {
        return Verdict::Ok;
    }
    let text = result.and_then(|r| r.result.clone()).unwrap_or_default();
    let lower = text.to_lowercase();
    if mentions_status(&lower, "429")
        || lower.contains("too many requests")
        || lower.contains("rate limit")
        || lower.contains("usage limit")
        || lower.contains("quota")
        || lower.contains("503 service unavailable")
    {
        return Verdict::RateLimited(text);
    }
    if lower.contains("context window") || lower.contains("context_length_exceeded") {
        return Verdict::PromptTooLong;
    }
    if mentions_status(&lower, "401")
        || lower.contains("unauthorized")
        || lower.contains("missing environment variable")
        || lower.contains("invalid api key")
        || lower.contains("invalid_api_key")
        || lower.contains("not logged in")
    {
        return Verdict::NeedsLogin(text);
    }
    match result {
        None if exit_ok => Verdict::Failed("the engine exited without a result".into()),
        None => Verdict::Failed("the engine failed without a result".into()),
        Some(r) if !r.is_error => Verdict::Failed(format!("the engine exited non-zero: {text}")),
        Some(_) if text.is_empty() => Verdict::Failed("engine error".into()),
        Some(_) => Verdict::Failed(text),
    }
}

/// Whether `text` names the HTTP status `code` as a number of its own: not
/// inside a longer number, and not a port (codex ends its errors with the
/// request's `url: http://127.0.0.1:42925/…`, whose port held `429`).
fn mentions_status(text: &str, code: &str) -> bool {
    text.match_indices(code).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == ':' || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::McpSetup;

    /// A status is read as a number of its own, never from a port or a
    /// longer number in the message.
    #[test]
    fn a_status_is_not_read_from_a_port() {
        let failed = |text: &str| {
            let mut obs = Observation::default();
            obs.result = Some(crate::stream::ResultEvent {
                is_error: true,
                result: Some(text.to_owned()),
                ..Default::default()
            });
            obs
        };
        let login = "unexpected status 401 Unauthorized: Incorrect API key provided, \
                     url: http://127.0.0.1:42925/v1/responses";
        assert!(matches!(
            verdict(&failed(login), false),
            Verdict::NeedsLogin(_)
        ));
        let rate = "exceeded retry limit, last status: 429 Too Many Requests, \
                    url: http://127.0.0.1:40139/v1/responses";
        assert!(matches!(
            verdict(&failed(rate), false),
            Verdict::RateLimited(_)
        ));
        assert!(!mentions_status("url: http://10.0.0.1:4290/x", "429"));
        assert!(!mentions_status("request 14290 failed", "429"));
        assert!(mentions_status("status 429", "429"));
        assert!(mentions_status("429 too many", "429"));
    }

    fn observe(engine: &Codex, text: &str) -> Observation {
        let mut obs = Observation::default();
        for line in text.lines() {
            obs.observe(&engine.parse(line).unwrap().0);
        }
        obs
    }

    /// Outcomes of runs recorded from codex-cli 0.147.0 against a scripted
    /// Responses API (fixtures/codex-0.147.0-*.jsonl).
    #[test]
    fn verdicts_of_recorded_runs() {
        let engine = Codex::new("/usr/bin/codex", None);
        let ok = observe(
            &engine,
            include_str!("../../fixtures/codex-0.147.0-tool-turn.jsonl"),
        );
        assert_eq!(verdict(&ok, true), Verdict::Ok);
        assert_eq!(
            ok.session_id.as_deref(),
            Some("01a226c5-3ab0-7702-ba2a-d8e8535767a8")
        );
        assert_eq!(ok.tool_calls.get("mcp__hive__send"), Some(&1));
        assert_eq!(ok.total_usage.input_tokens, 160);
        assert_eq!(ok.total_usage.cache_read_input_tokens, 40);
        assert_eq!(ok.total_usage.output_tokens, 14);
        assert!(matches!(verdict(&ok, false), Verdict::Failed(_)));
        let cases = [
            ("codex-0.147.0-error-429.jsonl", "rate"),
            ("codex-0.147.0-error-401.jsonl", "login"),
            ("codex-0.147.0-error-no-key.jsonl", "login"),
            ("codex-0.147.0-error-context.jsonl", "long"),
            ("codex-0.147.0-error-context-400.jsonl", "long"),
        ];
        for (file, want) in cases {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fixtures")
                .join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            let got = verdict(&observe(&engine, &text), false);
            let ok = match want {
                "rate" => matches!(got, Verdict::RateLimited(_)),
                "login" => matches!(got, Verdict::NeedsLogin(_)),
                _ => got == Verdict::PromptTooLong,
            };
            assert!(ok, "{file}: {got:?}");
        }
        assert!(matches!(
            verdict(&Observation::default(), false),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn command_line() {
        let mut mcp = McpSetup::default();
        mcp.servers.insert(
            "hive".into(),
            serde_json::json!({"command": "/bin/hive", "args": ["agent", "mcp"],
                               "env": {"HIVE_SOCKET": "/run/hive/mcp.sock"}}),
        );
        mcp.servers.insert(
            "search".into(),
            serde_json::json!({"command": "/bin/search", "args": [], "env": {}}),
        );
        mcp.allowed_tools = vec!["mcp__hive__send".into(), "mcp__search__query".into()];
        let dir = tempfile::tempdir().unwrap();
        let engine = Codex::new("/usr/bin/codex", Some("http://127.0.0.1:9/v1".into()))
            .with_env(crate::egress::proxy_env("127.0.0.1:4567".parse().unwrap()));
        let req = EngineRequest {
            kind: RunKind::Turn,
            prompt: "hi",
            model: "gpt-5-codex",
            continue_session: true,
            role_prompt: Some("be \"nice\"\n"),
            mcp: &mcp,
            state_dir: dir.path(),
            extra_dirs: &[PathBuf::from("/shared")],
        };
        let spec = engine.command(&req);
        assert_eq!(spec.program, Path::new("/usr/bin/codex"));
        let args = spec.args.join(" ");
        for want in [
            "exec --json --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox -c model_provider=\"hive\"",
            "-c model_providers.hive.base_url=\"http://127.0.0.1:9/v1\"",
            "-c model_providers.hive.supports_websockets=false",
            "-c model_providers.hive.request_max_retries=0",
            "-c mcp_servers.hive.command=\"/bin/hive\" -c mcp_servers.hive.args=[\"agent\", \"mcp\"] -c mcp_servers.hive.env={HIVE_SOCKET = \"/run/hive/mcp.sock\"}",
            "-c mcp_servers.search.enabled_tools=[\"query\"]",
            "-c developer_instructions=\"be \\\"nice\\\"\\n\"",
            "--add-dir /shared -m gpt-5-codex resume --last -",
        ] {
            assert!(args.contains(want), "{want}\n in {args}");
        }
        assert!(!args.contains("mcp_servers.hive.enabled_tools"), "{args}");
        assert_eq!(spec.args.last().map(String::as_str), Some("-"));
        assert_eq!(spec.env_value("HOME"), dir.path().to_str());
        assert_eq!(spec.env_value("HTTPS_PROXY"), Some("http://127.0.0.1:4567"));
        assert!(spec.own_group);
        // A new session: no resume.
        let fresh = engine.command(&EngineRequest {
            continue_session: false,
            ..req
        });
        assert!(!fresh.args.iter().any(|a| a == "resume"));
        let login = engine.login_command(dir.path()).unwrap();
        assert_eq!(login.args[2], "/usr/bin/codex");
        assert_eq!(login.env_value("http_proxy"), Some("http://127.0.0.1:4567"));
    }

    #[test]
    fn credentials_from_the_key_or_a_login() {
        let dir = tempfile::tempdir().unwrap();
        let key = |k: &str| (k == API_KEY_ENV).then(|| "sk-x".to_owned());
        assert_eq!(probe(dir.path(), key).unwrap(), "$OPENAI_API_KEY");
        let why = probe(dir.path(), |_| None).unwrap_err();
        assert!(why.contains("OPENAI_API_KEY"), "{why}");
        std::fs::create_dir_all(dir.path().join(".codex")).unwrap();
        std::fs::write(
            dir.path().join(".codex/auth.json"),
            r#"{"OPENAI_API_KEY":"k"}"#,
        )
        .unwrap();
        assert!(probe(dir.path(), |_| None).unwrap().ends_with("auth.json"));
    }

    /// The login from the agent page with the real CLI (`HIVE_CODEX_BIN`,
    /// or `.cache/codex/bin/codex`): the operator's pasted line becomes
    /// codex's stored key, and the credentials probe passes.
    #[tokio::test]
    async fn the_page_login_stores_the_pasted_key_with_the_real_cli() {
        let bin = std::env::var_os("HIVE_CODEX_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/codex/bin/codex")
            });
        if !bin.is_file() {
            assert!(
                std::env::var("CI").is_err(),
                "no codex CLI at {} (scripts/install-codex)",
                bin.display()
            );
            eprintln!("skipping: no codex CLI at {}", bin.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shared = crate::state::Shared::new(
            "a".into(),
            crate::Role::Agent,
            dir.path().to_owned(),
            crate::client::SocketClient::new(dir.path().join("none.sock")),
            "gpt-test".into(),
        );
        shared
            .login
            .set_engine(std::sync::Arc::new(Codex::new(&bin, None)));
        shared.start_login().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let view = loop {
            let view = shared.login.view().unwrap();
            if view
                .lines
                .iter()
                .any(|l| l.contains("Paste an OpenAI API key"))
            {
                break view;
            }
            assert!(std::time::Instant::now() < deadline, "{view:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(view.running);
        shared
            .login
            .send_line("sk-pasted-on-the-page")
            .await
            .unwrap();
        let view = loop {
            let view = shared.login.view().unwrap();
            if !view.running && view.exit.is_some() {
                break view;
            }
            assert!(std::time::Instant::now() < deadline, "{view:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let exit = view.exit.clone().unwrap();
        assert!(exit.success && exit.logged_in, "{view:?}");
        let auth = std::fs::read_to_string(dir.path().join(".codex/auth.json")).unwrap();
        assert!(auth.contains("sk-pasted-on-the-page"), "{auth}");
        assert!(
            !view.lines.iter().any(|l| l.contains("sk-pasted")),
            "the key is never shown"
        );
        assert!(probe(dir.path(), |_| None).is_ok());
    }
}
