//! The broker: FIFO, batches, leases, long-poll, broadcast, allow-lists,
//! limits, threads and retention.

use std::time::Duration;

use hive_proto::{HelperEvent, MAX_BODY_BYTES, Recipient};
use hive_store::{Error, MessageEvent, Store, now_unix};

use crate::{column, inbox, raw, store_with, to};

/// `recv_wait` without a lease period, as the original's `recv`.
trait RecvMessages {
    async fn recv_wait_messages(
        &self,
        to: &str,
        wait: Duration,
        max: u32,
    ) -> hive_store::Result<Vec<hive_proto::DeliveredMessage>>;
}

impl RecvMessages for Store {
    async fn recv_wait_messages(
        &self,
        to: &str,
        wait: Duration,
        max: u32,
    ) -> hive_store::Result<Vec<hive_proto::DeliveredMessage>> {
        Ok(self.recv_wait(to, wait, max, None).await?.messages)
    }
}

fn bodies(msgs: &[hive_proto::DeliveredMessage]) -> Vec<&str> {
    msgs.iter().map(|m| m.body.as_str()).collect()
}

#[test]
fn fifo() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let ids: Vec<i64> = ["one", "two", "three"]
        .iter()
        .map(|b| store.send("alice", &to("bob"), b, None).unwrap()[0])
        .collect();
    assert_eq!(store.unread("bob").unwrap(), 3);
    let got = store.recv_batch("bob", 32).unwrap();
    assert_eq!(bodies(&got), ["one", "two", "three"]);
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    let first = &got[0];
    assert_eq!((first.from.as_str(), first.to.as_str()), ("alice", "bob"));
    assert!(!first.redelivered);
    assert_eq!(first.in_reply_to, None);
    assert!(store.recv_batch("bob", 32).unwrap().is_empty());
}

#[test]
fn batch_limits() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    for i in 0..40 {
        store
            .send("alice", &to("bob"), &format!("m{i}"), None)
            .unwrap();
    }
    let one = store.recv_batch("bob", 0).unwrap();
    assert_eq!(bodies(&one), ["m0"]);
    let capped = store.recv_batch("bob", 1000).unwrap();
    assert_eq!(capped.len(), 32);
    assert_eq!(
        (capped[0].body.as_str(), capped[31].body.as_str()),
        ("m1", "m32")
    );
    let rest = store.recv_batch("bob", 32).unwrap();
    assert_eq!(rest.len(), 7);
    assert_eq!(rest[6].body, "m39");
}

#[test]
fn lease_and_recovery_after_a_dead_harness() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    for body in ["a", "b", "c"] {
        store.send("alice", &to("bob"), body, None).unwrap();
    }
    let popped = store.recv_batch("bob", 2).unwrap();
    assert_eq!(bodies(&popped), ["a", "b"]);
    assert_eq!(
        (store.unread("bob").unwrap(), store.inflight("bob").unwrap()),
        (1, 2)
    );

    // The harness dies mid-turn; its next boot requeues.
    assert_eq!(store.requeue_inflight("bob").unwrap(), 2);
    let again = store.recv_batch("bob", 32).unwrap();
    assert_eq!(bodies(&again), ["a", "b", "c"]);
    assert_eq!(
        again.iter().map(|m| m.redelivered).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(
        again.iter().map(|m| m.id).take(2).collect::<Vec<_>>(),
        popped.iter().map(|m| m.id).collect::<Vec<_>>()
    );

    assert_eq!(store.ack_turn("bob").unwrap(), 3);
    assert_eq!(
        (store.unread("bob").unwrap(), store.inflight("bob").unwrap()),
        (0, 0)
    );
    assert_eq!(store.requeue_inflight("bob").unwrap(), 0);
    assert!(store.recv_batch("bob", 32).unwrap().is_empty());
    assert_eq!(store.ack_turn("bob").unwrap(), 0);
}

/// Rows in flight live in memory. A daemon that stops cleanly writes how
/// each comes back (held: flagged; handed to nobody who read it:
/// unflagged); the next start hands them out so, and a pending row never
/// popped comes unflagged.
#[test]
fn a_clean_restart_redelivers_what_was_in_flight_as_a_harness_restart_would() {
    let (dir, store) = store_with(&["alice", "bob"]);
    assert_eq!(store.recover_broker().unwrap(), 0);
    for body in ["held", "unheld", "pending"] {
        store.send("alice", &to("bob"), body, None).unwrap();
    }
    store.recv_batch("bob", 1).unwrap();
    store.pop("bob", 1, Some(Duration::from_secs(60))).unwrap();
    store.stop_broker().unwrap();
    // Stopped: nothing more goes out, no lease is named.
    assert!(store.recv_batch("bob", 1).is_err());
    drop(store);

    let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
    assert_eq!(store.recover_broker().unwrap(), 0);
    assert_eq!(
        (store.unread("bob").unwrap(), store.inflight("bob").unwrap()),
        (3, 0)
    );
    let back = store.recv_batch("bob", 32).unwrap();
    assert_eq!(
        back.iter()
            .map(|m| (m.body.as_str(), m.redelivered))
            .collect::<Vec<_>>(),
        [("held", true), ("unheld", false), ("pending", false)]
    );
}

