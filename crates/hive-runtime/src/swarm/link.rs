//! The swarm backend on the link (`Transport::Tls`): the agent's credential
//! as Swarm secrets, and the hive's link relay.
//!
//! **The credential** (CA, certificate, key) goes to the swarm as three
//! secrets of the agent's labels, named `h-<hive>-<nanos>-<file>`, and is
//! referenced by that agent's service alone, mounted under
//! [`SECRETS_DIR`] (the key `0400` to the agent's uid). A create makes a
//! new set from the credential core just issued and removes the agent's
//! older ones; destroy removes them all. The swarm carries them to
//! whatever node runs the task: no host path is involved.
//!
//! **The relay.** Core is a host process, on no overlay network, and an
//! agent's own overlay network is `--internal`. The relay
//! `h-link-relay-<hive>` is one plain container of the hive on core's
//! node, running `hive link-relay`: it accepts TCP and pipes every
//! connection to core's link address and nowhere else (TLS stays end to
//! end; it sees ciphertext). It sits on the link network (`hive serve
//! --link-network`, a bridge whose gateway core's listener binds) and is
//! connected to each agent's overlay network at create and disconnected
//! at destroy; an agent dials the relay's address on its own network. The
//! relay does not route: two agents' networks still share no peer but it,
//! and it answers one port with one destination. It opens each piped
//! connection with a header naming the agent end, which core believes from
//! the relay's address on the link network ([`SwarmRuntime::relay_addr`])
//! alone.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest,
    NetworkDisconnectRequest, RestartPolicy, RestartPolicyNameEnum, SecretSpec,
    TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListSecretsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use hive_proto::AgentName;
use hive_proto::link::{CA_FILE, CERT_FILE, KEY_FILE};

use super::SwarmRuntime;
use crate::Runtime as _;
use crate::docker::{HIVE_LABEL, bind, engine, status};
use crate::{ContainerSpec, Error, Result, TlsLink, mount};

/// Where a swarm task finds its credential's files.
pub(super) const SECRETS_DIR: &str = "/run/secrets";

/// The label that marks the relay (with [`HIVE_LABEL`]).
const ROLE_LABEL: &str = "hyperhive.role";
const RELAY_ROLE: &str = "link-relay";

/// The relay's unprivileged user.
const RELAY_USER: &str = "65534:65534";

impl SwarmRuntime {
    /// The relay container's name.
    pub(super) fn relay_name(&self) -> String {
        format!("h-link-relay-{}", self.hive)
    }

    /// Whether a container's `labels` are this hive's relay's.
    fn is_relay(&self, labels: Option<HashMap<String, String>>) -> bool {
        labels.is_some_and(|l| {
            l.get(HIVE_LABEL).map(String::as_str) == Some(self.hive.as_str())
                && l.get(ROLE_LABEL).map(String::as_str) == Some(RELAY_ROLE)
        })
    }

