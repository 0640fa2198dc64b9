//! The `process` backend: plain child processes, no isolation.
//!
//! For development and tests. The program sees host paths, passed through
//! the same [`crate::env`] variables every backend sets; binds are not
//! applied (there is no mount namespace to apply them in).

use crate::child::{CommandLine, Launcher};
use crate::{ContainerSpec, Result, Transport, env};

#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessLauncher;

/// Variables passed through from the daemon's environment to every
/// container program: enough for it to find its tools and locale.
pub const PASSTHROUGH_ENV: &[&str] =
    &["PATH", "LANG", "LC_ALL", "TZ", "RUST_BACKTRACE", "HIVE_LOG"];

/// Where the program finds its world: the in-sandbox mount points, or the
/// host paths under the `process` backend.
#[derive(Debug, Clone, Copy)]
pub struct Inside<'a> {
    pub socket: &'a str,
    pub state: &'a str,
    pub shared: &'a str,
    pub egress: &'a str,
    pub page_socket: &'a str,
    pub control: &'a str,
    /// Where the spec's engine binary is, if it has one.
    pub engine_bin: &'a str,
    /// Under [`Transport::Tls`]: the credential dir.
    pub credentials: &'a str,
}

impl Inside<'static> {
    /// What every sandboxing backend mounts.
    pub const SANDBOX: Self = Self {
        socket: crate::mount::SOCKET,
        state: crate::mount::STATE,
        shared: crate::mount::SHARED,
        egress: crate::mount::EGRESS,
        page_socket: crate::mount::PAGE_SOCKET,
        control: crate::mount::CONTROL,
        engine_bin: crate::mount::CLAUDE_BIN,
        credentials: crate::mount::CREDENTIAL,
    };

    /// What every sandboxing backend mounts under [`Transport::Tls`]: the
    /// link makes the usual sockets and control files in
    /// [`crate::mount::LINK`].
    pub const SANDBOX_LINK: Self = Self {
        socket: "/run/hive/link/mcp.sock",
        egress: "/run/hive/link/egress.sock",
        page_socket: "/run/hive/link/page.sock",
        control: "/run/hive/link/control",
        ..Self::SANDBOX
    };

    /// [`Self::SANDBOX`] or [`Self::SANDBOX_LINK`], by the spec's transport.
    pub fn sandbox(spec: &ContainerSpec) -> Self {
        match spec.transport {
            Transport::Unix => Self::SANDBOX,
            Transport::Tls(_) => Self::SANDBOX_LINK,
        }
    }
}

/// The environment every backend gives a container's program: the pass-
/// through variables, the hive's, and the spec's own (last wins).
pub fn base_env(spec: &ContainerSpec, runtime: &str, inside: Inside<'_>) -> Vec<(String, String)> {
    let Inside {
        socket,
        state,
        shared,
        egress,
        page_socket,
        control,
        engine_bin,
        credentials,
    } = inside;
    let mut vars: Vec<(String, String)> = PASSTHROUGH_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    vars.extend([
        (env::AGENT.to_owned(), spec.name.to_string()),
        (env::SOCKET.to_owned(), socket.to_owned()),
        (env::STATE_DIR.to_owned(), state.to_owned()),
        (env::SHARED_DIR.to_owned(), shared.to_owned()),
        (env::RUNTIME.to_owned(), runtime.to_owned()),
        (env::EGRESS_SOCKET.to_owned(), egress.to_owned()),
        (env::PAGE_SOCKET.to_owned(), page_socket.to_owned()),
        (env::CONTROL_DIR.to_owned(), control.to_owned()),
        ("HOME".to_owned(), state.to_owned()),
    ]);
    if let Transport::Tls(link) = &spec.transport {
        vars.extend([
            (hive_proto::link::env::ADDR.to_owned(), link.addr.clone()),
            (
                hive_proto::link::env::CREDENTIALS.to_owned(),
                credentials.to_owned(),
            ),
        ]);
    }
    // Before the spec's own: an operator's explicit HIVE_CLAUDE_BIN wins.
    if spec.engine_bin.is_some() {
        vars.push((env::CLAUDE_BIN.to_owned(), engine_bin.to_owned()));
    }
    vars.extend(spec.env.iter().cloned());
    vars
}

