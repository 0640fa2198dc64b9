//! The daemon's components, put together once.
//!
//! Each concern is its own type holding exactly what it needs (atuin's
//! daemon `components/`): [`Status`] (status rows and their stream),
//! [`Tasks`] (the board), [`Configs`] (config repos and where a deployed
//! config takes effect), [`Lifecycle`] (containers; the one holder of the
//! runtime), [`Approvals`] (the approval queue and the actions it runs)
//! and [`Budget`] (the operator's answers, budget questions). A component
//! names the ones it depends on in its fields, so the arrows are in the
//! types: nothing depends on `Coordinator` but the surfaces (sockets,
//! dashboard, timers), which reach every component through one
//! `Arc<Coordinator>`.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use hive_proto::{AgentName, OPERATOR_RECIPIENT, Recipient};
use hive_store::Store;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::Paths;
use crate::actions::Approvals;
use crate::activity::Activity;
use crate::budget::Budget;
use crate::config::Configs;
use crate::deploys::DeployLanes;
use crate::egress::Egress;
use crate::error::{Error, Result};
use crate::events::DashboardBus;
use crate::lifecycle::{self, Lifecycle};
use crate::ports::AgentPorts;
use crate::settings::Settings;
use crate::status::Status;
use crate::tasks::Tasks;

/// Binds and serves an agent's socket with the whole of core behind it
/// (`agent_server::serve_agent_socket`, given by the daemon's assembly).
pub type ServeSocket = fn(&Arc<Coordinator>, AgentName) -> anyhow::Result<AbortHandle>;

pub struct Coordinator {
    pub store: Store,
    pub paths: Paths,
    pub dashboard: Arc<DashboardBus>,
    /// The dashboard's bound address, for building agent URLs.
    pub dashboard_addr: Option<SocketAddr>,
    pub settings: Settings,
    /// The egress proxies' model endpoint and each agent's policy.
    pub egress: Arc<Egress>,
    /// Each agent's turn state and last lifecycle action, for the dashboard.
    pub activity: Arc<Activity>,
    /// Per-agent deploy queues and the harness reports deploys wait for.
    pub deploys: Arc<DeployLanes>,
    pub status: Arc<Status>,
    pub tasks: Tasks,
    pub configs: Arc<Configs>,
    pub lifecycle: Arc<Lifecycle>,
    pub approvals: Approvals,
    pub budget: Budget,
    shutdown: watch::Sender<bool>,
}

impl Coordinator {
    /// Puts the components together. `serve_socket` binds an agent's
    /// socket when lifecycle spawns it; without one (a test of core's
    /// parts), a spawn is refused.
    pub fn new(
        store: Store,
        paths: Paths,
        dashboard_addr: Option<SocketAddr>,
        runtime: lifecycle::Backend,
        settings: Settings,
        serve_socket: Option<ServeSocket>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Self>| {
            let dashboard = Arc::new(DashboardBus::default());
            let activity = Arc::new(Activity::default());
            let deploys = Arc::new(DeployLanes::default());
            let egress = Arc::new(Egress::new(
                &settings.agent_env,
                dashboard_addr.into_iter().collect(),
                Some(hive_config::ConfigRepos::new(&paths.state_dir)),
            ));
            let status = Arc::new(Status::new(
                store.clone(),
                paths.clone(),
                dashboard.clone(),
                dashboard_addr,
                runtime.is_some(),
            ));
            let tasks = Tasks::new(store.clone(), dashboard.clone());
            let ports = AgentPorts::new(
                store.clone(),
                settings.ports,
                lifecycle::backend_name(&runtime),
            );
            let configs = Arc::new(Configs::new(
                store.clone(),
                paths.clone(),
                egress.clone(),
                dashboard.clone(),
                settings.mirror.clone(),
                settings.link.clone(),
                ports.clone(),
            ));
            let me = me.clone();
            let serve_socket: lifecycle::SocketServer = Box::new(move |name| {
                let Some(serve) = serve_socket else {
                    anyhow::bail!("this hive serves no agent sockets");
                };
                let Some(coord) = me.upgrade() else {
                    anyhow::bail!("the daemon is shutting down");
                };
                serve(&coord, name.clone())
            });
            let lifecycle = Arc::new(Lifecycle::new(lifecycle::Parts {
                store: store.clone(),
                paths: paths.clone(),
                settings: settings.clone(),
                dashboard_addr,
                runtime,
                dashboard: dashboard.clone(),
                egress: egress.clone(),
                activity: activity.clone(),
                deploys: deploys.clone(),
                status: status.clone(),
                tasks: tasks.clone(),
                configs: configs.clone(),
                ports,
                serve_socket,
            }));
            let approvals = Approvals::new(
                store.clone(),
                dashboard.clone(),
                configs.clone(),
                lifecycle.clone(),
                deploys.clone(),
                status.clone(),
            );
            let budget = Budget::new(
                store.clone(),
                dashboard.clone(),
                configs.clone(),
                lifecycle.clone(),
            );
            let (shutdown, _) = watch::channel(false);
            Self {
                store,
                paths,
                dashboard,
                dashboard_addr,
                settings,
                egress,
                activity,
                deploys,
                status,
                tasks,
                configs,
                lifecycle,
                approvals,
                budget,
                shutdown,
            }
        })
    }

    /// Asks every task to stop.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Coordinator::shut_down`] has been called.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which is shutdown too.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Sends a message from the operator.
    pub fn operator_send(&self, to: &Recipient, body: &str) -> Result<Vec<i64>> {
        if *to == Recipient::Operator {
            return Err(Error::refused("the operator cannot message itself"));
        }
        Ok(self.store.send(OPERATOR_RECIPIENT, to, body, None)?)
    }
}
