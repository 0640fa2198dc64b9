//! Questions to the operator and to peers: who may ask, who may answer,
//! expiry, cancellation and the helper events they push.

use std::time::Duration;

use hive_store::{ANSWER_CANCELLED, ANSWER_EXPIRED, Error, TTL_WATCHDOG};

use crate::{inbox, store_with, to};

fn refused(result: hive_store::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn self_ask_is_refused() {
    let (_dir, store) = store_with(&["alice"]);
    assert_eq!(
        refused(store.ask("alice", Some(&to("alice")), "me?", &[], false, None)),
        "alice cannot ask itself a question"
    );
    assert_eq!(
        refused(store.ask("operator", None, "me?", &[], false, None)),
        "operator cannot ask itself a question"
    );
    assert!(matches!(
        store.ask("alice", Some(&to("ghost")), "?", &[], false, None),
        Err(Error::UnknownAgent(name)) if name == "ghost"
    ));
}

#[test]
fn who_may_answer() {
    let (_dir, store) = store_with(&["alice", "bob", "carol"]);

    let to_operator = store
        .ask("alice", None, "deploy?", &[], false, None)
        .unwrap();
    assert_eq!(to_operator.target, None);
    let same = store
        .ask("alice", Some(&to("operator")), "really?", &[], false, None)
        .unwrap();
    assert_eq!(same.target, None);
    for who in ["bob", "alice"] {
        assert_eq!(
            refused(store.answer_question(to_operator.id, who, "yes")),
            format!(
                "question {} is for the operator; {who} may not answer it",
                to_operator.id
            )
        );
    }
    let answered = store
        .answer_question(to_operator.id, "operator", "yes")
        .unwrap();
    assert_eq!(answered.answer.as_deref(), Some("yes"));
    assert_eq!(answered.answerer.as_deref(), Some("operator"));
    assert!(answered.answered_at.is_some() && !answered.cancelled);
    assert_eq!(store.question(to_operator.id).unwrap(), answered);
    assert_eq!(
        refused(store.answer_question(to_operator.id, "operator", "again")),
        format!(
            "question {} was already answered by operator",
            to_operator.id
        )
    );

    let to_bob = store
        .ask("alice", Some(&to("bob")), "review?", &[], false, None)
        .unwrap();
    assert_eq!(to_bob.target.as_deref(), Some("bob"));
    assert_eq!(
        refused(store.answer_question(to_bob.id, "carol", "sure")),
        format!(
            "question {} is addressed to bob; carol may not answer it",
            to_bob.id
        )
    );
    assert_eq!(
        refused(store.answer_question(to_bob.id, "bob", "  ")),
        "the answer is empty"
    );
    store.answer_question(to_bob.id, "bob", "sure").unwrap();

    let overridden = store
        .ask("alice", Some(&to("bob")), "again?", &[], false, None)
        .unwrap();
    let q = store
        .answer_question(overridden.id, "operator", "no")
        .unwrap();
    assert_eq!(q.answerer.as_deref(), Some("operator"));

    assert_eq!(
        store
            .pending_questions()
            .unwrap()
            .iter()
            .map(|q| q.id)
            .collect::<Vec<_>>(),
        [same.id]
    );
    assert!(matches!(
        store.answer_question(999, "operator", "x"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn helper_events_land_in_inboxes_as_system_messages() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let options = ["yes".to_owned(), "no".to_owned()];
    let q = store
        .ask("alice", Some(&to("bob")), "ship it?", &options, true, None)
        .unwrap();
    assert_eq!(q.options, options);
    assert!(q.multi);
    assert_eq!(
        inbox(&store, "bob"),
        [(
            "system".to_owned(),
            format!(
                r#"{{"event":"question_asked","id":{},"asker":"alice","question":"ship it?","options":["yes","no"],"multi":true}}"#,
                q.id
            )
        )]
    );
    assert!(inbox(&store, "alice").is_empty());

    store.answer_question(q.id, "bob", "yes, no").unwrap();
    assert_eq!(
        inbox(&store, "alice"),
        [(
            "system".to_owned(),
            format!(
                r#"{{"event":"question_answered","id":{},"question":"ship it?","answer":"yes, no","answerer":"bob"}}"#,
                q.id
            )
        )]
    );

    // The operator asking a peer gets its answer on the dashboard, not in
    // an inbox.
    let from_operator = store
        .ask("operator", Some(&to("bob")), "status?", &[], false, None)
        .unwrap();
    store
        .answer_question(from_operator.id, "bob", "green")
        .unwrap();
    assert!(inbox(&store, "operator").is_empty());
}

#[tokio::test]
async fn ttl_expiry() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let schedule = store.schedule_changed();
    let q = store
        .ask("alice", Some(&to("bob")), "quick?", &[], false, Some(60))
        .unwrap();
    // The scheduler hears about the new deadline even though it was not
    // waiting yet.
    tokio::time::timeout(Duration::from_secs(5), schedule.notified())
        .await
        .unwrap();
    let deadline = q.asked_at + 60;
    assert_eq!(q.deadline_at, Some(deadline));
    assert_eq!(store.next_question_deadline().unwrap(), Some(deadline));
    assert!(
        inbox(&store, "bob")[0]
            .1
            .ends_with(&format!(r#""multi":false,"deadline_at":{deadline}}}"#))
    );

    assert!(store.expire_questions(deadline - 1).unwrap().is_empty());
    let expired = store.expire_questions(deadline).unwrap();
    assert_eq!(expired.len(), 1);
    let e = &expired[0];
    assert_eq!(e.answer.as_deref(), Some(ANSWER_EXPIRED));
    assert_eq!(e.answerer.as_deref(), Some(TTL_WATCHDOG));
    assert_eq!((e.answered_at, e.cancelled), (Some(deadline), false));
    assert_eq!(store.question(q.id).unwrap(), *e);
    assert_eq!(
        inbox(&store, "alice"),
        [(
            "system".to_owned(),
            format!(
                r#"{{"event":"question_answered","id":{},"question":"quick?","answer":"[expired]","answerer":"ttl-watchdog"}}"#,
                q.id
            )
        )]
    );
    assert_eq!(store.next_question_deadline().unwrap(), None);
    assert!(store.expire_questions(deadline + 1000).unwrap().is_empty());
    assert_eq!(
        refused(store.answer_question(q.id, "bob", "late")),
        format!("question {} already expired", q.id)
    );
}

#[test]
fn cancel() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let q = store
        .ask("alice", None, "pick one", &[], false, Some(600))
        .unwrap();
    assert_eq!(
        refused(store.cancel_question(q.id, "bob")),
        format!(
            "question {} was asked by alice; bob may not cancel it",
            q.id
        )
    );
    let cancelled = store.cancel_question(q.id, "alice").unwrap();
    assert_eq!(cancelled.answer.as_deref(), Some(ANSWER_CANCELLED));
    assert_eq!(cancelled.answerer.as_deref(), Some("alice"));
    assert!(cancelled.cancelled);
    // Withdrawing your own question does not wake you with an event.
    assert!(inbox(&store, "alice").is_empty());
    assert_eq!(store.next_question_deadline().unwrap(), None);
    assert_eq!(
        refused(store.cancel_question(q.id, "operator")),
        format!("question {} was already cancelled by alice", q.id)
    );

    let q = store
        .ask("alice", Some(&to("bob")), "still there?", &[], false, None)
        .unwrap();
    store.cancel_question(q.id, "operator").unwrap();
    assert_eq!(
        inbox(&store, "alice"),
        [(
            "system".to_owned(),
            format!(
                r#"{{"event":"question_answered","id":{},"question":"still there?","answer":"[cancelled]","answerer":"operator"}}"#,
                q.id
            )
        )]
    );
    assert_eq!(
        refused(store.answer_question(q.id, "bob", "yes")),
        format!("question {} was already cancelled by operator", q.id)
    );
}
