//! The tag lifecycle of a proposal: proposal → approved → building →
//! deployed (main moves) or failed (annotated), and denials.

use git2::{ObjectType, Repository};
use hive_config::{Error, TagEntry, TagKind};

use crate::support::{Hive, agent_toml, name};

fn annotation(hive: &Hive, agent: &str, tag: &str) -> String {
    let repo = Repository::open_bare(hive.repos.applied_path(&name(agent))).unwrap();
    let r = repo.find_reference(&format!("refs/tags/{tag}")).unwrap();
    let tag = r.peel(ObjectType::Tag).unwrap().into_tag().unwrap();
    tag.message().unwrap().unwrap().to_owned()
}

fn entry(kind: TagKind, id: i64, sha: &str) -> TagEntry {
    TagEntry {
        kind,
        id,
        sha: sha.to_owned(),
        message: None,
        tagged_at: None,
    }
}

#[test]
fn proposal_to_deployed() {
    let hive = Hive::new();
    let coder = name("coder");
    let ensured = hive.repos.ensure(&coder).unwrap();
    assert!(ensured.proposed_created && ensured.applied_created);
    let v0 = ensured.sha.clone();
    let main = || hive.applied_ref(&coder, "refs/heads/main").unwrap();
    assert_eq!(main(), v0);

    let sha = hive.commit(
        &coder,
        &[
            ("agent.toml", Some(&agent_toml("opus"))),
            ("prompt.md", Some("# coder\nWrite Rust.\n")),
        ],
        "coder: opus and a real role",
    );
    let prepared = hive.repos.prepare(&coder, &sha[..7]).unwrap();
    assert_eq!(prepared.sha, sha);
    assert_eq!(prepared.config.model, "opus");
    let diff = &prepared.diff;
    assert!(
        diff.starts_with("diff --git a/agent.toml b/agent.toml\n"),
        "{diff}"
    );
    assert!(diff.contains("\n-model = \"sonnet\"\n"), "{diff}");
    assert!(diff.contains("\n+model = \"opus\"\n"), "{diff}");
    assert!(
        diff.contains("diff --git a/prompt.md b/prompt.md\n"),
        "{diff}"
    );
    assert!(diff.contains("\n+Write Rust.\n"), "{diff}");
    // Preparing tags nothing and moves nothing.
    assert_eq!(hive.history(&coder), [entry(TagKind::Deployed, 0, &v0)]);
    assert_eq!(main(), v0);

    let id = 7;
    for kind in [TagKind::Proposal, TagKind::Approved, TagKind::Building] {
        hive.repos.tag(&coder, kind, id, &prepared.sha).unwrap();
        // Re-tagging the same commit is a no-op.
        hive.repos.tag(&coder, kind, id, &prepared.sha).unwrap();
        assert_eq!(main(), v0, "{kind:?} must not move main");
    }
    // The rebuild reads the candidate before main moves.
    let candidate = hive.repos.config_at(&coder, &prepared.sha).unwrap();
    assert_eq!(
        (candidate.sha.as_str(), candidate.config.model.as_str()),
        (sha.as_str(), "opus")
    );
    assert_eq!(candidate.prompt, "# coder\nWrite Rust.\n");
    assert_eq!(hive.repos.deployed(&coder).unwrap().sha, v0);
    assert_eq!(hive.repos.mark_deployed(&coder, id).unwrap(), sha);
    assert_eq!(main(), sha);
    assert_eq!(
        hive.applied_ref(&coder, "refs/tags/deployed/7").unwrap(),
        sha
    );
    // A fast-forward: the deployed commit descends from the old main.
    let applied = Repository::open_bare(hive.repos.applied_path(&coder)).unwrap();
    let parent = applied
        .find_commit(sha.parse().unwrap())
        .unwrap()
        .parent_id(0)
        .unwrap();
    assert_eq!(parent.to_string(), v0);

    let deployed = hive.repos.deployed(&coder).unwrap();
    assert_eq!(deployed.sha, sha);
    assert_eq!(deployed.config.model, "opus");
    assert_eq!(deployed.prompt, "# coder\nWrite Rust.\n");
    assert_eq!(hive.repos.deployed_sha(&coder).unwrap(), Some(sha.clone()));
    assert_eq!(
        hive.history(&coder),
        [
            entry(TagKind::Deployed, 0, &v0),
            entry(TagKind::Proposal, 7, &sha),
            entry(TagKind::Approved, 7, &sha),
            entry(TagKind::Building, 7, &sha),
            entry(TagKind::Deployed, 7, &sha),
        ]
    );
    // Proposing what runs shows no diff.
    assert_eq!(hive.repos.prepare(&coder, &sha).unwrap().diff, "");
}

