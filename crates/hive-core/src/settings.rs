//! How the daemon was told to run agents: the binaries every container
//! gets, the agent environment, the web port range, the config mirror and
//! the operator's dashboard credential. Read by every component; changed
//! by none.

use std::path::PathBuf;

/// Web UI ports: the manager's, and the range other agents draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub manager: u16,
    pub first: u16,
    pub last: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        Self {
            manager: 8000,
            first: 8100,
            last: 8999,
        }
    }
}

/// How agents' containers are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `hive` binary every container runs.
    pub hive_bin: PathBuf,
    /// The engine CLI every container gets (see [`crate::engine`]).
    pub engine_bin: Option<PathBuf>,
    /// The codex CLI every container gets, for `engine = "codex"`.
    pub codex_bin: Option<PathBuf>,
    /// The agent environment as the daemon started (env file, then
    /// `--agent-env`): its model endpoint is the egress proxy's.
    pub agent_env: Vec<(String, String)>,
    /// The `--agent-env` pairs alone, laid over `agent.env` read again at
    /// every container create ([`crate::engine::agent_env`]).
    pub agent_env_args: Vec<(String, String)>,
    pub ports: PortRange,
    /// Where applied config repos are mirrored, if anywhere.
    pub mirror: Option<hive_config::MirrorConfig>,
    /// The operator's dashboard credential (given, or generated at start
    /// and written to `<run-dir>/operator-token`): every dashboard request
    /// presents it.
    pub operator_token: String,
    /// `--agent-transport tls`: the link containers dial instead of getting
    /// core's sockets (its CA, credentials, page tunnels and control
    /// feeds); `None`: the unix transport.
    pub link: Option<std::sync::Arc<crate::link::Link>>,
}
