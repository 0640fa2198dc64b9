//! Does the engine have credentials? A cheap probe run before each turn:
//! an API key or token in the environment, or the CLI's credentials file
//! under its HOME (the agent's state dir). Absent → the `needs_login` turn
//! state, and no messages are popped until that changes.

use std::path::{Path, PathBuf};

/// Environment variables that authenticate the claude CLI (or hand auth to
/// a cloud provider's own credentials).
pub const CLAUDE_AUTH_ENV: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
];

/// Where the CLI keeps an interactive login, relative to its HOME.
pub fn claude_credentials_file(home: &Path) -> PathBuf {
    home.join(".claude").join(".credentials.json")
}

/// `Ok(where the credentials come from)` or `Err(what is missing)`.
pub fn probe_claude(home: &Path, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if let Some(var) = CLAUDE_AUTH_ENV
        .iter()
        .find(|var| env(var).is_some_and(|v| !v.trim().is_empty()))
    {
        return Ok(format!("${var}"));
    }
    let file = claude_credentials_file(home);
    match std::fs::metadata(&file) {
        Ok(meta) if meta.len() > 2 => Ok(file.display().to_string()),
        _ => Err(format!(
            "no credentials: set ANTHROPIC_API_KEY (or another of {}) in the agent's environment, \
             or log in so that {} exists",
            CLAUDE_AUTH_ENV.join(", "),
            file.display()
        )),
    }
}

/// Resolves `program` like a shell would (a bare name searches `PATH`).
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        assert!(probe_claude(dir.path(), none).is_err());
        let key = |v: &str| (v == "ANTHROPIC_API_KEY").then(|| "sk-test".to_owned());
        assert_eq!(probe_claude(dir.path(), key).unwrap(), "$ANTHROPIC_API_KEY");
        let empty = |_: &str| Some(" ".to_owned());
        assert!(probe_claude(dir.path(), empty).is_err());
        std::fs::create_dir(dir.path().join(".claude")).unwrap();
        std::fs::write(
            claude_credentials_file(dir.path()),
            r#"{"claudeAiOauth":{}}"#,
        )
        .unwrap();
        assert!(
            probe_claude(dir.path(), none)
                .unwrap()
                .ends_with(".credentials.json")
        );
    }

    #[test]
    fn programs_on_path() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/bin/sh")).is_some());
        assert!(find_program(Path::new("no-such-program-here")).is_none());
        assert!(find_program(Path::new("/no/such/program")).is_none());
    }
}
