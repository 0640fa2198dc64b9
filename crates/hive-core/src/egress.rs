//! Core's egress proxy: the one way out of an agent's sandbox.
//!
//! Each agent gets a unix socket, `Paths::egress_socket(name)`, bound with
//! the agent's own socket (at spawn and at daemon start, removed with it)
//! and bound into its container at `/run/hive/egress.sock`. The sandbox has
//! its own network namespace with nothing but loopback; the harness
//! (`hive_agent::egress`) listens on `127.0.0.1:<port>` inside it and pipes
//! every TCP connection to a fresh connection on this socket, and the
//! engine gets `HTTPS_PROXY`/`HTTP_PROXY` = `http://127.0.0.1:<port>` (and
//! an empty `NO_PROXY`).
//!
//! On each connection we speak HTTP/1.1 proxy (hyper): `CONNECT host:port`
//! → policy check → TCP connect → `200` → bytes copied both ways (TLS to
//! `api.anthropic.com` goes this way); an absolute-form request
//! (`POST http://host:port/path`, any method) → policy check → forwarded
//! over a fresh upstream connection, bodies streamed both ways (SSE is never
//! buffered), `Via: 1.1 hive-egress` added; anything else → `400`. A
//! refusal is a `403` with one plain-text line naming the target and the
//! policy, logged at info.
//!
//! The policy is the agent's deployed `agent.toml` `network` (see
//! [`hive_config::Network`]), kept per agent in [`Egress`], updated
//! whenever core installs a deployed config and read per connection, so a
//! deploy takes effect on the next connection. Names are resolved here, on
//! the host; EVERY resolved address is checked and the connection goes to
//! a checked address (no second resolution, so no DNS rebinding). Whatever
//! the policy, the proxy never connects to loopback, unspecified,
//! link-local (cloud metadata), multicast, broadcast or reserved
//! addresses, to any address of this host, nor to the hive's own listening
//! addresses — except the operator's model endpoint of the agent's engine,
//! exactly (host and port): for `claude` the `ANTHROPIC_BASE_URL` of the
//! hive's agent environment (`--agent-env`, `<state-dir>/agent.env`;
//! default `https://api.anthropic.com`), for `codex` its `OPENAI_BASE_URL`
//! (default `https://api.openai.com/v1`), never an agent's config. An
//! agent reaches only its own engine's endpoint, never the other's.
//!
//! Why plain `HTTP_PROXY` is enough for a loopback model endpoint: checked
//! with claude CLI 2.1.332, whose runtime sends `POST
//! http://127.0.0.1:<port>/v1/messages?beta=true` in absolute form to
//! `HTTP_PROXY` even for a loopback `ANTHROPIC_BASE_URL` when `NO_PROXY` is
//! empty, and `CONNECT` for an https one. So no pseudo-target or
//! rewritten base URL is needed: the engine keeps the operator's URL, and
//! the proxy recognises it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hive_config::{ConfigRepos, Engine, Network};
use hive_proto::AgentName;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::listener;

/// The model endpoint when the operator configured none.
pub const DEFAULT_MODEL_URL: &str = "https://api.anthropic.com";
/// The codex engine's endpoint when the operator configured none.
pub const DEFAULT_CODEX_URL: &str = "https://api.openai.com/v1";
/// The `Via` the proxy adds to every request it forwards in absolute form.
pub const VIA: &str = "1.1 hive-egress";
/// How long a TCP connect to an upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

type Body = BoxBody<Bytes, hyper::Error>;

/// A host and port as a client names them (host lowercase, no brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The host and port of an `http://` or `https://` URL.
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let (rest, default_port) = if let Some(rest) = url.strip_prefix("https://") {
            (rest, 443)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (rest, 80)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = split_authority(authority)
            .ok_or_else(|| format!("{url:?} has no valid host[:port]"))?;
        Ok(Endpoint {
            host,
            port: port.unwrap_or(default_port),
        })
    }

    /// Whether `host:port` names this endpoint.
    pub fn is(&self, host: &str, port: u16) -> bool {
        port == self.port && normalize_host(host) == self.host
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → (normalized host, port).
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    let host = normalize_host(host);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    Some((host, port))
}

