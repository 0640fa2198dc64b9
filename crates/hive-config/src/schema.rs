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
    /// Egress policy: `"model"` (default), `"none"`, a host list, `"full"`.
    pub network: Network,
    /// Extra host directories bound into the container.
    pub mounts: Vec<Mount>,
    /// Container image, for runtimes that run images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The spend limit the harness enforces (per day and/or in total, USD
    /// and/or tokens); raised, like any field, by an approved deploy.
    #[serde(skip_serializing_if = "hive_proto::control::Budget::is_unlimited")]
    pub budget: hive_proto::control::Budget,
    /// Which hosts may run the agent, for runtimes that schedule across
    /// hosts (`swarm`); ignored by the single-host runtimes.
    #[serde(skip_serializing_if = "Placement::is_anywhere")]
    pub placement: Placement,
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
            budget: hive_proto::control::Budget::default(),
            placement: Placement::default(),
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
    /// The Codex CLI (`codex exec --json …`) on an OpenAI Responses API.
    Codex,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Claude => "claude",
            Engine::Codex => "codex",
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

/// Where a multi-host runtime may run the agent: every constraint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Placement {
    /// Scheduler constraints as Docker Swarm writes them:
    /// `node.labels.gpu==true`, `node.hostname!=db1`, `node.role==worker`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Node labels the host must carry: `{ gpu = "true" }` is
    /// `node.labels.gpu==true`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

impl Placement {
    pub fn is_anywhere(&self) -> bool {
        self.constraints.is_empty() && self.node_labels.is_empty()
    }

    /// Every constraint, the node labels written as constraints after the
    /// explicit ones.
    pub fn all_constraints(&self) -> Vec<String> {
        let mut all = self.constraints.clone();
        all.extend(
            self.node_labels
                .iter()
                .map(|(k, v)| format!("node.labels.{k}=={v}")),
        );
        all
    }
}

/// Why a placement constraint is not one the scheduler understands, if it
/// is not: `<attribute> == <value>` or `!=`, the attribute `node.id`,
/// `node.hostname`, `node.role` (`manager` or `worker`), `node.platform.os`,
/// `node.platform.arch`, `node.labels.<key>` or `engine.labels.<key>`.
pub fn constraint_problem(constraint: &str) -> Option<String> {
    let (key, value) = match (constraint.split_once("=="), constraint.split_once("!=")) {
        (Some((k, v)), None) | (None, Some((k, v))) => (k.trim(), v.trim()),
        _ => return Some("is not `<attribute>==<value>` or `<attribute>!=<value>`".to_owned()),
    };
    let label_key = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    let known = matches!(
        key,
        "node.id" | "node.hostname" | "node.role" | "node.platform.os" | "node.platform.arch"
    ) || key
        .strip_prefix("node.labels.")
        .or_else(|| key.strip_prefix("engine.labels."))
        .is_some_and(label_key);
    if !known {
        return Some(format!(
            "`{key}` is not a node attribute (node.id, node.hostname, node.role, \
             node.platform.os, node.platform.arch, node.labels.<key>, engine.labels.<key>)"
        ));
    }
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=' || c == '!')
    {
        return Some(format!("`{value}` is not a value (no spaces, `=` or `!`)"));
    }
    if key == "node.role" && !matches!(value, "manager" | "worker") {
        return Some(format!("node.role is `manager` or `worker`, not `{value}`"));
    }
    None
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

/// The agent's egress policy, enforced by core's per-agent egress proxy
/// (the only way out of the agent's network namespace). In `agent.toml`:
/// `"model"` (the default: only the operator's model endpoint), `"none"`
/// (nothing at all), a list of hosts (`["github.com", "pypi.org:443"]`,
/// plus the model endpoint), or `"full"` (any public address). `true` and
/// `false`, from older files, mean `"full"` and `"none"`. Whatever the
/// policy, the proxy never connects to the host's loopback, link-local or
/// own addresses, except the operator's model endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Network {
    /// No egress at all, not even the model endpoint.
    None,
    /// Only the operator-configured model endpoint.
    #[default]
    Model,
    /// The model endpoint and these hosts (`host`, `host:port` or
    /// `*.domain[:port]`; a host without a port means ports 80 and 443).
    Hosts(Vec<String>),
    /// Any public address (never private, loopback or link-local ones).
    Full,
}

