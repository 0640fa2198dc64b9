//! The swarm backend's volumes: an agent's `/state` and the hive's
//! `/shared` as named volumes (local driver) on the node a task runs on.
//!
//! **`/state`** is `h-<agent>-<hive>-state-<generation>`, labelled with the
//! hive, the agent, [`KIND_LABEL`]`=state` and the generation. The node a
//! task lands on creates it (empty, from the skeleton's `/state`: mode
//! 1777) at the task's first start, and the agent is then pinned there
//! ([`crate::Placement::node`]). A fresh generation is a new, empty volume:
//! how core starts an agent elsewhere; the older one stays until purge.
//!
//! **`/shared`** is `h-<hive>-shared` on each node, labelled with the hive
//! and [`KIND_LABEL`]`=shared`: shared among the hive's agents **on the
//! same node** (the skeleton's `/shared`: `root:agents`, mode 3770).
//!
//! **Ours or nothing.** A volume of our name without our labels (another
//! hive's, or made by hand) is [`Error::Foreign`]: `create` refuses the
//! spec, and purge leaves it. The manager's API answers for this engine's
//! node only: on another node the name (which carries the hive id and the
//! generation) is what keeps hives apart, and purge reports the volume it
//! cannot reach rather than claiming it gone.

use std::collections::HashMap;

use bollard::models::{Mount, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig};
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptions};
use hive_proto::AgentName;

use super::{SwarmRuntime, WAIT_STEP};
use crate::docker::{AGENT_LABEL, HIVE_LABEL, engine, status};
use crate::{ContainerSpec, Error, Result, mount};

/// What a volume of ours holds: `state` or `shared`.
pub const KIND_LABEL: &str = "hyperhive.volume";
/// The generation of a state volume.
pub const GENERATION_LABEL: &str = "hyperhive.generation";

/// How long purge waits for the swarm to remove a deleted service's task
/// containers (which still hold the volume).
const IN_USE_TRIES: u32 = 300;

impl SwarmRuntime {
    /// The name of `agent`'s state volume of `generation`.
    pub fn state_volume(&self, agent: &AgentName, generation: u32) -> String {
        format!("h-{agent}-{}-state-{generation}", self.hive)
    }

    /// The name of the hive's shared volume (one per node).
    pub fn shared_volume(&self) -> String {
        format!("h-{}-shared", self.hive)
    }

    fn state_labels(&self, agent: &AgentName, generation: u32) -> HashMap<String, String> {
        let mut labels = self.labels(agent);
        labels.insert(KIND_LABEL.to_owned(), "state".to_owned());
        labels.insert(GENERATION_LABEL.to_owned(), generation.to_string());
        labels
    }

    fn shared_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (HIVE_LABEL.to_owned(), self.hive.to_string()),
            (KIND_LABEL.to_owned(), "shared".to_owned()),
        ])
    }

    /// The `/state` and `/shared` mounts of `spec`'s service: each volume
    /// made by the node with our labels if it has none of its name.
    pub(super) fn volume_mounts(&self, spec: &ContainerSpec) -> [Mount; 2] {
        let generation = spec.placement.generation;
        [
            volume(
                &self.state_volume(&spec.name, generation),
                mount::STATE,
                self.state_labels(&spec.name, generation),
            ),
            volume(&self.shared_volume(), mount::SHARED, self.shared_labels()),
        ]
    }

    /// Refuses `spec` if a volume it would mount exists on this engine's
    /// node without our labels: it is not used, and not touched.
    pub(super) async fn check_volumes(&self, spec: &ContainerSpec) -> Result<()> {
        let generation = spec.placement.generation;
        let wanted = [
            (
                self.state_volume(&spec.name, generation),
                self.state_labels(&spec.name, generation),
            ),
            (self.shared_volume(), self.shared_labels()),
        ];
        for (name, labels) in wanted {
            let found = match self.docker.inspect_volume(&name).await {
                Ok(found) => found,
                Err(e) if status(&e) == Some(404) => continue,
                Err(e) => return Err(engine(format!("inspect volume {name}"))(e)),
            };
            let ours = labels
                .iter()
                .all(|(k, v)| found.labels.get(k).is_some_and(|f| f == v));
            if !ours {
                return Err(Error::Foreign {
                    container: format!("volume {name}"),
                });
            }
        }
        Ok(())
    }

    /// Removes every state volume of `agent` (all generations) that is
    /// ours on this engine's node. One on another node (`elsewhere`: the
    /// node the agent is pinned to, if not this one) this engine cannot
    /// reach: it is named in a warning, never claimed gone.
    pub(super) async fn remove_state_volumes(
        &self,
        agent: &AgentName,
        elsewhere: Option<&str>,
    ) -> Result<()> {
        let hive = format!("{HIVE_LABEL}={}", self.hive);
        let of_agent = format!("{AGENT_LABEL}={agent}");
        let kind = format!("{KIND_LABEL}=state");
        let filters = HashMap::from([("label", vec![hive.as_str(), &of_agent, &kind])]);
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(engine("list volumes"))?;
        for found in listed.volumes.unwrap_or_default() {
            // The engine filtered by label; checked again, as every call
            // by name is.
            let ours = found.labels.get(HIVE_LABEL) == Some(&self.hive.to_string())
                && found.labels.get(AGENT_LABEL).map(String::as_str) == Some(agent.as_str())
                && found
                    .name
                    .starts_with(&format!("h-{agent}-{}-state-", self.hive));
            if ours {
                self.remove_volume(&found.name).await?;
            }
        }
        if let Some(node) = elsewhere {
            tracing::warn!(
                agent = %agent,
                "purged, but its state volume is on node {node}, which this engine cannot \
                 reach: remove the volumes h-{agent}-{}-state-* there by hand",
                self.hive
            );
        }
        Ok(())
    }

    /// Removes one volume, waiting while the swarm still removes the task
    /// containers of a deleted service that hold it.
    async fn remove_volume(&self, name: &str) -> Result<()> {
        let mut tries = 0;
        loop {
            match self
                .docker
                .remove_volume(name, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if status(&e) == Some(404) => return Ok(()),
                Err(e) if status(&e) == Some(409) && tries < IN_USE_TRIES => {
                    tries += 1;
                    tokio::time::sleep(WAIT_STEP).await;
                }
                Err(e) => return Err(engine(format!("remove volume {name}"))(e)),
            }
        }
    }
}

/// A named volume of the local driver at `target`, made with `labels` by
/// the node that first mounts it.
fn volume(name: &str, target: &str, labels: HashMap<String, String>) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(name.to_owned()),
        typ: Some(MountType::VOLUME),
        read_only: Some(false),
        volume_options: Some(MountVolumeOptions {
            // A new volume takes the skeleton's (empty) dir's owner and mode.
            no_copy: Some(false),
            labels: Some(labels),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".to_owned()),
                options: None,
            }),
            subpath: None,
        }),
        ..Default::default()
    }
}
