//! The egress proxy through the real daemon: each agent's egress socket
//! (bound at daemon start and at spawn) reaches the operator's model
//! endpoint and nothing else on the host, under the deployed `network`
//! policy, which a deploy changes for the next connection.
#![allow(clippy::disallowed_methods)] // one test starts the real binary directly

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::Hive;
use crate::support::commit;

/// A loopback listener standing in for the model: HTTP requests are
/// answered with the `Via` they carried (`/sse`: one event, then the last
/// one once `release` is set); anything else is echoed.
struct Upstream {
    port: u16,
    connections: Arc<AtomicUsize>,
    release: Arc<AtomicBool>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (seen, go) = (connections.clone(), release.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                seen.fetch_add(1, Ordering::SeqCst);
                let go = go.clone();
                std::thread::spawn(move || answer(stream, &go));
            }
        });
        Upstream {
            port,
            connections,
            release,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn answer(stream: TcpStream, release: &AtomicBool) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    if !first.contains(" HTTP/1.1") {
        // Tunnelled bytes: echo lines back.
        let _ = out.write_all(first.as_bytes());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let _ = writeln!(out, "{line}");
        }
        return;
    }
    let mut via = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("via")
        {
            via = v.trim().to_owned();
        }
    }
    if first.starts_with("POST /sse ") {
        let _ = out.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\nevent: message_start\ndata: {}\n\n",
        );
        let _ = out.flush();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !release.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = out.write_all(b"event: message_stop\ndata: {}\n\n");
        return;
    }
    let body = format!("{} via {via}", first.trim());
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Sends `request` on a fresh egress connection: status line and body.
fn ask(socket: &Path, request: &str) -> (String, String, UnixStream) {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (
        status.trim().to_owned(),
        String::from_utf8(body).unwrap().trim().to_owned(),
        stream,
    )
}

fn connect(socket: &Path, target: &str) -> (String, String, UnixStream) {
    ask(
        socket,
        &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    )
}

fn get(socket: &Path, url: &str) -> (String, String) {
    let (status, body, _) = ask(
        socket,
        &format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    (status, body)
}

fn egress_socket(hive: &Hive, name: &str) -> std::path::PathBuf {
    hive.agent_socket(name).with_file_name("egress.sock")
}

#[test]
fn an_agent_reaches_the_model_endpoint_and_nothing_else_on_the_host() {
    let model = Upstream::start();
    let other = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state/agents/coder/state")).unwrap();
    let base_url = format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{}", model.port);
    let hive = Hive::start_with(dir, "none", &["--agent-env", &base_url]);
    let socket = egress_socket(&hive, "coder");
    let model_at = format!("127.0.0.1:{}", model.port);

    // CONNECT to the model endpoint: a tunnel, bytes flow both ways.
    let (status, _, mut tunnel) = connect(&socket, &model_at);
    assert_eq!(status, "HTTP/1.1 200 OK");
    tunnel.write_all(b"ping through the tunnel\n").unwrap();
    let mut echo = String::new();
    BufReader::new(&tunnel).read_line(&mut echo).unwrap();
    assert_eq!(echo, "ping through the tunnel\n");
    // Absolute form: forwarded with the proxy's Via.
    let (status, body) = get(&socket, &format!("http://{model_at}/v1/models?x=1"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "GET /v1/models?x=1 HTTP/1.1 via 1.1 hive-egress");
    assert_eq!(model.connections(), 2);
    // A streamed answer is passed on as it comes, not buffered: the first
    // event arrives while the model still holds back the last one.
    let mut sse = UnixStream::connect(&socket).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        sse,
        "POST http://{model_at}/sse HTTP/1.1\r\nHost: {model_at}\r\nConnection: close\r\ncontent-length: 2\r\n\r\n{{}}"
    )
    .unwrap();
    let mut reader = BufReader::new(sse);
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.starts_with("data:")) {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{lines:?}");
        lines.push(line);
    }
    assert!(
        lines.iter().any(|l| l.contains("event: message_start")),
        "{lines:?}"
    );
    model.release.store(true, Ordering::SeqCst);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("event: message_stop"), "{rest}");
    assert_eq!(model.connections(), 3);

    // Anything else on loopback: refused, and never connected to.
    let other_at = format!("127.0.0.1:{}", other.port);
    let refusal = format!(
        "egress to {other_at} refused: 127.0.0.1 is the host's loopback, never reachable from an agent (agent coder's network policy is \"model\")"
    );
    let (status, body, _) = connect(&socket, &other_at);
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 403 Forbidden", refusal.as_str())
    );
    let (status, body) = get(&socket, &format!("http://{other_at}/api/send"));
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 403 Forbidden", refusal.as_str())
    );
    // The model's port under another name is not the model endpoint.
    let (status, body, _) = connect(&socket, &format!("localhost:{}", model.port));
    assert_eq!(status, "HTTP/1.1 403 Forbidden", "{body}");
    // The dashboard, in both forms.
    let dashboard = hive.dashboard.trim_start_matches("http://").to_owned();
    let (status, body, _) = connect(&socket, &dashboard);
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert_eq!(
        body,
        format!(
            "egress to {dashboard} refused: {dashboard} is the hive's own listening address, never reachable from an agent"
        )
    );
    let (status, _) = get(&socket, &format!("http://{dashboard}/api/state"));
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    // Cloud metadata.
    let (status, body) = get(&socket, "http://169.254.169.254/latest/meta-data/");
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert!(body.contains("169.254.169.254 is link-local"), "{body}");
    // Not a proxy request at all.
    let (status, _) = get(&socket, "/relative");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");

    assert_eq!(other.connections(), 0);
    assert_eq!(model.connections(), 3);
}

