//! Sockets under pressure from their own clients: idle connections, hung-up
//! long-polls and partial lines never starve a socket or grow the daemon
//! without bound. Timings are the benchmark's (`socket_pressure`); these
//! only check that requests are answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use hive_core::listener::MAX_CONNECTIONS;
use hive_proto::MAX_REQUEST_LINE;

use crate::support::{Hive, eventually, read_line};

/// Descriptors the daemon has open.
fn open_fds(hive: &Hive) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", hive.child.id()))
        .unwrap()
        .count()
}

/// One request with a read timeout far below any long-poll's wait.
fn answered(socket: &Path, request: &str) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    writeln!(stream, "{request}").unwrap();
    read_line(&mut BufReader::new(stream))
}

#[test]
fn a_thousand_idle_connections_do_not_starve_host_sock() {
    hive_core::serve::raise_fd_limit();
    let hive = Hive::start(&[]);
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(hive.host_socket()).unwrap())
        .collect();
    assert_eq!(
        answered(&hive.host_socket(), r#"{"cmd":"list"}"#),
        r#"{"version":1,"ok":true,"agents":["manager"]}"#
    );
    // The longest-idle connections made way rather than the newcomer
    // waiting for them.
    let mut oldest = &idle[0];
    oldest
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(oldest.read(&mut [0; 1]).unwrap(), 0, "evicted");
    assert!(open_fds(&hive) < 1000, "the daemon holds at most its cap");
}

#[test]
fn hung_up_long_polls_release_their_slots_at_once() {
    hive_core::serve::raise_fd_limit();
    let hive = Hive::start(&["alice"]);
    let socket = hive.agent_socket("alice");
    let before = open_fds(&hive);
    let pollers: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .write_all(b"{\"cmd\":\"recv\",\"wait_seconds\":180}\n")
                .unwrap();
            stream
        })
        .collect();
    eventually("the daemon to hold every poller", || {
        open_fds(&hive) >= before + MAX_CONNECTIONS
    });
    drop(pollers);
    // With wait_seconds at 180, only hang-up detection frees these within
    // `eventually`'s 10 s.
    eventually("the pollers' descriptors to close", || {
        open_fds(&hive) <= before + 8
    });
    assert_eq!(
        answered(&socket, r#"{"cmd":"status"}"#),
        r#"{"kind":"status","unread":0}"#
    );
}

#[test]
fn a_long_poll_whose_client_stops_writing_is_answered_at_once() {
    let hive = Hive::start(&["alice"]);
    let mut stream = UnixStream::connect(hive.agent_socket("alice")).unwrap();
    stream
        .write_all(b"{\"cmd\":\"recv\",\"wait_seconds\":180}\n")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        read_line(&mut BufReader::new(stream)),
        r#"{"kind":"messages","messages":[],"unread":0}"#
    );
}

#[test]
fn partial_lines_beyond_the_budget_are_refused_and_serving_goes_on() {
    const CLIENTS: usize = 100;
    let hive = Hive::start(&[]);
    let (written, all_written) = std::sync::mpsc::channel();
    let outcomes: Vec<String> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let written = written.clone();
                let socket = hive.host_socket();
                scope.spawn(move || {
                    let mut stream = UnixStream::connect(socket).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    // A whole line's worth, never finished. A refused
                    // client's write fails part-way.
                    let _ = stream.write_all(&vec![b'x'; MAX_REQUEST_LINE]);
                    written.send(()).unwrap();
                    let mut line = String::new();
                    let _ = BufReader::new(stream).read_line(&mut line);
                    line
                })
            })
            .collect();
        for _ in 0..CLIENTS {
            all_written.recv().unwrap();
        }
        // While the partial lines hold what the budget allows, a small
        // request is still read and answered.
        assert_eq!(
            answered(&hive.host_socket(), r#"{"cmd":"list"}"#),
            r#"{"version":1,"ok":true,"agents":["manager"]}"#
        );
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let refused = outcomes
        .iter()
        .filter(|line| {
            line.trim_end()
                == r#"{"version":1,"ok":false,"error":"the daemon is holding too many partial request lines; try again"}"#
        })
        .count();
    let dropped = outcomes.iter().filter(|line| line.is_empty()).count();
    // 64 MiB holds 64 of them; the rest are refused (fewer if the first
    // ones hit the request deadline before the last were written).
    assert!(
        refused > 0 && refused + dropped == CLIENTS,
        "{refused} refused, {dropped} closed unanswered: {outcomes:?}"
    );
    // The budget came back: a line near the maximum is read whole.
    let pad = "x".repeat(MAX_REQUEST_LINE - 100);
    assert_eq!(
        answered(
            &hive.host_socket(),
            &format!(r#"{{"cmd":"list","pad":"{pad}"}}"#)
        ),
        r#"{"version":1,"ok":true,"agents":["manager"]}"#
    );
}
