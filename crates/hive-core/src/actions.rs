//! The operator's and the manager's verbs, implemented once.
//!
//! host.sock, the manager socket and (later) the dashboard all call these,
//! so the surfaces never drift. The lifecycle verbs themselves live in
//! [`crate::lifecycle`].

use std::sync::Arc;

use hive_proto::{
    AgentName, Approval, ApprovalKind, ApprovalStatus, DashboardEvent, HelperEvent, KeptRunning,
    OPERATOR_RECIPIENT, Scope,
};
use hive_store::Question;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};

/// A verb applied to a scope of agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeVerb {
    Start,
    Stop,
}

impl Coordinator {
    /// Starts or stops every agent in `scope` (all when empty), reporting
    /// each failure by name. Answers the agents a stop of everything left
    /// running on purpose (the manager), with the reason.
    pub async fn lifecycle_scope(
        self: &Arc<Self>,
        verb: ScopeVerb,
        scope: &Scope,
    ) -> Result<Vec<KeptRunning>> {
        let verb_name = match verb {
            ScopeVerb::Start => "start",
            ScopeVerb::Stop => "stop",
        };
        for name in &scope.agent_names {
            self.require_agent(name)?;
        }
        self.require_runtime(verb_name)?;
        let mut kept = Vec::new();
        let names = if scope.is_all() {
            let mut names = Vec::new();
            for record in self.store.agents()?.into_iter().filter(|r| r.has_container) {
                if verb == ScopeVerb::Stop && record.name == hive_proto::MANAGER_AGENT {
                    if self
                        .container_status(&record.name)
                        .is_some_and(|c| c.running)
                    {
                        kept.push(KeptRunning {
                            name: record.name,
                            reason: "the manager is left out of stopping every agent; \
                                     name it to stop it (`hive stop manager`)"
                                .to_owned(),
                        });
                    }
                    continue;
                }
                names.push(AgentName::parse(&record.name).map_err(hive_store::Error::from)?);
            }
            names
        } else {
            scope.agent_names.clone()
        };
        let mut failures = Vec::new();
        for name in &names {
            let outcome = match verb {
                ScopeVerb::Start => self.start(name).await,
                ScopeVerb::Stop => self.stop(name).await,
            };
            if let Err(e) = outcome {
                failures.push((name, e));
            }
        }
        if names.len() == 1 && failures.len() == 1 {
            return Err(failures.remove(0).1);
        }
        if failures.is_empty() {
            return Ok(kept);
        }
        let each: Vec<String> = failures
            .iter()
            .map(|(name, e)| format!("{name}: {e}"))
            .collect();
        Err(Error::refused(each.join("; ")))
    }

    /// Sets or clears an agent's pause marker. Works whether or not its
    /// container runs.
    pub fn set_paused(&self, name: &AgentName, paused: bool) -> Result<()> {
        self.require_agent(name)?;
        // The control dir is core's (read-only in the container); still
        // reached without following links, and the marker is replaced,
        // never written through.
        let control = crate::safe_fs::Dir::create(
            &self.paths.state_dir,
            &self.paths.control_dir(name),
            crate::paths::DIR_MODE,
        )?;
        if paused {
            control.write_file(hive_proto::control::PAUSED, b"paused by the operator\n")?;
        } else {
            control.remove_file(hive_proto::control::PAUSED)?;
        }
        self.control_changed(name);
        self.store.set_paused(name.as_str(), paused)?;
        self.publish_status(name.as_str());
        Ok(())
    }

