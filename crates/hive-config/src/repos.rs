//! The two repos of each agent — proposed and applied — and the apply
//! pipeline's read side: seeding, resolving a sha, checking it, copying its
//! objects into applied, diffing it against what is deployed.
//!
//! Proposed (`<state>/proposed/<name>/config`) is a normal repo with a work
//! tree on branch `main`: the manager edits and commits there, the agent
//! reads it. Core writes into a proposed repo only when it creates it (seeded
//! beside it in `proposed/<name>/`, a dir only core writes, then renamed
//! into place); from a repo the manager has touched it reads config, refs
//! and objects, and libgit2 runs no hooks, filters or other programs. Applied (`<state>/applied/<name>`) is a **bare** repo only core
//! writes: `main` is what is deployed, tags record every proposal's fate.
//! Bare, because nothing ever needs its files on disk — core reads blobs
//! straight from the deployed commit — and a bare repo has no work tree to
//! drift from `main`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use git2::{DiffFormat, DiffOptions, ErrorCode, Oid, Repository, RepositoryInitOptions};
use hive_proto::AgentName;

use crate::check::{ConfigError, check_agent_toml_with};
use crate::commit_ref::validate_commit_ref;
use crate::error::{Error, GitContext, IoContext, Result};
use crate::git::{MAIN, core_signature, short};
use crate::schema::{AGENT_TOML, AgentConfig, DEFAULT_PROMPT_FILE};
use crate::tags::{
    TagEntry, TagKind, history_of, non_empty, parse_sha, proposal_commit, put_tag,
    refuse_if_tagged, tag_commit,
};
use crate::template;

/// Every agent's config repos under one state dir.
#[derive(Debug, Clone)]
pub struct ConfigRepos {
    state_dir: PathBuf,
    default_model: String,
}

/// What [`ConfigRepos::ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// The proposed repo was created (seeded from the template) now.
    pub proposed_created: bool,
    /// The applied repo was created now, deploying proposed `HEAD` as
    /// `deployed/0`.
    pub applied_created: bool,
    /// The deployed sha (applied `main`).
    pub sha: String,
}

/// A commit ready to be queued for approval.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The full 40-hex sha; store this as the approval's `commit_ref`.
    pub sha: String,
    /// Unified diff of the commit's tree against the deployed tree (empty
    /// when they are equal).
    pub diff: String,
    /// The commit's checked config.
    pub config: AgentConfig,
}

/// A commit's config and prompt: what runs ([`ConfigRepos::deployed`]) or
/// what a rebuild is about to apply ([`ConfigRepos::config_at`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    pub sha: String,
    pub config: AgentConfig,
    /// The role prompt file's text.
    pub prompt: String,
}

