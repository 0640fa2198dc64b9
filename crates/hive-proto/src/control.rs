//! The control dir: files core writes for the harness.
//!
//! Core owns the dir (`<state-dir>/agents/<name>/control/` on the host) and
//! binds it read-only into the container at `/run/hive/control`
//! (`HIVE_CONTROL_DIR`), so an agent can read these files but never plant a
//! link or a file core would then follow. Both sides name the files
//! through these constants.

/// Present while the operator has paused the agent; the harness starts no
/// turn while it exists.
pub const PAUSED: &str = "paused";
/// The deployed config ([`Deployed`]) as JSON.
pub const DEPLOYED: &str = "deployed.json";

/// `deployed.json`: what core deployed, written at every start, restart and
/// rebuild from the approved commit; the harness reads it at boot. Unknown
/// fields are ignored, absent ones default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Deployed {
    /// The approved commit.
    pub sha: String,
    pub config: DeployedConfig,
    /// The role prompt file's text.
    pub prompt: String,
}

/// The part of `agent.toml` the harness acts on.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DeployedConfig {
    /// The model (a runtime switch from the agent page still wins).
    pub model: Option<String>,
    /// `claude` or `codex` (absent: the harness's `--engine`).
    pub engine: Option<String>,
    /// Extra MCP servers the engine launches, by key.
    pub mcp_servers: std::collections::BTreeMap<String, ExtraServer>,
    /// The spend limit the harness enforces before every turn.
    #[serde(skip_serializing_if = "Budget::is_unlimited")]
    pub budget: Budget,
}

/// One extra MCP server the engine launches.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ExtraServer {
    pub command: String,
    pub args: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Tools the engine may call; `*` allows every tool of the server.
    pub allowed_tools: Vec<String>,
}

/// The spend limit of an agent (`[budget]` in `agent.toml`, carried to the
/// harness in `deployed.json`). Absent fields are unlimited. The harness
/// starts no turn once any limit is reached; `daily_*` count the turns
/// started since 00:00 UTC, `total_*` every turn of the agent's `/state`.
/// Tokens are input, output and cache writes (cache reads, the re-read
/// context, are not counted): subscription users see $0 cost, so a token
/// limit is their budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
}

impl Budget {
    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        *self == Budget::default()
    }

    /// One line for people: `$5/day, 200000 tokens in total`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(usd) = self.daily_usd {
            parts.push(format!("${usd}/day"));
        }
        if let Some(usd) = self.total_usd {
            parts.push(format!("${usd} in total"));
        }
        if let Some(tokens) = self.daily_tokens {
            parts.push(format!("{tokens} tokens/day"));
        }
        if let Some(tokens) = self.total_tokens {
            parts.push(format!("{tokens} tokens in total"));
        }
        if parts.is_empty() {
            "unlimited".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// The first limit `today` or `total` (usd, tokens) reached, described.
    pub fn reached(&self, today: (f64, u64), total: (f64, u64)) -> Option<String> {
        let usd = |spent: f64, limit: Option<f64>, when: &str| {
            limit
                .filter(|l| spent >= *l)
                .map(|l| format!("${spent:.4} spent {when}, limit ${l}"))
        };
        let tokens = |spent: u64, limit: Option<u64>, when: &str| {
            limit
                .filter(|l| spent >= *l)
                .map(|l| format!("{spent} tokens {when}, limit {l}"))
        };
        usd(today.0, self.daily_usd, "today")
            .or_else(|| usd(total.0, self.total_usd, "in total"))
            .or_else(|| tokens(today.1, self.daily_tokens, "today"))
            .or_else(|| tokens(total.1, self.total_tokens, "in total"))
    }

    /// Only daily limits were reached: the next UTC day lifts them.
    pub fn only_daily(&self, total: (f64, u64)) -> bool {
        self.total_usd.is_none_or(|l| total.0 < l) && self.total_tokens.is_none_or(|l| total.1 < l)
    }
}
