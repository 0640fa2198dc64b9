//! A temp hive layout and a spec builder shared by every backend's tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_proto::AgentName;
use hive_runtime::{ContainerSpec, StateChange};
use tokio::sync::broadcast;

pub struct Layout {
    pub dir: tempfile::TempDir,
}

impl Layout {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A spec running `program args` for `name`, with its dirs created.
    pub fn spec(&self, name: &str, program: &str, args: &[&str]) -> ContainerSpec {
        let name = AgentName::parse(name).unwrap();
        let agent_dir = self.root().join("agents").join(name.as_str());
        let state_dir = agent_dir.join("state");
        let shared_dir = self.root().join("shared");
        let socket = self.root().join("run").join(name.as_str()).join("mcp.sock");
        for dir in [
            &state_dir,
            &shared_dir,
            &socket.parent().unwrap().to_path_buf(),
            &agent_dir.join("page"),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        // A stand-in for the agent socket: a file is enough to bind.
        std::fs::write(&socket, "").unwrap();
        // And for core's egress socket, page dir and control dir.
        let egress_socket = agent_dir.join("egress.sock");
        std::fs::write(&egress_socket, "").unwrap();
        let (page_dir, control_dir) = (agent_dir.join("page"), agent_dir.join("control"));
        std::fs::create_dir_all(&page_dir).unwrap();
        std::fs::create_dir_all(&control_dir).unwrap();
        ContainerSpec {
            name,
            program: PathBuf::from(program),
            engine_bin: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("EXTRA".into(), "1".into())],
            state_dir,
            shared_dir,
            socket,
            binds: Vec::new(),
            log_path: agent_dir.join("container.log"),
            image: None,
            egress_socket,
            page_dir,
            control_dir,
            etc_dir: agent_dir.join("etc"),
            user: None,
            limits: hive_runtime::Limits::default(),
            placement: hive_runtime::Placement::default(),
            transport: hive_runtime::Transport::Unix,
        }
    }
}

/// A test-unique agent name: `<prefix>-<pid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A client of the local Docker Engine.
pub async fn engine() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// The next change for `name`, within 10 s.
pub async fn next_change(rx: &mut broadcast::Receiver<StateChange>, name: &str) -> StateChange {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let change = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no state change within 10 s")
            .unwrap();
        if change.name.as_str() == name {
            return change;
        }
    }
}

/// Polls `check` until it holds or 10 s pass.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- Sandboxes (bwrap, nspawn): a program that reports its view. ---

/// The script a sandbox runs as `/run/hive/bin/hive -c SCRIPT` (the spec's
/// program is `/bin/sh`): it counts its boots, starts a background `sleep`,
/// writes what it sees to `/state/report` (`key=value` lines) and waits,
/// leaving `/state/term` behind if it gets a polite SIGTERM or SIGHUP.
pub const SANDBOX_SCRIPT: &str = r#"
echo "hello from $HIVE_AGENT"
echo boot >> /state/boots
trap 'echo term > /state/term; exit 0' TERM HUP
sleep 1000 &
{
  echo "sleep=$!"
  echo "mnt=$(readlink /proc/self/ns/mnt)"
  echo "pidns=$(readlink /proc/self/ns/pid)"
  echo "pid=$$"
  echo "init=$(tr '\0\n' '  ' < /proc/1/cmdline | cut -c1-40)"
  echo "hostname=$(cat /proc/sys/kernel/hostname)"
  echo "pwd=$(pwd)"
  echo "socket=$(cat /run/hive/mcp.sock)"
  echo "config=$(cat /agents/$HIVE_AGENT/config/name)"
  for p in /usr/x /etc/x /agents/$HIVE_AGENT/config/x; do
    touch "$p" 2>/dev/null && echo "wrote=$p" && rm -f "$p"
  done
  v=$(cat /proc/sys/vm/swappiness)
  (echo "$v" > /proc/sys/vm/swappiness) 2>/dev/null && echo "wrote=/proc/sys"
  mount -o remount,rw,bind /usr 2>/dev/null && echo "remounted=/usr"
  echo written > /state/written && echo "wrote=/state"
  echo "$HIVE_AGENT" > /shared/from-$HIVE_AGENT && echo "wrote=/shared"
  echo "$HIVE_AGENT" > /scratch/from-$HIVE_AGENT && echo "wrote=/scratch"
  for p in "$OWN_STATE" "$OTHER_STATE" "$OTHER_SOCKET" "$OTHER_RUN" /run/hive/mcp.sock; do
    [ -e "$p" ] && echo "seen=$p"
  done
  for v in HIVE_AGENT HIVE_SOCKET HIVE_STATE_DIR HIVE_SHARED_DIR HIVE_PAGE_SOCKET HIVE_RUNTIME HOME EXTRA; do
    eval "echo env.$v=\$$v"
  done
} > /state/report.tmp
mv /state/report.tmp /state/report
wait
"#;