/// A daemon that dies (no clean stop) leaves no record of what was in
/// flight: at the next start every unacked row comes again flagged
/// `redelivered` (a turn may have acted on any of them), acked ones never.
#[test]
fn after_a_crash_every_unacked_row_comes_again_flagged() {
    let (dir, store) = store_with(&["alice", "bob"]);
    assert_eq!(store.recover_broker().unwrap(), 0);
    for body in ["acked", "in flight", "pending"] {
        store.send("alice", &to("bob"), body, None).unwrap();
    }
    store.recv_batch("bob", 1).unwrap();
    store.ack_turn("bob").unwrap();
    store.recv_batch("bob", 1).unwrap();
    drop(store);

    let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
    assert_eq!(store.recover_broker().unwrap(), 2);
    let back = store.recv_batch("bob", 32).unwrap();
    assert_eq!(
        back.iter()
            .map(|m| (m.body.as_str(), m.redelivered))
            .collect::<Vec<_>>(),
        [("in flight", true), ("pending", true)]
    );
    store.ack_turn("bob").unwrap();
    // This daemon stops cleanly: the next start flags nothing.
    store.stop_broker().unwrap();
    drop(store);
    let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
    assert_eq!(store.recover_broker().unwrap(), 0);
    assert!(store.recv_batch("bob", 32).unwrap().is_empty());
}

#[test]
fn recipients_are_isolated() {
    let (_dir, store) = store_with(&["alice", "bob", "carol"]);
    store.send("alice", &to("bob"), "for bob", None).unwrap();
    store
        .send("alice", &to("carol"), "for carol", None)
        .unwrap();
    assert_eq!(bodies(&store.recv_batch("bob", 32).unwrap()), ["for bob"]);
    assert_eq!(store.unread("carol").unwrap(), 1);
    assert_eq!(
        bodies(&store.recv_batch("carol", 32).unwrap()),
        ["for carol"]
    );

    assert_eq!(store.ack_turn("bob").unwrap(), 1);
    assert_eq!(store.inflight("carol").unwrap(), 1);
    assert_eq!(store.requeue_inflight("bob").unwrap(), 0);
    assert_eq!(store.requeue_inflight("carol").unwrap(), 1);
    assert_eq!(store.unread("bob").unwrap(), 0);
    assert_eq!(store.unread("carol").unwrap(), 1);
}

#[test]
fn vacuum_removes_only_old_acked_rows() {
    let (dir, store) = store_with(&["alice", "bob"]);
    let mut ids = Vec::new();
    for body in ["old acked", "new acked", "old in flight", "old pending"] {
        ids.push(store.send("alice", &to("bob"), body, None).unwrap()[0]);
    }
    store.recv_batch("bob", 2).unwrap();
    store.ack_turn("bob").unwrap();
    store.recv_batch("bob", 1).unwrap();

    let long_ago = now_unix() - 40 * 86_400;
    let conn = raw(&dir);
    conn.execute(
        "UPDATE messages SET sent_at = ?1, delivered_at = ?1, acked_at = ?1 WHERE id = ?2",
        (long_ago, ids[0]),
    )
    .unwrap();
    conn.execute(
        "UPDATE messages SET sent_at = ?1 WHERE id = ?2",
        (long_ago, ids[2]),
    )
    .unwrap();
    conn.execute(
        "UPDATE messages SET sent_at = ?1 WHERE id = ?2",
        (long_ago, ids[3]),
    )
    .unwrap();

    assert_eq!(
        store
            .vacuum_acked(Duration::from_secs(30 * 86_400))
            .unwrap(),
        1
    );
    let left: Vec<i64> = store
        .recent("bob", 10)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .rev()
        .collect();
    assert_eq!(left, &ids[1..]);
    assert_eq!(
        store
            .vacuum_acked(Duration::from_secs(30 * 86_400))
            .unwrap(),
        0
    );
    // The in-flight and pending rows are still recoverable.
    assert_eq!(store.requeue_inflight("bob").unwrap(), 1);
    assert_eq!(
        bodies(&store.recv_batch("bob", 32).unwrap()),
        ["old in flight", "old pending"]
    );
}

