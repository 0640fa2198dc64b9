//! `codex exec --json` lines in the shared vocabulary ([`StreamEvent`]), so
//! the turn loop's [`crate::stream::Observation`] reads a codex run as it
//! reads a claude one. The raw line still goes to the live stream whole;
//! the agent page renders codex's own shapes.
//!
//! Lines of codex-cli 0.147.0: `thread.started` (`thread_id`, the session)
//! → [`StreamEvent::Init`]; `turn.started`; `item.started` /
//! `item.updated` / `item.completed` with an `item` of type
//! `agent_message`, `reasoning`, `command_execution`, `file_change`,
//! `mcp_tool_call` (`server`, `tool`, `arguments`, `result`, `error`,
//! `status`), `web_search`, `todo_list` or `error` (a warning: the turn
//! goes on); a completed tool item is one tool call (`mcp__<server>__<tool>`
//! for MCP, the item type otherwise); `turn.completed` (`usage`) →
//! a successful [`StreamEvent::Result`]; `turn.failed` (`error.message`) →
//! a failed one; `error` (a top-level message, also printed while
//! reconnecting) is kept whole.
//!
//! `turn.completed`'s usage is the session's running total (a resumed
//! session reports every earlier turn too): [`UsageLedger`] keeps the last
//! total per session in the state dir and reports the difference.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hive_proto::live::TokenUsage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::stream::{
    AssistantEvent, ContentBlock, ParseError, ResultEvent, StreamEvent, SystemInit,
};

/// The ledger's file in the state dir.
pub const USAGE_FILE: &str = "hyperhive-codex-usage.json";

/// codex's `usage` object (`input_tokens` counts the cached ones too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CodexUsage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_output_tokens: u64,
}