/// Specs for two agents running [`SANDBOX_SCRIPT`]: `name` is the one
/// started, `other` only has its dirs and socket, which `name` must not
/// see. Each socket stand-in holds its agent's name; `name` gets a config
/// repo bound read-only and a scratch dir bound read-write.
pub fn sandbox_specs(layout: &Layout, name: &str, other: &str) -> (ContainerSpec, ContainerSpec) {
    let other = layout.spec(other, "/bin/sh", &["-c", SANDBOX_SCRIPT]);
    let mut spec = layout.spec(name, "/bin/sh", &["-c", SANDBOX_SCRIPT]);
    for s in [&spec, &other] {
        std::fs::write(&s.socket, s.name.as_str()).unwrap();
    }
    let config = layout.root().join("config").join(name);
    let scratch = layout.root().join("scratch");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(config.join("name"), format!("config of {name}")).unwrap();
    spec.binds = vec![
        hive_runtime::Bind {
            host: config,
            container: PathBuf::from(format!("/agents/{name}/config")),
            read_only: true,
        },
        hive_runtime::Bind {
            host: scratch,
            container: PathBuf::from("/scratch"),
            read_only: false,
        },
    ];
    let path = |p: &Path| p.display().to_string();
    spec.env.extend([
        ("OWN_STATE".into(), path(&spec.state_dir)),
        ("OTHER_STATE".into(), path(&other.state_dir)),
        ("OTHER_SOCKET".into(), path(&other.socket)),
        ("OTHER_RUN".into(), path(other.socket.parent().unwrap())),
    ]);
    (spec, other)
}

/// A sandbox's `/state/report`, once written: every value of each key.
pub async fn read_report(spec: &ContainerSpec) -> std::collections::HashMap<String, Vec<String>> {
    let path = spec.state_dir.join("report");
    eventually("the sandbox's report", || path.exists()).await;
    let mut report = std::collections::HashMap::<String, Vec<String>>::new();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let (key, value) = line.split_once('=').unwrap();
        report.entry(key.into()).or_default().push(value.into());
    }
    report
}

/// The one value of `key` in a report.
pub fn one<'r>(report: &'r std::collections::HashMap<String, Vec<String>>, key: &str) -> &'r str {
    match report.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("{key}: expected one value, got {other:?}"),
    }
}

/// The host's view of the isolation a sandbox reported: asserts everything
/// every sandboxing backend promises.
pub fn assert_isolated(
    report: &std::collections::HashMap<String, Vec<String>>,
    spec: &ContainerSpec,
    runtime: &str,
) {
    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    assert_ne!(one(report, "mnt"), host_ns("mnt"), "mount namespace");
    assert_ne!(one(report, "pidns"), host_ns("pid"), "pid namespace");
    assert_eq!(
        one(report, "pid"),
        "2",
        "the program runs under the sandbox's own init"
    );
    assert_eq!(one(report, "hostname"), format!("h-{}", spec.name));
    assert_eq!(one(report, "pwd"), "/state");
    // Only its own socket, under the one path.
    assert_eq!(one(report, "socket"), spec.name.as_str());
    assert_eq!(
        report["seen"],
        ["/run/hive/mcp.sock"],
        "host paths visible inside"
    );
    assert_eq!(one(report, "config"), format!("config of {}", spec.name));
    // Writable: exactly the read-write binds.
    assert_eq!(report["wrote"], ["/state", "/shared", "/scratch"]);
    assert!(
        !report.contains_key("remounted"),
        "remounted the host's /usr read-write"
    );
    let name = spec.name.as_str();
    for (dir, file) in [
        (&spec.state_dir, "written"),
        (&spec.shared_dir, &*format!("from-{name}")),
        (&spec.binds[1].host, &*format!("from-{name}")),
    ] {
        assert!(
            dir.join(file).exists(),
            "{} on the host",
            dir.join(file).display()
        );
    }
    let env = |key: &str| one(report, &format!("env.{key}")).to_owned();
    assert_eq!(env("HIVE_AGENT"), name);
    assert_eq!(env("HIVE_SOCKET"), "/run/hive/mcp.sock");
    assert_eq!(env("HIVE_STATE_DIR"), "/state");
    assert_eq!(env("HIVE_SHARED_DIR"), "/shared");
    assert_eq!(env("HIVE_PAGE_SOCKET"), "/run/hive/page/page.sock");
    assert_eq!(env("HIVE_RUNTIME"), runtime);
    assert_eq!(env("HOME"), "/state");
    assert_eq!(env("EXTRA"), "1");
}

