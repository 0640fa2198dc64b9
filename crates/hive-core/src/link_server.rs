//! The link's listener: TCP + TLS on one port, a client certificate
//! required, each connection's channel named by its ALPN
//! (`hive_proto::link`). The certificate is the identity: a connection
//! serves the agent whose current credential it presented, exactly as a
//! unix socket serves the agent it belongs to, and is cut when that
//! credential is revoked.
//!
//! Handshakes are capped per peer address, so that an agent stalling its
//! handshakes holds up no other: 8 connections waiting for their handshake
//! or in it, the first in progress the peer's own, the rest sharing 64
//! places ([`Handshakes`]), so agents stalling from many addresses fill
//! the shared places and no more. Behind the swarm backend's relay every
//! agent is one peer (the relay): there the relay's header
//! ([`RelayHeader`]) names the agent end and the cap applies to that. Core
//! believes the header from the relay's own address ([`Relay`]) alone; from
//! any other peer a header is refused (and would otherwise be a failed TLS
//! handshake). An agent reaches the relay, never core's listener (its only
//! network is its own internal one), and the relay writes its header before
//! any byte of the agent's, so no agent chooses what the header says.
//!
//! Every peer address is compared and counted in its canonical form
//! ([`IpAddr::to_canonical`]): on a dual-stack listener (`[::]`) an IPv4
//! peer arrives as `::ffff:a.b.c.d`, which is the same peer as the runtime's
//! `a.b.c.d` for the relay, and the same agent end in a `TCP6` header.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hive_proto::AgentName;
use hive_proto::link::{
    ALPN_AGENT, ALPN_CONTROL, ALPN_EGRESS, ALPN_PAGE, ALPN_PAGE_STREAM, ALPN_STATE, RelayHeader,
    StateOpen,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::coordinator::Coordinator;
use crate::egress::Proxy;
use crate::link::{Link, Revocable, Tunnels};
use crate::listener::Cap;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once beyond each peer's first; more wait
/// for a place ([`Handshakes`]).
const MAX_HANDSHAKES: usize = 64;
/// Connections from one peer address waiting for their handshake or in
/// it; more are refused.
const MAX_HANDSHAKES_PER_PEER: usize = 8;
/// Control, page-tunnel and page-stream connections one agent may hold
/// at once (the agent and egress channels have their own caps).
const MAX_AUX_CONNECTIONS: usize = 64;
/// Agent-channel connections one agent may have waiting for a slot
/// beyond the [`crate::listener::MAX_CONNECTIONS`] it may hold.
const MAX_WAITING: usize = 64;
/// Longest first line of a page stream (its id).
const MAX_ID_LINE: usize = 128;
/// How long a refusal stands before core asks the runtime again which
/// address the relay has (a peer that is not the relay sending a header
/// asks at most this often).
const RELAY_RECHECK: Duration = Duration::from_secs(1);

type Stream = Revocable<tokio_rustls::server::TlsStream<TcpStream>>;

/// What one agent's link connections share: its connection slots and its
/// egress proxy (whose tunnel cap is per agent).
struct AgentChannels {
    cap: Cap,
    /// Agent-channel connections held or waiting for one of `cap`'s slots:
    /// a waiting one is an accepted TLS connection with its own task, not
    /// a kernel backlog entry, so their number is bounded too.
    agent_slots: Arc<tokio::sync::Semaphore>,
    egress: Proxy,
    egress_slots: Arc<tokio::sync::Semaphore>,
    aux_slots: Arc<tokio::sync::Semaphore>,
}

/// Link connections not yet through their TLS handshake, by peer address
/// (the agent end, behind the relay): at most [`MAX_HANDSHAKES_PER_PEER`]
/// each, waiting or in progress. Each peer's first handshake in progress
/// is its own; the rest share [`MAX_HANDSHAKES`] places, and one finding
/// none waits for one. So agents stalling handshakes, however many, fill
/// the shared places at most: every other agent end still has its own
/// (and another as soon as that one is through).
#[derive(Default)]
struct Handshakes {
    table: Mutex<Table>,
    /// Woken whenever a handshake ends (a place may be free).
    ended: tokio::sync::Notify,
}

#[derive(Default)]
struct Table {
    peers: HashMap<IpAddr, Peer>,
    /// Shared places taken: every peer's handshakes in progress but one.
    shared: usize,
}

#[derive(Default)]
struct Peer {
    /// Waiting or in progress.
    connections: usize,
    in_progress: usize,
}

/// One connection among its peer's, until its handshake is through.
struct Handshake<'a> {
    handshakes: &'a Handshakes,
    ip: IpAddr,
    started: bool,
}

