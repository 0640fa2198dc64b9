//! `agent.toml`, the runtime-neutral config of one agent, as serde types.
//!
//! Every field has a default except `model` (whose absence the check in
//! [`crate::check`] reports), so a file may say only what differs. Unknown
//! keys are refused at every level (`deny_unknown_fields`), so a typo never
//! silently does nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// File name of the config in every config repo.
pub const AGENT_TOML: &str = "agent.toml";
/// Default role prompt file, relative to the repo root.
pub const DEFAULT_PROMPT_FILE: &str = "prompt.md";
/// Container paths hive mounts itself; a mount may not equal, contain or sit
/// inside any of them.
pub const RESERVED_CONTAINER_PATHS: &[&str] =
    &["/state", "/shared", "/run/hive", "/agents", "/applied"];

/// One agent's config (`agent.toml` at the root of its config repo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The model the engine runs: an alias (`sonnet`) or a full model id.
    /// Required.
    pub model: String,
    /// The agent CLI that runs turns.
    pub engine: Engine,
    /// The role prompt: a file of this repo, relative to its root.
    pub prompt: String,
    /// Extra environment of the agent's engine.
    pub env: BTreeMap<String, String>,
    /// Extra MCP servers the engine launches, keyed by server name (tools
    /// reach the model as `mcp__<key>__<tool>`).
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// Whom the agent may message: agent names, `manager`, `operator`.
    /// Absent means everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_recipients: Option<Vec<String>>,
    /// CPU and memory limits, where the runtime enforces them.
    pub resources: Resources,
    /// Whether the agent reaches the network beyond its own sockets.
    pub network: Network,
    /// Extra host directories bound into the container.
    pub mounts: Vec<Mount>,
    /// Container image, for runtimes that run images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            model: String::new(),
            engine: Engine::default(),
            prompt: DEFAULT_PROMPT_FILE.to_owned(),
            env: BTreeMap::new(),
            mcp_servers: BTreeMap::new(),
            allowed_recipients: None,
            resources: Resources::default(),
            network: Network::default(),
            mounts: Vec::new(),
            image: None,
        }
    }
}

impl AgentConfig {
    /// Whether the agent may send to `recipient` (`allowed_recipients`
    /// absent: everyone).
    pub fn may_message(&self, recipient: &str) -> bool {
        self.allowed_recipients
            .as_ref()
            .is_none_or(|list| list.iter().any(|r| r == recipient))
    }
}

/// The agent CLIs hive can drive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Claude Code (`claude --print --output-format stream-json …`).
    #[default]
    Claude,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Claude => "claude",
        }
    }
}

/// An extra MCP server (stdio) the engine launches for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    /// The program, as the container sees it.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Tools of this server the engine may call without asking; `"*"` allows
    /// every tool of the server. Empty: none.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
}

/// Resource limits; absent fields are unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (fractions allowed, e.g. `0.5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit: bytes, or a number with a `K`/`M`/`G`/`T` suffix
    /// (powers of 1024, e.g. `"512M"`, `"4G"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

impl Resources {
    /// The memory limit in bytes; `None` when unset or unparsable (the check
    /// refuses the latter).
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory.as_deref().and_then(parse_size)
    }
}

/// Parses `"4G"`, `"512M"`, `"1.5G"`, `"1024"`, `"2GiB"` into bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit
        .strip_suffix("IB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(&unit);
    let exponent = match unit {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(exponent);
    // Sizes are whole bytes; the cast saturates and the range check refuses
    // the absurd.
    (1.0..1.0e18).contains(&bytes).then_some(bytes as u64)
}

/// Network access of the agent's container. In `agent.toml`: `true` or
/// `"full"` (the default), `false` or `"none"` (loopback only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Network {
    /// Loopback only.
    None,
    /// Whatever egress the runtime gives containers.
    #[default]
    Full,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::Full => "full",
        }
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NetworkVisitor;
        impl Visitor<'_> for NetworkVisitor {
            type Value = Network;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"true, false, "full" or "none""#)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Network, E> {
                Ok(if v { Network::Full } else { Network::None })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Network, E> {
                match v {
                    "full" => Ok(Network::Full),
                    "none" => Ok(Network::None),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(NetworkVisitor)
    }
}

/// A host directory bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute path on the host.
    pub host_path: PathBuf,
    /// Absolute path in the container; never over a path hive mounts itself
    /// ([`RESERVED_CONTAINER_PATHS`]).
    pub container_path: PathBuf,
    /// Read-only unless set to `false`.
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (input, bytes) in [
            ("1024", Some(1024)),
            ("4G", Some(4 << 30)),
            ("512M", Some(512 << 20)),
            ("1.5G", Some(3 << 29)),
            ("2GiB", Some(2 << 30)),
            ("64kb", Some(64 << 10)),
            ("4 gigs", None),
            ("", None),
            ("0", None),
            ("-1G", None),
        ] {
            assert_eq!(parse_size(input), bytes, "{input}");
        }
    }

    #[test]
    fn recipients() {
        let mut c = AgentConfig::default();
        assert!(c.may_message("anyone"));
        c.allowed_recipients = Some(vec!["manager".into()]);
        assert!(c.may_message("manager"));
        assert!(!c.may_message("operator"));
    }
}