impl Network {
    /// Whether the host list allows `host:port` (`false` for the other
    /// policies: they do not name hosts).
    pub fn lists(&self, host: &str, port: u16) -> bool {
        match self {
            Network::Hosts(hosts) => hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .any(|p| p.matches(host, port)),
            _ => false,
        }
    }
}

/// The policy as `agent.toml` spells it: `"model"`, or `["a.com", "b:22"]`.
impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::None => f.write_str("\"none\""),
            Network::Model => f.write_str("\"model\""),
            Network::Full => f.write_str("\"full\""),
            Network::Hosts(hosts) => {
                f.write_str("[")?;
                for (i, h) in hosts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{h:?}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl Serialize for Network {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Network::None => s.serialize_str("none"),
            Network::Model => s.serialize_str("model"),
            Network::Full => s.serialize_str("full"),
            Network::Hosts(hosts) => hosts.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NetworkVisitor;
        impl<'de> Visitor<'de> for NetworkVisitor {
            type Value = Network;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""none", "model", "full", a list of hosts, true or false"#)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Network, E> {
                Ok(if v { Network::Full } else { Network::None })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Network, E> {
                match v {
                    "none" => Ok(Network::None),
                    "model" => Ok(Network::Model),
                    "full" => Ok(Network::Full),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Network, A::Error> {
                let mut hosts = Vec::new();
                while let Some(host) = seq.next_element::<String>()? {
                    hosts.push(host);
                }
                Ok(Network::Hosts(hosts))
            }
        }
        d.deserialize_any(NetworkVisitor)
    }
}

/// One entry of a `network` host list: `host`, `host:port`, `*.domain`
/// (any subdomain, not the domain itself), an IPv4 address, or an IPv6
/// address (`[::1]:8080` with a port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase, without brackets or the `*.` of a wildcard.
    pub host: String,
    pub wildcard: bool,
    /// `None`: ports 80 and 443.
    pub port: Option<u16>,
}

impl HostPattern {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<HostPattern, &'static str> {
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or("has an unclosed `[`")?;
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("is not an IPv6 address in brackets");
            }
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("has junk after `]`")?),
            };
            (v6, port)
        } else if entry.parse::<std::net::Ipv6Addr>().is_ok() {
            (entry, None)
        } else {
            match entry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => return Err("has a port that is not 1-65535"),
            },
        };
        let host = host.to_ascii_lowercase();
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Ok(HostPattern {
                host,
                wildcard: false,
                port,
            });
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name.to_owned()),
            None => (false, host),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(
                "is not a host name (letters, digits, `-` and `.`; optionally `*.` first and `:port` last) or an IP address",
            );
        }
        Ok(HostPattern {
            host: name,
            wildcard,
            port,
        })
    }

    /// Whether `host:port` (a host as a client names it) matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
        } else {
            host == self.host
        };
        let port_ok = match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        };
        host_ok && port_ok
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
    fn host_patterns() {
        let p = |s: &str| HostPattern::parse(s);
        assert!(p("github.com").unwrap().matches("GitHub.com", 443));
        assert!(p("github.com").unwrap().matches("github.com.", 80));
        assert!(!p("github.com").unwrap().matches("github.com", 22));
        assert!(!p("github.com").unwrap().matches("api.github.com", 443));
        assert!(p("pypi.org:8443").unwrap().matches("pypi.org", 8443));
        assert!(!p("pypi.org:8443").unwrap().matches("pypi.org", 443));
        let wild = p("*.github.com").unwrap();
        assert!(wild.matches("api.github.com", 443));
        assert!(!wild.matches("github.com", 443));
        assert!(!wild.matches("evilgithub.com", 443));
        assert!(p("10.0.0.5:5432").unwrap().matches("10.0.0.5", 5432));
        assert!(p("[2001:db8::1]:22").unwrap().matches("[2001:db8::1]", 22));
        assert!(p("2001:db8::1").unwrap().matches("2001:db8::1", 443));
        for bad in [
            "",
            "a b",
            "-x.com",
            "x.com:0",
            "x.com:99999",
            "[::1",
            "*.",
            "a..b",
            "x:y",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let list = Network::Hosts(vec!["github.com".into(), "pypi.org:443".into()]);
        assert!(list.lists("github.com", 80));
        assert!(!list.lists("pypi.org", 80));
        assert!(!Network::Full.lists("github.com", 443));
        assert_eq!(list.to_string(), r#"["github.com", "pypi.org:443"]"#);
        assert_eq!(Network::Model.to_string(), r#""model""#);
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