fn normalize_host(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The variable of the agent environment naming `engine`'s model
/// endpoint, and the endpoint when it is unset.
pub fn endpoint_var(engine: Engine) -> (&'static str, &'static str) {
    match engine {
        Engine::Claude => ("ANTHROPIC_BASE_URL", DEFAULT_MODEL_URL),
        Engine::Codex => ("OPENAI_BASE_URL", DEFAULT_CODEX_URL),
    }
}

/// The operator's model endpoint (claude's): the last `ANTHROPIC_BASE_URL`
/// of the hive's agent environment, else [`DEFAULT_MODEL_URL`].
pub fn model_endpoint(agent_env: &[(String, String)]) -> Result<Endpoint, String> {
    engine_endpoint(agent_env, Engine::Claude)
}

/// `engine`'s model endpoint from the hive's agent environment.
pub fn engine_endpoint(agent_env: &[(String, String)], engine: Engine) -> Result<Endpoint, String> {
    let (var, default) = endpoint_var(engine);
    let url = agent_env
        .iter()
        .rev()
        .find(|(k, v)| k == var && !v.is_empty())
        .map_or(default, |(_, v)| v.as_str());
    Endpoint::from_url(url).map_err(|e| format!("{var}: {e}"))
}

/// Every engine.
const ENGINES: [Engine; 2] = [Engine::Claude, Engine::Codex];

/// The daemon-start check: the model endpoint parses, and is not the
/// dashboard's own address (the one exception to the proxy's address rules
/// must never open the operator's control plane to agents).
pub fn check_settings(
    agent_env: &[(String, String)],
    dashboard: Option<SocketAddr>,
) -> anyhow::Result<Vec<(Engine, Endpoint)>> {
    ENGINES
        .iter()
        .map(|engine| Ok((*engine, check_endpoint(agent_env, dashboard, *engine)?)))
        .collect()
}

fn check_endpoint(
    agent_env: &[(String, String)],
    dashboard: Option<SocketAddr>,
    engine: Engine,
) -> anyhow::Result<Endpoint> {
    let model = engine_endpoint(agent_env, engine).map_err(anyhow::Error::msg)?;
    if let Some(dashboard) = dashboard
        && model.port == dashboard.port()
    {
        let ip = match model.host.as_str() {
            "localhost" => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host => host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical()),
        };
        let same = ip.is_some_and(|ip| {
            ip == dashboard.ip()
                || (dashboard.ip().is_unspecified() && (ip.is_loopback() || is_host_address(ip)))
                || (dashboard.ip().is_loopback() && ip.is_loopback())
        });
        if same {
            anyhow::bail!(
                "the model endpoint {model} ({}) is the dashboard's own address {dashboard}: \
                 agents would reach the operator's dashboard through their egress proxy",
                endpoint_var(engine).0
            );
        }
    }
    Ok(model)
}

/// What core knows about egress: the operator's model endpoint per
/// engine, the hive's own listening addresses, and each agent's current
/// policy and engine.
pub struct Egress {
    models: Vec<(Engine, Endpoint)>,
    hive: Vec<SocketAddr>,
    /// Where a policy not yet installed this run is read from (the
    /// deployed `agent.toml` in the applied repo).
    repos: Option<ConfigRepos>,
    policies: Mutex<HashMap<AgentName, (Network, Engine)>>,
}

impl Egress {
    /// `agent_env` is the hive's agent environment (for the model
    /// endpoint; an unparsable one allows no model, and the daemon refuses
    /// to start with it, see [`check_settings`]); `hive` the addresses the
    /// hive listens on.
    pub fn new(
        agent_env: &[(String, String)],
        hive: Vec<SocketAddr>,
        repos: Option<ConfigRepos>,
    ) -> Self {
        Self {
            models: ENGINES
                .iter()
                .filter_map(|e| Some((*e, engine_endpoint(agent_env, *e).ok()?)))
                .collect(),
            hive,
            repos,
            policies: Mutex::new(HashMap::new()),
        }
    }

