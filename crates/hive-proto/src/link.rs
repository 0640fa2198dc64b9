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
//!
//! A relay between agents and core (the swarm backend's) opens each piped
//! connection with one [`RelayHeader`] line naming the agent end, so that
//! core's per-peer caps see each agent rather than the relay.

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

/// The first line of a connection the hive's link relay pipes to core:
/// the address the relay accepted it from (PROXY protocol v1's text
/// form, `PROXY TCP4 <source> <dest> <sport> <dport>\r\n`). Core takes it
/// from the relay's own address alone; from anyone else those bytes are a
/// failed TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayHeader {
    /// The agent end: where the relay accepted the connection from.
    pub source: std::net::SocketAddr,
    /// Where it was accepted: the relay's address the agent dialled.
    pub dest: std::net::SocketAddr,
}

impl RelayHeader {
    /// The longest line, `\r\n` included (PROXY v1's own bound).
    pub const MAX_LEN: usize = 107;

    /// The line, `\r\n` included.
    pub fn line(&self) -> String {
        let family = if self.source.is_ipv4() && self.dest.is_ipv4() {
            "TCP4"
        } else {
            "TCP6"
        };
        let ip = |a: std::net::SocketAddr| match a.ip() {
            std::net::IpAddr::V4(v4) if family == "TCP6" => v4.to_ipv6_mapped().to_string(),
            other => other.to_string(),
        };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            ip(self.source),
            ip(self.dest),
            self.source.port(),
            self.dest.port()
        )
    }

    /// Parses one line (with its `\r\n`, its `\r` or neither); `None` if
    /// it is not a TCP4/TCP6 header whose addresses are of its family.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut words = line.split(' ');
        if words.next()? != "PROXY" {
            return None;
        }
        let v4 = match words.next()? {
            "TCP4" => true,
            "TCP6" => false,
            _ => return None,
        };
        let ip = |w: &str| -> Option<std::net::IpAddr> {
            let ip: std::net::IpAddr = w.parse().ok()?;
            (ip.is_ipv4() == v4).then_some(ip)
        };
        let (source, dest) = (ip(words.next()?)?, ip(words.next()?)?);
        let (sport, dport) = (words.next()?.parse().ok()?, words.next()?.parse().ok()?);
        if words.next().is_some() {
            return None;
        }
        Some(Self {
            source: std::net::SocketAddr::new(source, sport),
            dest: std::net::SocketAddr::new(dest, dport),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_header_round_trips_and_nothing_else_parses() {
        let header = RelayHeader {
            source: "10.0.1.7:41234".parse().unwrap(),
            dest: "10.0.1.2:7701".parse().unwrap(),
        };
        let line = header.line();
        assert_eq!(line, "PROXY TCP4 10.0.1.7 10.0.1.2 41234 7701\r\n");
        assert_eq!(RelayHeader::parse(&line), Some(header));
        let v6 = RelayHeader {
            source: "[fd00::7]:1".parse().unwrap(),
            dest: "10.0.1.2:7701".parse().unwrap(),
        };
        assert_eq!(v6.line(), "PROXY TCP6 fd00::7 ::ffff:10.0.1.2 1 7701\r\n");
        assert_eq!(RelayHeader::parse(&v6.line()).unwrap().source, v6.source);
        assert!(line.len() <= RelayHeader::MAX_LEN);
        for bad in [
            "PROXY UNKNOWN\r\n",
            "PROXY TCP4 fd00::7 10.0.1.2 1 2\r\n",
            "PROXY TCP4 10.0.1.7 10.0.1.2 1\r\n",
            "PROXY TCP4 10.0.1.7 10.0.1.2 1 2 3\r\n",
            "PROXY TCP4 10.0.1.7 10.0.1.2 1 99999\r\n",
            "proxy TCP4 10.0.1.7 10.0.1.2 1 2\r\n",
            "\u{16}\u{3}\u{1}",
        ] {
            assert_eq!(RelayHeader::parse(bad), None, "{bad:?}");
        }
    }
}
