//! A running `hive serve` in a temp dir, and raw socket helpers.
#![allow(clippy::disallowed_methods)] // tests start the real binary directly

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Hive {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub dashboard: String,
    /// The operator credential, from `<run-dir>/operator-token`.
    pub token: String,
}

impl Hive {
    /// Starts a hive whose state dir already holds `agents`.
    pub fn start(agents: &[&str]) -> Hive {
        let dir = tempfile::tempdir().unwrap();
        for name in agents {
            std::fs::create_dir_all(dir.path().join("state/agents").join(name).join("state"))
                .unwrap();
        }
        Self::start_in(dir)
    }

    pub fn start_in(dir: tempfile::TempDir) -> Hive {
        Self::start_with(dir, "none", &[])
    }

    /// Starts a hive on `runtime`, with extra `hive serve` arguments.
    pub fn start_with(dir: tempfile::TempDir, runtime: &str, extra: &[&str]) -> Hive {
        Self::start_with_env(dir, runtime, extra, &[])
    }

    /// [`Hive::start_with`], with variables set (`Some`) or removed
    /// (`None`) in the daemon's environment.
    pub fn start_with_env(
        dir: tempfile::TempDir,
        runtime: &str,
        extra: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> Hive {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hive"));
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut child = command
            .arg("serve")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .args(if extra.contains(&"--dashboard") {
                vec![]
            } else {
                vec!["--dashboard", "127.0.0.1:0"]
            })
            .args(["--runtime", runtime])
            .args(extra)
            .env("HIVE_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let dashboard = wait_ready(&mut child, "hive: dashboard ", "hive: runtime");
        let token = std::fs::read_to_string(dir.path().join("run/operator-token"))
            .unwrap()
            .trim()
            .to_owned();
        Hive {
            dir,
            child,
            dashboard,
            token,
        }
    }

    /// The link that logs a browser in (and lands on the dashboard).
    pub fn login_url(&self) -> String {
        format!("{}/login?token={}", self.dashboard, self.token)
    }

    /// `Authorization: Bearer <token>`'s value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The `Cookie` header a logged-in browser sends.
    pub fn cookie(&self) -> String {
        format!("hive_operator={}", self.token)
    }

    /// One raw request to the dashboard, with exactly `headers` (plus
    /// `Host`, unless given): status, head and body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        let addr = self.dashboard.trim_start_matches("http://");
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let host = [("Host", addr)];
        let host: &[(&str, &str)] = if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            &[]
        } else {
            &host
        };
        raw_http(stream, method, path, &[host, headers].concat(), body)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn host_socket(&self) -> PathBuf {
        self.run_dir().join("host.sock")
    }

    /// Where `name`'s harness binds its page socket (core proxies it).
    pub fn page_socket(&self, name: &str) -> PathBuf {
        let dir = if name == "manager" {
            self.run_dir().join("manager")
        } else {
            self.run_dir().join("agents").join(name)
        };
        dir.join("page/page.sock")
    }

    pub fn agent_socket(&self, name: &str) -> PathBuf {
        if name == "manager" {
            self.run_dir().join("manager/mcp.sock")
        } else {
            self.run_dir().join("agents").join(name).join("mcp.sock")
        }
    }

    /// One request line to host.sock; the response line.
    pub fn host(&self, request: &str) -> String {
        roundtrip(&self.host_socket(), request.as_bytes())
    }

    /// One request line to an agent's socket; the response line, without
    /// the unread count every answer carries (`broker.rs` checks it) unless
    /// it is `status`'s own.
    pub fn agent(&self, name: &str, request: &str) -> String {
        without_unread(&self.agent_answer(name, request))
    }

    /// One request line to an agent's socket; the whole response line.
    pub fn agent_answer(&self, name: &str, request: &str) -> String {
        roundtrip(&self.agent_socket(name), request.as_bytes())
    }

    /// Pops messages from an agent's inbox (long-polling up to `wait`).
    pub fn recv(&self, name: &str, wait: u64, max: u32) -> Vec<Value> {
        let line = self.agent(
            name,
            &format!(r#"{{"cmd":"recv","wait_seconds":{wait},"max":{max}}}"#),
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "messages", "{line}");
        v["messages"].as_array().unwrap().clone()
    }

    /// GETs a dashboard path as the operator (bearer), returning the body.
    pub fn http_get(&self, path: &str) -> String {
        let bearer = self.bearer();
        let (status, head, body) = self.http("GET", path, &[("Authorization", &bearer)], "");
        assert_eq!(status, 200, "{head}\n\n{body}");
        body
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> tempfile::TempDir {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "hive exited with {exit}");
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Hive {
    /// SIGTERM first, so the daemon stops the containers it supervises;
    /// SIGKILL only if it has not exited within 20 s.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hive serve` in `dir` (`state/`, `run/`) without a runtime, its
/// dashboard on a free loopback port and its stdout piped (for
/// [`wait_ready`]), for a test that needs the process itself.
pub fn serve_command(dir: &Path) -> Command {
    serve_command_at(&dir.join("state"), &dir.join("run"))
}

/// [`serve_command`] on the state dir `state` and the run dir `run`.
pub fn serve_command_at(state: &Path, run: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hive"));
    command
        .arg("serve")
        .arg("--state-dir")
        .arg(state)
        .arg("--run-dir")
        .arg(run)
        .args(["--dashboard", "127.0.0.1:0", "--runtime", "none"])
        .stdout(Stdio::piped());
    command
}

/// Reads a starting child's stdout until a line begins with `ready`;
/// returns the URL of the line that begins with `url_prefix` (if any),
/// without its trailing slash.
pub fn wait_ready(child: &mut Child, url_prefix: &str, ready: &str) -> String {
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut url = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "exited before `{ready}`"
        );
        if let Some(found) = line.strip_prefix(url_prefix) {
            url = found.trim().trim_end_matches('/').to_owned();
        }
        if line.starts_with(ready) {
            return url;
        }
    }
}

/// One HTTP/1.1 request on `stream` (`Connection: close`, the body's
/// length added): status, head and body.
pub fn raw_http(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {response:?}"));
    let status = head[9..12].parse().unwrap();
    (status, head.to_owned(), body.to_owned())
}

/// One HTTP/1.1 request on a unix socket (an agent's page socket).
pub fn unix_http(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let headers = [&[("Host", "page")], headers].concat();
    raw_http(stream, method, path, &headers, body)
}

/// An agent socket's answer line without its trailing `"unread":N`
/// member (kept on `status`, where it is the payload).
pub fn without_unread(line: &str) -> String {
    if line.starts_with(r#"{"kind":"status","#) {
        return line.to_owned();
    }
    match line.rfind(r#","unread":"#) {
        Some(at) if line.ends_with('}') => format!("{}}}", &line[..at]),
        _ => line.to_owned(),
    }
}

/// Writes `request` plus a newline and reads one response line.
pub fn roundtrip(socket: &Path, request: &[u8]) -> String {
    let mut stream =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(Duration::from_secs(200)))
        .unwrap();
    stream.write_all(request).unwrap();
    stream.write_all(b"\n").unwrap();
    read_line(&mut BufReader::new(stream))
}

pub fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(
        line.ends_with('\n'),
        "response line not terminated: {line:?}"
    );
    line.trim_end().to_owned()
}

/// Whether `s` is an RFC 3339 UTC timestamp as host.sock writes them
/// (`2026-09-12T09:15:00Z`).
pub fn is_rfc3339(s: &str) -> bool {
    s.len() == 20
        && s.ends_with('Z')
        && hive_proto::rfc3339::parse(s).is_some_and(|t| hive_proto::rfc3339::format(t) == s)
}

/// Replaces every `at`, `*_at` and `age_seconds` value with a placeholder so
/// lines can be pinned exactly: `<t>` for unix seconds, `<rfc3339>` for an
/// RFC 3339 string.
pub fn redact(line: &str) -> String {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if (k.ends_with("_at") || k == "at" || k == "age_seconds") && v.is_number() {
                        *v = Value::String("<t>".into());
                    } else if k.ends_with("_at") && v.as_str().is_some_and(is_rfc3339) {
                        // host.sock's timestamps: the format stays visible.
                        *v = Value::String("<rfc3339>".into());
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    walk(&mut v);
    serde_json::to_string(&v).unwrap()
}

/// Polls `check` until it holds or 10 s pass.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lets this test process open git repos another uid owns, as core does:
/// the manager's proposed repos belong to its unprivileged uid.
pub fn trust_foreign_repos() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: one process-wide libgit2 option, set once before the
        // test opens a repo.
        #[allow(unsafe_code)]
        unsafe { git2::opts::set_verify_owner_validation(false) }.unwrap();
    });
}

/// Commits `files` on the proposed repo's `main` as the manager would.
pub fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    trust_foreign_repos();
    let repo = git2::Repository::open(repo).unwrap();
    let mut index = repo.index().unwrap();
    for (path, text) in files {
        std::fs::write(repo.workdir().unwrap().join(path), text).unwrap();
        index.add_path(Path::new(path)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("manager", "manager@hive").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
        .unwrap()
        .to_string()
}

/// The manager's `approval_resolved` helper event for approval `id`.
pub fn approval_resolved(hive: &Hive, id: i64) -> Value {
    let recent: Value =
        serde_json::from_str(&hive.agent("manager", r#"{"cmd":"recent","limit":500}"#)).unwrap();
    recent["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m["body"].as_str()?).ok())
        .find(|e| e["event"] == "approval_resolved" && e["id"] == id)
        .unwrap_or_else(|| panic!("no approval_resolved for #{id}: {recent}"))
}
