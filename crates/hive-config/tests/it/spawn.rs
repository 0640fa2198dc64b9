//! Creating an agent's repos: `ensure` at spawn, `init_proposed` for the
//! two-step spawn, `purge`.

use git2::Repository;
use hive_config::{ConfigRepos, Error, TagKind};

use crate::support::{Hive, agent_toml, name};

#[test]
fn ensure_creates_both_and_is_idempotent() {
    let hive = Hive::new();
    let coder = name("coder");
    let first = hive.repos.ensure(&coder).unwrap();
    assert!(first.proposed_created && first.applied_created);
    let again = hive.repos.ensure(&coder).unwrap();
    assert!(!again.proposed_created && !again.applied_created);
    assert_eq!(again.sha, first.sha);

    let proposed = Repository::open(hive.repos.proposed_path(&coder)).unwrap();
    assert!(!proposed.is_bare());
    assert_eq!(proposed.head().unwrap().name().unwrap(), "refs/heads/main");
    let workdir = proposed.workdir().unwrap();
    let toml = std::fs::read_to_string(workdir.join("agent.toml")).unwrap();
    assert!(toml.contains("model = \"sonnet\""), "{toml}");
    assert!(
        std::fs::read_to_string(workdir.join("prompt.md"))
            .unwrap()
            .contains("You are `coder`")
    );
    assert!(
        proposed.statuses(None).unwrap().is_empty(),
        "clean work tree"
    );

    let applied = Repository::open(hive.repos.applied_path(&coder)).unwrap();
    assert!(applied.is_bare());
    assert_eq!(applied.head().unwrap().name().unwrap(), "refs/heads/main");
    assert_eq!(
        hive.applied_refs(&coder),
        [
            ("refs/heads/main".to_owned(), first.sha.clone()),
            ("refs/tags/deployed/0".to_owned(), first.sha.clone()),
        ]
    );
    let deployed = hive.repos.deployed(&coder).unwrap();
    assert_eq!(deployed.config.model, "sonnet");
    assert!(deployed.prompt.starts_with("# Role of coder\n"));
}

#[test]
fn ensure_adopts_the_empty_dir_core_made() {
    let hive = Hive::new();
    let coder = name("coder");
    std::fs::create_dir_all(hive.repos.proposed_path(&coder)).unwrap();
    std::fs::create_dir_all(hive.repos.applied_path(&coder)).unwrap();
    let ensured = hive.repos.ensure(&coder).unwrap();
    assert!(ensured.proposed_created && ensured.applied_created);
}

#[test]
fn something_else_in_the_way_is_refused() {
    let hive = Hive::new();
    let coder = name("coder");
    let dir = hive.repos.proposed_path(&coder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "hi").unwrap();
    let err = hive.repos.ensure(&coder).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "open {} (it exists but is not a git repo): ",
            dir.display()
        )),
        "{err}"
    );
}

#[test]
fn two_step_spawn_deploys_what_the_manager_shaped() {
    let hive = Hive::new();
    let coder = name("coder");
    assert!(hive.repos.init_proposed(&coder).unwrap());
    assert!(!hive.repos.init_proposed(&coder).unwrap());
    assert!(!hive.repos.applied_path(&coder).exists());

    let sha = hive.commit(
        &coder,
        &[
            ("agent.toml", Some(&agent_toml("opus"))),
            ("prompt.md", Some("# coder\nYou review pull requests.\n")),
        ],
        "shape coder before its spawn",
    );
    let ensured = hive.repos.ensure(&coder).unwrap();
    assert!(!ensured.proposed_created && ensured.applied_created);
    assert_eq!(ensured.sha, sha);
    let deployed = hive.repos.deployed(&coder).unwrap();
    assert_eq!(deployed.config.model, "opus");
    assert_eq!(deployed.prompt, "# coder\nYou review pull requests.\n");
    let history = hive.history(&coder);
    assert_eq!(history.len(), 1);
    assert_eq!(
        (history[0].kind, history[0].id, history[0].sha.as_str()),
        (TagKind::Deployed, 0, sha.as_str())
    );
}

#[test]
fn an_invalid_shaped_config_blocks_the_spawn_until_fixed() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.init_proposed(&coder).unwrap();
    let bad = hive.commit(&coder, &[("agent.toml", Some("model = 5\n"))], "bad");
    let err = hive.repos.ensure(&coder).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "agent.toml in commit {} is invalid (1 error):\n\
             agent.toml:1: model: invalid type: integer `5`, expected a string",
            &bad[..12]
        )
    );
    assert!(!hive.repos.applied_path(&coder).exists());
    let good = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "fix");
    assert_eq!(hive.repos.ensure(&coder).unwrap().sha, good);
}

