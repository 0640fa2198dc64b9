//! The operator credential: every dashboard request presents it, loopback
//! included — a token core generates at start (or the operator's own),
//! written to `<run-dir>/operator-token`, traded for a cookie at `/login`.
//! A cookie alone never changes anything: the request must also show it
//! comes from the dashboard's own origin.
#![allow(clippy::disallowed_methods)] // runs the real binary directly

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use crate::support::{Hive, serve_command, wait_ready};

const TOKEN: &str = "s3cret-operator-token";
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn pending(hive: &Hive) -> Value {
    let v: Value = serde_json::from_str(&hive.host(r#"{"cmd":"pending"}"#)).unwrap();
    v["approvals"].clone()
}

/// Nothing without the credential: reads, actions, the stream, agent pages.
#[test]
fn nothing_without_the_credential() {
    let hive = Hive::start(&["alice"]);
    let spawn = r#"{"name":"mallory","description":"a probe"}"#;
    let send = r#"{"to":"alice","body":"forged"}"#;
    let origin = hive.dashboard.clone();
    let from_page = [JSON, ("Origin", origin.as_str())];
    for (method, path, body) in [
        ("GET", "/", ""),
        ("GET", "/assets/dashboard.js", ""),
        ("GET", "/api/state", ""),
        ("GET", "/dashboard/stream", ""),
        ("GET", "/dashboard/history", ""),
        ("POST", "/api/request-spawn", spawn),
        ("POST", "/api/approvals/1/approve", "{}"),
        ("POST", "/api/send", send),
        ("POST", "/api/agents/alice/pause", "{}"),
        ("GET", "/agent/alice/", ""),
        ("GET", "/agent/alice/api/state", ""),
        ("GET", "/agent/alice/events/stream", ""),
        ("POST", "/agent/alice/api/send", r#"{"body":"forged"}"#),
    ] {
        let (status, _, answer) = hive.http(method, path, &from_page, body);
        assert_eq!(status, 401, "{method} {path}: {answer}");
        // A wrong token is no token.
        let wrong = [JSON, ("Authorization", "Bearer not-the-token-at-all")];
        assert_eq!(hive.http(method, path, &wrong, body).0, 401, "{path}");
        let wrong_cookie = [JSON, ("Cookie", "hive_operator=nope"), from_page[1]];
        assert_eq!(
            hive.http(method, path, &wrong_cookie, body).0,
            401,
            "{path}"
        );
    }
    // The effect: no approval, no message, no pause.
    assert_eq!(pending(&hive), Value::Array(Vec::new()));
    assert!(hive.recv("alice", 0, 8).is_empty());
    let bearer = hive.bearer();
    let state: Value = serde_json::from_str(&hive.http_get("/api/state")).unwrap();
    assert!(
        state["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["paused"] == false),
        "{state}"
    );

    // A browser gets a short page that says where the link is.
    let (status, head, page) = hive.http("GET", "/", &[("Accept", "text/html")], "");
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(page.contains("hive dashboard-url"), "{page}");
    // The login is the one way in.
    assert_eq!(hive.http("GET", "/login?token=wrong", &[], "").0, 403);
    let (status, head, _) = hive.http("GET", &format!("/login?token={}", hive.token), &[], "");
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        cookie.contains(&hive.cookie())
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        head.lines().any(|l| l.eq_ignore_ascii_case("location: /")),
        "{head}"
    );
    let cookie = hive.cookie();
    assert_eq!(hive.http("GET", "/", &[("Cookie", &cookie)], "").0, 200);
    assert_eq!(
        hive.http("GET", "/api/state", &[("Authorization", &bearer)], "")
            .0,
        200
    );
}

/// A cookie-authenticated action needs the page's origin: without an
/// `Origin` (or `Sec-Fetch-Site: same-origin`) it is refused and creates
/// nothing. A bearer-authenticated script may omit both.
#[test]
fn a_cookie_alone_changes_nothing() {
    let hive = Hive::start(&["alice"]);
    let cookie = hive.cookie();
    let spawn = r#"{"name":"mallory","description":"a probe"}"#;
    let (status, _, body) = hive.http(
        "POST",
        "/api/request-spawn",
        &[JSON, ("Cookie", &cookie)],
        spawn,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("must come from the dashboard itself"),
        "{body}"
    );
    let (status, _, _) = hive.http(
        "POST",
        "/api/send",
        &[JSON, ("Cookie", &cookie)],
        r#"{"to":"alice","body":"forged"}"#,
    );
    assert_eq!(status, 403);
    let other_site = [JSON, ("Cookie", &cookie), ("Sec-Fetch-Site", "same-site")];
    assert_eq!(
        hive.http("POST", "/api/request-spawn", &other_site, spawn)
            .0,
        403
    );
    assert_eq!(
        pending(&hive),
        Value::Array(Vec::new()),
        "nothing was queued"
    );
    assert!(hive.recv("alice", 0, 8).is_empty(), "nothing was sent");

    // The page itself (Origin, or the fetch metadata) may act.
    let origin = hive.dashboard.clone();
    let (status, _, body) = hive.http(
        "POST",
        "/api/request-spawn",
        &[JSON, ("Cookie", &cookie), ("Origin", &origin)],
        spawn,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(pending(&hive)[0]["agent"], "mallory");
    let fetch = [
        JSON,
        ("Cookie", cookie.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let (status, _, _) = hive.http(
        "POST",
        "/api/send",
        &fetch,
        r#"{"to":"alice","body":"one"}"#,
    );
    assert_eq!(status, 200);
    // A script with the bearer token needs no origin.
    let bearer = hive.bearer();
    let (status, _, _) = hive.http(
        "POST",
        "/api/send",
        &[JSON, ("Authorization", &bearer)],
        r#"{"to":"alice","body":"two"}"#,
    );
    assert_eq!(status, 200);
    let bodies: Vec<Value> = hive
        .recv("alice", 0, 8)
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, ["one", "two"]);
}

/// The generated token: 32+ characters, in `<run-dir>/operator-token`
/// (0600), the login link printed once at start, and `hive
/// dashboard-url` prints the same link.
#[test]
fn a_generated_token_and_its_login_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve_command(dir.path())
        .env_remove("HIVE_OPERATOR_TOKEN")
        .env("HIVE_LOG", "warn")
        .spawn()
        .unwrap();
    let link = wait_ready(&mut child, "hive: log in at ", "hive: runtime");
    let file = dir.path().join("run/operator-token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(meta.is_file());
    assert!(token.len() >= 32, "{token}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    assert!(link.ends_with(&format!("/login?token={token}")), "{link}");
    let addr = link
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("dashboard-url")
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--dashboard", &addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), link);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!file.exists(), "the token goes with the daemon");
}

/// With the operator's own token, the dashboard may bind beyond loopback
/// (any `Host` then) and still wants it on every request.
#[test]
fn the_operators_token_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state/agents/alice/state")).unwrap();
    let token_file = dir.path().join("operator-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let hive = Hive::start_with(
        dir,
        "none",
        &[
            "--dashboard",
            "0.0.0.0:0",
            "--operator-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert_eq!(hive.token, TOKEN, "the run dir holds the operator's token");
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = hive.http("GET", "/api/state", &[("Host", "hive.example:7700")], "");
    assert_eq!(status, 401, "{body}");
    let auth = [
        ("Host", "hive.example:7700"),
        ("Authorization", bearer.as_str()),
    ];
    assert_eq!(hive.http("GET", "/api/state", &auth, "").0, 200);
    let cookie = format!("hive_operator={TOKEN}");
    let evil = [
        JSON,
        ("Cookie", cookie.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let send = r#"{"to":"alice","body":"from afar"}"#;
    assert_eq!(hive.http("POST", "/api/send", &evil, send).0, 403);
    let host = hive.dashboard.trim_start_matches("http://").to_owned();
    let origin = hive.dashboard.clone();
    let own = [
        JSON,
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        ("Host", host.as_str()),
    ];
    assert_eq!(hive.http("POST", "/api/send", &own, send).0, 200);
    assert_eq!(hive.recv("alice", 0, 1)[0]["body"], "from afar");
}
