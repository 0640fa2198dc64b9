//! The docker backend's exit reports: a background task follows the
//! engine's event stream (`start`/`die` of this hive's label), turns each
//! into a [`StateChange`], and after a reconnect reports what changed
//! meanwhile. A death is expected when this runtime caused it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use hive_proto::AgentName;
use nix::sys::signal::Signal;
use tokio::sync::broadcast;

use super::{AGENT_LABEL, HIVE_LABEL, status};
use crate::{HiveId, StateChange};

/// Pause before reconnecting to the event stream.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// How a container stopped, worded like the child backends: `exited 0`,
/// `exit code 1`, `killed by SIGKILL` (the engine reports death by signal
/// N as exit code 128+N).
fn describe_exit(code: i64) -> String {
    if code == 0 {
        return "exited 0".to_owned();
    }
    let signal = (129..=192)
        .contains(&code)
        .then(|| i32::try_from(code - 128).ok())
        .flatten()
        .and_then(|n| Signal::try_from(n).ok());
    if let Some(signal) = signal {
        return format!("killed by {signal}");
    }
    format!("exit code {code}")
}

/// Ids of containers a `stop`, `destroy` or `create` of ours is stopping
/// or stopped: their death is expected, not a failure. An id leaves the
/// set when the watcher sees the container start again (or destroyed), in
/// event order, so a late death event is never misread.
type Stopping = Arc<Mutex<HashSet<String>>>;

fn lock(set: &Mutex<HashSet<String>>) -> MutexGuard<'_, HashSet<String>> {
    set.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The exits of one hive's containers on the engine, followed in the
/// background for as long as this lives: what a runtime on the engine
/// (docker, swarm) subscribes to and marks its own stops in.
pub(crate) struct Exits {
    changes: broadcast::Sender<StateChange>,
    stopping: Stopping,
    /// Shared with the event follower, so that a report from elsewhere
    /// (swarm's task watch) and the event stream's of one death are one.
    tracker: Arc<Mutex<Tracker>>,
    task: tokio::task::JoinHandle<()>,
}

impl Exits {
    /// Follows the engine's events of `hive` from now on.
    pub(crate) fn follow(docker: Docker, hive: HiveId) -> Self {
        Self::new(docker, hive, true)
    }

    /// Reports only what [`Exits::report`] is given: no event stream (for
    /// tests of what reports the event stream cannot make).
    pub(crate) fn without_events(docker: Docker, hive: HiveId) -> Self {
        Self::new(docker, hive, false)
    }

    fn new(docker: Docker, hive: HiveId, events: bool) -> Self {
        let (changes, _) = broadcast::channel(256);
        let stopping = Stopping::default();
        let tracker = Arc::new(Mutex::new(Tracker {
            hive: hive.clone(),
            changes: changes.clone(),
            stopping: stopping.clone(),
            reported: HashMap::new(),
            elsewhere: HashSet::new(),
        }));
        let watcher = Watcher {
            docker,
            hive,
            tracker: tracker.clone(),
        };
        let task = if events {
            tokio::spawn(watcher.run(now_nanos()))
        } else {
            tokio::spawn(async {})
        };
        Self {
            changes,
            stopping,
            tracker,
            task,
        }
    }

    /// Reports a start or death the event stream may not see (a task
    /// container on another node), of the container `id`: once, whoever
    /// reports it first.
    pub(crate) fn report(&self, change: StateChange, id: &str) {
        let mut tracker = self
            .tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tracker.elsewhere.insert(change.name.clone());
        tracker.report(change, id);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }

    /// Container ids whose death is ours (see [`Stopping`]).
    pub(crate) fn stopping(&self) -> MutexGuard<'_, HashSet<String>> {
        lock(&self.stopping)
    }
}

