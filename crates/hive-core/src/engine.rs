//! What every agent's container gets from the operator besides its config:
//! the engine binary and the agent environment.
//!
//! The engine (the `claude` CLI) is found once, at daemon start:
//! `--claude-bin` (or `HIVE_CLAUDE_BIN`), else `claude` on the daemon's
//! `PATH`. Each container gets that one file bound read-only at
//! [`hive_runtime::mount::CLAUDE_BIN`]; none found, the harness reports
//! `engine_missing` and core puts [`missing_text`] on the agent's status
//! row.
//!
//! The codex CLI is found the same way (`--codex-bin`, `HIVE_CODEX_BIN`,
//! `codex` on `PATH`) and bound read-only at [`CODEX_BIN`] (named in
//! `HIVE_CODEX_BIN`) for agents whose `engine` is `codex`.
//!
//! The agent environment is `<state-dir>/agent.env`, then `--agent-env`
//! (later wins), read again at every container (re)create, so an edit
//! reaches an agent at its next restart. One exception: the model
//! endpoints (`ANTHROPIC_BASE_URL`, `OPENAI_BASE_URL`) are the egress
//! proxy's allowed loopback targets, fixed when the daemon starts; a change
//! of one in `agent.env` is ignored (with a warning) until the daemon
//! restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::Paths;
use crate::error::{Error, Result};
use crate::settings::Settings;

/// The variables naming the model endpoints.
const MODEL_URLS: [&str; 2] = ["ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"];
/// Where a sandbox finds the codex CLI (read-only), next to the `hive`
/// and `claude` binaries.
pub const CODEX_BIN: &str = "/run/hive/bin/codex";
/// The variable telling the harness where the codex CLI is.
pub const CODEX_BIN_ENV: &str = "HIVE_CODEX_BIN";

/// How a status row that says the engine is missing begins; core clears
/// such a text once the harness reports any other state.
pub const MISSING_PREFIX: &str = "engine missing: ";

/// The engine binary: `given` (`--claude-bin`), which must exist, else
/// `claude` on `PATH`, else none (with a warning saying how to provide
/// one). Symlinks are resolved: the container gets the file itself.
pub fn locate(given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    locate_named(given, "claude")
}

/// The codex CLI: `given` (`--codex-bin`), else `codex` on `PATH`, else
/// none, as [`locate`].
pub fn locate_codex(given: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    locate_named(given, "codex")
}

fn locate_named(given: Option<&Path>, name: &str) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    let found = match given {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("--{name}-bin {}", path.display()))?;
            if !path.is_file() {
                anyhow::bail!("--{name}-bin {}: not a file", path.display());
            }
            path
        }
        None => {
            let on_path = std::env::var_os("PATH").and_then(|dirs| {
                std::env::split_paths(&dirs)
                    .map(|dir| dir.join(name))
                    .find(|p| is_executable(p))
            });
            let Some(path) = on_path else {
                tracing::warn!(
                    "no {name} CLI: none on PATH and no --{name}-bin; agents of that engine \
                     will report it missing (install one with scripts/install-{name}, then \
                     start the daemon with --{name}-bin <path>)"
                );
                return Ok(None);
            };
            std::fs::canonicalize(&path).with_context(|| format!("resolve {}", path.display()))?
        }
    };
    tracing::info!(engine = %found.display(), "the {name} CLI every container gets");
    Ok(Some(found))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Warns when an agent's uid could not run `engine`: it must be readable
/// and executable by others (the CLI reads its own file), and every parent
/// searchable (bwrap binds it as that uid).
pub fn warn_unusable(engine: &Path) {
    match std::fs::metadata(engine) {
        Ok(meta) if meta.permissions().mode() & 0o005 != 0o005 => tracing::warn!(
            "{} is not readable and executable by others: agents running as their own uid \
             cannot run it (chmod o+rx)",
            engine.display()
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("the engine {}: {e}", engine.display()),
    }
}

/// The status text of an agent of `engine` whose harness found no engine.
pub fn missing_text(settings: &Settings, engine: hive_config::Engine) -> String {
    let (name, bin, at) = match engine {
        hive_config::Engine::Claude => (
            "claude",
            &settings.engine_bin,
            hive_runtime::mount::CLAUDE_BIN,
        ),
        hive_config::Engine::Codex => ("codex", &settings.codex_bin, CODEX_BIN),
    };
    match bin {
        None => format!(
            "{MISSING_PREFIX}the daemon found no {name} CLI; start it with --{name}-bin <path> \
             (or put {name} on its PATH; scripts/install-{name} fetches one), then restart the agent"
        ),
        Some(bin) => format!(
            "{MISSING_PREFIX}{} (bound at {at}) cannot be run by the agent's user; \
             check its permissions (o+rx) and restart the agent",
            bin.display(),
        ),
    }
}

/// The last value of `key` in `env`.
fn last<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The agent environment as of now: `<state-dir>/agent.env` read again,
/// then `--agent-env`; the model endpoint stays the daemon's.
pub fn agent_env(paths: &crate::Paths, settings: &Settings) -> Result<Vec<(String, String)>> {
    let mut env = read_agent_env(paths, &settings.agent_env_args)
        .map_err(|e| Error::refused(format!("{e:#}")))?;
    for var in MODEL_URLS {
        let started = last(&settings.agent_env, var).map(str::to_owned);
        if last(&env, var) != started.as_deref() {
            tracing::warn!(
                "{var} changed in agent.env: ignored until the daemon restarts (the model \
                 endpoint, the one the egress proxy allows, is fixed at daemon start)"
            );
            env.retain(|(k, _)| k != var);
            env.extend(started.map(|url| (var.to_owned(), url)));
        }
    }
    Ok(env)
}

/// Reads `KEY=VALUE` lines (blank lines and `#` comments skipped).
pub fn parse_env_file(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        vars.push(parse_env_pair(line).with_context(|| format!("line {}", n + 1))?);
    }
    Ok(vars)
}

