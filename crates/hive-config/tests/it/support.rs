//! Fixtures: a temp state dir with its repos, and commits made as the
//! manager would make them.

use std::path::{Path, PathBuf};

use git2::{Repository, Signature};
use hive_config::ConfigRepos;
use hive_proto::AgentName;
use tempfile::TempDir;

pub struct Hive {
    pub dir: TempDir,
    pub repos: ConfigRepos,
}

impl Hive {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repos = ConfigRepos::new(dir.path().join("state"));
        Self { dir, repos }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (`Some`) or deletes (`None`) files in the proposed work tree
    /// and commits them on the checked-out branch, as the manager does.
    pub fn commit(
        &self,
        name: &AgentName,
        files: &[(&str, Option<&str>)],
        message: &str,
    ) -> String {
        let repo = Repository::open(self.repos.proposed_path(name)).unwrap();
        let workdir = repo.workdir().unwrap().to_path_buf();
        let mut index = repo.index().unwrap();
        for (file, content) in files {
            let path = workdir.join(file);
            match content {
                Some(content) => {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, content).unwrap();
                    index.add_path(Path::new(file)).unwrap();
                }
                None => {
                    std::fs::remove_file(&path).unwrap();
                    index.remove_path(Path::new(file)).unwrap();
                }
            }
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("manager", "manager@hive").unwrap();
        let parents = match repo.head() {
            Ok(head) => vec![head.peel_to_commit().unwrap()],
            Err(_) => vec![],
        };
        let parents: Vec<_> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
            .to_string()
    }

    /// The commit a ref of the applied repo points at.
    pub fn applied_ref(&self, name: &AgentName, refname: &str) -> Option<String> {
        let repo = Repository::open_bare(self.repos.applied_path(name)).unwrap();
        let r = repo.find_reference(refname).ok()?;
        Some(r.peel_to_commit().unwrap().id().to_string())
    }

    /// Every ref of the applied repo with its target, sorted.
    pub fn applied_refs(&self, name: &AgentName) -> Vec<(String, String)> {
        refs_of(&self.repos.applied_path(name))
    }
}

pub fn refs_of(path: &Path) -> Vec<(String, String)> {
    let repo = Repository::open(path).unwrap();
    let mut refs: Vec<(String, String)> = repo
        .references()
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            let target = r.resolve().unwrap().target().unwrap();
            (r.name().unwrap().to_owned(), target.to_string())
        })
        .collect();
    refs.sort();
    refs
}

pub fn name(s: &str) -> AgentName {
    AgentName::parse(s).unwrap()
}

/// Every file named `config` under `dir` (repo configs of work trees and
/// bare repos alike).
pub fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if entry.file_name() == "config" {
                out.push(path);
            }
        }
    }
    out
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(path);
                }
            }
        }
    }
    out
}

/// A valid agent.toml with `model`.
pub fn agent_toml(model: &str) -> String {
    format!("model = \"{model}\"\nengine = \"claude\"\nprompt = \"prompt.md\"\n")
}

impl Hive {
    pub fn history(&self, name: &AgentName) -> Vec<hive_config::TagEntry> {
        self.repos.history(name).unwrap()
    }
}