    fn policies(&self) -> std::sync::MutexGuard<'_, HashMap<AgentName, (Network, Engine)>> {
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Installs `name`'s policy and engine (whose model endpoint `"model"`
    /// and every other policy allow); the next connection uses them.
    pub fn set_policy(&self, name: &AgentName, policy: Network, engine: Engine) {
        self.policies().insert(name.clone(), (policy, engine));
    }

    /// `name`'s engine as last installed, if it was.
    pub fn engine_of(&self, name: &AgentName) -> Option<Engine> {
        self.policies().get(name).map(|(_, engine)| *engine)
    }

    /// `name`'s current policy and engine: the installed ones, else the
    /// deployed config's, else the defaults (`"model"`, claude).
    pub async fn policy(&self, name: &AgentName) -> (Network, Engine) {
        if let Some(policy) = self.policies().get(name) {
            return policy.clone();
        }
        let deployed = match self.repos.clone() {
            Some(repos) => {
                let name = name.clone();
                tokio::task::spawn_blocking(move || repos.deployed(&name))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        let policy = deployed
            .map(|d| (d.config.network, d.config.engine))
            .unwrap_or_default();
        self.policies()
            .entry(name.clone())
            .or_insert(policy)
            .clone()
    }

    /// `engine`'s model endpoint.
    pub fn model(&self, engine: Engine) -> Option<&Endpoint> {
        self.models
            .iter()
            .find(|(e, _)| *e == engine)
            .map(|(_, m)| m)
    }

    fn rules(&self, engine: Engine) -> Rules<'_> {
        Rules {
            model: self.model(engine),
            hive: &self.hive,
            host_address: &is_host_address,
        }
    }
}

/// What [`check`] needs besides the policy.
pub struct Rules<'a> {
    /// The operator's model endpoint for the agent's engine.
    pub model: Option<&'a Endpoint>,
    /// The hive's own listening addresses (the dashboard).
    pub hive: &'a [SocketAddr],
    /// Whether an address belongs to this host.
    pub host_address: &'a (dyn Fn(IpAddr) -> bool + Sync),
}

/// Decides whether `agent` under `policy` may connect to `host:port`, which
/// resolved to `addrs` (all of them are checked). `Err` is the one-line
/// reason the agent reads.
pub fn check(
    rules: &Rules<'_>,
    agent: &str,
    policy: &Network,
    host: &str,
    port: u16,
    addrs: &[IpAddr],
) -> Result<(), String> {
    let target = Endpoint {
        host: normalize_host(host),
        port,
    };
    let refuse = |why: String| Err(format!("egress to {target} refused: {why}"));
    let policy_text = format!("agent {agent}'s network policy is {policy}");
    if *policy == Network::None {
        return refuse(policy_text);
    }
    if addrs.is_empty() {
        return refuse(format!("{} resolved to no address", target.host));
    }
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| canonical(*a)).collect();
    for addr in &addrs {
        let own = rules.hive.iter().any(|h| {
            h.port() == port
                && (canonical(h.ip()) == *addr
                    || (h.ip().is_unspecified()
                        && (addr.is_loopback() || (rules.host_address)(*addr))))
        });
        if own {
            return refuse(format!(
                "{} is the hive's own listening address, never reachable from an agent",
                SocketAddr::new(*addr, port)
            ));
        }
    }
    if rules.model.is_some_and(|m| m.is(host, port)) {
        // The operator configured it: allowed exactly, even on loopback.
        return Ok(());
    }
    for addr in &addrs {
        let class = never_reachable(*addr)
            .or_else(|| (rules.host_address)(*addr).then_some("one of this host's own addresses"));
        if let Some(class) = class {
            return refuse(format!(
                "{addr} is {class}, never reachable from an agent ({policy_text})"
            ));
        }
    }
    match policy {
        Network::None | Network::Model => refuse(policy_text),
        Network::Hosts(_) if policy.lists(host, port) => Ok(()),
        Network::Hosts(_) => refuse(policy_text),
        Network::Full => match addrs.iter().find(|a| !is_public(**a)) {
            Some(addr) => refuse(format!(
                "{addr} is not a public address and {policy_text} (public addresses only)"
            )),
            None => Ok(()),
        },
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses
/// as the IPv4 address they reach.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [.., a, b, c, d] = v6.octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            } else {
                addr.to_canonical()
            }
        }
        IpAddr::V4(_) => addr,
    }
}