#[test]
fn vacuum_never_reuses_ids() {
    let (dir, store) = store_with(&["alice", "bob"]);
    let first = store.send("alice", &to("bob"), "1", None).unwrap()[0];
    let newest = store.send("alice", &to("bob"), "2", None).unwrap()[0];
    store.mark_all_read("bob").unwrap();
    raw(&dir)
        .execute("UPDATE messages SET sent_at = 0, acked_at = 0", [])
        .unwrap();
    // Everything is old and acked, but the newest row stays as the id mark.
    assert_eq!(store.vacuum_acked(Duration::from_secs(60)).unwrap(), 1);
    assert_eq!(
        store
            .recent("bob", 10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [newest]
    );
    let next = store.send("alice", &to("bob"), "3", None).unwrap()[0];
    assert!(next > newest);
    // A reply to a vacuumed message is still a reply to an issued id.
    store
        .send("bob", &to("alice"), "re: 1", Some(first))
        .unwrap();
}

/// Over many rows sent across the cutoff, with gaps an earlier vacuum
/// left, the vacuum deletes exactly the rows sent and acked before the
/// cutoff (but the newest): what the file holds afterwards is what the
/// rule keeps, whichever ids the bisection probed.
#[test]
fn vacuum_deletes_exactly_the_rows_sent_and_acked_before_the_cutoff() {
    let (dir, store) = store_with(&["alice", "bob"]);
    let ids: Vec<i64> = (0..300)
        .map(|i| {
            store
                .send("alice", &to("bob"), &format!("m{i}"), None)
                .unwrap()[0]
        })
        .collect();
    let popped = store.recv_batch("bob", 32).unwrap();
    assert_eq!(popped.len(), 32);
    store.ack_turn("bob").unwrap();
    let day = 86_400;
    let now = now_unix();
    let conn = raw(&dir);
    let cutoff = now - 30 * day;
    for (i, id) in ids.iter().enumerate() {
        let i = i64::try_from(i).unwrap();
        // Sent a day apart, oldest first, from 300 days back, each half a
        // day off the cutoff (so the vacuum's own clock, read later,
        // draws the same line): rows 0..=270 before it, 271.. after.
        let sent = now - (300 - i) * day - day / 2;
        // Most acked a day after they were sent; every seventh never,
        // every fifth only recently; every eleventh gone already. The
        // last row sent before the cutoff was acked soon after (it
        // goes), and the first sent after it was acked before it, by a
        // clock that ran ahead (it stays: not sent before the cutoff).
        let acked = match i {
            270 => Some(sent + 300),
            271 => Some(cutoff - 300),
            _ if i % 7 == 0 => None,
            _ if i % 5 == 0 => Some(now - day / 2),
            _ => Some(sent + day),
        };
        if i % 11 == 0 {
            conn.execute("DELETE FROM messages WHERE id = ?1", [id])
                .unwrap();
            continue;
        }
        conn.execute(
            "UPDATE messages SET sent_at = ?1, delivered_at = ?2, acked_at = ?2 WHERE id = ?3",
            (sent, acked, id),
        )
        .unwrap();
    }
    let newest: i64 = conn
        .query_row("SELECT MAX(id) FROM messages", [], |r| r.get(0))
        .unwrap();
    let doomed: Vec<i64> = conn
        .prepare(
            "SELECT id FROM messages WHERE acked_at < ?1 AND sent_at < ?1 AND id < ?2
             ORDER BY id",
        )
        .unwrap()
        .query_map((cutoff, newest), |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let kept: Vec<i64> = conn
        .prepare(
            "SELECT id FROM messages WHERE id NOT IN (SELECT value FROM json_each(?1)) ORDER BY id",
        )
        .unwrap()
        .query_map([serde_json::to_string(&doomed).unwrap()], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(doomed.len() > 150, "{} rows to vacuum", doomed.len());
    assert!(doomed.contains(&ids[270]) && !doomed.contains(&ids[271]));
    drop(conn);

    let n = store
        .vacuum_acked(Duration::from_secs(30 * 86_400))
        .unwrap();
    assert_eq!(n, u64::try_from(doomed.len()).unwrap());
    let left: Vec<i64> = column(&raw(&dir), "SELECT id FROM messages ORDER BY id");
    assert_eq!(left, kept);
    assert_eq!(
        store
            .vacuum_acked(Duration::from_secs(30 * 86_400))
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn long_poll_wakes_on_send() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .recv_wait_messages("bob", Duration::from_secs(60), 8)
                .await
        })
    };
    // Let the waiter park first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.send("alice", &to("bob"), "wake up", None).unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(bodies(&got), ["wake up"]);
    assert_eq!(store.inflight("bob").unwrap(), 1);
}

#[tokio::test]
async fn long_poll_drains_up_to_max_once_woken() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    for body in ["1", "2", "3"] {
        store.send("alice", &to("bob"), body, None).unwrap();
    }
    let got = store
        .recv_wait_messages("bob", Duration::from_secs(60), 2)
        .await
        .unwrap();
    assert_eq!(bodies(&got), ["1", "2"]);
}

#[tokio::test]
async fn long_poll_times_out_empty() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    assert!(
        store
            .recv_wait_messages("bob", Duration::from_millis(50), 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .recv_wait_messages("bob", Duration::ZERO, 1)
            .await
            .unwrap()
            .is_empty()
    );
    // A message to someone else does not end bob's wait with anything.
    store
        .send("bob", &to("alice"), "not for bob", None)
        .unwrap();
    assert!(
        store
            .recv_wait_messages("bob", Duration::from_millis(20), 1)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn disconnect_during_long_poll_loses_nothing() {
    let (_dir, store) = store_with(&["alice", "bob"]);

    // The client goes away while waiting: the dropped future popped nothing.
    let gone = tokio::time::timeout(
        Duration::from_millis(20),
        store.recv_wait_messages("bob", Duration::from_secs(60), 1),
    )
    .await;
    assert!(gone.is_err());
    let id = store.send("alice", &to("bob"), "survives", None).unwrap()[0];
    assert_eq!(store.unread("bob").unwrap(), 1);

    // The client goes away after the pop, before the response is written:
    // core undelivers, and a waiting client gets it, not flagged.
    let popped = store
        .recv_wait_messages("bob", Duration::from_secs(60), 1)
        .await
        .unwrap();
    assert_eq!(popped[0].id, id);
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .recv_wait_messages("bob", Duration::from_secs(60), 1)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Only the recipient's own rows: another inbox's name moves nothing.
    assert_eq!(store.undeliver("alice", &[id]).unwrap(), 0);
    assert_eq!(store.undeliver("bob", &[id]).unwrap(), 1);
    let again = waiter.await.unwrap().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].redelivered), (id, false));

    // Acked rows and unknown ids are left alone.
    store.ack_turn("bob").unwrap();
    assert_eq!(store.undeliver("bob", &[id, 424_242]).unwrap(), 0);
    assert_eq!(store.unread("bob").unwrap(), 0);
}

