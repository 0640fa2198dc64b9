//! The link's state in core (`hive serve --agent-transport tls`): the
//! hive's CA, one credential per agent container, the page tunnels and
//! the control feeds. The listener that serves it is `link_server`; the
//! wire is `hive_proto::link`.
//!
//! A credential is a client certificate the CA signs at every container
//! create ([`Link::issue`]), written to the agent's own control dir
//! (`credential/`, the key readable by the agent's uid alone) and known to
//! core by its exact bytes: a connection is the agent whose *current*
//! certificate it presented, and nobody else. Issuing anew or destroying
//! ([`Link::revoke`]) forgets the previous certificate and cuts every
//! connection made with it at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use anyhow::Context;
use hive_proto::AgentName;
use hive_proto::link::{CA_FILE, CERT_FILE, CREDENTIAL_DIR, KEY_FILE};
use hive_runtime::AgentUser;
use tokio::sync::watch;

use crate::Paths;

mod ca;
mod revoke;
mod tunnel;

pub use revoke::{Revocable, Revocation};
pub use tunnel::{PageIo, PageStream, Tunnels};

/// The ALPN names core serves, each a channel of `hive_proto::link`.
pub const ALPNS: [&str; 6] = [
    hive_proto::link::ALPN_AGENT,
    hive_proto::link::ALPN_EGRESS,
    hive_proto::link::ALPN_CONTROL,
    hive_proto::link::ALPN_PAGE,
    hive_proto::link::ALPN_PAGE_STREAM,
    hive_proto::link::ALPN_STATE,
];

/// The largest checkpoint core keeps by default (`--checkpoint-cap`).
pub const DEFAULT_CHECKPOINT_CAP: u64 = 4 << 30;

/// Where the link listens and what containers are told.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The address the listener binds.
    pub listen: std::net::SocketAddr,
    /// `host:port` containers dial; `None`: the bound address.
    pub advertise: Option<String>,
    /// The container network that reaches it (docker).
    pub network: Option<String>,
    /// The largest checkpoint core keeps (bytes).
    pub checkpoint_cap: u64,
}

#[derive(Debug)]
pub struct Link {
    ca: ca::Ca,
    /// `host:port` containers dial.
    pub addr: String,
    pub network: Option<String>,
    /// The TLS server side: core's certificate, client certificates
    /// required and checked against the CA, [`ALPNS`].
    pub server: Arc<rustls::ServerConfig>,
    registry: Mutex<Registry>,
    pub tunnels: Tunnels,
    /// The state tunnels: core asks on them for checkpoints
    /// (`crate::checkpoint`), a stream counting only from the agent asked.
    pub state_tunnels: Tunnels,
    /// The largest checkpoint core keeps (bytes).
    pub checkpoint_cap: u64,
    /// Bumped whenever core changes an agent's control files.
    control: Mutex<HashMap<AgentName, watch::Sender<()>>>,
}

#[derive(Debug, Default)]
struct Registry {
    by_cert: HashMap<Vec<u8>, AgentName>,
    by_agent: HashMap<AgentName, Held>,
}

/// An agent's current certificate and the connections made with it.
#[derive(Debug, Default)]
struct Held {
    cert: Vec<u8>,
    live: Vec<Weak<Revocation>>,
}

impl Registry {
    /// Forgets `agent`'s certificate and cuts its connections.
    fn forget(&mut self, agent: &AgentName) {
        if let Some(held) = self.by_agent.remove(agent) {
            self.by_cert.remove(&held.cert);
            for conn in held.live.iter().filter_map(Weak::upgrade) {
                conn.revoke();
            }
        }
    }

    fn insert(&mut self, agent: &AgentName, cert: Vec<u8>) {
        self.forget(agent);
        self.by_cert.insert(cert.clone(), agent.clone());
        self.by_agent.insert(
            agent.clone(),
            Held {
                cert,
                live: Vec::new(),
            },
        );
    }
}

/// The credential dir of `name` (in its control dir).
pub fn credential_dir(paths: &Paths, name: &AgentName) -> PathBuf {
    paths.control_dir(name).join(CREDENTIAL_DIR)
}

