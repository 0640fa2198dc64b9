//! Agent config as git: the repos, the `agent.toml` schema, the apply
//! pipeline's git side, and the mirror.
//!
//! This crate owns each agent's two config repos under the state dir — the
//! *proposed* repo `proposed/<name>/config` (a work tree the manager commits
//! to and the agent reads) and the bare *applied* repo `applied/<name>`
//! (core only; `main` is what runs) — and everything done to them through
//! libgit2: seeding from a template, the runtime-neutral [`AgentConfig`]
//! and its [`check`] that reports every problem with its line, resolving a
//! manager's sha locally and copying its objects into applied
//! ([`ConfigRepos::prepare`]), the `proposal/` → `approved/` → `building/`
//! → `deployed/` | `failed/` | `denied/` tags that record each approval
//! ([`TagKind`]), rollback targets, history, and the best-effort mirror
//! push. It knows nothing of approvals' storage, containers or sockets:
//! core calls these synchronous functions (from a blocking task) at each
//! step of its approval flow.
//!
//! Architecture invariant: git is driven only through `git2`; no `git`
//! process is spawned and no git output is parsed. No credential is ever
//! written into a repo.

pub mod check;
pub mod commit_ref;
pub mod error;
pub mod git;
pub mod mirror;
pub mod repos;
pub mod schema;
pub mod snapshot;
pub mod tags;
pub mod template;

pub use check::{ConfigError, check_agent_toml, check_agent_toml_with};
pub use commit_ref::validate_commit_ref;
pub use error::{Error, Result};
pub use mirror::MirrorConfig;
pub use repos::{ConfigRepos, Deployed, Ensured, Prepared};
pub use schema::{
    AgentConfig, Engine, HostPattern, McpServer, Mount, Network, Placement, Resources,
};
pub use tags::{TagEntry, TagKind};
