//! Engines: the agent CLIs a turn runs, behind one [`Engine`] trait.
//!
//! An engine turns a [`EngineRequest`] into a command line ([`CommandSpec`])
//! and its stdout lines into the shared [`StreamEvent`] vocabulary; the turn
//! runner ([`crate::turn`]) does the rest. Engines: `claude` (Claude Code)
//! and `codex` (the Codex CLI, `codex exec --json`), chosen per agent by
//! `engine` in its deployed `agent.toml` ([`from_name`]).

pub mod claude;
pub mod codex;
pub mod codex_events;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::process::CommandSpec;
use crate::stream::{Observation, ParseError, StreamEvent};

/// What kind of run this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// A turn on a wake prompt.
    Turn,
    /// Compact the session's context.
    Compact,
}

/// Everything an engine needs for one run.
#[derive(Debug, Clone)]
pub struct EngineRequest<'a> {
    pub kind: RunKind,
    /// Fed to the engine on stdin.
    pub prompt: &'a str,
    pub model: &'a str,
    /// Continue the previous session (false: start a new one).
    pub continue_session: bool,
    /// Appended to the engine's system prompt.
    pub role_prompt: Option<&'a str>,
    pub mcp: &'a McpSetup,
    /// Working directory and HOME.
    pub state_dir: &'a Path,
    /// More directories the engine's file tools may touch.
    pub extra_dirs: &'a [PathBuf],
}

/// The MCP servers the engine starts and the tools it may call unasked.
#[derive(Debug, Clone, Default)]
pub struct McpSetup {
    /// `mcpServers` object: server name → `{command, args, env}`.
    pub servers: serde_json::Map<String, Value>,
    /// Fully-qualified tool names (`mcp__hive__send`, `Bash`, …).
    pub allowed_tools: Vec<String>,
}

impl McpSetup {
    /// The `--mcp-config` JSON.
    pub fn config_json(&self) -> String {
        serde_json::json!({ "mcpServers": self.servers }).to_string()
    }
}

/// How a run ended, as far as the turn loop cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The context no longer fits: compact and retry.
    PromptTooLong,
    /// Rate limit (or overload): back off and retry.
    RateLimited(String),
    /// A subscription's usage window is used up until `resets_at` (unix
    /// seconds): park until then, spending nothing, and run the turn again.
    Quota {
        resets_at: i64,
        message: String,
    },
    /// No credentials, or bad ones.
    NeedsLogin(String),
    /// No engine binary to run.
    EngineMissing(String),
    Failed(String),
}

/// An agent CLI.
pub trait Engine: Send + Sync {
    fn name(&self) -> &'static str;

    /// The binary it runs.
    fn program(&self) -> &Path;

    /// The command line of one run. The prompt goes to stdin.
    fn command(&self, request: &EngineRequest<'_>) -> CommandSpec;

    /// The prompt of a compaction run.
    fn compact_prompt(&self) -> String;

    /// Whether the engine can compact its session on request; without,
    /// the harness starts a new session where it would compact.
    fn can_compact(&self) -> bool {
        true
    }

    /// One stdout line in the shared vocabulary, plus its raw JSON.
    fn parse(&self, line: &str) -> Result<(StreamEvent, Value), ParseError> {
        crate::stream::parse_line(line)
    }

    /// How a run ended, from what it printed and its exit status.
    fn verdict(&self, observation: &Observation, exit_ok: bool) -> Verdict;

    /// `Ok(source)` if the engine has credentials (its HOME is `home`),
    /// `Err(what is missing)` otherwise.
    fn credentials(&self, home: &Path) -> Result<String, String>;

    /// The variables that authenticate the engine, any one of them (the
    /// agent page's login help names them).
    fn auth_env(&self) -> &'static [&'static str];

    /// The file a login leaves the credentials in (its HOME is `home`):
    /// the page's login help names it, and a harness parked in
    /// `needs_login` watches for it.
    fn credentials_file(&self, home: &Path) -> PathBuf;

    /// The engine's interactive login, run with its streams piped so the
    /// operator completes it from the agent's page (it prints a URL and
    /// reads the code the browser shows), HOME and cwd `state_dir`, so the
    /// credentials land where [`Engine::credentials`] looks. `None`: the
    /// engine has none.
    fn login_command(&self, _state_dir: &Path) -> Option<CommandSpec> {
        None
    }
}

/// Where an engine's credentials come from: the first of `vars` set (and
/// not blank) in `env`, as `$VAR`, else the login `file` if it holds more
/// than an empty object; `None` when neither.
pub fn find_credentials(
    vars: &[&str],
    file: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    if let Some(var) = vars
        .iter()
        .find(|var| env(var).is_some_and(|v| !v.trim().is_empty()))
    {
        return Some(format!("${var}"));
    }
    match std::fs::metadata(file) {
        Ok(meta) if meta.len() > 2 => Some(file.display().to_string()),
        _ => None,
    }
}

/// Records `engine` as the one this state dir runs; true when it replaces
/// another (an approved switch), false on the first boot or the same one.
pub fn switched(state_dir: &Path, engine: &str) -> bool {
    let file = state_dir.join(crate::files::ENGINE);
    let before = std::fs::read_to_string(&file).ok();
    let before = before.as_deref().map(str::trim).filter(|s| !s.is_empty());
    if before != Some(engine)
        && let Err(e) = std::fs::write(&file, format!("{engine}\n"))
    {
        tracing::warn!("engine not recorded: {e}");
    }
    before.is_some_and(|b| b != engine)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_switch_is_seen_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!super::switched(dir.path(), "claude"), "the first boot");
        assert!(!super::switched(dir.path(), "claude"));
        assert!(super::switched(dir.path(), "codex"));
        assert!(!super::switched(dir.path(), "codex"));
        assert!(super::switched(dir.path(), "claude"));
    }
}
