//! Reminders: exactly-once delivery, limits, failures, backoff, parking,
//! retry and cancel.

use hive_proto::AgentName;
use hive_store::{Error, MAX_REMINDER_ATTEMPTS, ReminderOutcome, now_millis};

use crate::{agent, inbox, store_with};

#[test]
fn delivery_creates_exactly_one_message() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let now = now_millis();
    let due = store
        .remind("alice", None, "check CI", now - 1, Some("/state/notes.md"))
        .unwrap();
    let later = store
        .remind(
            "alice",
            Some(&agent("bob")),
            "standup",
            now + 3_600_000,
            None,
        )
        .unwrap();
    assert_eq!(store.pending_reminder_count("alice").unwrap(), 2);
    assert_eq!(store.next_reminder_due().unwrap(), Some(now - 1));

    let outcomes = store.deliver_due_reminders(now).unwrap();
    assert_eq!(outcomes.len(), 1);
    let ReminderOutcome::Delivered {
        reminder,
        message_id,
    } = &outcomes[0]
    else {
        panic!("expected a delivery, got {outcomes:?}")
    };
    assert_eq!((reminder.id, reminder.delivered_ms), (due.id, Some(now)));
    let body = format!(
        "reminder #{} from alice: check CI\n(file: /state/notes.md)",
        due.id
    );
    assert_eq!(
        inbox(&store, "alice"),
        [("system".to_owned(), body.clone())]
    );
    let got = store.recv_batch("alice", 32).unwrap();
    assert_eq!((got[0].id, &got[0].body), (*message_id, &body));

    assert!(store.deliver_due_reminders(now).unwrap().is_empty());
    assert_eq!(inbox(&store, "alice").len(), 1);
    assert_eq!(
        store.pending_reminders(Some("alice")).unwrap(),
        std::slice::from_ref(&later)
    );
    assert_eq!(store.next_reminder_due().unwrap(), Some(now + 3_600_000));

    // To another agent, no file.
    store.deliver_due_reminders(now + 3_600_000).unwrap();
    assert_eq!(
        inbox(&store, "bob"),
        [(
            "system".to_owned(),
            format!("reminder #{} from alice: standup", later.id)
        )]
    );
    assert_eq!(store.pending_reminder_count("alice").unwrap(), 0);
    assert_eq!(store.next_reminder_due().unwrap(), None);
}

#[test]
fn at_most_fifty_pending_per_owner() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let due = now_millis() + 3_600_000;
    for i in 0..50 {
        store
            .remind("alice", None, &format!("r{i}"), due, None)
            .unwrap();
    }
    let err = store
        .remind("alice", None, "one too many", due, None)
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)));
    assert_eq!(
        err.to_string(),
        "alice already has 50 pending reminders, the most allowed: cancel one first"
    );
    // Other owners are unaffected.
    store.remind("bob", None, "mine", due, None).unwrap();
    assert_eq!(store.pending_reminder_count("alice").unwrap(), 50);
}

#[test]
fn refuses_bad_targets() {
    let (_dir, store) = store_with(&["alice"]);
    let due = now_millis();
    assert!(matches!(
        store.remind("alice", Some(&agent("ghost")), "x", due, None),
        Err(Error::UnknownAgent(name)) if name == "ghost"
    ));
    // Only an agent can be woken: `operator` or `*` is not an AgentName.
    assert!(AgentName::parse("operator").is_err());
    assert!(matches!(
        store.remind("alice", None, " ", due, None),
        Err(Error::Refused(_))
    ));
    store.set_allowed_recipients("alice", Some(&[])).unwrap();
    store
        .register_agent(&AgentName::parse("bob").unwrap())
        .unwrap();
    assert!(matches!(
        store.remind("alice", Some(&agent("bob")), "x", due, None),
        Err(Error::NotAllowed { .. })
    ));
}

