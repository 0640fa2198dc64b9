//! The `claude` engine (Claude Code):
//! `claude --print --output-format stream-json --verbose --mcp-config <json>
//! --strict-mcp-config --setting-sources user --allowedTools <list>
//! [--continue] --model <m>
//! [--append-system-prompt <role>] [--add-dir <dir>…]`, prompt on stdin,
//! cwd and HOME the state dir.

use std::path::{Path, PathBuf};

use super::{Engine, EngineRequest, Verdict};
use crate::process::{CommandSpec, Io};
use crate::stream::Observation;

/// Environment defaults set when the harness's own environment lacks them.
pub const ENV_DEFAULTS: &[(&str, &str)] = &[
    // No telemetry, update checks or other calls beyond the Messages API.
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    // Otherwise MCP tools may be deferred behind a tool-search tool.
    ("ENABLE_TOOL_SEARCH", "false"),
];

/// The claude CLI.
#[derive(Debug, Clone)]
pub struct Claude {
    bin: PathBuf,
    /// Set for every run on top of the defaults (the egress proxy).
    env: Vec<(String, String)>,
}

impl Claude {
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            env: Vec::new(),
        }
    }

    /// Adds variables every run (turns and logins) gets, over the
    /// harness's own environment.
    pub fn with_env(mut self, env: Vec<(String, String)>) -> Self {
        self.env.extend(env);
        self
    }
}

impl Engine for Claude {
    fn name(&self) -> &'static str {
        "claude"
    }

    fn auth_env(&self) -> &'static [&'static str] {
        CLAUDE_AUTH_ENV
    }

    fn credentials_file(&self, home: &Path) -> PathBuf {
        credentials_file(home)
    }

    fn program(&self) -> &Path {
        &self.bin
    }

    fn command(&self, req: &EngineRequest<'_>) -> CommandSpec {
        let mut spec = CommandSpec::new(&self.bin).args([
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
        ]);
        // Variadic options (`--mcp-config`, `--allowedTools`, `--add-dir`)
        // are each followed by another option; the prompt goes to stdin, so
        // no positional argument can be swallowed by them.
        spec = spec
            .arg("--mcp-config")
            .arg(req.mcp.config_json())
            .arg("--strict-mcp-config")
            // The agent's own settings only (HOME is its state dir): the CLI
            // loads skills, commands and subagents from every `--add-dir`
            // under the project source, and those dirs are others' to write
            // (`/shared`: every agent; `/agents/<name>/config`: the
            // manager's live work tree, not yet approved).
            .arg("--setting-sources")
            .arg("user");
        if !req.mcp.allowed_tools.is_empty() {
            spec = spec
                .arg("--allowedTools")
                .arg(req.mcp.allowed_tools.join(","));
        }
        for dir in req.extra_dirs {
            spec = spec.arg("--add-dir").arg(dir.display().to_string());
        }
        if req.continue_session {
            spec = spec.arg("--continue");
        }
        if let Some(role) = req.role_prompt {
            spec = spec.arg("--append-system-prompt").arg(role);
        }
        spec = spec.arg("--model").arg(req.model);
        for (key, value) in ENV_DEFAULTS {
            if std::env::var_os(key).is_none() {
                spec = spec.env(*key, *value);
            }
        }
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        spec = spec.env("HOME", req.state_dir.display().to_string());
        spec.cwd = Some(req.state_dir.to_owned());
        spec.stdin = Io::Piped;
        spec.stdout = Io::Piped;
        spec.stderr = Io::Piped;
        spec.own_group = true;
        spec
    }

    fn compact_prompt(&self) -> String {
        "/compact".to_owned()
    }

    fn verdict(&self, obs: &Observation, exit_ok: bool) -> Verdict {
        verdict(obs, exit_ok)
    }

    fn credentials(&self, home: &Path) -> Result<String, String> {
        probe(home, |key| std::env::var(key).ok())
    }

    /// `claude auth login` (Claude subscription by default). With pipes it
    /// prints `If the browser didn't open, visit:` and the authorize URL,
    /// then `Paste code here if prompted > ` (no newline) and reads the
    /// code from stdin; success leaves `~/.claude/.credentials.json`.
    fn login_command(&self, state_dir: &Path) -> Option<CommandSpec> {
        let mut spec = CommandSpec::new(&self.bin).args(["auth", "login"]);
        for (key, value) in ENV_DEFAULTS {
            if std::env::var_os(key).is_none() {
                spec = spec.env(*key, *value);
            }
        }
        for (key, value) in &self.env {
            spec = spec.env(key, value);
        }
        spec = spec.env("HOME", state_dir.display().to_string());
        spec.cwd = Some(state_dir.to_owned());
        spec.stdin = Io::Piped;
        spec.stdout = Io::Piped;
        spec.stderr = Io::Piped;
        spec.own_group = true;
        Some(spec)
    }
}