impl Link {
    /// Opens (or makes) the CA in `<state-dir>/link/`, signs core's server
    /// certificate, and learns the credentials already issued (agents whose
    /// containers outlived a restart keep theirs).
    pub fn open(paths: &Paths, addr: String, network: Option<String>) -> anyhow::Result<Link> {
        let ca = ca::Ca::open(&paths.state_dir.join("link"))?;
        let server = ca.server()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            ca.roots()?,
            provider.clone(),
        )
        .build()
        .context("the client certificate verifier")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server.cert_der], server.key_der)
            .context("core's server certificate")?;
        config.alpn_protocols = ALPNS.iter().map(|a| a.as_bytes().to_vec()).collect();
        let mut registry = Registry::default();
        for name in paths.agents_on_disk()? {
            let cert = credential_dir(paths, &name).join(CERT_FILE);
            if let Ok(pem) = std::fs::read(&cert) {
                use rustls::pki_types::pem::PemObject;
                match rustls::pki_types::CertificateDer::from_pem_slice(&pem) {
                    Ok(der) => registry.insert(&name, der.to_vec()),
                    Err(e) => tracing::warn!(%name, "ignoring {}: {e}", cert.display()),
                }
            }
        }
        Ok(Link {
            ca,
            addr,
            network,
            server: Arc::new(config),
            registry: Mutex::new(registry),
            tunnels: Tunnels::default(),
            state_tunnels: Tunnels::default(),
            checkpoint_cap: DEFAULT_CHECKPOINT_CAP,
            control: Mutex::default(),
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues `name` a new credential: written to its control dir's
    /// `credential/` (the key 0400, the agent's uid's when it has one), the
    /// previous one forgotten and its connections cut. Returns the dir.
    pub fn issue(
        &self,
        paths: &Paths,
        name: &AgentName,
        user: Option<AgentUser>,
    ) -> anyhow::Result<PathBuf> {
        let issued = self.ca.client(name)?;
        let dir_path = credential_dir(paths, name);
        let dir = crate::safe_fs::Dir::create(&paths.state_dir, &dir_path, crate::paths::DIR_MODE)?;
        dir.write_file(CA_FILE, self.ca.cert_pem.as_bytes())?;
        dir.write_file(CERT_FILE, issued.cert_pem.as_bytes())?;
        dir.write_file_as(
            KEY_FILE,
            issued.key_pem.as_bytes(),
            0o400,
            user.map(|u| (u.uid, u.gid)),
        )?;
        self.registry().insert(name, issued.cert_der.to_vec());
        tracing::debug!(%name, "issued a link credential");
        Ok(dir_path)
    }

    /// Whether `name` holds a current credential.
    pub fn is_current(&self, name: &AgentName) -> bool {
        self.registry().by_agent.contains_key(name)
    }

    /// Revokes `name`'s credential: forgotten, its connections cut, its
    /// control feed dropped, its files removed.
    pub fn revoke(&self, paths: &Paths, name: &AgentName) -> anyhow::Result<()> {
        self.registry().forget(name);
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(dir) = crate::safe_fs::Dir::open(&paths.state_dir, &paths.control_dir(name))? {
            dir.remove_tree(std::ffi::OsStr::new(CREDENTIAL_DIR))?;
        }
        // What the agent left in its link dir must not greet the next
        // agent of this name (the dir is made again at its create).
        let link_dir = paths.link_dir(name);
        if let (Some(parent), Some(leaf)) = (link_dir.parent(), link_dir.file_name())
            && let Some(dir) = crate::safe_fs::Dir::open(&paths.run_dir, parent)?
        {
            dir.remove_tree(leaf)?;
        }
        tracing::info!(%name, "revoked the link credential");
        Ok(())
    }

    /// The agent whose current certificate is `cert`, with the notice that
    /// cuts this connection when it is revoked.
    pub fn identify(&self, cert: &[u8]) -> Option<(AgentName, Arc<Revocation>)> {
        let mut registry = self.registry();
        let name = registry.by_cert.get(cert)?.clone();
        let held = registry.by_agent.get_mut(&name)?;
        let revocation = Arc::new(Revocation::default());
        held.live.retain(|w| w.strong_count() > 0);
        held.live.push(Arc::downgrade(&revocation));
        Some((name, revocation))
    }

    /// Tells `name`'s control feed its files changed.
    pub fn control_changed(&self, name: &AgentName) {
        if let Some(tx) = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            tx.send_replace(());
        }
    }

    /// A receiver that sees every later [`Link::control_changed`] of `name`.
    pub fn control_feed(&self, name: &AgentName) -> watch::Receiver<()> {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    /// `name`'s control files as they are now.
    pub fn control_files(paths: &Paths, name: &AgentName) -> hive_proto::link::ControlFiles {
        let dir = paths.control_dir(name);
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        hive_proto::link::ControlFiles {
            deployed: read(hive_proto::control::DEPLOYED),
            paused: read(hive_proto::control::PAUSED),
        }
    }
}
