//! The task board end to end: real `claude` CLI harnesses for the manager
//! and two agents against the scripted model, which plans, claims and
//! completes through the hive tools; the operator watches the board in
//! headless Chromium, where every move arrives by the event stream (no
//! reload), and steers it from the board's own form and buttons.

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::e2e::{
    Harness, ModelServer, Reply, claude, hive_for, serial, tool_result_text, wait_for,
};

/// Every text the user side of a request carries, tool results included.
fn conversation(request: &Value) -> String {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tool(name: &str, input: Value) -> Reply {
    Reply::ToolUse {
        name: format!("mcp__hive__{name}"),
        input,
    }
}

/// The scripted model: the manager plans three tasks (api after schema),
/// alice claims schema and later completes it, bob tries api (refused:
/// its dependency is open) and takes docs instead.
fn script(request: &Value) -> Reply {
    let all = conversation(request);
    let newest = crate::e2e::last_user_text(request);
    if let Some(result) = tool_result_text(request) {
        if all.contains("PLAN-WORK") && !newest.contains("ALICE") {
            if result.contains("created: #1 ") {
                return tool("task_create", json!({"title": "api", "depends_on": [1]}));
            }
            if result.contains("created: #2 ") {
                return tool("task_create", json!({"title": "docs"}));
            }
        }
        if result.contains("depends on tasks not done yet") {
            return tool("task_claim", json!({"id": 3}));
        }
        return Reply::Text("ok".into());
    }
    if newest.contains("PLAN-WORK") {
        return tool(
            "task_create",
            json!({"title": "schema", "body": "tables first"}),
        );
    }
    if newest.contains("ALICE-CLAIMS") {
        return tool("task_claim", json!({"id": 1}));
    }
    if newest.contains("BOB-CLAIMS") {
        return tool("task_claim", json!({"id": 2}));
    }
    if newest.contains("ALICE-DONE") {
        return tool("task_complete", json!({"id": 1, "note": "tables in"}));
    }
    Reply::Text("ok".into())
}

/// A board card's column and classes, by task id.
fn card(browser: &Browser, id: i64) -> Value {
    browser.js(&format!(
        r#"const c = document.querySelector('#board .task[data-id="{id}"]');
           if (!c) return null;
           return {{status: c.closest('.board-col').dataset.status, claimable: c.classList.contains('claimable'),
                    text: c.textContent}};"#
    ))
}

fn until_card(browser: &Browser, what: &str, id: i64, check: &str) {
    browser.until(
        what,
        &format!(
            r#"const c = document.querySelector('#board .task[data-id="{id}"]');
               if (!c) return false;
               const status = c.closest('.board-col').dataset.status;
               const claimable = c.classList.contains('claimable');
               const text = c.textContent;
               return {check};"#
        ),
    );
}

#[test]
fn agents_move_tasks_and_the_board_shows_every_move_live() {
    let Some(claude) = claude() else { return };
    let Some(browser) = Browser::start("agents_move_tasks_and_the_board_shows_every_move_live")
    else {
        return;
    };
    let _serial = serial();
    let model = ModelServer::start(script);
    let hive = hive_for(&["alice", "bob"], &model);
    let manager = Harness::start(&hive, "manager", "manager", &model, &claude);
    let alice = Harness::start(&hive, "alice", "agent", &model, &claude);
    let bob = Harness::start(&hive, "bob", "agent", &model, &claude);
    browser.open(&hive.login_url());
    browser.js("window.__marker = 'same page'; return 1");

    // The manager plans: three cards, api after schema and not claimable.
    hive.host(r#"{"cmd":"send","to":"manager","body":"PLAN-WORK: split the feature"}"#);
    until_card(&browser, "the third task", 3, "status === 'open'");
    until_card(
        &browser,
        "api waiting on schema",
        2,
        "status === 'open' && !claimable && text.includes('#1')",
    );
    assert_eq!(card(&browser, 1)["claimable"], true);

    // Two agents claim what they may.
    hive.host(r#"{"cmd":"send","to":"alice","body":"ALICE-CLAIMS"}"#);
    hive.host(r#"{"cmd":"send","to":"bob","body":"BOB-CLAIMS"}"#);
    until_card(
        &browser,
        "alice's claim",
        1,
        "status === 'claimed' && text.includes('alice')",
    );
    until_card(
        &browser,
        "bob's claim of docs",
        3,
        "status === 'claimed' && text.includes('bob')",
    );
    wait_for("bob's turn", &[&bob], || {
        crate::e2e::kinds(&bob.events(), "turn_end").len() == 1
    });
    assert_eq!(
        card(&browser, 2)["status"],
        "open",
        "api stays open: its dependency is claimed"
    );

    // One completes; the dependent becomes claimable, on the page too.
    hive.host(r#"{"cmd":"send","to":"alice","body":"ALICE-DONE"}"#);
    until_card(&browser, "schema done", 1, "status === 'done'");
    until_card(
        &browser,
        "api claimable",
        2,
        "status === 'open' && claimable",
    );

    // The operator, from the board: a task for bob after api, then cancelled.
    browser.type_into("#task-title", "ship it");
    browser.type_into("#task-after", "2");
    browser.type_into("#task-assignee", "bob");
    browser.click("#task-form button[type=submit]");
    until_card(
        &browser,
        "the operator's task",
        4,
        "status === 'open' && text.includes('for bob') && text.includes('#2')",
    );
    browser.click(r#"#board .task[data-id="4"] button.cancel"#);
    until_card(&browser, "the cancelled task", 4, "status === 'cancelled'");

    // No reload happened.
    assert_eq!(browser.js("return window.__marker"), "same page");
    assert_eq!(browser.js("return window.__hive.loads"), 1);
    drop((manager, alice, bob));
}
