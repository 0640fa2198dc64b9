//! The daemon's error type: every refusal a client can receive.

use hive_proto::AgentName;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] hive_store::Error),
    /// A config repo refused or failed (bad sha, invalid agent.toml, a
    /// git failure, …).
    #[error(transparent)]
    Config(#[from] hive_config::Error),
    /// The container backend refused or failed.
    #[error(transparent)]
    Runtime(#[from] hive_runtime::Error),
    /// A no-follow file operation refused (a planted link) or failed.
    #[error(transparent)]
    Fs(#[from] crate::safe_fs::FsError),
    /// A lifecycle verb on a hive started without a container backend.
    #[error(
        "no runtime configured: `{verb}` needs a container backend and this hive runs with --runtime none"
    )]
    NoRuntime { verb: &'static str },
    #[error("unknown agent {:?}", .0.as_str())]
    UnknownAgent(AgentName),
    #[error("{0}")]
    Refused(String),
    /// A failure on core's own side (a task that died, a file core could
    /// not prepare): never the client's fault.
    #[error("{0}")]
    Internal(String),
    /// An agent's page could not be reached (or was refused: a link where
    /// its socket should be).
    #[error("{0}")]
    BadGateway(String),
}

impl Error {
    pub fn refused(message: impl Into<String>) -> Self {
        Error::Refused(message.into())
    }
}