/// Host pids and in-namespace pids of every process in pid namespace `ns`
/// (as `readlink /proc/<pid>/ns/pid` names it).
pub fn pids_in_ns(ns: &str) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let in_ns = std::fs::read_link(entry.path().join("ns/pid"))
            .is_ok_and(|link| link.display().to_string() == ns);
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let inner = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok());
        if let (true, Some(inner)) = (in_ns, inner) {
            found.push((pid, inner));
        }
    }
    found
}

/// The host pid of the background `sleep` a sandbox reported.
pub fn sleep_pid(report: &std::collections::HashMap<String, Vec<String>>) -> u32 {
    let inner: u32 = one(report, "sleep").parse().unwrap();
    let (host, _) = pids_in_ns(one(report, "pidns"))
        .into_iter()
        .find(|(_, pid)| *pid == inner)
        .expect("the sandbox's sleep on the host");
    let cmdline = std::fs::read(format!("/proc/{host}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"sleep\0"), "{host} is not the sleep");
    host
}

/// Asserts, from the host, that the sandbox process `pid` can gain no
/// privilege: no capability in its bounding set and `no_new_privs` set, so
/// no setuid binary it can reach makes it root.
pub fn assert_unprivileged(pid: u32) {
    assert_no_capabilities(pid);
    assert_eq!(status_field(pid, "NoNewPrivs:"), "1", "pid {pid}");
}

/// Asserts, from the host, that the sandbox process `pid` has no
/// capability and can gain none: its bounding set is empty, so even a
/// setuid-root binary it runs has none.
pub fn assert_no_capabilities(pid: u32) {
    assert_eq!(
        status_field(pid, "CapBnd:"),
        "0000000000000000",
        "pid {pid}"
    );
    assert_eq!(
        status_field(pid, "CapEff:"),
        "0000000000000000",
        "pid {pid}"
    );
}

/// A field of `/proc/<pid>/status`, trimmed.
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status: {status}"))
        .to_owned()
}

/// Waits until nothing runs in the pid namespace a sandbox reported, and
/// its `sleep` (host pid `sleep`) is gone.
pub async fn all_gone(report: &std::collections::HashMap<String, Vec<String>>, sleep: u32) {
    let ns = one(report, "pidns").to_owned();
    eventually("every process of the sandbox to be gone", || {
        !Path::new(&format!("/proc/{sleep}")).exists() && pids_in_ns(&ns).is_empty()
    })
    .await;
}

// --- Breaches: an engine stand-in running as the agent tries what a
// hostile agent would, and the host checks that nothing got through. ---

/// The memory limit the breach specs set (256 MiB).
pub const BREACH_MEMORY: u64 = 256 << 20;

/// The script a breach spec runs (as the agent's uid): it tries each
/// breach, writes what it found to `/state/report` (`breach=` lines for
/// anything that got through) and waits.
pub const BREACH_SCRIPT: &str = r#"
sleep 1000 &
{
  echo "pidns=$(readlink /proc/self/ns/pid)"
  echo "netns=$(readlink /proc/self/ns/net)"
  echo "pid=$$"
  echo "uid=$(id -u)"
  echo "user=$(id -un)"
  cat /etc/shadow >/dev/null 2>&1 && echo "breach=read /etc/shadow"
  [ -e /etc/shadow ] && echo "breach=/etc/shadow exists"
  [ -e /dev/kmsg ] && echo "breach=/dev/kmsg exists"
  touch /run/hive/control/planted 2>/dev/null && echo "breach=wrote the control dir"
  echo "control=$(cat /run/hive/control/deployed.json)"
  touch /etc/planted 2>/dev/null && echo "breach=wrote /etc"
  /bin/bash -c "exec 3<>/dev/tcp/127.0.0.1/$HOST_PORT" 2>/dev/null && echo "breach=reached the host's 127.0.0.1:$HOST_PORT"
  touch "$HOST_MARKER" 2>/dev/null && echo "breach=wrote $HOST_MARKER"
  touch /rootdir/planted 2>/dev/null && echo "breach=wrote a root-owned read-write bind"
  echo ok > /state/ok && echo "wrote=/state"
  touch /run/hive/page/page.sock && echo "wrote=/run/hive/page"
  [ -e /run/hive/egress.sock ] && echo "seen=/run/hive/egress.sock"
  echo "passwd=$(cut -d: -f1 /etc/passwd | tr '\n' ' ')"
  # A setuid-root binary reachable in a bind: what it runs as, and with.
  suid=$(/rootdir/suid-cat /proc/self/status 2>/dev/null)
  echo "setuid_euid=$(echo "$suid" | grep '^Uid:' | cut -f3)"
  echo "setuid_capeff=$(echo "$suid" | grep '^CapEff:' | cut -f2)"
  python3 - getpid keyctl bpf userfaultfd unshare io_uring_setup clone3 x32_getpid 2>/dev/null <<'PY'
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
arm = os.uname().machine == "aarch64"
buf = ctypes.create_string_buffer(256)
# name: ((x86_64 number, aarch64 number), arguments that succeed unfiltered)
calls = {
    "getpid": ((39, 172), ()),
    "keyctl": ((250, 219), (0, -3, 0)),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "bpf": ((321, 280), (0, buf, 64)),
    "userfaultfd": ((323, 282), (1,)),  # UFFD_USER_MODE_ONLY
    "unshare": ((272, 97), (0x10000000,)),  # CLONE_NEWUSER
    "io_uring_setup": ((425, 425), (1, buf)),
    "clone3": ((435, 435), (0, 0)),
    "x32_getpid": ((0x40000000 + 39, 172), ()),  # getpid by its x32 number
}
for name in sys.argv[1:]:
    (x86, a64), args = calls[name]
    args = [a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args]
    ret = libc.syscall(ctypes.c_long(a64 if arm else x86), *args)
    said = "ok" if ret >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    print("syscall_%s=%s" % (name, said))
PY
} > /state/report.tmp 2>&1
mv /state/report.tmp /state/report
wait
"#;

/// A spec running [`BREACH_SCRIPT`] as `uid` (gid 100000) under a memory
/// limit, with its files owned the way core leaves them, and what the host
/// checks afterwards.
pub struct Breach {
    pub spec: ContainerSpec,
    /// A host port the agent must not reach.
    pub listener: std::net::TcpListener,
    /// A host file (in a world-writable dir) it must not create.
    pub marker: PathBuf,
    /// A root-owned dir bound read-write at `/rootdir`, holding
    /// `suid-cat`: `cat`, setuid root, run by the agent's group alone.
    pub rootdir: PathBuf,
}

pub fn breach(layout: &Layout, name: &str, uid: u32) -> Breach {
    use std::os::unix::fs::{PermissionsExt, chown};
    let gid = 100_000;
    // bwrap runs as the agent's uid: it must be able to search the layout.
    std::fs::set_permissions(layout.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut spec = layout.spec(name, "/bin/sh", &["-c", BREACH_SCRIPT]);
    spec.user = Some(hive_runtime::AgentUser { uid, gid });
    spec.limits.memory_bytes = Some(BREACH_MEMORY);
    for path in [
        &spec.state_dir,
        &spec.page_dir,
        &spec.socket,
        &spec.egress_socket,
    ] {
        chown(path, Some(uid), Some(gid)).unwrap();
    }
    std::fs::write(spec.control_dir.join("deployed.json"), "{}").unwrap();
    std::fs::set_permissions(&spec.control_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = layout.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let marker = outside.join(format!("from-{name}"));
    let rootdir = layout.root().join("rootdir");
    std::fs::create_dir_all(&rootdir).unwrap();
    // The test runs as root: the copy is root's, and only the agents'
    // group runs it (no other host user, while the test lasts).
    let suid = rootdir.join("suid-cat");
    std::fs::copy("/usr/bin/cat", &suid).unwrap();
    chown(&suid, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4750)).unwrap();
    spec.binds.push(hive_runtime::Bind {
        host: rootdir.clone(),
        container: PathBuf::from("/rootdir"),
        read_only: false,
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    spec.env.extend([
        ("HOST_PORT".into(), port.to_string()),
        ("HOST_MARKER".into(), marker.display().to_string()),
    ]);
    Breach {
        spec,
        listener,
        marker,
        rootdir,
    }
}

/// In what a backend leaves open: a setuid-root binary makes the agent's
/// process uid 0 (with no capability): no `no_new_privs`.
pub const SETUID_UID: &str = "setuid uid";

/// The syscalls of the breach script Docker's default seccomp profile
/// lets through on this engine: before 25.0 it allowed `io_uring_*`
/// (moby 25 moved them out of the default allow-list).
pub async fn docker_leaves_open() -> Vec<&'static str> {
    let version = engine().await.version().await.unwrap().version.unwrap();
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    if major < 25 {
        eprintln!("docker {version}: io_uring is open in its default seccomp profile");
        vec!["io_uring_setup"]
    } else {
        Vec::new()
    }
}

/// Asserts from the host that every breach failed, given the report of
/// the breach script, but for what the backend is known to leave `open`:
/// syscalls by name, and [`SETUID_UID`]. Returns the host pid of the
/// script.
pub fn assert_breaches_failed(
    b: &Breach,
    report: &std::collections::HashMap<String, Vec<String>>,
    open: &[&str],
) -> u32 {
    let spec = &b.spec;
    let user = spec.user.unwrap();
    assert_eq!(report.get("breach"), None, "{report:?}");
    assert_eq!(one(report, "uid"), user.uid.to_string(), "{report:?}");
    assert_eq!(one(report, "user"), "agent");
    assert_eq!(one(report, "passwd"), "root agent nobody ");
    // A setuid-root binary gains no capability; nor, with `no_new_privs`,
    // the owner's uid.
    assert_eq!(
        one(report, "setuid_capeff"),
        "0000000000000000",
        "{report:?}"
    );
    let euid = if open.contains(&SETUID_UID) {
        "0".to_owned()
    } else {
        user.uid.to_string()
    };
    assert_eq!(one(report, "setuid_euid"), euid, "{report:?}");
    assert_eq!(one(report, "control"), "{}");
    assert_eq!(report["wrote"], ["/state", "/run/hive/page"]);
    assert_eq!(one(report, "seen"), "/run/hive/egress.sock");
    // The kernel surface the seccomp filters close (python3 and ctypes
    // work in there: `getpid` is the control).
    assert_eq!(one(report, "syscall_getpid"), "ok", "{report:?}");
    for call in ["keyctl", "bpf", "userfaultfd", "unshare", "io_uring_setup"] {
        if open.contains(&call) {
            continue;
        }
        let said = one(report, &format!("syscall_{call}"));
        assert!(
            ["EPERM", "ENOSYS"].contains(&said),
            "{call} inside the sandbox: {said}"
        );
    }
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        one(report, "netns"),
        host_net.display().to_string(),
        "network namespace"
    );
    // On the host: nothing planted, no connection.
    assert!(!b.marker.exists(), "{} on the host", b.marker.display());
    assert!(!b.rootdir.join("planted").exists());
    assert!(!spec.control_dir.join("planted").exists());
    assert!(!spec.etc_dir.join("planted").exists());
    assert_eq!(
        b.listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "the agent connected to the host's loopback"
    );
    assert_eq!(
        std::fs::read_to_string(spec.state_dir.join("ok")).unwrap(),
        "ok\n"
    );
    // The script's host pid: a non-root uid, in a memory-limited cgroup.
    let inner: u32 = one(report, "pid").parse().unwrap();
    let (host_pid, _) = pids_in_ns(one(report, "pidns"))
        .into_iter()
        .find(|(_, pid)| *pid == inner)
        .expect("the script on the host");
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse::<u32>().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(uids, [user.uid; 4], "host uids of the agent's program");
    assert!(
        status.contains("\nSeccomp:\t2\n"),
        "the agent's program runs under a seccomp filter: {status}"
    );
    assert_eq!(
        hive_runtime::cgroup::memory_limit_of(host_pid),
        Some(BREACH_MEMORY)
    );
    host_pid
}
