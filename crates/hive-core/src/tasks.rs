//! The task board's verbs as every surface runs them (agent and manager
//! sockets, host.sock, the dashboard): the store decides who may, this
//! module publishes each change to the dashboard (`task_changed`) and tells
//! the agents it concerns — the assignee of an assignment, the manager of a
//! claim returned because its holder's container went away.

use hive_proto::task::{NewTask, Task, TaskFilter, TaskPatch};
use hive_proto::{
    AgentName, AgentRequest, AgentResponse, DashboardEvent, HelperEvent, MANAGER_AGENT,
    ManagerOnlyRequest,
};

use std::sync::Arc;

use hive_store::Store;

use crate::error::{Error, Result};
use crate::events::{DashboardBus, notify_manager};
use crate::status::require_agent;

/// The task board's verbs: the store's, with what each change publishes.
#[derive(Clone)]
pub struct Tasks {
    store: Store,
    dashboard: Arc<DashboardBus>,
}

impl Tasks {
    pub fn new(store: Store, dashboard: Arc<DashboardBus>) -> Self {
        Self { store, dashboard }
    }

    /// Sends the task's new state to dashboards.
    fn publish_task(&self, task: &Task) {
        let task = task.clone();
        self.dashboard
            .emit(|seq| DashboardEvent::TaskChanged { seq, task });
    }

    /// Creates a task as `actor` (an agent, `manager` or `operator`).
    pub fn create(&self, actor: &str, new: &NewTask) -> Result<Task> {
        let task = self.store.create_task(actor, new)?;
        self.publish_task(&task);
        Ok(task)
    }

    /// The operator's "add": creates the task and, when `assignee` is
    /// given, reserves it for that agent — an unknown assignee is refused
    /// before anything is created.
    pub fn add(&self, new: &NewTask, assignee: Option<&AgentName>) -> Result<Task> {
        if let Some(agent) = assignee {
            require_agent(&self.store, agent)?;
        }
        let task = self.create(hive_proto::OPERATOR_RECIPIENT, new)?;
        match assignee {
            Some(agent) => self.assign(hive_proto::OPERATOR_RECIPIENT, task.id, agent),
            None => Ok(task),
        }
    }

    /// Reserves a task for `agent` and tells `agent`.
    pub fn assign(&self, actor: &str, id: i64, agent: &AgentName) -> Result<Task> {
        require_agent(&self.store, agent)?;
        let task = self.store.assign_task(actor, id, agent.as_str())?;
        self.publish_task(&task);
        let event = HelperEvent::TaskAssigned {
            id,
            title: task.title.clone(),
            by: actor.to_owned(),
        };
        if let Err(e) = self.store.push_helper_event(agent.as_str(), &event) {
            tracing::warn!(%agent, id, "task assignment not delivered: {e}");
        }
        Ok(task)
    }

    pub fn cancel(&self, actor: &str, id: i64, reason: Option<&str>) -> Result<Task> {
        let task = self.store.cancel_task(actor, id, reason)?;
        self.publish_task(&task);
        Ok(task)
    }

    /// The claims `agent` held end with its container: each task goes back
    /// to open, the dashboard sees it and the manager is told.
    pub fn release_claims(&self, agent: &AgentName, why: &str) {
        let released = match self.store.release_claims(agent.as_str(), why) {
            Ok(released) => released,
            Err(e) => {
                tracing::error!(%agent, "task claims not released: {e}");
                return;
            }
        };
        for task in released {
            tracing::info!(%agent, id = task.id, "task claim released: {why}");
            self.publish_task(&task);
            if agent.as_str() != MANAGER_AGENT {
                notify_manager(
                    &self.store,
                    &HelperEvent::TaskReleased {
                        id: task.id,
                        title: task.title.clone(),
                        agent: agent.to_string(),
                        reason: why.to_owned(),
                    },
                );
            }
        }
    }

    /// Answers an agent socket's task verb as `me`.
    pub fn agent_verb(&self, me: &AgentName, request: &AgentRequest) -> Result<AgentResponse> {
        use AgentRequest::*;
        let me_str = me.as_str();
        let changed = |task: Result<Task>| {
            task.map(|task| {
                self.publish_task(&task);
                AgentResponse::Task { task }
            })
        };
        match request {
            TaskCreate {
                title,
                body,
                depends_on,
                links,
            } => {
                let new = NewTask {
                    title: title.clone(),
                    body: body.clone(),
                    depends_on: depends_on.clone(),
                    links: links.clone(),
                };
                self.create(me_str, &new)
                    .map(|task| AgentResponse::Task { task })
            }
            TaskList { filter } => self
                .store
                .tasks(me_str, *filter)
                .map(|tasks| AgentResponse::Tasks { tasks })
                .map_err(Into::into),
            TaskShow { id } => (|| {
                Ok(AgentResponse::TaskDetail {
                    task: self.store.task(*id)?,
                    history: self.store.task_history(*id)?,
                })
            })(),
            TaskClaim { id } => changed(self.store.claim_task(me_str, *id).map_err(Into::into)),
            TaskUpdate {
                id,
                title,
                body,
                depends_on,
                links,
            } => {
                let patch = TaskPatch {
                    title: title.clone(),
                    body: body.clone(),
                    depends_on: depends_on.clone(),
                    links: links.clone(),
                };
                changed(
                    self.store
                        .update_task(me_str, *id, &patch)
                        .map_err(Into::into),
                )
            }
            TaskComplete { id, note } => {
                let done = changed(
                    self.store
                        .complete_task(me_str, *id, note.as_deref())
                        .map_err(Into::into),
                )?;
                // Its dependents may have just become claimable.
                for task in self.store.task_dependents(*id)? {
                    self.publish_task(&task);
                }
                Ok(done)
            }
            TaskBlock { id, reason } => changed(
                self.store
                    .block_task(me_str, *id, reason)
                    .map_err(Into::into),
            ),
            TaskCancel { id, reason } => self
                .cancel(me_str, *id, reason.as_deref())
                .map(|task| AgentResponse::Task { task }),
            _ => Err(Error::refused("not a task verb")),
        }
    }

    /// Answers the manager's task verbs.
    pub fn manager_verb(&self, request: &ManagerOnlyRequest) -> Result<AgentResponse> {
        match request {
            ManagerOnlyRequest::TaskAssign { id, agent } => self
                .assign(MANAGER_AGENT, *id, agent)
                .map(|task| AgentResponse::Task { task }),
            ManagerOnlyRequest::TaskReorder { id, rank } => self
                .store
                .reorder_task(MANAGER_AGENT, *id, *rank)
                .map_err(Into::into)
                .map(|task| {
                    self.publish_task(&task);
                    AgentResponse::Task { task }
                }),
            _ => Err(Error::refused("not a task verb")),
        }
    }

    /// The operator's board listing.
    pub fn operator_list(&self, filter: TaskFilter) -> Result<Vec<Task>> {
        Ok(self.store.tasks(hive_proto::OPERATOR_RECIPIENT, filter)?)
    }
}