impl ConfigRepos {
    /// Repos under `state_dir` (`proposed/<name>/config`,
    /// `applied/<name>`).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        allow_foreign_owners();
        Self {
            state_dir: state_dir.into(),
            default_model: template::DEFAULT_MODEL.to_owned(),
        }
    }

    /// The model new agents' template `agent.toml` names.
    pub fn with_default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = model.into();
        self
    }

    /// The proposed repo (manager read-write, agent read-only).
    pub fn proposed_path(&self, name: &AgentName) -> PathBuf {
        self.state_dir
            .join("proposed")
            .join(name.as_str())
            .join("config")
    }

    /// [`Self::proposed_path`] below the state dir.
    fn proposed_rel(&self, name: &AgentName) -> PathBuf {
        Path::new("proposed").join(name.as_str()).join("config")
    }

    /// The applied repo (bare, core only).
    pub fn applied_path(&self, name: &AgentName) -> PathBuf {
        self.state_dir.join("applied").join(name.as_str())
    }

    /// Seeds the proposed repo from the template unless it exists. Returns
    /// whether it seeded. Never writes into a repo that exists: a repo
    /// without a commit is refused (the manager's to fix or remove).
    ///
    /// The new repo is built in `proposed/<name>/.config-seed` (a dir the
    /// manager cannot write; the caller checks `proposed/<name>` is no
    /// link) and renamed over the missing or empty `config`, so nothing
    /// planted there can redirect core's writes.
    pub fn init_proposed(&self, name: &AgentName) -> Result<bool> {
        let path = self.proposed_path(name);
        if !is_missing_or_empty(&path)? {
            let git_dir = std::fs::symlink_metadata(path.join(".git"));
            if !git_dir.is_ok_and(|meta| meta.is_dir()) {
                return Err(Error::Git {
                    context: format!("open {} (it exists but is not a git repo)", path.display()),
                    message: "there is no .git directory in it".to_owned(),
                });
            }
            // Read as `prepare` reads it: never opened in place.
            if crate::snapshot::head(&self.state_dir, &self.proposed_rel(name))?.is_some() {
                return Ok(false);
            }
            return Err(Error::EmptyRepo {
                agent: name.to_string(),
            });
        }
        let staging = path.with_file_name(".config-seed");
        match std::fs::remove_dir_all(&staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).io(|| format!("remove {}", staging.display())),
        }
        let repo = init_repo(&staging, false)?;
        self.seed(&repo, name)?;
        drop(repo);
        std::fs::rename(&staging, &path)
            .io(|| format!("move {} to {}", staging.display(), path.display()))?;
        tracing::info!(agent = %name, "seeded proposed config repo");
        Ok(true)
    }

    /// Makes sure both repos exist: seeds proposed if needed, and if
    /// applied has no `main` yet, checks proposed `HEAD`, copies it into
    /// applied as `main` and tags it `deployed/0`. Idempotent; keeps
    /// whatever the manager committed before (two-step spawn).
    pub fn ensure(&self, name: &AgentName) -> Result<Ensured> {
        let proposed_created = self.init_proposed(name)?;
        let applied_path = self.applied_path(name);
        if let Some(applied) = open_repo(&applied_path)?
            && let Some(sha) = main_commit(&applied)?
        {
            return Ok(Ensured {
                proposed_created,
                applied_created: false,
                sha: sha.to_string(),
            });
        }
        // A copy of the manager's objects, never its repo in place: what
        // it wrote there (alternates naming a host repo) must not steer
        // what core copies into applied.
        let no_commit = || Error::NoRepo {
            agent: name.to_string(),
            which: "committed proposed",
            hint: "",
        };
        let head = crate::snapshot::head(&self.state_dir, &self.proposed_rel(name))?
            .ok_or_else(no_commit)?;
        let snap = crate::snapshot::take(
            &self.state_dir,
            &self.proposed_rel(name),
            &self.state_dir.join("tmp"),
        )?
        .ok_or_else(no_commit)?;
        let proposed = &snap.repo;
        check_commit(proposed, head)?;
        let applied = match open_repo(&applied_path)? {
            Some(repo) => repo,
            None => init_repo(&applied_path, true)?,
        };
        copy_commit(proposed, &applied, head)?;
        applied
            .reference(MAIN, head, true, "deployed/0")
            .git(|| format!("set main of the applied config repo of {name}"))?;
        crate::tags::put_tag(&applied, name, TagKind::Deployed, 0, head, None)?;
        tracing::info!(agent = %name, sha = %head, "created applied config repo");
        Ok(Ensured {
            proposed_created,
            applied_created: true,
            sha: head.to_string(),
        })
    }

    /// Removes both repos (absent ones are fine).
    pub fn purge(&self, name: &AgentName) -> Result<()> {
        for path in [self.proposed_path(name), self.applied_path(name)] {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).io(|| format!("remove {}", path.display())),
            }
        }
        Ok(())
    }

    /// Step one of `request_apply_commit`: shape-checks `commit_ref`,
    /// resolves it in the proposed repo (else in applied, which serves
    /// rollbacks), checks its `agent.toml`, copies its objects into applied
    /// and diffs it against the deployed tree. Tags nothing.
    pub fn prepare(&self, name: &AgentName, commit_ref: &str) -> Result<Prepared> {
        validate_commit_ref(commit_ref)?;
        let applied = self.open_applied(name)?;
        // Never the manager's repo itself: a copy of its objects only
        // (`snapshot`), so nothing it wrote there steers libgit2.
        let proposed = crate::snapshot::take(
            &self.state_dir,
            &self.proposed_rel(name),
            &self.state_dir.join("tmp"),
        )?;
        let in_proposed = match &proposed {
            Some(snap) => resolve(&snap.repo, name, commit_ref)?.map(|oid| (&snap.repo, oid)),
            None => None,
        };
        let (oid, config) = match in_proposed {
            Some((proposed, oid)) => {
                // Checked before copying: a refused commit leaves applied as
                // it was.
                let config = check_commit(proposed, oid)?;
                copy_commit(proposed, &applied, oid)?;
                (oid, config)
            }
            None => {
                let oid =
                    resolve(&applied, name, commit_ref)?.ok_or_else(|| Error::CommitNotFound {
                        agent: name.to_string(),
                        commit_ref: commit_ref.to_owned(),
                    })?;
                (oid, check_commit(&applied, oid)?)
            }
        };
        let diff = diff_text(&applied, main_commit(&applied)?, oid)?;
        Ok(Prepared {
            sha: oid.to_string(),
            diff,
            config,
        })
    }

    /// What the agent runs with: applied `main`, its config and prompt.
    pub fn deployed(&self, name: &AgentName) -> Result<Deployed> {
        let applied = self.open_applied(name)?;
        let oid = main_commit(&applied)?.ok_or_else(|| Error::NoRepo {
            agent: name.to_string(),
            which: "deployed",
            hint: " (it is deployed when the agent is spawned)",
        })?;
        snapshot(&applied, oid)
    }

    /// The config and prompt of a commit already in applied (a prepared
    /// proposal): what a rebuild applies before [`Self::mark_deployed`]
    /// moves `main` to it.
    pub fn config_at(&self, name: &AgentName, sha: &str) -> Result<Deployed> {
        validate_commit_ref(sha)?;
        let applied = self.open_applied(name)?;
        let oid = resolve(&applied, name, sha)?.ok_or_else(|| Error::CommitNotFound {
            agent: name.to_string(),
            commit_ref: sha.to_owned(),
        })?;
        snapshot(&applied, oid)
    }

    /// The deployed sha alone (cheap; for status rows). `None` before the
    /// first deploy.
    pub fn deployed_sha(&self, name: &AgentName) -> Result<Option<String>> {
        match open_repo(&self.applied_path(name))? {
            Some(applied) => Ok(main_commit(&applied)?.map(|o| o.to_string())),
            None => Ok(None),
        }
    }

    pub(crate) fn open_applied(&self, name: &AgentName) -> Result<Repository> {
        open_repo(&self.applied_path(name))?.ok_or_else(|| Error::NoRepo {
            agent: name.to_string(),
            which: "applied",
            hint: " (it is created when the agent is spawned)",
        })
    }

    /// The template commit: writes `agent.toml` and `prompt.md` where the
    /// work tree has nothing yet, and commits both on `main`.
    fn seed(&self, repo: &Repository, name: &AgentName) -> Result<Oid> {
        let workdir = repo
            .workdir()
            .ok_or_else(|| Error::Git {
                context: format!("seed the proposed config repo of {name}"),
                message: "the repo has no work tree".to_owned(),
            })?
            .to_path_buf();
        let files = [
            (AGENT_TOML, template::agent_toml(name, &self.default_model)),
            (DEFAULT_PROMPT_FILE, template::prompt(name)),
        ];
        let mut index = repo.index().git(|| format!("open the index of {name}"))?;
        for (file, content) in files {
            let path = workdir.join(file);
            // Nothing there at all (not even a dangling symlink): write.
            if std::fs::symlink_metadata(&path).is_err() {
                std::fs::write(&path, content).io(|| format!("write {}", path.display()))?;
            }
            index
                .add_path(Path::new(file))
                .git(|| format!("stage {file} in the proposed config repo of {name}"))?;
        }
        index.write().git(|| format!("write the index of {name}"))?;
        let tree_id = index
            .write_tree()
            .git(|| format!("write the tree of {name}"))?;
        let tree = repo
            .find_tree(tree_id)
            .git(|| format!("read the tree of {name}"))?;
        let sig = core_signature()?;
        repo.commit(
            Some("HEAD"),
            &sig,
            &sig,
            &format!("initial config of {name}\n"),
            &tree,
            &[],
        )
        .git(|| format!("commit the initial config of {name}"))
    }
}

