//! Agent config as git, wired into the approval flow.
//!
//! `hive-config` owns the repos and tags; [`Configs`] decides when each
//! step runs: `ensure` at spawn, `prepare` + `proposal/<id>` when the
//! manager requests a deploy, `denied/` on denial. It also puts a
//! deployed config where it takes effect (the broker's allow-list, the
//! egress policy, `deployed.json`). An approved deploy — `approved/` →
//! `building/` → install → rebuild → healthy → `deployed/` | `failed/`
//! (the previous config put back), one per agent at a time, `denied/`
//! when a later approved deploy supersedes a queued one — is run by
//! [`crate::actions`], which also holds lifecycle. git work runs on
//! blocking threads; the mirror push runs in the background and never
//! holds up a deploy.

use std::sync::Arc;

use hive_config::{ConfigRepos, Deployed, MirrorConfig, TagKind};
use hive_proto::{AgentName, Approval, ApprovalKind, ApprovalStatus, DashboardEvent};
use hive_store::Store;

use crate::Paths;
use crate::egress::Egress;
use crate::error::{Error, Result};
use crate::events::DashboardBus;
use crate::ports::AgentPorts;
use crate::status::require_agent;

/// `deployed.json` for the harness: the part of `deployed`'s config it
/// acts on (the rest — network, mounts, resources, env — core applies).
fn deployed_file(deployed: &hive_config::Deployed) -> hive_proto::control::Deployed {
    let config = &deployed.config;
    hive_proto::control::Deployed {
        sha: deployed.sha.clone(),
        config: hive_proto::control::DeployedConfig {
            model: Some(config.model.clone()),
            engine: Some(config.engine.as_str().to_owned()),
            mcp_servers: config
                .mcp_servers
                .iter()
                .map(|(key, server)| {
                    let server = hive_proto::control::ExtraServer {
                        command: server.command.clone(),
                        args: server.args.clone(),
                        env: server.env.clone(),
                        allowed_tools: server.allowed_tools.clone(),
                    };
                    (key.clone(), server)
                })
                .collect(),
            budget: config.budget,
        },
        prompt: deployed.prompt.clone(),
    }
}

/// Every agent's config repos, and where a deployed config takes effect.
pub struct Configs {
    store: Store,
    paths: Paths,
    repos: ConfigRepos,
    egress: Arc<Egress>,
    dashboard: Arc<DashboardBus>,
    /// Where applied config repos are mirrored, if anywhere.
    mirror: Option<MirrorConfig>,
    /// The TLS link, told when a deployed config is written.
    link: Option<Arc<crate::link::Link>>,
    /// The manager's uid, to hand it the proposed repos.
    ports: AgentPorts,
}

impl Configs {
    pub fn new(
        store: Store,
        paths: Paths,
        egress: Arc<Egress>,
        dashboard: Arc<DashboardBus>,
        mirror: Option<MirrorConfig>,
        link: Option<Arc<crate::link::Link>>,
        ports: AgentPorts,
    ) -> Self {
        Self {
            repos: ConfigRepos::new(&paths.state_dir),
            store,
            paths,
            egress,
            dashboard,
            mirror,
            link,
            ports,
        }
    }

    /// The repos themselves, for readers (history, diffs).
    pub fn repos(&self) -> &ConfigRepos {
        &self.repos
    }

    /// `name`'s deployed config, read from its applied repo.
    pub fn deployed(&self, name: &AgentName) -> hive_config::Result<Deployed> {
        self.repos.deployed(name)
    }

