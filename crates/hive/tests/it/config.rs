//! Agent config as git through the real daemon: the manager's commit
//! becomes an approval with a diff, a deploy, a denial with a note, a
//! rollback, and a two-step spawn.

use std::path::Path;

use serde_json::Value;

use crate::support::{Hive, approval_resolved, commit, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn tags(applied: &Path) -> Vec<String> {
    let repo = git2::Repository::open(applied).unwrap();
    let names = repo.tag_names(None).unwrap();
    let mut tags: Vec<String> = (0..names.len())
        .filter_map(|i| names.get(i).ok().flatten())
        .map(String::from)
        .collect();
    tags.sort();
    tags
}

fn deployed_model(hive: &Hive, name: &str) -> String {
    let path = hive
        .state_dir()
        .join(format!("agents/{name}/control/deployed.json"));
    let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    file["config"]["model"].as_str().unwrap().to_owned()
}

#[test]
fn deploy_deny_rollback_and_two_step_spawn() {
    let mirror = tempfile::tempdir().unwrap();
    git2::Repository::init_bare(mirror.path().join("coder.git")).unwrap();
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        "process",
        &[
            "--manager-port",
            "18500",
            "--agent-ports",
            "18501-18510",
            "--mirror-url",
            mirror.path().to_str().unwrap(),
        ],
    );
    let queued = json(&hive.agent("manager", r#"{"cmd":"request_spawn","name":"coder"}"#));
    assert_eq!(queued["kind"], "approval_queued");
    hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"]));
    let proposed = hive.state_dir().join("proposed/coder/config");
    let applied = hive.state_dir().join("applied/coder");
    assert_eq!(tags(&applied), ["deployed/0"]);
    assert_eq!(deployed_model(&hive, "coder"), "sonnet");

    // Refusals the manager sees, before any approval is queued.
    assert_eq!(
        hive.agent(
            "manager",
            r#"{"cmd":"request_apply_commit","agent":"coder","commit_ref":"main"}"#
        ),
        r#"{"kind":"err","message":"commit_ref `main` is not a commit sha: pass 7 to 40 hex digits (branch and tag names are refused so that an approval pins one immutable commit)"}"#
    );
    assert_eq!(
        hive.agent(
            "manager",
            r#"{"cmd":"request_apply_commit","agent":"coder","commit_ref":"abc1234d5"}"#
        ),
        r#"{"kind":"err","message":"commit abc1234d5 not found in the config repo of coder: commit it in /agents/coder/config first, then pass its sha"}"#
    );
    let bad = commit(&proposed, &[("agent.toml", "modle = \"opus\"\n")], "typo");
    let refused = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{bad}"}}"#),
    ));
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("agent.toml in commit {} is invalid", &bad[..12]))
            && message.contains("agent.toml:1: unknown field `modle`"),
        "{message}"
    );
    assert_eq!(
        hive.host(r#"{"cmd":"pending"}"#),
        r#"{"version":1,"ok":true,"approvals":[]}"#
    );

    // A good commit: approval with the full sha, deploy on approval.
    let toml = "model = \"opus\"\nengine = \"claude\"\nprompt = \"prompt.md\"\n";
    let good = commit(&proposed, &[("agent.toml", toml)], "use opus");
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{}","description":"bigger model"}}"#, &good[..9]),
    ));
    let id = queued["id"].as_i64().unwrap();
    let pending = json(&hive.host(r#"{"cmd":"pending"}"#));
    assert_eq!(pending["approvals"][0]["commit_ref"], good.as_str());
    assert_eq!(pending["approvals"][0]["kind"], "apply_commit");
    assert_eq!(pending["approvals"][0]["fetched_sha"], good.as_str());
    // The operator reads the diff without the browser: `show` over
    // host.sock, `hive pending --diff` (plain: stdout is no terminal).
    let shown = json(&hive.host(&format!(r#"{{"cmd":"show","id":{id}}}"#)));
    let diff = shown["diff"].as_str().unwrap();
    assert!(diff.contains("+model = \"opus\""), "{diff}");
    let out = crate::cli::hive_cli(&hive.host_socket(), &["show", &id.to_string()]);
    let text = crate::cli::stdout(&out);
    assert!(
        text.starts_with("ID  KIND")
            && text.contains("bigger model")
            && text.contains("\n+model = \"opus\"\n"),
        "{text}"
    );
    let out = crate::cli::hive_cli(&hive.host_socket(), &["pending", "--diff"]);
    let text = crate::cli::stdout(&out);
    assert!(
        text.contains(&format!("\n#{id} coder diff:\n"))
            && text.contains("\n+model = \"opus\"\n")
            && !text.contains('\x1b'),
        "{text}"
    );
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(
        tags(&applied),
        [
            format!("approved/{id}"),
            format!("building/{id}"),
            "deployed/0".into(),
            format!("deployed/{id}"),
            format!("proposal/{id}")
        ]
    );
    assert_eq!(deployed_model(&hive, "coder"), "opus");
    let status = json(&hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["coder"]}}"#));
    assert_eq!(status["agent_statuses"][0]["deployed_sha"], good.as_str());
    assert_eq!(status["agent_statuses"][0]["running"], true);
    assert_eq!(approval_resolved(&hive, id)["status"], "approved");
    // The mirror follows, in the background.
    let deployed_tag = format!("deployed/{id}");
    eventually("the mirror to carry the deploy", || {
        tags(&mirror.path().join("coder.git")).contains(&deployed_tag)
    });

    // A denial, with the operator's reason on the tag and in the event.
    let haiku = commit(
        &proposed,
        &[("agent.toml", &toml.replace("opus", "haiku"))],
        "cheaper",
    );
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{haiku}"}}"#),
    ));
    let denied = queued["id"].as_i64().unwrap();
    hive.host(&format!(
        r#"{{"cmd":"deny","id":{denied},"note":"keep opus"}}"#
    ));
    assert!(tags(&applied).contains(&format!("denied/{denied}")));
    let event = approval_resolved(&hive, denied);
    assert_eq!(
        (event["status"].as_str(), event["note"].as_str()),
        (Some("denied"), Some("keep opus"))
    );
    assert_eq!(deployed_model(&hive, "coder"), "opus");

    // Rollback to the first deploy.
    let rollback = json(&hive.host(r#"{"cmd":"rollback","name":"coder","id":0}"#));
    let back = rollback["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        rollback["approvals"][0]["description"],
        "rollback to deployed/0"
    );
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{back}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(deployed_model(&hive, "coder"), "sonnet");
    // Rolling back to what runs now would deploy nothing: refused, saying why.
    let short = &json(&hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["coder"]}}"#))
        ["agent_statuses"][0]["deployed_sha"]
        .as_str()
        .unwrap()[..12]
        .to_owned();
    for target in [0, back] {
        assert_eq!(
            hive.host(&format!(
                r#"{{"cmd":"rollback","name":"coder","id":{target}}}"#
            )),
            format!(
                r#"{{"version":1,"ok":false,"error":"coder already runs deployed/{target} (commit {short}); there is nothing to roll back"}}"#
            )
        );
    }

    // Two-step spawn: seed the repo, shape the agent, then spawn it.
    let init = json(&hive.agent(
        "manager",
        r#"{"cmd":"request_init_config","name":"newbie"}"#,
    ));
    hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, init["id"]));
    let newbie = hive.state_dir().join("proposed/newbie/config");
    commit(
        &newbie,
        &[("agent.toml", &toml.replace("opus", "haiku"))],
        "shape newbie",
    );
    let spawn = json(&hive.agent("manager", r#"{"cmd":"request_spawn","name":"newbie"}"#));
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, spawn["id"])),
        r#"{"version":1,"ok":true}"#
    );
    assert_eq!(deployed_model(&hive, "newbie"), "haiku");
    eventually("newbie to run", || {
        json(&hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["newbie"]}}"#))["agent_statuses"]
            [0]["running"]
            == true
    });
}
