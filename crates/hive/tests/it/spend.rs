//! Spending under the operator's eye, end to end with the real `claude`
//! CLI and the scripted model: a subscription quota parks an agent until
//! its reset (a timer, no poll, no turn spent) and it resumes by itself
//! with the messages that waited.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
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
    // The window resets a few seconds after the first request, on a whole
    // second (set then, so a slow start cannot outrun it).
    let reset = Arc::new(AtomicI64::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let answered_at = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let (r, a, at) = (refused.clone(), answered_at.clone(), reset.clone());
    let model = ModelServer::start(move |request| {
        let now = now_ms();
        let said = last_user_text(request);
        let _ = at.compare_exchange(0, now / 1000 + 4, Ordering::SeqCst, Ordering::SeqCst);
        let resets_at = at.load(Ordering::SeqCst);
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
    let resets_at = reset.load(Ordering::SeqCst);
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

/// The first model request whose newest user text carries `marker`, after
/// the first `skip`; its index + 1.
fn request_saying(model: &ModelServer, skip: usize, marker: &str) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if let Some(i) = model
            .requests()
            .iter()
            .skip(skip)
            .position(|r| last_user_text(r).contains(marker))
        {
            return skip + i + 1;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no model request saying {marker:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Polls `check` for up to 90 s (turns of the real CLI take seconds).
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn agent_toml(budget: &str) -> String {
    format!(
        "model = \"sonnet\"\nengine = \"claude\"\nprompt = \"prompt.md\"\n\n[budget]\n{budget}\n"
    )
}

#[test]
fn a_budget_stops_turns_until_the_operator_raises_it_through_a_deploy() {
    use crate::deploy::{approve, hive, request_deploy, spawn};
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let model = ModelServer::start(|_| Reply::Text("noted".into()));
    let hive = hive(&model, &claude, (18800, 18810));
    let proposed = spawn(&hive, "coder");
    // The agent's page through core's proxy (`Null` while its harness is
    // not serving it, as across a rebuild).
    let page = |path: &str| -> Value {
        let bearer = hive.bearer();
        let (code, _, body) = hive.http(
            "GET",
            &format!("/agent/coder{path}"),
            &[("Authorization", &bearer)],
            "",
        );
        if code == 200 {
            serde_json::from_str(&body).unwrap()
        } else {
            Value::Null
        }
    };
    let turns = || -> Vec<Value> { page("/api/turns").as_array().cloned().unwrap_or_default() };
    let billed = |turns: &[Value]| -> u64 {
        turns
            .iter()
            .map(|t| {
                let u = &t["usage"];
                u["input_tokens"].as_u64().unwrap()
                    + u["output_tokens"].as_u64().unwrap()
                    + u["cache_creation_input_tokens"].as_u64().unwrap()
            })
            .sum()
    };
    // The turn of its spawn note, then quiet.
    until("the spawn turn", || {
        let state = page("/api/state");
        !turns().is_empty() && state["turn_running"] == false && state["state"] == "idle"
    });
    // A limit 10 tokens above what it spent: the next turn (the rebuild's
    // note; each scripted inference bills 55) reaches it.
    let limit = billed(&turns()) + 10;
    let low = crate::support::commit(
        &proposed,
        &[
            (
                "agent.toml",
                &agent_toml(&format!("total_tokens = {limit}")),
            ),
            ("prompt.md", "BUDGETED: you work within a budget."),
        ],
        "a low budget",
    );
    let id = request_deploy(&hive, "coder", &low);
    assert_eq!(approve(&hive, id), r#"{"version":1,"ok":true}"#);
    let seen = model.requests().len();

    // Over budget: the status row says so, the next message waits in the
    // inbox (no turn, no model request), and the operator is asked once.
    until("over budget", || {
        status(&hive, "coder")["status_text"] == "over budget"
    });
    let done = turns().len();
    assert!(billed(&turns()) >= limit);
    hive.host(r#"{"cmd":"send","to":"coder","body":"TWO"}"#);
    let snapshot: Value = serde_json::from_str(&hive.http_get("/api/state")).unwrap();
    let questions: Vec<&Value> = snapshot["questions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["asker"] == "coder")
        .collect();
    assert_eq!(questions.len(), 1, "{questions:?}");
    assert_eq!(
        questions[0]["options"],
        serde_json::json!([format!("raise by {limit} tokens in total"), "pause", "stop"])
    );
    let unread: Value = serde_json::from_str(&hive.agent("coder", r#"{"cmd":"status"}"#)).unwrap();
    assert!(unread["unread"].as_u64().unwrap() >= 1, "{unread}");
    // Long enough for a real turn to have reached the model, were the
    // message taken (one takes about a second here).
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert!(
        !model
            .requests()
            .iter()
            .any(|r| last_user_text(r).contains("TWO")),
        "an over-budget agent ran a turn"
    );
    assert_eq!(turns().len(), done);

    // "raise": the manager is asked to propose it; the operator approves
    // the deploy; the waiting message gets its turn.
    let bearer = hive.bearer();
    let (code, _, body) = hive.http(
        "POST",
        &format!("/api/questions/{}/answer", questions[0]["id"]),
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        &serde_json::json!({"answer": format!("raise by {limit} tokens in total")}).to_string(),
    );
    assert_eq!(code, 200, "{body}");
    until("the manager to hear of it", || {
        manager_events(&hive).iter().any(|e| {
            e["event"] == "budget_raise_requested"
                && e["agent"] == "coder"
                && e["answer"] == format!("raise by {limit} tokens in total").as_str()
        })
    });
    let raised = crate::support::commit(
        &proposed,
        &[("agent.toml", &agent_toml("total_tokens = 100000"))],
        "raise the budget",
    );
    let id = request_deploy(&hive, "coder", &raised);
    assert_eq!(approve(&hive, id), r#"{"version":1,"ok":true}"#);
    request_saying(&model, seen, "TWO");
    until("the waiting message's turn", || turns().len() > done);
    until("the status to clear", || {
        status(&hive, "coder").get("status_text").is_none()
    });

    // A turn's cost is its own: what its session's running total grew by
    // since the session's previous turn (the CLI reports the total).
    let mut rows = turns();
    rows.reverse();
    let mut continued = 0;
    for pair in rows.windows(2) {
        let (before, now) = (&pair[0], &pair[1]);
        let total = now["session_cost_usd"].as_f64().unwrap();
        let cost = now["cost_usd"].as_f64().unwrap();
        if before["session_id"] == now["session_id"] {
            continued += 1;
            let grew = total - before["session_cost_usd"].as_f64().unwrap();
            assert!((cost - grew).abs() < 1e-9, "{before}\n{now}");
            assert!(cost < total, "{now}");
        } else {
            assert!(
                (cost - total).abs() < 1e-9,
                "a new session costs its total: {now}"
            );
        }
    }
    assert!(continued > 0, "no turn continued a session: {rows:?}");

    // Revived, it keeps that limit: the spawn approval shows it.
    assert_eq!(
        hive.host(r#"{"cmd":"destroy","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    let queued: Value = serde_json::from_str(
        &hive.host(r#"{"cmd":"request_spawn","name":"coder","description":"again"}"#),
    )
    .unwrap();
    assert_eq!(
        queued["approvals"][0]["description"],
        "again\nbudget: 100000 tokens in total"
    );
}

/// The agent as adversary: a question it asks itself is never a budget
/// question (answering "pause" to it pauses nothing), and a budget state it
/// reports acts on itself only, asking the operator once.
#[test]
fn an_agent_cannot_turn_its_own_questions_into_budget_actions() {
    let hive = crate::support::Hive::start(&["alice", "bob"]);
    let answer = |id: &Value, answer: &str| {
        let bearer = hive.bearer();
        let (code, _, body) = hive.http(
            "POST",
            &format!("/api/questions/{id}/answer"),
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            &serde_json::json!({ "answer": answer }).to_string(),
        );
        assert_eq!(code, 200, "{body}");
    };
    let questions = || -> Vec<Value> {
        let snapshot: Value = serde_json::from_str(&hive.http_get("/api/state")).unwrap();
        snapshot["questions"].as_array().unwrap().clone()
    };
    let forged: Value = serde_json::from_str(&hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"bob is over budget: pause him?","options":["raise","pause","stop"]}"#,
    ))
    .unwrap();
    answer(&forged["id"], "pause");
    assert_eq!(status(&hive, "alice")["paused"], false);
    assert_eq!(status(&hive, "bob")["paused"], false);

    // Its own status text cannot pass for core's note (core would then
    // take the real over_budget for one it had already asked about).
    let spoof: Value =
        serde_json::from_str(&hive.agent("alice", r#"{"cmd":"set_status","text":"over budget"}"#))
            .unwrap();
    assert_eq!(spoof["kind"], "err", "{spoof}");

    // A quota whose reset keeps moving tells the manager once, not at
    // every report.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for i in 0..6 {
        let until = now + 3600 + 60 * (i % 2);
        hive.agent(
            "bob",
            &format!(r#"{{"cmd":"harness_state","state":"quota","until":{until}}}"#),
        );
    }
    let recent: Value =
        serde_json::from_str(&hive.agent("manager", r#"{"cmd":"recent","limit":500}"#)).unwrap();
    let told = recent["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m["body"].as_str()?).ok())
        .filter(|e| e["event"] == "quota_reached" && e["agent"] == "bob")
        .count();
    assert_eq!(told, 1, "{recent}");
    hive.agent("bob", r#"{"cmd":"harness_state","state":"idle"}"#);

    // A reported over_budget is about the reporter alone, asked once.
    for _ in 0..3 {
        assert_eq!(
            hive.agent("alice", r#"{"cmd":"harness_state","state":"over_budget"}"#),
            r#"{"kind":"ok"}"#
        );
    }
    assert_eq!(status(&hive, "alice")["status_text"], "over budget");
    let asked: Vec<Value> = questions()
        .into_iter()
        .filter(|q| q["asker"] == "alice")
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    answer(&asked[0]["id"], "pause");
    assert_eq!(status(&hive, "alice")["paused"], true);
    assert_eq!(status(&hive, "bob")["paused"], false);
    // Idle again: the status row clears.
    hive.agent("alice", r#"{"cmd":"harness_state","state":"idle"}"#);
    assert!(status(&hive, "alice").get("status_text").is_none());
}
