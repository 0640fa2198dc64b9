//! The task board: claims, dependency gating, cycle refusal, who may do
//! what, and the lease a claim is (released when its holder goes).

use hive_proto::task::{NewTask, TaskFilter, TaskPatch, TaskStatus};
use hive_store::Error;

use crate::store_with;

fn refused(result: hive_store::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn new(title: &str, depends_on: &[i64]) -> NewTask {
    NewTask {
        title: title.into(),
        depends_on: depends_on.to_vec(),
        ..NewTask::default()
    }
}

fn ids(tasks: &[hive_proto::Task]) -> Vec<i64> {
    tasks.iter().map(|t| t.id).collect()
}

#[test]
fn a_task_is_claimable_only_once_its_dependencies_are_done() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let schema = store.create_task("manager", &new("schema", &[])).unwrap();
    let api = store
        .create_task("manager", &new("api", &[schema.id]))
        .unwrap();
    let docs = store.create_task("manager", &new("docs", &[])).unwrap();
    assert_eq!(
        (api.depends_on.clone(), api.claimable),
        (vec![schema.id], false)
    );
    assert_eq!(
        ids(&store.tasks("alice", TaskFilter::Claimable).unwrap()),
        [schema.id, docs.id]
    );

    assert_eq!(
        refused(store.claim_task("alice", api.id)),
        format!(
            "task {} depends on tasks not done yet: {} (open)",
            api.id, schema.id
        )
    );
    let claimed = store.claim_task("alice", schema.id).unwrap();
    assert_eq!(
        (claimed.status, claimed.assignee.as_deref()),
        (TaskStatus::Claimed, Some("alice"))
    );
    // Claiming it again is a no-op for the holder, refused for others.
    store.claim_task("alice", schema.id).unwrap();
    assert_eq!(
        refused(store.claim_task("bob", schema.id)),
        format!("task {} is claimed by alice", schema.id)
    );
    store.claim_task("bob", docs.id).unwrap();
    assert_eq!(
        refused(store.claim_task("bob", api.id)),
        format!(
            "task {} depends on tasks not done yet: {} (claimed)",
            api.id, schema.id
        )
    );

    // Someone else's task cannot be completed.
    assert_eq!(
        refused(store.complete_task("bob", schema.id, None)),
        format!(
            "only the agent holding task {} can mark it done: it is held by alice",
            schema.id
        )
    );
    assert_eq!(
        refused(store.complete_task("bob", api.id, None)),
        format!(
            "only the agent holding task {} can mark it done: nobody holds it: claim it first",
            api.id
        )
    );
    store
        .complete_task("alice", schema.id, Some("merged"))
        .unwrap();
    assert!(store.task(api.id).unwrap().claimable);
    assert_eq!(
        ids(&store.tasks("bob", TaskFilter::Claimable).unwrap()),
        [api.id]
    );
    store.claim_task("bob", api.id).unwrap();
    assert_eq!(
        ids(&store.tasks("bob", TaskFilter::Mine).unwrap()),
        [api.id, docs.id]
    );
    assert_eq!(
        refused(store.claim_task("bob", schema.id)),
        format!("task {} is done", schema.id)
    );

    let history: Vec<(String, String)> = store
        .task_history(schema.id)
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    assert_eq!(
        history,
        [
            ("manager".to_owned(), "created".to_owned()),
            ("alice".to_owned(), "claimed".to_owned()),
            ("alice".to_owned(), "completed".to_owned()),
        ]
    );
}

