//! The hyperhive harness: what runs inside an agent's container.
//!
//! This crate owns everything between an agent's socket and its agent CLI:
//! the turn loop ([`harness`]: requeue at boot, pause marker, long-poll
//! `recv`, wake prompt, engine run, `ack_turn` on success only, compaction,
//! rate-limit and login back-off), the engines behind one [`engine::Engine`]
//! trait (`claude` first) and the one function that spawns them
//! ([`process`]), the typed stream-json view of an engine's output
//! ([`stream`]), the MCP tool server the engine launches (`hive agent mcp`,
//! [`mcp`]) which relays each tool call to the agent socket ([`client`]),
//! the live event bus with its sqlite history ([`bus`]), per-turn analytics
//! ([`stats`]) and the per-agent web server ([`web`]). The `hive` binary
//! reaches all of it through [`cli::AgentCommand`].
//!
//! Architecture invariant: only this crate spawns an agent CLI, and only
//! through [`process::spawn`].

pub mod bench;
pub mod bus;
pub mod cli;
pub mod client;
pub mod deployed;
pub mod egress;
pub mod engine;
pub mod error;
pub mod harness;
pub mod link;
pub mod login;
pub mod mcp;
pub mod process;
pub mod prompt;
pub mod session;
pub mod state;
pub mod stats;
pub mod stream;
pub mod turn;
pub mod wake;
pub mod watch;
pub mod web;

pub use error::{Error, Result};

/// Which tool surface an agent has: the manager's is the agent's plus the
/// privileged verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Manager => "manager",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Files the harness keeps in the agent's state dir.
pub mod files {
    /// Live event history (sqlite).
    pub const EVENTS_DB: &str = "hyperhive-events.sqlite";
    /// One row per turn (sqlite).
    pub const TURN_STATS_DB: &str = "hyperhive-turn-stats.sqlite";
    /// The model the next turn uses, set from the web UI.
    pub const MODEL: &str = "hyperhive-model";
    /// An operator-provided role prompt, appended to the engine's system
    /// prompt (takes precedence over the config dir's `prompt.md`).
    pub const ROLE_PROMPT: &str = "hyperhive-prompt.md";
    /// Core writes this (in the control dir) to pause the agent between
    /// turns.
    pub const PAUSE_MARKER: &str = hive_proto::control::PAUSED;
    /// `request_next_turn` writes this; the harness runs one more turn.
    pub const NEXT_TURN_MARKER: &str = ".hive-next-turn";
    /// The running engine's process group and start time, so a harness
    /// that died mid-turn can reap its orphaned engine at the next boot.
    pub const ENGINE_PID: &str = ".hive-engine.pid";
    /// The fingerprint of the system prompt the engine's current session
    /// started with (see [`crate::session`]).
    pub const SESSION_PROMPT: &str = "hyperhive-session-prompt";
    /// The engine the state dir last ran (`claude`, `codex`).
    pub const ENGINE: &str = "hyperhive-engine";
}
