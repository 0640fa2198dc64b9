//! Loose ends: everything still pending on an agent (undecided approvals,
//! unanswered questions, undelivered reminders), for one agent or the hive.

use hive_proto::LooseEnd;

use crate::{Result, Store};

impl Store {
    /// What is pending on `agent`: approvals about it, questions it asked or
    /// was asked, and its own undelivered reminders (parked included).
    /// Approvals then questions (each oldest first), then reminders
    /// (soonest due first).
    pub fn loose_ends_for(&self, agent: &str, now: i64) -> Result<Vec<LooseEnd>> {
        self.loose_ends(Some(agent), now)
    }

    /// Every loose end of the hive, in the order of [`Store::loose_ends_for`].
    pub fn loose_ends_all(&self, now: i64) -> Result<Vec<LooseEnd>> {
        self.loose_ends(None, now)
    }

    fn loose_ends(&self, agent: Option<&str>, now: i64) -> Result<Vec<LooseEnd>> {
        let age = |created: i64| now.saturating_sub(created).max(0);
        let mut ends = Vec::new();
        for a in self.pending_approvals()? {
            if agent.is_some_and(|name| a.agent != name) {
                continue;
            }
            ends.push(LooseEnd::Approval {
                id: a.id,
                agent: a.agent,
                approval_kind: a.kind,
                commit_ref: a.commit_ref,
                description: a.description,
                requested_at: a.requested_at,
                age_seconds: age(a.requested_at),
            });
        }
        for q in self.pending_questions()? {
            if agent.is_some_and(|name| q.asker != name && q.target.as_deref() != Some(name)) {
                continue;
            }
            ends.push(LooseEnd::Question {
                id: q.id,
                asker: q.asker,
                target: q.target,
                question: q.question,
                asked_at: q.asked_at,
                deadline_at: q.deadline_at,
                age_seconds: age(q.asked_at),
            });
        }
        for r in self.pending_reminders(agent)? {
            let due_at = r.due_at();
            ends.push(LooseEnd::Reminder {
                id: r.id,
                owner: r.owner,
                target: r.target,
                message: r.message,
                due_at,
                age_seconds: age(r.created_at),
                attempts: r.attempts,
                last_error: r.last_error,
                parked: r.parked,
            });
        }
        Ok(ends)
    }
}
