//! The swarm backend's service spec: a [`ContainerSpec`] as one replicated
//! service with restart condition `none`, its own internal network, the
//! placement constraints and the pin to the agent's node.

use std::collections::HashMap;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountType,
    NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecPrivileges,
    TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use crate::docker::TMPFS;
use crate::process::{Inside, base_env};
use crate::{ContainerSpec, TlsLink, Transport, mount};

/// How a service on the link reaches core: the relay's address on its
/// network and its credential's secrets.
pub(super) struct OnLink {
    pub addr: String,
    pub secrets: Vec<TaskSpecContainerSpecSecrets>,
}

/// What a service is made of besides its [`ContainerSpec`].
pub(super) struct Parts {
    /// The service's (and its network's) name.
    pub name: String,
    pub image: String,
    /// The image is the skeleton: the node's system dirs are bound in.
    pub skeleton: bool,
    pub labels: HashMap<String, String>,
    /// `/state` and `/shared` (`SwarmRuntime::volume_mounts`).
    pub volumes: [Mount; 2],
    /// The agent's own `/etc` files (`SwarmRuntime::etc_configs`).
    pub configs: Vec<TaskSpecContainerSpecConfigs>,
    /// Core's node: the service is pinned there when it binds core's
    /// files (the manager, or the unix transport).
    pub core_node: String,
    /// On the link: the relay's address and the credential's secrets.
    pub link: Option<OnLink>,
}

/// The service of `spec` with no replica yet. No path of core's host is
/// bound but the `hive` and engine binaries, the node's system dirs (for
/// the skeleton) and the approved binds: `/state` and `/shared` are
/// volumes of the node, the curated `/etc` is the image's plus configs;
/// on the link the credential is secrets and the link dir a private
/// tmpfs. What binds core's files (the manager's repos, the unix
/// transport's sockets) is pinned to core's node.
pub(super) fn spec(spec: &ContainerSpec, parts: Parts) -> ServiceSpec {
    let Parts {
        name,
        image,
        skeleton,
        labels,
        volumes,
        configs,
        core_node,
        link,
    } = parts;
    let name = name.as_str();
    let mut mounts = crate::docker::mounts(spec, skeleton);
    // Volumes of the node and the image's `/etc`, not core's dirs.
    mounts.retain(|m| {
        let target = m.target.as_deref();
        target != Some(mount::STATE) && target != Some(mount::SHARED) && target != Some("/etc")
    });
    mounts.extend(volumes);
    mounts.extend(TMPFS.iter().map(|(target, _)| tmpfs(target)));
    let on_core_node = spec.name.is_manager() || matches!(spec.transport, Transport::Unix);
    let (env, secrets) = match (&spec.transport, link) {
        (Transport::Tls(tls), Some(on)) => {
            let dialled = ContainerSpec {
                transport: Transport::Tls(TlsLink {
                    addr: on.addr,
                    ..tls.clone()
                }),
                ..spec.clone()
            };
            let inside = Inside {
                credentials: super::link::SECRETS_DIR,
                ..Inside::SANDBOX_LINK
            };
            mounts.retain(|m| {
                let target = m.target.as_deref();
                target != Some(mount::CREDENTIAL) && target != Some(mount::LINK)
            });
            mounts.push(tmpfs(mount::LINK));
            (base_env(&dialled, "swarm", inside), Some(on.secrets))
        }
        _ => (base_env(spec, "swarm", Inside::SANDBOX), None),
    };
    let env = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    let container = TaskSpecContainerSpec {
        image: Some(image),
        labels: Some(labels.clone()),
        command: Some(vec![mount::HIVE_BIN.to_owned()]),
        args: Some(spec.args.clone()),
        hostname: Some(spec.container_name()),
        env: Some(env),
        dir: Some(mount::STATE.to_owned()),
        // The agent's unprivileged user; without one, the daemon's own.
        user: Some(match spec.user {
            Some(user) => format!("{}:{}", user.uid, user.gid),
            None => format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid()),
        }),
        read_only: Some(true),
        // No capability, as on docker: a setuid binary of the bound
        // `/usr` gains none. `no_new_privs` only where the Engine's API
        // takes it ([`no_new_privileges`]).
        capability_drop: Some(vec!["ALL".to_owned()]),
        mounts: Some(mounts),
        secrets,
        configs: Some(configs),
        init: Some(true),
        // Each task keeps the grace it was made with: core's.
        stop_grace_period: i64::try_from(crate::STOP_GRACE.as_nanos()).ok(),
        ..Default::default()
    };
    let limits = Limit {
        nano_cpus: spec.limits.cpu_millis.map(|m| i64::from(m) * 1_000_000),
        memory_bytes: spec
            .limits
            .memory_bytes
            .map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        pids: None,
    };
    let task = TaskSpec {
        container_spec: Some(container),
        resources: Some(TaskSpecResources {
            limits: Some(limits),
            ..Default::default()
        }),
        // Core, not Swarm, decides restarts.
        restart_policy: Some(TaskSpecRestartPolicy {
            condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
            ..Default::default()
        }),
        placement: Some(TaskSpecPlacement {
            constraints: Some(constraints(
                spec,
                on_core_node.then_some(core_node.as_str()),
            )),
            ..Default::default()
        }),
        // Its own internal network: an interface with no route, no peer.
        networks: Some(vec![NetworkAttachmentConfig {
            target: Some(name.to_owned()),
            ..Default::default()
        }]),
        log_driver: Some(TaskSpecLogDriver {
            name: Some("json-file".to_owned()),
            options: Some(HashMap::from([
                ("max-size".to_owned(), "10m".to_owned()),
                ("max-file".to_owned(), "3".to_owned()),
            ])),
        }),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(labels),
        task_template: Some(task),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        }),
        // No virtual IP: nothing reaches an agent over its network.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The approved constraints, and the pin: to core's node (`core_node`)