#[test]
fn broadcast_reaches_every_other_agent() {
    let (_dir, store) = store_with(&["alice", "bob", "carol", "manager"]);
    let ids = store.send("alice", &to("*"), "hello all", None).unwrap();
    assert_eq!(ids.len(), 3);
    for to in ["bob", "carol", "manager"] {
        assert_eq!(
            inbox(&store, to),
            [("alice".to_owned(), "hello all".to_owned())]
        );
    }
    assert!(inbox(&store, "alice").is_empty());
    assert!(inbox(&store, "operator").is_empty());

    // With a runtime, a destroyed agent (state kept, no container) is no
    // recipient; without one (no agent has a container), every agent is.
    store.set_has_container("carol", false).unwrap();
    let ids = store.send("alice", &to("*"), "no runtime", None).unwrap();
    assert_eq!(ids.len(), 3);
    store.set_broadcast_needs_container(true);
    let ids = store
        .send("alice", &to("*"), "carol is gone", None)
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(inbox(&store, "carol").len(), 2);
    store.set_has_container("carol", true).unwrap();

    assert_eq!(
        store
            .send("operator", &to("*"), "from the operator", None)
            .unwrap()
            .len(),
        4
    );

    // An allow-listed sender reaches only its list, plus the manager.
    store
        .set_allowed_recipients("alice", Some(&["bob".to_owned()]))
        .unwrap();
    let ids = store.send("alice", &to("*"), "narrow", None).unwrap();
    let to: Vec<String> = ids
        .iter()
        .map(|id| store.message(*id).unwrap().to)
        .collect();
    assert_eq!(to, ["bob", "manager"]);
}

#[test]
fn allow_list_is_enforced_but_manager_and_operator_stay_reachable() {
    let (_dir, store) = store_with(&["alice", "bob", "carol", "manager"]);
    store
        .set_allowed_recipients("alice", Some(&["bob".to_owned()]))
        .unwrap();
    store.send("alice", &to("bob"), "ok", None).unwrap();
    let err = store.send("alice", &to("carol"), "nope", None).unwrap_err();
    assert!(matches!(err, Error::NotAllowed { .. }));
    assert_eq!(
        err.to_string(),
        "alice may not send to carol: not in its allowed recipients"
    );
    store.send("alice", &to("manager"), "always", None).unwrap();
    store
        .send("alice", &to("operator"), "always", None)
        .unwrap();
    // operator and system are not subject to allow-lists; others are unaffected.
    store.set_allowed_recipients("manager", Some(&[])).unwrap();
    store.send("operator", &to("carol"), "hi", None).unwrap();
    store.send("system", &to("carol"), "{}", None).unwrap();
    store.send("bob", &to("carol"), "hi", None).unwrap();
    store
        .send("manager", &to("operator"), "still", None)
        .unwrap();
    assert!(store.send("manager", &to("carol"), "nope", None).is_err());

    let err = store.send("alice", &to("ghost"), "who?", None).unwrap_err();
    assert_eq!(err.to_string(), "unknown agent \"ghost\"");
    // Not a recipient at all: refused before anything reaches the store.
    assert!(Recipient::parse("Bad!").is_err());
    assert!(Recipient::parse("system").is_err());

    store.set_allowed_recipients("alice", None).unwrap();
    store.send("alice", &to("carol"), "now fine", None).unwrap();
}

/// Every send checks its recipient against the registry as it is now,
/// through the writer (`send_batch`) and directly (`send`): a new
/// allow-list, a newly registered agent and a forgotten one each count
/// from the very next send, however recently the old answer was used.
#[test]
fn a_registry_change_reaches_the_very_next_send_on_every_path() {
    let (_dir, store) = store_with(&["alice", "bob", "carol"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let batch = |to_name: &str| {
        let message = hive_proto::OutgoingMessage {
            to: to(to_name),
            body: "hi".into(),
            in_reply_to: None,
        };
        rt.block_on(store.send_batch("alice", vec![message]))
    };
    batch("carol").unwrap();
    store.send("alice", &to("carol"), "hi", None).unwrap();
    store
        .set_allowed_recipients("alice", Some(&["bob".to_owned()]))
        .unwrap();
    assert!(matches!(batch("carol"), Err(Error::NotAllowed { .. })));
    assert!(matches!(
        store.send("alice", &to("carol"), "hi", None),
        Err(Error::NotAllowed { .. })
    ));
    batch("bob").unwrap();
    assert!(matches!(batch("dave"), Err(Error::UnknownAgent(_))));
    store
        .register_agent(&hive_proto::AgentName::parse("dave").unwrap())
        .unwrap();
    assert!(matches!(batch("dave"), Err(Error::NotAllowed { .. })));
    store.set_allowed_recipients("alice", None).unwrap();
    batch("dave").unwrap();
    batch("carol").unwrap();
    store.forget_agent("carol").unwrap();
    assert!(matches!(batch("carol"), Err(Error::UnknownAgent(_))));
    assert!(matches!(
        store.send("alice", &to("carol"), "hi", None),
        Err(Error::UnknownAgent(_))
    ));
}

#[test]
fn body_limit_is_64_kib() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let at_limit = "x".repeat(MAX_BODY_BYTES);
    assert_eq!(at_limit.len(), 65_536);
    store.send("alice", &to("bob"), &at_limit, None).unwrap();
    assert_eq!(store.recv_batch("bob", 1).unwrap()[0].body.len(), 65_536);

    let over = "x".repeat(MAX_BODY_BYTES + 1);
    let err = store.send("alice", &to("bob"), &over, None).unwrap_err();
    assert!(matches!(
        err,
        Error::BodyTooLarge {
            len: 65_537,
            max: 65_536
        }
    ));
    assert_eq!(
        err.to_string(),
        "message body is 65537 bytes, over the 65536-byte limit: write the content to a file \
         under /shared or /state and send its path instead"
    );
    assert_eq!(store.unread("bob").unwrap(), 0);
}

#[test]
fn replies_thread_with_in_reply_to() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let question = store.send("alice", &to("bob"), "lunch?", None).unwrap()[0];
    let reply = store
        .send("bob", &to("alice"), "yes", Some(question))
        .unwrap()[0];
    let got = store.recv_batch("alice", 1).unwrap();
    assert_eq!((got[0].id, got[0].in_reply_to), (reply, Some(question)));
    assert_eq!(store.message(reply).unwrap().in_reply_to, Some(question));

    let err = store
        .send("bob", &to("alice"), "to nothing", Some(9_999))
        .unwrap_err();
    assert_eq!(err.to_string(), "no message with id 9999");
}

