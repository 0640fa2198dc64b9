//! What each agent is doing, for the dashboard: the turn state its harness
//! last reported, and the last lifecycle action on it with its result.
//!
//! Both live in memory only (a restarted daemon hears the harnesses report
//! again); [`Activity`] keeps them and says when something changed, and
//! the caller publishes the change on the dashboard bus.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hive_proto::dashboard::{LastActionView, TransientKind, TurnStateView};
use hive_proto::live::TurnState;

/// Longest harness note kept: it is agent text, shown on the dashboard.
const MAX_NOTE_CHARS: usize = 200;
/// Longest lifecycle error kept.
const MAX_ERROR_CHARS: usize = 500;

#[derive(Default)]
pub struct Activity {
    turns: Mutex<HashMap<String, TurnStateView>>,
    actions: Mutex<HashMap<String, LastActionView>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `text` cut to `max` characters, control characters dropped.
fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

impl Activity {
    /// Records a harness report; the new view when the state or its note
    /// changed.
    pub fn turn_reported(
        &self,
        name: &str,
        state: TurnState,
        note: Option<&str>,
        now: i64,
    ) -> Option<TurnStateView> {
        let note = note
            .map(|n| clip(n, MAX_NOTE_CHARS))
            .filter(|n| !n.is_empty());
        let mut turns = lock(&self.turns);
        if let Some(seen) = turns.get(name)
            && seen.state == state
            && seen.note == note
        {
            return None;
        }
        let view = TurnStateView {
            name: name.to_owned(),
            state,
            note,
            since_unix: now,
        };
        turns.insert(name.to_owned(), view.clone());
        Some(view)
    }

    /// Forgets an agent's turn state (its container stopped: whatever it
    /// last said no longer holds). The dashboard shows a turn state only on
    /// a running row, so this needs no event.
    pub fn turn_ended(&self, name: &str) -> bool {
        lock(&self.turns).remove(name).is_some()
    }

    /// Records how a lifecycle action ended.
    pub fn action_finished(
        &self,
        name: &str,
        action: TransientKind,
        error: Option<&str>,
        now: i64,
    ) -> LastActionView {
        let view = LastActionView {
            name: name.to_owned(),
            action,
            ok: error.is_none(),
            error: error.map(|e| clip(e, MAX_ERROR_CHARS)),
            at_unix: now,
        };
        lock(&self.actions).insert(name.to_owned(), view.clone());
        view
    }

    /// Every agent's turn state, by name.
    pub fn turns(&self) -> Vec<TurnStateView> {
        let mut all: Vec<_> = lock(&self.turns).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every agent's last lifecycle action, by name.
    pub fn actions(&self) -> Vec<LastActionView> {
        let mut all: Vec<_> = lock(&self.actions).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_news() {
        let a = Activity::default();
        assert!(a.turn_reported("x", TurnState::Idle, None, 1).is_some());
        assert!(a.turn_reported("x", TurnState::Idle, Some(""), 2).is_none());
        let tool = a
            .turn_reported("x", TurnState::Tool, Some("Bash\u{1b}[2J"), 3)
            .unwrap();
        assert_eq!(
            (tool.note.as_deref(), tool.since_unix),
            (Some("Bash[2J"), 3)
        );
        assert!(
            a.turn_reported("x", TurnState::Tool, Some("Read"), 4)
                .is_some()
        );
        assert_eq!(a.turns().len(), 1);
        assert!(a.turn_ended("x"));
        assert!(a.turns().is_empty());
        let failed = a.action_finished("x", TransientKind::Restarting, Some("boom"), 5);
        assert!(!failed.ok);
        assert_eq!(a.actions(), [failed]);
    }
}