#[test]
fn failed_build_is_annotated_and_keeps_main() {
    let hive = Hive::new();
    let coder = name("coder");
    let v0 = hive.repos.ensure(&coder).unwrap().sha;
    let sha = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "opus");
    let p = hive.repos.prepare(&coder, &sha).unwrap();
    for kind in [TagKind::Proposal, TagKind::Approved, TagKind::Building] {
        hive.repos.tag(&coder, kind, 3, &p.sha).unwrap();
    }
    let error = "rebuild failed: container exited with status 1\nlast line: no such model";
    hive.repos.mark_failed(&coder, 3, error).unwrap();
    assert_eq!(annotation(&hive, "coder", "failed/3"), format!("{error}\n"));
    assert_eq!(hive.applied_ref(&coder, "refs/heads/main").unwrap(), v0);
    let failed = hive
        .history(&coder)
        .into_iter()
        .find(|e| e.kind == TagKind::Failed)
        .unwrap();
    assert_eq!((failed.id, failed.sha.as_str()), (3, sha.as_str()));
    assert_eq!(failed.message.as_deref(), Some(error));
    assert!(failed.tagged_at.is_some());
    // A failed proposal is not deployed later.
    assert_eq!(
        hive.repos.mark_deployed(&coder, 3).unwrap_err().to_string(),
        "proposal 3 of coder is already failed; it cannot be marked deployed"
    );
}

#[test]
fn denial_is_annotated_with_the_reason() {
    let hive = Hive::new();
    let coder = name("coder");
    let v0 = hive.repos.ensure(&coder).unwrap().sha;
    let a = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "opus");
    let pa = hive.repos.prepare(&coder, &a).unwrap();
    hive.repos
        .tag(&coder, TagKind::Proposal, 4, &pa.sha)
        .unwrap();
    let b = hive.commit(
        &coder,
        &[("agent.toml", Some(&agent_toml("haiku")))],
        "haiku",
    );
    let pb = hive.repos.prepare(&coder, &b).unwrap();
    hive.repos
        .tag(&coder, TagKind::Proposal, 5, &pb.sha)
        .unwrap();

    hive.repos
        .mark_denied(&coder, 4, Some("too expensive: stay on sonnet"))
        .unwrap();
    hive.repos.mark_denied(&coder, 5, None).unwrap();
    assert_eq!(
        annotation(&hive, "coder", "denied/4"),
        "too expensive: stay on sonnet\n"
    );
    assert_eq!(annotation(&hive, "coder", "denied/5"), "denied\n");
    assert_eq!(hive.applied_ref(&coder, "refs/heads/main").unwrap(), v0);
    assert_eq!(
        hive.applied_ref(&coder, "refs/tags/denied/5").as_deref(),
        Some(b.as_str())
    );
    // Denied twice (a retry) is a no-op; an approved proposal cannot be
    // denied, nor a denied one deployed.
    hive.repos.mark_denied(&coder, 4, Some("again")).unwrap();
    assert_eq!(
        annotation(&hive, "coder", "denied/4"),
        "too expensive: stay on sonnet\n"
    );
    assert_eq!(
        hive.repos.mark_deployed(&coder, 5).unwrap_err().to_string(),
        "proposal 5 of coder is already denied; it cannot be marked deployed"
    );
    hive.repos
        .tag(&coder, TagKind::Proposal, 6, &pa.sha)
        .unwrap();
    hive.repos
        .tag(&coder, TagKind::Approved, 6, &pa.sha)
        .unwrap();
    assert_eq!(
        hive.repos
            .mark_denied(&coder, 6, Some("late"))
            .unwrap_err()
            .to_string(),
        "proposal 6 of coder is already approved; it cannot be marked denied"
    );
}

#[test]
fn tag_refusals() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let a = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "a");
    hive.repos.prepare(&coder, &a).unwrap();
    let b = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("haiku")))], "b");
    hive.repos.tag(&coder, TagKind::Proposal, 8, &a).unwrap();

    // b was never prepared, so applied lacks it.
    let err = hive
        .repos
        .tag(&coder, TagKind::Proposal, 9, &b)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "commit {} is not in the applied config repo of coder; prepare it before tagging",
            &b[..12]
        )
    );
    hive.repos.prepare(&coder, &b).unwrap();
    let err = hive
        .repos
        .tag(&coder, TagKind::Proposal, 8, &b)
        .unwrap_err();
    assert!(matches!(err, Error::TagConflict(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "proposal/8 already marks commit {} in the applied config repo of coder, not {}",
            &a[..12],
            &b[..12]
        )
    );
    assert_eq!(
        hive.repos
            .tag(&coder, TagKind::Approved, 8, &a[..7])
            .unwrap_err()
            .to_string(),
        format!(
            "tag coder: `{}` is not a full sha; pass Prepared::sha",
            &a[..7]
        )
    );
    assert_eq!(
        hive.repos
            .mark_deployed(&coder, 99)
            .unwrap_err()
            .to_string(),
        "no proposal/99 tag in the applied config repo of coder"
    );
}