/// The tags of an applied repo ([`crate::tags`]): what was proposed,
/// approved, deployed, denied or failed.
impl ConfigRepos {
    /// Tags `sha` (already in applied — see [`ConfigRepos::prepare`]) as
    /// `<kind>/<id>`. Meant for `proposal`, `approved` and `building`;
    /// annotated kinds get their kind as message (use [`Self::mark_failed`]
    /// and [`Self::mark_denied`] to say why). Idempotent on the same commit.
    pub fn tag(&self, name: &AgentName, kind: TagKind, id: i64, sha: &str) -> Result<()> {
        let applied = self.open_applied(name)?;
        let oid = parse_sha(name, sha)?;
        let message = kind.is_annotated().then_some(kind.as_str());
        put_tag(&applied, name, kind, id, oid, message)
    }

    /// Tags the commit of `proposal/<id>` as `deployed/<id>` and moves
    /// applied `main` to it. Returns the deployed sha. Refused once the
    /// proposal is `failed/` or `denied/`.
    pub fn mark_deployed(&self, name: &AgentName, id: i64) -> Result<String> {
        let applied = self.open_applied(name)?;
        let oid = proposal_commit(&applied, name, id)?;
        refuse_if_tagged(
            &applied,
            name,
            id,
            &[TagKind::Failed, TagKind::Denied],
            "deployed",
        )?;
        put_tag(&applied, name, TagKind::Deployed, id, oid, None)?;
        // A fast-forward in the usual case; a rollback (or a rewritten
        // proposed history) moves main elsewhere, and every earlier commit
        // stays reachable through its tags.
        applied
            .reference(MAIN, oid, true, &TagKind::Deployed.tag_name(id))
            .git(|| format!("move main of the applied config repo of {name}"))?;
        tracing::info!(agent = %name, id, sha = %oid, "deployed config");
        Ok(oid.to_string())
    }

