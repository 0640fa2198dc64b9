//! The schema check of `agent.toml`: every problem at once, each with its
//! line, in the words the manager reads.
//!
//! Three passes. Syntax: the recoverable TOML parser reports every syntax
//! error. Structure: each top-level key (and each entry of the `env`,
//! `mcp_servers`, `mounts` and `allowed_recipients` collections) is deserialized on its own, so one unknown field or wrong
//! type does not hide the next. Meaning: names, paths and limits are
//! checked on the decoded [`AgentConfig`], located back in the document for
//! their line.

use std::fmt;
use std::path::Path;

use hive_proto::{AgentName, OPERATOR_RECIPIENT};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::schema::{
    AgentConfig, HostPattern, McpServer, Mount, Network, RESERVED_CONTAINER_PATHS, parse_size,
};

/// Top-level keys of `agent.toml`, in the order serde lists them.
pub const FIELDS: &[&str] = &[
    "model",
    "engine",
    "prompt",
    "env",
    "mcp_servers",
    "allowed_recipients",
    "resources",
    "network",
    "mounts",
    "image",
    "budget",
    "placement",
];

/// Top-level keys `agent.toml` once had and no longer accepts, each with
/// the reason given instead of "unknown field".
pub const REFUSED_FIELDS: &[(&str, &str)] = &[(
    "packages",
    "packages is not supported: bake what the agent needs into an image (`image`) or its /state",
)];

/// Name of the hive MCP server every engine gets; extra servers may not
/// take it.
pub const RESERVED_MCP_SERVER: &str = "hive";

/// One problem in `agent.toml`. Displays as `agent.toml:<line>: <message>`
/// (or `agent.toml: <message>` when no line applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line, where the problem has one.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "agent.toml:{line}: {}", self.message),
            None => write!(f, "agent.toml: {}", self.message),
        }
    }
}

/// Checks `agent.toml` text, everything but the prompt file's presence
/// (which needs the commit; see [`check_agent_toml_with`]).
pub fn check_agent_toml(text: &str) -> Result<AgentConfig, Vec<ConfigError>> {
    check_agent_toml_with(text, &|_| Ok(()))
}

/// Checks `agent.toml` text; `prompt_file` is asked about the prompt path
/// and answers why it is unusable (e.g. `"is not in the commit"`).
pub fn check_agent_toml_with(
    text: &str,
    prompt_file: &dyn Fn(&str) -> Result<(), String>,
) -> Result<AgentConfig, Vec<ConfigError>> {
    let lines = Lines(text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    let mut errors: Vec<ConfigError> = syntax.iter().map(|e| lines.error(e, None)).collect();
    if !errors.is_empty() {
        return Err(sorted(errors));
    }
    // What decodes is checked for meaning even when other keys do not, so
    // one round trip shows the manager every problem.
    let (valid, failed) = structure(&doc, &lines, &mut errors);
    let config = match AgentConfig::deserialize(Spanned::new(doc.span(), valid).into_deserializer())
    {
        Ok(config) => config,
        Err(e) => {
            errors.push(lines.error(&e, None));
            return Err(sorted(errors));
        }
    };
    let at = Locator {
        doc: doc.get_ref(),
        lines: &lines,
    };
    meaning(&config, &at, &failed, prompt_file, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(sorted(errors))
    }
}

/// Line-less errors first, then by line; equal lines keep their order.
fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by_key(|e| e.line.unwrap_or(0));
    errors
}

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn error(&self, e: &toml::de::Error, path: Option<&str>) -> ConfigError {
        let message = e.message().trim_end();
        ConfigError {
            line: e.span().map(|s| self.line_of(s.start)),
            message: match path {
                Some(path) => format!("{path}: {message}"),
                None => message.to_owned(),
            },
        }
    }
}

