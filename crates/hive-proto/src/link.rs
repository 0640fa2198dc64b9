//! The link: core ↔ harness over TCP + TLS, for an agent whose container
//! cannot be handed core's unix sockets (another host).
//!
//! Both sides authenticate: the harness pins the hive's CA and core's
//! name [`SERVER_NAME`]; core takes the client certificate it issued to
//! one agent as that agent's identity, exactly as the socket is on the
//! local path. One TCP port carries every channel, each connection naming
//! its channel by ALPN (no bytes of the agent protocol change):
//!
//! - [`ALPN_AGENT`]: the agent-socket protocol (JSON lines, as on `mcp.sock`);
//! - [`ALPN_EGRESS`]: core's egress proxy (HTTP/1.1, as on `egress.sock`);
//! - [`ALPN_CONTROL`]: the control dir's files, one [`ControlFiles`] line
//!   at connect and one after every change;
//! - [`ALPN_PAGE`]: the page tunnel: the harness keeps it open and core
//!   writes one [`PageOpen`] line each time it needs a stream to the page;
//! - [`ALPN_PAGE_STREAM`]: such a stream, opened by the harness, whose
//!   first line is the [`PageOpen::stream`] it answers, then raw HTTP;
//! - [`ALPN_STATE`]: the agent's `/state` as a tar, each connection naming
//!   its purpose in a first [`StateOpen`] line: the harness keeps a
//!   tunnel open on which core asks for a checkpoint (a [`PageOpen`]
//!   line, as on the page tunnel), answers each ask with a new connection
//!   carrying the tar, and at start asks whether to restore one
//!   ([`RestoreOffer`], then the bytes; [`RestoreDone`] back).
//!
//! Core never dials an agent; an agent listens nowhere.

/// The agent-socket protocol.
pub const ALPN_AGENT: &str = "hive-agent/1";
/// Core's egress proxy for this agent.
pub const ALPN_EGRESS: &str = "hive-egress/1";
/// The control dir's files, pushed by core.
pub const ALPN_CONTROL: &str = "hive-control/1";
/// The page tunnel on which core asks for page streams.
pub const ALPN_PAGE: &str = "hive-page/1";
/// One page stream the harness opened on core's request.
pub const ALPN_PAGE_STREAM: &str = "hive-page-stream/1";
/// The agent's `/state`: checkpoints out, a restore in.
pub const ALPN_STATE: &str = "hive-state/1";

/// The DNS name in core's server certificate; the harness checks it
/// whatever address it dialled (core's address differs by network).
pub const SERVER_NAME: &str = "hive-core";

/// The agent's credential, a dir core writes (in the agent's control dir,
/// [`CREDENTIAL_DIR`]) and the container gets read-only.
pub const CREDENTIAL_DIR: &str = "credential";
/// The hive CA's certificate (PEM): the only root the harness trusts.
pub const CA_FILE: &str = "ca.pem";
/// The agent's client certificate (PEM).
pub const CERT_FILE: &str = "cert.pem";
/// The agent's private key (PEM, PKCS#8).
pub const KEY_FILE: &str = "key.pem";

/// Environment of a container whose transport is the link.
pub mod env {
    /// `host:port` of core's link listener. Set: the harness runs the link.
    pub const ADDR: &str = "HIVE_LINK_ADDR";
    /// The credential dir (as the program sees it).
    pub const CREDENTIALS: &str = "HIVE_LINK_CREDENTIALS";
}

/// Core asks the harness for one stream to its page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageOpen {
    /// A random id the stream's first line repeats.
    pub stream: String,
}

/// The control dir as it is now: each file's text, `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ControlFiles {
    /// [`crate::control::DEPLOYED`].
    pub deployed: Option<String>,
    /// [`crate::control::PAUSED`].
    pub paused: Option<String>,
}

/// The first line of a [`ALPN_STATE`] connection, tagged `open`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "open", rename_all = "snake_case")]
pub enum StateOpen {
    /// The harness's state tunnel: core writes one [`PageOpen`] line on it
    /// each time it wants a checkpoint.
    Tunnel,
    /// A checkpoint core asked for as `stream`: a tar of `/state` follows
    /// until the harness closes its side.
    Checkpoint { stream: String },
    /// The harness, at start: is there a checkpoint to restore? Core
    /// answers one [`RestoreOffer`] line.
    Restore,
}

/// Core's answer to [`StateOpen::Restore`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreOffer {
    /// `None`: nothing to restore. Else that many bytes of tar follow, and
    /// core waits for one [`RestoreDone`] line.
    pub bytes: Option<u64>,
    /// When the checkpoint was taken (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<i64>,
}

/// The harness's word after a restore: only `ok` clears core's flag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestoreDone {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