    /// Tags the commit of `proposal/<id>` as `failed/<id>`, annotated with
    /// `error`. `main` does not move. Refused once it is `deployed/`.
    pub fn mark_failed(&self, name: &AgentName, id: i64, error: &str) -> Result<()> {
        let applied = self.open_applied(name)?;
        let oid = proposal_commit(&applied, name, id)?;
        refuse_if_tagged(&applied, name, id, &[TagKind::Deployed], "failed")?;
        let message = non_empty(error, "failed");
        put_tag(&applied, name, TagKind::Failed, id, oid, Some(message))
    }

    /// Tags the commit of `proposal/<id>` as `denied/<id>`, annotated with
    /// the operator's `note` (or `denied`). Refused once it is `approved/`.
    pub fn mark_denied(&self, name: &AgentName, id: i64, note: Option<&str>) -> Result<()> {
        let applied = self.open_applied(name)?;
        let oid = proposal_commit(&applied, name, id)?;
        refuse_if_tagged(
            &applied,
            name,
            id,
            &[TagKind::Approved, TagKind::Deployed],
            "denied",
        )?;
        let message = non_empty(note.unwrap_or(""), "denied");
        put_tag(&applied, name, TagKind::Denied, id, oid, Some(message))
    }

    /// The commit `deployed/<id>` marks, to queue a redeploy of (pass it to
    /// [`ConfigRepos::prepare`]).
    pub fn rollback_target(&self, name: &AgentName, id: i64) -> Result<String> {
        let applied = self.open_applied(name)?;
        match tag_commit(&applied, TagKind::Deployed, id)? {
            Some(oid) => Ok(oid.to_string()),
            None => {
                let ids: Vec<String> = history_of(&applied)?
                    .into_iter()
                    .filter(|t| t.kind == TagKind::Deployed)
                    .map(|t| t.id.to_string())
                    .collect();
                let known = if ids.is_empty() {
                    String::new()
                } else {
                    format!("; deployed ids: {}", ids.join(", "))
                };
                Err(Error::NoTag {
                    agent: name.to_string(),
                    tag: TagKind::Deployed.tag_name(id),
                    known,
                })
            }
        }
    }

    /// Every `<kind>/<id>` tag of the applied repo, by id then lifecycle
    /// order. Other tags are left out.
    pub fn history(&self, name: &AgentName) -> Result<Vec<TagEntry>> {
        history_of(&self.open_applied(name)?)
    }
}