/// Deserializes each key (or collection entry) on its own. Returns the
/// document without what failed (a map keeps its good entries; an array
/// with a bad item is left out whole, so indices stay true) and the
/// top-level keys that failed.
fn structure<'i>(
    doc: &Spanned<DeTable<'i>>,
    lines: &Lines<'_>,
    errors: &mut Vec<ConfigError>,
) -> (DeTable<'i>, Vec<String>) {
    let mut probe = |key: &Spanned<toml::de::DeString<'i>>,
                     value: Spanned<DeValue<'i>>,
                     path: Option<String>|
     -> bool {
        let mut table = DeTable::new();
        table.insert(key.clone(), value);
        let whole = Spanned::new(doc.span(), table);
        match AgentConfig::deserialize(whole.into_deserializer()) {
            Ok(_) => true,
            Err(e) => {
                errors.push(lines.error(&e, path.as_deref()));
                false
            }
        }
    };
    let mut valid = DeTable::new();
    let mut failed = Vec::new();
    let mut refused = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        let name: &str = key.get_ref();
        if let Some((_, reason)) = REFUSED_FIELDS.iter().find(|(k, _)| *k == name) {
            refused.push(ConfigError {
                line: Some(lines.line_of(key.span().start)),
                message: (*reason).to_owned(),
            });
            continue;
        }
        if !FIELDS.contains(&name) {
            probe(key, value.clone(), None);
            continue;
        }
        match (name, value.get_ref()) {
            ("env" | "mcp_servers", DeValue::Table(entries)) if !entries.is_empty() => {
                let mut good = DeTable::new();
                for (entry_key, entry) in entries.iter() {
                    let mut one = DeTable::new();
                    one.insert(entry_key.clone(), entry.clone());
                    let path = format!("{name}.{}", dotted(entry_key.get_ref()));
                    let one = Spanned::new(value.span(), DeValue::Table(one));
                    if probe(key, one, Some(path)) {
                        good.insert(entry_key.clone(), entry.clone());
                    }
                }
                valid.insert(
                    key.clone(),
                    Spanned::new(value.span(), DeValue::Table(good)),
                );
            }
            ("mounts" | "allowed_recipients", DeValue::Array(items)) if !items.is_empty() => {
                let mut all_good = true;
                for (i, item) in items.iter().enumerate() {
                    let mut one = DeArray::new();
                    one.push(item.clone());
                    let one = Spanned::new(value.span(), DeValue::Array(one));
                    all_good &= probe(key, one, Some(format!("{name}[{i}]")));
                }
                if all_good {
                    valid.insert(key.clone(), value.clone());
                } else {
                    failed.push(name.to_owned());
                }
            }
            _ => {
                if probe(key, value.clone(), Some(name.to_owned())) {
                    valid.insert(key.clone(), value.clone());
                } else {
                    failed.push(name.to_owned());
                }
            }
        }
    }
    errors.extend(refused);
    (valid, failed)
}

/// A key as it would be written in a dotted TOML path.
fn dotted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

enum Seg<'s> {
    Key(&'s str),
    Index(usize),
}

/// Finds the line of a decoded value back in the document.
struct Locator<'a, 'i> {
    doc: &'a DeTable<'i>,
    lines: &'a Lines<'a>,
}

