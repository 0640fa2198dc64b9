//! Agent pages behind the dashboard: core proxies `/agent/<name>/…` to the
//! unix socket the harness binds in its page dir, never forwards the
//! operator's credential, streams SSE as it comes, answers for the operator
//! itself, and never follows a link an agent planted where its socket
//! should be.
#![allow(clippy::disallowed_methods)] // runs the real binary directly

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::support::{Hive, unix_http, wait_ready};

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A stand-in harness on `socket`: records every request (head and body)
/// and answers each with `answer`.
fn fake_page(socket: &Path, answer: &'static str) -> Arc<Mutex<Vec<String>>> {
    let listener = UnixListener::bind(socket).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                request.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            request.push_str(&String::from_utf8_lossy(&body));
            record.lock().unwrap().push(request);
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    seen
}

/// A real `hive agent serve` for `name` with no engine: its page socket in
/// the page dir core proxies. Killed on drop.
struct Page(Child);

impl Page {
    fn start(hive: &Hive, name: &str) -> Page {
        let state = hive.state_dir().join("agents").join(name).join("state");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hive"))
            .args(["agent", "serve", "--role", "agent", "--poll-ms", "100"])
            .args(["--claude-bin", "/nonexistent/claude"])
            .env("HIVE_AGENT", name)
            .env("HIVE_SOCKET", hive.agent_socket(name))
            .env("HIVE_STATE_DIR", &state)
            .env("HIVE_PAGE_SOCKET", hive.page_socket(name))
            .env("HIVE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(&mut child, "hive agent: page ", "hive agent: serving");
        Page(child)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The harness sees the method, path, query, body and harmless headers;
/// never the operator's cookie or bearer token. The browser sees the
/// harness's status and body, none of its cookies, under a sandbox CSP.
#[test]
fn the_operators_credential_never_reaches_the_harness() {
    let hive = Hive::start(&["alice"]);
    let seen = fake_page(
        &hive.page_socket("alice"),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
         Set-Cookie: hive_operator=planted; Path=/\r\nContent-Security-Policy: script-src *\r\n\
         X-Agent: 1\r\nContent-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}",
    );
    let cookie = format!("hive_operator={}; other=1", hive.token);
    let bearer = hive.bearer();
    let origin = hive.dashboard.clone();
    let (status, head, body) = hive.http(
        "GET",
        "/agent/alice/api/state?limit=3",
        &[
            ("Cookie", &cookie),
            ("Authorization", &bearer),
            ("Accept", "application/json"),
            ("Last-Event-ID", "7"),
        ],
        "",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("set-cookie"), "{head}");
    assert!(!head.contains("x-agent"), "{head}");
    assert!(
        head.contains("content-security-policy: sandbox; default-src 'none'"),
        "{head}"
    );
    let (status, _, _) = hive.http(
        "POST",
        "/agent/alice/api/model",
        &[JSON, ("Cookie", &cookie), ("Origin", &origin)],
        r#"{"model":"opus"}"#,
    );
    assert_eq!(status, 200);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("GET /api/state?limit=3 HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].to_ascii_lowercase().contains("last-event-id: 7"),
        "{}",
        seen[0]
    );
    assert!(
        seen[1].starts_with("POST /api/model HTTP/1.1\r\n"),
        "{}",
        seen[1]
    );
    assert!(seen[1].ends_with(r#"{"model":"opus"}"#), "{}", seen[1]);
    for request in &seen {
        let lower = request.to_ascii_lowercase();
        assert!(!request.contains(&hive.token), "{request}");
        assert!(!lower.contains("cookie:"), "{request}");
        assert!(!lower.contains("authorization:"), "{request}");
        assert!(!lower.contains("other=1"), "{request}");
    }
}

/// A message from the operator is core's: through the dashboard it lands
/// in the agent's inbox from `operator` without touching the harness; on
/// the page socket itself (where the agent could post) it is no endpoint.
#[test]
fn only_core_sends_as_the_operator() {
    let hive = Hive::start(&["alice", "bob"]);
    let seen = fake_page(
        &hive.page_socket("alice"),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    let bearer = hive.bearer();
    let (status, _, body) = hive.http(
        "POST",
        "/agent/alice/api/send",
        &[JSON, ("Authorization", &bearer)],
        r#"{"body":"from the page"}"#,
    );
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let inbox = hive.recv("alice", 0, 8);
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (&inbox[0]["from"], &inbox[0]["body"]),
        (&Value::from("operator"), &Value::from("from the page"))
    );
    assert!(seen.lock().unwrap().is_empty(), "the harness was asked");
    let (status, _, _) = hive.http(
        "POST",
        "/agent/nobody/api/send",
        &[JSON, ("Authorization", &bearer)],
        r#"{"body":"x"}"#,
    );
    assert_eq!(status, 404);

    // The real harness: its page socket takes no message as the operator,
    // and the agent socket no longer has a verb for one.
    let _bob = Page::start(&hive, "bob");
    let (status, _, _) = unix_http(
        &hive.page_socket("bob"),
        "POST",
        "/api/send",
        &[JSON],
        r#"{"body":"FORGED"}"#,
    );
    assert!(status == 404 || status == 405, "{status}");
    let refused = hive.agent("bob", r#"{"cmd":"operator_msg","body":"FORGED"}"#);
    assert!(refused.contains("unknown verb"), "{refused}");
    let state: Value = serde_json::from_str(&hive.http_get("/api/state")).unwrap();
    assert!(!state["messages"].to_string().contains("FORGED"), "{state}");
    // What the page socket does serve reaches the browser through core.
    let state: Value = serde_json::from_str(&hive.http_get("/agent/bob/api/state")).unwrap();
    assert!(state.is_object(), "{state}");
    let page = hive.http_get("/agent/bob/");
    assert!(
        page.contains("assets/agent.js"),
        "core serves the page itself"
    );
}

/// A live event of the real harness arrives through the proxy while the
/// stream stays open; a stand-in shows each event is passed on before the
/// next one exists.
#[test]
fn events_stream_through_the_proxy() {
    let hive = Hive::start(&["alice", "bob"]);
    let _bob = Page::start(&hive, "bob");
    let bearer = hive.bearer();
    let addr = hive.dashboard.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /agent/bob/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\n\
         Accept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (code, _, body) = hive.http(
        "POST",
        "/agent/bob/api/new-session",
        &[JSON, ("Authorization", &bearer)],
        "{}",
    );
    assert_eq!(code, 200, "{body}");
    let mut line = String::new();
    while !line.contains("the next turn starts a new session") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
    }

    // Event by event: the first is through before the second is written.
    let socket = hive.page_socket("alice");
    let listener = UnixListener::bind(&socket).unwrap();
    let (go, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = [0u8; 1024];
        let _ = conn.read(&mut head).unwrap();
        conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
        conn.write_all(chunk("data: FIRST\n\n").as_bytes()).unwrap();
        wait.recv().unwrap();
        conn.write_all(chunk("data: SECOND\n\n").as_bytes())
            .unwrap();
        conn.write_all(b"0\r\n\r\n").unwrap();
    });
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /agent/alice/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !line.contains("data: FIRST") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
    }
    go.send(()).unwrap();
    while !line.contains("data: SECOND") {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
    }
}

/// A link planted where the page socket (or the page dir) should be is
/// refused with a 502 that says so, and nothing is connected to.
#[test]
fn planted_links_are_not_followed() {
    let hive = Hive::start(&["alice", "bob"]);
    let bob = fake_page(
        &hive.page_socket("bob"),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    let bearer = hive.bearer();
    let get = |name: &str| {
        hive.http(
            "GET",
            &format!("/agent/{name}/api/state"),
            &[("Authorization", &bearer)],
            "",
        )
    };
    let alice = hive.page_socket("alice");
    std::os::unix::fs::symlink(hive.page_socket("bob"), &alice).unwrap();
    let (status, _, body) = get("alice");
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("alice's page: page.sock is a symbolic link: refusing to follow it"),
        "{body}"
    );
    std::fs::remove_file(&alice).unwrap();
    std::os::unix::fs::symlink(hive.host_socket(), &alice).unwrap();
    let (status, _, body) = get("alice");
    assert_eq!(status, 502, "{body}");
    // The page dir itself a link to bob's.
    let dir = alice.parent().unwrap();
    std::fs::remove_file(&alice).unwrap();
    std::fs::remove_dir(dir).unwrap();
    std::os::unix::fs::symlink(hive.page_socket("bob").parent().unwrap(), dir).unwrap();
    let (status, _, body) = get("alice");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not a directory"), "{body}");
    // Bob's own page works, and it is the only request bob ever saw.
    assert_eq!(get("bob").0, 200);
    assert_eq!(bob.lock().unwrap().len(), 1, "{:?}", bob.lock().unwrap());
    // Host.sock saw no HTTP either: it still answers its own protocol.
    assert!(hive.host(r#"{"cmd":"list"}"#).contains(r#""ok":true"#));
}
