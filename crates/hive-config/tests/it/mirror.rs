//! The mirror: main and every tag arrive, credentials travel only through
//! the callback, and a down mirror changes nothing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use git2::Repository;
use hive_config::{Error, MirrorConfig, TagKind};

use crate::support::{Hive, agent_toml, config_files, files_containing, name, refs_of};

const TOKEN: &str = "tok-7f3a91c2-do-not-leak";

/// An agent with a deploy (lightweight tags) and a denial (annotated).
fn hive_with_history() -> Hive {
    let hive = Hive::new();
    let coder = name("coder");
    hive.repos.ensure(&coder).unwrap();
    let v1 = hive.commit(&coder, &[("agent.toml", Some(&agent_toml("opus")))], "opus");
    let p = hive.repos.prepare(&coder, &v1).unwrap();
    for kind in [TagKind::Proposal, TagKind::Approved, TagKind::Building] {
        hive.repos.tag(&coder, kind, 1, &p.sha).unwrap();
    }
    hive.repos.mark_deployed(&coder, 1).unwrap();
    let v2 = hive.commit(
        &coder,
        &[("agent.toml", Some(&agent_toml("haiku")))],
        "haiku",
    );
    let p = hive.repos.prepare(&coder, &v2).unwrap();
    hive.repos
        .tag(&coder, TagKind::Proposal, 2, &p.sha)
        .unwrap();
    hive.repos.mark_denied(&coder, 2, Some("no")).unwrap();
    hive
}

fn mirror_config(url_template: String) -> MirrorConfig {
    MirrorConfig {
        url_template,
        username: Some("core".to_owned()),
        token: Some(TOKEN.to_owned()),
    }
}

fn assert_no_token_anywhere(hive: &Hive) {
    let configs = config_files(hive.path());
    assert!(configs.len() >= 2, "{configs:?}");
    assert_eq!(
        files_containing(hive.path(), TOKEN),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn pushes_main_and_every_tag_without_storing_the_token() {
    let hive = hive_with_history();
    let coder = name("coder");
    let mirrors = hive.path().join("mirrors");
    let remote = mirrors.join("coder.git");
    Repository::init_bare(&remote).unwrap();

    let config = mirror_config(mirrors.display().to_string());
    hive.repos.mirror(&coder, &config).unwrap();
    let applied = hive.applied_refs(&coder);
    assert_eq!(applied.len(), 8, "main and 7 tags: {applied:?}");
    assert_eq!(refs_of(&remote), applied);

    // Later deploys follow; a force push also repairs a drifted mirror.
    let v3 = hive.commit(
        &coder,
        &[("agent.toml", Some(&agent_toml("sonnet")))],
        "back",
    );
    let p = hive.repos.prepare(&coder, &v3).unwrap();
    hive.repos
        .tag(&coder, TagKind::Proposal, 3, &p.sha)
        .unwrap();
    hive.repos.mark_deployed(&coder, 3).unwrap();
    let other = Repository::open_bare(&remote).unwrap();
    let v0 = other
        .find_reference("refs/tags/deployed/0")
        .unwrap()
        .target()
        .unwrap();
    other
        .reference("refs/heads/main", v0, true, "drift")
        .unwrap();
    hive.repos.mirror(&coder, &config).unwrap();
    assert_eq!(refs_of(&remote), hive.applied_refs(&coder));

    // A `{name}` template and a file:// URL work the same.
    let elsewhere = hive
        .path()
        .join("elsewhere")
        .join("coder")
        .join("config.git");
    Repository::init_bare(&elsewhere).unwrap();
    let template = format!(
        "file://{}/elsewhere/{{name}}/config.git",
        hive.path().display()
    );
    hive.repos.mirror(&coder, &mirror_config(template)).unwrap();
    assert_eq!(refs_of(&elsewhere), hive.applied_refs(&coder));

    assert_no_token_anywhere(&hive);
}

#[test]
fn a_down_mirror_is_an_error_and_changes_nothing() {
    let hive = hive_with_history();
    let coder = name("coder");
    let applied_config = hive.repos.applied_path(&coder).join("config");
    let config_before = std::fs::read(&applied_config).unwrap();
    let refs_before = hive.applied_refs(&coder);

    let missing = hive.path().join("nowhere");
    let err = hive
        .repos
        .mirror(&coder, &mirror_config(missing.display().to_string()))
        .unwrap_err();
    assert!(matches!(err, Error::Mirror { .. }));
    let prefix = format!(
        "mirror push of coder to {}/coder.git failed: ",
        missing.display()
    );
    assert!(err.to_string().starts_with(&prefix), "{err}");

    // Nothing listens on the discard port of loopback.
    let err = hive
        .repos
        .mirror(
            &coder,
            &mirror_config("http://127.0.0.1:9/agent-configs".to_owned()),
        )
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "mirror push of coder to http://127.0.0.1:9/agent-configs/coder.git failed: "
        ),
        "{err}"
    );

    assert_eq!(hive.applied_refs(&coder), refs_before);
    assert_eq!(std::fs::read(&applied_config).unwrap(), config_before);
    assert!(!missing.exists());
    assert_no_token_anywhere(&hive);
}

/// An HTTP server on loopback that answers every request 401 and records
/// each request's `Authorization` header.
fn auth_recorder() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/agent-configs", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        // Bounded: libgit2 asks twice at most before giving up.
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((key, value)) = line.split_once(':')
                    && key.eq_ignore_ascii_case("authorization")
                {
                    auth = Some(value.trim().to_owned());
                }
            }
            record.lock().unwrap().push(auth);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"forge\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, seen)
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn http_credentials_come_from_the_callback_once() {
    let hive = hive_with_history();
    let coder = name("coder");
    let (url, seen) = auth_recorder();
    let err = hive
        .repos
        .mirror(&coder, &mirror_config(url.clone()))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("mirror push of coder to {url}/coder.git failed: ")),
        "{text}"
    );
    assert!(!text.contains(TOKEN), "{text}");
    let seen = seen.lock().unwrap().clone();
    let expected = format!("Basic {}", base64(format!("core:{TOKEN}").as_bytes()));
    assert_eq!(
        seen,
        [None, Some(expected)],
        "asked without, then once with"
    );
    assert_no_token_anywhere(&hive);
}

#[test]
fn no_token_means_no_credentials() {
    let hive = hive_with_history();
    let (url, seen) = auth_recorder();
    let config = MirrorConfig {
        url_template: url,
        username: None,
        token: None,
    };
    let err = hive.repos.mirror(&name("coder"), &config).unwrap_err();
    assert!(
        err.to_string()
            .contains("the remote wants credentials and no mirror token is configured"),
        "{err}"
    );
    assert_eq!(*seen.lock().unwrap(), [None]);
}
