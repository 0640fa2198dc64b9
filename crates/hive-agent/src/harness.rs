//! The turn loop (`hive agent serve`).
//!
//! Boot: reap an engine a dead predecessor left running, `requeue_inflight`.
//! Then, forever: honour the pause marker, check the engine has credentials,
//! long-poll `recv` → `turn_start` → wake prompt → engine run(s) →
//! `turn_end` → `ack_turn` on success only. A failed turn leaves its
//! messages in flight (the next boot's `requeue_inflight` redelivers them).
//! Within a turn: prompt-too-long gets one compaction and a retry; a rate
//! limit backs off without spending a retry; missing credentials park the
//! turn in `needs_login`; another failure is retried up to
//! [`Config::max_attempts`] times. A clean turn that ends above the context
//! watermark is followed by a checkpoint turn and a compaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_proto::live::{TokenUsage, TurnState};
use hive_proto::{AgentAnswer, AgentRequest, AgentResponse, DeliveredMessage, LiveEvent};
use tokio::sync::{Notify, watch};

use crate::bus::now_unix;
use crate::engine::{Engine, EngineRequest, McpSetup, RunKind, Verdict};
use crate::state::Shared;
use crate::stats::{TurnRecord, turn_cost};
use crate::turn::{self, RunEnd, RunLimits, RunOutcome};
use crate::watch::DirWatch;
use crate::{Role, files, wake};

/// How the harness runs; the CLI fills it from flags and the environment.
#[derive(Clone)]
pub struct Config {
    pub agent: String,
    /// The config core deployed, if any (`deployed.json` in the control dir).
    pub deployed: Option<crate::deployed::Deployed>,
    pub role: Role,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Files core writes for the harness, read-only to it.
    pub control_dir: PathBuf,
    /// On the link: whether core says the agent is paused (the marker file
    /// in the link dir is the agent's to write, so it does not count).
    pub link_paused: Option<tokio::sync::watch::Receiver<bool>>,
    pub shared_dir: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub engine: Arc<dyn Engine>,
    /// The model when `<state>/hyperhive-model` does not name one.
    pub default_model: String,
    /// The `hive` binary the engine launches as its MCP server.
    pub hive_exe: PathBuf,
    /// Tools the engine may use unasked besides the hive tools.
    pub extra_allowed_tools: Vec<String>,
    pub turn_limit: Duration,
    pub grace: Duration,
    pub recv_wait_seconds: u64,
    pub recv_max: u32,
    /// Context size (tokens) above which a clean turn is followed by a
    /// checkpoint and a compaction; 0 disables.
    pub context_watermark: u64,
    /// Engine runs per turn for ordinary failures.
    pub max_attempts: u32,
    /// First wait after a rate limit (doubles up to 16×).
    pub rate_limit_backoff: Duration,
    /// How often to re-check while paused or without credentials.
    pub poll: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("agent", &self.agent)
            .field("role", &self.role)
            .field("socket", &self.socket)
            .field("state_dir", &self.state_dir)
            .field("engine", &self.engine.name())
            .finish_non_exhaustive()
    }
}

/// Why a wait ended early.
#[derive(Debug, PartialEq, Eq)]
enum Interrupted {
    Shutdown,
    Cancelled,
}

/// What woke a turn.
enum Wake {
    /// Popped messages, in flight under `lease` (held: the harness named
    /// it), with `unread` more waiting.
    Messages {
        messages: Vec<DeliveredMessage>,
        lease: Option<i64>,
        unread: u64,
    },
    SelfRequested,
}

/// How long a turn's lease lasts without renewal: a harness that dies
/// mid-turn has its messages redelivered this long after its last renewal,
/// even if no harness boots again. A live turn renews it every third.
pub const LEASE_SECONDS: u64 = 90;

/// How a whole turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TurnEnd {
    Ok,
    Failed(String),
    Cancelled,
    TimedOut,
    Shutdown,
}

impl TurnEnd {
    fn kind(&self) -> &'static str {
        match self {
            TurnEnd::Ok => "ok",
            TurnEnd::Failed(_) => "failed",
            TurnEnd::Cancelled => "cancelled",
            TurnEnd::TimedOut => "timed_out",
            TurnEnd::Shutdown => "shutdown",
        }
    }
}

