//! The role prompt appended to the engine's system prompt: a file the
//! operator or the manager provided, else the built-in one for the role.

use std::path::{Path, PathBuf};

use crate::{Role, files};

const AGENT: &str = include_str!("../prompts/agent.md");
const MANAGER: &str = include_str!("../prompts/manager.md");

/// Where role prompts may come from, in order of precedence.
pub fn candidates(state_dir: &Path, config_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut out = vec![state_dir.join(files::ROLE_PROMPT)];
    if let Some(config) = config_dir {
        out.push(config.join("prompt.md"));
    }
    out
}

/// The role prompt text with `{name}`, `{state}` and `{shared}` filled in.
pub fn role_prompt(
    role: Role,
    name: &str,
    state_dir: &Path,
    shared_dir: Option<&Path>,
    config_dir: Option<&Path>,
) -> String {
    let template = candidates(state_dir, config_dir)
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .filter(|t| !t.trim().is_empty())
        })
        .unwrap_or_else(|| {
            match role {
                Role::Agent => AGENT,
                Role::Manager => MANAGER,
            }
            .to_owned()
        });
    template
        .replace("{name}", name)
        .replace("{state}", &state_dir.display().to_string())
        .replace(
            "{shared}",
            &shared_dir.map_or_else(|| "/shared".to_owned(), |p| p.display().to_string()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_then_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        let text = role_prompt(Role::Agent, "coder", dir.path(), None, Some(&config));
        assert!(text.starts_with("# You are coder, an agent of a hyperhive"));
        assert!(text.contains(&dir.path().display().to_string()));
        assert!(role_prompt(Role::Manager, "manager", dir.path(), None, None).contains("manager"));

        std::fs::write(config.join("prompt.md"), "config says {name}").unwrap();
        assert_eq!(
            role_prompt(Role::Agent, "coder", dir.path(), None, Some(&config)),
            "config says coder"
        );
        std::fs::write(dir.path().join(files::ROLE_PROMPT), "state says hi").unwrap();
        assert_eq!(
            role_prompt(Role::Agent, "coder", dir.path(), None, Some(&config)),
            "state says hi"
        );
    }
}