    /// Runs `f` on the config repos on a blocking thread.
    pub(crate) async fn with_repos<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ConfigRepos) -> hive_config::Result<T> + Send + 'static,
    ) -> Result<T> {
        let repos = self.repos.clone();
        tokio::task::spawn_blocking(move || f(&repos))
            .await
            .map_err(|e| Error::Internal(format!("config task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Makes `name`'s repos exist and returns its deployed config, written
    /// where the harness reads it and applied to the broker's allow-list.
    pub async fn ensure(&self, name: &AgentName) -> Result<Deployed> {
        // The manager writes `proposed/`: refuse a planted link before
        // libgit2 creates or opens anything there.
        self.paths.prepare_proposed(name)?;
        let ensured = {
            let name = name.clone();
            self.with_repos(move |repos| repos.ensure(&name)).await?
        };
        let deployed = {
            let name = name.clone();
            self.with_repos(move |repos| repos.deployed(&name)).await?
        };
        if ensured.applied_created {
            self.mirror_soon(name);
        }
        self.give_proposed_to_manager(name)?;
        self.install_config(name, &deployed)?;
        Ok(deployed)
    }

    /// Records a deployed config: the status row's sha, the broker's
    /// allow-list, and the file the harness reads.
    pub(crate) fn install_config(&self, name: &AgentName, deployed: &Deployed) -> Result<()> {
        self.write_config(name, deployed)?;
        self.store
            .set_deployed_sha(name.as_str(), Some(&deployed.sha))?;
        Ok(())
    }

    /// Puts `deployed` where it takes effect — the broker's allow-list, the
    /// egress policy and the file the harness reads at boot — before a
    /// container is (re)started with it.
    pub(crate) fn write_config(&self, name: &AgentName, deployed: &Deployed) -> Result<()> {
        self.store
            .set_allowed_recipients(name.as_str(), deployed.config.allowed_recipients.as_deref())?;
        self.egress.set_policy(
            name,
            deployed.config.network.clone(),
            deployed.config.engine,
        );
        // The control dir is core's own (bound read-only into the
        // container); reached without following links all the same.
        let dir = crate::safe_fs::Dir::create(
            &self.paths.state_dir,
            &self.paths.control_dir(name),
            crate::paths::DIR_MODE,
        )?;
        let json = serde_json::to_vec_pretty(&deployed_file(deployed))
            .map_err(|e| Error::Internal(e.to_string()))?;
        dir.write_file(hive_proto::control::DEPLOYED, &json)?;
        if let Some(link) = &self.link {
            link.control_changed(name);
        }
        Ok(())
    }

    /// Validates `commit_ref` against the agent's proposed repo and queues
    /// an approval to deploy it, with the diff against what runs.
    pub async fn request_apply_commit(
        &self,
        agent: &AgentName,
        commit_ref: &str,
        description: Option<&str>,
    ) -> Result<Approval> {
        require_agent(&self.store, agent)?;
        hive_config::validate_commit_ref(commit_ref).map_err(Error::from)?;
        self.paths.prepare_proposed(agent)?;
        let prepared = {
            let (agent, commit_ref) = (agent.clone(), commit_ref.to_owned());
            self.with_repos(move |repos| repos.prepare(&agent, &commit_ref))
                .await?
        };
        self.queue_deploy(agent, prepared, description).await
    }

    /// Queues an approval that redeploys the commit of `deployed/<id>`.
    /// Refused when that config is what runs already (the same commit, or
    /// one with no difference from it): such a deploy would change nothing.
    pub async fn request_rollback(&self, agent: &AgentName, id: i64) -> Result<Approval> {
        let record = require_agent(&self.store, agent)?;
        self.paths.prepare_proposed(agent)?;
        let prepared = {
            let agent = agent.clone();
            self.with_repos(move |repos| {
                let sha = repos.rollback_target(&agent, id)?;
                repos.prepare(&agent, &sha)
            })
            .await?
        };
        let short: String = prepared.sha.chars().take(12).collect();
        if record.deployed_sha.as_deref() == Some(prepared.sha.as_str()) {
            return Err(Error::refused(format!(
                "{agent} already runs deployed/{id} (commit {short}); there is nothing to roll back"
            )));
        }
        if prepared.diff.trim().is_empty() {
            return Err(Error::refused(format!(
                "the config of deployed/{id} (commit {short}) is the same as what {agent} runs now; there is nothing to roll back"
            )));
        }
        let description = format!("rollback to deployed/{id}");
        self.queue_deploy(agent, prepared, Some(&description)).await
    }

    async fn queue_deploy(
        &self,
        agent: &AgentName,
        prepared: hive_config::Prepared,
        description: Option<&str>,
    ) -> Result<Approval> {
        let approval = self.store.queue_approval(
            agent.as_str(),
            ApprovalKind::ApplyCommit,
            &prepared.sha,
            description,
        )?;
        let tagged = {
            let (agent, sha, id) = (agent.clone(), prepared.sha.clone(), approval.id);
            self.with_repos(move |repos| repos.tag(&agent, TagKind::Proposal, id, &sha))
                .await
        };
        if let Err(e) = tagged {
            self.store.resolve_approval(
                approval.id,
                ApprovalStatus::Cancelled,
                Some(&e.to_string()),
            )?;
            return Err(e);
        }
        self.dashboard.emit(|seq| DashboardEvent::ApprovalAdded {
            seq,
            id: approval.id,
            agent: approval.agent.clone(),
            approval_kind: approval.kind,
            sha_short: Some(prepared.sha.chars().take(12).collect()),
            diff: Some(prepared.diff),
            description: approval.description.clone(),
        });
        self.mirror_soon(agent);
        Ok(approval)
    }

    /// Queues an approval to seed `name`'s proposed repo before its spawn.
    pub fn request_init_config(
        &self,
        name: &AgentName,
        description: Option<&str>,
    ) -> Result<Approval> {
        if self
            .store
            .agent(name.as_str())?
            .is_some_and(|r| r.has_container)
        {
            return Err(Error::refused(format!(
                "{name} already exists; propose config commits instead"
            )));
        }
        let approval =
            self.store
                .queue_approval(name.as_str(), ApprovalKind::InitConfig, "", description)?;
        self.dashboard.emit(|seq| DashboardEvent::ApprovalAdded {
            seq,
            id: approval.id,
            agent: approval.agent.clone(),
            approval_kind: approval.kind,
            sha_short: None,
            diff: None,
            description: approval.description.clone(),
        });
        Ok(approval)
    }

    /// The action of an approved `init_config`: seed the proposed repo.
    pub(crate) async fn init_config(&self, name: &AgentName) -> Result<()> {
        self.paths
            .create_agent_dirs(name)
            .map_err(|e| Error::Internal(format!("{e:#}")))?;
        self.paths.prepare_proposed(name)?;
        {
            let name = name.clone();
            self.with_repos(move |repos| repos.init_proposed(&name).map(|_| ()))
                .await?;
        }
        self.give_proposed_to_manager(name)
    }

    /// Hands `name`'s proposed repo to the manager's unprivileged uid, so
    /// it can commit there while `proposed/` and `proposed/<name>/` stay
    /// core's (it can neither rename nor replace them). Nothing to do when
    /// the manager runs as the daemon's own user.
    fn give_proposed_to_manager(&self, name: &AgentName) -> Result<()> {
        if let Some(manager) = self.ports.agent_user_of(&AgentName::manager())? {
            self.paths.chown_proposed(name, manager.uid, manager.gid)?;
        }
        Ok(())
    }

    /// Tags a denied (or withdrawn) deploy proposal.
    pub(crate) async fn close_proposal(&self, approval: &Approval, note: Option<&str>) {
        if approval.kind != ApprovalKind::ApplyCommit {
            return;
        }
        let Ok(name) = AgentName::parse(&approval.agent) else {
            return;
        };
        let (id, note) = (approval.id, note.map(str::to_owned));
        let tagged = {
            let name = name.clone();
            self.with_repos(move |repos| repos.mark_denied(&name, id, note.as_deref()))
                .await
        };
        if let Err(e) = tagged {
            tracing::warn!(%name, id, "denied/{id} not tagged: {e}");
        }
        self.mirror_soon(&name);
    }

    /// Pushes `name`'s applied repo to the mirror in the background, if one
    /// is configured. Failures are logged, never returned.
    pub fn mirror_soon(&self, name: &AgentName) {
        let Some(mirror) = self.mirror.clone() else {
            return;
        };
        let repos = self.repos.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || mirror_now(&repos, &name, &mirror));
    }
}

fn mirror_now(repos: &ConfigRepos, name: &AgentName, mirror: &MirrorConfig) {
    match repos.mirror(name, mirror) {
        Ok(()) => tracing::debug!(%name, "mirrored config"),
        Err(e) => tracing::warn!(%name, "config mirror: {e}"),
    }
}