    /// Queues a spawn approval (a same-name tombstone is revived on
    /// approval).
    pub fn request_spawn(&self, name: &AgentName, description: Option<&str>) -> Result<Approval> {
        if name.is_manager() {
            return Err(Error::refused(
                "the manager is ensured by core at startup, not spawned",
            ));
        }
        // What the approval would fail on, refused now.
        self.refuse_existing(name)?;
        let duplicate = self
            .store
            .pending_approvals()?
            .into_iter()
            .find(|a| a.kind == ApprovalKind::Spawn && a.agent == name.as_str());
        if let Some(existing) = duplicate {
            return Err(Error::refused(format!(
                "a spawn of {name} is already pending as approval #{}",
                existing.id
            )));
        }
        // The operator approves a spend limit along with the agent.
        let budget = self.spawn_budget(name);
        let description = if budget.is_unlimited() {
            description.map(str::to_owned)
        } else {
            Some(format!(
                "{}budget: {}",
                description.map(|d| format!("{d}\n")).unwrap_or_default(),
                budget.describe()
            ))
        };
        let approval = self.store.queue_approval(
            name.as_str(),
            ApprovalKind::Spawn,
            "",
            description.as_deref(),
        )?;
        self.publish_approval_added(&approval);
        Ok(approval)
    }

    /// The budget a spawn of `name` would run with: its deployed config's
    /// (a revival), else the template's.
    fn spawn_budget(&self, name: &AgentName) -> hive_proto::control::Budget {
        if let Ok(deployed) = self.config.deployed(name) {
            return deployed.config.budget;
        }
        hive_config::check_agent_toml(&hive_config::template::agent_toml(name, "sonnet"))
            .map(|c| c.budget)
            .unwrap_or_default()
    }

    /// Approves a pending approval and runs its action. An action that
    /// fails leaves the approval `failed`, with the error as its note.
    pub async fn approve(self: &Arc<Self>, id: i64) -> Result<Approval> {
        let pending = self.store.approval(id)?;
        if pending.status != ApprovalStatus::Pending {
            return Err(Error::refused(format!(
                "approval #{id} is already {}",
                pending.status.as_str()
            )));
        }
        let resolve = || {
            self.store
                .resolve_approval(id, ApprovalStatus::Approved, None)
        };
        // A deploy takes its place in the agent's lane in the same step as
        // its approval, so deploys run in approval order.
        let (approved, ticket) = if pending.kind == ApprovalKind::ApplyCommit {
            let name = AgentName::parse(&pending.agent).map_err(hive_store::Error::from)?;
            let (approved, ticket) = self.deploys.approve_and_join(&name, id, resolve)?;
            (approved, Some(ticket))
        } else {
            (resolve()?, None)
        };
        match self.run_approved(&approved, ticket).await {
            Ok(None) => {
                self.publish_approval_resolved(&approved);
                Ok(approved)
            }
            Ok(Some(superseded)) => {
                let resolved = self.store.resolve_approval(
                    id,
                    ApprovalStatus::Superseded,
                    Some(&superseded),
                )?;
                self.publish_approval_resolved(&resolved);
                Ok(resolved)
            }
            Err(e) => {
                let note = e.to_string();
                let failed =
                    self.store
                        .resolve_approval(id, ApprovalStatus::Failed, Some(&note))?;
                self.publish_approval_resolved(&failed);
                Err(Error::refused(format!(
                    "approved #{id}, but its {} failed: {note}",
                    failed.kind.as_str()
                )))
            }
        }
    }

    /// Runs an approved action; `Some(note)` when a deploy was superseded.
    async fn run_approved(
        self: &Arc<Self>,
        approval: &Approval,
        ticket: Option<crate::deploys::Ticket>,
    ) -> Result<Option<String>> {
        match approval.kind {
            ApprovalKind::Spawn => {
                let name = AgentName::parse(&approval.agent).map_err(hive_store::Error::from)?;
                self.spawn(&name).await.map(|()| None)
            }
            ApprovalKind::ApplyCommit => self.apply_commit(approval, ticket).await,
            ApprovalKind::InitConfig => {
                let name = AgentName::parse(&approval.agent).map_err(hive_store::Error::from)?;
                self.init_config(&name).await.map(|()| None)
            }
        }
    }