impl Locator<'_, '_> {
    /// Line of the last key (or array element) of `path`.
    fn line(&self, path: &[Seg<'_>]) -> Option<usize> {
        let mut table = Some(self.doc);
        let mut array: Option<&DeArray<'_>> = None;
        let mut span = None;
        for seg in path {
            let value = match seg {
                Seg::Key(k) => {
                    let (key, value) = table?.iter().find(|(key, _)| {
                        let key: &str = key.get_ref();
                        key == *k
                    })?;
                    span = Some(key.span());
                    value
                }
                Seg::Index(i) => {
                    let value = array?.get(*i)?;
                    span = Some(value.span());
                    value
                }
            };
            table = value.get_ref().as_table();
            array = value.get_ref().as_array();
        }
        span.map(|s| self.lines.line_of(s.start))
    }

    fn push(&self, errors: &mut Vec<ConfigError>, path: &[Seg<'_>], message: String) {
        errors.push(ConfigError {
            line: self.line(path),
            message,
        });
    }
}

fn meaning(
    c: &AgentConfig,
    at: &Locator<'_, '_>,
    failed: &[String],
    prompt_file: &dyn Fn(&str) -> Result<(), String>,
    errors: &mut Vec<ConfigError>,
) {
    use Seg::{Index, Key};

    let failed = |key: &str| failed.iter().any(|f| f == key);

    // model
    if failed("model") {
        // Already reported.
    } else if at.line(&[Key("model")]).is_none() {
        errors.push(ConfigError {
            line: None,
            message:
                "missing field `model`: set the model the engine runs, e.g. model = \"sonnet\""
                    .to_owned(),
        });
    } else if c.model.trim().is_empty() {
        at.push(
            errors,
            &[Key("model")],
            "model must not be empty".to_owned(),
        );
    } else if c.model.chars().any(char::is_whitespace) {
        at.push(
            errors,
            &[Key("model")],
            format!("model `{}` must not contain whitespace", c.model),
        );
    }

    // prompt
    let prompt_set = at.line(&[Key("prompt")]).is_some();
    match relative_path_problem(&c.prompt) {
        _ if failed("prompt") => {}
        Some(problem) => at.push(
            errors,
            &[Key("prompt")],
            format!("prompt `{}` {problem}", c.prompt),
        ),
        None => {
            if let Err(problem) = prompt_file(&c.prompt) {
                let hint = if prompt_set {
                    ""
                } else {
                    " (the default; add it, or set prompt = \"<file>\")"
                };
                at.push(
                    errors,
                    &[Key("prompt")],
                    format!("prompt file `{}` {problem}{hint}", c.prompt),
                );
            }
        }
    }

    // env
    for (key, value) in &c.env {
        check_env(at, errors, &[Key("env"), Key(key)], "env", key, value);
        if is_reserved_env(key) {
            at.push(
                errors,
                &[Key("env"), Key(key)],
                format!(
                    "env key `{key}` is reserved: hive sets it for the harness (`HIVE_*` and `HOME`)"
                ),
            );
        }
    }

    // mcp_servers
    for (name, server) in &c.mcp_servers {
        check_mcp_server(at, errors, name, server);
    }

    // allowed_recipients
    for (i, r) in c.allowed_recipients.iter().flatten().enumerate() {
        let here = [Key("allowed_recipients"), Index(i)];
        if r == hive_proto::BROADCAST_RECIPIENT {
            at.push(
                errors,
                &here,
                "allowed_recipients: `*` is not a recipient; leave allowed_recipients out to allow everyone"
                    .to_owned(),
            );
        } else if r != OPERATOR_RECIPIENT
            && let Err(e) = AgentName::parse(r)
        {
            at.push(errors, &here, format!("allowed_recipients: {e}"));
        }
    }

    // resources
    if let Some(cpu) = c.resources.cpu
        && !(cpu.is_finite() && cpu > 0.0)
    {
        at.push(
            errors,
            &[Key("resources"), Key("cpu")],
            format!("resources.cpu must be a positive number of cores, got {cpu}"),
        );
    }
    if let Some(memory) = &c.resources.memory
        && parse_size(memory).is_none()
    {
        at.push(
            errors,
            &[Key("resources"), Key("memory")],
            format!(
                "resources.memory `{memory}` is not a size (bytes, or a number with K, M, G or T, e.g. \"4G\")"
            ),
        );
    }

    // budget
    for (key, usd) in [
        ("daily_usd", c.budget.daily_usd),
        ("total_usd", c.budget.total_usd),
    ] {
        if let Some(usd) = usd
            && !(usd.is_finite() && usd >= 0.0)
        {
            at.push(
                errors,
                &[Key("budget"), Key(key)],
                format!("budget.{key} must be a non-negative amount of USD, got {usd}"),
            );
        }
    }

    if c.engine == crate::schema::Engine::Codex
        && (c.budget.daily_usd.is_some() || c.budget.total_usd.is_some())
    {
        at.push(
            errors,
            &[Key("budget")],
            "budget in USD needs an engine that reports cost; codex reports none: use \
             daily_tokens or total_tokens"
                .to_owned(),
        );
    }

    // network
    if let Network::Hosts(hosts) = &c.network {
        for (i, host) in hosts.iter().enumerate() {
            if let Err(problem) = HostPattern::parse(host) {
                at.push(
                    errors,
                    &[Key("network"), Index(i)],
                    format!("network[{i}] `{host}` {problem}"),
                );
            }
        }
    }

    // placement
    for (i, constraint) in c.placement.constraints.iter().enumerate() {
        if let Some(problem) = crate::schema::constraint_problem(constraint) {
            at.push(
                errors,
                &[Key("placement"), Key("constraints"), Index(i)],
                format!("placement.constraints[{i}] `{constraint}` {problem}"),
            );
        }
    }
    for (key, value) in &c.placement.node_labels {
        if let Some(problem) =
            crate::schema::constraint_problem(&format!("node.labels.{key}=={value}"))
        {
            at.push(
                errors,
                &[Key("placement"), Key("node_labels"), Key(key)],
                format!("placement.node_labels.{key} {problem}"),
            );
        }
    }

    // mounts
    for (i, m) in c.mounts.iter().enumerate() {
        check_mount(at, errors, i, m, &c.mounts[..i]);
    }

    // image
    if let Some(image) = &c.image {
        if image.trim().is_empty() {
            at.push(
                errors,
                &[Key("image")],
                "image must not be empty".to_owned(),
            );
        } else if image
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            at.push(
                errors,
                &[Key("image")],
                format!("image `{image}` must not contain whitespace"),
            );
        }
    }
}

fn check_env(
    at: &Locator<'_, '_>,
    errors: &mut Vec<ConfigError>,
    path: &[Seg<'_>],
    table: &str,
    key: &str,
    value: &str,
) {
    if !is_identifier(key) {
        at.push(
            errors,
            path,
            format!(
                "{table} key `{key}` is not a valid variable name (letters, digits and `_`, not starting with a digit)"
            ),
        );
    }
    if value.contains('\0') {
        at.push(
            errors,
            path,
            format!("{table}.{} contains a NUL character", dotted(key)),
        );
    }
}

fn check_mcp_server(
    at: &Locator<'_, '_>,
    errors: &mut Vec<ConfigError>,
    name: &str,
    server: &McpServer,
) {
    use Seg::Key;
    let here = [Key("mcp_servers"), Key(name)];
    let label = format!("mcp_servers.{}", dotted(name));
    if name == RESERVED_MCP_SERVER {
        at.push(
            errors,
            &here,
            format!("mcp_servers key `{name}` is reserved for hive's own MCP server"),
        );
    } else if !is_server_key(name) {
        at.push(
            errors,
            &here,
            format!(
                "mcp_servers key `{name}` is not valid (letters, digits, `-` and `_`, at most 64, no `__`)"
            ),
        );
    }
    if server.command.trim().is_empty() {
        at.push(
            errors,
            &[Key("mcp_servers"), Key(name), Key("command")],
            format!("{label}.command must not be empty"),
        );
    }
    for (key, value) in &server.env {
        check_env(
            at,
            errors,
            &[Key("mcp_servers"), Key(name), Key("env"), Key(key)],
            &format!("{label}.env"),
            key,
            value,
        );
    }
    for (i, tool) in server.allowed_tools.iter().enumerate() {
        let ok = tool == "*"
            || (!tool.is_empty()
                && tool
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if !ok {
            at.push(
                errors,
                &[
                    Key("mcp_servers"),
                    Key(name),
                    Key("allowed_tools"),
                    Seg::Index(i),
                ],
                format!(
                    "{label}.allowed_tools: `{tool}` is not a tool name (letters, digits, `-` and `_`, or `*` for every tool)"
                ),
            );
        }
    }
}

fn check_mount(
    at: &Locator<'_, '_>,
    errors: &mut Vec<ConfigError>,
    i: usize,
    m: &Mount,
    earlier: &[Mount],
) {
    use Seg::{Index, Key};
    let host = m.host_path.to_string_lossy();
    if let Some(problem) = absolute_path_problem(&host) {
        at.push(
            errors,
            &[Key("mounts"), Index(i), Key("host_path")],
            format!("mounts[{i}].host_path `{host}` {problem}"),
        );
    }
    let container = m.container_path.to_string_lossy();
    let here = [Key("mounts"), Index(i), Key("container_path")];
    if let Some(problem) = absolute_path_problem(&container) {
        at.push(
            errors,
            &here,
            format!("mounts[{i}].container_path `{container}` {problem}"),
        );
        return;
    }
    let target = m.container_path.as_path();
    for reserved in RESERVED_CONTAINER_PATHS {
        let reserved = Path::new(reserved);
        let problem = if target == reserved {
            format!("is {}, which hive mounts itself", reserved.display())
        } else if target.starts_with(reserved) {
            format!("is inside {}, which hive mounts itself", reserved.display())
        } else if reserved.starts_with(target) {
            format!(
                "would hide {}, which hive mounts itself",
                reserved.display()
            )
        } else {
            continue;
        };
        at.push(
            errors,
            &here,
            format!("mounts[{i}].container_path `{container}` {problem}"),
        );
        return;
    }
    if let Some(j) = earlier
        .iter()
        .position(|e| e.container_path == m.container_path)
    {
        at.push(
            errors,
            &here,
            format!("mounts[{i}].container_path `{container}` is already mounted by mounts[{j}]"),
        );
    }
}

/// Why `p` is not a clean path relative to the repo root, if it is not.
fn relative_path_problem(p: &str) -> Option<&'static str> {
    if p.is_empty() {
        Some("must not be empty")
    } else if p.starts_with('/') {
        Some("must be a path relative to the repo root")
    } else if p
        .split('/')
        .any(|seg| seg == "." || seg == ".." || seg.is_empty())
    {
        Some("must not contain `.`, `..` or empty components")
    } else {
        None
    }
}

/// Why `p` is not a clean absolute path, if it is not.
fn absolute_path_problem(p: &str) -> Option<&'static str> {
    if !p.starts_with('/') {
        Some("must be an absolute path")
    } else if p.split('/').any(|seg| seg == "." || seg == "..") {
        Some("must not contain `.` or `..` components")
    } else {
        None
    }
}

/// The agent's own environment that hive sets: where the harness finds
/// core, its state and its engine. An approved `env` comes after these in
/// the container, so it must not name one.
fn is_reserved_env(key: &str) -> bool {
    key.starts_with("HIVE_") || key == "HOME"
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_server_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.contains("__")
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error lines of `text`, as the manager reads them.
    fn errors(text: &str) -> Vec<String> {
        match check_agent_toml(text) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn check(text: &str, expected: &[&str]) {
        assert_eq!(errors(text), expected, "for:\n{text}");
    }

    #[test]
    fn fields_match_serde() {
        let e = toml::from_str::<AgentConfig>("zzz = 1").unwrap_err();
        let expected: Vec<String> = FIELDS.iter().map(|f| format!("`{f}`")).collect();
        assert_eq!(
            e.message(),
            format!(
                "unknown field `zzz`, expected one of {}",
                expected.join(", ")
            )
        );
    }

    #[test]
    fn placement_is_read_and_checked() {
        let c = check_agent_toml(
            "model = \"m\"\n[placement]\nconstraints = [\"node.role==worker\", \"node.hostname != db1\"]\nnode_labels = { gpu = \"true\" }\n",
        )
        .unwrap();
        assert_eq!(
            c.placement.all_constraints(),
            [
                "node.role==worker",
                "node.hostname != db1",
                "node.labels.gpu==true"
            ]
        );
        check(
            "model = \"m\"\n[placement]\nconstraints = [\n  \"node.labels.ok==1\",\n  \"gpu=true\",\n  \"node.secret==1\",\n  \"node.role==boss\",\n  \"node.labels.a==b c\",\n]\nnode_labels = { \"bad key\" = \"1\" }\n",
            &[
                "agent.toml:5: placement.constraints[1] `gpu=true` is not `<attribute>==<value>` or `<attribute>!=<value>`",
                "agent.toml:6: placement.constraints[2] `node.secret==1` `node.secret` is not a node attribute (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<key>, engine.labels.<key>)",
                "agent.toml:7: placement.constraints[3] `node.role==boss` node.role is `manager` or `worker`, not `boss`",
                "agent.toml:8: placement.constraints[4] `node.labels.a==b c` `b c` is not a value (no spaces, `=` or `!`)",
                "agent.toml:10: placement.node_labels.bad key `node.labels.bad key` is not a node attribute (node.id, node.hostname, node.role, node.platform.os, node.platform.arch, node.labels.<key>, engine.labels.<key>)",
            ],
        );
    }

    #[test]
    fn a_budget_is_read_and_checked() {
        let c = check_agent_toml(
            "model = \"sonnet\"\n[budget]\ndaily_usd = 5.0\ntotal_tokens = 2000000\n",
        )
        .unwrap();
        assert_eq!(
            c.budget,
            hive_proto::control::Budget {
                daily_usd: Some(5.0),
                total_tokens: Some(2_000_000),
                ..Default::default()
            }
        );
        assert_eq!(c.budget.describe(), "$5/day, 2000000 tokens in total");
        check(
            "model = \"sonnet\"\n[budget]\ndaily_usd = -1.0\n",
            &["agent.toml:3: budget.daily_usd must be a non-negative amount of USD, got -1"],
        );
        // Codex reports no cost: a USD limit on it would never be reached.
        check(
            "model = \"gpt-5\"\nengine = \"codex\"\n[budget]\ndaily_usd = 5.0\n",
            &[
                "agent.toml:3: budget in USD needs an engine that reports cost; codex reports none: use daily_tokens or total_tokens",
            ],
        );
        let typo = errors("model = \"sonnet\"\n[budget]\ndaily_dollars = 5\n");
        assert!(
            typo[0].contains("unknown field `daily_dollars`"),
            "{typo:?}"
        );
    }

    #[test]
    fn minimal_and_full() {
        let c = check_agent_toml("model = \"sonnet\"\n").unwrap();
        assert_eq!(c.model, "sonnet");
        assert_eq!(c.prompt, "prompt.md");
        assert_eq!(c.network, crate::Network::Model);
        let full = r#"
model = "claude-sonnet-4-5"
engine = "claude"
prompt = "roles/coder.md"
allowed_recipients = ["manager", "operator", "reviewer"]
network = false
image = "debian:bookworm"

[env]
RUST_LOG = "info"
_X1 = ""

[resources]
cpu = 1.5
memory = "4G"

[mcp_servers.search]
command = "/usr/bin/search-mcp"
args = ["--stdio"]
allowed_tools = ["query", "fetch-page"]

[mcp_servers.search.env]
TOKEN_FILE = "/state/token"

[mcp_servers.all-tools]
command = "x"
allowed_tools = ["*"]

[[mounts]]
host_path = "/srv/datasets"
container_path = "/data"

[[mounts]]
host_path = "/srv/out"
container_path = "/out"
read_only = false
"#;
        let c = check_agent_toml(full).unwrap();
        assert_eq!(c.network, crate::Network::None);
        assert_eq!(c.resources.memory_bytes(), Some(4 << 30));
        assert_eq!(c.mcp_servers["search"].env["TOKEN_FILE"], "/state/token");
        assert!(c.mounts[0].read_only);
        assert!(!c.mounts[1].read_only);
        assert!(!c.may_message("coder"));
        // What serializes parses back to the same config.
        let again = toml::to_string(&c).unwrap();
        assert_eq!(check_agent_toml(&again).unwrap(), c);
    }

    #[test]
    fn every_structural_error_with_its_line() {
        check(
            "modle = \"sonnet\"\nengine = \"gemini\"\nnetwork = \"lan\"\n\n[resources]\ncpus = 2\n",
            &[
                "agent.toml: missing field `model`: set the model the engine runs, e.g. model = \"sonnet\"",
                "agent.toml:1: unknown field `modle`, expected one of `model`, `engine`, `prompt`, `env`, `mcp_servers`, `allowed_recipients`, `resources`, `network`, `mounts`, `image`, `budget`, `placement`",
                "agent.toml:2: engine: unknown variant `gemini`, expected `claude` or `codex`",
                "agent.toml:3: network: invalid value: string \"lan\", expected \"none\", \"model\", \"full\", a list of hosts, true or false",
                "agent.toml:6: resources: unknown field `cpus`, expected `cpu` or `memory`",
            ],
        );
    }

    #[test]
    fn structure_and_meaning_in_one_round() {
        check(
            r#"model = "m"
modle = "x"
packages = [1]

[env]
"BAD-KEY" = "x"
GOOD = 3

[[mounts]]
host_path = "rel"
container_path = "/data"
"#,
            &[
                "agent.toml:2: unknown field `modle`, expected one of `model`, `engine`, `prompt`, `env`, `mcp_servers`, `allowed_recipients`, `resources`, `network`, `mounts`, `image`, `budget`, `placement`",
                "agent.toml:3: packages is not supported: bake what the agent needs into an image (`image`) or its /state",
                "agent.toml:6: env key `BAD-KEY` is not a valid variable name (letters, digits and `_`, not starting with a digit)",
                "agent.toml:7: env.GOOD: invalid type: integer `3`, expected a string",
                "agent.toml:10: mounts[0].host_path `rel` must be an absolute path",
            ],
        );
        // A key that failed is not also reported as missing or empty.
        check(
            "model = 5\nprompt = 7\n",
            &[
                "agent.toml:1: model: invalid type: integer `5`, expected a string",
                "agent.toml:2: prompt: invalid type: integer `7`, expected a string",
            ],
        );
    }

    #[test]
    fn collections_report_each_entry() {
        check(
            r#"model = "m"
allowed_recipients = ["a", 3, "b", false]

[mcp_servers.one]
comand = "x"

[mcp_servers.two]
command = "y"
allowed_tool = []

[[mounts]]
host_path = "/a"

[[mounts]]
host_path = "/b"
container_path = "/b"
"#,
            &[
                "agent.toml:2: allowed_recipients[1]: invalid type: integer `3`, expected a string",
                "agent.toml:2: allowed_recipients[3]: invalid type: boolean `false`, expected a string",
                "agent.toml:5: mcp_servers.one: unknown field `comand`, expected one of `command`, `args`, `env`, `allowed_tools`",
                "agent.toml:9: mcp_servers.two: unknown field `allowed_tool`, expected one of `command`, `args`, `env`, `allowed_tools`",
                "agent.toml:11: mounts[0]: missing field `container_path`",
            ],
        );
    }

    #[test]
    fn network_policies() {
        use crate::Network;
        for (text, policy) in [
            ("network = \"none\"", Network::None),
            ("network = false", Network::None),
            ("network = \"model\"", Network::Model),
            ("network = \"full\"", Network::Full),
            ("network = true", Network::Full),
            (
                "network = [\"github.com\", \"pypi.org:443\", \"*.example.org\"]",
                Network::Hosts(vec![
                    "github.com".into(),
                    "pypi.org:443".into(),
                    "*.example.org".into(),
                ]),
            ),
        ] {
            let c = check_agent_toml(&format!("model = \"m\"\n{text}\n")).unwrap();
            assert_eq!(c.network, policy, "{text}");
            // What serializes parses back to the same policy.
            let again = toml::to_string(&c).unwrap();
            assert_eq!(check_agent_toml(&again).unwrap().network, policy);
        }
        check(
            "model = \"m\"\nnetwork = [\n  \"github.com\",\n  \"bad host\",\n  \"x.org:0\",\n]\n",
            &[
                "agent.toml:4: network[1] `bad host` is not a host name (letters, digits, `-` and `.`; optionally `*.` first and `:port` last) or an IP address",
                "agent.toml:5: network[2] `x.org:0` has a port that is not 1-65535",
            ],
        );
        check(
            "model = \"m\"\nnetwork = [\"a.com\", 3]\n",
            &["agent.toml:2: network: invalid type: integer `3`, expected a string"],
        );
    }

    #[test]
    fn every_syntax_error() {
        let errs = errors("model = \"sonnet\nengine = claude\n[env\n");
        assert!(errs.len() >= 2, "{errs:?}");
        assert!(errs[0].starts_with("agent.toml:1: "), "{errs:?}");
        assert!(
            errs.iter().any(|e| e.starts_with("agent.toml:3: ")),
            "{errs:?}"
        );
    }

    #[test]
    fn hives_own_variables_are_not_the_configs() {
        check(
            "model = \"m\"\n[env]\nHIVE_SOCKET = \"/state/fake.sock\"\nHOME = \"/tmp\"\nHIVEMIND = \"ok\"\n",
            &[
                "agent.toml:3: env key `HIVE_SOCKET` is reserved: hive sets it for the harness (`HIVE_*` and `HOME`)",
                "agent.toml:4: env key `HOME` is reserved: hive sets it for the harness (`HIVE_*` and `HOME`)",
            ],
        );
    }

    #[test]
    fn semantic_errors() {
        check(
            r#"model = ""
prompt = "../etc/passwd"
allowed_recipients = ["manager", "operator", "Bob", "*", "system"]

[env]
"BAD-KEY" = "x"
"1ABC" = "y"
OK = "nul\u0000"

[resources]
cpu = 0
memory = "4 gigs"

[mcp_servers.hive]
command = ""

[mcp_servers."a__b"]
command = "x"
allowed_tools = ["ok", "no way"]

[mcp_servers.a__b.env]
"X-Y" = "1"

[[mounts]]
host_path = "data"
container_path = "/state/data"

[[mounts]]
host_path = "/a/../b"
container_path = "/run"

[[mounts]]
host_path = "/x"
container_path = "/shared"

[[mounts]]
host_path = "/x"
container_path = "/opt/x"

[[mounts]]
host_path = "/y"
container_path = "/opt/x/"

[[mounts]]
host_path = "/y"
container_path = "relative"
"#,
            &[
                "agent.toml:1: model must not be empty",
                "agent.toml:2: prompt `../etc/passwd` must not contain `.`, `..` or empty components",
                "agent.toml:3: allowed_recipients: invalid agent name \"Bob\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)",
                "agent.toml:3: allowed_recipients: `*` is not a recipient; leave allowed_recipients out to allow everyone",
                "agent.toml:3: allowed_recipients: invalid agent name \"system\": reserved",
                "agent.toml:6: env key `BAD-KEY` is not a valid variable name (letters, digits and `_`, not starting with a digit)",
                "agent.toml:7: env key `1ABC` is not a valid variable name (letters, digits and `_`, not starting with a digit)",
                "agent.toml:8: env.OK contains a NUL character",
                "agent.toml:11: resources.cpu must be a positive number of cores, got 0",
                "agent.toml:12: resources.memory `4 gigs` is not a size (bytes, or a number with K, M, G or T, e.g. \"4G\")",
                "agent.toml:14: mcp_servers key `hive` is reserved for hive's own MCP server",
                "agent.toml:15: mcp_servers.hive.command must not be empty",
                "agent.toml:17: mcp_servers key `a__b` is not valid (letters, digits, `-` and `_`, at most 64, no `__`)",
                "agent.toml:19: mcp_servers.a__b.allowed_tools: `no way` is not a tool name (letters, digits, `-` and `_`, or `*` for every tool)",
                "agent.toml:22: mcp_servers.a__b.env key `X-Y` is not a valid variable name (letters, digits and `_`, not starting with a digit)",
                "agent.toml:25: mounts[0].host_path `data` must be an absolute path",
                "agent.toml:26: mounts[0].container_path `/state/data` is inside /state, which hive mounts itself",
                "agent.toml:29: mounts[1].host_path `/a/../b` must not contain `.` or `..` components",
                "agent.toml:30: mounts[1].container_path `/run` would hide /run/hive, which hive mounts itself",
                "agent.toml:34: mounts[2].container_path `/shared` is /shared, which hive mounts itself",
                "agent.toml:42: mounts[4].container_path `/opt/x/` is already mounted by mounts[3]",
                "agent.toml:46: mounts[5].container_path `relative` must be an absolute path",
            ],
        );
    }

    #[test]
    fn missing_model_and_prompt_file() {
        let errs = check_agent_toml_with("engine = \"claude\"\n", &|p| {
            assert_eq!(p, "prompt.md");
            Err("is not in the commit".to_owned())
        })
        .unwrap_err();
        let errs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            [
                "agent.toml: missing field `model`: set the model the engine runs, e.g. model = \"sonnet\"",
                "agent.toml: prompt file `prompt.md` is not in the commit (the default; add it, or set prompt = \"<file>\")",
            ]
        );
        let errs = check_agent_toml_with("model = \"m\"\n\nprompt = \"role.md\"\n", &|_| {
            Err("is not in the commit".to_owned())
        })
        .unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "agent.toml:3: prompt file `role.md` is not in the commit"
        );
    }
}
