//! A busy hive on the dashboard, in headless Chromium: 50 agents (real
//! harnesses on the process runtime) with long names and 200 decided
//! approvals. At 1280 and 1920 px wide nothing
//! overlaps (the element boxes of a history row's status and age, and of a
//! container row's name, badges and chips, do not intersect) and nothing
//! runs off the side; a running agent's turn state and its last lifecycle
//! action change live, without a reload.
//!
//! Needs Chromium and chromedriver like `browser`. With `HIVE_SCREENSHOTS=1`
//! it writes `docs/screenshots/dashboard-busy.png`.

use std::path::Path;

use serde_json::{Value, json};

use crate::browser::{Browser, json_line, screenshots_wanted};
use crate::support::Hive;

/// Agents spawned besides `coder` and `scout-with-a-rather-long-name-0`
/// (the manager makes 50). Each is a real harness on the process runtime.
const WORKERS: usize = 47;
/// Decided approvals in the history.
const HISTORY: usize = 200;

/// Pairs of boxes that intersect inside each row matched by `rows`,
/// comparing the direct children matched by `parts`; empty when none do.
fn overlaps(browser: &Browser, rows: &str, parts: &str) -> Value {
    browser.js(&format!(
        r#"const bad = [];
           const hit = (a, b) => a.width > 0 && b.width > 0 && a.left < b.right - 0.5 && b.left < a.right - 0.5
                                 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
           for (const row of document.querySelectorAll({rows:?})) {{
             const kids = [...row.querySelectorAll({parts:?})];
             for (let i = 0; i < kids.length; i++)
               for (let j = i + 1; j < kids.length; j++)
                 if (hit(kids[i].getBoundingClientRect(), kids[j].getBoundingClientRect()))
                   bad.push([row.dataset.id || row.dataset.name, kids[i].textContent, kids[j].textContent]);
           }}
           return bad.slice(0, 5);"#
    ))
}

/// Elements wider than their box, and whether the page scrolls sideways.
fn overflow(browser: &Browser) -> Value {
    browser.js(
        r#"const wide = [...document.querySelectorAll('.item, .history-row, .panel')]
             .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1)
             .map(e => e.dataset.name || e.dataset.id || e.className).slice(0, 5);
           return { wide, sideways: document.documentElement.scrollWidth > window.innerWidth };"#,
    )
}

