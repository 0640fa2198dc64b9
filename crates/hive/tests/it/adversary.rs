//! The agent as the adversary, on each sandboxing backend: the real daemon
//! runs an agent whose engine is a stand-in script, and that script — the
//! code a prompt-injected model could write — tries every breach the
//! security review found. The test asserts the effects from the host: no
//! approval, spawn or operator message created, host files untouched, the
//! scripted model reached through the proxy and nothing else, the deployed
//! limits and policy in force, and the kernel surface a seccomp filter
//! closes (keyring, bpf, userfaultfd, nested user namespaces, io_uring)
//! closed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Hive, eventually};

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

/// A loopback HTTP server that answers every request `200 ok` and keeps
/// each request's head: the stand-in for the operator's model endpoint, or
/// for any other host service an agent must not reach.
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    seen.lock().unwrap().push(head);
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    );
                });
            }
        });
        Recorder { port, heads }
    }

    fn requests(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Whether `runtime` can run here; under CI it must.
pub(crate) fn available(runtime: &str) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    match rt.block_on(hive_runtime::open(
        runtime,
        &hive_runtime::HiveId::of(&std::env::temp_dir()),
    )) {
        Ok(_) => true,
        Err(reason) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have the {runtime} runtime: {reason}"
            );
            eprintln!("skipping the {runtime} runtime: {reason}");
            false
        }
    }
}

/// Syscalls by number through ctypes, from `/shared`: exits 0 only if
/// every one named on its command line succeeded (the arguments are ones
/// that succeed without a seccomp filter).
const SYSCALLS_PY: &str = r#"import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
arm = os.uname().machine == "aarch64"
buf = ctypes.create_string_buffer(256)
# name: ((x86_64 number, aarch64 number), arguments)
calls = {
    "getpid": ((39, 172), ()),
    "keyctl": ((250, 219), (0, -3, 0)),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "bpf": ((321, 280), (0, buf, 64)),
    "userfaultfd": ((323, 282), (1,)),  # UFFD_USER_MODE_ONLY
    "unshare": ((272, 97), (0x10000000,)),  # CLONE_NEWUSER
    "io_uring_setup": ((425, 425), (1, buf)),
}
ok = True
for name in sys.argv[1:]:
    (x86, a64), args = calls[name]
    args = [a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args]
    ok = ok and libc.syscall(ctypes.c_long(a64 if arm else x86), *args) >= 0
sys.exit(0 if ok else 1)
"#;

/// The syscalls of [`SYSCALLS_PY`] the runtime's seccomp filter lets
/// through here: Docker's default profile allowed `io_uring_*` before
/// 25.0 (the host's engine decides, on docker and swarm alike).
fn syscalls_left_open(runtime: &str) -> Vec<&'static str> {
    if !matches!(runtime, "docker" | "swarm") {
        return Vec::new();
    }
    let version = crate::hives::docker(&["version", "--format", "{{.Server.Version}}"]);
    let major: u32 = version.trim().split('.').next().unwrap().parse().unwrap();
    if major < 25 {
        eprintln!(
            "docker {}: io_uring is open in its default seccomp profile",
            version.trim()
        );
        vec!["syscall_io_uring"]
    } else {
        Vec::new()
    }
}