/// Why no policy reaches `addr` (already [`canonical`]), if so.
fn never_reachable(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("the host's loopback")
            } else if v4.is_unspecified() || a == 0 {
                Some("an unspecified address")
            } else if v4.is_link_local() {
                Some("link-local (where cloud metadata lives)")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if a >= 240 {
                Some("reserved")
            } else if a == 192 && b == 0 && v4.octets()[2] == 0 {
                Some("IETF protocol assignments")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_loopback() {
                Some("the host's loopback")
            } else if v6.is_unspecified() {
                Some("an unspecified address")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (deprecated): refuse rather than guess.
                Some("reserved")
            } else {
                None
            }
        }
    }
}

/// Whether `addr` (already [`canonical`], not [`never_reachable`]) is a
/// public address: not private (RFC 1918), shared, benchmarking or
/// documentation space; for IPv6, global unicast other than 6to4.
fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 2)
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Global unicast only (2000::/3), less documentation and 6to4
            // (2002::/16 embeds an IPv4 address of any kind); this leaves
            // out ULA, site-local, IPv4-translated and local NAT64 forms.
            s[0] & 0xe000 == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8) && s[0] != 0x2002
        }
    }
}

/// Whether `addr` is one of this host's own addresses: only those can be
/// bound (without `ip_nonlocal_bind`), so a bind to port 0 tells.
pub fn is_host_address(addr: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(addr, 0)).is_ok()
}

/// One agent's end of the proxy: every connection on its egress socket.
/// Concurrent connections (tunnels included) one agent's proxy serves.
pub const MAX_CONNECTIONS: usize = 256;
/// Open `CONNECT` tunnels one agent may hold. A tunnel outlives its
/// connection's slot (hyper hands the stream over on upgrade), so it is
/// counted apart; past the cap a `CONNECT` is a `503`.
pub const MAX_TUNNELS: usize = 256;

#[derive(Clone)]
pub struct Proxy {
    egress: Arc<Egress>,
    agent: AgentName,
    tunnels: Arc<tokio::sync::Semaphore>,
}