impl Handshakes {
    /// A place among `ip`'s connections; `None`: it has its fill.
    fn join(&self, ip: IpAddr) -> Option<Handshake<'_>> {
        let ip = ip.to_canonical();
        let mut table = self.table();
        let peer = table.peers.entry(ip).or_default();
        if peer.connections >= MAX_HANDSHAKES_PER_PEER {
            return None;
        }
        peer.connections += 1;
        Some(Handshake {
            handshakes: self,
            ip,
            started: false,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Handshake<'_> {
    /// Waits for the handshake's turn: at once if its peer has none in
    /// progress, else when a shared place is free.
    async fn start(&mut self) {
        loop {
            let ended = self.handshakes.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.try_start() {
                return;
            }
            ended.await;
        }
    }

    fn try_start(&mut self) -> bool {
        let mut table = self.handshakes.table();
        let Some((peer, shared)) = self.mine(&mut table) else {
            return false;
        };
        if peer.in_progress > 0 {
            if *shared >= MAX_HANDSHAKES {
                return false;
            }
            *shared += 1;
        }
        peer.in_progress += 1;
        self.started = true;
        true
    }

    /// This connection's peer in `table`, and the shared places taken.
    fn mine<'t>(&self, table: &'t mut Table) -> Option<(&'t mut Peer, &'t mut usize)> {
        let Table { peers, shared } = table;
        peers.get_mut(&self.ip).map(|peer| (peer, shared))
    }
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        {
            let mut table = self.handshakes.table();
            let Some((peer, shared)) = self.mine(&mut table) else {
                return;
            };
            peer.connections -= 1;
            if self.started {
                peer.in_progress -= 1;
                if peer.in_progress > 0 {
                    *shared -= 1;
                }
            }
            if peer.connections == 0 {
                table.peers.remove(&self.ip);
            }
        }
        if self.started {
            self.handshakes.ended.notify_waiters();
        }
    }
}

/// The hive's link relay as core knows it: its address (from the
/// runtime, [`crate::lifecycle::Lifecycle::link_relay`]), and when the
/// runtime was last asked (held while it is asked, so the connections a
/// harness opens at once wait for one answer).
#[derive(Default)]
struct Relay {
    known: Mutex<Option<IpAddr>>,
    asked: tokio::sync::Mutex<Option<Instant>>,
}

impl Relay {
    fn is(&self, ip: IpAddr) -> bool {
        let known = *self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.is_some_and(|relay| relay.to_canonical() == ip.to_canonical())
    }

    /// Whether `ip` is the relay now, asking the runtime unless it was
    /// asked less than [`RELAY_RECHECK`] ago (a relay made anew may have a
    /// new address).
    async fn confirm(&self, coord: &Coordinator, ip: IpAddr) -> bool {
        if self.is(ip) {
            return true;
        }
        let mut asked = self.asked.lock().await;
        if self.is(ip) {
            return true;
        }
        if asked.is_some_and(|at| at.elapsed() < RELAY_RECHECK) {
            return false;
        }
        *asked = Some(Instant::now());
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = coord.lifecycle.link_relay().await;
        self.is(ip)
    }
}