/// Classifies a claude run (shared by tests).
pub fn verdict(obs: &Observation, exit_ok: bool) -> Verdict {
    let result = obs.result.as_ref();
    let text = result.and_then(|r| r.result.clone()).unwrap_or_default();
    if let Some(r) = result
        && !r.is_error
        && exit_ok
    {
        return Verdict::Ok;
    }
    let status = obs.api_error_status;
    let error = obs.api_error.as_deref();
    let lower = text.to_lowercase();
    // A plan's window used up: the CLI says when it resets.
    if let Some(resets_at) = obs.usage_limit_resets_at {
        return Verdict::Quota {
            resets_at,
            message: or(text, "usage limit reached"),
        };
    }
    if error == Some("rate_limit")
        || matches!(status, Some(429 | 529))
        || lower.contains("rate limit")
        || lower.contains("usage limit")
        || lower.contains("overloaded")
    {
        return Verdict::RateLimited(or(text, "rate limited"));
    }
    if result.and_then(|r| r.terminal_reason.as_deref()) == Some("prompt_too_long")
        || lower.starts_with("prompt is too long")
    {
        return Verdict::PromptTooLong;
    }
    if error == Some("authentication_failed")
        || matches!(status, Some(401))
        || lower.contains("not logged in")
        || lower.contains("invalid api key")
    {
        return Verdict::NeedsLogin(or(text, "authentication failed"));
    }
    match result {
        None if exit_ok => Verdict::Failed("the engine exited without a result".into()),
        None => Verdict::Failed("the engine failed without a result".into()),
        Some(r) if !r.is_error => Verdict::Failed(format!("the engine exited non-zero: {text}")),
        Some(r) => Verdict::Failed(or(text, &format!("engine error ({})", r.subtype))),
    }
}

fn or(text: String, fallback: &str) -> String {
    if text.is_empty() {
        fallback.to_owned()
    } else {
        text
    }
}

/// Environment variables that authenticate the claude CLI (or hand auth to
/// a cloud provider's own credentials).
pub const CLAUDE_AUTH_ENV: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
];

/// Where the CLI keeps an interactive login, relative to its HOME.
pub fn credentials_file(home: &Path) -> PathBuf {
    home.join(".claude").join(".credentials.json")
}

