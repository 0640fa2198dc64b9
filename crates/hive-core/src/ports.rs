//! Each agent's web port, and the unprivileged uid that follows from it.
//!
//! A port is allocated on first use and kept in the agent's record; the
//! uid an agent runs as is derived from its port
//! ([`crate::sandbox_files::agent_user`]), so both lifecycle (building a
//! container) and the config component (handing the manager its proposed
//! repos) ask here.

use hive_proto::AgentName;
use hive_runtime::AgentUser;
use hive_store::Store;

use crate::error::{Error, Result};
use crate::sandbox_files::agent_user;
use crate::settings::PortRange;

/// Web ports and agent uids.
#[derive(Clone)]
pub struct AgentPorts {
    store: Store,
    range: PortRange,
    /// Whether agents run as their own unprivileged uid: on every backend
    /// but `process` (which isolates nothing), when the daemon is root (a
    /// daemon that is not runs them as itself).
    unprivileged: bool,
}

impl AgentPorts {
    /// `backend` is the runtime's name, if the hive has one.
    pub fn new(store: Store, range: PortRange, backend: Option<&str>) -> Self {
        let unprivileged =
            backend.is_some_and(|b| b != "process") && crate::paths::running_as_root();
        Self {
            store,
            range,
            unprivileged,
        }
    }

    /// Whether agents run as their own uid (see the field).
    pub fn runs_unprivileged(&self) -> bool {
        self.unprivileged
    }

    /// The uid `name` runs as, if not the daemon's own.
    pub fn agent_user_of(&self, name: &AgentName) -> Result<Option<AgentUser>> {
        if !self.unprivileged {
            return Ok(None);
        }
        Ok(Some(agent_user(self.web_port(name)?)))
    }

    /// The agent's web port, allocating a free one on first use: the
    /// manager's fixed port, else the lowest free port of the range.
    pub fn web_port(&self, name: &AgentName) -> Result<u16> {
        let agents = self.store.agents()?;
        if let Some(port) = agents
            .iter()
            .find(|a| a.name == name.as_str())
            .and_then(|a| a.port)
        {
            return Ok(port);
        }
        let ports = self.range;
        let port = if name.is_manager() {
            ports.manager
        } else {
            let taken: std::collections::HashSet<u16> =
                agents.iter().filter_map(|a| a.port).collect();
            (ports.first..=ports.last)
                .find(|p| !taken.contains(p) && *p != ports.manager)
                .ok_or_else(|| {
                    Error::refused(format!(
                        "no free web port left in {}-{}: purge an unused agent or widen the range",
                        ports.first, ports.last
                    ))
                })?
        };
        self.store.set_port(name.as_str(), Some(port))?;
        Ok(port)
    }
}