#[test]
fn the_daemon_refuses_a_model_endpoint_on_its_own_dashboard() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args([
            "--runtime",
            "none",
            "--dashboard",
            &format!("127.0.0.1:{port}"),
        ])
        .args([
            "--agent-env",
            &format!("ANTHROPIC_BASE_URL=http://localhost:{port}/"),
        ])
        .env("HIVE_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the model endpoint localhost:{port} (ANTHROPIC_BASE_URL) is the dashboard's own address 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn a_deploy_changes_the_policy_for_the_next_connection() {
    let model = Upstream::start();
    let base_url = format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{}", model.port);
    let hive = Hive::start_with(
        tempfile::tempdir().unwrap(),
        "process",
        &[
            "--manager-port",
            "18640",
            "--agent-ports",
            "18641-18650",
            "--agent-env",
            &base_url,
        ],
    );
    let json = |line: String| -> Value { serde_json::from_str(&line).unwrap() };
    let queued = json(hive.agent("manager", r#"{"cmd":"request_spawn","name":"coder"}"#));
    hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"]));
    let socket = egress_socket(&hive, "coder");
    let model_at = format!("127.0.0.1:{}", model.port);

    // Spawned with the template's default, "model".
    assert_eq!(connect(&socket, &model_at).0, "HTTP/1.1 200 OK");
    let proposed = hive.state_dir().join("proposed/coder/config");
    let sha = commit(
        &proposed,
        &[("agent.toml", "model = \"sonnet\"\nnetwork = \"none\"\n")],
        "no network",
    );
    let queued = json(hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"coder","commit_ref":"{sha}"}}"#),
    ));
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"])),
        r#"{"version":1,"ok":true}"#
    );
    let (status, body, _) = connect(&socket, &model_at);
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert_eq!(
        body,
        format!("egress to {model_at} refused: agent coder's network policy is \"none\"")
    );
    let (status, _) = get(&socket, &format!("http://{model_at}/"));
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    assert_eq!(model.connections(), 1);

    // The manager's own socket is served too, under its own policy.
    assert_eq!(
        connect(&egress_socket(&hive, "manager"), &model_at).0,
        "HTTP/1.1 200 OK"
    );
}