/// `Ok(where the credentials come from)` or `Err(what is missing)`.
pub fn probe(home: &Path, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let file = credentials_file(home);
    super::find_credentials(CLAUDE_AUTH_ENV, &file, env).ok_or_else(|| {
        format!(
            "no credentials: set ANTHROPIC_API_KEY (or another of {}) in the agent's environment, \
             or log in so that {} exists",
            CLAUDE_AUTH_ENV.join(", "),
            file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        assert!(probe(dir.path(), none).is_err());
        let key = |v: &str| (v == "ANTHROPIC_API_KEY").then(|| "sk-test".to_owned());
        assert_eq!(probe(dir.path(), key).unwrap(), "$ANTHROPIC_API_KEY");
        let empty = |_: &str| Some(" ".to_owned());
        assert!(probe(dir.path(), empty).is_err());
        std::fs::create_dir(dir.path().join(".claude")).unwrap();
        std::fs::write(credentials_file(dir.path()), r#"{"claudeAiOauth":{}}"#).unwrap();
        assert!(
            probe(dir.path(), none)
                .unwrap()
                .ends_with(".credentials.json")
        );
    }

    use crate::engine::{McpSetup, RunKind};
    use crate::stream::parse_line;

    fn observe(text: &str) -> Observation {
        let mut obs = Observation::default();
        for line in text.lines() {
            obs.observe(&parse_line(line).unwrap().0);
        }
        obs
    }

    #[test]
    fn verdicts_of_recorded_runs() {
        let ok = observe(include_str!(
            "../../fixtures/claude-2.1.330-tool-turn.jsonl"
        ));
        assert_eq!(verdict(&ok, true), Verdict::Ok);
        assert!(matches!(verdict(&ok, false), Verdict::Failed(_)));
        let login = observe(include_str!(
            "../../fixtures/claude-2.1.330-error-login.jsonl"
        ));
        assert_eq!(
            verdict(&login, false),
            Verdict::NeedsLogin("Not logged in · Please run /login".into())
        );
        let limited = observe(include_str!(
            "../../fixtures/claude-2.1.330-error-429.jsonl"
        ));
        assert!(matches!(verdict(&limited, false), Verdict::RateLimited(_)));
        // A subscription's window used up (CLI 2.1.332, OAuth credentials,
        // a 429 with `anthropic-ratelimit-unified-status: rejected`).
        let quota = observe(include_str!(
            "../../fixtures/claude-2.1.332-usage-limit.jsonl"
        ));
        assert_eq!(
            verdict(&quota, false),
            Verdict::Quota {
                resets_at: 1_795_953_864,
                message: "You've hit your 5-hour limit · resets 12:04pm (UTC)".into()
            }
        );
        let long = observe(include_str!(
            "../../fixtures/claude-2.1.330-error-long.jsonl"
        ));
        assert_eq!(verdict(&long, false), Verdict::PromptTooLong);
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
            serde_json::json!({"command": "/bin/hive", "args": ["agent", "mcp"]}),
        );
        mcp.allowed_tools = vec!["mcp__hive__send".into(), "mcp__hive__recv".into()];
        let engine = Claude::new("/usr/bin/claude");
        let req = EngineRequest {
            kind: RunKind::Turn,
            prompt: "hi",
            model: "sonnet",
            continue_session: true,
            role_prompt: Some("be nice"),
            mcp: &mcp,
            state_dir: Path::new("/state"),
            extra_dirs: &[PathBuf::from("/shared")],
        };
        let spec = engine.command(&req);
        assert_eq!(spec.program, Path::new("/usr/bin/claude"));
        assert_eq!(
            spec.args,
            [
                "--print",
                "--output-format",
                "stream-json",
                "--verbose",
                "--mcp-config",
                r#"{"mcpServers":{"hive":{"command":"/bin/hive","args":["agent","mcp"]}}}"#,
                "--strict-mcp-config",
                "--setting-sources",
                "user",
                "--allowedTools",
                "mcp__hive__send,mcp__hive__recv",
                "--add-dir",
                "/shared",
                "--continue",
                "--append-system-prompt",
                "be nice",
                "--model",
                "sonnet",
            ]
        );
        assert_eq!(spec.env_value("HOME"), Some("/state"));
        assert_eq!(spec.cwd.as_deref(), Some(Path::new("/state")));
        assert!(spec.own_group);
        assert_eq!(spec.env_value("HTTPS_PROXY"), None);
        // Behind the egress bridge, turns and logins get the proxy.
        let bridged = Claude::new("/usr/bin/claude")
            .with_env(crate::egress::proxy_env("127.0.0.1:4567".parse().unwrap()));
        let spec = bridged.command(&req);
        assert_eq!(spec.env_value("HTTPS_PROXY"), Some("http://127.0.0.1:4567"));
        assert_eq!(spec.env_value("NO_PROXY"), Some(""));
        let login = bridged.login_command(Path::new("/state")).unwrap();
        assert_eq!(login.env_value("http_proxy"), Some("http://127.0.0.1:4567"));
    }
}
