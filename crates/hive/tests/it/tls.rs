//! The link (`--agent-transport tls`) on the real daemon, on the `process`
//! runtime and on docker (an internal network of the test's own, core
//! listening on its gateway): a real `claude` turn whose harness reaches
//! core only over TLS — agent socket, egress proxy, control files, the page
//! through its tunnel —; and the credential as identity: another agent's
//! is that agent, a destroyed agent's is cut on its open connection and
//! refused on a new one, none or a foreign CA's gets no handshake, and
//! the hostile agent gets neither the dashboard nor another agent's page
//! nor egress past the proxy over the link.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hive_agent::link::{Dialer, LinkConfig};
use hive_proto::link::{ALPN_AGENT, ALPN_EGRESS, ALPN_PAGE_STREAM};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::e2e::{ModelServer, Reply, last_user_text};
use crate::support::Hive;

pub(crate) fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Polls `check` for up to 120 s (a harness start plus a CLI turn).
pub(crate) fn within(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hive on `runtime` whose agents reach core over the link at `link`,
/// with `extra` arguments (the daemon's own `HIVE_CLAUDE_BIN` unset).
pub(crate) fn linked_hive(runtime: &str, link: &str, ports: (&str, &str), extra: &[&str]) -> Hive {
    linked_hive_in(tempfile::tempdir().unwrap(), runtime, link, ports, extra)
}

/// [`linked_hive`] in `dir` (a hive started there before, say).
pub(crate) fn linked_hive_in(
    dir: tempfile::TempDir,
    runtime: &str,
    link: &str,
    ports: (&str, &str),
    extra: &[&str],
) -> Hive {
    let mut args = vec![
        "--manager-port",
        ports.0,
        "--agent-ports",
        ports.1,
        "--agent-transport",
        "tls",
        "--link-listen",
        link,
    ];
    args.extend_from_slice(extra);
    Hive::start_with_env(dir, runtime, &args, &[("HIVE_CLAUDE_BIN", None)])
}

pub(crate) fn spawn(hive: &Hive, name: &str) {
    assert_eq!(
        hive.host(&json!({"cmd":"spawn","name":name}).to_string()),
        r#"{"version":1,"ok":true}"#
    );
}

/// `name`'s credential dir (core writes it in the agent's control dir).
fn credentials(hive: &Hive, name: &str) -> PathBuf {
    hive.state_dir()
        .join("agents")
        .join(name)
        .join("control/credential")
}

/// `name`'s harness has linked: its local agent socket exists.
pub(crate) fn linked(hive: &Hive, name: &str) -> bool {
    hive.run_dir()
        .join("agents")
        .join(name)
        .join("link/mcp.sock")
        .exists()
}

/// A dialer with a copy of `name`'s credential (it outlives a revoke).
pub(crate) fn dialer_of(hive: &Hive, name: &str, link: &str, keep: &Path) -> Dialer {
    let copy = keep.join(name);
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(credentials(hive, name).join(file), copy.join(file)).unwrap();
    }
    Dialer::load(&LinkConfig {
        addr: link.to_owned(),
        credentials: copy,
    })
    .unwrap()
}

/// One open agent-protocol connection over the link.
pub(crate) struct AgentConn {
    lines: BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl AgentConn {
    pub(crate) async fn open(dialer: &Dialer) -> std::io::Result<AgentConn> {
        Ok(AgentConn {
            lines: BufReader::new(dialer.dial(ALPN_AGENT).await?),
        })
    }

    /// One request; the answer line, or `None` when core closed instead.
    pub(crate) async fn ask(&mut self, request: &str) -> Option<String> {
        let sent = self
            .lines
            .get_mut()
            .write_all(format!("{request}\n").as_bytes())
            .await;
        sent.ok()?;
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.lines.read_line(&mut line))
            .await
            .expect("core answers or closes within 10 s");
        match read {
            Ok(n) if n > 0 => Some(line),
            _ => None,
        }
    }
}

/// An HTTP/1.1 exchange on the egress channel: the status line and body.
async fn egress(dialer: &Dialer, request: &str) -> (String, String) {
    let mut stream = dialer.dial(ALPN_EGRESS).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, answer)
}