#[test]
fn mark_all_read_finishes_pending_and_in_flight() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    for body in ["1", "2", "3"] {
        store.send("alice", &to("bob"), body, None).unwrap();
    }
    store.recv_batch("bob", 1).unwrap();
    assert_eq!(store.mark_all_read("bob").unwrap(), 3);
    assert_eq!(
        (store.unread("bob").unwrap(), store.inflight("bob").unwrap()),
        (0, 0)
    );
    assert_eq!(store.requeue_inflight("bob").unwrap(), 0);
    assert_eq!(store.recent("bob", 10).unwrap().len(), 3);
    assert_eq!(store.mark_all_read("bob").unwrap(), 0);
}

#[test]
fn recent_is_newest_first_and_non_mutating() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    for body in ["1", "2", "3"] {
        store.send("alice", &to("bob"), body, None).unwrap();
    }
    let rows = store.recent("bob", 2).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
        ["3", "2"]
    );
    assert_eq!(rows[0].from, "alice");
    assert_eq!(store.unread("bob").unwrap(), 3);
}

/// The flow is published while someone watches it, batched sends with
/// their bodies; with nobody watching, a subscriber hears nothing.
#[tokio::test]
async fn events_follow_sends_and_deliveries_while_watched() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    let mut events = store.subscribe();
    store.send("alice", &to("bob"), "unwatched", None).unwrap();
    store.recv_batch("bob", 1).unwrap();
    assert!(events.try_recv().is_err(), "published with nobody watching");
    let watch = store.watch_flow();
    store.register_agent(&crate::agent("carol")).unwrap();
    let batch =
        [("bob", "batched"), ("*", "to all")].map(|(to_whom, body)| hive_proto::OutgoingMessage {
            to: to(to_whom),
            body: body.into(),
            in_reply_to: None,
        });
    let ids = store.send_batch("alice", batch.to_vec()).await.unwrap();
    let sent: Vec<(i64, String, String)> = (0..3)
        .map(|_| match events.try_recv().unwrap() {
            MessageEvent::Sent(r) => (r.id, r.to, r.body),
            other => panic!("expected sent, got {other:?}"),
        })
        .collect();
    assert_eq!(
        sent,
        [
            (ids[0], "bob".into(), "batched".into()),
            (ids[1], "bob".into(), "to all".into()),
            (ids[2], "carol".into(), "to all".into()),
        ],
        "each row of a batch published with its own message's body"
    );
    let batched = ids[0];
    store.recv_batch("bob", 1).unwrap();
    assert!(
        matches!(events.try_recv().unwrap(), MessageEvent::Delivered(r) if r.id == batched && r.body == "batched")
    );
    store.recv_batch("bob", 1).unwrap();
    assert!(
        matches!(events.try_recv().unwrap(), MessageEvent::Delivered(r) if r.id == ids[1] && r.body == "to all")
    );
    let id = store.send("alice", &to("bob"), "hi", None).unwrap()[0];
    store.recv_batch("bob", 1).unwrap();
    let sent = events.try_recv().unwrap();
    let MessageEvent::Sent(row) = sent else {
        panic!("expected sent, got {sent:?}")
    };
    assert_eq!(
        (
            row.id,
            row.from.as_str(),
            row.to.as_str(),
            row.body.as_str()
        ),
        (id, "alice", "bob", "hi")
    );
    assert!(matches!(events.try_recv().unwrap(), MessageEvent::Delivered(r) if r.id == id));
    assert!(events.try_recv().is_err());
    drop(watch);
    store
        .send("alice", &to("bob"), "unwatched again", None)
        .unwrap();
    assert!(
        events.try_recv().is_err(),
        "published after the watch ended"
    );
}