impl CodexUsage {
    fn minus(self, o: CodexUsage) -> CodexUsage {
        CodexUsage {
            input_tokens: self.input_tokens.saturating_sub(o.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_sub(o.cached_input_tokens),
            cache_write_input_tokens: self
                .cache_write_input_tokens
                .saturating_sub(o.cache_write_input_tokens),
            output_tokens: self.output_tokens.saturating_sub(o.output_tokens),
            reasoning_output_tokens: self
                .reasoning_output_tokens
                .saturating_sub(o.reasoning_output_tokens),
        }
    }

    /// As Messages-API counts: uncached input, cache reads and writes apart.
    fn tokens(self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.saturating_sub(self.cached_input_tokens),
            output_tokens: self.output_tokens,
            cache_creation_input_tokens: self.cache_write_input_tokens,
            cache_read_input_tokens: self.cached_input_tokens,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ledger {
    thread: Option<String>,
    total: CodexUsage,
}

/// The last usage total codex reported, per session, kept across runs (and
/// harness restarts) so each turn reports only its own tokens.
#[derive(Debug, Default)]
pub struct UsageLedger {
    inner: Mutex<(Option<PathBuf>, Option<String>, Ledger)>,
}

impl UsageLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<PathBuf>, Option<String>, Ledger)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A run in `state_dir` begins.
    pub fn open(&self, state_dir: &Path) {
        let file = state_dir.join(USAGE_FILE);
        let ledger = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        *self.lock() = (Some(file), None, ledger);
    }

    fn thread(&self, id: &str) {
        self.lock().1 = Some(id.to_owned());
    }

    /// This turn's share of the session total `total`.
    fn turn(&self, total: CodexUsage) -> CodexUsage {
        let mut guard = self.lock();
        let (file, thread, ledger) = &mut *guard;
        let before = if thread.is_some() && *thread == ledger.thread {
            ledger.total
        } else {
            CodexUsage::default()
        };
        ledger.thread = thread.clone();
        ledger.total = total;
        if let Some(file) = file
            && let Ok(bytes) = serde_json::to_vec(&*ledger)
            && let Err(e) = std::fs::write(&*file, bytes)
        {
            tracing::warn!("codex usage ledger not written: {e}");
        }
        total.minus(before)
    }
}

/// Parses one line; also returns the raw JSON for the live stream.
pub fn parse_line(line: &str, ledger: &UsageLedger) -> Result<(StreamEvent, Value), ParseError> {
    let raw: Value = serde_json::from_str(line).map_err(|e| ParseError(e.to_string()))?;
    Ok((classify(&raw, ledger), raw))
}

fn classify(raw: &Value, ledger: &UsageLedger) -> StreamEvent {
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    match raw.get("type").and_then(Value::as_str) {
        Some("thread.started") => {
            let id = str_of(raw, "thread_id");
            if let Some(id) = &id {
                ledger.thread(id);
            }
            StreamEvent::Init(SystemInit {
                session_id: id,
                ..SystemInit::default()
            })
        }
        Some("item.completed") => match raw.get("item") {
            Some(item) => completed(item).unwrap_or_else(|| StreamEvent::Unknown(raw.clone())),
            None => StreamEvent::Unknown(raw.clone()),
        },
        Some("turn.completed") => {
            let total: CodexUsage = raw
                .get("usage")
                .and_then(|u| serde_json::from_value(u.clone()).ok())
                .unwrap_or_default();
            StreamEvent::Result(ResultEvent {
                subtype: "success".into(),
                is_error: false,
                usage: Some(ledger.turn(total).tokens()),
                ..ResultEvent::default()
            })
        }
        Some("turn.failed") => StreamEvent::Result(ResultEvent {
            subtype: "error".into(),
            is_error: true,
            result: raw.get("error").and_then(|e| str_of(e, "message")),
            ..ResultEvent::default()
        }),
        _ => StreamEvent::Unknown(raw.clone()),
    }
}

/// A completed item: text, or one tool call.
fn completed(item: &Value) -> Option<StreamEvent> {
    let kind = item.get("type").and_then(Value::as_str)?;
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let block = match kind {
        "agent_message" => ContentBlock::Text {
            text: item.get("text").and_then(Value::as_str)?.to_owned(),
        },
        "reasoning" => ContentBlock::Thinking {
            thinking: item.get("text").and_then(Value::as_str)?.to_owned(),
        },
        "mcp_tool_call" => ContentBlock::ToolUse {
            id,
            name: format!(
                "mcp__{}__{}",
                item.get("server").and_then(Value::as_str)?,
                item.get("tool").and_then(Value::as_str)?
            ),
            input: item.get("arguments").cloned().unwrap_or(Value::Null),
        },
        "command_execution" | "file_change" | "web_search" => ContentBlock::ToolUse {
            id,
            name: kind.to_owned(),
            input: item.clone(),
        },
        _ => return None,
    };
    Some(StreamEvent::Assistant(AssistantEvent {
        content: vec![block],
        ..AssistantEvent::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_session_reports_only_its_own_turn() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = UsageLedger::default();
        let run = |usage: &str| {
            ledger.open(dir.path());
            parse_line(r#"{"type":"thread.started","thread_id":"t1"}"#, &ledger).unwrap();
            let line = format!(r#"{{"type":"turn.completed","usage":{usage}}}"#);
            match parse_line(&line, &ledger).unwrap().0 {
                StreamEvent::Result(r) => r.usage.unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let first = run(r#"{"input_tokens":100,"cached_input_tokens":20,"output_tokens":7}"#);
        assert_eq!(
            first,
            TokenUsage {
                input_tokens: 80,
                output_tokens: 7,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 20
            }
        );
        // The resumed session's total includes the first turn (a fresh
        // ledger: as after a harness restart).
        let second = run(r#"{"input_tokens":250,"cached_input_tokens":60,"output_tokens":10}"#);
        assert_eq!(second.input_tokens, 110);
        assert_eq!(second.cache_read_input_tokens, 40);
        assert_eq!(second.output_tokens, 3);
    }

    #[test]
    fn tool_items_and_failures() {
        let ledger = UsageLedger::default();
        let line = r#"{"type":"item.completed","item":{"id":"item_1","type":"mcp_tool_call","server":"hive","tool":"set_status","arguments":{"text":"busy"},"status":"completed"}}"#;
        let mut obs = crate::stream::Observation::default();
        obs.observe(&parse_line(line, &ledger).unwrap().0);
        assert_eq!(obs.tool_calls.get("mcp__hive__set_status"), Some(&1));
        assert_eq!(obs.status_text.as_deref(), Some("busy"));
        let warn = r#"{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Model metadata not found"}}"#;
        assert!(matches!(
            parse_line(warn, &ledger).unwrap().0,
            StreamEvent::Unknown(_)
        ));
        let failed = r#"{"type":"turn.failed","error":{"message":"boom"}}"#;
        match parse_line(failed, &ledger).unwrap().0 {
            StreamEvent::Result(r) => {
                assert!(r.is_error);
                assert_eq!(r.result.as_deref(), Some("boom"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_line("not json", &ledger).is_err());
    }
}
