//! Loose ends for one agent and for the whole hive.

use hive_proto::{ApprovalKind, ApprovalStatus, LooseEnd};
use hive_store::{now_millis, now_unix};

use crate::{agent, store_with, to};

#[test]
fn for_an_agent_and_hive_wide() {
    let (_dir, store) = store_with(&["alice", "bob", "carol"]);
    let approval = store
        .queue_approval("alice", ApprovalKind::Spawn, "", Some("why"))
        .unwrap();
    store
        .queue_approval("bob", ApprovalKind::ApplyCommit, "abc1234", None)
        .unwrap();
    let done = store
        .queue_approval("alice", ApprovalKind::InitConfig, "", None)
        .unwrap();
    store
        .resolve_approval(done.id, ApprovalStatus::Denied, None)
        .unwrap();

    let asked = store
        .ask("alice", None, "deploy?", &[], false, Some(600))
        .unwrap();
    let asked_of = store
        .ask("carol", Some(&to("alice")), "help?", &[], false, None)
        .unwrap();
    store
        .ask("bob", None, "unrelated", &[], false, None)
        .unwrap();
    let answered = store
        .ask("alice", Some(&to("bob")), "answered", &[], false, None)
        .unwrap();
    store.answer_question(answered.id, "bob", "yes").unwrap();

    let due = now_unix() + 60;
    let reminder = store
        .remind("alice", Some(&agent("bob")), "nudge bob", due * 1000, None)
        .unwrap();
    store
        .remind("bob", Some(&agent("alice")), "bob's own", due * 1000, None)
        .unwrap();
    store.remind("alice", None, "fires now", 0, None).unwrap();
    store.deliver_due_reminders(now_millis()).unwrap();

    let now = now_unix() + 10;
    let ends = store.loose_ends_for("alice", now).unwrap();
    assert_eq!(
        ends,
        [
            LooseEnd::Approval {
                id: approval.id,
                agent: "alice".to_owned(),
                approval_kind: ApprovalKind::Spawn,
                commit_ref: String::new(),
                description: Some("why".to_owned()),
                requested_at: approval.requested_at,
                age_seconds: now - approval.requested_at,
            },
            LooseEnd::Question {
                id: asked.id,
                asker: "alice".to_owned(),
                target: None,
                question: "deploy?".to_owned(),
                asked_at: asked.asked_at,
                deadline_at: asked.deadline_at,
                age_seconds: now - asked.asked_at,
            },
            LooseEnd::Question {
                id: asked_of.id,
                asker: "carol".to_owned(),
                target: Some("alice".to_owned()),
                question: "help?".to_owned(),
                asked_at: asked_of.asked_at,
                deadline_at: None,
                age_seconds: now - asked_of.asked_at,
            },
            LooseEnd::Reminder {
                id: reminder.id,
                owner: "alice".to_owned(),
                target: Some("bob".to_owned()),
                message: "nudge bob".to_owned(),
                due_at: due,
                age_seconds: now - reminder.created_at,
                attempts: 0,
                last_error: None,
                parked: false,
            },
        ]
    );
    assert!(ends.iter().all(|e| match e {
        LooseEnd::Approval { age_seconds, .. }
        | LooseEnd::Question { age_seconds, .. }
        | LooseEnd::Reminder { age_seconds, .. } => *age_seconds >= 10,
    }));

    let all = store.loose_ends_all(now).unwrap();
    let kinds = |kind: fn(&LooseEnd) -> bool| all.iter().filter(|e| kind(e)).count();
    assert_eq!(kinds(|e| matches!(e, LooseEnd::Approval { .. })), 2);
    assert_eq!(kinds(|e| matches!(e, LooseEnd::Question { .. })), 3);
    assert_eq!(kinds(|e| matches!(e, LooseEnd::Reminder { .. })), 2);
    assert_eq!(all.len(), 7);

    assert!(store.loose_ends_for("carol", now).unwrap().len() == 1);
    assert!(store.loose_ends_for("nobody", now).unwrap().is_empty());
}
