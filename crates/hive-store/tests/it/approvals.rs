//! The approval queue's lifecycle and history.

use hive_proto::{ApprovalKind, ApprovalStatus};
use hive_store::Error;

use crate::{raw, store_with};

#[test]
fn lifecycle() {
    let (_dir, store) = store_with(&["manager"]);
    let spawn = store
        .queue_approval("coder", ApprovalKind::Spawn, "", Some("a coder"))
        .unwrap();
    let apply = store
        .queue_approval("coder", ApprovalKind::ApplyCommit, "abc1234", None)
        .unwrap();
    let init = store
        .queue_approval("tester", ApprovalKind::InitConfig, "", None)
        .unwrap();
    assert_eq!(spawn.status, ApprovalStatus::Pending);
    assert_eq!(
        (spawn.kind, spawn.description.as_deref()),
        (ApprovalKind::Spawn, Some("a coder"))
    );
    assert_eq!(spawn.resolved_at, None);
    assert_eq!(store.approval(apply.id).unwrap(), apply);
    assert_eq!(
        store
            .pending_approvals()
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        [spawn.id, apply.id, init.id]
    );

    let approved = store
        .resolve_approval(spawn.id, ApprovalStatus::Approved, None)
        .unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    assert!(approved.resolved_at.is_some());
    // An approved action may still fail.
    let failed = store
        .resolve_approval(spawn.id, ApprovalStatus::Failed, Some("no such image"))
        .unwrap();
    assert_eq!(
        (failed.status, failed.note.as_deref()),
        (ApprovalStatus::Failed, Some("no such image"))
    );

    let denied = store
        .resolve_approval(apply.id, ApprovalStatus::Denied, Some("too broad"))
        .unwrap();
    assert_eq!(denied.note.as_deref(), Some("too broad"));
    let err = store
        .resolve_approval(apply.id, ApprovalStatus::Approved, None)
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)));
    assert_eq!(
        err.to_string(),
        format!("approval {} is already denied", apply.id)
    );
    let err = store
        .resolve_approval(spawn.id, ApprovalStatus::Failed, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("approval {} is already failed", spawn.id)
    );

    store
        .resolve_approval(init.id, ApprovalStatus::Cancelled, None)
        .unwrap();
    assert!(store.pending_approvals().unwrap().is_empty());

    let err = store.approval(999).unwrap_err();
    assert_eq!(err.to_string(), "no approval with id 999");
    assert!(matches!(
        store.resolve_approval(999, ApprovalStatus::Approved, None),
        Err(Error::NotFound {
            what: "approval",
            id: 999
        })
    ));
    assert!(matches!(
        store.queue_approval("../etc", ApprovalKind::Spawn, "", None),
        Err(Error::Name(_))
    ));
}

#[test]
fn history_is_newest_resolved_first() {
    let (dir, store) = store_with(&[]);
    let ids: Vec<i64> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            store
                .queue_approval(n, ApprovalKind::Spawn, "", None)
                .unwrap()
                .id
        })
        .collect();
    store
        .resolve_approval(ids[0], ApprovalStatus::Approved, None)
        .unwrap();
    store
        .resolve_approval(ids[1], ApprovalStatus::Denied, None)
        .unwrap();
    store
        .resolve_approval(ids[2], ApprovalStatus::Cancelled, None)
        .unwrap();
    // ids[3] stays pending.
    let conn = raw(&dir);
    for (id, at) in [(ids[0], 100), (ids[1], 300), (ids[2], 200)] {
        conn.execute(
            "UPDATE approvals SET resolved_at = ?1 WHERE id = ?2",
            (at, id),
        )
        .unwrap();
    }
    let history: Vec<i64> = store
        .approval_history(10)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(history, [ids[1], ids[2], ids[0]]);
    let latest: Vec<i64> = store
        .approval_history(1)
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(latest, [ids[1]]);
}

#[test]
fn cancelling_an_agents_pending_approvals() {
    let (_dir, store) = store_with(&[]);
    let a = store
        .queue_approval("coder", ApprovalKind::ApplyCommit, "abc1234", None)
        .unwrap();
    let b = store
        .queue_approval("other", ApprovalKind::Spawn, "", None)
        .unwrap();
    let cancelled = store
        .cancel_pending_approvals_for("coder", Some("destroyed"))
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        (cancelled[0].id, cancelled[0].status),
        (a.id, ApprovalStatus::Cancelled)
    );
    assert_eq!(store.pending_approvals().unwrap(), [b]);
}
