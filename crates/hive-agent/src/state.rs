//! The harness's shared state: what the turn loop is doing, the model, the
//! operator's controls (cancel, new session), shared between the loop and
//! the web server. Every change is also a [`LiveEvent`] on the bus.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hive_proto::live::{TokenUsage, TurnState};
use hive_proto::{LiveEvent, LiveFrame};
use serde::Serialize;
use tokio::sync::Notify;

use crate::bus::Bus;
use crate::client::SocketClient;
use crate::stats::{StatsStore, TurnRecord};
use crate::{Role, files};

/// Longest model name accepted from the web UI.
const MAX_MODEL_LEN: usize = 100;

pub struct Shared {
    pub agent: String,
    pub role: Role,
    pub state_dir: PathBuf,
    pub bus: Bus,
    pub stats: Option<StatsStore>,
    pub client: SocketClient,
    /// The operator's interactive login (one session at a time).
    pub login: crate::login::Logins,
    /// Wakes the turn loop out of its `recv` long-poll (an operator's
    /// compaction request).
    poke: Notify,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("agent", &self.agent)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

struct Inner {
    turn_state: TurnState,
    /// When the state ends by itself (unix seconds): a quota's reset.
    until: Option<i64>,
    /// The credentials probe's last finding; `None` before it first ran.
    logged_in: Option<bool>,
    model: String,
    new_session: bool,
    compact: bool,
    cancel: Option<Arc<Notify>>,
    turn_started_at: Option<i64>,
    note: Option<String>,
    status_text: Option<String>,
    usage: Option<(TokenUsage, TokenUsage)>,
}

/// `/api/state`: a snapshot, with the bus seq it was taken at.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    pub seq: u64,
    pub agent: String,
    pub role: Role,
    pub state: TurnState,
    pub model: String,
    pub turn_running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_started_at: Option<i64>,
    pub new_session_pending: bool,
    pub compact_pending: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<TokenUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<TokenUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_turn: Option<TurnRecord>,
}

