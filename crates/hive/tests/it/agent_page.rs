//! An agent's own web page in headless Chromium, driven over WebDriver
//! (fantoccini → chromedriver), against the real daemon, a real
//! `hive agent serve` and the real `claude` CLI talking to the scripted
//! model of `e2e`: a message sent from the composer, the turn streaming in
//! row by row without a reload, hostile text shown as text, the ctx and
//! cost badges filled at turn end, history backfill without duplicates on
//! a reload, the inbox, compaction from its button, and cross-origin POSTs
//! refused. The page is the dashboard's `/agent/<name>/`, logged in with the
//! operator's cookie; core proxies it (SSE included) to the harness's page
//! socket.
//!
//! Needs Chromium + chromedriver (`HIVE_CHROMIUM`, `HIVE_CHROMEDRIVER`, or
//! Debian's `chromium` and `chromium-driver`) and the CLI (see `e2e`):
//! without them the test says why and passes, except under `CI`. With
//! `HIVE_SCREENSHOTS=1` it writes `docs/screenshots/agent.png`.
#![allow(clippy::disallowed_methods)] // tests start chromedriver directly

use std::path::Path;

use fantoccini::key::Key;
use serde_json::json;

use crate::browser::Browser;
use crate::e2e::{
    Harness, ModelServer, Reply, answers_a_tool, claude, hive_for, last_user_text, serial,
};
use crate::support::Hive;

/// The hostile text: an image whose error handler would run script.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// One raw HTTP/1.1 POST to the agent's page on the dashboard with the
/// login cookie and `headers`: the status.
fn post_status(hive: &Hive, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let cookie = hive.cookie();
    let headers = [&[("Cookie", cookie.as_str())], headers].concat();
    hive.http("POST", &format!("/agent/pg{path}"), &headers, body)
        .0
}

fn count(browser: &Browser, css: &str) -> u64 {
    browser
        .js(&format!(
            "return document.querySelectorAll({}).length",
            json!(css)
        ))
        .as_u64()
        .unwrap()
}