impl Drop for Exits {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The background task following the engine's events.
struct Watcher {
    docker: Docker,
    hive: HiveId,
    tracker: Arc<Mutex<Tracker>>,
}

/// What the watcher has reported, and the turning of engine events and
/// container states into [`StateChange`]s.
struct Tracker {
    /// Events of containers without this hive's label are ignored.
    hive: HiveId,
    changes: broadcast::Sender<StateChange>,
    stopping: Stopping,
    /// Last state reported per agent, and its container id: drops replayed
    /// duplicates and lets a reconnect report what happened while the
    /// stream was down.
    reported: HashMap<AgentName, (bool, String)>,
    /// Agents last reported from elsewhere than this engine's events
    /// ([`Exits::report`]): a reconnect finding no container of theirs
    /// here reads nothing into it.
    elsewhere: HashSet<AgentName>,
}

impl Watcher {
    /// Follows the engine's events for our containers from `since` (unix
    /// nanoseconds) on, forever, forwarding starts and deaths.
    async fn run(self, since: i64) {
        let ours = format!("{HIVE_LABEL}={}", self.hive);
        let filters = HashMap::from([
            ("type", vec!["container"]),
            ("label", vec![AGENT_LABEL, ours.as_str()]),
            ("event", vec!["start", "die", "destroy"]),
        ]);
        let mut since = since;
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                // Events from here on are replayed by the new stream; what
                // happened before is read from the containers' states.
                since = now_nanos();
                match self.states().await {
                    Ok(now) => self.tracker().reconcile(&now),
                    Err(e) => {
                        tracing::warn!("docker events: cannot list containers: {e}");
                        continue;
                    }
                }
            }
            first = false;
            let since_text = format!("{}.{:09}", since / 1_000_000_000, since % 1_000_000_000);
            let options = EventsOptionsBuilder::default()
                .since(&since_text)
                .filters(&filters)
                .build();
            let mut stream = self.docker.events(Some(options));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => self.tracker().handle(&event),
                    Err(e) => {
                        tracing::warn!("docker events: {e}; reconnecting");
                        break;
                    }
                }
            }
            tracing::debug!("docker event stream ended; reconnecting");
        }
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every container of ours: agent, id, running, exit code.
    async fn states(&self) -> std::result::Result<Vec<State>, EngineError> {
        let mut states = Vec::new();
        for (name, id) in list_ours(&self.docker, &self.hive).await? {
            let inspect = match self.docker.inspect_container(&id, None).await {
                Ok(i) => i,
                Err(e) if status(&e) == Some(404) => continue,
                Err(e) => return Err(e),
            };
            let state = inspect.state.unwrap_or_default();
            states.push(State {
                name,
                id,
                running: state.running == Some(true),
                exit_code: state.exit_code,
            });
        }
        Ok(states)
    }
}

/// One container's state, as read after a reconnect.
#[derive(Debug, Clone)]
struct State {
    name: AgentName,
    id: String,
    running: bool,
    exit_code: Option<i64>,
}

impl Tracker {
    /// Turns a start or death of one of ours into a [`StateChange`].
    fn handle(&mut self, event: &EventMessage) {
        let Some(actor) = &event.actor else { return };
        let (Some(id), Some(attributes)) = (&actor.id, &actor.attributes) else {
            return;
        };
        if attributes.get(HIVE_LABEL).map(String::as_str) != Some(self.hive.as_str()) {
            return; // another hive's (the engine filters these out already)
        }
        let Some(name) = attributes
            .get(AGENT_LABEL)
            .and_then(|n| AgentName::parse(n).ok())
        else {
            return;
        };
        self.elsewhere.remove(&name);
        let change = match event.action.as_deref() {
            Some("start") => {
                lock(&self.stopping).remove(id);
                StateChange {
                    name,
                    running: true,
                    expected: true,
                    detail: None,
                }
            }
            Some("die") => {
                let detail = attributes
                    .get("exitCode")
                    .and_then(|c| c.parse::<i64>().ok())
                    .map_or_else(|| "exited".to_owned(), describe_exit);
                StateChange {
                    name,
                    running: false,
                    expected: lock(&self.stopping).contains(id),
                    detail: Some(detail),
                }
            }
            Some("destroy") => {
                lock(&self.stopping).remove(id);
                return;
            }
            _ => return,
        };
        self.report(change, id);
    }