impl Proxy {
    pub fn new(egress: Arc<Egress>, agent: AgentName) -> Self {
        Self {
            egress,
            agent,
            tunnels: Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS)),
        }
    }

    /// Binds `path` and returns its accept loop (run it; drop or abort it
    /// to stop accepting).
    pub fn bind(self, path: &Path) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
        let socket = listener::bind(path)?;
        Ok(listener::accept_streams(
            socket,
            MAX_CONNECTIONS,
            move |stream| self.clone().serve(stream),
        ))
    }

    /// Serves one connection: HTTP/1.1 proxy requests until the client
    /// leaves or a tunnel takes the connection over.
    pub async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let agent = self.agent.clone();
        let service = hyper::service::service_fn(move |request| {
            let proxy = self.clone();
            async move { Ok::<_, Infallible>(proxy.handle(request).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
        if let Err(e) = served {
            tracing::debug!(%agent, "egress connection ended: {e}");
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() == Method::CONNECT {
            self.tunnel(request).await
        } else if request.uri().scheme().is_some() && request.uri().authority().is_some() {
            self.forward(request).await
        } else {
            text(
                StatusCode::BAD_REQUEST,
                "the egress proxy takes `CONNECT host:port` or absolute-form `http://` requests",
            )
        }
    }

    /// Resolves, checks every address, and connects to a checked one.
    async fn open(&self, host: &str, port: u16) -> Result<TcpStream, Response<Body>> {
        let (policy, engine) = self.egress.policy(&self.agent).await;
        let target = Endpoint {
            host: normalize_host(host),
            port,
        };
        let addrs: Vec<IpAddr> = if policy == Network::None {
            Vec::new() // refused below without a lookup
        } else if let Ok(ip) = target.host.parse::<IpAddr>() {
            vec![ip]
        } else {
            match tokio::net::lookup_host((target.host.as_str(), port)).await {
                Ok(found) => found.map(|a| a.ip()).collect(),
                Err(e) => {
                    return Err(text(
                        StatusCode::BAD_GATEWAY,
                        &format!("egress to {target}: cannot resolve {}: {e}", target.host),
                    ));
                }
            }
        };
        let verdict = check(
            &self.egress.rules(engine),
            self.agent.as_str(),
            &policy,
            host,
            port,
            &addrs,
        );
        if let Err(why) = verdict {
            tracing::info!(agent = %self.agent, "{why}");
            return Err(text(StatusCode::FORBIDDEN, &why));
        }
        let mut last = None;
        for addr in addrs {
            let to = SocketAddr::new(canonical(addr), port);
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(e)) => last = Some(format!("{to}: {e}")),
                Err(_) => last = Some(format!("{to}: no answer within {CONNECT_TIMEOUT:?}")),
            }
        }
        Err(text(
            StatusCode::BAD_GATEWAY,
            &format!(
                "egress to {target}: cannot connect ({})",
                last.unwrap_or_default()
            ),
        ))
    }

    /// `CONNECT host:port`: a checked TCP connection, then raw bytes.
    async fn tunnel(&self, request: Request<Incoming>) -> Response<Body> {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let Some((host, Some(port))) = split_authority(&authority) else {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("CONNECT needs host:port, got {authority:?}"),
            );
        };
        let Ok(permit) = self.tunnels.clone().try_acquire_owned() else {
            tracing::info!(agent = %self.agent, "egress CONNECT refused: {MAX_TUNNELS} tunnels open");
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("egress to {host}:{port}: {MAX_TUNNELS} tunnels already open"),
            );
        };
        let upstream = match self.open(&host, port).await {
            Ok(tcp) => tcp,
            Err(refusal) => return refusal,
        };
        let agent = self.agent.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match hyper::upgrade::on(request).await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let mut upstream = upstream;
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(%agent, "egress tunnel to {host}:{port} ended: {e}");
                    }
                }
                Err(e) => tracing::debug!(%agent, "egress CONNECT not upgraded: {e}"),
            }
        });
        Response::new(empty())
    }

    /// An absolute-form request: forwarded over a fresh upstream connection,
    /// bodies streamed.
    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        let uri = request.uri().clone();
        if uri.scheme_str() != Some("http") {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("absolute-form requests must be http://; use CONNECT for {uri}"),
            );
        }
        let Some((host, port)) = uri
            .authority()
            .and_then(|a| split_authority(a.as_str()))
            .map(|(h, p)| (h, p.unwrap_or(80)))
        else {
            return text(StatusCode::BAD_REQUEST, &format!("no host in {uri}"));
        };
        let upstream = match self.open(&host, port).await {
            Ok(tcp) => tcp,
            Err(refusal) => return refusal,
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
                Ok(pair) => pair,
                Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("egress to {uri}: {e}")),
            };
        let agent = self.agent.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%agent, "egress upstream connection ended: {e}");
            }
        });
        let (mut parts, body) = request.into_parts();
        parts.uri = match uri.path_and_query() {
            Some(pq) => pq.as_str().parse().unwrap_or_default(),
            None => hyper::Uri::from_static("/"),
        };
        strip_hop_by_hop(&mut parts.headers);
        // The host the policy allowed, never one the client names in a
        // `Host` of its own (a virtual-host pivot through an allowed
        // reverse proxy).
        parts.headers.remove(header::HOST);
        if let Some(authority) = uri.authority()
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, value);
        }
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static(VIA));
        match sender.send_request(Request::from_parts(parts, body)).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .append(header::VIA, HeaderValue::from_static(VIA));
                Response::from_parts(parts, body.boxed())
            }
            Err(e) => text(StatusCode::BAD_GATEWAY, &format!("egress to {uri}: {e}")),
        }
    }
}