/// The engine stand-in: each probe writes `name=yes` when the breach
/// worked, `name=no` when it did not.
fn script(
    dashboard_port: u16,
    model_port: u16,
    other_port: u16,
    codex_model_port: u16,
    run_dir: &Path,
    target: &Path,
    link: Option<&Link>,
) -> String {
    let run = run_dir.display();
    let target = target.display();
    // On the link the control files are the harness's own copy (in its
    // link dir); the host is reached at the network's gateway.
    let control = if link.is_some() {
        "/run/hive/link/control"
    } else {
        "/run/hive/control"
    };
    let link_probes = link.map_or_else(String::new, |link| {
        let gateway = link.addr.rsplit_once(':').map_or("", |(host, _)| host);
        let addr = &link.addr;
        format!(
            r#"probe dashboard_gateway 'curl -sS --noproxy "*" -m 3 -o /dev/null http://{gateway}:{dashboard_port}/'
probe other_gateway 'curl -sSf --noproxy "*" -m 3 http://{gateway}:{other_port}/gateway'
probe link_plain 'curl -sSf --noproxy "*" -m 3 http://{addr}/'
probe link_without_credential 'curl -sSf --noproxy "*" -m 3 -k https://{addr}/'
probe dialled_plain 'curl -sSf --noproxy "*" -m 3 http://$HIVE_LINK_ADDR/'
probe dialled_without_credential 'curl -sSf --noproxy "*" -m 3 -k https://$HIVE_LINK_ADDR/'
probe dialled_reached 'curl -sk --noproxy "*" -m 3 -o /dev/null https://$HIVE_LINK_ADDR/; c=$?; [ $c -ne 3 ] && [ $c -ne 6 ] && [ $c -ne 7 ] && [ $c -ne 28 ]'
probe dialled_other_port 'curl -sS --noproxy "*" -m 3 -o /dev/null http://${{HIVE_LINK_ADDR%:*}}:{dashboard_port}/'
"#
        )
    });
    format!(
        r#"#!/bin/sh
prompt=$(timeout 5 cat)
case "$prompt" in *again*) phase=2 ;; *) phase=1 ;; esac
out=/state/findings.$phase.$(date +%s%N)
probe() {{ if sh -c "$2" >/dev/null 2>&1; then echo "$1=yes"; else echo "$1=no"; fi >> "$out.tmp"; }}
probe uid_known '[ -n "$(id -u)" ]'
probe uid_root '[ "$(id -u)" = 0 ]'
probe control_read 'grep -q sha {control}/deployed.json'
probe shadow 'cat /etc/shadow'
probe kmsg '[ -e /dev/kmsg ]'
probe host_sock '[ -e {run}/host.sock ]'
probe peer_page '[ -e {run}/manager/page/page.sock ]'
probe control_write 'echo x > {control}/paused'
{link_probes}
probe dashboard_direct 'curl -sS --noproxy "*" -m 3 -o /dev/null http://127.0.0.1:{dashboard_port}/'
probe spawn_direct 'curl -sSf --noproxy "*" -m 3 -X POST -H "content-type: application/json" -d "{{\"name\":\"clone\"}}" http://127.0.0.1:{dashboard_port}/api/request-spawn'
probe spawn_proxy 'curl -sSf -m 3 -X POST -H "content-type: application/json" -d "{{\"name\":\"clone\"}}" http://127.0.0.1:{dashboard_port}/api/request-spawn'
probe send_proxy 'curl -sSf -m 3 -X POST -H "content-type: application/json" -d "{{\"to\":\"manager\",\"body\":\"forged\"}}" http://127.0.0.1:{dashboard_port}/api/send'
probe other_direct 'curl -sSf --noproxy "*" -m 3 http://127.0.0.1:{other_port}/direct'
probe other_proxy 'curl -sSf -m 3 http://127.0.0.1:{other_port}/proxied'
probe metadata_proxy 'curl -sSf -m 3 http://169.254.169.254/latest/meta-data/'
probe model_direct 'curl -sSf --noproxy "*" -m 3 http://127.0.0.1:{model_port}/direct'
probe model_proxy "curl -sSf -m 5 -H 'x-phase: $phase' http://127.0.0.1:{model_port}/v1/probe"
probe codex_model_proxy 'curl -sSf -m 3 http://127.0.0.1:{codex_model_port}/v1/responses'
probe codex_bin '[ -x /run/hive/bin/codex ] && [ "$HIVE_CODEX_BIN" = /run/hive/bin/codex ]'
probe codex_write 'echo planted >> /run/hive/bin/codex'
probe codex_replace 'rm -f /run/hive/bin/codex'
probe syscall_control 'python3 /shared/syscalls.py getpid'
probe syscall_keyctl 'python3 /shared/syscalls.py keyctl'
probe syscall_bpf 'python3 /shared/syscalls.py bpf'
probe syscall_userfaultfd 'python3 /shared/syscalls.py userfaultfd'
probe syscall_unshare_user 'python3 /shared/syscalls.py unshare'
probe syscall_io_uring 'python3 /shared/syscalls.py io_uring_setup'
probe capabilities 'grep -Eq "^Cap(Bnd|Eff|Prm):[[:space:]]*0*[1-9a-f]" /proc/self/status'
probe new_privs 'grep -Eq "^NoNewPrivs:[[:space:]]*0" /proc/self/status'
probe new_privs_known 'grep -Eq "^NoNewPrivs:[[:space:]]*[01]$" /proc/self/status'
probe setuid_ran '/shared/suid-cat /proc/self/status | grep -q "^Uid:"'
probe setuid_root '/shared/suid-cat /proc/self/status | grep -Eq "^Uid:[[:space:]]+[0-9]+[[:space:]]+0[[:space:]]"'
cat /proc/self/cgroup > "$out.cgroup" 2>/dev/null
# Links for core to follow: the old marker paths, pointing at host paths.
ln -sfn {target}/file /state/.hive-paused 2>/dev/null
ln -sfn {target} /state/.hive 2>/dev/null
mv "$out.tmp" "$out"
echo '{{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s","num_turns":1,"duration_ms":1,"total_cost_usd":0,"usage":{{"input_tokens":1,"output_tokens":1}}}}'
"#
    )
}