#[test]
fn failures_back_off_then_park_and_retry_recovers() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let r = store
        .remind("alice", Some(&agent("bob")), "ping bob", 0, None)
        .unwrap();
    store.forget_agent("bob").unwrap();

    let mut now = now_millis();
    let mut expected_due = Vec::new();
    for attempt in 1..=MAX_REMINDER_ATTEMPTS {
        let outcomes = store.deliver_due_reminders(now).unwrap();
        assert_eq!(outcomes.len(), 1, "attempt {attempt}");
        let ReminderOutcome::Failed { reminder, error } = &outcomes[0] else {
            panic!("expected a failure, got {outcomes:?}")
        };
        assert_eq!(error, "unknown agent \"bob\"");
        assert_eq!(reminder.last_error.as_deref(), Some(error.as_str()));
        assert_eq!(reminder.attempts, attempt);
        assert_eq!(reminder.delivered_ms, None);
        if attempt < MAX_REMINDER_ATTEMPTS {
            assert!(!reminder.parked);
            assert_eq!(reminder.due_ms, now + 30_000 * (1 << (attempt - 1)));
            // Not tried again before its backoff.
            assert!(
                store
                    .deliver_due_reminders(reminder.due_ms - 1)
                    .unwrap()
                    .is_empty()
            );
            expected_due.push(reminder.due_ms - now);
            now = reminder.due_ms;
        } else {
            assert!(reminder.parked);
        }
    }
    assert_eq!(expected_due, [30_000, 60_000, 120_000, 240_000]);
    assert_eq!(store.next_reminder_due().unwrap(), None);
    assert!(
        store
            .deliver_due_reminders(now + 1_000_000_000)
            .unwrap()
            .is_empty()
    );
    // Parked reminders are still pending loose ends of their owner.
    let pending = store.pending_reminders(Some("alice")).unwrap();
    assert_eq!((pending.len(), pending[0].parked), (1, true));
    assert!(inbox(&store, "bob").is_empty());

    store
        .register_agent(&AgentName::parse("bob").unwrap())
        .unwrap();
    let retried = store.retry_reminder(r.id).unwrap();
    assert_eq!(
        (retried.parked, retried.attempts),
        (false, MAX_REMINDER_ATTEMPTS)
    );
    assert!(retried.due_ms <= now_millis());
    let outcomes = store.deliver_due_reminders(now_millis()).unwrap();
    assert!(matches!(&outcomes[..], [ReminderOutcome::Delivered { .. }]));
    assert_eq!(inbox(&store, "bob").len(), 1);
    assert_eq!(
        store.retry_reminder(r.id).unwrap_err().to_string(),
        format!("reminder {} was already delivered", r.id)
    );
}

#[test]
fn cancel() {
    let (_dir, store) = store_with(&["alice", "bob", "manager"]);
    let due = now_millis() + 60_000;
    let r = store.remind("alice", None, "x", due, None).unwrap();
    let err = store.cancel_reminder(r.id, "bob").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("reminder {} belongs to alice; bob may not cancel it", r.id)
    );
    store.cancel_reminder(r.id, "alice").unwrap();
    assert!(matches!(
        store.cancel_reminder(r.id, "alice"),
        Err(Error::NotFound {
            what: "reminder",
            ..
        })
    ));
    for by in ["manager", "operator"] {
        let r = store.remind("alice", None, "x", due, None).unwrap();
        store.cancel_reminder(r.id, by).unwrap();
    }
    assert_eq!(store.pending_reminder_count("alice").unwrap(), 0);
    assert!(store.deliver_due_reminders(due).unwrap().is_empty());
}

#[test]
fn due_times_keep_their_milliseconds() {
    let (_dir, store) = store_with(&["alice"]);
    let due = now_millis() + 1_500;
    let r = store.remind("alice", None, "x", due, None).unwrap();
    assert_eq!(r.due_ms, due);
    // The wire's whole-second `due_at` rounds up, never down.
    assert_eq!(r.due_at(), due / 1000 + i64::from(due % 1000 != 0));
    assert_eq!(store.next_reminder_due().unwrap(), Some(due));
    // One millisecond short of due is early: nothing fires.
    assert!(store.deliver_due_reminders(due - 1).unwrap().is_empty());
    let outcomes = store.deliver_due_reminders(due).unwrap();
    let [ReminderOutcome::Delivered { reminder, .. }] = &outcomes[..] else {
        panic!("expected one delivery, got {outcomes:?}")
    };
    assert_eq!(reminder.delivered_ms, Some(due));
}