#[test]
fn helper_events_arrive_from_system_as_json() {
    let (_dir, store) = store_with(&["manager"]);
    let event = HelperEvent::Killed {
        agent: "coder".to_owned(),
    };
    let id = store.push_helper_event("manager", &event).unwrap();
    let got = store.recv_batch("manager", 1).unwrap();
    assert_eq!((got[0].id, got[0].from.as_str()), (id, "system"));
    assert_eq!(got[0].body, r#"{"event":"killed","agent":"coder"}"#);
    let err = store.push_helper_event("ghost", &event).unwrap_err();
    assert_eq!(err.to_string(), "unknown agent \"ghost\"");
}

#[test]
fn forgotten_agents_keep_their_messages_but_receive_no_more() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    store.send("alice", &to("bob"), "before", None).unwrap();
    store.forget_agent("bob").unwrap();
    assert_eq!(store.unread("bob").unwrap(), 1);
    assert!(matches!(
        store.send("alice", &to("bob"), "after", None),
        Err(Error::UnknownAgent(_))
    ));
}

/// Many concurrent `send_batch`es share the writer's transactions; a
/// refused one rolls back alone, every other one is stored whole, and
/// each caller's ids are its own rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_commit_together_and_fail_alone() {
    let (dir, store) = store_with(&["alice", "bob", "carol"]);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let last = if i == 13 { "nobody" } else { "bob" };
                let batch: Vec<hive_proto::OutgoingMessage> = (0..4)
                    .map(|j| hive_proto::OutgoingMessage {
                        to: crate::to(if j == 3 { last } else { "carol" }),
                        body: format!("{i}-{j}"),
                        in_reply_to: None,
                    })
                    .collect();
                (i, store.send_batch("alice", batch.clone()).await)
            })
        })
        .collect();
    let mut stored = 0;
    for task in tasks {
        let (i, result) = task.await.unwrap();
        match result {
            Ok(ids) => {
                assert_eq!(ids.len(), 4);
                for (j, id) in ids.iter().enumerate() {
                    assert_eq!(store.message(*id).unwrap().body, format!("{i}-{j}"));
                }
                stored += 4;
            }
            Err(e) => {
                assert_eq!(i, 13);
                assert!(
                    matches!(e, Error::UnknownAgent(ref n) if n == "nobody"),
                    "{e}"
                );
            }
        }
    }
    assert_eq!(stored, 63 * 4);
    let count: i64 = raw(&dir)
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 63 * 4);
    assert!(
        inbox(&store, "carol")
            .iter()
            .all(|(_, b)| !b.starts_with("13-"))
    );
}

/// A batch longer than one `INSERT` statement (chunks of 32, 8, 2, 1)
/// is stored whole and in order, `*` expanded in place, each id its
/// row's; a batch refused at its last message stores nothing.
#[tokio::test]
async fn long_batches_are_stored_in_order_and_refused_ones_leave_nothing() {
    let (dir, store) = store_with(&["alice", "bob", "carol"]);
    let message = |name: &str, body: String| hive_proto::OutgoingMessage {
        to: to(name),
        body,
        in_reply_to: None,
    };
    let batch: Vec<_> = (0..45)
        .map(|i| match i {
            20 => message("*", format!("m{i}")),
            _ if i % 3 == 0 => message("carol", format!("m{i}")),
            _ => message("bob", format!("m{i}")),
        })
        .collect();
    let ids = store.send_batch("alice", batch.clone()).await.unwrap();
    assert_eq!(ids.len(), 46);
    let stored: Vec<(String, String)> = ids
        .iter()
        .map(|id| {
            let row = store.message(*id).unwrap();
            (row.to, row.body)
        })
        .collect();
    let mut expected = Vec::new();
    for (i, m) in batch.iter().enumerate() {
        match m.to.as_str() {
            "*" => {
                expected.push(("bob".to_owned(), format!("m{i}")));
                expected.push(("carol".to_owned(), format!("m{i}")));
            }
            to => expected.push((to.to_owned(), format!("m{i}"))),
        }
    }
    assert_eq!(stored, expected);

    let mut refused = batch.clone();
    refused.push(message("nobody", "last".into()));
    let err = store
        .send_batch("alice", refused.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownAgent(ref n) if n == "nobody"),
        "{err}"
    );
    let count: i64 = raw(&dir)
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 46);
    // The next send takes the next id, as if the refused batch never was.
    let next = store.send("alice", &to("bob"), "after", None).unwrap();
    assert_eq!(next, [ids[45] + 1]);
}

/// A message of a batch may answer one stored before it in the same batch
/// (its id is the next one), never one after it.
#[tokio::test]
async fn a_batch_may_answer_its_own_earlier_messages() {
    let (_dir, store) = store_with(&["alice", "bob", "carol"]);
    let first = store.send("alice", &to("bob"), "before", None).unwrap()[0];
    let message = |name: &str, in_reply_to: i64| hive_proto::OutgoingMessage {
        to: to(name),
        body: format!("re {in_reply_to}"),
        in_reply_to: Some(in_reply_to),
    };
    // `*` stores two rows (bob, carol): the third message may answer
    // either, the fourth not the row after it.
    let ids = store
        .send_batch(
            "alice",
            vec![
                message("bob", first),
                message("*", first + 1),
                message("carol", first + 3),
            ],
        )
        .await
        .unwrap();
    assert_eq!(ids, (first + 1..=first + 4).collect::<Vec<_>>());
    let err = store
        .send_batch(
            "alice",
            vec![message("bob", first + 4), message("bob", first + 6)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { id, .. } if id == first + 6),
        "{err}"
    );
}