/// A hive on `runtime` with its agents on the link at `link`, `extra`
/// arguments and the scripted model: `eng` is spawned and runs a real
/// `claude` turn — the model reached through the egress proxy only, the
/// turn acked, the page served through the harness's tunnel.
pub(crate) fn linked_turn(
    runtime: &str,
    claude: &Path,
    link: &str,
    ports: (&str, &str),
    extra: &[&str],
) -> (Hive, ModelServer) {
    let model = ModelServer::start(|_| Reply::Text("linked turn done".into()));
    let mut args = crate::e2e::model_args(&model, claude);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hive = linked_hive(runtime, link, ports, &args);
    spawn(&hive, "eng");
    // On swarm the harness's link dir is a tmpfs of its own: the turn
    // below is the sign it linked.
    if runtime != "swarm" {
        within("eng's harness to link", || linked(&hive, "eng"));
    }
    hive.host(r#"{"cmd":"send","to":"eng","body":"LINK-CHECK please"}"#);
    within("eng's model request", || {
        model
            .requests()
            .iter()
            .any(|r| last_user_text(r).contains("LINK-CHECK"))
    });
    // Through the egress proxy (over the link), and acked over the link.
    assert_eq!(model.direct(), 0);
    within("eng's turn to be acked", || {
        hive.agent("eng", r#"{"cmd":"status"}"#) == r#"{"kind":"status","unread":0}"#
    });
    // The agent page, proxied by core through the harness's tunnel: no
    // page socket of core's page dir is involved.
    assert!(!hive.page_socket("eng").exists());
    within("the turn on the page", || {
        let state = json(&hive.http_get("/agent/eng/api/state"));
        state["agent"] == "eng" && state["last_turn"]["result_kind"] == "ok"
    });
    (hive, model)
}

#[test]
fn a_claude_turn_runs_with_its_harness_linked_over_tls() {
    let Some(claude) = crate::e2e::claude() else {
        return;
    };
    let _serial = crate::e2e::serial();
    let (hive, _model) = linked_turn(
        "process",
        &claude,
        "127.0.0.1:17690",
        ("17691", "17692-17699"),
        &[],
    );
    // The control files came over the link into the harness's own dir.
    let local_control = hive.run_dir().join("agents/eng/link/control");
    assert!(local_control.join("deployed.json").exists());
    // A pause reaches the linked harness's control dir, and leaves it.
    let paused = local_control.join("paused");
    hive.host(r#"{"cmd":"set_paused","name":"eng","paused":true}"#);
    within("the pause marker over the link", || paused.exists());
    hive.host(r#"{"cmd":"set_paused","name":"eng","paused":false}"#);
    within("the pause marker gone", || !paused.exists());
}

/// The link dir is the agent's to write: the hostile agent plants a
/// deployed config there (its own role prompt) and makes the harness's copy
/// over it fail. After a restart the harness still acts on core's config:
/// the next model request carries none of the planted prompt.
#[test]
fn a_linked_harness_acts_on_cores_deployed_config_not_the_link_dirs_copy() {
    let Some(claude) = crate::e2e::claude() else {
        return;
    };
    let _serial = crate::e2e::serial();
    let (hive, model) = linked_turn(
        "process",
        &claude,
        "127.0.0.1:17780",
        ("17781", "17782-17789"),
        &[],
    );
    let control = hive.run_dir().join("agents/eng/link/control");
    let deployed = control.join("deployed.json");
    let mut planted = json(&std::fs::read_to_string(&deployed).unwrap());
    planted["prompt"] = json!("PLANTED-ROLE-PROMPT");
    std::fs::remove_file(&deployed).unwrap();
    std::fs::write(&deployed, planted.to_string()).unwrap();
    std::fs::create_dir(control.join(".deployed.json.tmp")).unwrap();
    assert_eq!(
        hive.host(r#"{"cmd":"restart","name":"eng"}"#),
        r#"{"version":1,"ok":true}"#
    );
    hive.host(r#"{"cmd":"send","to":"eng","body":"SECOND-CHECK please"}"#);
    within("eng's model request after the restart", || {
        model
            .requests()
            .iter()
            .any(|r| last_user_text(r).contains("SECOND-CHECK"))
    });
    let requests = model.requests();
    let after = requests
        .iter()
        .find(|r| last_user_text(r).contains("SECOND-CHECK"))
        .unwrap();
    assert!(
        !after.to_string().contains("PLANTED-ROLE-PROMPT"),
        "the harness took the agent's planted deployed config"
    );
}

/// A docker network of this test's own (internal: no way out; no
/// traffic between containers), removed when dropped.
pub(crate) struct Network(pub(crate) String);

impl Network {
    pub(crate) fn create(name: &str) -> Network {
        crate::hives::docker(&["network", "rm", name]);
        let id = crate::hives::docker(&[
            "network",
            "create",
            "--internal",
            "--label",
            "hyperhive.test=link",
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            name,
        ]);
        assert!(!id.trim().is_empty(), "docker network create {name}");
        Network(name.to_owned())
    }

    /// The host's address on the network (core's link listens there).
    pub(crate) fn gateway(&self) -> String {
        crate::hives::docker(&[
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
            &self.0,
        ])
        .trim()
        .to_owned()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        crate::hives::docker(&["network", "rm", &self.0]);
    }
}

#[test]
fn docker_runs_a_claude_turn_with_its_harness_linked_over_tls() {
    let Some(claude) = crate::e2e::claude() else {
        return;
    };
    if !crate::adversary::available("docker") {
        return;
    }
    let _serial = crate::e2e::serial();
    let network = Network::create(&format!("hive-link-test-{}", std::process::id()));
    let link = format!("{}:17790", network.gateway());
    let (hive, _model) = linked_turn(
        "docker",
        &claude,
        &link,
        ("17791", "17792-17799"),
        &["--link-network", &network.0],
    );
    // Docker's containers outlive `hive serve`: removed when done.
    let _cleanup = crate::hives::Cleanup(vec![hive_runtime::HiveId::of(&hive.state_dir())]);
    assert_eq!(
        crate::adversary::when_idle(&hive, r#"{"cmd":"destroy","name":"eng"}"#),
        r#"{"version":1,"ok":true}"#
    );
}

#[test]
fn a_link_credential_is_its_agent_alone_and_dies_with_its_container() {
    let link = "127.0.0.1:17680";
    let hive = linked_hive("process", link, ("17681", "17682-17689"), &[]);
    spawn(&hive, "a");
    spawn(&hive, "b");
    within("a and b to link", || {
        linked(&hive, "a") && linked(&hive, "b")
    });
    let keep = tempfile::tempdir().unwrap();
    let a = dialer_of(&hive, "a", link, keep.path());
    let b = dialer_of(&hive, "b", link, keep.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dashboard = hive.dashboard.trim_start_matches("http://").to_owned();

    rt.block_on(async {
        // Each credential is its own agent: b's is b, never a.
        let mut as_a = AgentConn::open(&a).await.unwrap();
        let mut as_b = AgentConn::open(&b).await.unwrap();
        let whoami = r#"{"cmd":"whoami"}"#;
        assert!(as_a.ask(whoami).await.unwrap().contains(r#""name":"a""#));
        assert!(as_b.ask(whoami).await.unwrap().contains(r#""name":"b""#));
        // b sends as b, whatever it writes.
        let sent = as_b
            .ask(r#"{"cmd":"send","to":"operator","body":"from the link"}"#)
            .await
            .unwrap();
        assert!(sent.contains(r#""kind":"ok""#), "{sent}");
        let recent = json(&hive.agent("a", r#"{"cmd":"recent","limit":5}"#));
        assert!(
            !recent.to_string().contains("from the link"),
            "b's message is not a's: {recent}"
        );

        // The hostile agent over the link: no dashboard, no link port, no
        // metadata through the egress proxy; the dashboard is no channel.
        for target in [dashboard.as_str(), link, "169.254.169.254:80"] {
            let (status, answer) = egress(
                &a,
                &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
            )
            .await;
            assert!(status.contains(" 403 "), "CONNECT {target}: {answer}");
        }
        let (status, answer) = egress(
            &a,
            &format!("GET http://{dashboard}/api/state HTTP/1.1\r\nHost: {dashboard}\r\n\r\n"),
        )
        .await;
        assert!(status.contains(" 403 "), "{answer}");
        // Another agent's page: a stream nobody asked for, or one named
        // by a guessed id, is closed without a byte.
        let mut stream = a.dial(ALPN_PAGE_STREAM).await.unwrap();
        stream
            .write_all(b"00000000000000000000000000000000\nGET / HTTP/1.1\r\nHost: page\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
        assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
        // A channel core does not serve (plain HTTP to the dashboard's
        // API, say) gets nothing.
        let mut http = a.dial("http/1.1").await;
        if let Ok(stream) = &mut http {
            let _ = stream
                .write_all(b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
            assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
        }

        // Destroy a: its open connection is cut at once, a new one with
        // the same certificate refused; b is untouched; what a left in its
        // link dir does not wait there for the next agent of its name.
        let a_link = hive.run_dir().join("agents/a/link");
        std::fs::write(a_link.join("planted"), "for the next a").unwrap();
        let destroyed = hive.host(r#"{"cmd":"destroy","name":"a"}"#);
        assert_eq!(destroyed, r#"{"version":1,"ok":true}"#);
        assert_eq!(as_a.ask(whoami).await, None, "a's open connection was cut");
        // Refused in the handshake is as good as closed at the first line.
        if let Ok(mut conn) = AgentConn::open(&a).await {
            assert_eq!(conn.ask(whoami).await, None);
        }
        assert!(as_b.ask(whoami).await.unwrap().contains(r#""name":"b""#));
        assert!(!credentials(&hive, "a").exists(), "a's credential removed");
        assert!(!a_link.exists(), "a's link dir removed");

        // No client certificate: no handshake.
        let ca = std::fs::read(credentials(&hive, "b").join("ca.pem")).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.unwrap()).unwrap();
        }
        assert_eq!(anonymous(link, roots.clone()).await, None);

        // A certificate of another CA, for a name core knows: no handshake.
        let foreign = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
        let forged = Dialer::new(
            link,
            roots,
            vec![foreign.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(foreign.signing_key.serialize_der().into()),
        )
        .unwrap();
        if let Ok(mut conn) = AgentConn::open(&forged).await {
            assert_eq!(conn.ask(whoami).await, None);
        }
    });
}

use rustls::pki_types::pem::PemObject;

/// An agent request over TLS without a client certificate: the answer,
/// or `None` when core refused.
async fn anonymous(link: &str, roots: rustls::RootCertStore) -> Option<String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_AGENT.as_bytes().to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(link).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from(hive_proto::link::SERVER_NAME).ok()?;
    let mut stream = connector.connect(name, tcp).await.ok()?;
    stream.write_all(b"{\"cmd\":\"whoami\"}\n").await.ok()?;
    let mut line = String::new();
    let n = BufReader::new(stream).read_line(&mut line).await.ok()?;
    (n > 0).then_some(line)
}

#[test]
fn a_linked_agent_is_reached_again_after_a_daemon_restart() {
    let link = "127.0.0.1:17670";
    let ports = ("17671", "17672-17679");
    let hive = linked_hive("process", link, ports, &[]);
    spawn(&hive, "a");
    let page_ok = |hive: &Hive| {
        let bearer = hive.bearer();
        let (status, _, body) = hive.http(
            "GET",
            "/agent/a/api/state",
            &[("Authorization", &bearer)],
            "",
        );
        status == 200 && json(&body)["agent"] == "a"
    };
    within("a's page through its tunnel", || page_ok(&hive));
    let dir = hive.stop();
    let hive = linked_hive_in(dir, "process", link, ports, &[]);
    // The same CA; a's harness links again with the credential core has.
    within("a's page through its tunnel after the restart", || {
        page_ok(&hive)
    });
    let keep = tempfile::tempdir().unwrap();
    let a = dialer_of(&hive, "a", link, keep.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = AgentConn::open(&a).await.unwrap();
        let answer = conn.ask(r#"{"cmd":"whoami"}"#).await.unwrap();
        assert!(answer.contains(r#""name":"a""#), "{answer}");
    });
}

/// `hive link-relay` (the swarm's one way to core, shared by every agent)
/// with few descriptors, a hostile agent holding connections until its
/// accept fails: the relay must go on piping once they close, not exit
/// and cut every agent's link.
#[test]
#[allow(clippy::disallowed_methods)] // runs the real binary under prlimit
fn the_link_relay_outlives_running_out_of_descriptors() {
    use std::io::{Read, Write};
    let core = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = core.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in core.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                // The relay's header line first (not echoed).
                let mut byte = [0u8; 1];
                while conn.read_exact(&mut byte).is_ok() && byte != *b"\n" {}
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let listen = "127.0.0.1:17770";
    let mut relay = std::process::Command::new("prlimit")
        .args(["--nofile=24:24", "--"])
        .arg(env!("CARGO_BIN_EXE_hive"))
        .args(["link-relay", "--listen", listen, "--to", &to])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit runs the relay");
    let echoed = |conn: &mut std::net::TcpStream| {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        conn.write_all(b"x").is_ok() && conn.read_exact(&mut byte).is_ok() && byte == *b"x"
    };
    within("the relay to listen", || {
        std::net::TcpStream::connect(listen).is_ok_and(|mut c| echoed(&mut c))
    });
    // The hostile agent: more connections than the relay has descriptors.
    let held: Vec<_> = (0..40)
        .filter_map(|_| std::net::TcpStream::connect(listen).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    drop(held);
    std::thread::sleep(Duration::from_secs(1));
    let alive = relay.try_wait().unwrap().is_none();
    let pipes = alive && std::net::TcpStream::connect(listen).is_ok_and(|mut c| echoed(&mut c));
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(alive, "the relay exited when its accept failed");
    assert!(pipes, "the relay pipes no new connection once they closed");
}