    /// Puts `spec`'s current credential into new secrets; the references
    /// its service mounts.
    pub(super) async fn credential_secrets(
        &self,
        spec: &ContainerSpec,
        link: &TlsLink,
    ) -> Result<Vec<TaskSpecContainerSpecSecrets>> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let (uid, gid) = match spec.user {
            Some(user) => (user.uid, user.gid),
            None => (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            ),
        };
        let mut refs = Vec::new();
        for file in [CA_FILE, CERT_FILE, KEY_FILE] {
            let data = read(&link.credentials.join(file)).await?;
            let stem = file.trim_end_matches(".pem");
            let name = format!("h-{}-{stamp:x}-{stem}", self.hive);
            let secret = SecretSpec {
                name: Some(name.clone()),
                labels: Some(self.labels(&spec.name)),
                data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
                ..Default::default()
            };
            let created = self
                .docker
                .create_secret(secret)
                .await
                .map_err(engine(format!("create secret {name}")))?;
            refs.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(file.to_owned()),
                    uid: Some(uid.to_string()),
                    gid: Some(gid.to_string()),
                    mode: Some(if file == KEY_FILE { 0o400 } else { 0o444 }),
                }),
                secret_id: Some(created.id),
                secret_name: Some(name),
            });
        }
        Ok(refs)
    }

    /// Removes `agent`'s secrets but those in `keep`.
    pub(super) async fn remove_secrets(&self, agent: &AgentName, keep: &[String]) {
        let ours = format!("{HIVE_LABEL}={}", self.hive);
        let filters = HashMap::from([("label", vec![ours.as_str()])]);
        let options = ListSecretsOptionsBuilder::default()
            .filters(&filters)
            .build();
        let secrets = match self.docker.list_secrets(Some(options)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(agent = %agent, "list secrets: {e}");
                return;
            }
        };
        for secret in secrets {
            let labels = secret.spec.as_ref().and_then(|s| s.labels.as_ref());
            let Some(id) = secret.id.as_deref() else {
                continue;
            };
            if !self.is_ours(labels, agent) || keep.iter().any(|k| k == id) {
                continue;
            }
            match self.docker.delete_secret(id).await {
                Ok(()) => {}
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => tracing::warn!(agent = %agent, "remove secret {id}: {e}"),
            }
        }
    }

    /// Connects the relay (made and started if need be) to `spec`'s own
    /// network; the address the agent dials: the relay's there, on the
    /// link's port.
    pub(super) async fn relay_for(&self, spec: &ContainerSpec, link: &TlsLink) -> Result<String> {
        let port = link
            .addr
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| p.parse::<u16>().is_ok())
            .ok_or_else(|| Error::Failed(format!("the link address {} has no port", link.addr)))?;
        let _relay = self.relay.lock().await;
        self.ensure_relay(spec, link, port).await?;
        let network = self.service_name(&spec.name);
        let relay = self.relay_name();
        if self.relay_ip(&network).await?.is_none() {
            let request = NetworkConnectRequest {
                container: relay.clone(),
                endpoint_config: Some(EndpointSettings::default()),
            };
            self.docker
                .connect_network(&network, request)
                .await
                .map_err(engine(format!("connect {relay} to {network}")))?;
        }
        let ip = self
            .relay_ip(&network)
            .await?
            .ok_or_else(|| Error::Failed(format!("{relay} has no address on {network}")))?;
        Ok(format!("{ip}:{port}"))
    }

    /// The relay's address on `network`, if it is connected there.
    async fn relay_ip(&self, network: &str) -> Result<Option<String>> {
        let relay = self.relay_name();
        let inspect = self
            .docker
            .inspect_container(&relay, None)
            .await
            .map_err(engine(format!("inspect {relay}")))?;
        let ip = inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty());
        Ok(ip)
    }

    /// The relay's address on the link network (where it dials core
    /// from), if there is a relay of ours.
    pub(super) async fn relay_addr(&self) -> Result<Option<std::net::IpAddr>> {
        let relay = self.relay_name();
        let found = match self.docker.inspect_container(&relay, None).await {
            Ok(found) => found,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(engine(format!("inspect {relay}"))(e)),
        };
        if !self.is_relay(found.config.and_then(|c| c.labels)) {
            return Ok(None);
        }
        let network = found.host_config.and_then(|h| h.network_mode);
        let ip = network
            .and_then(|network| found.network_settings?.networks?.remove(&network))
            .and_then(|endpoint| endpoint.ip_address)
            .and_then(|ip| ip.parse().ok());
        Ok(ip)
    }

    /// The relay, running: made on the link network if there is none of
    /// ours; one of its name that is not ours is [`Error::Foreign`].
    async fn ensure_relay(&self, spec: &ContainerSpec, link: &TlsLink, port: &str) -> Result<()> {
        let relay = self.relay_name();
        match self.docker.inspect_container(&relay, None).await {
            Ok(found) => {
                if !self.is_relay(found.config.and_then(|c| c.labels)) {
                    return Err(Error::Foreign { container: relay });
                }
                if found.state.and_then(|s| s.running) != Some(true) {
                    self.docker
                        .start_container(&relay, None)
                        .await
                        .map_err(engine(format!("start {relay}")))?;
                }
                return Ok(());
            }
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(engine(format!("inspect {relay}"))(e)),
        }
        let network = link.network.clone().ok_or_else(|| {
            Error::Failed(
                "the tls transport on swarm needs the docker network that reaches core's link \
                 listener (`hive serve --link-network`), for the hive's link relay"
                    .to_owned(),
            )
        })?;
        let image = spec.image.clone().unwrap_or_else(|| self.image.clone());
        let skeleton = crate::docker::image::ensure(
            &self.docker,
            &self.build,
            &image,
            crate::docker::image::Flavour::Swarm,
        )
        .await?;
        let mut mounts = Vec::new();
        if skeleton {
            mounts.extend(crate::docker::system_mounts(None));
            // The loader's cache alone of the host's /etc.
            mounts.push(bind(
                Path::new("/etc/ld.so.cache"),
                "/etc/ld.so.cache",
                true,
            ));
        }
        mounts.push(bind(&spec.program, mount::HIVE_BIN, true));
        let config = ContainerCreateBody {
            image: Some(image),
            entrypoint: Some(vec![mount::HIVE_BIN.to_owned()]),
            cmd: Some(vec![
                "link-relay".to_owned(),
                "--listen".to_owned(),
                format!("0.0.0.0:{port}"),
                "--to".to_owned(),
                link.addr.clone(),
            ]),
            user: Some(RELAY_USER.to_owned()),
            labels: Some(HashMap::from([
                (HIVE_LABEL.to_owned(), self.hive.to_string()),
                (ROLE_LABEL.to_owned(), RELAY_ROLE.to_owned()),
            ])),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                network_mode: Some(network),
                readonly_rootfs: Some(true),
                init: Some(true),
                // It needs none: it binds the link's port (from Engine
                // 20.10 any port binds without one) and pipes bytes.
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&relay)
            .build();
        self.docker
            .create_container(Some(options), config)
            .await
            .map_err(engine(format!("create {relay}")))?;
        self.docker
            .start_container(&relay, None)
            .await
            .map_err(engine(format!("start {relay}")))
    }

    /// Disconnects the relay from `agent`'s network; removes the relay
    /// when no service of the hive is left.
    pub(super) async fn release_relay(&self, agent: &AgentName) {
        let _relay = self.relay.lock().await;
        let relay = self.relay_name();
        let network = self.service_name(agent);
        if let Ok(Some(_)) = self.relay_ip(&network).await {
            let request = NetworkDisconnectRequest {
                container: relay.clone(),
                force: Some(true),
            };
            if let Err(e) = self.docker.disconnect_network(&network, request).await {
                tracing::warn!(agent = %agent, "disconnect {relay} from {network}: {e}");
            }
        }
        match self.list().await {
            Ok(left) if left.is_empty() => {}
            _ => return,
        }
        let ours = match self.docker.inspect_container(&relay, None).await {
            Ok(found) => self.is_relay(found.config.and_then(|c| c.labels)),
            Err(_) => false,
        };
        if ours {
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            if let Err(e) = self.docker.remove_container(&relay, Some(options)).await {
                tracing::warn!("remove {relay}: {e}");
            }
        }
    }
}

async fn read(path: &Path) -> Result<Vec<u8>> {
    tokio::fs::read(path)
        .await
        .map_err(|e| Error::Failed(format!("read the credential {}: {e}", path.display())))
}