#[test]
fn exact_leases_are_acked_released_and_expired_as_named() {
    let (_dir, store) = store_with(&["alice", "bob"]);
    for b in ["a", "b", "c"] {
        store.send("alice", &to("bob"), b, None).unwrap();
    }
    let lease_for = Some(Duration::from_secs(60));
    let first = store.pop("bob", 1, lease_for).unwrap();
    let second = store.pop("bob", 1, lease_for).unwrap();
    let (l1, l2) = (first.lease.unwrap(), second.lease.unwrap());
    assert!(l2 > l1);
    // Unnamed: the original's ack_turn does not ack it, a release returns it.
    assert_eq!(store.ack_turn("bob").unwrap(), 0);
    assert_eq!(store.release_lease(l1).unwrap(), 1);
    // Named: held, so a release leaves it; an expiry returns it flagged.
    store.renew_lease("bob", l2).unwrap();
    assert_eq!(store.release_lease(l2).unwrap(), 0);
    assert_eq!(store.expire_leases(now_unix() * 1000).unwrap(), 0);
    assert!(store.next_lease_expiry().unwrap().is_some());
    assert_eq!(store.expire_leases(i64::MAX).unwrap(), 1);
    assert!(store.renew_lease("bob", l2).is_err());
    let back = store.pop("bob", 32, lease_for).unwrap();
    assert_eq!(
        back.messages
            .iter()
            .map(|m| (m.body.as_str(), m.redelivered))
            .collect::<Vec<_>>(),
        [("a", false), ("b", true), ("c", false)]
    );
    // Someone else's lease acks nothing; bob's acks it.
    assert_eq!(store.ack("alice", &[], back.lease).unwrap(), 0);
    assert_eq!(store.ack("bob", &[], back.lease).unwrap(), 3);
    assert_eq!(store.inflight("bob").unwrap(), 0);
}

/// Only sends and acks write the file: a pop, naming a lease, releasing,
/// expiring, undelivering and requeueing leave it as it was (another
/// connection's `data_version` does not move), and the ack does.
#[test]
fn a_pop_and_every_lease_step_write_nothing() {
    let (dir, store) = store_with(&["alice", "bob"]);
    for b in ["a", "b", "c", "d"] {
        store.send("alice", &to("bob"), b, None).unwrap();
    }
    let conn = raw(&dir);
    let version = || -> i64 {
        conn.query_row("PRAGMA data_version", [], |r| r.get(0))
            .unwrap()
    };
    let before = version();
    let lease_for = Some(Duration::from_secs(60));
    let first = store.pop("bob", 1, lease_for).unwrap();
    store.release_lease(first.lease.unwrap()).unwrap();
    let second = store.pop("bob", 2, lease_for).unwrap();
    store.renew_lease("bob", second.lease.unwrap()).unwrap();
    store.expire_leases(i64::MAX).unwrap();
    let third = store.recv_batch("bob", 1).unwrap();
    store.undeliver("bob", &[third[0].id]).unwrap();
    store.recv_batch("bob", 4).unwrap();
    store.requeue_inflight("bob").unwrap();
    assert_eq!(store.unread("bob").unwrap(), 4);
    let last = store.pop("bob", 4, lease_for).unwrap();
    assert_eq!(
        version(),
        before,
        "a broker step other than ack wrote the file"
    );
    assert_eq!(store.ack("bob", &[], last.lease).unwrap(), 4);
    assert_ne!(version(), before);
}

/// An inbox is read from the file when first needed: after a restart its
/// unacked rows, wherever they sit among acked ones, are counted unread and
/// delivered oldest first, and an ack by ids takes exactly the rows named.
#[test]
fn an_inbox_read_after_a_restart_skips_rows_acked_among_its_own() {
    let (dir, store) = store_with(&["alice", "bob"]);
    store.recover_broker().unwrap();
    let mut ids = Vec::new();
    for b in ["1", "2", "3", "4", "5"] {
        ids.push(store.send("alice", &to("bob"), b, None).unwrap()[0]);
        store.send("bob", &to("alice"), b, None).unwrap();
    }
    store.recv_batch("bob", 3).unwrap();
    assert_eq!(store.ack("bob", &[ids[1]], None).unwrap(), 1);
    store.recv_batch("bob", 1).unwrap();
    assert_eq!(store.ack("bob", &[ids[3]], None).unwrap(), 1);
    assert_eq!(store.unread("bob").unwrap(), 1);
    drop(store);

    let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
    assert_eq!(store.recover_broker().unwrap(), 8);
    assert_eq!(store.unread("bob").unwrap(), 3);
    let back = store.recv_batch("bob", 32).unwrap();
    assert_eq!(bodies(&back), ["1", "3", "5"]);
    assert_eq!(store.unread("bob").unwrap(), 0);
    // Acking 1 and 5 leaves 3 in flight.
    assert_eq!(store.ack("bob", &[ids[0], ids[4]], None).unwrap(), 2);
    assert_eq!(store.inflight("bob").unwrap(), 1);
    assert_eq!(store.requeue_inflight("bob").unwrap(), 1);
    assert_eq!(store.unread("bob").unwrap(), 1);
    assert_eq!(bodies(&store.recv_batch("bob", 32).unwrap()), ["3"]);
    // Marking all read forgets the inbox; it is read again, empty.
    store.send("alice", &to("bob"), "6", None).unwrap();
    assert_eq!(store.mark_all_read("bob").unwrap(), 2);
    assert_eq!(store.unread("bob").unwrap(), 0);
    store.send("alice", &to("bob"), "7", None).unwrap();
    assert_eq!(store.unread("bob").unwrap(), 1);
    assert_eq!(bodies(&store.recv_batch("bob", 32).unwrap()), ["7"]);
    assert_eq!(store.unread("alice").unwrap(), 5);
}