#[test]
fn a_busy_hive_holds_its_layout_and_shows_turns_live() {
    let Some(browser) = Browser::start("a_busy_hive_holds_its_layout_and_shows_turns_live") else {
        return;
    };
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        "process",
        &["--manager-port", "18740", "--agent-ports", "18741-18799"],
    );
    let workers: Vec<String> = (0..WORKERS)
        .map(|i| format!("worker-with-a-long-name-{i:04}"))
        .collect();
    for name in workers
        .iter()
        .map(String::as_str)
        .chain(["coder", "scout-with-a-rather-long-name-0"])
    {
        assert_eq!(
            hive.host(&json!({"cmd":"spawn","name":name}).to_string()),
            r#"{"version":1,"ok":true}"#,
            "{name}"
        );
    }
    // 200 decisions: spawns of long-named agents, denied with a reason.
    for i in 0..HISTORY {
        let name = format!("candidate-with-a-long-name-{i:04}");
        let queued = json_line(&hive.host(
            &json!({"cmd":"request_spawn","name":name,"description":"a helper the manager wanted"})
                .to_string(),
        ));
        let id = queued["approvals"][0]["id"].as_i64().unwrap();
        hive.host(&format!(
            r#"{{"cmd":"deny","id":{id},"note":"not now: the hive is busy enough"}}"#
        ));
    }
    hive.agent(
        "coder",
        r#"{"cmd":"set_status","text":"refactoring the broker's vacuum so that in-flight rows are never swept while a turn holds their lease"}"#,
    );

    browser.open(&hive.login_url());
    browser.js("window.__marker = 'still the same page'; return 1");
    let rows = browser.until(
        "50 agent rows",
        "const n = document.querySelectorAll('#containers .item.container').length; return n >= 50 && n",
    );
    assert_eq!(rows, 50);
    browser.click(r#".tab[data-tab="history"]"#);
    let history = browser.until(
        "200 history rows",
        "const n = document.querySelectorAll('#approval-history .history-row').length; return n >= 200 && n",
    );
    assert_eq!(history, HISTORY);

    for (width, height) in [(1280, 900), (1920, 1080)] {
        browser.resize(width, height);
        browser.js("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(1))))");
        // A history row's status word and its age never share pixels, nor
        // do any two of its parts.
        assert_eq!(
            overlaps(
                &browser,
                "#approval-history .history-row",
                ":scope > :not(.note)"
            ),
            json!([]),
            "history rows at {width}px"
        );
        let statuses = browser.js(
            r#"return [...document.querySelectorAll('#approval-history .history-row')].filter(r => {
                 const s = r.querySelector('.hstatus').getBoundingClientRect();
                 const a = r.querySelector('.hage').getBoundingClientRect();
                 return s.width > 0 && a.width > 0;
               }).length"#,
        );
        assert_eq!(
            statuses, HISTORY,
            "every row shows a status and an age at {width}px"
        );
        assert_eq!(
            overlaps(&browser, "#containers .item.container", ".line1 > *"),
            json!([]),
            "agent rows at {width}px"
        );
        assert_eq!(
            overflow(&browser),
            json!({"wide": [], "sideways": false}),
            "at {width}px"
        );
    }

    // The running agent's turn state, live. First what its harness said at
    // boot, then what the test (speaking on coder's own socket, as its
    // harness does) reports.
    let coder = r#"#containers .item[data-name="coder"]"#;
    browser.until(
        "coder's turn state from its harness",
        "return window.__hive.state.turns.has('coder')",
    );
    for (report, shown) in [
        (r#"{"cmd":"harness_state","state":"thinking"}"#, "thinking"),
        (
            r#"{"cmd":"harness_state","state":"tool","note":"Bash"}"#,
            "tool \u{b7} Bash",
        ),
        (
            r#"{"cmd":"harness_state","state":"rate_limited","note":"retrying in 30s"}"#,
            "rate-limited",
        ),
        // The note is the agent's text: a hostile one stays text.
        (
            r#"{"cmd":"harness_state","state":"tool","note":"<img src=x onerror=alert(1)>"}"#,
            "tool \u{b7} <img src=x onerror=alert(1)>",
        ),
        (r#"{"cmd":"harness_state","state":"idle"}"#, "idle"),
    ] {
        assert_eq!(hive.agent("coder", report), r#"{"kind":"ok"}"#);
        browser.until(
            &format!("coder's badge to read {shown}"),
            &format!(
                "const b = document.querySelector('{coder} .badge.turn'); return b && b.textContent === {shown:?}"
            ),
        );
    }
    assert_eq!(
        browser.js("return document.querySelectorAll('#containers img').length"),
        0
    );
    assert!(!browser.dialog_open(), "a script from the note ran");
    // The last lifecycle action and its result, live too.
    assert_eq!(
        browser.js(&format!(
            "return document.querySelector('{coder} .last-action .what').textContent"
        )),
        "spawned \u{2713}"
    );
    assert_eq!(
        hive.host(r#"{"cmd":"restart","name":"coder"}"#),
        r#"{"version":1,"ok":true}"#
    );
    browser.until(
        "coder's last action to read restarted",
        &format!(
            "const a = document.querySelector('{coder} .last-action .what'); return a && a.textContent === 'restarted \u{2713}'"
        ),
    );
    // A stopped agent shows no turn state.
    assert_eq!(
        hive.host(r#"{"cmd":"kill","name":"scout-with-a-rather-long-name-0"}"#),
        r#"{"version":1,"ok":true}"#
    );
    browser.until(
        "the stopped scout without a turn badge",
        r#"const row = document.querySelector('#containers .item[data-name="scout-with-a-rather-long-name-0"]');
           return row && row.querySelector('.badge.grey') && !row.querySelector('.badge.turn')
                  && row.querySelector('.last-action .what').textContent === 'stopped \u2713'"#,
    );
    // Helper events read as sentences in the flow; the operator's inbox
    // renders markdown from text nodes (a `javascript:` link stays text).
    let flow = browser.js("return document.getElementById('msgflow').textContent");
    let flow = flow.as_str().unwrap();
    assert!(
        flow.contains(") was denied: not now: the hive is busy enough")
            && !flow.contains("{\"event\""),
        "{flow}"
    );
    hive.agent(
        "coder",
        r#"{"cmd":"send","to":"operator","body":"**done**: see `notes.md` and [this](javascript:alert(1))"}"#,
    );
    browser.until(
        "the markdown message",
        "return [...document.querySelectorAll('#inbox .item .body strong')].some(b => b.textContent === 'done')",
    );
    assert_eq!(
        browser.js("return [document.querySelectorAll('#inbox code').length, document.querySelectorAll('#inbox a').length, document.querySelector('#inbox .item .body').textContent]"),
        json!([1, 0, "done: see notes.md and [this](javascript:alert(1))"])
    );
    assert_eq!(browser.js("return window.__marker"), "still the same page");
    assert_eq!(browser.js("return window.__hive.loads"), 1);

    if screenshots_wanted() {
        browser.resize(1920, 1080);
        browser.click(r#".tab[data-tab="history"]"#);
        assert_eq!(
            hive.agent(
                "coder",
                r#"{"cmd":"harness_state","state":"tool","note":"Bash"}"#
            ),
            r#"{"kind":"ok"}"#
        );
        browser.until(
            "the tool badge",
            &format!("const b = document.querySelector('{coder} .badge.turn'); return b && b.dataset.turn === 'tool'"),
        );
        browser.js("document.activeElement.blur(); window.scrollTo(0, 0); return 1");
        std::thread::sleep(std::time::Duration::from_millis(600));
        browser.screenshot(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/screenshots/dashboard-busy.png"),
        );
    }
    assert_eq!(
        hive.host(r#"{"cmd":"stop","scope":{"agent_names":[]}}"#),
        r#"{"version":1,"ok":true,"kept_running":[{"name":"manager","reason":"the manager is left out of stopping every agent; name it to stop it (`hive stop manager`)"}]}"#
    );
}
