//! A typed view of an engine's JSON-lines output (`claude --output-format
//! stream-json --verbose`), and the per-turn [`Observation`] built from it.
//!
//! Parsing is lenient: a line that is JSON but not a shape we know is kept
//! whole as [`StreamEvent::Unknown`]; only a line that is not JSON at all is
//! an error. The raw JSON always goes to the live stream unchanged; these
//! types exist for what the harness itself needs (usage, cost, tool counts,
//! errors, session id).

use std::collections::BTreeMap;

use hive_proto::live::TokenUsage;
use serde_json::Value;

/// One line of engine output.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `system`/`init`: the session, model, tools and MCP server status.
    Init(SystemInit),
    /// Another `system` line (`status` while compacting, `compact_boundary`,
    /// hook events, …), kept whole.
    System { subtype: String, raw: Value },
    /// One assistant message (claude prints one line per content block).
    Assistant(AssistantEvent),
    /// A user line: the tool results fed back to the model.
    User(UserEvent),
    /// The final line of a run.
    Result(ResultEvent),
    /// `rate_limit_event`: the subscription's rate-limit window as the API's
    /// `anthropic-ratelimit-unified-*` headers reported it.
    RateLimit(RateLimitInfo),
    /// JSON of a kind we do not know.
    Unknown(Value),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SystemInit {
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub cwd: Option<String>,
    pub tools: Vec<String>,
    pub mcp_servers: Vec<McpServerStatus>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpServerStatus {
    pub name: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssistantEvent {
    pub message_id: Option<String>,
    pub model: Option<String>,
    pub content: Vec<ContentBlock>,
    pub usage: Option<TokenUsage>,
    /// Set on the synthetic message the CLI prints for an API failure:
    /// `rate_limit`, `authentication_failed`, `invalid_request`, …
    pub error: Option<String>,
    pub api_error_status: Option<u16>,
    /// Set when the line comes from a sub-agent (Task tool).
    pub parent_tool_use_id: Option<String>,
    /// `api_error_params.rate_limit_info` of a usage-limit error.
    pub rate_limit: Option<RateLimitInfo>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserEvent {
    pub content: Vec<ContentBlock>,
    pub parent_tool_use_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ContentBlock {
    Text {
        text: String,
    },
    Thinking {
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: Value,
        is_error: bool,
    },
    Other(Value),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultEvent {
    /// `success`, `error_max_turns`, `error_during_execution`, …
    pub subtype: String,
    pub is_error: bool,
    pub result: Option<String>,
    pub session_id: Option<String>,
    pub usage: Option<TokenUsage>,
    pub total_cost_usd: Option<f64>,
    pub num_turns: Option<u64>,
    pub duration_ms: Option<u64>,
    /// `completed`, `api_error`, `prompt_too_long`, …
    pub terminal_reason: Option<String>,
    pub api_error_status: Option<u16>,
    pub stop_reason: Option<String>,
}

/// `rate_limit_info` of a `rate_limit_event` line (or of a synthetic
/// assistant message's `api_error_params`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimitInfo {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: String,
    /// When the window resets, unix seconds.
    pub resets_at: Option<i64>,
    /// `five_hour`, `seven_day`, …
    pub rate_limit_type: Option<String>,
}

fn rate_limit_info(v: &Value) -> RateLimitInfo {
    RateLimitInfo {
        status: str_of(v, "status").unwrap_or_default(),
        resets_at: v.get("resetsAt").and_then(Value::as_i64),
        rate_limit_type: str_of(v, "rateLimitType"),
    }
}

/// A stdout line that is not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses one line; also returns the raw JSON for the live stream.
pub fn parse_line(line: &str) -> Result<(StreamEvent, Value), ParseError> {
    let raw: Value = serde_json::from_str(line).map_err(|e| ParseError(e.to_string()))?;
    Ok((classify(&raw), raw))
}

/// The typed view of one JSON line.
pub fn classify(raw: &Value) -> StreamEvent {
    let Some(kind) = raw.get("type").and_then(Value::as_str) else {
        return StreamEvent::Unknown(raw.clone());
    };
    match kind {
        "system" => {
            let subtype = str_of(raw, "subtype").unwrap_or_default();
            if subtype == "init" {
                StreamEvent::Init(init(raw))
            } else {
                StreamEvent::System {
                    subtype,
                    raw: raw.clone(),
                }
            }
        }
        "assistant" => {
            let Some(message) = raw.get("message") else {
                return StreamEvent::Unknown(raw.clone());
            };
            StreamEvent::Assistant(AssistantEvent {
                message_id: str_of(message, "id"),
                model: str_of(message, "model"),
                content: blocks(message.get("content")),
                usage: message.get("usage").map(usage),
                error: str_of(raw, "error"),
                api_error_status: u16_of(raw, "api_error_status"),
                parent_tool_use_id: str_of(raw, "parent_tool_use_id"),
                rate_limit: raw
                    .get("api_error_params")
                    .and_then(|p| p.get("rate_limit_info"))
                    .map(rate_limit_info),
            })
        }
        "user" => {
            let content = raw.get("message").and_then(|m| m.get("content"));
            StreamEvent::User(UserEvent {
                content: blocks(content),
                parent_tool_use_id: str_of(raw, "parent_tool_use_id"),
            })
        }
        "result" => StreamEvent::Result(ResultEvent {
            subtype: str_of(raw, "subtype").unwrap_or_default(),
            is_error: raw
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            result: str_of(raw, "result"),
            session_id: str_of(raw, "session_id"),
            usage: raw.get("usage").map(usage),
            total_cost_usd: raw.get("total_cost_usd").and_then(Value::as_f64),
            num_turns: raw.get("num_turns").and_then(Value::as_u64),
            duration_ms: raw.get("duration_ms").and_then(Value::as_u64),
            terminal_reason: str_of(raw, "terminal_reason"),
            api_error_status: u16_of(raw, "api_error_status"),
            stop_reason: str_of(raw, "stop_reason"),
        }),
        "rate_limit_event" => match raw.get("rate_limit_info") {
            Some(info) => StreamEvent::RateLimit(rate_limit_info(info)),
            None => StreamEvent::Unknown(raw.clone()),
        },
        _ => StreamEvent::Unknown(raw.clone()),
    }
}

fn init(raw: &Value) -> SystemInit {
    let tools = raw
        .get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mcp_servers = raw
        .get("mcp_servers")
        .and_then(Value::as_array)
        .map(|servers| {
            servers
                .iter()
                .map(|s| McpServerStatus {
                    name: str_of(s, "name").unwrap_or_default(),
                    status: str_of(s, "status").unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    SystemInit {
        session_id: str_of(raw, "session_id"),
        model: str_of(raw, "model"),
        cwd: str_of(raw, "cwd"),
        tools,
        mcp_servers,
        version: str_of(raw, "claude_code_version"),
    }
}

fn blocks(content: Option<&Value>) -> Vec<ContentBlock> {
    match content {
        Some(Value::Array(items)) => items.iter().map(block).collect(),
        Some(Value::String(text)) => vec![ContentBlock::Text { text: text.clone() }],
        _ => Vec::new(),
    }
}

fn block(item: &Value) -> ContentBlock {
    match item.get("type").and_then(Value::as_str) {
        Some("text") => ContentBlock::Text {
            text: str_of(item, "text").unwrap_or_default(),
        },
        Some("thinking") => ContentBlock::Thinking {
            thinking: str_of(item, "thinking").unwrap_or_default(),
        },
        Some("tool_use") => ContentBlock::ToolUse {
            id: str_of(item, "id").unwrap_or_default(),
            name: str_of(item, "name").unwrap_or_default(),
            input: item.get("input").cloned().unwrap_or(Value::Null),
        },
        Some("tool_result") => ContentBlock::ToolResult {
            tool_use_id: str_of(item, "tool_use_id").unwrap_or_default(),
            content: item.get("content").cloned().unwrap_or(Value::Null),
            is_error: item
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        _ => ContentBlock::Other(item.clone()),
    }
}

/// Token counts of a Messages-API `usage` object; absent fields are zero.
pub fn usage(v: &Value) -> TokenUsage {
    let n = |key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0);
    TokenUsage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_creation_input_tokens: n("cache_creation_input_tokens"),
        cache_read_input_tokens: n("cache_read_input_tokens"),
    }
}

/// The size of the context an inference saw: every input token, cached or
/// not.
pub fn context_size(u: &TokenUsage) -> u64 {
    u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn u16_of(v: &Value, key: &str) -> Option<u16> {
    v.get(key)
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

/// What the harness learns about a turn from its output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub session_id: Option<String>,
    pub model: Option<String>,
    /// MCP servers that did not report `connected` at init.
    pub failed_mcp_servers: Vec<String>,
    /// Tool calls by tool name (main session and sub-agents alike).
    pub tool_calls: BTreeMap<String, u64>,
    /// Distinct model inferences seen.
    pub inferences: u64,
    /// Usage of the last inference of the main session: the context size.
    pub last_usage: Option<TokenUsage>,
    /// Usage summed over every inference (from the result line if present).
    pub total_usage: TokenUsage,
    /// The result line's `total_cost_usd`: the running total of the whole
    /// engine session (earlier `--continue` runs included), not this run's.
    pub session_cost_usd: Option<f64>,
    /// The last `error` tag on a synthetic assistant message.
    pub api_error: Option<String>,
    pub api_error_status: Option<u16>,
    pub result: Option<ResultEvent>,
    /// The text of the last `set_status` tool call, if any.
    pub status_text: Option<String>,
    /// The `compact_result` of a `/compact` run, if reported.
    pub compact_result: Option<String>,
    /// When the subscription's used-up window resets (unix seconds): set
    /// by a `rejected` rate-limit event or usage-limit error.
    pub usage_limit_resets_at: Option<i64>,
    last_message_id: Option<String>,
    per_message: BTreeMap<String, TokenUsage>,
}

impl Observation {
    /// Folds one event in.
    pub fn observe(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Init(init) => {
                self.session_id = init.session_id.clone().or(self.session_id.take());
                self.model = init.model.clone().or(self.model.take());
                self.failed_mcp_servers = init
                    .mcp_servers
                    .iter()
                    .filter(|s| s.status != "connected")
                    .map(|s| format!("{} ({})", s.name, s.status))
                    .collect();
            }
            StreamEvent::System { raw, .. } => {
                if let Some(r) = raw.get("compact_result").and_then(Value::as_str) {
                    self.compact_result = Some(r.to_owned());
                }
            }
            StreamEvent::Assistant(a) => self.observe_assistant(a),
            StreamEvent::User(_) | StreamEvent::Unknown(_) => {}
            StreamEvent::RateLimit(info) => self.observe_rate_limit(info),
            StreamEvent::Result(r) => {
                if let Some(u) = r.usage {
                    self.total_usage = u;
                }
                if r.total_cost_usd.is_some() {
                    self.session_cost_usd = r.total_cost_usd;
                }
                if r.session_id.is_some() {
                    self.session_id = r.session_id.clone();
                }
                if r.api_error_status.is_some() {
                    self.api_error_status = r.api_error_status;
                }
                self.result = Some(r.clone());
            }
        }
    }

    fn observe_rate_limit(&mut self, info: &RateLimitInfo) {
        if info.status == "rejected"
            && let Some(at) = info.resets_at
        {
            self.usage_limit_resets_at = Some(at);
        }
    }

    fn observe_assistant(&mut self, a: &AssistantEvent) {
        if let Some(info) = &a.rate_limit {
            self.observe_rate_limit(info);
        }
        if a.error.is_some() {
            self.api_error = a.error.clone();
        }
        if a.api_error_status.is_some() {
            self.api_error_status = a.api_error_status;
        }
        for block in &a.content {
            if let ContentBlock::ToolUse { name, input, .. } = block {
                *self.tool_calls.entry(name.clone()).or_default() += 1;
                if name.ends_with("__set_status")
                    && let Some(text) = input.get("text").and_then(Value::as_str)
                {
                    self.status_text = Some(text.to_owned());
                }
            }
        }
        // Synthetic messages (errors) carry no real usage.
        if a.error.is_some() || a.model.as_deref() == Some("<synthetic>") {
            return;
        }
        let (Some(id), Some(usage)) = (&a.message_id, a.usage) else {
            return;
        };
        if self.last_message_id.as_deref() != Some(id.as_str()) {
            self.inferences += 1;
            self.last_message_id = Some(id.clone());
        }
        self.per_message.insert(id.clone(), usage);
        if a.parent_tool_use_id.is_none() {
            self.last_usage = Some(usage);
        }
        if self.result.is_none() {
            self.total_usage = self.per_message.values().fold(TokenUsage::default(), add);
        }
    }

    /// The last inference's context size in tokens.
    pub fn context_tokens(&self) -> Option<u64> {
        self.last_usage.as_ref().map(context_size)
    }

    pub fn tool_call_count(&self) -> u64 {
        self.tool_calls.values().sum()
    }
}

fn add(a: TokenUsage, b: &TokenUsage) -> TokenUsage {
    TokenUsage {
        input_tokens: a.input_tokens + b.input_tokens,
        output_tokens: a.output_tokens + b.output_tokens,
        cache_creation_input_tokens: a.cache_creation_input_tokens + b.cache_creation_input_tokens,
        cache_read_input_tokens: a.cache_read_input_tokens + b.cache_read_input_tokens,
    }
}

#[cfg(test)]
mod tests;
