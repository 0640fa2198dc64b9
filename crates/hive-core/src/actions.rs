//! Approvals, implemented once for every surface: queued (a spawn here;
//! deploys and config seeds by [`crate::config`]), approved — running the
//! action, a deploy in its agent's lane ([`crate::deploys`]) — denied or
//! withdrawn. host.sock, the manager socket and the dashboard all call
//! these, so the surfaces never drift.

use std::sync::Arc;

use hive_config::{Deployed, TagKind};
use hive_proto::{AgentName, Approval, ApprovalKind, ApprovalStatus, DashboardEvent, HelperEvent};
use hive_store::Store;

use crate::config::Configs;
use crate::deploys::{DeployLanes, Turn};
use crate::error::{Error, Result};
use crate::events::{DashboardBus, notify_manager};
use crate::lifecycle::Lifecycle;
use crate::status::{Status, require_agent};

/// The approval queue's verbs, and the actions an approval runs.
pub struct Approvals {
    store: Store,
    dashboard: Arc<DashboardBus>,
    configs: Arc<Configs>,
    lifecycle: Arc<Lifecycle>,
    deploys: Arc<DeployLanes>,
    status: Arc<Status>,
}

impl Approvals {
    pub fn new(
        store: Store,
        dashboard: Arc<DashboardBus>,
        configs: Arc<Configs>,
        lifecycle: Arc<Lifecycle>,
        deploys: Arc<DeployLanes>,
        status: Arc<Status>,
    ) -> Self {
        Self {
            store,
            dashboard,
            configs,
            lifecycle,
            deploys,
            status,
        }
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
        self.lifecycle.refuse_existing(name)?;
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

    /// Queues a `move` of `name` to `node`; the approval's text says where
    /// its state comes from (a checkpoint taken at the move, or the last
    /// one, with what is lost). Refused now when the move could not run.
    pub fn request_move(&self, name: &AgentName, node: &str) -> Result<Approval> {
        let plan = self.lifecycle.plan_move(name, node)?;
        let duplicate = self
            .store
            .pending_approvals()?
            .into_iter()
            .find(|a| a.kind == ApprovalKind::Move && a.agent == name.as_str());
        if let Some(existing) = duplicate {
            return Err(Error::refused(format!(
                "a move of {name} is already pending as approval #{}",
                existing.id
            )));
        }
        let approval =
            self.store
                .queue_approval(name.as_str(), ApprovalKind::Move, node, Some(&plan))?;
        self.publish_approval_added(&approval);
        Ok(approval)
    }

    /// The budget a spawn of `name` would run with: its deployed config's
    /// (a revival), else the template's.
    fn spawn_budget(&self, name: &AgentName) -> hive_proto::control::Budget {
        if let Ok(deployed) = self.configs.deployed(name) {
            return deployed.config.budget;
        }
        hive_config::check_agent_toml(&hive_config::template::agent_toml(name, "sonnet"))
            .map(|c| c.budget)
            .unwrap_or_default()
    }

    /// Approves a pending approval and runs its action. An action that
    /// fails leaves the approval `failed`, with the error as its note.
    pub async fn approve(&self, id: i64) -> Result<Approval> {
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
        &self,
        approval: &Approval,
        ticket: Option<crate::deploys::Ticket>,
    ) -> Result<Option<String>> {
        match approval.kind {
            ApprovalKind::Spawn => {
                let name = AgentName::parse(&approval.agent).map_err(hive_store::Error::from)?;
                self.lifecycle.spawn(&name).await.map(|()| None)
            }
            ApprovalKind::ApplyCommit => self.apply_commit(approval, ticket).await,
            ApprovalKind::InitConfig => {
                let name = AgentName::parse(&approval.agent).map_err(hive_store::Error::from)?;
                self.configs.init_config(&name).await.map(|()| None)
            }
            ApprovalKind::Move => {
                let name = AgentName::parse(&approval.agent).map_err(hive_store::Error::from)?;
                self.lifecycle
                    .relocate(&name, &approval.commit_ref)
                    .await
                    .map(|()| None)
            }
        }
    }

    /// Denies a pending approval; the manager hears the operator's note.
    pub async fn deny(&self, id: i64, note: Option<&str>) -> Result<Approval> {
        let denied = self
            .store
            .resolve_approval(id, ApprovalStatus::Denied, note)?;
        self.configs.close_proposal(&denied, note).await;
        self.publish_approval_resolved(&denied);
        Ok(denied)
    }

    /// Withdraws a pending approval (the manager's `cancel_loose_end`).
    pub async fn cancel_approval(&self, id: i64) -> Result<Approval> {
        let cancelled = self
            .store
            .resolve_approval(id, ApprovalStatus::Cancelled, None)?;
        self.configs
            .close_proposal(&cancelled, Some("cancelled by the manager"))
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
            sha_short: sha_short(a),
            diff: None,
            description: a.description.clone(),
        });
    }

    fn publish_approval_resolved(&self, a: &Approval) {
        notify_manager(
            &self.store,
            &HelperEvent::ApprovalResolved {
                id: a.id,
                agent: a.agent.clone(),
                commit_ref: a.commit_ref.clone(),
                status: a.status,
                note: a.note.clone(),
                running_sha: self.running_sha(a),
            },
        );
        self.dashboard.emit(|seq| DashboardEvent::ApprovalResolved {
            seq,
            id: a.id,
            agent: a.agent.clone(),
            approval_kind: a.kind,
            sha_short: sha_short(a),
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

    /// The action of an approved `apply_commit`. It waits its turn in the
    /// agent's deploy lane (see [`crate::deploys`]); a later approval
    /// queued behind it supersedes it (tagged `denied/<id>`, "superseded by
    /// #N"; the answer is `Some(note)`). Otherwise: tag, install the config
    /// where the container reads it, rebuild, wait for the harness to report
    /// in, and tag `deployed/` — or `failed/`, with the previous config put
    /// back and its container restarted.
    async fn apply_commit(
        &self,
        approval: &Approval,
        ticket: Option<crate::deploys::Ticket>,
    ) -> Result<Option<String>> {
        let name = AgentName::parse(&approval.agent).map_err(hive_store::Error::from)?;
        let (id, sha) = (approval.id, approval.commit_ref.clone());
        let ticket = ticket.unwrap_or_else(|| self.deploys.join(&name, id));
        let _turn = match self.deploys.wait(&name, ticket).await {
            Turn::Mine(turn) => turn,
            Turn::Superseded { by } => {
                let note = format!("superseded by #{by}");
                let tagged = {
                    let (name, note) = (name.clone(), note.clone());
                    self.configs
                        .with_repos(move |repos| repos.mark_denied(&name, id, Some(&note)))
                        .await
                };
                if let Err(e) = tagged {
                    tracing::warn!(%name, id, "denied/{id} (superseded) not tagged: {e}");
                }
                self.configs.mirror_soon(&name);
                return Ok(Some(note));
            }
        };
        let (candidate, previous) = {
            let (name, sha) = (name.clone(), sha.clone());
            self.configs
                .with_repos(move |repos| {
                    repos.tag(&name, TagKind::Approved, id, &sha)?;
                    repos.tag(&name, TagKind::Building, id, &sha)?;
                    Ok((repos.config_at(&name, &sha)?, repos.deployed(&name)?))
                })
                .await?
        };
        self.configs.mirror_soon(&name);
        let has_container = require_agent(&self.store, &name)?.has_container;
        let built = match self.configs.write_config(&name, &candidate) {
            Ok(()) if has_container => self.lifecycle.rebuild_with(&name, &candidate).await,
            other => other,
        };
        let outcome = match built {
            Ok(()) => {
                let name2 = name.clone();
                self.configs
                    .with_repos(move |repos| repos.mark_deployed(&name2, id))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(()) => self.configs.install_config(&name, &candidate)?,
            Err(e) => {
                let (name2, error) = (name.clone(), e.to_string());
                if let Err(tag) = self
                    .configs
                    .with_repos(move |repos| repos.mark_failed(&name2, id, &error))
                    .await
                {
                    tracing::warn!(%name, id, "failed/{id} not tagged: {tag}");
                }
                self.restore_config(&name, &previous, has_container).await;
            }
        }
        self.configs.mirror_soon(&name);
        self.status.publish(name.as_str());
        outcome.map(|()| None)
    }

    /// After a failed deploy: the previous config is written back and, if
    /// the agent has a container, that container is rebuilt from it.
    /// Failures are logged: the deploy's own error is what gets reported.
    async fn restore_config(&self, name: &AgentName, previous: &Deployed, rebuild: bool) {
        let restored = match self.configs.install_config(name, previous) {
            Ok(()) if rebuild => self.lifecycle.rebuild_with(name, previous).await,
            other => other,
        };
        match restored {
            Ok(()) => tracing::info!(%name, sha = %previous.sha, "previous config restored"),
            Err(e) => tracing::error!(%name, "previous config not restored: {e}"),
        }
    }
}

/// A deploy's short sha (a move's `commit_ref` is its node, no sha).
fn sha_short(a: &Approval) -> Option<String> {
    let commit_ref = &a.commit_ref;
    (a.kind != ApprovalKind::Move && !commit_ref.is_empty())
        .then(|| commit_ref.chars().take(12).collect())
}