impl Launcher for ProcessLauncher {
    fn name(&self) -> &'static str {
        "process"
    }

    fn probe(&self) -> std::result::Result<(), String> {
        Ok(())
    }

    fn command(&self, spec: &ContainerSpec) -> Result<CommandLine> {
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let engine_bin = spec.engine_bin.as_deref().map(path).unwrap_or_default();
        let (state, shared) = (path(&spec.state_dir), path(&spec.shared_dir));
        // Core's sockets and dirs, or the ones the link makes in its dir.
        let (socket, egress, page_socket, control, credentials) = match &spec.transport {
            Transport::Unix => (
                path(&spec.socket),
                path(&spec.egress_socket),
                path(&spec.page_dir.join("page.sock")),
                path(&spec.control_dir),
                String::new(),
            ),
            Transport::Tls(link) => (
                path(&link.link_dir.join("mcp.sock")),
                path(&link.link_dir.join("egress.sock")),
                path(&link.link_dir.join("page.sock")),
                path(&link.link_dir.join("control")),
                path(&link.credentials),
            ),
        };
        Ok(CommandLine {
            program: spec.program.clone(),
            args: spec.args.iter().map(Into::into).collect(),
            env: base_env(
                spec,
                self.name(),
                Inside {
                    socket: &socket,
                    state: &state,
                    shared: &shared,
                    egress: &egress,
                    page_socket: &page_socket,
                    control: &control,
                    engine_bin: &engine_bin,
                    credentials: &credentials,
                },
            ),
            cwd: spec.state_dir.clone(),
            inherit: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TlsLink;

    fn linked() -> ContainerSpec {
        ContainerSpec {
            transport: Transport::Tls(TlsLink {
                addr: "10.0.0.1:7000".into(),
                credentials: "/s/agents/coder/control/credential".into(),
                link_dir: "/r/agents/coder/link".into(),
                network: None,
            }),
            ..crate::test_spec()
        }
    }

    fn var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn on_the_link_the_sockets_are_the_link_dirs_and_core_is_dialled() {
        let env = ProcessLauncher.command(&linked()).unwrap().env;
        assert_eq!(
            var(&env, env::SOCKET),
            Some("/r/agents/coder/link/mcp.sock")
        );
        assert_eq!(
            var(&env, env::EGRESS_SOCKET),
            Some("/r/agents/coder/link/egress.sock")
        );
        assert_eq!(
            var(&env, env::CONTROL_DIR),
            Some("/r/agents/coder/link/control")
        );
        assert_eq!(
            var(&env, hive_proto::link::env::ADDR),
            Some("10.0.0.1:7000")
        );
        assert_eq!(
            var(&env, hive_proto::link::env::CREDENTIALS),
            Some("/s/agents/coder/control/credential")
        );
        // A sandbox sees its own mounts; the unix transport no link at all.
        let spec = linked();
        let env = base_env(&spec, "docker", Inside::sandbox(&spec));
        assert_eq!(var(&env, env::SOCKET), Some("/run/hive/link/mcp.sock"));
        assert_eq!(
            var(&env, hive_proto::link::env::CREDENTIALS),
            Some(crate::mount::CREDENTIAL)
        );
        let spec = crate::test_spec();
        let env = base_env(&spec, "docker", Inside::sandbox(&spec));
        assert_eq!(var(&env, env::SOCKET), Some(crate::mount::SOCKET));
        assert_eq!(var(&env, hive_proto::link::env::ADDR), None);
    }

    #[test]
    fn sandboxes_without_a_network_refuse_the_link() {
        let err = linked().unix_only("bwrap").unwrap_err().to_string();
        assert!(err.contains("the tls transport needs a network"), "{err}");
        assert!(crate::test_spec().unix_only("bwrap").is_ok());
    }
}