/// Lets libgit2 open repos another uid owns: the manager's proposed repos,
/// once it runs as its own uid. libgit2's owner check guards a user from
/// running a stranger's hooks or config-named programs; core runs none
/// (libgit2 runs no hooks, filter drivers, fsmonitor or ssh commands) and
/// from a manager's repo reads only its config, refs and objects. Reading
/// the config can at worst make an open fail or pick pack settings.
fn allow_foreign_owners() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sets one process-wide libgit2 option; the `Once` makes
        // this the only write, before this process opens a repo through
        // any `ConfigRepos`.
        #[allow(unsafe_code)]
        let set = unsafe { git2::opts::set_verify_owner_validation(false) };
        if let Err(e) = set {
            tracing::warn!("libgit2 owner validation left on: {}", e.message());
        }
    });
}

/// Commit `oid`'s checked config and its prompt text.
fn snapshot(repo: &Repository, oid: Oid) -> Result<Deployed> {
    let config = check_commit(repo, oid)?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .git(|| format!("read commit {oid}"))?;
    let prompt = match read_file(repo, &tree, &config.prompt)? {
        FileAt::File(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    Ok(Deployed {
        sha: oid.to_string(),
        config,
        prompt,
    })
}

/// Opens the repo at `path`; `None` when there is nothing there or only an
/// empty directory (what core's dir setup leaves), an error when something
/// else is in the way.
pub(crate) fn open_repo(path: &Path) -> Result<Option<Repository>> {
    match std::fs::read_dir(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).io(|| format!("read {}", path.display())),
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(None);
            }
        }
    }
    Repository::open(path)
        .map(Some)
        .git(|| format!("open {} (it exists but is not a git repo)", path.display()))
}

/// Whether nothing, or only an empty directory, is at `path` (what core's
/// dir setup leaves before a repo is seeded).
fn is_missing_or_empty(path: &Path) -> Result<bool> {
    match std::fs::read_dir(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).io(|| format!("read {}", path.display())),
        Ok(mut entries) => Ok(entries.next().is_none()),
    }
}

/// Creates a repo whose first branch is `main`, without hook templates.
fn init_repo(path: &Path, bare: bool) -> Result<Repository> {
    Repository::init_opts(
        path,
        RepositoryInitOptions::new()
            .bare(bare)
            .mkpath(true)
            .external_template(false)
            .initial_head("main"),
    )
    .git(|| format!("create a git repo at {}", path.display()))
}

/// The commit applied `main` points at; `None` before the first deploy.
pub(crate) fn main_commit(repo: &Repository) -> Result<Option<Oid>> {
    match repo.find_reference(MAIN) {
        Ok(r) => r
            .peel_to_commit()
            .map(|c| Some(c.id()))
            .git(|| format!("read main of {}", repo.path().display())),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).git(|| format!("read main of {}", repo.path().display())),
    }
}

/// Resolves a hex `commit_ref` as an object id prefix only — never as a
/// ref name — and peels it to a commit. `None` when no object matches.
fn resolve(repo: &Repository, name: &AgentName, commit_ref: &str) -> Result<Option<Oid>> {
    let object = match repo.find_object_by_prefix(commit_ref, None) {
        Ok(object) => object,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
        Err(e) if e.code() == ErrorCode::Ambiguous => {
            return Err(Error::AmbiguousCommit {
                agent: name.to_string(),
                commit_ref: commit_ref.to_owned(),
            });
        }
        Err(e) => {
            return Err(e).git(|| format!("resolve {commit_ref} in the config repo of {name}"));
        }
    };
    match object.peel_to_commit() {
        Ok(commit) => Ok(Some(commit.id())),
        Err(_) => Err(Error::BadCommitRef(format!(
            "commit_ref `{commit_ref}` names a {}, not a commit",
            object.kind().map_or("object", |k| k.str())
        ))),
    }
}

enum FileAt {
    File(Vec<u8>),
    Missing,
    Symlink,
    Directory,
    Other,
}

/// The regular file at `path` of `tree`, or why there is none.
fn read_file(repo: &Repository, tree: &git2::Tree<'_>, path: &str) -> Result<FileAt> {
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(FileAt::Missing),
        Err(e) => return Err(e).git(|| format!("look up {path}")),
    };
    match entry.filemode() {
        0o100644 | 0o100755 => {
            let blob = entry
                .to_object(repo)
                .and_then(|o| o.peel_to_blob())
                .git(|| format!("read {path}"))?;
            Ok(FileAt::File(blob.content().to_vec()))
        }
        0o120000 => Ok(FileAt::Symlink),
        0o040000 => Ok(FileAt::Directory),
        _ => Ok(FileAt::Other),
    }
}