#[test]
fn purge_removes_both() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    hive.repos.purge(&coder).unwrap();
    assert!(!hive.repos.proposed_path(&coder).exists());
    assert!(!hive.repos.applied_path(&coder).exists());
    hive.repos.purge(&coder).unwrap();
    assert!(hive.repos.ensure(&coder).unwrap().applied_created);
}

#[test]
fn default_model_is_configurable() {
    let hive = Hive::new();
    let repos = ConfigRepos::new(hive.path().join("other")).with_default_model("opus");
    let coder = name("coder");
    repos.ensure(&coder).unwrap();
    assert_eq!(repos.deployed(&coder).unwrap().config.model, "opus");
}

#[test]
fn core_seeds_only_a_repo_it_creates() {
    let hive = Hive::new();
    let coder = name("coder");
    // A repo the manager initialised without a commit: core writes nothing
    // into it (its `.git` could lead anywhere) and says what to do.
    let path = hive.repos.proposed_path(&coder);
    Repository::init(&path).unwrap();
    let err = hive.repos.ensure(&coder).unwrap_err();
    assert!(matches!(err, Error::EmptyRepo { .. }), "{err}");
    assert!(!path.join(".git/index").exists());
    assert!(!path.join("agent.toml").exists());
    std::fs::remove_dir_all(&path).unwrap();
    // A fresh one is seeded beside it and moved in whole.
    assert!(hive.repos.init_proposed(&coder).unwrap());
    let parent = path.parent().unwrap();
    let names: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["config"]);
    assert!(Repository::open(&path).unwrap().head().is_ok());
}

#[test]
fn a_repo_the_manager_owns_is_still_read() {
    if !std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
    {
        eprintln!("skipped: chown needs root");
        return;
    }
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let sha = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "opus");
    // The manager's uid owns its repo (libgit2 refuses such repos unless
    // owner validation is off).
    let mut stack = vec![hive.repos.proposed_path(&coder)];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(108_000), Some(100_000)).unwrap();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert_eq!(
        hive.repos.prepare(&coder, &sha).unwrap().config.model,
        "opus"
    );
}

/// The manager points its repo's alternates at a host repo and its `HEAD`
/// at a commit only that repo holds: the spawn finds no such commit, and
/// nothing of the host repo reaches applied.
#[test]
fn a_spawn_never_reads_a_host_repo_through_the_managers_alternates() {
    let hive = Hive::new();
    let coder = name("coder");
    let host = Repository::init(hive.path().join("host")).unwrap();
    let secret = {
        let blob = host.blob(agent_toml("opus").as_bytes()).unwrap();
        let mut tree = host.treebuilder(None).unwrap();
        tree.insert("agent.toml", blob, 0o100644).unwrap();
        let tree = host.find_tree(tree.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        host.commit(None, &sig, &sig, "secret", &tree, &[]).unwrap()
    };
    hive.repos.init_proposed(&coder).unwrap();
    let git = hive.repos.proposed_path(&coder).join(".git");
    std::fs::write(
        git.join("objects/info/alternates"),
        format!("{}\n", hive.path().join("host/.git/objects").display()),
    )
    .unwrap();
    std::fs::write(git.join("refs/heads/main"), format!("{secret}\n")).unwrap();
    let err = hive.repos.ensure(&coder).unwrap_err().to_string();
    assert!(
        err.contains(&format!("read commit {secret}: object not found")),
        "{err}"
    );
    assert!(
        !hive.repos.applied_path(&coder).join("objects").exists()
            || Repository::open(hive.repos.applied_path(&coder))
                .unwrap()
                .find_commit(secret)
                .is_err()
    );
}

/// `HEAD` is read without libgit2 opening the manager's repo: a packed
/// branch and a detached `HEAD` are followed as git would.
#[test]
fn a_packed_or_detached_head_is_what_deploys() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.init_proposed(&coder).unwrap();
    let sha = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "opus");
    let git = hive.repos.proposed_path(&coder).join(".git");
    std::fs::remove_file(git.join("refs/heads/main")).unwrap();
    std::fs::write(
        git.join("packed-refs"),
        format!("# pack-refs\n{sha} refs/heads/main\n"),
    )
    .unwrap();
    assert_eq!(hive.repos.ensure(&coder).unwrap().sha, sha);

    let reviewer = name("reviewer");
    hive.repos.init_proposed(&reviewer).unwrap();
    let sha = hive.commit(
        &reviewer,
        &[("agent.toml", Some(&agent_toml("haiku")))],
        "haiku",
    );
    let git = hive.repos.proposed_path(&reviewer).join(".git");
    std::fs::write(git.join("HEAD"), format!("{sha}\n")).unwrap();
    std::fs::remove_file(git.join("refs/heads/main")).unwrap();
    assert_eq!(hive.repos.ensure(&reviewer).unwrap().sha, sha);
}
