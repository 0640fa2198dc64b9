//! The dashboard beyond loopback: only with an operator credential, which
//! every request must then present (bearer token or the login cookie).
#![allow(clippy::disallowed_methods)] // runs the real binary directly

use std::io::{Read, Write};
use std::process::Command;

use crate::support::Hive;

const TOKEN: &str = "s3cret-operator-token";

/// One raw HTTP/1.1 request; the status line's code, the head and the body.
fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head[9..12].parse().unwrap();
    (code, head.to_owned(), body.to_owned())
}

#[test]
fn beyond_loopback_needs_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hive"))
        .arg("serve")
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--dashboard", "0.0.0.0:0", "--runtime", "none"])
        .env_remove("HIVE_OPERATOR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("refusing to bind the dashboard to 0.0.0.0:0 without an operator credential"),
        "{stderr}"
    );
}

#[test]
fn every_request_presents_the_credential() {
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
    let base = hive.dashboard.clone();
    let host = base.trim_start_matches("http://").to_owned();

    let (code, _, body) = request(&base, "GET", "/api/state", &[], "");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("operator credential required"), "{body}");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        request(
            &base,
            "GET",
            "/api/state",
            &[("Authorization", &bearer)],
            ""
        )
        .0,
        200
    );
    assert_eq!(
        request(
            &base,
            "GET",
            "/api/state",
            &[("Authorization", "Bearer wrong-token-wrong")],
            ""
        )
        .0,
        401
    );

    assert_eq!(request(&base, "GET", "/login?token=wrong", &[], "").0, 403);
    let (code, head, _) = request(&base, "GET", &format!("/login?token={TOKEN}"), &[], "");
    assert_eq!(code, 303);
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{head}"));
    assert!(
        cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"),
        "{cookie_line}"
    );
    let cookie = format!("hive_operator={TOKEN}");
    assert_eq!(
        request(&base, "GET", "/", &[("Cookie", &cookie)], "").0,
        200
    );

    // Same-origin actions with the cookie work; other origins still do not.
    let origin = format!("http://{host}");
    let json = ("Content-Type", "application/json");
    let send = r#"{"to":"alice","body":"from afar"}"#;
    let ok = request(
        &base,
        "POST",
        "/api/send",
        &[("Cookie", &cookie), ("Origin", &origin), json],
        send,
    );
    assert_eq!(ok.0, 200, "{}", ok.2);
    assert_eq!(hive.recv("alice", 0, 1)[0]["body"], "from afar");
    let evil = request(
        &base,
        "POST",
        "/api/send",
        &[("Cookie", &cookie), ("Origin", "http://evil.example"), json],
        send,
    );
    assert_eq!(evil.0, 403);
    assert_eq!(
        request(
            &base,
            "POST",
            "/api/send",
            &[("Origin", &origin), json],
            send
        )
        .0,
        401
    );
}
