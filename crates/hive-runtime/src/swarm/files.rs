//! The agent's own files of the curated `/etc` on swarm, as Swarm configs.
//!
//! A task may run on a node without core's files, so nothing of the
//! curated `/etc` is bound from core's host: the part every agent shares
//! is in the swarm skeleton image ([`crate::docker::image::Flavour`]), and
//! the agent's own `passwd` and `group` ([`crate::etc::agent_files`]: its
//! uid and gid) are two Swarm configs of the agent's labels, named
//! `h-<hive>-<nanos>-<file>`, mounted at `/etc/<file>` of that service
//! alone, root's and read-only (0444). `hosts` and `hostname` are the
//! engine's, as on docker. A create makes a new set and removes the
//! agent's older ones (a config a service uses cannot change); destroy
//! removes them all. Why configs rather than the link's control channel:
//! `/etc` must exist before the first program runs and must never be the
//! agent's to write (the host `/usr` it runs on has setuid programs that
//! read it), and the swarm delivers configs root-owned to whichever node
//! runs the task.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bollard::models::{ConfigSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile1};
use bollard::query_parameters::ListConfigsOptionsBuilder;
use hive_proto::AgentName;

use super::SwarmRuntime;
use crate::docker::{HIVE_LABEL, engine, status};
use crate::{ContainerSpec, Result};

/// The curated `/etc` files that are the agent's own and are configs.
const OWN_FILES: &[&str] = &["passwd", "group"];

impl SwarmRuntime {
    /// Puts `spec`'s own `/etc` files into new configs; the references its
    /// service mounts.
    pub(super) async fn etc_configs(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Vec<TaskSpecContainerSpecConfigs>> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut refs = Vec::new();
        for (file, text) in crate::etc::agent_files(spec) {
            if !OWN_FILES.contains(&file) {
                continue;
            }
            let name = format!("h-{}-{stamp:x}-{file}", self.hive);
            let config = ConfigSpec {
                name: Some(name.clone()),
                labels: Some(self.labels(&spec.name)),
                data: Some(base64::engine::general_purpose::STANDARD.encode(text)),
                ..Default::default()
            };
            let created = self
                .docker
                .create_config(config)
                .await
                .map_err(engine(format!("create config {name}")))?;
            refs.push(TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(format!("/etc/{file}")),
                    uid: Some("0".to_owned()),
                    gid: Some("0".to_owned()),
                    mode: Some(0o444),
                }),
                config_id: Some(created.id),
                config_name: Some(name),
                runtime: None,
            });
        }
        Ok(refs)
    }

    /// Removes `agent`'s configs but those in `keep`.
    pub(super) async fn remove_configs(&self, agent: &AgentName, keep: &[String]) {
        let ours = format!("{HIVE_LABEL}={}", self.hive);
        let filters = HashMap::from([("label", vec![ours.as_str()])]);
        let options = ListConfigsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let configs = match self.docker.list_configs(Some(options)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(agent = %agent, "list configs: {e}");
                return;
            }
        };
        for config in configs {
            let labels = config.spec.as_ref().and_then(|s| s.labels.as_ref());
            let Some(id) = config.id.as_deref() else {
                continue;
            };
            if !self.is_ours(labels, agent) || keep.iter().any(|k| k == id) {
                continue;
            }
            match self.docker.delete_config(id).await {
                Ok(()) => {}
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => tracing::warn!(agent = %agent, "remove config {id}: {e}"),
            }
        }
    }
}