#[test]
fn dependency_cycles_are_refused() {
    let (_dir, store) = store_with(&["alice"]);
    let a = store.create_task("alice", &new("a", &[])).unwrap();
    let b = store.create_task("alice", &new("b", &[a.id])).unwrap();
    let c = store.create_task("alice", &new("c", &[b.id])).unwrap();
    let patch = |deps: &[i64]| TaskPatch {
        depends_on: Some(deps.to_vec()),
        ..TaskPatch::default()
    };
    assert_eq!(
        refused(store.update_task("alice", a.id, &patch(&[c.id]))),
        format!(
            "task {a} cannot depend on task {c}: task {c} already depends on task {a} (a \
             dependency cycle)",
            a = a.id,
            c = c.id
        )
    );
    assert_eq!(
        refused(store.update_task("alice", a.id, &patch(&[a.id]))),
        format!("task {} cannot depend on itself", a.id)
    );
    assert!(matches!(
        store.create_task("alice", &new("d", &[999])),
        Err(Error::NotFound {
            what: "task",
            id: 999
        })
    ));
    // A refused change changed nothing.
    assert!(store.task(a.id).unwrap().depends_on.is_empty());
    assert_eq!(store.tasks("alice", TaskFilter::All).unwrap().len(), 3);
    // A diamond is no cycle.
    store
        .update_task("alice", c.id, &patch(&[a.id, b.id]))
        .unwrap();
    assert_eq!(store.task(c.id).unwrap().depends_on, [a.id, b.id]);
}

#[test]
fn who_may_assign_reorder_cancel_and_update() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let t = store.create_task("alice", &new("mine", &[])).unwrap();
    let u = store.create_task("operator", &new("theirs", &[])).unwrap();
    for verb in ["assign", "reorder"] {
        let result = match verb {
            "assign" => store.assign_task("alice", t.id, "bob"),
            _ => store.reorder_task("alice", t.id, -5),
        };
        assert_eq!(
            refused(result),
            format!("only the manager or the operator can {verb} tasks")
        );
    }
    assert_eq!(
        refused(store.cancel_task("bob", t.id, None)),
        format!(
            "only the manager, the operator or its creator (while it is open) can cancel task {}",
            t.id
        )
    );
    assert_eq!(
        refused(store.update_task(
            "bob",
            t.id,
            &TaskPatch {
                title: Some("stolen".into()),
                ..TaskPatch::default()
            }
        )),
        format!(
            "task {} is not yours to change: its holder, its creator while it is open, or the \
             manager may",
            t.id
        )
    );

    // Assigned to bob: only bob may claim it.
    let assigned = store.assign_task("manager", t.id, "bob").unwrap();
    assert_eq!(
        (assigned.status, assigned.assignee.as_deref()),
        (TaskStatus::Open, Some("bob"))
    );
    assert_eq!(
        refused(store.claim_task("alice", t.id)),
        format!("task {} is assigned to bob", t.id)
    );
    assert_eq!(
        ids(&store.tasks("alice", TaskFilter::Claimable).unwrap()),
        [u.id]
    );
    store.claim_task("bob", t.id).unwrap();

    // Blocked with a reason; the holder resumes it by claiming again.
    assert_eq!(
        refused(store.block_task("bob", t.id, "  ")),
        "blocking a task needs a reason"
    );
    let blocked = store.block_task("bob", t.id, "waiting for keys").unwrap();
    assert_eq!(
        (blocked.status, blocked.reason.as_deref()),
        (TaskStatus::Blocked, Some("waiting for keys"))
    );
    assert_eq!(
        refused(store.claim_task("alice", t.id)),
        format!("task {} is blocked by bob", t.id)
    );
    assert_eq!(
        store.claim_task("bob", t.id).unwrap().status,
        TaskStatus::Claimed
    );

    // The operator reorders and cancels.
    store.reorder_task("operator", u.id, -1).unwrap();
    assert_eq!(
        ids(&store.tasks("alice", TaskFilter::All).unwrap()),
        [u.id, t.id]
    );
    let cancelled = store
        .cancel_task("operator", t.id, Some("not needed"))
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(
        refused(store.complete_task("bob", t.id, None)),
        format!(
            "only the agent holding task {} can mark it done: it is cancelled",
            t.id
        )
    );
    assert_eq!(
        ids(&store.tasks("alice", TaskFilter::Active).unwrap()),
        [u.id]
    );
}