/// for a service that binds core's files, else to the agent's node once
/// it has one.
fn constraints(spec: &ContainerSpec, core_node: Option<&str>) -> Vec<String> {
    let mut all = spec.placement.constraints.clone();
    let pin = core_node.or(spec.placement.node.as_deref());
    if let Some(node) = pin {
        all.push(format!("node.id=={node}"));
    }
    all
}

/// The Engine API version from which a service's task may be given
/// `no_new_privs` (`Privileges.NoNewPrivileges`: Engine 25, API 1.44).
/// Below it the Engine drops the field from the spec it is sent.
pub(super) const NO_NEW_PRIVILEGES_API: (usize, usize) = (1, 44);

/// Sets `no_new_privs` on the spec's task, as docker's
/// `no-new-privileges`: a setuid binary it runs keeps the caller's uid.
/// For an Engine whose API takes it ([`NO_NEW_PRIVILEGES_API`]).
pub(super) fn no_new_privileges(spec: &mut ServiceSpec) {
    let container = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut());
    if let Some(container) = container {
        container
            .privileges
            .get_or_insert_with(TaskSpecContainerSpecPrivileges::default)
            .no_new_privileges = Some(true);
    }
}

/// The Engine API version from which a tmpfs mount takes options
/// (`TmpfsOptions.Options`: Engine 27, API 1.46). Below it the Engine
/// mounts a swarm task's tmpfs `noexec,nosuid,nodev` whatever is asked.
pub(super) const TMPFS_OPTIONS_API: (usize, usize) = (1, 46);

/// Gives the spec's tmpfs mounts docker's flags (the docker backend's
/// `TMPFS` list: `/tmp` and `/var/tmp` `exec`), for an Engine whose API
/// takes them ([`TMPFS_OPTIONS_API`]).
pub(super) fn tmpfs_as_docker(spec: &mut ServiceSpec) {
    let mounts = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        .and_then(|c| c.mounts.as_mut());
    for mount in mounts.into_iter().flatten() {
        let Some((_, flags)) = TMPFS
            .iter()
            .find(|(target, _)| mount.target.as_deref() == Some(*target))
        else {
            continue;
        };
        if mount.typ != Some(MountType::TMPFS) {
            continue;
        }
        if let Some(tmpfs) = mount.tmpfs_options.as_mut() {
            tmpfs.options = Some(tmpfs_options(flags));
        }
    }
}

/// docker's `--tmpfs` flags as the Mount API's options: a flag a
/// one-item array, `key=value` a pair; `rw` (the default) and `mode`
/// (its own field) left out.
fn tmpfs_options(flags: &str) -> Vec<Vec<String>> {
    flags
        .split(',')
        .filter(|f| *f != "rw" && !f.starts_with("mode="))
        .map(|f| match f.split_once('=') {
            Some((key, value)) => vec![key.to_owned(), value.to_owned()],
            None => vec![f.to_owned()],
        })
        .collect()
}

