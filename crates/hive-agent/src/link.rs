//! The harness's end of the link (`hive_proto::link`): when the container
//! has no unix sockets of core's (an agent on another host), the harness
//! makes them itself and carries each connection over TLS to core, so the
//! turn loop, the MCP server and the engine see the usual world:
//!
//! - the agent socket and the egress socket are local unix listeners, each
//!   connection piped to a fresh link connection of that channel;
//! - the control dir is a local dir the link keeps equal to core's;
//! - the page: a tunnel connection stays open, and each stream core asks
//!   for on it is a new link connection piped to the local page socket;
//! - `/state`: restored from core's checkpoint at start when one is
//!   pending, and a tar of it sent whenever core asks on the state tunnel
//!   ([`checkpoint`]).
//!
//! The harness trusts only the hive's CA (from its credential dir) and
//! core's name [`SERVER_NAME`]; its own certificate is its identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hive_proto::link::{
    ALPN_AGENT, ALPN_CONTROL, ALPN_EGRESS, ALPN_PAGE, ALPN_PAGE_STREAM, CA_FILE, CERT_FILE,
    ControlFiles, KEY_FILE, PageOpen, SERVER_NAME,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub mod checkpoint;

/// How long a link connection may take to open.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the harness waits for the control files at start.
const FIRST_CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait before a lost control or page connection is opened again.
const REDIAL: Duration = Duration::from_secs(1);

/// Where core's link is and which credential to present.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub addr: String,
    pub credentials: PathBuf,
}

impl LinkConfig {
    /// From `HIVE_LINK_ADDR` and `HIVE_LINK_CREDENTIALS`; `None` without
    /// an address (the unix transport).
    pub fn from_env() -> Option<Self> {
        let addr = std::env::var(hive_proto::link::env::ADDR)
            .ok()
            .filter(|a| !a.is_empty())?;
        let credentials = std::env::var_os(hive_proto::link::env::CREDENTIALS)
            .map(PathBuf::from)
            .unwrap_or_default();
        Some(Self { addr, credentials })
    }
}

/// Opens link connections, one channel (ALPN) each.
#[derive(Clone)]
pub struct Dialer {
    addr: String,
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").field("addr", &self.addr).finish()
    }
}

impl Dialer {
    /// Reads the credential dir: the CA (the only root), the certificate
    /// and its key.
    pub fn load(config: &LinkConfig) -> anyhow::Result<Self> {
        let dir = &config.credentials;
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).with_context(|| format!("read {}", path.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(CA_FILE)?) {
            roots
                .add(ca.context("the hive CA")?)
                .context("the hive CA")?;
        }
        let chain = CertificateDer::pem_slice_iter(&read(CERT_FILE)?)
            .collect::<Result<Vec<_>, _>>()
            .context("the agent's certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&read(KEY_FILE)?).context("the agent's key")?;
        Self::new(&config.addr, roots, chain, key)
    }

    /// A dialer presenting `chain`/`key` to `addr`, trusting `roots` only.
    pub fn new(
        addr: &str,
        roots: rustls::RootCertStore,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("the agent's credential")?;
        Ok(Self {
            addr: addr.to_owned(),
            config: Arc::new(config),
        })
    }

    /// A new connection on `alpn`'s channel.
    pub async fn dial(&self, alpn: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        let connector = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(SERVER_NAME).map_err(std::io::Error::other)?;
        let dial = async {
            let tcp = TcpStream::connect(&self.addr).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name, tcp).await
        };
        tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| std::io::Error::other(format!("link {} timed out", self.addr)))?
    }
}

/// The local ends of the link, as the harness's flags name them.
#[derive(Debug, Clone)]
pub struct Local<'a> {
    pub socket: &'a Path,
    pub egress: Option<&'a Path>,
    pub page: Option<&'a Path>,
    pub control_dir: &'a Path,
    /// `/state`: restored before anything reads it, checkpointed on ask.
    pub state: &'a Path,
}

/// What core said over the link at start. The copies in the link dir are
/// the agent's to write (it can plant a file there, or block the harness's
/// writes, and a planted file outlives a restart): the harness acts on
/// these, core's word, never on the copies.
#[derive(Debug)]
pub struct Linked {
    /// Whether core says the agent is paused, kept current.
    pub paused: tokio::sync::watch::Receiver<bool>,
    /// Core's control files as they were at start (the deployed config).
    pub files: ControlFiles,
}