pub struct Harness {
    config: Config,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    mcp: McpSetup,
    rate_backoff: Duration,
}

impl Harness {
    pub fn new(config: Config, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) -> Self {
        let mcp = mcp_setup(&config);
        let rate_backoff = config.rate_limit_backoff;
        Self {
            config,
            shared,
            shutdown,
            mcp,
            rate_backoff,
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.config.state_dir.join(files::ENGINE_PID)
    }

    /// Runs until shutdown.
    pub async fn run(mut self) {
        if crate::process::reap_stale_engine(&self.pid_file()) {
            self.shared
                .bus
                .note("killed an engine a previous harness left running");
        }
        self.requeue().await;
        while !self.is_shutdown() {
            if self.wait_while_paused().await.is_err()
                || self.wait_for_login().await.is_err()
                || self.wait_within_budget().await.is_err()
            {
                break;
            }
            if self.shared.take_compact() {
                self.operator_compact().await;
                continue;
            }
            let Some(wake) = self.next_wake().await else {
                continue;
            };
            let recv_at = Instant::now();
            if self.wait_while_paused().await.is_err() {
                // Shutting down with messages popped: they stay in flight.
                break;
            }
            self.turn(wake, recv_at).await;
        }
        self.shared.set_turn_state(TurnState::Idle, None);
    }

    fn is_shutdown(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Sleeps `d` unless shutdown (or `cancel`) comes first.
    async fn sleep(&mut self, d: Duration, cancel: Option<&Notify>) -> Result<(), Interrupted> {
        let cancelled = async {
            match cancel {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            _ = self.shutdown.wait_for(|s| *s) => Err(Interrupted::Shutdown),
            () = cancelled => Err(Interrupted::Cancelled),
        }
    }

    /// `requeue_inflight`, retried until the daemon answers.
    async fn requeue(&mut self) {
        let mut delay = Duration::from_millis(200);
        loop {
            match self
                .shared
                .client
                .call(&AgentRequest::RequeueInflight)
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!("requeue_inflight: {e}");
                    self.shared
                        .bus
                        .note(format!("requeue_inflight failed: {e}"));
                }
            }
            if self.sleep(delay, None).await.is_err() {
                return;
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Sleeps until something changes in `watch`'s directories (or `d`
    /// passes, when there is no watch), unless shutdown comes first.
    async fn wait_for_change(
        &mut self,
        watch: Option<&mut DirWatch>,
        d: Duration,
    ) -> Result<(), Interrupted> {
        let Some(watch) = watch else {
            return self.sleep(d, None).await;
        };
        let changed = tokio::select! {
            changed = watch.changed() => changed,
            _ = self.shutdown.wait_for(|s| *s) => return Err(Interrupted::Shutdown),
        };
        if let Err(e) = changed {
            // Looked at again after `d`, as without a watch.
            tracing::warn!("inotify: {e}");
            return self.sleep(d, None).await;
        }
        Ok(())
    }

    /// A watch on `dirs`, or `None` (then the caller re-checks every
    /// `--poll-ms`) where inotify cannot be had.
    fn dir_watch(dirs: &[&Path]) -> Option<DirWatch> {
        DirWatch::new(dirs.iter().copied())
            .map_err(|e| tracing::warn!("no inotify, polling instead: {e}"))
            .ok()
    }

    async fn wait_while_paused(&mut self) -> Result<(), Interrupted> {
        let marker = self.config.control_dir.join(files::PAUSE_MARKER);
        let mut link = self.config.link_paused.clone();
        let paused = |link: &Option<tokio::sync::watch::Receiver<bool>>| match link {
            Some(paused) => *paused.borrow(),
            None => marker.exists(),
        };
        if !paused(&link) {
            return Ok(());
        }
        // Made before the looks below: core's removal of the marker (or a
        // rename over it) wakes the loop at once.
        let mut changes = Self::dir_watch(&[self.config.control_dir.as_path()]);
        self.shared
            .set_turn_state(TurnState::Paused, Some("paused by the operator".into()));
        while paused(&link) {
            match &mut link {
                // On the link, core's word arrives on the link's channel.
                Some(rx) => {
                    let mut shutdown = self.shutdown.clone();
                    let changed = tokio::select! {
                        changed = rx.changed() => changed.is_ok(),
                        _ = shutdown.wait_for(|s| *s) => return Err(Interrupted::Shutdown),
                    };
                    if !changed {
                        // The link is gone: look again after a poll.
                        self.sleep(self.config.poll, None).await?;
                    }
                }
                None => {
                    self.wait_for_change(changes.as_mut(), self.config.poll)
                        .await?
                }
            }
        }
        self.shared.set_turn_state(TurnState::Idle, None);
        Ok(())
    }

    /// Parks in `over_budget` while the deployed spend limit is reached:
    /// no `recv`, so messages wait in the inbox. Only a new UTC day (for
    /// daily limits; one timer until midnight) or a deploy that raises the
    /// limit (which restarts the harness) ends it.
    async fn wait_within_budget(&mut self) -> Result<(), Interrupted> {
        let Some(budget) = self
            .config
            .deployed
            .as_ref()
            .map(|d| d.config.budget)
            .filter(|b| !b.is_unlimited())
        else {
            return Ok(());
        };
        let shared = self.shared.clone();
        let mut parked = false;
        loop {
            let now = now_unix();
            let midnight = now - now.rem_euclid(86_400);
            // A limit whose spend cannot be counted holds the agent (it
            // fails closed): retried after a while, the operator sees why.
            let spent = match &shared.stats {
                None => Err("no turn stats to count spend in".to_owned()),
                Some(stats) => match (stats.spent_since(midnight), stats.spent_since(0)) {
                    (Ok(today), Ok(total)) => {
                        Ok(((today.usd, today.tokens), (total.usd, total.tokens)))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(format!("turn stats unreadable: {e}")),
                },
            };
            let (today, total) = match spent {
                Ok(spent) => spent,
                Err(why) => {
                    let note = format!("over budget: spend cannot be counted ({why})");
                    if self.shared.turn_state() != TurnState::OverBudget {
                        self.shared.bus.note(note.clone());
                        self.shared
                            .set_turn_state(TurnState::OverBudget, Some(note));
                    }
                    parked = true;
                    self.sleep(self.config.poll * 30, None).await?;
                    continue;
                }
            };
            let Some(why) = budget.reached(today, total) else {
                if parked {
                    self.shared.set_turn_state(TurnState::Idle, None);
                }
                return Ok(());
            };
            let note = format!("over budget: {why} ({})", budget.describe());
            if self.shared.turn_state() != TurnState::OverBudget {
                self.shared.bus.note(note.clone());
                self.shared
                    .set_turn_state(TurnState::OverBudget, Some(note));
            }
            parked = true;
            let wait = if budget.only_daily(total) {
                u64::try_from(midnight + 86_400 - now).unwrap_or(1)
            } else {
                86_400
            };
            self.sleep(Duration::from_secs(wait.max(1)), None).await?;
        }
    }

    /// Parks in `engine_missing` while the engine binary is absent, in
    /// `needs_login` while it has no credentials.
    async fn wait_for_login(&mut self) -> Result<(), Interrupted> {
        let mut parked = false;
        loop {
            // The state dir (where a login makes its dir) and that dir
            // (where it writes the file), watched before the probe: a login
            // that completes meanwhile still wakes the wait below.
            let file = self.config.engine.credentials_file(&self.config.state_dir);
            let dirs: Vec<&Path> = std::iter::once(self.config.state_dir.as_path())
                .chain(file.parent())
                .collect();
            let mut changes = Self::dir_watch(&dirs);
            let missing = match crate::login::find_program(self.config.engine.program()) {
                None => Some((
                    TurnState::EngineMissing,
                    crate::login::engine_missing(self.config.engine.as_ref()),
                )),
                Some(_) => match self.config.engine.credentials(&self.config.state_dir) {
                    Ok(source) => {
                        // Before the state: the report it wakes carries both.
                        self.shared
                            .set_logged_in(true, format!("credentials found: {source}"));
                        None
                    }
                    Err(why) => Some((TurnState::NeedsLogin, why)),
                },
            };
            match missing {
                None => {
                    if parked {
                        self.shared.set_turn_state(TurnState::Idle, None);
                    }
                    return Ok(());
                }
                Some((state, why)) => {
                    if self.shared.turn_state() != state {
                        if state == TurnState::EngineMissing {
                            // Not a login problem: the manager hears
                            // nothing of logins until there is an engine.
                            self.shared.bus.note(format!("engine missing: {why}"));
                        } else {
                            self.shared
                                .set_logged_in(false, format!("needs login: {why}"));
                        }
                        self.shared.set_turn_state(state, Some(why));
                    }
                    parked = true;
                    if state == TurnState::EngineMissing {
                        // The engine is bound in when the container is
                        // made; nothing in a watched dir brings it.
                        self.sleep(self.config.poll, None).await?;
                    } else {
                        self.wait_for_change(changes.as_mut(), self.config.poll)
                            .await?;
                    }
                }
            }
        }
    }

    async fn next_wake(&mut self) -> Option<Wake> {
        let marker = self.config.state_dir.join(files::NEXT_TURN_MARKER);
        if marker.exists() {
            let _ = std::fs::remove_file(&marker);
            return Some(Wake::SelfRequested);
        }
        if self.shared.turn_state() != TurnState::Idle {
            self.shared.set_turn_state(TurnState::Idle, None);
        }
        let request = AgentRequest::Recv {
            wait_seconds: Some(self.config.recv_wait_seconds),
            max: Some(self.config.recv_max),
            lease_seconds: Some(LEASE_SECONDS),
        };
        let client = self.shared.client.clone();
        // Dropping this future drops its connection: core then returns
        // anything it popped for us, unflagged, since we never named it.
        let answer = tokio::select! {
            answer = client.answer(&request) => answer,
            _ = self.shutdown.wait_for(|s| *s) => return None,
            () = self.shared.poked() => return None,
        };
        match answer {
            Ok(AgentAnswer {
                response: AgentResponse::Messages { messages, .. },
                ..
            }) if messages.is_empty() => None,
            Ok(AgentAnswer {
                response: AgentResponse::Messages { messages, lease },
                unread,
            }) => {
                // Naming the lease tells core we hold these rows; until
                // then they are not ours (a failure here: core puts them
                // back, and they come again).
                if let Some(lease) = lease
                    && let Err(e) = client.call(&AgentRequest::RenewLease { lease }).await
                {
                    self.shared.bus.note(format!(
                        "could not hold the popped messages, they will come again: {e}"
                    ));
                    return None;
                }
                Some(Wake::Messages {
                    messages,
                    lease,
                    unread: unread.unwrap_or(0),
                })
            }
            Ok(AgentAnswer { response, .. }) => {
                self.shared
                    .bus
                    .note(format!("recv: unexpected answer {response:?}"));
                let _ = self.sleep(Duration::from_secs(5), None).await;
                None
            }
            Err(e) => {
                tracing::warn!("recv: {e}");
                self.shared.bus.note(format!("recv failed: {e}"));
                let _ = self.sleep(Duration::from_secs(2), None).await;
                None
            }
        }
    }

    /// The unread count for a turn no `recv` woke.
    async fn unread(&self) -> u64 {
        match self.shared.client.call(&AgentRequest::Status).await {
            Ok(AgentResponse::Status { unread }) => unread,
            _ => 0,
        }
    }

    async fn turn(&mut self, wake: Wake, recv_at: Instant) {
        let (unread, lease) = match &wake {
            Wake::Messages { unread, lease, .. } => (*unread, *lease),
            Wake::SelfRequested => (self.unread().await, None),
        };
        let (from, prompt) = match &wake {
            Wake::Messages { messages, .. } => {
                let mut senders: Vec<&str> = Vec::new();
                for m in messages {
                    if !senders.contains(&m.from.as_str()) {
                        senders.push(&m.from);
                    }
                }
                (senders.join(", "), wake::wake_prompt(messages, unread))
            }
            Wake::SelfRequested => ("self".to_owned(), wake::self_wake_prompt(unread)),
        };
        let renewing = lease.map(|lease| RenewGuard::start(self.shared.client.clone(), lease));
        let end = self
            .run_turn(&from, &prompt, unread, Some(recv_at), lease)
            .await;
        drop(renewing);
        if end == TurnEnd::Ok
            && self.config.context_watermark > 0
            && let Some(ctx) = self.last_context()
            && ctx > self.config.context_watermark
        {
            self.checkpoint_and_compact(ctx).await;
        }
        if !self.is_shutdown() {
            self.shared.set_turn_state(TurnState::Idle, None);
        }
    }

    fn last_context(&self) -> Option<u64> {
        self.shared
            .stats
            .as_ref()
            .and_then(|s| s.last().ok().flatten())
            .and_then(|r| r.context_tokens)
    }

    /// One turn: `turn_start`, engine runs until a verdict, `turn_end`,
    /// `ack_turn` if it succeeded, one stats row.
    async fn run_turn(
        &mut self,
        from: &str,
        prompt: &str,
        unread: u64,
        recv_at: Option<Instant>,
        lease: Option<i64>,
    ) -> TurnEnd {
        let cancel = self.shared.begin_turn();
        self.shared.emit(LiveEvent::TurnStart {
            from: from.to_owned(),
            body: prompt.to_owned(),
            unread,
        });
        self.shared.set_turn_state(TurnState::Thinking, None);
        let started_at = now_unix();
        let started = Instant::now();
        let model = self.shared.model();
        let mut continue_session = !self.shared.take_new_session();
        let mut compacted = false;
        let mut attempts = 0u32;
        let mut pre_engine_us = None;
        let mut last: Option<RunOutcome> = None;
        let mut role_prompt = crate::prompt::role_prompt(
            self.config.role,
            &self.shared.agent,
            &self.config.state_dir,
            self.config.shared_dir.as_deref(),
            self.config.config_dir.as_deref(),
        );
        if let Some(role) = self
            .config
            .deployed
            .as_ref()
            .map(|d| d.prompt.trim())
            .filter(|p| !p.is_empty())
        {
            role_prompt.push_str("\n\n## Your role\n\n");
            role_prompt.push_str(role);
        }
        // A session keeps the system prompt it started with: a changed one
        // (a deployed role) needs a fresh session, told where its notes are.
        let fingerprint = crate::session::fingerprint_for(self.config.engine.name(), &role_prompt);
        let started_with = crate::session::started_with(&self.config.state_dir);
        let handoff;
        let prompt = match &started_with {
            Some(old) if continue_session && *old != fingerprint => {
                continue_session = false;
                self.shared
                    .bus
                    .note("the system prompt or engine changed: this turn starts a fresh session");
                handoff = crate::session::handoff(prompt, &self.config.state_dir);
                handoff.as_str()
            }
            _ => prompt,
        };
        if !continue_session || started_with.is_none() {
            crate::session::record(&self.config.state_dir, &fingerprint);
        }

        let end = loop {
            if self.is_shutdown() {
                break TurnEnd::Shutdown;
            }
            let outcome = self
                .run_engine(
                    RunKind::Turn,
                    prompt,
                    &model,
                    continue_session,
                    &role_prompt,
                    &cancel,
                )
                .await;
            if pre_engine_us.is_none()
                && let (Some(recv_at), Some(spawned)) = (recv_at, outcome.spawned_at)
            {
                pre_engine_us = Some(micros(spawned.duration_since(recv_at)));
            }
            // A retry continues whatever session the first attempt began.
            continue_session = true;
            let end = outcome.end.clone();
            last = Some(outcome);
            match end {
                RunEnd::Finished(Verdict::Ok) => {
                    self.rate_backoff = self.config.rate_limit_backoff;
                    break TurnEnd::Ok;
                }
                RunEnd::Cancelled if self.is_shutdown() => break TurnEnd::Shutdown,
                RunEnd::Cancelled => break TurnEnd::Cancelled,
                RunEnd::TimedOut => break TurnEnd::TimedOut,
                RunEnd::Finished(Verdict::PromptTooLong) if !compacted => {
                    compacted = true;
                    self.shared
                        .bus
                        .note("the prompt is too long: compacting, then retrying");
                    if !self.compact(&model, &cancel).await {
                        self.shared
                            .bus
                            .note("compaction failed; retrying in a new session");
                        continue_session = false;
                    }
                    self.shared.set_turn_state(TurnState::Thinking, None);
                }
                RunEnd::Finished(Verdict::PromptTooLong) => {
                    // Do not wedge every later turn on the same session.
                    self.shared.request_new_session();
                    break TurnEnd::Failed("the prompt is too long even after compaction".into());
                }
                RunEnd::Finished(Verdict::RateLimited(why)) => {
                    let wait = self.next_rate_backoff();
                    let note = format!("rate limited ({why}); retrying in {}s", wait.as_secs());
                    self.shared.bus.note(note.clone());
                    self.shared
                        .set_turn_state(TurnState::RateLimited, Some(note));
                    match self.sleep(wait, Some(&cancel)).await {
                        Ok(()) => self.shared.set_turn_state(TurnState::Thinking, None),
                        Err(Interrupted::Shutdown) => break TurnEnd::Shutdown,
                        Err(Interrupted::Cancelled) => break TurnEnd::Cancelled,
                    }
                }
                RunEnd::Finished(Verdict::Quota { resets_at, message }) => {
                    match self.park_for_quota(resets_at, &message, &cancel).await {
                        Ok(()) => self.shared.set_turn_state(TurnState::Thinking, None),
                        Err(Interrupted::Shutdown) => break TurnEnd::Shutdown,
                        Err(Interrupted::Cancelled) => break TurnEnd::Cancelled,
                    }
                }
                RunEnd::Finished(Verdict::NeedsLogin(why)) => {
                    self.shared.bus.note(format!("needs login: {why}"));
                    self.shared
                        .set_turn_state(TurnState::NeedsLogin, Some(why.clone()));
                    // Credentials that exist but do not work: wait a while
                    // (or for the operator to cancel) before trying again.
                    match self.sleep(self.config.poll * 30, Some(&cancel)).await {
                        Ok(()) => {}
                        Err(Interrupted::Shutdown) => break TurnEnd::Shutdown,
                        Err(Interrupted::Cancelled) => break TurnEnd::Cancelled,
                    }
                    if self.wait_for_login().await.is_err() {
                        break TurnEnd::Shutdown;
                    }
                    self.shared.set_turn_state(TurnState::Thinking, None);
                }
                RunEnd::Finished(Verdict::EngineMissing(_)) => {
                    // Parks until the binary is there (a restart with
                    // `--claude-bin`), then runs the turn again.
                    if self.wait_for_login().await.is_err() {
                        break TurnEnd::Shutdown;
                    }
                    self.shared.set_turn_state(TurnState::Thinking, None);
                }
                RunEnd::Finished(Verdict::Failed(why)) => {
                    attempts += 1;
                    if attempts >= self.config.max_attempts {
                        break TurnEnd::Failed(why);
                    }
                    self.shared.bus.note(format!(
                        "the engine failed ({why}); retry {attempts} of {}",
                        self.config.max_attempts - 1
                    ));
                    match self
                        .sleep(Duration::from_secs(2 * u64::from(attempts)), Some(&cancel))
                        .await
                    {
                        Ok(()) => {}
                        Err(Interrupted::Shutdown) => break TurnEnd::Shutdown,
                        Err(Interrupted::Cancelled) => break TurnEnd::Cancelled,
                    }
                }
            }
        };
        self.shared.end_turn();

        let note = match &end {
            TurnEnd::Ok => None,
            TurnEnd::Failed(why) => Some(why.clone()),
            TurnEnd::Cancelled => Some("cancelled by the operator".to_owned()),
            TurnEnd::TimedOut => Some(format!(
                "the turn exceeded its {}s limit",
                self.config.turn_limit.as_secs()
            )),
            TurnEnd::Shutdown => Some("the harness is shutting down".to_owned()),
        };
        // Emitted once the stats row exists: a page that refetches the
        // turns on `turn_end` finds this one.
        let turn_end = LiveEvent::TurnEnd {
            ok: end == TurnEnd::Ok,
            note: note.clone(),
        };

        let observation = last
            .as_ref()
            .map(|o| o.observation.clone())
            .unwrap_or_default();
        // The CLI reports its session's running total: this turn cost what
        // the total grew by since the session's previous turn.
        let before = match (&self.shared.stats, &observation.session_id) {
            (Some(stats), Some(session)) => stats.session_cost(session).ok().flatten(),
            _ => None,
        };
        let record = TurnRecord {
            id: None,
            model: observation.model.clone().unwrap_or_else(|| model.clone()),
            wake_from: from.to_owned(),
            result_kind: end.kind().to_owned(),
            started_at,
            ended_at: now_unix(),
            duration_ms: millis(started.elapsed()),
            usage: observation.total_usage,
            last_usage: observation.last_usage,
            context_tokens: observation.context_tokens(),
            cost_usd: turn_cost(before, observation.session_cost_usd),
            session_id: observation.session_id.clone(),
            session_cost_usd: observation.session_cost_usd,
            inferences: observation.inferences,
            tool_call_count: observation.tool_call_count(),
            tool_calls: observation.tool_calls.clone(),
            pre_engine_us,
            post_engine_us: None,
            note,
        };
        let id = self.shared.stats.as_ref().and_then(|s| {
            s.record(&record)
                .map_err(|e| tracing::warn!("turn stats: {e}"))
                .ok()
        });
        self.shared.emit(turn_end);
        if let Some(ctx) = observation.last_usage {
            self.shared.set_usage(ctx, observation.total_usage);
        } else if observation.total_usage != TokenUsage::default() {
            self.shared
                .set_usage(TokenUsage::default(), observation.total_usage);
        }

        if end == TurnEnd::Ok {
            // Exactly what this turn held: its lease and what its tools
            // popped after it; without one (a self-requested turn), every
            // row the agent holds.
            let ack = AgentRequest::AckTurn { ids: None, lease };
            match self.shared.client.call(&ack).await {
                Ok(_) => {
                    if let (Some(id), Some(stats), Some(exited)) =
                        (id, &self.shared.stats, last.as_ref().map(|o| o.exited_at))
                    {
                        let _ = stats.set_post_engine_us(id, micros(exited.elapsed()));
                    }
                }
                Err(e) => self.shared.bus.note(format!("ack_turn failed: {e}")),
            }
        }
        end
    }

    /// The wait before the next try after a rate limit: the current step,
    /// doubling the next one up to 16 times the configured back-off.
    fn next_rate_backoff(&mut self) -> Duration {
        let wait = self.rate_backoff;
        self.rate_backoff = (wait * 2).min(self.config.rate_limit_backoff * 16);
        wait
    }

    /// The plan's window is used up until `resets_at`: sleep on one timer
    /// until then (the popped messages stay in flight, newer ones wait in
    /// the inbox, nothing is spent), then let the turn run again. A reset
    /// already past is a plain rate limit: the usual back-off.
    async fn park_for_quota(
        &mut self,
        resets_at: i64,
        message: &str,
        cancel: &Notify,
    ) -> Result<(), Interrupted> {
        let now_ms = crate::bus::now_millis();
        let wait_ms = resets_at.saturating_mul(1000).saturating_sub(now_ms);
        let wait = if wait_ms > 0 {
            Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX))
        } else {
            self.next_rate_backoff()
        };
        let text = hive_proto::live::quota_text(resets_at);
        self.shared.bus.note(format!(
            "{text}: {message}; the turn runs again then ({}s)",
            wait.as_secs()
        ));
        self.shared
            .set_turn_state_until(TurnState::Quota, Some(text), Some(resets_at));
        self.sleep(wait, Some(cancel)).await
    }

    async fn run_engine(
        &mut self,
        kind: RunKind,
        prompt: &str,
        model: &str,
        continue_session: bool,
        role_prompt: &str,
        cancel: &Notify,
    ) -> RunOutcome {
        let extra_dirs: Vec<PathBuf> = [&self.config.shared_dir, &self.config.config_dir]
            .into_iter()
            .flatten()
            .filter(|d| d.is_dir())
            .cloned()
            .collect();
        let request = EngineRequest {
            kind,
            prompt,
            model,
            continue_session,
            role_prompt: Some(role_prompt),
            mcp: &self.mcp,
            state_dir: &self.config.state_dir,
            extra_dirs: &extra_dirs,
        };
        let limits = RunLimits {
            limit: self.config.turn_limit,
            grace: self.config.grace,
            pid_file: Some(self.pid_file()),
        };
        let engine = self.config.engine.clone();
        let shutdown = self.shutdown.clone();
        let run = turn::run(&self.shared, engine.as_ref(), &request, &limits, cancel);
        tokio::pin!(run);
        let mut shutdown = shutdown;
        tokio::select! {
            outcome = &mut run => return outcome,
            changed = shutdown.wait_for(|s| *s) => drop(changed),
        }
        // Shutting down: interrupt the engine like a cancel, wait for it.
        cancel.notify_one();
        run.await
    }

    /// Runs the engine's compaction on the current session.
    async fn compact(&mut self, model: &str, cancel: &Notify) -> bool {
        if !self.config.engine.can_compact() {
            self.shared.bus.note(format!(
                "{} cannot compact a session",
                self.config.engine.name()
            ));
            return false;
        }
        self.shared.set_turn_state(TurnState::Compacting, None);
        let prompt = self.config.engine.compact_prompt();
        let outcome = self
            .run_engine(RunKind::Compact, &prompt, model, true, "", cancel)
            .await;
        let ok = outcome.end == RunEnd::Finished(Verdict::Ok)
            && outcome.observation.compact_result.as_deref() != Some("failed");
        self.shared.bus.note(if ok {
            "compaction done".to_owned()
        } else {
            format!("compaction failed: {:?}", outcome.end)
        });
        ok
    }

    /// The operator asked for a compaction (web page): run it now, between
    /// turns, cancellable like a turn.
    async fn operator_compact(&mut self) {
        let cancel = self.shared.begin_turn();
        let model = self.shared.model();
        if !self.compact(&model, &cancel).await && !self.config.engine.can_compact() {
            // What a compaction is for: a session with room again.
            self.shared.request_new_session();
        }
        self.shared.end_turn();
        if !self.is_shutdown() {
            self.shared.set_turn_state(TurnState::Idle, None);
        }
    }

    /// A clean turn ended above the watermark: let the agent write down
    /// what it needs, then compact.
    async fn checkpoint_and_compact(&mut self, ctx: u64) {
        self.shared.bus.note(format!(
            "context is {ctx} tokens (watermark {}): checkpoint, then compact",
            self.config.context_watermark
        ));
        let end = self
            .run_turn("compaction", &wake::checkpoint_prompt(ctx), 0, None, None)
            .await;
        if end == TurnEnd::Ok {
            let cancel = self.shared.begin_turn();
            let model = self.shared.model();
            self.compact(&model, &cancel).await;
            self.shared.end_turn();
        }
    }
}

/// The hive MCP server entry and the allowed tools for the engine.
pub fn mcp_setup(config: &Config) -> McpSetup {
    let args = vec![
        "agent".to_owned(),
        "mcp".to_owned(),
        "--role".to_owned(),
        config.role.as_str().to_owned(),
        "--socket".to_owned(),
        config.socket.display().to_string(),
        "--state-dir".to_owned(),
        config.state_dir.display().to_string(),
    ];
    let mut env = serde_json::Map::new();
    env.insert(
        "HIVE_SOCKET".into(),
        config.socket.display().to_string().into(),
    );
    env.insert(
        "HIVE_STATE_DIR".into(),
        config.state_dir.display().to_string().into(),
    );
    env.insert("HIVE_AGENT".into(), config.agent.clone().into());
    if let Ok(filter) = std::env::var("HIVE_LOG") {
        env.insert("HIVE_LOG".into(), filter.into());
    }
    let mut servers = serde_json::Map::new();
    servers.insert(
        crate::mcp::SERVER_NAME.into(),
        serde_json::json!({
            "type": "stdio",
            "command": config.hive_exe.display().to_string(),
            "args": args,
            "env": env,
        }),
    );
    let mut allowed_tools: Vec<String> = crate::mcp::tool_names(config.role)
        .into_iter()
        .map(|tool| format!("mcp__{}__{tool}", crate::mcp::SERVER_NAME))
        .collect();
    allowed_tools.extend(config.extra_allowed_tools.iter().cloned());
    if let Some(deployed) = &config.deployed {
        let (extra, tools) = crate::deployed::mcp_servers(deployed);
        servers.extend(extra);
        allowed_tools.extend(tools);
    }
    McpSetup {
        servers,
        allowed_tools,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Renews a turn's lease every third of [`LEASE_SECONDS`] until dropped.
struct RenewGuard(tokio::task::JoinHandle<()>);

impl RenewGuard {
    fn start(client: crate::client::SocketClient, lease: i64) -> Self {
        Self(tokio::spawn(async move {
            let every = Duration::from_secs(LEASE_SECONDS / 3);
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = client.call(&AgentRequest::RenewLease { lease }).await {
                    tracing::warn!(lease, "lease renewal: {e}");
                }
            }
        }))
    }
}

impl Drop for RenewGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