/// Waits for the first findings file of `phase` in `state` (the engine
/// may run more than once per message: retries, redeliveries).
fn findings(state: &Path, phase: u8) -> std::collections::BTreeMap<String, String> {
    let prefix = format!("findings.{phase}.");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut files: Vec<PathBuf> = std::fs::read_dir(state)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let name = p.file_name().unwrap().to_string_lossy().into_owned();
                        name.starts_with(&prefix)
                            && !name.ends_with(".tmp")
                            && !name.ends_with(".cgroup")
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        if let Some(first) = files.first() {
            let text = std::fs::read_to_string(first).unwrap();
            return text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no findings in {}",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The memory limit of the cgroup a process of agent `name` runs in, read
/// on the host.
fn memory_limit_of(name: &str) -> Option<u64> {
    let wanted = format!("HIVE_AGENT={name}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|v| v == wanted.as_bytes())
                .then(|| hive_runtime::cgroup::memory_limit_of(pid))
                .flatten()
        })
}

/// Sends a lifecycle `request`, waiting out (up to 60 s) a lifecycle
/// action already in flight on the agent, as an operator would.
pub(crate) fn when_idle(hive: &Hive, request: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = hive.host(request);
        if !answer.contains(" is already ") || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn approvals(hive: &Hive) -> String {
    hive.host(r#"{"cmd":"pending"}"#)
}

/// Where a linked hive's link listens and the docker network it is on.
pub(crate) struct Link {
    pub(crate) addr: String,
    pub(crate) network: String,
}

pub(crate) fn hostile_agent(runtime: &str, ports: &str, manager_port: &str, link: Option<&Link>) {
    if !available(runtime) {
        return;
    }
    // A host dir the agent cannot see, for the links it plants to name.
    let host = tempfile::tempdir().unwrap();
    let target = host.path();
    std::fs::write(target.join("file"), "host file\n").unwrap();

    let model = Recorder::start();
    let other = Recorder::start();
    // The codex engine's endpoint: not this (claude) agent's to reach.
    let codex_model = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("state/shared");
    std::fs::create_dir_all(&shared).unwrap();
    // The codex CLI core binds read-only into every container.
    let codex = dir.path().join("codex");
    std::fs::write(&codex, "#!/bin/sh\necho codex stand-in\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&codex, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let codex_arg = codex.display().to_string();
    let codex_url = format!("OPENAI_BASE_URL=http://127.0.0.1:{}/v1", codex_model.port);
    // Docker's containers outlive `hive serve`: removed when done.
    let _cleanup = crate::hives::Cleanup(vec![hive_runtime::HiveId::of(&dir.path().join("state"))]);
    // Swarm's services and networks too (dropped first).
    let _services = (runtime == "swarm")
        .then(|| crate::swarm::Cleanup(hive_runtime::HiveId::of(&dir.path().join("state"))));
    let model_url = format!("ANTHROPIC_BASE_URL=http://127.0.0.1:{}", model.port);
    let mut args = vec![
        "--manager-port",
        manager_port,
        "--agent-ports",
        ports,
        "--agent-env",
        &model_url,
        "--agent-env",
        "ANTHROPIC_API_KEY=sk-test",
        "--agent-env",
        "HIVE_CLAUDE_BIN=/shared/engine.sh",
        "--agent-env",
        &codex_url,
        "--codex-bin",
        &codex_arg,
    ];
    if let Some(link) = link {
        args.extend([
            "--agent-transport",
            "tls",
            "--link-listen",
            &link.addr,
            "--link-network",
            &link.network,
        ]);
    } else if runtime == "swarm" {
        args.extend(["--agent-transport", "unix"]);
    }
    let hive = Hive::start_with(dir, runtime, &args);
    let hive_id = hive_runtime::HiveId::of(&hive.state_dir());
    let dashboard_port: u16 = hive.dashboard.rsplit(':').next().unwrap().parse().unwrap();
    let shared = if runtime == "swarm" {
        // `/shared` is the node's volume, made by the manager's task.
        eventually("the manager to run", || {
            crate::lifecycle::status(&hive, "manager")["running"] == true
        });
        volume_dir(&format!("h-{hive_id}-shared"))
    } else {
        hive.state_dir().join("shared")
    };
    std::fs::write(shared.join("syscalls.py"), SYSCALLS_PY).unwrap();
    // A setuid-root binary in its reach (the test runs as root), run by
    // the agents' group alone (no other host user, while the test lasts).
    {
        use std::os::unix::fs::PermissionsExt;
        let suid = shared.join("suid-cat");
        std::fs::copy("/usr/bin/cat", &suid).unwrap();
        let agents = hive_core::sandbox_files::AGENT_GID;
        std::os::unix::fs::chown(&suid, Some(0), Some(agents)).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4750)).unwrap();
    }
    let engine = shared.join("engine.sh");
    std::fs::write(
        &engine,
        script(
            dashboard_port,
            model.port,
            other.port,
            codex_model.port,
            &hive.run_dir(),
            target,
            link,
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let queued = json(&hive.host(r#"{"cmd":"request_spawn","name":"mole"}"#));
    let id = queued["approvals"][0]["id"].as_i64().unwrap();
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{id}}}"#)),
        r#"{"version":1,"ok":true}"#
    );
    let before = approvals(&hive);
    let state = if runtime == "swarm" {
        volume_dir(&format!("h-mole-{hive_id}-state-0"))
    } else {
        hive.state_dir().join("agents/mole/state")
    };

    // Turn 1, under the default policy ("model").
    hive.host(r#"{"cmd":"send","to":"mole","body":"do your worst"}"#);
    let found = findings(&state, 1);
    eprintln!("{runtime}, turn 1: {found:?}");
    let mut expect_no = vec![
        "uid_root",
        "shadow",
        "kmsg",
        "host_sock",
        "peer_page",
        "dashboard_direct",
        "spawn_direct",
        "spawn_proxy",
        "send_proxy",
        "other_direct",
        "other_proxy",
        "metadata_proxy",
        "model_direct",
        "codex_model_proxy",
        "codex_write",
        "codex_replace",
        "syscall_keyctl",
        "syscall_bpf",
        "syscall_userfaultfd",
        "syscall_unshare_user",
        "syscall_io_uring",
        // No capability in any set, bounding included, and
        // `no_new_privs`: a setuid binary of the bound `/usr` makes it
        // neither root nor capable. On swarm below API 1.44, where the
        // Engine cannot set it, the harness's own does.
        "capabilities",
        "new_privs",
        "setuid_root",
    ];
    let open = syscalls_left_open(runtime);
    expect_no.retain(|probe| !open.contains(probe));
    if link.is_some() {
        // The link dir is the harness's own (the agent's uid): the agent
        // may write its copy of the pause marker, and the harness goes by
        // core's word instead (turn 2 below runs after that write).
        expect_no.extend([
            "dashboard_gateway",
            "other_gateway",
            "link_plain",
            "link_without_credential",
            "dialled_plain",
            "dialled_without_credential",
            "dialled_other_port",
        ]);
    } else {
        expect_no.push("control_write");
    }
    for probe in expect_no {
        assert_eq!(
            found.get(probe).map(String::as_str),
            Some("no"),
            "{probe}: {found:?}"
        );
    }
    // The positive controls: the tools the probes use work in there.
    let mut expect_yes = vec![
        "model_proxy",
        "uid_known",
        "control_read",
        "codex_bin",
        "syscall_control",
        "new_privs_known",
        "setuid_ran",
    ];
    if link.is_some() {
        // What it dials answers (core's handshake, refused without a
        // credential): the `dialled_*` refusals above are real ones.
        expect_yes.push("dialled_reached");
    }
    for probe in expect_yes {
        assert_eq!(
            found.get(probe).map(String::as_str),
            Some("yes"),
            "{probe}: {found:?}"
        );
    }
    if runtime == "swarm" && link.is_some() {
        // The relay the agent dials (a plain container): no capability,
        // `no_new_privs`, its init and the relay itself.
        let relay = format!("h-link-relay-{hive_id}");
        let pid = crate::hives::docker(&["inspect", "-f", "{{.State.Pid}}", &relay]);
        let pid = pid.trim();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let pids: Vec<&str> = std::iter::once(pid)
            .chain(children.split_whitespace())
            .collect();
        assert!(pids.len() > 1, "the relay under its init: {pids:?}");
        for pid in pids {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            for (field, value) in [
                ("CapBnd:", "0000000000000000"),
                ("CapEff:", "0000000000000000"),
                ("NoNewPrivs:", "1"),
            ] {
                let line = status.lines().find_map(|l| l.strip_prefix(field));
                assert_eq!(line.map(str::trim), Some(value), "{relay}: {status}");
            }
        }
    }
    assert!(other.requests().is_empty(), "{:?}", other.requests());
    assert!(
        codex_model.requests().is_empty(),
        "a claude agent reached the codex endpoint: {:?}",
        codex_model.requests()
    );
    assert_eq!(
        std::fs::read_to_string(&codex).unwrap(),
        "#!/bin/sh\necho codex stand-in\n"
    );
    let model_requests = model.requests();
    assert!(
        model_requests.iter().any(|h| h.contains("/v1/probe")),
        "{model_requests:?}"
    );
    assert!(
        !model_requests.iter().any(|h| h.contains("/direct")),
        "{model_requests:?}"
    );
    // Nothing the agent tried created anything on the operator's side.
    assert_eq!(approvals(&hive), before);
    let operator_inbox = hive.host(r#"{"cmd":"list"}"#);
    assert!(!operator_inbox.contains("clone"), "{operator_inbox}");
    let manager_mail = hive.agent("manager", r#"{"cmd":"recent","limit":50}"#);
    assert!(!manager_mail.contains("forged"), "{manager_mail}");

    // The links it planted: pausing, resuming and restarting touch nothing
    // they point at.
    for request in [
        r#"{"cmd":"set_paused","name":"mole","paused":true}"#,
        r#"{"cmd":"set_paused","name":"mole","paused":false}"#,
        r#"{"cmd":"restart","name":"mole"}"#,
    ] {
        assert_eq!(
            when_idle(&hive, request),
            r#"{"version":1,"ok":true}"#,
            "{request}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(target.join("file")).unwrap(),
        "host file\n"
    );
    assert!(!target.join("deployed.json").exists());

    // Lock it down: no network at all, and a memory limit.
    let repo = hive.state_dir().join("proposed/mole/config");
    let toml = std::fs::read_to_string(repo.join("agent.toml")).unwrap();
    let sha = crate::support::commit(
        &repo,
        &[(
            "agent.toml",
            &format!("{toml}\nnetwork = \"none\"\n[resources]\nmemory = \"256M\"\n"),
        )],
        "lock down",
    );
    let queued = json(&hive.agent(
        "manager",
        &format!(r#"{{"cmd":"request_apply_commit","agent":"mole","commit_ref":"{sha}"}}"#),
    ));
    assert_eq!(queued["kind"], "approval_queued", "{queued}");
    assert_eq!(
        hive.host(&format!(r#"{{"cmd":"approve","id":{}}}"#, queued["id"])),
        r#"{"version":1,"ok":true}"#
    );
    eventually("mole's memory limit", || {
        memory_limit_of("mole") == Some(256 << 20)
    });
    hive.host(r#"{"cmd":"send","to":"mole","body":"again"}"#);
    let found = findings(&state, 2);
    eprintln!("{runtime}, turn 2: {found:?}");
    assert_eq!(
        found.get("model_proxy").map(String::as_str),
        Some("no"),
        "{found:?}"
    );
    assert_eq!(
        found.get("model_direct").map(String::as_str),
        Some("no"),
        "{found:?}"
    );
    let after = model.requests();
    assert!(
        !after.iter().any(|h| h.contains("x-phase: 2")),
        "the model was reached under network = \"none\": {after:?}"
    );
    drop(hive);
}

/// The host dir of the engine's volume `name` (swarm's `/state` and
/// `/shared` on this node).
pub(crate) fn volume_dir(name: &str) -> PathBuf {
    let dir = crate::hives::docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", name]);
    assert!(!dir.trim().is_empty(), "no volume {name}");
    PathBuf::from(dir.trim())
}

#[test]
fn bwrap() {
    hostile_agent("bwrap", "17101-17110", "17100", None);
}

#[test]
fn nspawn() {
    hostile_agent("nspawn", "17201-17210", "17200", None);
}

#[test]
fn docker() {
    hostile_agent("docker", "17301-17310", "17300", None);
}

/// Docker with the harness on the link: an internal network of the
/// test's own, core's link on its gateway — the same probes, plus the
/// host's addresses on that network and the link port without TLS or a
/// credential.
#[test]
fn docker_on_the_link() {
    if !available("docker") {
        return;
    }
    let network = crate::tls::Network::create(&format!("hive-adv-link-{}", std::process::id()));
    let link = Link {
        addr: format!("{}:17390", network.gateway()),
        network: network.0.clone(),
    };
    hostile_agent("docker", "17391-17399", "17389", Some(&link));
}

/// Swarm on the link: the same probes, plus the relay's (what the agent
/// dials): no plain or credential-less answer, no other port.
#[test]
fn swarm_on_the_link() {
    let Some(_lease) = crate::swarm::lease() else {
        return;
    };
    let network = crate::tls::Network::create(&format!("hive-adv-swarm-{}", std::process::id()));
    let link = Link {
        addr: format!("{}:17880", network.gateway()),
        network: network.0.clone(),
    };
    hostile_agent("swarm", "17881-17889", "17879", Some(&link));
}
