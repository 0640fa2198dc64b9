//! An agent over its spend limit, as core handles it: the harness reports
//! the `over_budget` state (it starts no turn; messages wait in the inbox),
//! core shows it on the status row and asks the operator once what to do —
//! raise (the manager is asked to propose a larger `[budget]`, deployed
//! through the usual approval), pause or stop.

use std::sync::Arc;

use hive_proto::{AgentName, HelperEvent};
use hive_store::{Question, Store};

use crate::config::Configs;
use crate::error::Result;
use crate::events::{DashboardBus, notify_manager};
use crate::lifecycle::Lifecycle;

/// The status line of an agent over its budget.
pub const OVER_BUDGET: &str = "over budget";

/// The operator's answers to questions, and the budget questions core
/// asks.
pub struct Budget {
    store: Store,
    dashboard: Arc<DashboardBus>,
    /// The limit the question names.
    configs: Arc<Configs>,
    /// Pause or stop, as the operator answers.
    lifecycle: Arc<Lifecycle>,
}

impl Budget {
    pub fn new(
        store: Store,
        dashboard: Arc<DashboardBus>,
        configs: Arc<Configs>,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        Self {
            store,
            dashboard,
            configs,
            lifecycle,
        }
    }

    /// Asks the operator about `agent` over its budget (once while a
    /// question is open).
    pub fn ask(&self, agent: &AgentName) {
        let question = format!(
            "{agent} reached the spend limit of its agent.toml and starts no turn (its messages \
             wait). Raise the limit (the manager proposes the change for your approval), pause \
             it, or stop it?"
        );
        // "raise by <the limit again>": doubling is the one-click choice;
        // the manager proposes whatever the answer says.
        let raise = match self.configs.deployed(agent) {
            Ok(d) if !d.config.budget.is_unlimited() => {
                format!("raise by {}", d.config.budget.describe())
            }
            _ => "raise".to_owned(),
        };
        match self
            .store
            .ask_about_budget(agent.as_str(), &question, &raise)
        {
            Ok(Some(q)) => self.dashboard.question_added(&q),
            Ok(None) => {}
            Err(e) => tracing::error!(%agent, "budget question not asked: {e}"),
        }
    }

    /// The operator answers question `id` (from the dashboard or
    /// host.sock): resolved, published, and acted on when it is a budget
    /// question.
    pub async fn operator_answer(&self, id: i64, answer: &str) -> Result<()> {
        let q = self
            .store
            .answer_question(id, hive_proto::OPERATOR_RECIPIENT, answer)?;
        self.dashboard.question_resolved(&q);
        self.answered(&q).await
    }

    /// Acts on the operator's answer to a budget question (any other
    /// question is left alone).
    pub async fn answered(&self, q: &Question) -> Result<()> {
        if q.cancelled {
            return Ok(());
        }
        let Some(agent) = self.store.budget_question_agent(q.id)? else {
            return Ok(());
        };
        let agent = AgentName::parse(&agent).map_err(hive_store::Error::from)?;
        let answer = q.answer.clone().unwrap_or_default();
        match answer.trim() {
            "pause" => self.lifecycle.set_paused(&agent, true),
            "stop" => self.lifecycle.stop(&agent).await,
            raise if raise.starts_with("raise") => {
                notify_manager(
                    &self.store,
                    &HelperEvent::BudgetRaiseRequested {
                        agent: agent.to_string(),
                        answer: raise.to_owned(),
                    },
                );
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