/// The connection's place among its agent end's: its peer's, or on a
/// connection from the relay, that of the agent end its header names (the
/// header read, so the TLS handshake follows). `None`: refused.
async fn place<'h>(
    coord: &Coordinator,
    relay: &Relay,
    handshakes: &'h Handshakes,
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Option<Handshake<'h>> {
    if !relay.is(peer.ip()) {
        let Some(place) = handshakes.join(peer.ip()) else {
            tracing::info!(%peer, "link: too many handshakes from one peer");
            return None;
        };
        // A TLS handshake opens with 0x16, the relay's header with `P`.
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.ok()? == 0 || first[0] != b'P' {
            return Some(place);
        }
        if !relay.confirm(coord, peer.ip()).await {
            tracing::info!(%peer, "link: a relay header from a peer that is not the relay refused");
            return None;
        }
        drop(place);
    }
    let line = read_line(tcp, RelayHeader::MAX_LEN).await;
    let Some(header) = line.as_deref().and_then(RelayHeader::parse) else {
        tracing::warn!(%peer, "link: the relay's connection without its header refused");
        return None;
    };
    let from = header.source;
    let place = handshakes.join(from.ip());
    if place.is_none() {
        tracing::info!(peer = %from, relay = %peer, "link: too many handshakes from one peer");
    }
    place
}

/// Serves the link on `listener` until the task is dropped.
pub async fn serve(coord: Arc<Coordinator>, link: Arc<Link>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(link.server.clone());
    let agents: Arc<Mutex<HashMap<AgentName, Arc<AgentChannels>>>> = Arc::default();
    // Accepting is not held up: a connection past its peer's fill is
    // closed at once, and one waiting for a shared place waits as a task
    // (its peer's fill bounds them), so whoever is next in the backlog is
    // reached.
    let handshakes = Arc::new(Handshakes::default());
    let relay = Arc::new(Relay::default());
    // A relay that outlived the daemon: its agents all reconnect at once.
    *relay.known.lock().unwrap_or_else(|p| p.into_inner()) = coord.lifecycle.link_relay().await;
    loop {
        let (mut tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("link accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (coord, link, acceptor, agents, handshakes, relay) = (
            coord.clone(),
            link.clone(),
            acceptor.clone(),
            agents.clone(),
            handshakes.clone(),
            relay.clone(),
        );
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
            let placed = async {
                let mut handshake = place(&coord, &relay, &handshakes, &mut tcp, peer).await?;
                handshake.start().await;
                Some(handshake)
            };
            let Ok(Some(handshake)) = tokio::time::timeout_at(deadline, placed).await else {
                return;
            };
            let accepted = tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await;
            drop(handshake);
            let tls = match accepted {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!("link handshake refused: {e}"),
                Err(_) => return tracing::debug!("link handshake timed out"),
            };
            let (_, session) = tls.get_ref();
            let cert = session.peer_certificates().and_then(|c| c.first());
            let Some((agent, revocation)) = cert.and_then(|c| link.identify(c)) else {
                // Signed by the CA, but no agent's current credential.
                tracing::info!("link connection with a revoked or unknown credential refused");
                return;
            };
            let alpn = session
                .alpn_protocol()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default();
            let channels = {
                let mut agents = agents.lock().unwrap_or_else(|p| p.into_inner());
                // Destroyed agents' slots and proxies go (a manager can
                // spawn and destroy names forever): looked at when a name
                // is new, not on every connection (egress opens one per
                // model request).
                if !agents.contains_key(&agent) {
                    agents.retain(|name, _| link.is_current(name));
                }
                agents
                    .entry(agent.clone())
                    .or_insert_with(|| {
                        Arc::new(AgentChannels {
                            cap: Cap::default(),
                            agent_slots: Arc::new(tokio::sync::Semaphore::new(
                                crate::listener::MAX_CONNECTIONS + MAX_WAITING,
                            )),
                            egress: Proxy::new(coord.egress.clone(), agent.clone()),
                            egress_slots: Arc::new(tokio::sync::Semaphore::new(
                                crate::egress::MAX_CONNECTIONS,
                            )),
                            aux_slots: Arc::new(tokio::sync::Semaphore::new(MAX_AUX_CONNECTIONS)),
                        })
                    })
                    .clone()
            };
            let stream = Revocable::new(tls, revocation);
            serve_channel(&coord, &link, &channels, agent, &alpn, stream).await;
        });
    }
}

