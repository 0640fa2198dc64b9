//! Events on a per-agent page's live stream (`/events/stream`), tagged
//! `kind`: one per interesting thing that happens during a turn.

use serde::{Deserialize, Serialize};

/// One row of an agent's live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// The harness popped a wake-up message and is about to run the engine.
    /// `unread` counts the *other* messages still waiting.
    TurnStart {
        from: String,
        body: String,
        unread: u64,
    },
    /// One line of the engine's stream-json stdout, a JSON object; the page
    /// pretty-prints by its `type`.
    Stream(serde_json::Value),
    /// A free-form harness note (engine exit, unparseable line, stderr).
    Note { text: String },
    /// The turn finished; `ok=false` means the engine failed.
    TurnEnd {
        ok: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The agent's one-line status changed.
    StatusChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// The model the next turn uses changed.
    ModelChanged { model: String },
    /// Token usage at turn end: `ctx` is the last inference's context size,
    /// `cost` the sum over every inference of the turn.
    TokenUsageChanged { ctx: TokenUsage, cost: TokenUsage },
    /// The harness moved between turn states.
    TurnStateChanged { state: TurnState },
}

/// One SSE frame or history row: an event with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveFrame {
    pub seq: u64,
    pub at: i64,
    #[serde(flatten)]
    pub event: LiveEvent,
}

/// Token counts as the Messages API reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// What the harness is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnState {
    Idle,
    Thinking,
    /// A tool call is running (the harness's note names the tool).
    Tool,
    Compacting,
    Paused,
    RateLimited,
    NeedsLogin,
    /// The engine binary is not in the container (not a login problem:
    /// the daemon needs `--claude-bin`).
    EngineMissing,
    /// The subscription's usage window is used up: parked until it resets
    /// (the report's `until`), spending nothing.
    Quota,
    /// The spend limit of its `agent.toml` is reached: no turn starts until
    /// the operator raises it.
    OverBudget,
}

/// The status line of an agent parked on its quota: `quota until HH:MM
/// UTC` for the reset at unix second `until`.
pub fn quota_text(until: i64) -> String {
    let day = until.rem_euclid(86_400);
    format!("quota until {:02}:{:02} UTC", day / 3600, day % 3600 / 60)
}

/// What every quota status line starts with.
pub const QUOTA_PREFIX: &str = "quota until ";