    /// Denies a pending approval; the manager hears the operator's note.
    pub async fn deny(&self, id: i64, note: Option<&str>) -> Result<Approval> {
        let denied = self
            .store
            .resolve_approval(id, ApprovalStatus::Denied, note)?;
        self.close_proposal(&denied, note).await;
        self.publish_approval_resolved(&denied);
        Ok(denied)
    }

    /// Withdraws a pending approval (the manager's `cancel_loose_end`).
    pub async fn cancel_approval(&self, id: i64) -> Result<Approval> {
        let cancelled = self
            .store
            .resolve_approval(id, ApprovalStatus::Cancelled, None)?;
        self.close_proposal(&cancelled, Some("cancelled by the manager"))
            .await;
        self.publish_approval_resolved(&cancelled);
        Ok(cancelled)
    }

    fn publish_approval_added(&self, a: &Approval) {
        self.dashboard.emit(|seq| DashboardEvent::ApprovalAdded {
            seq,
            id: a.id,
            agent: a.agent.clone(),
            approval_kind: a.kind,
            sha_short: sha_short(&a.commit_ref),
            diff: None,
            description: a.description.clone(),
        });
    }

    fn publish_approval_resolved(&self, a: &Approval) {
        self.notify_manager(&HelperEvent::ApprovalResolved {
            id: a.id,
            agent: a.agent.clone(),
            commit_ref: a.commit_ref.clone(),
            status: a.status,
            note: a.note.clone(),
            running_sha: self.running_sha(a),
        });
        self.dashboard.emit(|seq| DashboardEvent::ApprovalResolved {
            seq,
            id: a.id,
            agent: a.agent.clone(),
            approval_kind: a.kind,
            sha_short: sha_short(&a.commit_ref),
            status: a.status,
            resolved_at: a.resolved_at.unwrap_or_else(hive_store::now_unix),
            note: a.note.clone(),
            description: a.description.clone(),
        });
    }

    /// The config sha `a`'s agent runs once a resolved deploy is done
    /// with (none for other kinds and for undecided deploys).
    fn running_sha(&self, a: &Approval) -> Option<String> {
        let decided = matches!(
            a.status,
            ApprovalStatus::Approved | ApprovalStatus::Failed | ApprovalStatus::Superseded
        );
        if a.kind != ApprovalKind::ApplyCommit || !decided {
            return None;
        }
        self.store
            .agent(&a.agent)
            .ok()
            .flatten()
            .and_then(|r| r.deployed_sha)
    }

    /// Sends a message from the operator.
    pub fn operator_send(&self, to: &str, body: &str) -> Result<Vec<i64>> {
        if to == OPERATOR_RECIPIENT {
            return Err(Error::refused("the operator cannot message itself"));
        }
        Ok(self.store.send(OPERATOR_RECIPIENT, to, body, None)?)
    }

    /// Publishes a newly queued question.
    pub fn publish_question_added(&self, q: &Question) {
        self.dashboard.emit(|seq| DashboardEvent::QuestionAdded {
            seq,
            id: q.id,
            asker: q.asker.clone(),
            question: q.question.clone(),
            options: q.options.clone(),
            multi: q.multi,
            asked_at: q.asked_at,
            deadline_at: q.deadline_at,
            target: q.target.clone(),
        });
    }

    /// Publishes a resolved (answered, expired, cancelled) question.
    pub fn publish_question_resolved(&self, q: &Question) {
        self.dashboard.emit(|seq| DashboardEvent::QuestionResolved {
            seq,
            id: q.id,
            answer: q.answer.clone().unwrap_or_default(),
            answerer: q.answerer.clone().unwrap_or_default(),
            answered_at: q.answered_at.unwrap_or_else(hive_store::now_unix),
            cancelled: q.cancelled,
            target: q.target.clone(),
        });
    }
}

fn sha_short(commit_ref: &str) -> Option<String> {
    (!commit_ref.is_empty()).then(|| commit_ref.chars().take(12).collect())
}
