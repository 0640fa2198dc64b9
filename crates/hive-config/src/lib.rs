//! Agent config as git (work in progress).

pub mod check;
pub mod error;
pub mod schema;

pub use check::{ConfigError, check_agent_toml, check_agent_toml_with};
pub use error::{Error, Result};
pub use schema::{AgentConfig, Engine, McpServer, Mount, Network, Resources};
