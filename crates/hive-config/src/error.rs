//! The crate's one error type; its `Display` strings are what the manager
//! and the operator read, so each says what went wrong and what to do.

use crate::check::ConfigError;

/// Everything that can go wrong with an agent's config repos.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `commit_ref` is not a 7–40 character hex sha.
    #[error("{0}")]
    BadCommitRef(String),
    /// The sha resolves to no commit in the proposed (nor the applied) repo.
    #[error(
        "commit {commit_ref} not found in the config repo of {agent}: commit it in \
         /agents/{agent}/config first, then pass its sha"
    )]
    CommitNotFound { agent: String, commit_ref: String },
    /// The sha prefix matches several objects.
    #[error("commit {commit_ref} is ambiguous in the config repo of {agent}: pass more hex digits")]
    AmbiguousCommit { agent: String, commit_ref: String },
    /// `agent.toml` (or the prompt file it names) fails the schema check.
    #[error("{}", invalid_config(.commit, .errors))]
    InvalidConfig {
        /// Short sha of the commit checked.
        commit: String,
        /// Every problem found, each with its line where it has one.
        errors: Vec<ConfigError>,
    },
    /// A repo that should exist does not.
    #[error("{agent} has no {which} config repo{hint}")]
    NoRepo {
        agent: String,
        which: &'static str,
        hint: &'static str,
    },
    /// The proposed repo exists but has no commit; core seeds only a repo
    /// it creates.
    #[error(
        "the proposed config repo of {agent} has no commit: commit agent.toml and the prompt \
         in /agents/{agent}/config, or remove that repo so core seeds the template"
    )]
    EmptyRepo { agent: String },
    /// A `<kind>/<id>` tag that should exist does not.
    #[error("no {tag} tag in the applied config repo of {agent}{known}")]
    NoTag {
        agent: String,
        tag: String,
        /// Empty, or `"; deployed ids: 0, 3"`-style help.
        known: String,
    },
    /// A tag already exists on another commit, or the lifecycle forbids it.
    #[error("{0}")]
    TagConflict(String),
    /// Pushing to the mirror failed (best-effort: core logs and goes on).
    #[error("mirror push of {agent} to {url} failed: {message}")]
    Mirror {
        agent: String,
        /// The remote URL with any user-info removed.
        url: String,
        message: String,
    },
    /// A libgit2 operation failed.
    #[error("{context}: {message}")]
    Git { context: String, message: String },
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The manager-facing text of [`Error::InvalidConfig`]: a heading, then one
/// `agent.toml:<line>: <problem>` line per error.
fn invalid_config(commit: &str, errors: &[ConfigError]) -> String {
    let n = errors.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut out = format!("agent.toml in commit {commit} is invalid ({n} error{plural}):");
    for e in errors {
        out.push('\n');
        out.push_str(&e.to_string());
    }
    out
}

/// Adds a lowercase context to a libgit2 error.
pub(crate) trait GitContext<T> {
    fn git(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> GitContext<T> for std::result::Result<T, git2::Error> {
    fn git(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Git {
            context: context(),
            message: e.message().to_owned(),
        })
    }
}

/// Adds a lowercase context to an I/O error.
pub(crate) trait IoContext<T> {
    fn io(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn io(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
