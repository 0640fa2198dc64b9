//! The operator's dashboard in headless Chromium, driven over WebDriver
//! (fantoccini → chromedriver), against the real daemon: a spawn approved
//! and its container row arriving by the event stream without a reload, a
//! question answered, a message sent with @-completion, hostile text shown
//! as text, and cross-origin actions refused.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or `HIVE_CHROMIUM` and
//! `HIVE_CHROMEDRIVER`). Without them these tests say why and pass, except
//! under `CI`, where a missing browser fails them. With `HIVE_SCREENSHOTS=1`
//! the spawn test also writes `docs/screenshots/dashboard.png`.
#![allow(clippy::disallowed_methods)] // tests start chromedriver directly

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::Hive;

/// How long the page may take to show what a test waits for.
/// How long a page may take to show what a test waits for (a real
/// engine turn included).
const WAIT: Duration = Duration::from_secs(90);

pub(crate) fn json_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

// ---------------------------------------------------------------------------
// The browser.

/// An executable from an environment variable, or the first of `names`
/// found on `PATH`.
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

/// chromedriver plus one headless Chromium session.
pub(crate) struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser, or `None` (after saying why) when the test should skip.
    pub(crate) fn start(test: &str) -> Option<Browser> {
        let chromium = tool("HIVE_CHROMIUM", &["chromium", "chromium-browser"]);
        let driver = tool("HIVE_CHROMEDRIVER", &["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            let why = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver, or set HIVE_CHROMIUM and HIVE_CHROMEDRIVER)";
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{test}: {why}");
            }
            eprintln!("skipping {test}: {why}");
            return None;
        };
        let port = free_port();
        // Its own process group, so dropping it ends Chromium too.
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: None,
            driver: child,
            _profile: profile,
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
                    "--disable-crash-reporter",
                    "--force-device-scale-factor=1",
                    "--window-size=1680,1200",
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

    pub(crate) fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    /// Opens the dashboard and waits until it has its snapshot and stream.
    pub(crate) fn open(&self, url: &str) {
        self.rt.block_on(self.client().goto(url)).unwrap();
        self.until(
            "the dashboard to go live",
            "return window.__hive && window.__hive.ready === true",
        );
    }

    /// Runs `script` (a function body) in the page.
    pub(crate) fn js(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("{e}: {script}"))
    }

    /// Polls `script` until it returns something truthy.
    pub(crate) fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an element matching `css`.
    pub(crate) fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.rt.block_on(async {
            self.client()
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("{css}: {e}"))
        })
    }

    /// Waits for an element matching `css` and clicks it. A row the page
    /// re-rendered between the lookup and the click (a status change
    /// arriving) is looked up again.
    pub(crate) fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let el = self.element(css);
            match self.rt.block_on(el.click()) {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Waits for an element matching `css` and types `text` into it.
    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let el = self.element(css);
        self.rt
            .block_on(el.send_keys(text))
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Whether a JavaScript dialog (alert, confirm, prompt) is open.
    pub(crate) fn dialog_open(&self) -> bool {
        self.rt.block_on(self.client().get_alert_text()).is_ok()
    }

    /// Resizes the window (the viewport follows in headless Chromium).
    pub(crate) fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("resize to {width}x{height}: {e}"));
    }

    pub(crate) fn screenshot(&self, path: &Path) {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One raw HTTP/1.1 request to the dashboard as the operator's script
/// (bearer token, unless `headers` bring a credential): (status, body).
fn http(
    hive: &Hive,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let bearer = hive.bearer();
    let credentialed = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization") || k.eq_ignore_ascii_case("cookie"));
    let auth: &[(&str, &str)] = if credentialed {
        &[]
    } else {
        &[("Authorization", &bearer)]
    };
    let (status, _, body) = hive.http(method, path, &[auth, headers].concat(), body);
    (status, body)
}

pub(crate) fn screenshots_wanted() -> bool {
    std::env::var("HIVE_SCREENSHOTS").is_ok_and(|v| v == "1" || v == "true")
}

// ---------------------------------------------------------------------------
// The tests.

/// A spawn approved from the page: the approval arrives by the stream, and
/// so does the new container row, without a reload.
#[test]
fn approving_a_spawn_shows_the_container_live() {
    let Some(browser) = Browser::start("approving_a_spawn_shows_the_container_live") else {
        return;
    };
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        "process",
        &["--manager-port", "18700", "--agent-ports", "18701-18720"],
    );
    browser.open(&hive.login_url());
    browser.until(
        "the manager's row",
        r#"return document.querySelector('#containers .item[data-name="manager"] .badge.green')"#,
    );
    browser.js("window.__marker = 'still the same page'; return 1");

    let queued = json_line(
        &hive.host(r#"{"cmd":"request_spawn","name":"coder","description":"writes the code"}"#),
    );
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    browser.until(
        "the spawn approval",
        &format!(r#"return document.querySelector('#approvals .approval[data-id="{id}"]')"#),
    );
    browser.click(&format!(
        r#"#approvals .approval[data-id="{id}"] button.approve"#
    ));
    browser.until(
        "coder's container row, running",
        r#"const row = document.querySelector('#containers .item[data-name="coder"]');
           return row && row.querySelector('.badge.green') && !row.classList.contains('busy');"#,
    );
    // The approval moved to history; the link points at coder's page,
    // proxied by the dashboard.
    browser.until(
        "the approval in history",
        &format!(
            r#"return document.querySelector('#approval-history [data-id="{id}"] .glyph.approved')"#
        ),
    );
    assert_eq!(
        browser.js(
            r#"return document.querySelector('#containers .item[data-name="coder"] a.web').href"#
        ),
        format!("{}/agent/coder/", hive.dashboard)
    );
    // No reload happened: the same document, loaded once.
    assert_eq!(browser.js("return window.__marker"), "still the same page");
    assert_eq!(browser.js("return window.__hive.loads"), 1);
    assert_eq!(
        browser.js("return performance.getEntriesByType('navigation').length"),
        1
    );

    // The deployed config and the logs open in place, fetched on demand.
    let coder = r#"#containers .item[data-name="coder"]"#;
    browser.click(&format!("{coder} details.config summary"));
    browser.until(
        "coder's deployed config",
        &format!(
            r#"const pre = document.querySelector('{coder} details.config pre');
               return pre && pre.textContent.includes('model = "sonnet"')"#
        ),
    );
    browser.click(&format!("{coder} details.logs summary"));
    browser.until(
        "coder's logs",
        &format!(
            r#"return document.querySelectorAll('{coder} details.logs .term-line').length > 0"#
        ),
    );

    // A config change the manager proposes arrives with its diff, both on
    // the stream and in the snapshot.
    let toml = "model = \"opus\"\nengine = \"claude\"\nprompt = \"prompt.md\"\n\n[env]\nRUST_LOG = \"debug\"\n";
    let sha = propose(
        &hive.state_dir().join("proposed/coder/config"),
        toml,
        "coder: opus, debug logs",
    );
    let queued = json_line(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{sha}","description":"opus for the refactor; debug logs while it lasts"}}"#),
    ));
    let id = queued["id"].as_i64().unwrap();
    browser.until(
        "the config diff",
        &format!(
            r#"return [...document.querySelectorAll('#approvals .approval[data-id="{id}"] pre.diff .add')]
                 .some(l => l.textContent === '+model = "opus"')"#
        ),
    );
    let state = json_line(&hive.http_get("/api/state"));
    let pending = &state["approvals"][0];
    assert_eq!(
        (pending["id"].as_i64(), pending["kind"].as_str()),
        (Some(id), Some("apply_commit"))
    );
    assert!(
        pending["diff"]
            .as_str()
            .unwrap()
            .contains("\n+model = \"opus\"\n"),
        "{pending}"
    );

    if screenshots_wanted() {
        browser.click(&format!("{coder} details.config summary"));
        browser.click(&format!("{coder} details.logs summary"));
        stage_screenshot(&hive, &browser);
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots/dashboard.png");
        browser.screenshot(&path);
    }
}

/// Commits `agent.toml` on a proposed config repo as the manager would.
fn propose(repo: &Path, toml: &str, message: &str) -> String {
    let repo = git2::Repository::open(repo).unwrap();
    std::fs::write(repo.workdir().unwrap().join("agent.toml"), toml).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("agent.toml")).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("manager", "manager@hive").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
        .unwrap()
        .to_string()
}