#[test]
fn bad_fields_are_refused_and_lose_nothing() {
    let (_dir, store) = store_with(&["alice"]);
    assert_eq!(
        refused(store.create_task("alice", &new("  ", &[]))),
        "a task needs a title"
    );
    let link = NewTask {
        title: "x".into(),
        links: vec!["/etc/passwd".into()],
        ..NewTask::default()
    };
    assert_eq!(
        refused(store.create_task("alice", &link)),
        "task link \"/etc/passwd\" must be msg:<id> or an absolute path under /shared or /state"
    );
    let ok = NewTask {
        title: "x".into(),
        links: vec!["msg:4".into(), "/shared/plan.md".into()],
        ..NewTask::default()
    };
    let t = store.create_task("alice", &ok).unwrap();
    assert_eq!(t.links, ["msg:4", "/shared/plan.md"]);
    assert_eq!(store.tasks("alice", TaskFilter::All).unwrap().len(), 1);
}

#[test]
fn releasing_claims_reopens_what_the_agent_held() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let a = store.create_task("manager", &new("a", &[])).unwrap();
    let b = store.create_task("manager", &new("b", &[])).unwrap();
    let c = store.create_task("manager", &new("c", &[])).unwrap();
    let d = store.create_task("manager", &new("d", &[])).unwrap();
    store.claim_task("alice", a.id).unwrap();
    store.claim_task("alice", b.id).unwrap();
    store.block_task("alice", b.id, "stuck").unwrap();
    store.claim_task("alice", c.id).unwrap();
    store.complete_task("alice", c.id, None).unwrap();
    store.claim_task("bob", d.id).unwrap();

    let released = store.release_claims("alice", "container crashed").unwrap();
    assert_eq!(ids(&released), [a.id, b.id]);
    for t in &released {
        assert_eq!((t.status, t.assignee.as_deref()), (TaskStatus::Open, None));
        assert!(t.claimable);
    }
    // Done stays done; bob keeps his.
    assert_eq!(store.task(c.id).unwrap().status, TaskStatus::Done);
    assert_eq!(store.task(d.id).unwrap().assignee.as_deref(), Some("bob"));
    let last = store.task_history(a.id).unwrap().pop().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.note.as_deref()
        ),
        ("system", "released", Some("container crashed"))
    );
    // Anyone may claim them now.
    store.claim_task("bob", a.id).unwrap();
    assert!(store.release_claims("alice", "again").unwrap().is_empty());
}

#[test]
fn dependents_are_listed_for_the_board() {
    let (_dir, store) = store_with(&["alice"]);
    let a = store.create_task("manager", &new("a", &[])).unwrap();
    let b = store.create_task("manager", &new("b", &[a.id])).unwrap();
    let c = store.create_task("manager", &new("c", &[a.id])).unwrap();
    store.claim_task("alice", a.id).unwrap();
    store.complete_task("alice", a.id, None).unwrap();
    let dependents = store.task_dependents(a.id).unwrap();
    assert_eq!(ids(&dependents), [b.id, c.id]);
    assert!(dependents.iter().all(|t| t.claimable));
}

#[test]
fn the_board_lists_each_task_as_it_loads_alone() {
    let (_dir, store) = store_with(&["alice"]);
    let a = store.create_task("manager", &new("a", &[])).unwrap();
    let b = store.create_task("manager", &new("b", &[])).unwrap();
    store
        .create_task("manager", &new("c", &[a.id, b.id]))
        .unwrap();
    store.create_task("manager", &new("d", &[b.id])).unwrap();
    store.claim_task("alice", b.id).unwrap();
    store.complete_task("alice", b.id, None).unwrap();
    let board = store.tasks("alice", TaskFilter::All).unwrap();
    let alone: Vec<_> = board.iter().map(|t| store.task(t.id).unwrap()).collect();
    assert_eq!(board, alone);
    assert_eq!(
        board
            .iter()
            .map(|t| (t.depends_on.len(), t.claimable))
            .collect::<Vec<_>>(),
        [(0, true), (0, false), (2, false), (1, true)]
    );
}