/// A tmpfs at `target` (the docker backend's `TMPFS` list; the flags are
/// the Engine's defaults, `noexec` among them, unless
/// [`tmpfs_as_docker`] gives them).
fn tmpfs(target: &str) -> Mount {
    let mode = if target == "/run" { 0o755 } else { 0o1777 };
    Mount {
        target: Some(target.to_owned()),
        typ: Some(MountType::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            mode: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sets the replica count of a replicated service.
pub(super) fn set_replicas(spec: &mut ServiceSpec, replicas: i64) {
    spec.mode = Some(ServiceSpecMode {
        replicated: Some(ServiceSpecModeReplicated {
            replicas: Some(replicas),
        }),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use hive_proto::AgentName;

    use super::*;

    fn volumes() -> [Mount; 2] {
        [mount::STATE, mount::SHARED].map(|target| Mount {
            target: Some(target.to_owned()),
            source: Some(format!("vol{target}")),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        })
    }

    fn parts(link: Option<OnLink>) -> Parts {
        Parts {
            name: "h-coder-x".into(),
            image: "img".into(),
            skeleton: true,
            labels: HashMap::new(),
            volumes: volumes(),
            configs: Vec::new(),
            core_node: "core0".into(),
            link,
        }
    }

    fn service(placement: crate::Placement) -> ServiceSpec {
        let spec = ContainerSpec {
            placement,
            ..crate::test_spec()
        };
        super::spec(&spec, parts(None))
    }

    #[test]
    fn core_decides_restarts_and_the_agent_has_its_own_closed_network() {
        let spec = service(crate::Placement::default());
        let task = spec.task_template.unwrap();
        assert_eq!(
            task.restart_policy.unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        let networks = task.networks.unwrap();
        assert_eq!(networks.len(), 1);
        assert_eq!(networks[0].target.as_deref(), Some("h-coder-x"));
        let container = task.container_spec.unwrap();
        assert_eq!(container.user.as_deref(), Some("108100:100000"));
        assert_eq!(container.read_only, Some(true));
        let mounts = container.mounts.unwrap();
        let state = mounts
            .iter()
            .find(|m| m.target.as_deref() == Some("/state"))
            .unwrap();
        assert_eq!(state.source.as_deref(), Some("vol/state"));
        assert_eq!(state.typ, Some(MountType::VOLUME));
        assert!(
            !mounts
                .iter()
                .any(|m| m.source.as_deref().is_some_and(|s| s == "/s" || s == "/sh")),
            "no bind of core's state or shared dir: {mounts:?}"
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.target.as_deref() == Some("/tmp") && m.typ == Some(MountType::TMPFS))
        );
        assert_eq!(
            spec.mode.unwrap().replicated.unwrap().replicas,
            Some(0),
            "created stopped"
        );
    }

    #[test]
    fn on_the_link_no_host_path_of_the_link_is_bound_and_core_is_dialled_at_the_relay() {
        let spec = ContainerSpec {
            transport: Transport::Tls(TlsLink {
                addr: "172.18.0.1:7701".into(),
                credentials: "/c/credential".into(),
                link_dir: "/r/link".into(),
                network: Some("hive-link".into()),
            }),
            ..crate::test_spec()
        };
        let on = OnLink {
            addr: "10.0.1.2:7701".into(),
            secrets: vec![TaskSpecContainerSpecSecrets::default(); 3],
        };
        let service = super::spec(&spec, parts(Some(on)));
        let container = service.task_template.unwrap().container_spec.unwrap();
        let mounts = container.mounts.unwrap();
        assert!(
            !mounts.iter().any(|m| m
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("/c/credential") || s.starts_with("/r/link"))),
            "{mounts:?}"
        );
        let link = mounts
            .iter()
            .find(|m| m.target.as_deref() == Some(mount::LINK))
            .unwrap();
        assert_eq!(link.typ, Some(MountType::TMPFS));
        assert_eq!(container.secrets.unwrap().len(), 3);
        let env = container.env.unwrap();
        assert!(
            env.contains(&"HIVE_LINK_ADDR=10.0.1.2:7701".to_owned()),
            "{env:?}"
        );
        assert!(
            env.contains(&"HIVE_LINK_CREDENTIALS=/run/secrets".to_owned()),
            "{env:?}"
        );
        assert!(
            env.contains(&"HIVE_SOCKET=/run/hive/link/mcp.sock".to_owned()),
            "{env:?}"
        );
    }

    fn on_link(spec: ContainerSpec) -> ContainerSpec {
        ContainerSpec {
            transport: Transport::Tls(TlsLink {
                addr: "172.18.0.1:7701".into(),
                credentials: "/c/credential".into(),
                link_dir: "/r/link".into(),
                network: Some("hive-link".into()),
            }),
            ..spec
        }
    }

    fn constraints_of(spec: &ContainerSpec) -> Vec<String> {
        let on = OnLink {
            addr: "10.0.1.2:7701".into(),
            secrets: Vec::new(),
        };
        let link = matches!(spec.transport, Transport::Tls(_)).then_some(on);
        super::spec(spec, parts(link))
            .task_template
            .unwrap()
            .placement
            .unwrap()
            .constraints
            .unwrap()
    }

    #[test]
    fn the_task_has_no_capability_and_no_new_privs_where_the_api_allows() {
        let mut spec = service(crate::Placement::default());
        let container =
            |spec: &ServiceSpec| spec.task_template.clone().unwrap().container_spec.unwrap();
        let before = container(&spec);
        assert_eq!(before.capability_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(before.capability_add, None);
        assert_eq!(before.privileges, None, "nothing an old Engine drops");
        no_new_privileges(&mut spec);
        let after = container(&spec);
        assert_eq!(
            after.privileges.and_then(|p| p.no_new_privileges),
            Some(true)
        );
        assert_eq!(after.capability_drop, Some(vec!["ALL".to_owned()]));
    }

    #[test]
    fn tmpfs_mounts_take_dockers_flags_where_the_api_allows() {
        assert_eq!(
            tmpfs_options("rw,exec,nosuid,nodev,mode=1777"),
            [vec!["exec"], vec!["nosuid"], vec!["nodev"]]
        );
        let mut spec = service(crate::Placement::default());
        tmpfs_as_docker(&mut spec);
        let mounts = spec.task_template.unwrap().container_spec.unwrap().mounts;
        let options = |target: &str| {
            mounts
                .iter()
                .flatten()
                .find(|m| m.target.as_deref() == Some(target))
                .and_then(|m| m.tmpfs_options.clone()?.options)
        };
        let exec = |o: Option<Vec<Vec<String>>>| o.unwrap().contains(&vec!["exec".to_owned()]);
        assert!(exec(options("/tmp")) && exec(options("/var/tmp")));
        assert!(!exec(options("/run")));
        assert_eq!(options("/state"), None);
    }

    #[test]
    fn the_pin_is_added_to_the_approved_constraints() {
        let placement = crate::Placement {
            constraints: vec!["node.labels.gpu==true".into()],
            node: Some("n1".into()),
            generation: 0,
        };
        let agent = on_link(ContainerSpec {
            placement: placement.clone(),
            ..crate::test_spec()
        });
        assert_eq!(
            constraints_of(&agent),
            ["node.labels.gpu==true", "node.id==n1"]
        );
        // What binds core's files runs on core's node, whatever its pin.
        let unix = ContainerSpec {
            placement: placement.clone(),
            ..crate::test_spec()
        };
        assert_eq!(
            constraints_of(&unix),
            ["node.labels.gpu==true", "node.id==core0"]
        );
        let manager = on_link(ContainerSpec {
            name: AgentName::manager(),
            placement,
            ..crate::test_spec()
        });
        assert_eq!(
            constraints_of(&manager),
            ["node.labels.gpu==true", "node.id==core0"]
        );
    }

    #[test]
    fn on_the_link_only_binaries_system_dirs_and_approved_binds_come_from_a_host() {
        let spec = on_link(ContainerSpec {
            engine_bin: Some("/opt/claude".into()),
            binds: vec![crate::Bind {
                host: "/data/approved".into(),
                container: "/data".into(),
                read_only: true,
            }],
            ..crate::test_spec()
        });
        let configs = vec![TaskSpecContainerSpecConfigs::default(); 2];
        let on = OnLink {
            addr: "10.0.1.2:7701".into(),
            secrets: Vec::new(),
        };
        let service = super::spec(
            &spec,
            Parts {
                configs,
                ..parts(Some(on))
            },
        );
        let container = service.task_template.unwrap().container_spec.unwrap();
        let system = crate::docker::system_mounts(None);
        for m in container.mounts.unwrap() {
            if m.typ != Some(MountType::BIND) {
                continue;
            }
            let source = m.source.unwrap_or_default();
            assert!(
                ["/bin/hive", "/opt/claude", "/data/approved"].contains(&source.as_str())
                    || system.iter().any(|s| s.source.as_deref() == Some(&source)),
                "{source} of core's host is bound at {:?}",
                m.target
            );
        }
        assert_eq!(container.configs.unwrap().len(), 2, "passwd and group");
    }
}