async fn serve_channel(
    coord: &Arc<Coordinator>,
    link: &Link,
    channels: &AgentChannels,
    agent: AgentName,
    alpn: &str,
    stream: Stream,
) {
    match alpn {
        ALPN_AGENT => {
            let Ok(_slot) = channels.agent_slots.clone().try_acquire_owned() else {
                return tracing::info!(%agent, "link agent channel refused: connection cap reached");
            };
            let (reader, writer) = tokio::io::split(stream);
            let conn = channels.cap.admit(reader, writer).await;
            crate::agent_server::handle(coord.clone(), agent, conn).await;
        }
        ALPN_EGRESS => {
            let Ok(_slot) = channels.egress_slots.clone().try_acquire_owned() else {
                return tracing::info!(%agent, "link egress refused: connection cap reached");
            };
            channels.egress.clone().serve(stream).await;
        }
        ALPN_CONTROL | ALPN_PAGE | ALPN_PAGE_STREAM | ALPN_STATE => {
            let Ok(_slot) = channels.aux_slots.clone().try_acquire_owned() else {
                return tracing::info!(%agent, alpn, "link refused: connection cap reached");
            };
            match alpn {
                ALPN_CONTROL => control(coord, link, &agent, stream).await,
                ALPN_PAGE => tunnel(&link.tunnels, &agent, stream).await,
                ALPN_STATE => state(coord, link, &agent, stream).await,
                _ => page_stream(link, &agent, stream).await,
            }
        }
        other => tracing::info!(%agent, alpn = other, "link connection without a channel refused"),
    }
}

/// The control dir's files: once now, then after every change, until the
/// harness hangs up.
async fn control(coord: &Coordinator, link: &Link, agent: &AgentName, stream: Stream) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut feed = link.control_feed(agent);
    let hung_up = async move {
        let mut sink = [0u8; 64];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let push = async {
        loop {
            let files = Link::control_files(&coord.paths, agent);
            if crate::jsonl::write_line(&mut writer, &files).await.is_err() {
                return;
            }
            if feed.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = hung_up => {}
        () = push => {}
    }
}

/// A tunnel the harness keeps open (the page's, the state's): one
/// `PageOpen` line per stream core needs, until either side hangs up.
async fn tunnel(tunnels: &Tunnels, agent: &AgentName, stream: Stream) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (_guard, mut asks) = tunnels.register(agent);
    let hung_up = async move {
        let mut sink = [0u8; 64];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let forward = async {
        while let Some(ask) = asks.recv().await {
            if crate::jsonl::write_line(&mut writer, &ask).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = hung_up => {}
        () = forward => {}
    }
}

/// A state connection (`crate::checkpoint`): the harness's state tunnel,
/// a checkpoint core asked this agent for, or a harness asking at start
/// whether to restore one.
async fn state(coord: &Coordinator, link: &Link, agent: &AgentName, mut stream: Stream) {
    let line = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_line(&mut stream, MAX_ID_LINE)).await;
    let Some(open) = line
        .ok()
        .flatten()
        .and_then(|l| serde_json::from_str::<StateOpen>(&l).ok())
    else {
        return tracing::debug!(%agent, "state connection without an open line");
    };
    match open {
        StateOpen::Tunnel => tunnel(&link.state_tunnels, agent, stream).await,
        StateOpen::Checkpoint { stream: id } => {
            if let Err(e) = link.state_tunnels.deliver(agent, &id, Box::new(stream)) {
                tracing::warn!(%agent, "checkpoint stream refused: {e}");
            }
        }
        StateOpen::Restore => crate::checkpoint::serve_restore(&coord.paths, agent, stream).await,
    }
}

/// A stream the harness opened: its id line, then the page's bytes.
async fn page_stream(link: &Link, agent: &AgentName, mut stream: Stream) {
    let id = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_line(&mut stream, MAX_ID_LINE)).await;
    let Ok(Some(id)) = id else {
        return tracing::debug!(%agent, "page stream without an id line");
    };
    if let Err(e) = link.tunnels.deliver(agent, &id, Box::new(stream)) {
        tracing::warn!(%agent, "page stream refused: {e}");
    }
}

