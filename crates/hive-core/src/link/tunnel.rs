//! Page tunnels: core reaches an agent's page without dialling the agent.
//! The harness keeps one tunnel connection open; core asks on it for a
//! stream ([`hive_proto::link::PageOpen`] with a random id), and the
//! harness opens a new connection that names the id first. A stream counts
//! only from the agent whose page was asked for. The state tunnels of
//! checkpoints (`crate::checkpoint`) are a second [`Tunnels`], asked and
//! answered the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hive_proto::AgentName;
use hive_proto::link::PageOpen;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// How long core waits for the harness to open a stream it asked for.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests for streams one tunnel may have queued.
const QUEUE: usize = 64;

/// A byte stream to a page (a link stream, or the unix socket).
pub trait PageIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PageIo for T {}

pub type PageStream = Box<dyn PageIo>;

#[derive(Default)]
pub struct Tunnels {
    state: Mutex<State>,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tunnels")
    }
}

#[derive(Default)]
struct State {
    next: u64,
    /// The open tunnel of each agent: its number and its request queue.
    open: HashMap<AgentName, (u64, mpsc::Sender<PageOpen>)>,
    /// Streams asked for and not yet opened: for whom, and who waits.
    pending: HashMap<String, (AgentName, oneshot::Sender<PageStream>)>,
}

/// Removes its tunnel when the tunnel's connection ends (unless a newer
/// tunnel of the same agent replaced it).
pub struct TunnelGuard<'a> {
    tunnels: &'a Tunnels,
    agent: AgentName,
    number: u64,
}

impl Drop for TunnelGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.tunnels.lock();
        if state
            .open
            .get(&self.agent)
            .is_some_and(|(n, _)| *n == self.number)
        {
            state.open.remove(&self.agent);
        }
    }
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `agent`'s tunnel from now on (a previous one is dropped): the
    /// requests to write on it.
    pub fn register(&self, agent: &AgentName) -> (TunnelGuard<'_>, mpsc::Receiver<PageOpen>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut state = self.lock();
        state.next += 1;
        let number = state.next;
        state.open.insert(agent.clone(), (number, tx));
        drop(state);
        let guard = TunnelGuard {
            tunnels: self,
            agent: agent.clone(),
            number,
        };
        (guard, rx)
    }

    /// Whether `agent` has a tunnel open.
    pub fn has(&self, agent: &AgentName) -> bool {
        self.lock().open.contains_key(agent)
    }

    /// Asks `agent`'s harness for a stream to its page and waits for it.
    pub async fn open(&self, agent: &AgentName) -> Result<PageStream, String> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("random stream id: {e}"))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let (tx, rx) = oneshot::channel();
        let queue = {
            let mut state = self.lock();
            let Some((_, queue)) = state.open.get(agent) else {
                return Err("no tunnel: the harness is not linked (is it running?)".into());
            };
            let queue = queue.clone();
            state.pending.insert(id.clone(), (agent.clone(), tx));
            queue
        };
        let asked = queue.try_send(PageOpen { stream: id.clone() }).is_ok();
        let opened = if asked {
            tokio::time::timeout(OPEN_TIMEOUT, rx)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        };
        self.lock().pending.remove(&id);
        opened.ok_or_else(|| "the harness opened no stream in time".to_owned())
    }

    /// A stream `agent` opened for `id`: handed to whoever waits for it,
    /// if it was asked of `agent`; else refused.
    pub fn deliver(&self, agent: &AgentName, id: &str, stream: PageStream) -> Result<(), String> {
        let mut state = self.lock();
        match state.pending.get(id) {
            Some((owner, _)) if owner == agent => {}
            Some(_) => return Err(format!("{agent} answered another agent's stream")),
            None => return Err(format!("{agent} opened a stream nobody asked for")),
        }
        let Some((_, waiter)) = state.pending.remove(id) else {
            return Err("gone".into());
        };
        waiter
            .send(stream)
            .map_err(|_| "nobody waits for the stream any more".to_owned())
    }
}