/// Fills the hive with something of every kind for the picture.
fn stage_screenshot(hive: &Hive, browser: &Browser) {
    hive.agent(
        "coder",
        r#"{"cmd":"set_status","text":"refactoring the broker's vacuum"}"#,
    );
    for (name, description) in [
        ("reviewer", "reviews every diff coder proposes"),
        ("scout", "reads the docs"),
    ] {
        let queued = json_line(&hive.host(
            &json!({"cmd":"request_spawn","name":name,"description":description}).to_string(),
        ));
        let id = &queued["approvals"][0]["id"];
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#));
    }
    hive.host(r#"{"cmd":"destroy","name":"scout"}"#);

    hive.agent(
        "manager",
        r#"{"cmd":"request_spawn","name":"tester","description":"runs the suites on every push"}"#,
    );

    // Questions, messages.
    hive.agent(
        "coder",
        r#"{"cmd":"ask","question":"The vacuum can run hourly or after every 10k acks. Which?","options":["hourly","every 10k acks","both"],"ttl_seconds":1800}"#,
    );
    hive.agent(
        "reviewer",
        r#"{"cmd":"ask","question":"Is the retry budget per agent or per hive?","to":"coder"}"#,
    );
    hive.agent(
        "coder",
        r#"{"cmd":"send","to":"reviewer","body":"pushed 4f2a9c1: vacuum skips in-flight rows"}"#,
    );
    hive.agent(
        "reviewer",
        r#"{"cmd":"send","to":"coder","body":"LGTM, one nit: name the constant"}"#,
    );
    hive.agent("coder", r#"{"cmd":"send","to":"operator","body":"the broker benchmark is 18% faster after the vacuum change"}"#);
    hive.agent("manager", r#"{"cmd":"send","to":"operator","body":"coder wants opus for the refactor; the diff is in approvals"}"#);
    browser.until(
        "the staged hive",
        r#"return document.querySelectorAll('#approvals .approval').length >= 2
              && document.querySelector('#tombstones .item[data-name="scout"]')
              && document.querySelectorAll('#inbox .item').length >= 2
              && document.querySelector('#containers .item[data-name="reviewer"] .badge.green')"#,
    );
    browser.click("#peer-questions-box summary");
    browser.js("document.activeElement.blur(); window.scrollTo(0, 0); return 1");
    std::thread::sleep(Duration::from_millis(600));
}

/// A question asked through an agent's socket is answered on the page; the
/// asker hears the answer.
#[test]
fn answering_a_question() {
    let Some(browser) = Browser::start("answering_a_question") else {
        return;
    };
    let hive = Hive::start(&["alice"]);
    browser.open(&hive.login_url());
    let asked = json_line(&hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"Ship it today?","options":["yes","no"],"ttl_seconds":600}"#,
    ));
    let id = asked["id"].as_i64().unwrap();
    let card = format!(r#"#questions .question[data-id="{id}"]"#);
    browser.until(
        "the question",
        &format!("return document.querySelector('{card}')"),
    );
    // The TTL counts down locally.
    let ttl = browser.js(&format!(
        "return document.querySelector('{card} .ttl').textContent"
    ));
    let ttl = ttl.as_str().unwrap();
    assert!(ttl == "ttl 10m 0s" || ttl.starts_with("ttl 9m 5"), "{ttl}");
    browser.click(&format!(r#"{card} input[type="radio"][value="yes"]"#));
    browser.type_into(&format!("{card} input.free"), "after lunch");
    browser.click(&format!("{card} button.answer"));
    browser.until(
        "the question to leave the page",
        &format!("return !document.querySelector('{card}')"),
    );
    let answered = hive.recv("alice", 5, 1);
    let event: Value = serde_json::from_str(answered[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        event,
        json!({"event":"question_answered","id":id,"question":"Ship it today?","answer":"yes, after lunch","answerer":"operator"})
    );
}

/// `@al` completes to alice from the agent list; the message reaches her
/// inbox and the page's message flow.
#[test]
fn sending_with_at_completion() {
    let Some(browser) = Browser::start("sending_with_at_completion") else {
        return;
    };
    let hive = Hive::start(&["alice", "bob"]);
    browser.open(&hive.login_url());
    browser.type_into("#compose-body", "@al");
    browser.until(
        "the completion dropdown",
        r#"const list = document.getElementById('complete');
           return !list.hidden && [...list.children].map(li => li.dataset.name).join(',') === 'alice'"#,
    );
    browser.click(r#"#complete li[data-name="alice"]"#);
    assert_eq!(
        browser.js("return document.getElementById('compose-to').textContent"),
        "@alice>"
    );
    browser.type_into("#compose-body", "please rebase onto main");
    browser.type_into("#compose-body", &Key::Enter);
    let got = hive.recv("alice", 10, 1);
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["body"].as_str()),
        (Some("operator"), Some("please rebase onto main"))
    );
    browser.until(
        "the message in the flow",
        r#"return [...document.querySelectorAll('#msgflow .msg .body')].some(b => b.textContent === 'please rebase onto main')"#,
    );
    assert_eq!(
        browser.js("return document.getElementById('compose-body').value"),
        ""
    );
    // The recipient is sticky across reloads.
    assert_eq!(
        browser.js("return localStorage.getItem('hive.compose.to')"),
        "alice"
    );
}

/// Markup from an agent is shown as text: no element is made from it, no
/// script runs.
#[test]
fn hostile_text_stays_text() {
    let Some(browser) = Browser::start("hostile_text_stays_text") else {
        return;
    };
    let hive = Hive::start(&["alice"]);
    browser.open(&hive.login_url());
    let payload = "<img src=x onerror=alert(1)>";
    let line = json!({"cmd":"send","to":"operator","body":payload}).to_string();
    assert_eq!(hive.agent("alice", &line), r#"{"kind":"ok"}"#);
    let question = json!({"cmd":"ask","question":"<script>alert(2)</script>","options":["<b onmouseover=alert(3)>x</b>"]}).to_string();
    hive.agent("alice", &question);
    hive.agent(
        "alice",
        r#"{"cmd":"set_status","text":"<svg onload=alert(4)>"}"#,
    );

    browser.until(
        "the message in the inbox",
        r#"return [...document.querySelectorAll('#inbox .body')].some(b => b.textContent === '<img src=x onerror=alert(1)>')"#,
    );
    browser.until(
        "the question",
        r#"return [...document.querySelectorAll('#questions .q')].some(q => q.textContent === '<script>alert(2)</script>')"#,
    );
    browser.until(
        "the message in the flow",
        r#"return [...document.querySelectorAll('#msgflow .body')].some(b => b.textContent === '<img src=x onerror=alert(1)>')"#,
    );
    // Give a would-be onerror time to fire.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!browser.dialog_open(), "a dialog opened");
    assert_eq!(
        browser.js("return document.querySelectorAll('img, svg, b, main script').length"),
        0
    );
    // The text is visible as typed.
    let visible = browser.js("return document.getElementById('inbox').innerText");
    assert!(visible.as_str().unwrap().contains(payload), "{visible}");
}

/// State-changing requests from another origin are refused, whether sent
/// by a script or by a browser page on another origin; the page's own
/// origin and plain CLI clients are not.
#[test]
fn cross_origin_actions_are_refused() {
    let hive = Hive::start(&["alice"]);
    let send = r#"{"to":"alice","body":"from elsewhere"}"#;
    let json_type = ("Content-Type", "application/json");
    let (status, body) = http(
        &hive,
        "POST",
        "/api/send",
        &[json_type, ("Origin", "http://evil.example")],
        send,
    );
    assert_eq!(
        (status, body.as_str()),
        (
            403,
            r#"{"ok":false,"error":"cross-origin request from http://evil.example refused"}"#
        )
    );
    let (status, _) = http(
        &hive,
        "POST",
        "/api/send",
        &[json_type, ("Sec-Fetch-Site", "cross-site")],
        send,
    );
    assert_eq!(status, 403);
    // A form post cannot send JSON.
    let (status, _) = http(
        &hive,
        "POST",
        "/api/send",
        &[("Content-Type", "text/plain")],
        send,
    );
    assert_eq!(status, 415);
    // A rebinding name is not the dashboard, even for reads.
    let (status, _) = http(
        &hive,
        "GET",
        "/api/state",
        &[("Host", "evil.example:80")],
        "",
    );
    assert_eq!(status, 403);
    assert!(hive.recv("alice", 0, 8).is_empty());

    // The same origin, and a CLI client without one, may act.
    let own = hive.dashboard.clone();
    let (status, body) = http(
        &hive,
        "POST",
        "/api/send",
        &[json_type, ("Origin", &own)],
        send,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let (status, _) = http(&hive, "POST", "/api/send", &[json_type], send);
    assert_eq!(status, 200);
    assert_eq!(hive.recv("alice", 0, 8).len(), 2);

    // A real page on another origin (localhost vs 127.0.0.1 differ) cannot
    // act through the browser either.
    let Some(browser) = Browser::start("cross_origin_actions_are_refused") else {
        return;
    };
    let port = hive.dashboard.rsplit(':').next().unwrap().to_owned();
    browser.open(&format!(
        "http://localhost:{port}/login?token={}",
        hive.token
    ));
    let target = format!("{}/api/send", hive.dashboard);
    let outcome = browser.rt.block_on(browser.client().execute_async(
        r#"const [url, done] = arguments;
           const results = [];
           fetch(url, {method: 'POST', headers: {'content-type': 'application/json'}, body: '{"to":"alice","body":"cors"}'})
             .then(r => results.push('json:' + r.status), e => results.push('json:blocked'))
             .then(() => fetch(url, {method: 'POST', mode: 'no-cors', headers: {'content-type': 'text/plain'}, body: '{"to":"alice","body":"simple"}'}))
             .then(r => results.push('simple:' + r.type), e => results.push('simple:blocked'))
             .then(() => done(results));"#,
        vec![json!(target)],
    ));
    eprintln!("cross-origin fetches from the page: {outcome:?}");
    assert!(
        hive.recv("alice", 1, 8).is_empty(),
        "a cross-origin request got through"
    );
}

/// The message flow reaches an open dashboard stream as it happens; a
/// message sent while no stream was open is not an event (nobody would
/// see it) but is in the snapshot a browser reads once its stream opens.
#[test]
fn the_message_flow_reaches_an_open_stream_and_the_snapshot_holds_the_rest() {
    use std::io::{BufRead, BufReader, Write};
    let hive = Hive::start(&["alice"]);
    let send = |body: &str| {
        let line = json!({"cmd":"send","to":"operator","body":body}).to_string();
        assert_eq!(hive.agent("alice", &line), r#"{"kind":"ok"}"#);
    };
    send("unwatched");
    let addr = hive.dashboard.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /dashboard/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\n\r\n",
        hive.bearer()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    // The stream is open once its hello comment arrives.
    let mut line = String::new();
    while !line.contains("hyperhive dashboard") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
    }
    send("watched");
    let mut events = Vec::new();
    let watched = loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream closed");
        if let Some(data) = line.strip_prefix("data: ") {
            let event: Value = serde_json::from_str(data.trim_end()).unwrap();
            if event["body"] == "watched" {
                break event;
            }
            events.push(event);
        }
    };
    assert_eq!(watched["kind"], "sent", "{watched}");
    assert_eq!(
        (&watched["from"], &watched["to"]),
        (&json!("alice"), &json!("operator"))
    );
    assert!(
        !events.iter().any(|e| e["body"] == "unwatched"),
        "{events:?}"
    );
    let state = json_line(&hive.http_get("/api/state"));
    let flow: Vec<&str> = state["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(flow, ["unwatched", "watched"]);
}

/// The JSON the page is built from: the snapshot, the message history and
/// the actions' answers.
#[test]
fn snapshot_history_and_action_answers() {
    let hive = Hive::start(&["alice"]);
    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"peer?","to":"manager"}"#,
    );
    hive.agent(
        "alice",
        r#"{"cmd":"ask","question":"ship?","options":["y","n"],"multi":true}"#,
    );
    hive.agent("alice", r#"{"cmd":"send","to":"operator","body":"first"}"#);
    hive.agent("alice", r#"{"cmd":"send","to":"operator","body":"second"}"#);
    hive.host(r#"{"cmd":"request_spawn","name":"bob","description":"helps"}"#);

    // The questions' and the approval's events reach the dashboard's bus
    // after their answers do: wait for them, not for a fixed time. (The
    // messages' flow is on the bus only while a stream is open: the
    // snapshot below holds them.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let state = loop {
        let state = json_line(&hive.http_get("/api/state"));
        if state["seq"].as_u64().unwrap() >= 3 {
            break state;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(state["runtime"], Value::Null);
    // Without a runtime nothing has a container, so nothing is kept state:
    // alice is a (stopped) agent row.
    assert_eq!(state["tombstones"], json!([]));
    assert_eq!(state["agents"][0]["name"], "alice");
    assert_eq!(state["transients"], json!([]));
    assert_eq!(
        (
            &state["approvals"][0]["kind"],
            &state["approvals"][0]["agent"]
        ),
        (&json!("spawn"), &json!("bob"))
    );
    let questions: Vec<(&str, &Value)> = state["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["question"].as_str().unwrap(), &q["target"]))
        .collect();
    assert_eq!(
        questions,
        [("peer?", &json!("manager")), ("ship?", &Value::Null)]
    );
    let inbox: Vec<&str> = state["inbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(inbox, ["second", "first"]);
    let flow = state["messages"].as_array().unwrap();
    let last = flow.last().unwrap();
    assert_eq!(
        (&last["from"], &last["to"], &last["body"]),
        (&json!("alice"), &json!("operator"), &json!("second"))
    );

    let history = json_line(&hive.http_get("/dashboard/history?limit=1"));
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(history["messages"][0]["body"], "second");
    assert!(history["seq"].as_u64().unwrap() >= state["seq"].as_u64().unwrap());

    let post = |path: &str, body: &str| {
        http(
            &hive,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            body,
        )
    };
    assert_eq!(
        post("/api/agents/alice/start", "{}"),
        (
            409,
            r#"{"ok":false,"error":"no runtime configured: `start` needs a container backend and this hive runs with --runtime none"}"#.into()
        )
    );
    assert_eq!(
        post("/api/agents/Alice/start", "{}"),
        (
            409,
            r#"{"ok":false,"error":"invalid agent name \"Alice\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)"}"#.into()
        )
    );
    let (status, body) = post("/api/agents/alice/explode", "{}");
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        post("/api/approvals/99/approve", "{}"),
        (
            404,
            r#"{"ok":false,"error":"no approval with id 99"}"#.into()
        )
    );
    let (status, body) = post("/api/send", r#"{"to":"alice"}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("missing field `body`"), "{body}");
    assert_eq!(
        post("/api/agents/alice/pause", "{}"),
        (200, r#"{"ok":true}"#.into())
    );
    let (status, body) = post("/api/questions/2/answer", r#"{"answer":"y, n"}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    assert_eq!(
        post("/api/questions/1/cancel", "{}"),
        (200, r#"{"ok":true}"#.into())
    );
    let (status, body) = post("/api/approvals/1/deny", r#"{"note":"not now"}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let state = json_line(&hive.http_get("/api/state"));
    assert_eq!(state["questions"], json!([]));
    assert_eq!(state["approvals"], json!([]));
    assert_eq!(state["approval_history"][0]["note"], "not now");
    let alice = state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "alice")
        .unwrap();
    assert_eq!(alice["paused"], true);
    let (status, _) = http(&hive, "GET", "/nowhere", &[], "");
    assert_eq!(status, 404);
}
