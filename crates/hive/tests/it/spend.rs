//! Spending under the operator's eye, end to end with the real `claude`
//! CLI and the scripted model: a subscription quota parks an agent until
//! its reset (a timer, no poll, no turn spent) and it resumes by itself
//! with the messages that waited.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::e2e::{
    Harness, ModelServer, Reply, claude, hive_for, kinds, last_user_text, serial, wait_for,
};
use crate::lifecycle::{manager_events, status};

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[test]
fn a_used_up_quota_parks_the_agent_until_its_reset() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    // The window resets a few seconds from now, on a whole second.
    let resets_at = now_ms() / 1000 + 5;
    let refused = Arc::new(AtomicUsize::new(0));
    let answered_at = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let (r, a) = (refused.clone(), answered_at.clone());
    let model = ModelServer::start(move |request| {
        let now = now_ms();
        let said = last_user_text(request);
        if now < resets_at * 1000 {
            r.fetch_add(1, Ordering::SeqCst);
            return Reply::UsageLimit { resets_at };
        }
        a.lock().unwrap().push((now, said));
        Reply::Text("done".into())
    });
    let hive = hive_for(&["q"], &model);
    let q = Harness::start_subscriber(&hive, "q", &model, &claude);

    hive.host(r#"{"cmd":"send","to":"q","body":"FIRST"}"#);
    wait_for("the quota state", &[&q], || {
        q.events()
            .iter()
            .any(|e| e["kind"] == "turn_state_changed" && e["state"] == "quota")
    });
    // Parked: `hive status` says until when, the manager was told once.
    let text = hive_proto::live::quota_text(resets_at);
    wait_for("the status row", &[&q], || {
        status(&hive, "q")["status_text"] == text.as_str()
    });
    let told: Vec<Value> = manager_events(&hive)
        .into_iter()
        .filter(|e| e["event"] == "quota_reached")
        .collect();
    assert_eq!(
        told,
        [serde_json::json!({"event":"quota_reached","agent":"q","until":resets_at})]
    );
    // A message that arrives meanwhile waits in the inbox.
    hive.host(r#"{"cmd":"send","to":"q","body":"SECOND"}"#);
    assert_eq!(
        hive.agent("q", r#"{"cmd":"status"}"#),
        r#"{"kind":"status","unread":1}"#
    );

    // It resumes by itself at the reset, then takes the waiting message.
    wait_for("both turns", &[&q], || {
        kinds(&q.events(), "turn_end").len() == 2
    });
    let events = q.events();
    let ends: Vec<bool> = kinds(&events, "turn_end")
        .iter()
        .map(|e| e["ok"] == true)
        .collect();
    assert_eq!(ends, [true, true]);
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "parked: no request until the reset"
    );
    let answered = answered_at.lock().unwrap().clone();
    assert!(
        answered[0].0 >= resets_at * 1000,
        "ran again before the reset: {answered:?}"
    );
    assert!(answered[0].1.contains("FIRST"), "{answered:?}");
    assert!(
        answered.iter().any(|(_, said)| said.contains("SECOND")),
        "{answered:?}"
    );
    // One turn per message: the parked one spent no turn of its own.
    let turns = q.get("/api/turns");
    assert_eq!(turns.as_array().unwrap().len(), 2, "{turns}");
    wait_for("the quota status to clear", &[&q], || {
        status(&hive, "q").get("status_text").is_none()
    });
    eprintln!(
        "resumed {} ms after the reset",
        answered[0].0 - resets_at * 1000
    );
}