    fn report(&mut self, change: StateChange, id: &str) {
        let before = self
            .reported
            .insert(change.name.clone(), (change.running, id.to_owned()));
        if before.is_some_and(|(running, was)| running == change.running && was == id) {
            return; // a replayed duplicate
        }
        tracing::info!(
            agent = %change.name,
            "container h-{} {}",
            change.name,
            change.detail.as_deref().unwrap_or("started")
        );
        let _ = self.changes.send(change);
    }

    /// After the event stream was down: reports the agents whose state
    /// (`now`) differs from what was last reported.
    fn reconcile(&mut self, now: &[State]) {
        let mut changed = Vec::new();
        for (name, (was_running, old_id)) in &self.reported {
            // Swarm keeps a service's earlier task containers: the running
            // one, if any, is the agent's.
            let state = now
                .iter()
                .find(|s| &s.name == name && s.running)
                .or_else(|| now.iter().find(|s| &s.name == name));
            if state.is_none() && self.elsewhere.contains(name) {
                continue; // not this engine's to say
            }
            let (running, code, id) =
                state.map_or((false, None, old_id), |s| (s.running, s.exit_code, &s.id));
            if running == *was_running && id == old_id {
                continue;
            }
            let change = StateChange {
                name: name.clone(),
                running,
                expected: running || lock(&self.stopping).contains(old_id),
                detail: (!running)
                    .then(|| code.map_or_else(|| "removed".to_owned(), describe_exit)),
            };
            changed.push((change, id.clone()));
        }
        for (change, id) in changed {
            self.report(change, &id);
        }
    }
}