/// Reads one line of at most `max` bytes byte by byte (nothing past it
/// is consumed); without its `\n`.
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Option<String> {
    let mut line = Vec::new();
    loop {
        let byte = stream.read_u8().await.ok()?;
        if byte == b'\n' {
            return String::from_utf8(line).ok();
        }
        if line.len() >= max {
            return None;
        }
        line.push(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hive_proto::link::{CA_FILE, CERT_FILE, KEY_FILE, SERVER_NAME};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// Core's link listener on `bind` (real store, CA and credential),
    /// the runtime reporting the relay at `relay`; agent `a` issued.
    struct Served {
        /// `a`'s credential, as its harness presents it.
        client: Arc<rustls::ClientConfig>,
        _dir: tempfile::TempDir,
    }

    async fn serve_on(listener: TcpListener, relay: IpAddr) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::Paths::new(dir.path().join("state"), dir.path().join("run"));
        paths.create_roots().unwrap();
        let store = hive_store::Store::open(&paths.database()).unwrap();
        let a = AgentName::parse("a").unwrap();
        store.register_agent(&a).unwrap();
        paths.create_agent_dirs(&a).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let link = Arc::new(Link::open(&paths, addr, None).unwrap());
        let credentials = link.issue(&paths, &a, None).unwrap();
        let settings = crate::settings::Settings {
            hive_bin: "/bin/false".into(),
            engine_bin: None,
            codex_bin: None,
            agent_env: Vec::new(),
            agent_env_args: Vec::new(),
            ports: Default::default(),
            mirror: None,
            operator_token: "test-token-0123456789".to_owned(),
            link: Some(link.clone()),
        };
        let runtime = crate::lifecycle::relay_only(relay);
        let coord = Coordinator::new(store, paths, None, runtime, settings, None);
        tokio::spawn(serve(coord, link, listener));
        Served {
            client: client_config(&credentials),
            _dir: dir,
        }
    }

    fn client_config(dir: &std::path::Path) -> Arc<rustls::ClientConfig> {
        let read = |file| std::fs::read(dir.join(file)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(CA_FILE)) {
            roots.add(ca.unwrap()).unwrap();
        }
        let chain = CertificateDer::pem_slice_iter(&read(CERT_FILE))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&read(KEY_FILE)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![ALPN_AGENT.as_bytes().to_vec()];
        Arc::new(config)
    }

    /// An agent end on its overlay network.
    fn agent_end(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    /// A connection as the relay opens it: from 127.0.0.1 to `to`, its
    /// header naming `agent` before anything else. Nothing more is sent:
    /// left so, it is a stalled handshake.
    async fn via_relay(to: SocketAddr, agent: SocketAddr) -> TcpStream {
        let mut tcp = TcpStream::connect(to).await.unwrap();
        let header = RelayHeader {
            source: agent,
            dest: to,
        };
        tcp.write_all(header.line().as_bytes()).await.unwrap();
        tcp
    }

    /// Whether a [`whoami`] answer names agent `a`, whose credential the
    /// test dials with.
    fn answered_as_a(answer: &Option<String>) -> bool {
        answer
            .as_deref()
            .is_some_and(|a| a.contains(r#""name":"a""#))
    }

    /// `whoami` on the agent channel, TLS on `tcp` with `client`.
    async fn whoami(client: &Arc<rustls::ClientConfig>, tcp: TcpStream) -> Option<String> {
        let connector = tokio_rustls::TlsConnector::from(client.clone());
        let name = ServerName::try_from(SERVER_NAME).ok()?;
        let mut tls = connector.connect(name, tcp).await.ok()?;
        tls.write_all(b"{\"cmd\":\"whoami\"}\n").await.ok()?;
        let mut line = String::new();
        BufReader::new(tls).read_line(&mut line).await.ok()?;
        Some(line)
    }

    /// Whether core still holds `tcp` open (it sent nothing, so anything
    /// readable is its close).
    async fn held(tcp: &TcpStream) -> bool {
        tokio::task::yield_now().await;
        let mut byte = [0u8; 1];
        matches!(tcp.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Waits for core to close `tcp`.
    async fn closed(tcp: &mut TcpStream) {
        let mut byte = [0u8; 1];
        assert!(matches!(tcp.read(&mut byte).await, Ok(0) | Err(_)));
    }

    /// A listener on `bind`, the runtime reporting the relay at `relay`
    /// (127.0.0.1 in one family's spelling or the other's), and the test
    /// as the relay from 127.0.0.1: its header is believed, the cap is the
    /// agent end's it names.
    async fn relay_believed(bind: &str, relay: &str) {
        let listener = match TcpListener::bind(bind).await {
            Ok(listener) => listener,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                return eprintln!("skipped: no IPv6 loopback to bind {bind} ({e})");
            }
            Err(e) => panic!("bind {bind}: {e}"),
        };
        let port = listener.local_addr().unwrap().port();
        let served = serve_on(listener, relay.parse().unwrap()).await;
        let to = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
        let mole = agent_end("10.0.0.5");
        let mut stalls = Vec::new();
        for _ in 0..MAX_HANDSHAKES_PER_PEER {
            stalls.push(via_relay(to, mole).await);
        }
        // The same agent end in a TCP6 header's spelling: past its cap.
        let mut over = via_relay(to, agent_end("::ffff:10.0.0.5")).await;
        closed(&mut over).await;
        for stall in &stalls {
            assert!(
                held(stall).await,
                "{bind}: a stall of the agent end's own cut"
            );
        }
        // Another agent end through the same relay: its own cap.
        let answer = whoami(&served.client, via_relay(to, agent_end("10.0.0.6")).await).await;
        assert!(answered_as_a(&answer), "{bind}: {answer:?}");
    }

    /// The relay's header is believed whichever family the listener
    /// sees the relay in: a dual-stack listener sees 127.0.0.1 as
    /// `::ffff:127.0.0.1` while the runtime says `127.0.0.1` (and the
    /// other way round); the cap is then the agent end's the header names,
    /// in either spelling.
    #[tokio::test]
    async fn a_link_relay_header_is_believed_across_address_families() {
        relay_believed("[::]:0", "127.0.0.1").await;
        relay_believed("127.0.0.1:0", "::ffff:127.0.0.1").await;
    }

    /// An agent end is not the relay: a relay header it writes to claim
    /// another agent end's address (or to spread its stalls over many) is
    /// refused, the connection closed at once, however often it tries;
    /// its own handshake, without a header, is still answered.
    #[tokio::test]
    async fn a_relay_header_from_a_peer_that_is_not_the_relay_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let served = serve_on(listener, "10.9.9.9".parse().unwrap()).await;
        for i in 0..=MAX_HANDSHAKES_PER_PEER {
            let forged = agent_end(&format!("10.0.0.{}", 20 + i));
            let mut tcp = via_relay(to, forged).await;
            // At once, not when a believed handshake would time out.
            tokio::time::timeout(std::time::Duration::from_secs(2), closed(&mut tcp))
                .await
                .expect("a forged relay header was held");
        }
        let answer = whoami(&served.client, TcpStream::connect(to).await.unwrap()).await;
        assert!(answered_as_a(&answer), "{answer:?}");
    }

    /// Agents stalling handshakes from more addresses than the shared
    /// places allow for (ten agent ends, eight each, through the relay as
    /// the header names them; each one's fill reached) hold up no other:
    /// a fresh agent end's handshake is answered, twice over, with every
    /// stall still held, none cut and none expired to make room.
    #[tokio::test]
    async fn agents_stalling_every_shared_handshake_hold_up_no_fresh_agent_end() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let served = serve_on(listener, to.ip()).await;
        let moles = 10;
        assert!(moles * (MAX_HANDSHAKES_PER_PEER - 1) > MAX_HANDSHAKES);
        let mut stalls = Vec::new();
        for mole in 0..moles {
            let end = agent_end(&format!("10.0.0.{}", 10 + mole));
            for _ in 0..MAX_HANDSHAKES_PER_PEER {
                stalls.push(via_relay(to, end).await);
            }
            // Past the mole's fill: refused, so all of its are placed.
            closed(&mut via_relay(to, end).await).await;
        }
        let fresh = agent_end("10.0.1.1");
        for attempt in 0..2 {
            let answer = whoami(&served.client, via_relay(to, fresh).await).await;
            assert!(answered_as_a(&answer), "attempt {attempt}: {answer:?}");
        }
        let mut cut = 0;
        for stall in &stalls {
            if !held(stall).await {
                cut += 1;
            }
        }
        assert_eq!(cut, 0, "of {} stalls", stalls.len());
    }
}
