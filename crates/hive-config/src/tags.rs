//! The tags of an applied repo: one `<kind>/<approval id>` tag per step of
//! a proposal's life, all on the proposed commit.
//!
//! `proposal/`, `approved/`, `building/` and `deployed/` are lightweight;
//! `failed/` and `denied/` are annotated, their message the build error or
//! the operator's reason. Only `deployed/` moves `main`. Tags are
//! write-once: re-tagging the same commit is a no-op, another commit is a
//! conflict.

use git2::{ErrorCode, Oid, Repository};
use hive_proto::AgentName;
use serde::{Deserialize, Serialize};

use crate::error::{Error, GitContext, Result};
use crate::git::{core_signature, short};

/// One step of a proposal's life, in lifecycle order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagKind {
    /// The manager asked for the commit (`request_apply_commit`).
    Proposal,
    /// The operator approved it.
    Approved,
    /// Core is rebuilding the agent with it.
    Building,
    /// The rebuild succeeded; applied `main` points at it.
    Deployed,
    /// The rebuild failed (annotated with the error).
    Failed,
    /// The operator denied it (annotated with the reason).
    Denied,
}

impl TagKind {
    pub const ALL: [TagKind; 6] = [
        TagKind::Proposal,
        TagKind::Approved,
        TagKind::Building,
        TagKind::Deployed,
        TagKind::Failed,
        TagKind::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TagKind::Proposal => "proposal",
            TagKind::Approved => "approved",
            TagKind::Building => "building",
            TagKind::Deployed => "deployed",
            TagKind::Failed => "failed",
            TagKind::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// `failed/` and `denied/` carry a message.
    pub fn is_annotated(self) -> bool {
        matches!(self, TagKind::Failed | TagKind::Denied)
    }

    /// `<kind>/<id>`.
    pub fn tag_name(self, id: i64) -> String {
        format!("{}/{id}", self.as_str())
    }
}

/// One tag of an applied repo, as [`ConfigRepos::history`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEntry {
    pub kind: TagKind,
    /// The approval id (`0` for the first deploy at spawn).
    pub id: i64,
    /// The tagged commit.
    pub sha: String,
    /// The annotation of `failed/` and `denied/` tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When an annotated tag was made (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagged_at: Option<i64>,
}

pub(crate) fn non_empty<'a>(text: &'a str, fallback: &'a str) -> &'a str {
    let text = text.trim();
    if text.is_empty() { fallback } else { text }
}

pub(crate) fn parse_sha(name: &AgentName, sha: &str) -> Result<Oid> {
    if sha.len() != 40 {
        return Err(Error::BadCommitRef(format!(
            "tag {name}: `{sha}` is not a full sha; pass Prepared::sha"
        )));
    }
    Oid::from_str(sha).map_err(|_| {
        Error::BadCommitRef(format!(
            "tag {name}: `{sha}` is not a full sha; pass Prepared::sha"
        ))
    })
}

/// The commit `<kind>/<id>` marks, if the tag exists.
pub(crate) fn tag_commit(repo: &Repository, kind: TagKind, id: i64) -> Result<Option<Oid>> {
    let refname = format!("refs/tags/{}", kind.tag_name(id));
    match repo.find_reference(&refname) {
        Ok(r) => r
            .peel_to_commit()
            .map(|c| Some(c.id()))
            .git(|| format!("read {refname}")),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).git(|| format!("read {refname}")),
    }
}

pub(crate) fn proposal_commit(repo: &Repository, name: &AgentName, id: i64) -> Result<Oid> {
    tag_commit(repo, TagKind::Proposal, id)?.ok_or_else(|| Error::NoTag {
        agent: name.to_string(),
        tag: TagKind::Proposal.tag_name(id),
        known: String::new(),
    })
}

pub(crate) fn refuse_if_tagged(
    repo: &Repository,
    name: &AgentName,
    id: i64,
    kinds: &[TagKind],
    wanted: &str,
) -> Result<()> {
    for kind in kinds {
        if tag_commit(repo, *kind, id)?.is_some() {
            return Err(Error::TagConflict(format!(
                "proposal {id} of {name} is already {}; it cannot be marked {wanted}",
                kind.as_str()
            )));
        }
    }
    Ok(())
}

/// Creates `<kind>/<id>` on `oid` (annotated when `message` is given);
/// a no-op when it already marks `oid`.
pub(crate) fn put_tag(
    repo: &Repository,
    name: &AgentName,
    kind: TagKind,
    id: i64,
    oid: Oid,
    message: Option<&str>,
) -> Result<()> {
    let tag = kind.tag_name(id);
    if let Some(existing) = tag_commit(repo, kind, id)? {
        if existing == oid {
            return Ok(());
        }
        return Err(Error::TagConflict(format!(
            "{tag} already marks commit {} in the applied config repo of {name}, not {}",
            short(existing),
            short(oid)
        )));
    }
    let object = repo.find_object(oid, None).map_err(|_| {
        Error::TagConflict(format!(
            "commit {} is not in the applied config repo of {name}; prepare it before tagging",
            short(oid)
        ))
    })?;
    let ctx = || format!("tag {tag} in the applied config repo of {name}");
    match message {
        None => repo.tag_lightweight(&tag, &object, false).git(ctx)?,
        Some(message) => {
            let sig = core_signature()?;
            repo.tag(&tag, &object, &sig, &format!("{message}\n"), false)
                .git(ctx)?
        }
    };
    tracing::debug!(agent = %name, %tag, sha = %oid, "tagged");
    Ok(())
}

pub(crate) fn history_of(repo: &Repository) -> Result<Vec<TagEntry>> {
    let ctx = || format!("list the tags of {}", repo.path().display());
    let mut entries = Vec::new();
    for reference in repo.references_glob("refs/tags/*").git(ctx)? {
        let reference = reference.git(ctx)?;
        let Some(tag) = reference
            .name()
            .ok()
            .and_then(|n| n.strip_prefix("refs/tags/"))
        else {
            continue;
        };
        let Some((kind, id)) = tag.split_once('/') else {
            continue;
        };
        let (Some(kind), Ok(id)) = (TagKind::parse(kind), id.parse::<i64>()) else {
            continue;
        };
        let Ok(commit) = reference.peel_to_commit() else {
            continue;
        };
        let annotation = reference.target().and_then(|t| repo.find_tag(t).ok());
        entries.push(TagEntry {
            kind,
            id,
            sha: commit.id().to_string(),
            message: annotation
                .as_ref()
                .and_then(|t| t.message().ok().flatten().map(|m| m.trim_end().to_owned())),
            tagged_at: annotation
                .as_ref()
                .and_then(|t| t.tagger().map(|s| s.when().seconds())),
        });
    }
    entries.sort_by_key(|e| (e.id, e.kind));
    Ok(entries)
}
