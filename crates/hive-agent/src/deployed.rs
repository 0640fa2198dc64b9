//! The config core deployed for this agent, read from `deployed.json` in
//! the control dir core binds read-only (written by core at every start,
//! restart and rebuild from the approved commit of the applied repo).
//!
//! The harness takes five things from it: the engine, the model (unless
//! the operator switched models at runtime), the role prompt (appended to
//! the built-in one for the role), the extra MCP servers with their
//! allowed tools, and the spend limit (`budget`).
//! Environment variables of the config reach the harness through the
//! container's own environment.

use std::path::Path;

use serde_json::Value;

/// Where core writes the deployed config, in the control dir.
pub const FILE: &str = hive_proto::control::DEPLOYED;

pub use hive_proto::control::{Deployed, DeployedConfig, ExtraServer};

/// Reads the deployed config; `None` (with a warning when the file is
/// there but unreadable) outside a hive or before the first deploy.
pub fn load(control_dir: &Path) -> Option<Deployed> {
    let path = control_dir.join(FILE);
    let bytes = std::fs::read(&path).ok()?;
    parse(&bytes, &path.display().to_string())
}

/// Parses a deployed config that came from `origin`; `None` (with a
/// warning) when it does not parse.
pub fn parse(bytes: &[u8], origin: &str) -> Option<Deployed> {
    match serde_json::from_slice(bytes) {
        Ok(deployed) => Some(deployed),
        Err(e) => {
            tracing::warn!(origin, "deployed config unreadable, ignored: {e}");
            None
        }
    }
}

/// The `mcpServers` entries and allowed tool names of the extra servers.
pub fn mcp_servers(deployed: &Deployed) -> (serde_json::Map<String, Value>, Vec<String>) {
    let mut servers = serde_json::Map::new();
    let mut allowed = Vec::new();
    for (key, server) in &deployed.config.mcp_servers {
        servers.insert(
            key.clone(),
            serde_json::json!({
                "type": "stdio",
                "command": server.command,
                "args": server.args,
                "env": server.env,
            }),
        );
        for tool in &server.allowed_tools {
            allowed.push(if tool == "*" {
                format!("mcp__{key}")
            } else {
                format!("mcp__{key}__{tool}")
            });
        }
    }
    (servers, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_core_writes() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        std::fs::write(
            dir.path().join(FILE),
            r#"{"sha":"abc","prompt":"You review code.","config":{"model":"opus","engine":"claude",
               "mcp_servers":{"search":{"command":"/bin/search","args":["--stdio"],"env":{},"allowed_tools":["query"]},
                              "all":{"command":"/bin/all","args":[],"env":{"K":"v"},"allowed_tools":["*"]}},
               "network":"full","mounts":[]}}"#,
        )
        .unwrap();
        let deployed = load(dir.path()).unwrap();
        assert_eq!(deployed.config.model.as_deref(), Some("opus"));
        assert_eq!(deployed.config.engine.as_deref(), Some("claude"));
        assert_eq!(deployed.prompt, "You review code.");
        let (servers, allowed) = mcp_servers(&deployed);
        assert_eq!(allowed, ["mcp__all", "mcp__search__query"]);
        assert_eq!(servers["search"]["command"], "/bin/search");
        assert_eq!(servers["all"]["env"]["K"], "v");
        std::fs::write(dir.path().join(FILE), "not json").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
