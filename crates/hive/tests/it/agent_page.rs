//! An agent's own web page in headless Chromium, driven over WebDriver
//! (fantoccini → chromedriver), against the real daemon, a real
//! `hive agent serve` and the real `claude` CLI talking to the scripted
//! model of `e2e`: a message sent from the composer, the turn streaming in
//! row by row without a reload, hostile text shown as text, the ctx and
//! cost badges filled at turn end, history backfill without duplicates on
//! a reload, the inbox, compaction from its button, and cross-origin POSTs
//! refused.
//!
//! Needs Chromium + chromedriver (`HIVE_CHROMIUM`, `HIVE_CHROMEDRIVER`, or
//! Debian's `chromium` and `chromium-driver`) and the CLI (see `e2e`):
//! without them the test says why and passes, except under `CI`. With
//! `HIVE_SCREENSHOTS=1` it writes `docs/screenshots/agent.png`.
#![allow(clippy::disallowed_methods)] // tests start chromedriver directly

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::e2e::{Harness, ModelServer, Reply, answers_a_tool, claude, last_user_text, serial};
use crate::support::Hive;

/// How long the page may take to show what the test waits for (a turn of
/// the real CLI included).
const WAIT: Duration = Duration::from_secs(90);

/// The hostile text: an image whose error handler would run script.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// An executable from `var`, or the first of `names` on `PATH`.
fn tool(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver (its own process group, killed on drop) and one session.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Option<Browser> {
        let chromium = tool("HIVE_CHROMIUM", &["chromium", "chromium-browser"]);
        let driver = tool("HIVE_CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let why = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver, or set HIVE_CHROMIUM and HIVE_CHROMEDRIVER)";
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{why}");
            }
            eprintln!("skipping the agent page test: {why}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let mut browser = Browser {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: None,
            driver: child,
            _profile: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-breakpad",
                    "--force-device-scale-factor=1",
                    "--window-size=1500,950",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = browser.rt.block_on(async {
            let mut last = None;
            for _ in 0..3 {
                match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => return client,
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            panic!("no WebDriver session: {last:?}");
        });
        browser.client = Some(client);
        Some(browser)
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens the page and waits until it has its history and stream.
    fn open(&self, url: &str) {
        self.rt.block_on(self.client().goto(url)).unwrap();
        self.until(
            "the page to go live",
            "return window.__hive && window.__hive.ready === true && window.__hive.alive === true",
        );
    }

    fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("{e}: {script}"))
    }

    /// Polls `script` until it returns something truthy.
    fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            if Instant::now() > deadline {
                let rows = self.js(
                    "return [...document.querySelectorAll('#terminal .row')].map(r => r.textContent.slice(0, 200)).join('\\n')",
                );
                panic!("timed out waiting for {what}; the terminal shows:\n{rows}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.rt.block_on(async {
            self.client()
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"))
        })
    }

    fn click(&self, css: &str) {
        let el = self.element(css);
        self.rt
            .block_on(el.click())
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.element(css);
        self.rt
            .block_on(el.send_keys(text))
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    fn dialog_open(&self) -> bool {
        self.rt.block_on(self.client().get_alert_text()).is_ok()
    }

    fn screenshot(&self, path: &Path) {
        let png = self.rt.block_on(self.client().screenshot()).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
    }
}

/// One raw HTTP/1.1 POST to the harness's web server: the status.
fn post_status(web: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let addr = web.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
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
    let Some(browser) = Browser::start() else {
        return;
    };
    let hive = Hive::start(&["pg"]);
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
    let agent = Harness::start(&hive, "pg", "agent", &model, &claude);
    let page = format!("{}/", agent.web);
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
    assert!(cost.as_str().unwrap().starts_with("cost \u{b7} "), "{cost}");
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
    for origin in ["http://evil.example", "null", &hive.dashboard] {
        let status = post_status(
            &agent.web,
            "/api/send",
            &[json_type, ("Origin", origin)],
            body,
        );
        assert_eq!(status, 403, "a POST from {origin}");
    }
    let status = post_status(
        &agent.web,
        "/api/send",
        &[json_type, ("Sec-Fetch-Site", "cross-site")],
        body,
    );
    assert_eq!(status, 403);
    let status = post_status(
        &agent.web,
        "/api/new-session",
        &[("Content-Type", "text/plain")],
        "{}",
    );
    assert_eq!(status, 415);
    let origin = agent.web.clone();
    let status = post_status(
        &agent.web,
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