/// This hive's containers: agent name and container id.
pub(super) async fn list_ours(
    docker: &Docker,
    hive: &HiveId,
) -> std::result::Result<Vec<(AgentName, String)>, EngineError> {
    let ours = format!("{HIVE_LABEL}={hive}");
    let filters = HashMap::from([("label", vec![AGENT_LABEL, ours.as_str()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let containers = docker.list_containers(Some(options)).await?;
    Ok(containers
        .into_iter()
        .filter_map(|c| {
            let name = AgentName::parse(c.labels?.get(AGENT_LABEL)?).ok()?;
            Some((name, c.id?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn event(action: &str, agent: &str, id: &str, exit: Option<&str>) -> EventMessage {
        let mut attributes = HashMap::from([
            (AGENT_LABEL.to_owned(), agent.to_owned()),
            (HIVE_LABEL.to_owned(), hive().to_string()),
            ("name".to_owned(), format!("h-{agent}")),
        ]);
        if let Some(code) = exit {
            attributes.insert("exitCode".to_owned(), code.to_owned());
        }
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: Some(attributes),
            }),
            ..Default::default()
        }
    }

    fn hive() -> HiveId {
        HiveId::of(std::path::Path::new("/hive"))
    }

    fn tracker() -> (Tracker, broadcast::Receiver<StateChange>) {
        let (changes, rx) = broadcast::channel(16);
        let tracker = Tracker {
            hive: hive(),
            changes,
            stopping: Stopping::default(),
            reported: HashMap::new(),
            elsewhere: HashSet::new(),
        };
        (tracker, rx)
    }

    fn drain(
        rx: &mut broadcast::Receiver<StateChange>,
    ) -> Vec<(String, bool, bool, Option<String>)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| (c.name.to_string(), c.running, c.expected, c.detail))
            .collect()
    }

    #[test]
    fn exits_are_worded_like_the_child_backends() {
        assert_eq!(describe_exit(0), "exited 0");
        assert_eq!(describe_exit(1), "exit code 1");
        assert_eq!(describe_exit(137), "killed by SIGKILL");
        assert_eq!(describe_exit(143), "killed by SIGTERM");
        assert_eq!(describe_exit(255), "exit code 255");
    }

    #[test]
    fn deaths_we_caused_are_expected_until_the_next_start() {
        let (mut t, mut rx) = tracker();
        t.handle(&event("start", "ann", "c1", None));
        lock(&t.stopping).insert("c1".into());
        t.handle(&event("die", "ann", "c1", Some("143")));
        t.handle(&event("start", "ann", "c1", None));
        t.handle(&event("die", "ann", "c1", Some("137")));
        // Replayed after a reconnect: dropped.
        t.handle(&event("die", "ann", "c1", Some("137")));
        // Not ours (no valid agent label): ignored.
        t.handle(&event("die", "Not A Name", "c9", Some("1")));
        // Another hive's: ignored.
        let mut other = event("die", "ann", "c8", Some("1"));
        if let Some(a) = other.actor.as_mut().and_then(|a| a.attributes.as_mut()) {
            a.insert(HIVE_LABEL.to_owned(), "0123456789abcdef".to_owned());
        }
        t.handle(&other);
        let s = |d: &str| Some(d.to_owned());
        assert_eq!(
            drain(&mut rx),
            [
                ("ann".into(), true, true, None),
                ("ann".into(), false, true, s("killed by SIGTERM")),
                ("ann".into(), true, true, None),
                ("ann".into(), false, false, s("killed by SIGKILL")),
            ]
        );
        t.handle(&event("destroy", "ann", "c1", None));
        assert!(lock(&t.stopping).is_empty());
    }

    /// Swarm's task watch reports through the same tracker: a death both
    /// it and the event stream see is one report, and an agent it reports
    /// (on another node) is not read as removed by a reconnect that finds
    /// no container of it here.
    #[test]
    fn a_death_seen_by_the_stream_and_the_task_watch_is_reported_once() {
        let (mut t, mut rx) = tracker();
        t.handle(&event("start", "ann", "c1", None));
        t.handle(&event("die", "ann", "c1", Some("137")));
        let change = |running, detail: Option<&str>| StateChange {
            name: AgentName::parse("ann").unwrap(),
            running,
            expected: running,
            detail: detail.map(str::to_owned),
        };
        t.elsewhere.insert(AgentName::parse("ann").unwrap());
        t.report(
            change(false, Some("failed: task: non-zero exit (137)")),
            "c1",
        );
        // Elsewhere: started and running on another node, then a reconnect
        // of the stream that sees no container of it.
        t.report(change(true, None), "c2");
        t.report(change(true, None), "c2");
        t.reconcile(&[]);
        let s = |d: &str| Some(d.to_owned());
        assert_eq!(
            drain(&mut rx),
            [
                ("ann".into(), true, true, None),
                ("ann".into(), false, false, s("killed by SIGKILL")),
                ("ann".into(), true, true, None),
            ]
        );
    }

    #[test]
    fn a_reconnect_reports_what_changed_meanwhile() {
        let (mut t, mut rx) = tracker();
        for (agent, id) in [("ann", "c1"), ("bob", "c2"), ("cat", "c3"), ("dan", "c4")] {
            t.handle(&event("start", agent, id, None));
        }
        drain(&mut rx);
        lock(&t.stopping).insert("c3".into());
        let state = |name: &str, id: &str, running, code| State {
            name: AgentName::parse(name).unwrap(),
            id: id.into(),
            running,
            exit_code: code,
        };
        // ann still runs; bob crashed; cat was stopped by us; dan is gone.
        t.reconcile(&[
            state("ann", "c1", true, None),
            state("bob", "c2", false, Some(2)),
            state("cat", "c3", false, Some(143)),
        ]);
        let mut seen = drain(&mut rx);
        seen.sort();
        let s = |d: &str| Some(d.to_owned());
        assert_eq!(
            seen,
            [
                ("bob".into(), false, false, s("exit code 2")),
                ("cat".into(), false, true, s("killed by SIGTERM")),
                ("dan".into(), false, false, s("removed")),
            ]
        );
        // The replayed deaths that follow are duplicates.
        t.handle(&event("die", "bob", "c2", Some("2")));
        assert!(drain(&mut rx).is_empty());
    }
}
