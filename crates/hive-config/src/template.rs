//! The first commit of a new agent's config repo: a commented `agent.toml`
//! that documents every field, and a starter role prompt.

use hive_proto::AgentName;

/// Model a new agent starts with.
pub const DEFAULT_MODEL: &str = "sonnet";

/// The template `agent.toml` of `name`.
pub fn agent_toml(name: &AgentName, model: &str) -> String {
    format!(
        r#"# Config of the hyperhive agent `{name}`.
# The manager proposes changes as commits in this repo
# (request_apply_commit with the commit's sha); the operator approves each
# deploy. Unknown keys are refused.

# The model the engine runs: an alias ("sonnet", "opus") or a full model id.
model = "{model}"
# The agent CLI that runs turns: "claude" (Claude Code) or "codex" (the
# Codex CLI; the model is then an OpenAI model id, e.g. "gpt-5-codex").
engine = "claude"
# The role prompt: a file of this repo, relative to its root.
prompt = "prompt.md"

# Whom the agent may message: agent names, "manager", "operator".
# Leave it out to allow everyone.
# allowed_recipients = ["manager", "operator"]

# Egress, through core's proxy (the agent's only way out):
#   "model" (default): only the operator's model endpoint;
#   "none": nothing at all;
#   a list of hosts, e.g. ["github.com", "pypi.org:443", "*.example.org"]
#     (a host without a port means ports 80 and 443; plus the model);
#   "full": any public address.
# Never the host's loopback, link-local or own addresses.
# network = "model"

# Container image, for runtimes that run images (docker); bake the tools
# the agent needs into it (there is no `packages` list).
# image = "debian:bookworm"

# Extra environment of the engine (not `HOME` or `HIVE_*`: hive sets those).
# [env]
# RUST_LOG = "info"

# Limits, where the runtime enforces them.
# [resources]
# cpu = 2          # cores
# memory = "4G"    # bytes, or K/M/G/T

# Extra MCP servers (stdio); tools reach the model as mcp__<key>__<tool>.
# allowed_tools lists the tools the engine may call ("*" for all of them).
# [mcp_servers.search]
# command = "/usr/local/bin/search-mcp"
# args = ["--stdio"]
# allowed_tools = ["query"]
# [mcp_servers.search.env]
# SEARCH_INDEX = "/data/index"

# Extra host directories in the container, read-only unless read_only is
# false. Not over /state, /shared, /run/hive, /agents or /applied.
# [[mounts]]
# host_path = "/srv/datasets"
# container_path = "/data"
# read_only = true
"#
    )
}

/// The template role prompt of `name`.
pub fn prompt(name: &AgentName) -> String {
    format!(
        "# Role of {name}\n\
         \n\
         You are `{name}`, an agent of a hyperhive swarm. The manager gives you\n\
         work through messages; answer the manager (or whoever wrote to you)\n\
         when a task is done or blocked. Keep durable notes under /state.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_passes_the_check() {
        let name = AgentName::parse("coder").unwrap();
        let config = crate::check::check_agent_toml(&agent_toml(&name, DEFAULT_MODEL)).unwrap();
        assert_eq!(config.model, DEFAULT_MODEL);
        assert_eq!(
            config,
            crate::AgentConfig {
                model: DEFAULT_MODEL.into(),
                ..Default::default()
            }
        );
        // Every commented-out example is valid once uncommented.
        let uncommented: String = agent_toml(&name, DEFAULT_MODEL)
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.contains(" = ")
                            && !rest.starts_with("The ")
                            && !rest.starts_with("Config") =>
                {
                    rest.to_owned()
                }
                _ => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let full = crate::check::check_agent_toml(&uncommented)
            .unwrap_or_else(|e| panic!("{e:?}\n{uncommented}"));
        assert_eq!(full.mcp_servers["search"].allowed_tools, ["query"]);
        assert_eq!(full.mounts.len(), 1);
    }
}