/// The unread count is kept in memory: after any mix of sends (single,
/// batched, broadcast, helper events, answered questions), pops with and
/// without leases, acks, put-backs, expiries, requeues and mark-all-read —
/// and sends racing pops from other threads — each inbox's count is what
/// the file says: its unacked rows less those in flight. And every row a
/// pop hands out (from memory or from the file) is the file's row as it was
/// sent, unacked, its recipient's, oldest first.
#[test]
fn the_unread_count_agrees_with_the_file_after_any_mix_of_steps() {
    let names = ["alice", "bob", "carol"];
    let (dir, store) = store_with(&names);
    let conn = raw(&dir);
    let check_popped = |who: &str, popped: &[hive_proto::DeliveredMessage]| {
        let checker = raw(&dir);
        for (k, m) in popped.iter().enumerate() {
            let row: (String, String, String, i64, Option<i64>, Option<i64>) = checker
                .query_row(
                    "SELECT sender, recipient, body, sent_at, in_reply_to, delivered_at
                     FROM messages WHERE id = ?1",
                    [m.id],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                        ))
                    },
                )
                .unwrap();
            let (from, to, body, at, in_reply_to, delivered_at) = row;
            assert_eq!(
                (&m.from, &m.to, &m.body, m.at, m.in_reply_to),
                (&from, &to, &body, at, in_reply_to),
                "row {} as popped",
                m.id
            );
            assert_eq!(to, who, "row {} popped by {who}", m.id);
            assert_eq!(delivered_at, None, "row {} popped though acked", m.id);
            assert!(k == 0 || popped[k - 1].id < m.id, "{popped:?} out of order");
        }
    };
    let agree = |step: &str| {
        for name in names {
            let unacked: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND delivered_at IS NULL",
                    [name],
                    |r| r.get(0),
                )
                .unwrap();
            let waiting = u64::try_from(unacked).unwrap() - store.inflight(name).unwrap();
            assert_eq!(store.unread(name).unwrap(), waiting, "{name} after {step}");
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A small deterministic generator (xorshift), so a failure repeats.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let lease_for = Some(Duration::from_secs(60));
    let mut leases: Vec<(&str, i64)> = Vec::new();
    for i in 0..600 {
        let who = names[usize::try_from(next(3)).unwrap()];
        let other = names[usize::try_from(next(3)).unwrap()];
        let step = next(12);
        match step {
            0 | 1 => {
                store.send(who, &to(other), &format!("m{i}"), None).unwrap();
            }
            2 => {
                // `*` too: one message stored as a row per agent.
                let targets = ["alice", "bob", "carol", "*"];
                let batch: Vec<hive_proto::OutgoingMessage> = (0..next(5) + 1)
                    .map(|k| hive_proto::OutgoingMessage {
                        to: to(targets[usize::try_from(next(4)).unwrap()]),
                        body: format!("b{i}.{k}"),
                        in_reply_to: None,
                    })
                    .collect();
                rt.block_on(store.send_batch(who, batch.clone())).unwrap();
            }
            3 => {
                store.send(who, &to("*"), &format!("all{i}"), None).unwrap();
            }
            4 => {
                let event = HelperEvent::Killed {
                    agent: format!("n{i}"),
                };
                store.push_helper_event(other, &event).unwrap();
            }
            5 | 6 => {
                let max = u32::try_from(next(4) + 1).unwrap();
                let popped = store.pop(who, max, lease_for).unwrap();
                check_popped(who, &popped.messages);
                if let Some(lease) = popped.lease {
                    leases.push((who, lease));
                }
            }
            7 => {
                check_popped(who, &store.recv_batch(who, 2).unwrap());
            }
            8 => {
                if let Some((name, lease)) = leases.pop() {
                    store.ack(name, &[], Some(lease)).unwrap();
                }
            }
            9 => match next(4) {
                0 => {
                    store.ack_turn(who).unwrap();
                }
                1 => {
                    if let Some((_, lease)) = leases.pop() {
                        store.release_lease(lease).unwrap();
                    }
                }
                2 => {
                    store.requeue_inflight(who).unwrap();
                }
                _ => {
                    store.expire_leases(i64::MAX).unwrap();
                }
            },
            10 => {
                // Sends from other threads while this one pops: a pop may
                // read a committed row before its send announced it.
                std::thread::scope(|s| {
                    for (t, from) in names.iter().take(2).enumerate() {
                        let store = &store;
                        s.spawn(move || {
                            for k in 0..5 {
                                store
                                    .send(from, &to(other), &format!("r{i}.{t}.{k}"), None)
                                    .unwrap();
                            }
                        });
                    }
                    for _ in 0..5 {
                        check_popped(other, &store.pop(other, 1, None).unwrap().messages);
                    }
                });
            }
            _ => {
                if next(4) == 0 {
                    store.mark_all_read(who).unwrap();
                } else {
                    store.undeliver(who, &[]).unwrap();
                }
            }
        }
        agree(&format!("step {i} ({step})"));
    }
}