#[test]
fn a_turn_streams_into_the_agent_page() {
    let Some(claude) = claude() else { return };
    let _serial = serial();
    let Some(browser) = Browser::start("a_turn_streams_into_the_agent_page") else {
        return;
    };
    let model = ModelServer::start(|request| {
        if answers_a_tool(request) {
            return Reply::Text("**Done.** I told the operator, see `send`.".into());
        }
        if last_user_text(request).contains("HELLO-PAGE") {
            Reply::ToolUse {
                name: "mcp__hive__send".into(),
                input: json!({
                    "to": "operator",
                    "body": format!("Hi **operator** {HOSTILE} [click](javascript:alert(2)) [docs](https://example.com/)"),
                }),
            }
        } else {
            Reply::Text("noted".into())
        }
    });
    let hive = hive_for(&["pg"], &model);
    let agent = Harness::start(&hive, "pg", "agent", &model, &claude);
    let page = format!("{}/agent/pg/", hive.dashboard);
    // Logged in first: the page, like everything on the dashboard, needs
    // the operator's cookie.
    browser.open(&hive.login_url());
    browser.open(&page);
    browser.js("window.__sameDocument = 'yes'; return true");
    assert_eq!(
        browser.js("return document.getElementById('agent-name').textContent"),
        "pg"
    );
    assert_eq!(
        browser.js("return document.getElementById('turn-state').dataset.state"),
        "idle"
    );

    // Enter in the composer sends, as the operator.
    browser.type_into(
        "#message",
        &format!("HELLO-PAGE {HOSTILE}{}", char::from(Key::Enter)),
    );

    // The turn streams in, row by row, without a reload.
    browser.until(
        "the turn_start row",
        "const r = document.querySelector('#terminal .row.turn-start'); return r && r.textContent.includes('HELLO-PAGE')",
    );
    browser.until(
        "the thinking state",
        "return document.getElementById('turn-state').dataset.state === 'thinking' || document.querySelector('#terminal .row.turn-end')",
    );
    browser.until(
        "the tool call row",
        "return document.querySelector('#terminal .row.tool[data-tool=\"mcp__hive__send\"]')",
    );
    browser.until(
        "the assistant's text",
        "const r = [...document.querySelectorAll('#terminal .row.assistant')].find(r => r.textContent.includes('I told the operator')); return r && r.querySelector('strong') && r.querySelector('code')",
    );
    browser.until(
        "the tool result row",
        "return document.querySelector('#terminal .row.result details')",
    );
    browser.until(
        "the turn_end row",
        "return document.querySelector('#terminal .row.turn-end.ok')",
    );
    assert_eq!(browser.js("return window.__sameDocument"), "yes");

    // The tool call shows its recipient and its markdown body, rendered.
    let tool = browser.js(
        "const r = document.querySelector('#terminal .row.tool'); return {label: r.querySelector('.label').textContent, strong: r.querySelector('.md strong').textContent, text: r.textContent, links: [...r.querySelectorAll('a')].map(a => a.getAttribute('href'))}",
    );
    assert_eq!(tool["label"], "hive send \u{2192} operator");
    assert_eq!(tool["strong"], "operator");
    assert!(tool["text"].as_str().unwrap().contains(HOSTILE), "{tool}");
    assert_eq!(tool["links"], json!(["https://example.com/"]), "{tool}");

    // Hostile text is text: shown literally, no element made, nothing ran.
    let start =
        browser.js("return document.querySelector('#terminal .row.turn-start').textContent");
    assert!(start.as_str().unwrap().contains(HOSTILE), "{start}");
    assert_eq!(count(&browser, "#terminal img"), 0);
    assert_eq!(count(&browser, "a[href^='javascript']"), 0);
    assert!(!browser.dialog_open(), "a script from the content ran");

    // The badges got the turn's numbers.
    let ctx = browser.until(
        "the ctx badge",
        "const v = Number(document.getElementById('ctx').dataset.value); return v > 0 && document.getElementById('ctx').textContent",
    );
    let cost = browser.until(
        "the cost badge",
        "const v = Number(document.getElementById('cost').dataset.value); return v > 0 && document.getElementById('cost').textContent",
    );
    assert!(ctx.as_str().unwrap().starts_with("ctx \u{b7} "), "{ctx}");
    // The badge is the last turn's own cost, labelled so.
    assert!(
        cost.as_str().unwrap().starts_with("turn cost \u{b7} "),
        "{cost}"
    );
    browser.until(
        "the last turn time",
        "return !document.getElementById('last-turn').textContent.endsWith('\u{2013}')",
    );
    browser.until(
        "the idle state",
        "return document.getElementById('turn-state').dataset.state === 'idle'",
    );

    // The inbox lists the operator's message, as text.
    browser.until(
        "the inbox row",
        "return [...document.querySelectorAll('#inbox .item')].some(i => i.textContent.includes('HELLO-PAGE'))",
    );
    assert_eq!(count(&browser, "#inbox img"), 0);

    // The stats view charts the turn.
    browser.click(".tab[data-tab='stats']");
    browser.until(
        "a bar per turn",
        "return document.querySelectorAll('#chart svg rect.bar').length === 1",
    );
    // Per-turn columns are labelled per turn; the session total is apart.
    let head = browser
        .js("return [...document.querySelectorAll('#stats-table th')].map(t => t.textContent)");
    assert_eq!(
        head,
        json!([
            "#",
            "from",
            "result",
            "model",
            "time",
            "tokens/turn",
            "cost/turn",
            "session total",
            "tools"
        ])
    );
    let axis = browser.js("return document.querySelector('#chart .axis-label').textContent");
    assert!(
        axis.as_str().unwrap().ends_with("cost per turn (USD)"),
        "{axis}"
    );
    // The session's running total shows apart, when the turn stats carry it.
    let session = browser.js(
        "return fetch('api/turns?limit=1').then(r => r.json()).then(t => [t[0].session_cost_usd ?? null, document.getElementById('session-cost').hidden, document.getElementById('session-cost').textContent])",
    );
    if session[0].is_null() {
        assert_eq!(session[1], true, "{session}");
    } else {
        assert_eq!(session[1], false, "{session}");
        assert!(
            session[2]
                .as_str()
                .unwrap()
                .starts_with("session total \u{b7} $"),
            "{session}"
        );
    }
    // Loose ends come from the agent socket (nothing pending here).
    browser.click(".tab[data-tab='loose']");
    browser.until(
        "the loose ends",
        "return document.querySelector('#loose .empty, #loose .item')",
    );
    let loose = browser.js("return document.getElementById('loose').textContent");
    assert_eq!(loose, "nothing pending");
    browser.click(".tab[data-tab='inbox']");
    // The login probe: credentials come from $ANTHROPIC_API_KEY.
    let login = agent.get("/api/login");
    assert_eq!(login["needs_login"], false, "{login}");
    assert!(
        login["credentials_file"]
            .as_str()
            .unwrap()
            .ends_with(".credentials.json")
    );

    if std::env::var("HIVE_SCREENSHOTS").is_ok_and(|v| v == "1" || v == "true") {
        browser
            .js("document.querySelector('#terminal .row.result details').open = true; return true");
        browser.screenshot(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots/agent.png"),
        );
    }

    // A reload backfills from history: every row once.
    let rows = count(&browser, "#terminal .row");
    browser.open(&page);
    browser.until(
        "the backfilled turn",
        "return document.querySelector('#terminal .row.turn-end.ok')",
    );
    assert_eq!(count(&browser, "#terminal .row.turn-start"), 1);
    assert_eq!(count(&browser, "#terminal .row.turn-end"), 1);
    assert_eq!(count(&browser, "#terminal .row"), rows);

    // Compaction from its button: scheduled, run between turns.
    browser.click("#compact");
    browser.until(
        "the compaction",
        "return [...document.querySelectorAll('#terminal .row.note')].some(r => /compaction (done|failed)/.test(r.textContent))",
    );

    // Other origins cannot act; the page's own requests can.
    let json_type = ("Content-Type", "application/json");
    let body = r#"{"body":"FROM-ELSEWHERE"}"#;
    for origin in ["http://evil.example", "null", "http://localhost:1"] {
        let status = post_status(&hive, "/api/send", &[json_type, ("Origin", origin)], body);
        assert_eq!(status, 403, "a POST from {origin}");
    }
    let status = post_status(
        &hive,
        "/api/send",
        &[json_type, ("Sec-Fetch-Site", "cross-site")],
        body,
    );
    assert_eq!(status, 403);
    let status = post_status(&hive, "/api/send", &[json_type], body);
    assert_eq!(status, 403, "the cookie without an origin");
    let origin = hive.dashboard.clone();
    let status = post_status(
        &hive,
        "/api/new-session",
        &[("Content-Type", "text/plain"), ("Origin", &origin)],
        "{}",
    );
    assert_eq!(status, 415);
    let status = post_status(
        &hive,
        "/api/new-session",
        &[json_type, ("Origin", &origin)],
        "{}",
    );
    assert_eq!(status, 200);
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| e.to_string().contains("FROM-ELSEWHERE")),
        "a refused message got through"
    );
    assert!(!browser.dialog_open());
}
