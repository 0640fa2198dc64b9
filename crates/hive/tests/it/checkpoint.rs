//! Checkpoints over the link (`hive-state/1`) on the real daemon, `process`
//! runtime, `--agent-transport tls`: an agent's `/state` copied into core's
//! kept file and back into an empty `/state` by its harness at start; and
//! the agent as adversary: a stream nobody asked for, one answered with
//! another agent's credential, one over the cap, one cut short, and a
//! checkpoint whose entries leave `/state` — core keeps the last good
//! checkpoint, the harness writes nothing outside `/state`, and no agent
//! fetches another's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_agent::link::Dialer;
use hive_proto::link::{ALPN_STATE, PageOpen, RestoreOffer, StateOpen};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::Hive;
use crate::tls::{dialer_of, json, linked, linked_hive, spawn, within};

fn state(hive: &Hive, name: &str) -> PathBuf {
    hive.state_dir().join("agents").join(name).join("state")
}

fn checkpoints(hive: &Hive, name: &str) -> PathBuf {
    hive.state_dir()
        .join("agents")
        .join(name)
        .join("checkpoints")
}

fn kept(hive: &Hive, name: &str) -> Option<Vec<u8>> {
    std::fs::read(checkpoints(hive, name).join("state.tar")).ok()
}

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `hive checkpoint <name>` once its harness's state tunnel is up (it
/// opens after the agent socket `linked` looks for).
fn checkpoint_when_linked(hive: &Hive, name: &str) -> String {
    let request = format!(r#"{{"cmd":"checkpoint","name":"{name}"}}"#);
    let mut answer = String::new();
    within("a checkpoint", || {
        answer = hive.host(&request);
        !answer.contains("not linked")
    });
    ok(&answer);
    answer
}

fn ok(line: &str) {
    assert!(line.starts_with(r#"{"version":1,"ok":true"#), "{line}");
}

#[test]
fn a_checkpoint_comes_back_into_an_empty_state_after_a_restore() {
    let hive = linked_hive("process", "127.0.0.1:19310", ("19311", "19312-19319"), &[]);
    spawn(&hive, "eng");
    within("eng's harness to link", || linked(&hive, "eng"));
    let notes = state(&hive, "eng").join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("remember.txt"), "the plan").unwrap();
    std::os::unix::fs::symlink("notes/remember.txt", state(&hive, "eng").join("plan")).unwrap();

    let answer = checkpoint_when_linked(&hive, "eng");
    let row = &json(&answer)["agent_statuses"][0];
    let bytes = row["checkpoint_bytes"].as_u64().unwrap();
    assert_eq!(kept(&hive, "eng").unwrap().len() as u64, bytes);
    assert!(row["checkpoint_at"].is_string(), "{row}");
    // Kept opaquely: one file, nothing of it unpacked on the host.
    assert_eq!(names(&checkpoints(&hive, "eng")), ["state.tar"]);
    // `hive status` shows it.
    let status = json(&hive.host(r#"{"cmd":"agent_status"}"#));
    assert_eq!(status["agent_statuses"][0]["checkpoint_bytes"], bytes);

    // One host: nothing to move to, and nothing queued.
    let refused = hive.host(r#"{"cmd":"move","name":"eng","node":"n2"}"#);
    assert!(refused.contains("schedules across hosts"), "{refused}");
    ok(&hive.host(r#"{"cmd":"pending"}"#));
    assert!(
        !hive
            .host(r#"{"cmd":"pending"}"#)
            .contains(r#""kind":"move""#)
    );

    // The manager is never moved (it runs on core's node).
    let refused = hive.host(r#"{"cmd":"move","name":"manager","node":"n2"}"#);
    assert!(refused.contains("manager cannot be moved"), "{refused}");

    // A second checkpoint replaces the first, which is kept one round.
    let first = kept(&hive, "eng").unwrap();
    std::fs::write(notes.join("later.txt"), "more").unwrap();
    checkpoint_when_linked(&hive, "eng");
    let second = kept(&hive, "eng").unwrap();
    assert_ne!(second, first);
    assert_eq!(
        std::fs::read(checkpoints(&hive, "eng").join("state.prev.tar")).unwrap(),
        first
    );
    assert_eq!(
        names(&checkpoints(&hive, "eng")),
        ["state.prev.tar", "state.tar"]
    );

    // A kill takes no checkpoint (nothing the agent sends delays it or
    // replaces the kept one); then /state is lost, as on a dead node, and
    // the next start restores it (the marker a move sets).
    std::fs::write(notes.join("after.txt"), "not kept").unwrap();
    ok(&hive.host(r#"{"cmd":"kill","name":"eng"}"#));
    assert_eq!(kept(&hive, "eng").unwrap(), second);
    std::fs::remove_dir_all(state(&hive, "eng")).unwrap();
    std::fs::create_dir(state(&hive, "eng")).unwrap();
    let marker = checkpoints(&hive, "eng").join("restore-pending");
    std::fs::write(&marker, "").unwrap();
    ok(&hive.host(r#"{"cmd":"start","scope":{"agent_names":["eng"]}}"#));
    within("the restore", || !marker.exists());
    assert_eq!(
        std::fs::read_to_string(notes.join("remember.txt")).unwrap(),
        "the plan"
    );
    assert_eq!(
        std::fs::read_to_string(state(&hive, "eng").join("plan")).unwrap(),
        "the plan"
    );
    assert_eq!(
        std::fs::read_to_string(notes.join("later.txt")).unwrap(),
        "more"
    );
    assert!(!notes.join("after.txt").exists());
    assert!(!state(&hive, "eng").join(".hive-restore.tar").exists());
    // And the agent runs on it: its harness is linked and answers.
    within("eng linked again", || linked(&hive, "eng"));
}

/// A tar of `entries` (path, body) written raw (the tar crate's own
/// builder refuses `..`), with `end`ing blocks or cut short.
pub(crate) fn raw_tar(entries: &[(&str, &[u8])], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end {
        out.resize(out.len() + 1024, 0);
    }
    out
}

/// Opens a state connection with `open` as its first line.
async fn state_conn(
    dialer: &Dialer,
    open: &StateOpen,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut stream = dialer.dial(ALPN_STATE).await.unwrap();
    let line = format!("{}\n", serde_json::to_string(open).unwrap());
    stream.write_all(line.as_bytes()).await.unwrap();
    stream
}

/// Sends `bytes` as the answer to `ask` on `dialer`'s credential.
async fn answer(dialer: &Dialer, ask: &PageOpen, bytes: &[u8]) {
    let open = StateOpen::Checkpoint {
        stream: ask.stream.clone(),
    };
    let mut stream = state_conn(dialer, &open).await;
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    // Core closes when it is done with it (or at once, refused).
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
}

#[test]
fn a_hostile_harness_keeps_no_checkpoint_core_did_not_ask_for_and_restores_nothing_outside_state() {
    let link = "127.0.0.1:19320";
    let hive = linked_hive(
        "process",
        link,
        ("19321", "19322-19329"),
        &["--checkpoint-cap", "4000000"],
    );
    spawn(&hive, "a");
    spawn(&hive, "b");
    within("a and b to link", || {
        linked(&hive, "a") && linked(&hive, "b")
    });
    std::fs::write(state(&hive, "a").join("good.txt"), "good").unwrap();
    checkpoint_when_linked(&hive, "a");
    // a's harness stops; its credential stays
    // a's until a new container is made, and the test holds a copy.
    ok(&hive.host(r#"{"cmd":"kill","name":"a"}"#));
    let good = kept(&hive, "a").unwrap();
    let keep = tempfile::tempdir().unwrap();
    let as_a = dialer_of(&hive, "a", link, keep.path());
    let as_b = dialer_of(&hive, "b", link, keep.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let host_socket = hive.host_socket();
    let checkpoint_a = move || {
        let socket = host_socket.clone();
        std::thread::spawn(move || {
            crate::support::roundtrip(&socket, b"{\"cmd\":\"checkpoint\",\"name\":\"a\"}\n")
        })
    };

    rt.block_on(async {
        // A stream nobody asked for: closed, nothing kept.
        let open = StateOpen::Checkpoint {
            stream: "0".repeat(32),
        };
        let mut unasked = state_conn(&as_a, &open).await;
        let _ = unasked
            .write_all(&raw_tar(&[("planted", b"x")], true))
            .await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), unasked.read_to_end(&mut sink)).await;
        assert_eq!(kept(&hive, "a").unwrap(), good);

        // The test is a's harness now: its state tunnel hears core's asks.
        let tunnel = state_conn(&as_a, &StateOpen::Tunnel).await;
        let mut asks = BufReader::new(tunnel).lines();

        // b answers the stream core asked of a: refused, the previous kept.
        let (asked, ask) = ask_through(&hive, "a", &mut asks).await;
        let mut next_ask = async || -> PageOpen {
            let line = tokio::time::timeout(Duration::from_secs(20), asks.next_line())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            serde_json::from_str(&line).unwrap()
        };
        answer(&as_b, &ask, &raw_tar(&[("from-b", b"x")], true)).await;
        let said = tokio::task::spawn_blocking(move || asked.join().unwrap())
            .await
            .unwrap();
        assert!(said.contains(r#""ok":false"#), "{said}");
        assert!(said.contains("previous one"), "{said}");
        assert_eq!(kept(&hive, "a").unwrap(), good);

        // Over the cap, then cut short: refused, the previous kept.
        for (bytes, words) in [
            (
                raw_tar(&[("big", &vec![7u8; 4_100_000])], true),
                "over the cap",
            ),
            (raw_tar(&[("short", b"x")], false), "not a whole tar"),
        ] {
            let asked = checkpoint_a();
            let ask = next_ask().await;
            answer(&as_a, &ask, &bytes).await;
            let said = tokio::task::spawn_blocking(move || asked.join().unwrap())
                .await
                .unwrap();
            assert!(said.contains(words), "{said}");
            assert_eq!(kept(&hive, "a").unwrap(), good);
            assert_eq!(names(&checkpoints(&hive, "a")), ["state.tar"]);
        }

        // a's own tar with entries that leave /state: core keeps it (it is
        // a's, opaque)...
        let evil = raw_tar(
            &[
                ("fine.txt", b"x"),
                ("../escaped", b"x"),
                ("/tmp/abs-escaped", b"x"),
            ],
            true,
        );
        let asked = checkpoint_a();
        let ask = next_ask().await;
        answer(&as_a, &ask, &evil).await;
        let said = tokio::task::spawn_blocking(move || asked.join().unwrap())
            .await
            .unwrap();
        assert!(said.contains(r#""ok":true"#), "{said}");
        drop(asks);

        // ...and b's credential never fetches a's checkpoint, pending or
        // not: it is offered its own (none).
        std::fs::write(checkpoints(&hive, "a").join("restore-pending"), "").unwrap();
        let stream = state_conn(&as_b, &StateOpen::Restore).await;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        let offer: RestoreOffer = serde_json::from_str(&line).unwrap();
        assert_eq!(offer.bytes, None, "{line}");
    });

    // a starts with that restore pending: its harness refuses the
    // checkpoint, writes nothing (inside or outside /state) and runs no
    // turn; the marker stays for another try.
    std::fs::remove_dir_all(state(&hive, "a")).unwrap();
    std::fs::create_dir(state(&hive, "a")).unwrap();
    hive.host(r#"{"cmd":"start","scope":{"agent_names":["a"]}}"#);
    within("a's harness to give up", || {
        let row = json(&hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["a"]}}"#));
        row["agent_statuses"][0]["failed"] == true
    });
    assert!(checkpoints(&hive, "a").join("restore-pending").exists());
    assert!(!hive.state_dir().join("agents/a/escaped").exists());
    assert!(!Path::new("/tmp/abs-escaped").exists());
    assert_eq!(names(&state(&hive, "a")), Vec::<String>::new());
    let logs = hive.host(r#"{"cmd":"logs","name":"a","lines":50}"#);
    assert!(logs.contains("restore"), "{logs}");

    // b has a restore pending but no checkpoint kept: core offers
    // nothing at all, and its harness does not run on the empty /state.
    ok(&hive.host(r#"{"cmd":"kill","name":"b"}"#));
    assert!(kept(&hive, "b").is_none());
    std::fs::create_dir_all(checkpoints(&hive, "b")).unwrap();
    std::fs::write(checkpoints(&hive, "b").join("restore-pending"), "").unwrap();
    hive.host(r#"{"cmd":"start","scope":{"agent_names":["b"]}}"#);
    within("b's harness to give up", || {
        let row = json(&hive.host(r#"{"cmd":"agent_status","scope":{"agent_names":["b"]}}"#));
        row["agent_statuses"][0]["failed"] == true
    });
    assert!(checkpoints(&hive, "b").join("restore-pending").exists());
    let why = std::fs::read_to_string(checkpoints(&hive, "b").join("restore-failed")).unwrap();
    assert!(why.contains("no checkpoint"), "{why}");
    let logs = hive.host(r#"{"cmd":"logs","name":"b","lines":50}"#);
    assert!(logs.contains("without an offer"), "{logs}");
}

/// Asks core for a checkpoint of `name` (on a thread: it answers when the
/// take ended) until the test's tunnel hears the ask; core registers a
/// tunnel a moment after its first line, and refuses as not linked until
/// then.
async fn ask_through<L>(
    hive: &Hive,
    name: &str,
    asks: &mut tokio::io::Lines<L>,
) -> (std::thread::JoinHandle<String>, PageOpen)
where
    L: tokio::io::AsyncBufRead + Unpin,
{
    loop {
        let socket = hive.host_socket();
        let request = format!("{{\"cmd\":\"checkpoint\",\"name\":\"{name}\"}}\n");
        let asked =
            std::thread::spawn(move || crate::support::roundtrip(&socket, request.as_bytes()));
        match tokio::time::timeout(Duration::from_secs(3), asks.next_line()).await {
            Ok(line) => {
                return (
                    asked,
                    serde_json::from_str::<PageOpen>(&line.unwrap().unwrap()).unwrap(),
                );
            }
            Err(_) => {
                let said = tokio::task::spawn_blocking(move || asked.join().unwrap())
                    .await
                    .unwrap();
                assert!(said.contains("not linked"), "{said}");
            }
        }
    }
}

#[test]
fn a_purge_cancels_the_checkpoint_being_taken_and_leaves_nothing_of_it() {
    let link = "127.0.0.1:19330";
    let hive = linked_hive("process", link, ("19331", "19332-19339"), &[]);
    spawn(&hive, "a");
    within("a to link", || linked(&hive, "a"));
    std::fs::write(state(&hive, "a").join("good.txt"), "good").unwrap();
    checkpoint_when_linked(&hive, "a");
    ok(&hive.host(r#"{"cmd":"kill","name":"a"}"#));
    let keep = tempfile::tempdir().unwrap();
    let as_a = dialer_of(&hive, "a", link, keep.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The test is a's harness: it answers the ask with part of a tar
        // and stalls, the stream open.
        let tunnel = state_conn(&as_a, &StateOpen::Tunnel).await;
        let mut asks = BufReader::new(tunnel).lines();
        let (asked, ask) = ask_through(&hive, "a", &mut asks).await;
        let open = StateOpen::Checkpoint {
            stream: ask.stream.clone(),
        };
        let mut stalled = state_conn(&as_a, &open).await;
        let part = raw_tar(&[("big", &vec![7u8; 200_000])], false);
        stalled.write_all(&part[..100_000]).await.unwrap();
        stalled.flush().await.unwrap();
        within("the take to write its temp file", || {
            names(&checkpoints(&hive, "a"))
                .iter()
                .any(|n| n.starts_with(".incoming-"))
        });

        let socket = hive.host_socket();
        let purged = tokio::task::spawn_blocking(move || {
            crate::support::roundtrip(
                &socket,
                b"{\"cmd\":\"destroy\",\"name\":\"a\",\"purge\":true}\n",
            )
        })
        .await
        .unwrap();
        ok(&purged);
        // Bounded: a take the purge did not end would wait out its timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !asked.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the take went on after a was purged"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let said = asked.join().unwrap();
        assert!(said.contains(r#""ok":false"#), "{said}");
        assert!(said.contains("being purged"), "{said}");
        assert!(said.contains("cancelled"), "{said}");
        // The harness may go on sending: nothing lands anywhere.
        let _ = stalled.write_all(&part[100_000..]).await;
        let _ = stalled.shutdown().await;
        drop(stalled);
    });
    // Nothing of a remains on the host: no checkpoint, no temp file, not
    // its dir.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!hive.state_dir().join("agents/a").exists());
    assert!(!names(&hive.state_dir().join("agents")).contains(&"a".to_owned()));

    // A take asked for now is refused: a is gone.
    let refused = hive.host(r#"{"cmd":"checkpoint","name":"a"}"#);
    assert!(refused.contains(r#""ok":false"#), "{refused}");
    assert!(!hive.state_dir().join("agents/a").exists());
}

#[test]
fn a_link_planted_at_the_checkpoints_dir_or_its_files_is_never_followed() {
    let link = "127.0.0.1:19360";
    let hive = linked_hive("process", link, ("19361", "19362-19369"), &[]);
    spawn(&hive, "a");
    within("a to link", || linked(&hive, "a"));
    std::fs::write(state(&hive, "a").join("good.txt"), "good").unwrap();
    // A host dir, and a hostile process with access to core's agent dir
    // plants a link to it where the checkpoints dir would be.
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host data").unwrap();
    let host_unchanged = || {
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host data");
        assert_eq!(names(host.path()), ["secret"]);
    };
    std::os::unix::fs::symlink(host.path(), checkpoints(&hive, "a")).unwrap();
    let request = r#"{"cmd":"checkpoint","name":"a"}"#;
    let mut refused = String::new();
    within("a refused checkpoint", || {
        refused = hive.host(request);
        !refused.contains("not linked")
    });
    assert!(refused.contains(r#""ok":false"#), "{refused}");
    assert!(refused.contains("symbolic link planted"), "{refused}");
    host_unchanged();

    // A real dir with links at the file names: replaced by core's own
    // files, never written through.
    std::fs::remove_file(checkpoints(&hive, "a")).unwrap();
    std::fs::create_dir(checkpoints(&hive, "a")).unwrap();
    for name in ["state.tar", "state.prev.tar"] {
        std::os::unix::fs::symlink(&secret, checkpoints(&hive, "a").join(name)).unwrap();
    }
    checkpoint_when_linked(&hive, "a");
    host_unchanged();
    let kept = checkpoints(&hive, "a").join("state.tar");
    assert!(std::fs::symlink_metadata(&kept).unwrap().is_file());
    assert_ne!(std::fs::read(&kept).unwrap(), b"host data");
    assert_eq!(names(&checkpoints(&hive, "a")), ["state.tar"]);
}
