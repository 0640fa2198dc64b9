//! The `process` backend: plain child processes, no isolation.
//!
//! For development and tests. The program sees host paths, passed through
//! the same [`crate::env`] variables every backend sets; binds are not
//! applied (there is no mount namespace to apply them in).

use crate::child::{CommandLine, Launcher};
use crate::{ContainerSpec, Result, env};

#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessLauncher;

/// Variables passed through from the daemon's environment to every
/// container program: enough for it to find its tools and locale.
pub const PASSTHROUGH_ENV: &[&str] =
    &["PATH", "LANG", "LC_ALL", "TZ", "RUST_BACKTRACE", "HIVE_LOG"];

/// The environment every backend gives a container's program: the pass-
/// through variables, the hive's, and the spec's own (last wins).
pub fn base_env(
    spec: &ContainerSpec,
    runtime: &str,
    socket: &str,
    state: &str,
    shared: &str,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = PASSTHROUGH_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    vars.extend([
        (env::AGENT.to_owned(), spec.name.to_string()),
        (env::SOCKET.to_owned(), socket.to_owned()),
        (env::STATE_DIR.to_owned(), state.to_owned()),
        (env::SHARED_DIR.to_owned(), shared.to_owned()),
        (env::WEB_PORT.to_owned(), spec.web_port.to_string()),
        (env::RUNTIME.to_owned(), runtime.to_owned()),
        ("HOME".to_owned(), state.to_owned()),
    ]);
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
        Ok(CommandLine {
            program: spec.program.clone(),
            args: spec.args.iter().map(Into::into).collect(),
            env: base_env(
                spec,
                self.name(),
                &path(&spec.socket),
                &path(&spec.state_dir),
                &path(&spec.shared_dir),
            ),
            cwd: spec.state_dir.clone(),
        })
    }
}
