//! Rolling back to an earlier `deployed/<id>`, including when the proposed
//! repo no longer has that commit.

use hive_config::TagKind;

use crate::support::{Hive, agent_toml, name};

fn deploy(hive: &Hive, agent: &str, id: i64, commit_ref: &str) -> String {
    let agent = name(agent);
    let p = hive.repos.prepare(&agent, commit_ref).unwrap();
    for kind in [TagKind::Proposal, TagKind::Approved, TagKind::Building] {
        hive.repos.tag(&agent, kind, id, &p.sha).unwrap();
    }
    hive.repos.mark_deployed(&agent, id).unwrap()
}

#[test]
fn rollback_to_an_earlier_deploy() {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let v1 = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "opus");
    deploy(&hive, "coder", 1, &v1);
    let v2 = hive.commit(
        &coder,
        &[("agent.toml", Some(&agent_toml("haiku")))],
        "haiku",
    );
    deploy(&hive, "coder", 2, &v2);
    assert_eq!(hive.repos.deployed(&coder).unwrap().config.model, "haiku");

    // The manager starts its proposed history over; v1 survives in applied.
    std::fs::remove_dir_all(hive.repos.proposed_path(&coder)).unwrap();
    hive.repos.init_proposed(&coder).unwrap();

    let target = hive.repos.rollback_target(&coder, 1).unwrap();
    assert_eq!(target, v1);
    let p = hive.repos.prepare(&coder, &target).unwrap();
    assert_eq!(p.sha, v1);
    assert!(
        p.diff.contains("\n-model = \"haiku\"\n+model = \"opus\"\n"),
        "{}",
        p.diff
    );
    assert_eq!(deploy(&hive, "coder", 3, &target), v1);
    assert_eq!(hive.repos.deployed(&coder).unwrap().sha, v1);
    assert_eq!(hive.applied_ref(&coder, "refs/heads/main").unwrap(), v1);

    let deployed: Vec<(i64, String)> = hive
        .history(&coder)
        .into_iter()
        .filter(|e| e.kind == TagKind::Deployed)
        .map(|e| (e.id, e.sha))
        .collect();
    assert_eq!(deployed[1..], [(1, v1.clone()), (2, v2), (3, v1)]);

    assert_eq!(
        hive.repos
            .rollback_target(&coder, 9)
            .unwrap_err()
            .to_string(),
        "no deployed/9 tag in the applied config repo of coder; deployed ids: 0, 1, 2, 3"
    );
}