impl Shared {
    pub fn new(
        agent: String,
        role: Role,
        state_dir: PathBuf,
        client: SocketClient,
        default_model: String,
    ) -> Arc<Self> {
        let bus = Bus::open(&state_dir.join(files::EVENTS_DB));
        let stats = match StatsStore::open(&state_dir.join(files::TURN_STATS_DB)) {
            Ok(stats) => Some(stats),
            Err(e) => {
                tracing::warn!("turn stats unavailable: {e}");
                None
            }
        };
        let model = read_model(&state_dir).unwrap_or(default_model);
        let last = stats.as_ref().and_then(|s| s.last().ok().flatten());
        let usage = last
            .as_ref()
            .and_then(|l| l.last_usage.map(|ctx| (ctx, l.usage)));
        Arc::new(Self {
            agent,
            role,
            state_dir,
            bus,
            stats,
            client,
            login: crate::login::Logins::default(),
            poke: Notify::new(),
            inner: Mutex::new(Inner {
                turn_state: TurnState::Idle,
                until: None,
                logged_in: None,
                model,
                new_session: false,
                compact: false,
                cancel: None,
                turn_started_at: None,
                note: None,
                status_text: None,
                usage,
            }),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn emit(&self, event: LiveEvent) -> LiveFrame {
        self.bus.emit(event)
    }

    pub fn turn_state(&self) -> TurnState {
        self.inner().turn_state
    }

    /// Moves to `state` (with an optional note on why); emits
    /// `turn_state_changed` if it changed.
    pub fn set_turn_state(&self, state: TurnState, note: Option<String>) {
        self.set_turn_state_until(state, note, None);
    }

    /// [`Shared::set_turn_state`] for a state that ends by itself at
    /// `until` (unix seconds), which core shows and tells the manager.
    pub fn set_turn_state_until(&self, state: TurnState, note: Option<String>, until: Option<i64>) {
        let changed = {
            let mut inner = self.inner();
            inner.note = note;
            inner.until = until;
            std::mem::replace(&mut inner.turn_state, state) != state
        };
        if changed {
            self.emit(LiveEvent::TurnStateChanged { state });
        }
    }

    /// Why the harness is in its turn state (the tool running, a rate
    /// limit's retry), if it said.
    pub fn note(&self) -> Option<String> {
        self.inner().note.clone()
    }

    /// When the current state ends by itself, if it does.
    pub fn state_until(&self) -> Option<i64> {
        self.inner().until
    }

    /// The credentials probe's last finding (`None` before it first ran).
    pub fn logged_in(&self) -> Option<bool> {
        self.inner().logged_in
    }

    /// Records what the credentials probe found; a change is a note on the
    /// bus (which also wakes the state report to core).
    pub fn set_logged_in(&self, logged_in: bool, note: impl Into<String>) {
        let previous = self.inner().logged_in.replace(logged_in);
        if previous != Some(logged_in) {
            self.bus.note(note);
        }
    }

    pub fn model(&self) -> String {
        self.inner().model.clone()
    }

    /// Drops the runtime model switch: `model` (the deployed one) again.
    pub fn clear_model(&self, model: String) {
        let _ = std::fs::remove_file(self.state_dir.join(files::MODEL));
        self.inner().model = model;
    }

    /// Switches the model of the next turn and persists it.
    pub fn set_model(&self, model: &str) -> Result<(), String> {
        let model = model.trim();
        let valid = !model.is_empty()
            && model.len() <= MAX_MODEL_LEN
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:@/[]".contains(c));
        if !valid {
            return Err(format!("invalid model name {model:?}"));
        }
        std::fs::write(self.state_dir.join(files::MODEL), format!("{model}\n"))
            .map_err(|e| format!("cannot persist the model: {e}"))?;
        self.inner().model = model.to_owned();
        self.emit(LiveEvent::ModelChanged {
            model: model.to_owned(),
        });
        Ok(())
    }

    /// The next turn starts a new session (no `--continue`).
    pub fn request_new_session(&self) {
        self.inner().new_session = true;
        self.bus.note("the next turn starts a new session");
    }

    /// Takes the new-session request, if any.
    pub fn take_new_session(&self) -> bool {
        std::mem::take(&mut self.inner().new_session)
    }

    /// Schedules a compaction of the current session, run between turns
    /// (right away when idle: the turn loop's long-poll is interrupted).
    pub fn request_compact(&self) {
        self.inner().compact = true;
        self.bus.note("the operator asked for a compaction");
        self.poke.notify_one();
    }

    /// Takes the compaction request, if any.
    pub fn take_compact(&self) -> bool {
        std::mem::take(&mut self.inner().compact)
    }

    /// Resolves when something asks the idle turn loop to look around
    /// (a permit is kept if nobody waits yet).
    pub async fn poked(&self) {
        self.poke.notified().await;
    }

    /// A turn begins: returns the notifier a cancel will fire.
    pub fn begin_turn(&self) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let mut inner = self.inner();
        inner.cancel = Some(notify.clone());
        inner.turn_started_at = Some(crate::bus::now_unix());
        notify
    }

    pub fn end_turn(&self) {
        let mut inner = self.inner();
        inner.cancel = None;
        inner.turn_started_at = None;
    }

    /// Cancels the running turn; false if none runs.
    pub fn cancel(&self) -> bool {
        let cancel = self.inner().cancel.clone();
        match cancel {
            Some(notify) => {
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Records the last turn's usage and tells the page.
    pub fn set_usage(&self, ctx: TokenUsage, cost: TokenUsage) {
        self.inner().usage = Some((ctx, cost));
        self.emit(LiveEvent::TokenUsageChanged { ctx, cost });
    }

    /// Tells the page the agent's status line changed.
    pub fn set_status_text(&self, text: Option<String>) {
        let text = text.filter(|t| !t.trim().is_empty());
        let changed = {
            let mut inner = self.inner();
            std::mem::replace(&mut inner.status_text, text.clone()) != text
        };
        if changed {
            self.emit(LiveEvent::StatusChanged { text });
        }
    }

    pub fn view(&self) -> StateView {
        let seq = self.bus.seq();
        let last_turn = self.stats.as_ref().and_then(|s| s.last().ok().flatten());
        let inner = self.inner();
        StateView {
            seq,
            agent: self.agent.clone(),
            role: self.role,
            state: inner.turn_state,
            model: inner.model.clone(),
            turn_running: inner.cancel.is_some(),
            turn_started_at: inner.turn_started_at,
            new_session_pending: inner.new_session,
            compact_pending: inner.compact,
            note: inner.note.clone(),
            status_text: inner.status_text.clone(),
            ctx: inner.usage.map(|u| u.0),
            cost: inner.usage.map(|u| u.1),
            last_turn,
        }
    }
}

fn read_model(state_dir: &Path) -> Option<String> {
    std::fs::read_to_string(state_dir.join(files::MODEL))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_persists_and_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let client = SocketClient::new(dir.path().join("none.sock"));
        let shared = Shared::new(
            "a".into(),
            Role::Agent,
            dir.path().to_owned(),
            client.clone(),
            "sonnet".into(),
        );
        assert_eq!(shared.model(), "sonnet");
        shared.set_model("claude-opus-4-1").unwrap();
        assert!(shared.set_model("rm -rf /").is_err());
        assert!(shared.set_model("").is_err());
        drop(shared);
        let shared = Shared::new(
            "a".into(),
            Role::Agent,
            dir.path().to_owned(),
            client,
            "sonnet".into(),
        );
        assert_eq!(shared.model(), "claude-opus-4-1");
        let (_, frames) = shared.bus.history(10);
        assert_eq!(
            frames[0].event,
            LiveEvent::ModelChanged {
                model: "claude-opus-4-1".into()
            }
        );
    }

    #[test]
    fn cancel_needs_a_turn() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new(
            "a".into(),
            Role::Agent,
            dir.path().to_owned(),
            SocketClient::new(dir.path().join("none.sock")),
            "sonnet".into(),
        );
        assert!(!shared.cancel());
        let _notify = shared.begin_turn();
        assert!(shared.view().turn_running);
        assert!(shared.cancel());
        shared.end_turn();
        assert!(!shared.cancel());
    }
}
