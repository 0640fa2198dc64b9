//! What `prepare` refuses, in the exact words the manager reads, and that
//! a refusal leaves the applied repo as it was.

use git2::{Oid, Repository};

use crate::support::{Hive, name};

fn prepare_err(hive: &Hive, agent: &str, commit_ref: &str) -> String {
    hive.repos
        .prepare(&name(agent), commit_ref)
        .unwrap_err()
        .to_string()
}

#[test]
fn commit_ref_shapes() {
    let hive = Hive::new();
    hive.repos.ensure(&name("coder")).unwrap();
    let not_sha = |r: &str| {
        format!(
            "commit_ref `{r}` is not a commit sha: pass 7 to 40 hex digits (branch and tag \
             names are refused so that an approval pins one immutable commit)"
        )
    };
    for (commit_ref, expected) in [
        ("main", not_sha("main")),
        ("HEAD", not_sha("HEAD")),
        ("deployed/0", not_sha("deployed/0")),
        ("abcdefg", not_sha("abcdefg")),
        (
            "abc1234d5",
            "commit abc1234d5 not found in the config repo of coder: commit it in \
             /agents/coder/config first, then pass its sha"
                .to_owned(),
        ),
        (
            "abc12",
            "commit_ref `abc12` is too short: pass at least 7 hex digits of the commit sha"
                .to_owned(),
        ),
        (
            &"a".repeat(41),
            format!(
                "commit_ref `{}` is too long: a commit sha has at most 40 hex digits",
                "a".repeat(41)
            ),
        ),
    ] {
        assert_eq!(prepare_err(&hive, "coder", commit_ref), expected);
    }
}

#[test]
fn a_branch_named_like_a_sha_is_not_resolved() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let repo = Repository::open(hive.repos.proposed_path(&coder)).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    repo.branch("deadbeef", &head, false).unwrap();
    repo.tag_lightweight("cafe123", head.as_object(), false)
        .unwrap();
    for r in ["deadbeef", "cafe123"] {
        assert_eq!(
            prepare_err(&hive, "coder", r),
            format!(
                "commit {r} not found in the config repo of coder: commit it in \
                 /agents/coder/config first, then pass its sha"
            )
        );
    }
}

#[test]
fn invalid_agent_toml_lists_every_error() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let before = hive.applied_refs(&coder);
    let bad = r#"modle = "opus"
engine = "gemini"
prompt = "roles/coder.md"

[env]
"MY-VAR" = "1"

[[mounts]]
host_path = "/srv/data"
container_path = "/state/data"
"#;
    let sha = hive.commit(&coder, &[("agent.toml", Some(bad))], "broken");
    let short = &sha[..12];
    assert_eq!(
        prepare_err(&hive, "coder", &sha),
        format!(
            "agent.toml in commit {short} is invalid (6 errors):\n\
agent.toml: missing field `model`: set the model the engine runs, e.g. model = \"sonnet\"\n\
agent.toml:1: unknown field `modle`, expected one of `model`, `engine`, `prompt`, `env`, `mcp_servers`, `allowed_recipients`, `resources`, `network`, `mounts`, `image`, `budget`, `placement`\n\
agent.toml:2: engine: unknown variant `gemini`, expected `claude` or `codex`\n\
agent.toml:3: prompt file `roles/coder.md` is not in the commit\n\
agent.toml:6: env key `MY-VAR` is not a valid variable name (letters, digits and `_`, not starting with a digit)\n\
agent.toml:10: mounts[0].container_path `/state/data` is inside /state, which hive mounts itself"
        )
    );
    // Nothing reached applied: no ref moved, no object copied.
    assert_eq!(hive.applied_refs(&coder), before);
    let applied = Repository::open_bare(hive.repos.applied_path(&coder)).unwrap();
    let oid: Oid = sha.parse().unwrap();
    assert!(!applied.odb().unwrap().exists(oid));
}

#[test]
fn missing_agent_toml_and_prompt() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let sha = hive.commit(&coder, &[("agent.toml", None)], "oops");
    assert_eq!(
        prepare_err(&hive, "coder", &sha),
        format!(
            "agent.toml in commit {} is invalid (1 error):\n\
             agent.toml: is not in the commit: a config commit needs agent.toml at the repo root",
            &sha[..12]
        )
    );
    let sha = hive.commit(
        &coder,
        &[
            ("agent.toml", Some("model = \"opus\"\n")),
            ("prompt.md", None),
        ],
        "no prompt",
    );
    assert_eq!(
        prepare_err(&hive, "coder", &sha),
        format!(
            "agent.toml in commit {} is invalid (1 error):\n\
             agent.toml: prompt file `prompt.md` is not in the commit (the default; add it, or set prompt = \"<file>\")",
            &sha[..12]
        )
    );
}

#[test]
fn a_tree_sha_is_not_a_commit() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let repo = Repository::open(hive.repos.proposed_path(&coder)).unwrap();
    let tree = repo
        .head()
        .unwrap()
        .peel_to_tree()
        .unwrap()
        .id()
        .to_string();
    assert_eq!(
        prepare_err(&hive, "coder", &tree),
        format!("commit_ref `{tree}` names a tree, not a commit")
    );
}

#[test]
fn no_repos_yet() {
    let hive = Hive::new();
    assert_eq!(
        prepare_err(&hive, "ghost", "abcdef0"),
        "ghost has no applied config repo (it is created when the agent is spawned)"
    );
    // Seeded for a two-step spawn, but not spawned yet.
    hive.repos.init_proposed(&name("coder")).unwrap();
    assert_eq!(
        prepare_err(&hive, "coder", "abcdef0"),
        "coder has no applied config repo (it is created when the agent is spawned)"
    );
    assert_eq!(
        hive.repos.deployed(&name("coder")).unwrap_err().to_string(),
        "coder has no applied config repo (it is created when the agent is spawned)"
    );
    assert_eq!(hive.repos.deployed_sha(&name("coder")).unwrap(), None);
}