/// Runs the schema check on `agent.toml` of commit `oid`, including the
/// prompt file's presence.
fn check_commit(repo: &Repository, oid: Oid) -> Result<AgentConfig> {
    let invalid = |errors: Vec<ConfigError>| Error::InvalidConfig {
        commit: short(oid),
        errors,
    };
    let line_less = |message: &str| ConfigError {
        line: None,
        message: message.to_owned(),
    };
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .git(|| format!("read commit {oid}"))?;
    let text = match read_file(repo, &tree, AGENT_TOML)? {
        FileAt::File(bytes) => {
            String::from_utf8(bytes).map_err(|_| invalid(vec![line_less("is not valid UTF-8")]))?
        }
        FileAt::Missing => {
            return Err(invalid(vec![line_less(
                "is not in the commit: a config commit needs agent.toml at the repo root",
            )]));
        }
        _ => {
            return Err(invalid(vec![line_less(
                "is not a regular file at the repo root",
            )]));
        }
    };
    let prompt_file = |path: &str| -> std::result::Result<(), String> {
        match read_file(repo, &tree, path) {
            Ok(FileAt::File(bytes)) => match std::str::from_utf8(&bytes) {
                Ok(_) => Ok(()),
                Err(_) => Err("is not valid UTF-8".to_owned()),
            },
            Ok(FileAt::Missing) => Err("is not in the commit".to_owned()),
            Ok(FileAt::Symlink) => Err("is a symlink; commit the file itself".to_owned()),
            Ok(FileAt::Directory) => Err("is a directory".to_owned()),
            Ok(FileAt::Other) => Err("is not a regular file".to_owned()),
            Err(e) => Err(format!("could not be read: {e}")),
        }
    };
    check_agent_toml_with(&text, &prompt_file).map_err(invalid)
}

/// Copies commit `oid` and everything it reaches that `dst` lacks from
/// `src` into `dst`, as one pack. All local: no transport, no negotiation,
/// and it works for commits no branch points at.
fn copy_commit(src: &Repository, dst: &Repository, oid: Oid) -> Result<()> {
    let dst_odb = dst
        .odb()
        .git(|| "open the applied object database".to_owned())?;
    if dst_odb.exists(oid) {
        // Only whole closures are ever copied, so the commit's history and
        // trees are there too.
        return Ok(());
    }
    let ctx = || format!("copy commit {oid} into the applied config repo");
    let mut walk = src.revwalk().git(ctx)?;
    walk.push(oid).git(ctx)?;
    // Leave out what dst already has.
    for reference in dst.references().git(ctx)?.flatten() {
        if let Ok(commit) = reference.peel_to_commit()
            && src.find_commit(commit.id()).is_ok()
        {
            walk.hide(commit.id()).git(ctx)?;
        }
    }
    let mut pack = src.packbuilder().git(ctx)?;
    pack.insert_walk(&mut walk).git(ctx)?;
    if pack.object_count() == 0 {
        return Ok(());
    }
    let mut writer = dst_odb.packwriter().git(ctx)?;
    let mut write_error = None;
    pack.foreach(|chunk| match writer.write_all(chunk) {
        Ok(()) => true,
        Err(e) => {
            write_error = Some(e);
            false
        }
    })
    .git(ctx)?;
    if let Some(e) = write_error {
        return Err(e).io(ctx);
    }
    writer.commit().git(ctx)?;
    Ok(())
}

/// Unified diff of `new`'s tree against `old`'s (or the empty tree).
fn diff_text(repo: &Repository, old: Option<Oid>, new: Oid) -> Result<String> {
    let ctx = || format!("diff {new} against the deployed config");
    let tree_of = |oid: Oid| repo.find_commit(oid).and_then(|c| c.tree()).git(ctx);
    let old_tree = old.map(tree_of).transpose()?;
    let new_tree = tree_of(new)?;
    let diff = repo
        .diff_tree_to_tree(
            old_tree.as_ref(),
            Some(&new_tree),
            Some(&mut DiffOptions::new()),
        )
        .git(ctx)?;
    let mut out = String::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if let origin @ ('+' | '-' | ' ') = line.origin() {
            out.push(origin);
        }
        out.push_str(&String::from_utf8_lossy(line.content()));
        true
    })
    .git(ctx)?;
    Ok(out)
}