/// Removes the headers that describe one hop, not the message (RFC 9110
/// §7.6.1), including those the `Connection` header names. Framing
/// (`Content-Length`, `Transfer-Encoding`) stays: hyper re-frames by it.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| *name != header::CONTENT_LENGTH && *name != header::TRANSFER_ENCODING)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text answer of one line.
fn text(status: StatusCode, line: &str) -> Response<Body> {
    let body = Full::new(Bytes::from(format!("{line}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn model() -> Endpoint {
        Endpoint::from_url("http://127.0.0.1:4000/v1").unwrap()
    }

    /// `check` with the model on 127.0.0.1:4000, the dashboard on
    /// 127.0.0.1:7000, and 192.0.2.77 standing in for a host address.
    fn verdict(policy: &Network, host: &str, port: u16, addrs: &[&str]) -> Result<(), String> {
        let model = model();
        let hive = [SocketAddr::from(([127, 0, 0, 1], 7000))];
        let host_address = |a: IpAddr| a == ip("192.0.2.77");
        let rules = Rules {
            model: Some(&model),
            hive: &hive,
            host_address: &host_address,
        };
        let addrs: Vec<IpAddr> = addrs.iter().map(|a| ip(a)).collect();
        check(&rules, "coder", policy, host, port, &addrs)
    }

    /// "model" means the agent's own engine's endpoint: a codex agent
    /// reaches `OPENAI_BASE_URL` and not `ANTHROPIC_BASE_URL`, a claude
    /// agent the reverse; an engine switch moves the exception with it.
    #[tokio::test]
    async fn the_model_endpoint_is_the_agents_engines() {
        let env = vec![
            (
                "ANTHROPIC_BASE_URL".to_owned(),
                "http://127.0.0.1:4000".to_owned(),
            ),
            (
                "OPENAI_BASE_URL".to_owned(),
                "http://127.0.0.1:4100/v1".to_owned(),
            ),
        ];
        let egress = Egress::new(&env, Vec::new(), None);
        let name = AgentName::parse("coder").unwrap();
        let reach = |engine: Engine, port: u16| {
            check(
                &egress.rules(engine),
                "coder",
                &Network::Model,
                "127.0.0.1",
                port,
                &[ip("127.0.0.1")],
            )
        };
        assert_eq!(egress.policy(&name).await, (Network::Model, Engine::Claude));
        assert!(reach(Engine::Claude, 4000).is_ok());
        assert!(reach(Engine::Claude, 4100).is_err());
        egress.set_policy(&name, Network::Model, Engine::Codex);
        let (policy, engine) = egress.policy(&name).await;
        assert_eq!((&policy, engine), (&Network::Model, Engine::Codex));
        assert!(reach(engine, 4100).is_ok());
        let refused = reach(engine, 4000).unwrap_err();
        assert!(refused.contains("the host's loopback"), "{refused}");
        // No OPENAI_BASE_URL: the public API, never a loopback port.
        let egress = Egress::new(&env[..1], Vec::new(), None);
        assert_eq!(
            egress.model(Engine::Codex).unwrap().to_string(),
            "api.openai.com:443"
        );
        let dashboard = Some("127.0.0.1:4100".parse().unwrap());
        let e = check_settings(&env, dashboard).unwrap_err().to_string();
        assert!(e.contains("OPENAI_BASE_URL"), "{e}");
    }

    #[test]
    fn endpoints() {
        let e = |u: &str| Endpoint::from_url(u).map(|e| e.to_string());
        assert_eq!(
            e("https://api.anthropic.com").unwrap(),
            "api.anthropic.com:443"
        );
        assert_eq!(e("http://Example.COM./x?y").unwrap(), "example.com:80");
        assert_eq!(e("http://u:p@127.0.0.1:8080/v1").unwrap(), "127.0.0.1:8080");
        assert_eq!(e("https://[::1]:9/").unwrap(), "[::1]:9");
        assert!(e("ftp://x").is_err());
        assert!(e("http://:80").is_err());
        assert!(e("http://x:0").is_err());
        let env = |v: &str| vec![("ANTHROPIC_BASE_URL".to_owned(), v.to_owned())];
        assert_eq!(
            model_endpoint(&[]).unwrap().to_string(),
            "api.anthropic.com:443"
        );
        assert_eq!(
            model_endpoint(&env("http://127.0.0.1:5")).unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 5
            }
        );
    }

    #[test]
    fn the_model_endpoint_may_not_be_the_dashboard() {
        let env = |v: &str| vec![("ANTHROPIC_BASE_URL".to_owned(), v.to_owned())];
        let dashboard = Some(SocketAddr::from(([127, 0, 0, 1], 7000)));
        for url in [
            "http://127.0.0.1:7000",
            "http://localhost:7000/v1",
            "http://127.0.0.2:7000",
        ] {
            let e = check_settings(&env(url), dashboard).unwrap_err();
            assert!(e.to_string().contains("dashboard's own address"), "{e}");
        }
        check_settings(&env("http://127.0.0.1:7001"), dashboard).unwrap();
        check_settings(&env("http://127.0.0.1:7000"), None).unwrap();
        assert!(check_settings(&env("nonsense"), dashboard).is_err());
    }

    #[test]
    fn the_model_endpoint_is_the_one_loopback_exception() {
        for policy in [
            Network::Model,
            Network::Full,
            Network::Hosts(vec!["github.com".into()]),
        ] {
            verdict(&policy, "127.0.0.1", 4000, &["127.0.0.1"]).unwrap();
            let e = verdict(&policy, "127.0.0.1", 4001, &["127.0.0.1"]).unwrap_err();
            assert!(
                e.starts_with("egress to 127.0.0.1:4001 refused: 127.0.0.1 is the host's loopback"),
                "{e}"
            );
        }
        assert_eq!(
            verdict(&Network::None, "127.0.0.1", 4000, &["127.0.0.1"]).unwrap_err(),
            "egress to 127.0.0.1:4000 refused: agent coder's network policy is \"none\""
        );
    }

    #[test]
    fn never_reachable_whatever_the_policy() {
        let list = Network::Hosts(vec![
            "evil.example:80".into(),
            "169.254.169.254:80".into(),
            "10.0.0.5:80".into(),
        ]);
        for policy in [Network::Full, list] {
            for (addr, class) in [
                ("169.254.169.254", "link-local"),
                ("::1", "the host's loopback"),
                ("::ffff:127.0.0.1", "the host's loopback"),
                ("64:ff9b::7f00:1", "the host's loopback"),
                ("::7f00:1", "reserved"),
                ("fe80::1", "link-local"),
                ("0.0.0.0", "an unspecified address"),
                ("::", "an unspecified address"),
                ("224.0.0.1", "multicast"),
                ("ff02::1", "multicast"),
                ("255.255.255.255", "broadcast"),
                ("192.0.2.77", "one of this host's own addresses"),
            ] {
                let e = verdict(&policy, "evil.example", 80, &[addr]).unwrap_err();
                assert!(e.contains(&format!(" is {class}")), "{addr}: {e}");
                assert!(e.contains(&format!("network policy is {policy}")), "{e}");
            }
            // One bad address among good ones refuses the whole name.
            let e =
                verdict(&policy, "evil.example", 80, &["93.184.216.34", "127.0.0.1"]).unwrap_err();
            assert!(e.contains("127.0.0.1 is the host's loopback"), "{e}");
            // The hive's own ports, named in the message.
            let e = verdict(&policy, "localhost", 7000, &["127.0.0.1"]).unwrap_err();
            assert!(e.contains("127.0.0.1:7000 is the hive's own"), "{e}");
        }
    }

    #[test]
    fn policies() {
        let public = ["93.184.216.34"];
        // "model": only the model endpoint.
        assert_eq!(
            verdict(&Network::Model, "10.0.0.5", 80, &["10.0.0.5"]).unwrap_err(),
            "egress to 10.0.0.5:80 refused: agent coder's network policy is \"model\""
        );
        verdict(&Network::Model, "example.com", 443, &public).unwrap_err();
        // "full": public addresses only.
        verdict(&Network::Full, "example.com", 443, &public).unwrap();
        verdict(&Network::Full, "example.com", 22, &["2606:2800:220:1::1"]).unwrap();
        for private in [
            "10.0.0.5",
            "172.16.3.4",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            // 6to4 and IPv4-translated forms embed any IPv4 address.
            "2002:a00:5::1",
            "::ffff:0:a00:5",
            "64:ff9b:1::a00:5",
        ] {
            let e = verdict(&Network::Full, "intranet", 80, &[private]).unwrap_err();
            assert!(
                e.ends_with(&format!(
                    "{private} is not a public address and agent coder's network policy is \"full\" (public addresses only)"
                )),
                "{e}"
            );
        }
        // A list: its hosts (private ones too: the operator named them),
        // bare hosts on 80 and 443 only.
        let list = Network::Hosts(vec!["github.com".into(), "db.internal:5432".into()]);
        verdict(&list, "github.com", 443, &public).unwrap();
        verdict(&list, "GitHub.com.", 80, &public).unwrap();
        verdict(&list, "db.internal", 5432, &["10.0.0.9"]).unwrap();
        let e = verdict(&list, "github.com", 22, &public).unwrap_err();
        assert_eq!(
            e,
            "egress to github.com:22 refused: agent coder's network policy is [\"github.com\", \"db.internal:5432\"]"
        );
        verdict(&list, "gitlab.com", 443, &public).unwrap_err();
        verdict(&list, "127.0.0.1", 4000, &["127.0.0.1"]).unwrap();
        // "none": nothing, not even a public host.
        verdict(&Network::None, "example.com", 443, &public).unwrap_err();
    }

    #[test]
    fn host_addresses() {
        assert!(is_host_address(ip("127.0.0.1")));
        assert!(!is_host_address(ip("192.0.2.1")));
    }

    /// A tunnel leaves its connection's slot when hyper hands the stream
    /// over, so without their own cap an agent held any number of them
    /// (two of core's descriptors each) and could run core out of files.
    #[tokio::test(flavor = "multi_thread")]
    async fn tunnels_are_capped_per_agent() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let model = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = model.local_addr().unwrap().port();
        tokio::spawn(async move {
            // Holds each connection until its client leaves.
            while let Ok((mut stream, _)) = model.accept().await {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink).await;
                });
            }
        });
        let env = vec![(
            "ANTHROPIC_BASE_URL".to_owned(),
            format!("http://127.0.0.1:{port}"),
        )];
        let egress = Arc::new(Egress::new(&env, Vec::new(), None));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let accept = Proxy::new(egress, AgentName::parse("coder").unwrap())
            .bind(&path)
            .unwrap();
        tokio::spawn(accept);
        let mut open = Vec::new();
        let mut status = String::new();
        for _ in 0..=MAX_TUNNELS {
            let mut client = UnixStream::connect(&path).await.unwrap();
            client
                .write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = client.read(&mut buf).await.unwrap();
            status = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !status.starts_with("HTTP/1.1 200") {
                break;
            }
            open.push(client);
        }
        assert_eq!(open.len(), MAX_TUNNELS, "{status}");
        assert!(status.starts_with("HTTP/1.1 503"), "{status}");
        // A closed tunnel frees its place.
        drop(open.pop());
        let mut again = None;
        for _ in 0..100 {
            let mut client = UnixStream::connect(&path).await.unwrap();
            client
                .write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = client.read(&mut buf).await.unwrap();
            if buf[..n].starts_with(b"HTTP/1.1 200") {
                again = Some(client);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "a closed tunnel never freed its place");
    }
}