/// Starts the link: binds the local sockets, starts the page tunnel, and
/// returns once core's control files arrived (copied into the control dir
/// for the agent to read).
pub async fn start(config: &LinkConfig, local: Local<'_>) -> anyhow::Result<Linked> {
    let dialer = Dialer::load(config)?;
    relay(&dialer, local.socket, ALPN_AGENT)?;
    if let Some(egress) = local.egress {
        relay(&dialer, egress, ALPN_EGRESS)?;
    }
    if let Some(page) = local.page {
        tokio::spawn(page_tunnel(dialer.clone(), page.to_owned()));
    }
    std::fs::create_dir_all(local.control_dir)
        .with_context(|| format!("create {}", local.control_dir.display()))?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let (paused_tx, paused_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(control(
        dialer.clone(),
        local.control_dir.to_owned(),
        paused_tx,
        Some(first_tx),
    ));
    let files = tokio::time::timeout(FIRST_CONTROL_TIMEOUT, first_rx)
        .await
        .map_err(|_| anyhow::anyhow!("no control files from core over the link in time"))?
        .map_err(|_| anyhow::anyhow!("the link's control channel ended"))?;
    // Before the first turn, and before core may ask for a checkpoint.
    checkpoint::restore(&dialer, local.state)
        .await
        .context("restore /state from core's checkpoint")?;
    tokio::spawn(checkpoint::tunnel(dialer, local.state.to_owned()));
    tracing::info!(addr = %config.addr, "linked to core over TLS");
    Ok(Linked {
        paused: paused_rx,
        files,
    })
}

/// Binds `path` and pipes each connection to a new link connection on
/// `alpn`.
fn relay(dialer: &Dialer, path: &Path, alpn: &'static str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    let dialer = dialer.clone();
    tokio::spawn(async move {
        loop {
            let mut local = match listener.accept().await {
                Ok((local, _)) => local,
                Err(e) => {
                    tracing::warn!("link {alpn}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let dialer = dialer.clone();
            tokio::spawn(async move {
                match dialer.dial(alpn).await {
                    Ok(mut remote) => {
                        let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                    }
                    Err(e) => tracing::warn!("link {alpn}: {e}"),
                }
            });
        }
    });
    Ok(())
}

/// Keeps `dir` equal to core's control files, dialling again when the
/// channel drops; `first` hears the first snapshot.
async fn control(
    dialer: Dialer,
    dir: PathBuf,
    paused: tokio::sync::watch::Sender<bool>,
    mut first: Option<tokio::sync::oneshot::Sender<ControlFiles>>,
) {
    loop {
        match dialer.dial(ALPN_CONTROL).await {
            Ok(stream) => {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<ControlFiles>(&line) {
                        Ok(files) => {
                            paused.send_replace(files.paused.is_some());
                            if let Err(e) = write_control(&dir, &files) {
                                tracing::warn!("link control: {e:#}");
                            }
                            if let Some(first) = first.take() {
                                let _ = first.send(files);
                            }
                        }
                        Err(e) => tracing::warn!("link control: a bad line: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("link control: {e}"),
        }
        tokio::time::sleep(REDIAL).await;
    }
}

/// Writes (or removes) each control file, by a fresh file renamed over.
fn write_control(dir: &Path, files: &ControlFiles) -> anyhow::Result<()> {
    for (name, text) in [
        (hive_proto::control::DEPLOYED, &files.deployed),
        (hive_proto::control::PAUSED, &files.paused),
    ] {
        let path = dir.join(name);
        match text {
            Some(text) => {
                let tmp = dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
                std::fs::rename(&tmp, &path)
                    .with_context(|| format!("write {}", path.display()))?;
            }
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
            },
        }
    }
    Ok(())
}

/// The page tunnel: for each stream core asks for, a new link connection
/// that names it, piped to the local page socket.
async fn page_tunnel(dialer: Dialer, page: PathBuf) {
    loop {
        match dialer.dial(ALPN_PAGE).await {
            Ok(stream) => {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Ok(ask) = serde_json::from_str::<PageOpen>(&line) else {
                        tracing::warn!("link page: a bad line");
                        continue;
                    };
                    tokio::spawn(page_stream(dialer.clone(), page.clone(), ask));
                }
            }
            Err(e) => tracing::warn!("link page: {e}"),
        }
        tokio::time::sleep(REDIAL).await;
    }
}

async fn page_stream(dialer: Dialer, page: PathBuf, ask: PageOpen) {
    let opened = async {
        let mut local = UnixStream::connect(&page).await?;
        let mut remote = dialer.dial(ALPN_PAGE_STREAM).await?;
        remote
            .write_all(format!("{}\n", ask.stream).as_bytes())
            .await?;
        tokio::io::copy_bidirectional(&mut local, &mut remote).await
    };
    if let Err(e) = opened.await {
        tracing::debug!("link page stream: {e}");
    }
}