/// Parses one `KEY=VALUE`; keys are shell-style identifiers.
pub fn parse_env_pair(pair: &str) -> anyhow::Result<(String, String)> {
    let Some((key, value)) = pair.split_once('=') else {
        bail!("{pair:?} is not KEY=VALUE");
    };
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        bail!("{key:?} is not a valid environment variable name");
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// The agent environment: the state dir's `agent.env`, then the command
/// line's pairs (later wins). Read at start and at every container create.
pub(crate) fn read_agent_env(
    paths: &Paths,
    cli: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let file = paths.state_dir.join("agent.env");
    let mut vars = match std::fs::read_to_string(&file) {
        Ok(text) => parse_env_file(&text).with_context(|| format!("{}", file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", file.display())),
    };
    vars.extend(cli.iter().cloned());
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL_URL: &str = MODEL_URLS[0];

    fn settings(agent_env: &[(&str, &str)], args: &[(&str, &str)]) -> Settings {
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Settings {
            hive_bin: "/usr/bin/hive".into(),
            engine_bin: None,
            codex_bin: None,
            agent_env: pairs(agent_env),
            agent_env_args: pairs(args),
            ports: crate::settings::PortRange::default(),
            mirror: None,
            operator_token: "test-token-0123456789abcdef".into(),
            link: None,
        }
    }

    #[test]
    fn the_file_is_read_again_but_the_model_endpoint_holds() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::Paths::new(dir.path().join("state"), dir.path().join("run"));
        std::fs::create_dir_all(&paths.state_dir).unwrap();
        let file = paths.state_dir.join("agent.env");
        let settings = settings(
            &[
                (MODEL_URL, "http://127.0.0.1:9"),
                ("A", "1"),
                ("OPENAI_BASE_URL", "http://127.0.0.1:11/v1"),
            ],
            &[("B", "cli")],
        );
        std::fs::write(
            &file,
            "ANTHROPIC_BASE_URL=http://127.0.0.1:9\nA=2\nB=file\n",
        )
        .unwrap();
        let env = agent_env(&paths, &settings).unwrap();
        assert_eq!(last(&env, "A"), Some("2"), "an edit is seen");
        assert_eq!(last(&env, "B"), Some("cli"), "the command line wins");
        std::fs::write(
            &file,
            "ANTHROPIC_BASE_URL=http://127.0.0.1:10\nOPENAI_BASE_URL=http://127.0.0.1:12\n",
        )
        .unwrap();
        let env = agent_env(&paths, &settings).unwrap();
        assert_eq!(last(&env, MODEL_URL), Some("http://127.0.0.1:9"));
        assert_eq!(
            last(&env, "OPENAI_BASE_URL"),
            Some("http://127.0.0.1:11/v1")
        );
        assert_eq!(last(&env, "A"), None);
        std::fs::write(&file, "not a pair\n").unwrap();
        let refused = agent_env(&paths, &settings).unwrap_err().to_string();
        assert!(
            refused.contains("agent.env") && refused.contains("line 1"),
            "{refused}"
        );
    }

    #[test]
    fn locate_resolves_the_flag_and_refuses_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("claude");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        assert_eq!(
            locate(Some(&link)).unwrap(),
            Some(std::fs::canonicalize(&bin).unwrap())
        );
        assert!(locate(Some(&dir.path().join("none"))).is_err());
    }

    #[test]
    fn env_files() {
        let vars = parse_env_file("# comment\n\nA=1\nB_2=x=y\n").unwrap();
        assert_eq!(
            vars,
            [("A".into(), "1".into()), ("B_2".into(), "x=y".into())]
        );
        assert_eq!(
            format!("{:#}", parse_env_file("ok=1\n1BAD=2").unwrap_err()),
            "line 2: \"1BAD\" is not a valid environment variable name"
        );
        assert!(parse_env_pair("NOEQUALS").is_err());
    }
}
