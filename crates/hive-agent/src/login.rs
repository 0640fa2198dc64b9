//! Does the engine have credentials? A cheap probe run before each turn:
//! an API key or token in the environment, or the CLI's credentials file
//! under its HOME (the agent's state dir). Absent → the `needs_login` turn
//! state, and no messages are popped until that changes.
//!
//! [`LoginSession`] drives the engine's own interactive login (`claude auth
//! login`) over pipes, so the operator completes it from the agent's page:
//! its output (the URL to open) is collected, the code the browser shows is
//! written to its stdin, and when it exits the probe runs again.
//! [`Logins`] holds the one session at a time.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::oneshot;

use crate::engine::Engine;
use crate::process::{CommandSpec, Io};

/// Why the harness cannot run `engine` and how the operator provides it.
pub fn engine_missing(engine: &dyn Engine) -> String {
    format!(
        "the {name} binary {} is not in this container: start the daemon with --{name}-bin \
         <host path> (or put {name} on its PATH; scripts/install-{name} fetches it), then \
         restart the agent",
        engine.program().display(),
        name = engine.name(),
    )
}

/// Resolves `program` like a shell would (a bare name searches `PATH`).
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Output lines a login session keeps (the oldest go first).
pub const MAX_LOGIN_LINES: usize = 200;
/// Longest output line kept, and longest line the operator may send.
pub const MAX_LINE_BYTES: usize = 4096;
/// How long the output readers may outlive the process (a grandchild
/// holding the pipe open) before the session is reported as exited.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What a login session printed and how it ended.
#[derive(Debug, Default)]
struct Output {
    lines: VecDeque<String>,
    /// The unterminated tail of stdout and of stderr (a prompt such as
    /// `Paste code here if prompted > ` has no newline).
    partial: [String; 2],
    exit: Option<LoginExit>,
}

impl Output {
    fn push(&mut self, line: String) {
        if self.lines.len() == MAX_LOGIN_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

/// How a login process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoginExit {
    /// The exit code (none if a signal ended it).
    pub code: Option<i32>,
    pub success: bool,
    /// Whether the credentials probe passed afterwards.
    pub logged_in: bool,
}

/// `/api/login/session`: a snapshot of one session.
#[derive(Debug, Clone, Serialize)]
pub struct LoginView {
    pub id: u64,
    pub running: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<LoginExit>,
    /// Output lines, stdout and stderr interleaved as they came, then the
    /// unterminated tails.
    pub lines: Vec<String>,
}

/// One run of the engine's login command. Dropping it kills the process
/// (its whole process group).
#[derive(Debug)]
pub struct LoginSession {
    id: u64,
    output: Arc<Mutex<Output>>,
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    /// Dropping or firing this makes the watcher kill the process.
    kill: Option<oneshot::Sender<()>>,
}

fn lock(output: &Mutex<Output>) -> MutexGuard<'_, Output> {
    output
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LoginSession {
    /// Spawns `spec` (its streams piped, its own process group).
    /// `probe` runs when it exits: `true` if credentials now exist;
    /// `on_exit` then hears the outcome.
    pub fn start(
        id: u64,
        mut spec: CommandSpec,
        probe: impl FnOnce() -> bool + Send + 'static,
        on_exit: impl FnOnce(&LoginExit) + Send + 'static,
    ) -> std::io::Result<Self> {
        spec.stdin = Io::Piped;
        spec.stdout = Io::Piped;
        spec.stderr = Io::Piped;
        spec.own_group = true;
        let mut spawned = crate::process::spawn(&spec)?;
        let output = Arc::new(Mutex::new(Output::default()));
        let stdin = spawned.child.stdin.take();
        let mut readers = tokio::task::JoinSet::new();
        if let Some(out) = spawned.child.stdout.take() {
            readers.spawn(read_lines(out, 0, output.clone()));
        }
        if let Some(err) = spawned.child.stderr.take() {
            readers.spawn(read_lines(err, 1, output.clone()));
        }
        let (kill, killed) = oneshot::channel::<()>();
        let watcher_output = output.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = spawned.wait() => status,
                // Fired or dropped: the session was cancelled or replaced.
                _ = killed => {
                    spawned.signal(Signal::SIGKILL);
                    spawned.wait().await
                }
            };
            // Whatever it left behind in its group goes too.
            spawned.signal(Signal::SIGKILL);
            let _ = tokio::time::timeout(DRAIN_GRACE, async {
                while readers.join_next().await.is_some() {}
            })
            .await;
            readers.abort_all();
            let (code, success) = match &status {
                Ok(s) => (s.code(), s.success()),
                Err(e) => {
                    tracing::warn!("waiting for the login command: {e}");
                    (None, false)
                }
            };
            let logged_in = tokio::task::spawn_blocking(probe).await.unwrap_or(false);
            let exit = LoginExit {
                code,
                success,
                logged_in,
            };
            on_exit(&exit);
            lock(&watcher_output).exit = Some(exit);
        });
        Ok(Self {
            id,
            output,
            stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
            kill: Some(kill),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn running(&self) -> bool {
        lock(&self.output).exit.is_none()
    }

    pub fn view(&self) -> LoginView {
        let output = lock(&self.output);
        let mut lines: Vec<String> = output.lines.iter().cloned().collect();
        lines.extend(output.partial.iter().filter(|p| !p.is_empty()).cloned());
        LoginView {
            id: self.id,
            running: output.exit.is_none(),
            exit: output.exit.clone(),
            lines,
        }
    }

    /// Writes `line` and a newline to the process's stdin.
    pub async fn send_line(&self, line: &str) -> Result<(), String> {
        write_line(&self.stdin, &self.output, line).await
    }

    /// Kills the process (the session stays, reporting its exit).
    pub fn cancel(&mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
    }
}

/// Writes `line` and a newline to a running session's stdin.
async fn write_line(
    stdin: &tokio::sync::Mutex<Option<ChildStdin>>,
    output: &Mutex<Output>,
    line: &str,
) -> Result<(), String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.len() > MAX_LINE_BYTES || line.contains(['\r', '\n']) {
        return Err(format!("send one line of at most {MAX_LINE_BYTES} bytes"));
    }
    if lock(output).exit.is_some() {
        return Err("the login command has exited".to_owned());
    }
    let mut stdin = stdin.lock().await;
    let Some(pipe) = stdin.as_mut() else {
        return Err("the login command's stdin is closed".to_owned());
    };
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    let written = async {
        pipe.write_all(&bytes).await?;
        pipe.flush().await
    };
    if let Err(e) = written.await {
        *stdin = None;
        return Err(format!("cannot write to the login command: {e}"));
    }
    Ok(())
}

/// Collects one stream of the login command into `output`.
async fn read_lines(mut stream: impl AsyncRead + Unpin, which: usize, output: Arc<Mutex<Output>>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = lock(&output);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            out.push(clean(&line[..pos]));
        }
        if pending.len() > MAX_LINE_BYTES {
            out.push(clean(&pending));
            pending.clear();
        }
        out.partial[which] = clean(&pending);
    }
    let mut out = lock(&output);
    if !pending.is_empty() {
        out.push(clean(&pending));
    }
    out.partial[which].clear();
}

/// One output line as plain text: lossy UTF-8, terminal escape sequences
/// and other control characters removed (a carriage return keeps what
/// follows it, as a terminal would show it).
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; OSC: ESC ] ... BEL or ESC \.
            match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// The login session of one agent: at most one at a time, started with
/// the engine the harness runs.
#[derive(Default)]
pub struct Logins {
    engine: Mutex<Option<Arc<dyn Engine>>>,
    session: Mutex<Option<LoginSession>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Logins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins")
            .field("session", &*self.session())
            .finish_non_exhaustive()
    }
}

impl Logins {
    /// Tells it which engine's login to run.
    pub fn set_engine(&self, engine: Arc<dyn Engine>) {
        *self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(engine);
    }

    /// The engine whose login this runs, once set.
    pub fn engine(&self) -> Option<Arc<dyn Engine>> {
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn session(&self) -> MutexGuard<'_, Option<LoginSession>> {
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the engine has an interactive login.
    pub fn available(&self, state_dir: &Path) -> bool {
        self.engine()
            .is_some_and(|e| e.login_command(state_dir).is_some())
    }

    /// Starts a login session in `home` (killing the one before). When it
    /// exits the credentials probe runs again and `on_exit` hears how it
    /// went ([`crate::state::Shared::start_login`] puts a `needs_login`
    /// agent back to `idle`).
    pub fn start(
        &self,
        home: &Path,
        on_exit: impl FnOnce(&LoginExit) + Send + 'static,
    ) -> Result<LoginView, String> {
        let engine = self
            .engine()
            .ok_or_else(|| "no engine is configured".to_owned())?;
        let spec = engine
            .login_command(home)
            .ok_or_else(|| format!("the {} engine has no interactive login", engine.name()))?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut slot = self.session();
        // The previous session dies here (its kill channel is dropped).
        drop(slot.take());
        let home = home.to_owned();
        let probe = move || engine.credentials(&home).is_ok();
        let session = LoginSession::start(id, spec, probe, on_exit)
            .map_err(|e| format!("cannot start the login command: {e}"))?;
        let view = session.view();
        *slot = Some(session);
        Ok(view)
    }

    /// The current (or last) session.
    pub fn view(&self) -> Option<LoginView> {
        self.session().as_ref().map(LoginSession::view)
    }

    /// Sends a line to the running session.
    pub async fn send_line(&self, line: &str) -> Result<(), String> {
        // The pipe is shared out so no std lock is held across the write.
        let (stdin, output) = {
            let slot = self.session();
            let session = slot
                .as_ref()
                .ok_or_else(|| "no login is running".to_owned())?;
            if !session.running() {
                return Err("no login is running".to_owned());
            }
            (session.stdin.clone(), session.output.clone())
        };
        write_line(&stdin, &output, line).await
    }

    /// Kills the running session; false if none runs.
    pub fn cancel(&self) -> bool {
        let mut slot = self.session();
        match slot.as_mut() {
            Some(session) if session.running() && session.kill.is_some() => {
                session.cancel();
                true
            }
            _ => false,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Shared;
    use hive_proto::live::TurnState;

    #[test]
    fn programs_on_path() {
        assert!(find_program(Path::new("sh")).is_some());
        assert!(find_program(Path::new("/bin/sh")).is_some());
        assert!(find_program(Path::new("no-such-program-here")).is_none());
        assert!(find_program(Path::new("/no/such/program")).is_none());
    }

    /// An engine whose login is a shell script: prints a URL and a prompt,
    /// reads the code, writes the credentials file under HOME, exits 0.
    struct FakeLogin {
        script: PathBuf,
    }

    impl Engine for FakeLogin {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn auth_env(&self) -> &'static [&'static str] {
            crate::engine::claude::CLAUDE_AUTH_ENV
        }
        fn credentials_file(&self, home: &Path) -> PathBuf {
            crate::engine::claude::credentials_file(home)
        }
        fn program(&self) -> &Path {
            Path::new("sh")
        }
        fn command(&self, _: &crate::engine::EngineRequest<'_>) -> CommandSpec {
            CommandSpec::new("true")
        }
        fn compact_prompt(&self) -> String {
            "/compact".into()
        }
        fn verdict(&self, _: &crate::stream::Observation, _: bool) -> crate::engine::Verdict {
            crate::engine::Verdict::Ok
        }
        fn credentials(&self, home: &Path) -> Result<String, String> {
            crate::engine::claude::probe(home, |_| None)
        }
        fn login_command(&self, state_dir: &Path) -> Option<CommandSpec> {
            let mut spec = CommandSpec::new("sh")
                .arg(self.script.display().to_string())
                .env("HOME", state_dir.display().to_string());
            spec.cwd = Some(state_dir.to_owned());
            Some(spec)
        }
    }

    const SCRIPT: &str = r#"
echo "Opening browser to sign in…"
printf 'If the browser did not open, visit:\r\n\033[1mhttps://example.invalid/oauth/authorize?code=true&state=x\033[0m\n'
printf 'Paste code here if prompted > '
read -r code
mkdir -p "$HOME/.claude"
printf '{"claudeAiOauth":{"accessToken":"%s"}}' "$code" > "$HOME/.claude/.credentials.json"
echo "login ok: $code" >&2
exit 0
"#;

    fn fixture() -> (tempfile::TempDir, Arc<Shared>, Arc<FakeLogin>) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let script = dir.path().join("login.sh");
        std::fs::write(&script, SCRIPT).unwrap();
        let shared = Shared::new(
            "a".into(),
            crate::Role::Agent,
            state,
            crate::client::SocketClient::new(dir.path().join("none.sock")),
            "sonnet".into(),
        );
        (dir, shared, Arc::new(FakeLogin { script }))
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn login_session_collects_output_takes_the_code_and_reprobes() {
        let (_dir, shared, engine) = fixture();
        shared.set_turn_state(TurnState::NeedsLogin, Some("no credentials".into()));
        assert!(engine.credentials(&shared.state_dir).is_err());
        let logins = &shared.login;
        assert!(shared.start_login().is_err(), "no engine yet");
        assert!(logins.view().is_none());
        logins.set_engine(engine.clone());
        assert!(logins.available(&shared.state_dir));
        assert!(logins.send_line("early").await.is_err(), "nothing runs yet");

        let started = shared.start_login().unwrap();
        assert!(started.running);
        // The prompt has no newline: it shows as the last (partial) line.
        until("the prompt", || {
            logins
                .view()
                .unwrap()
                .lines
                .last()
                .is_some_and(|l| l == "Paste code here if prompted > ")
        })
        .await;
        let view = logins.view().unwrap();
        assert!(view.running && view.exit.is_none());
        assert_eq!(
            view.lines[..3],
            [
                "Opening browser to sign in…",
                "If the browser did not open, visit:",
                "https://example.invalid/oauth/authorize?code=true&state=x",
            ],
            "escapes and carriage returns are stripped"
        );
        assert!(logins.send_line("two\nlines").await.is_err());

        logins.send_line("code-123#abc").await.unwrap();
        until("the exit", || !logins.view().unwrap().running).await;
        let view = logins.view().unwrap();
        let exit = view.exit.unwrap();
        assert_eq!(exit.code, Some(0));
        assert!(exit.success && exit.logged_in);
        assert!(view.lines.iter().any(|l| l == "login ok: code-123#abc"));
        // The prompt's tail was flushed as a line of its own.
        assert_eq!(
            view.lines
                .iter()
                .filter(|l| l.starts_with("Paste code"))
                .count(),
            1
        );
        let creds =
            std::fs::read_to_string(crate::engine::claude::credentials_file(&shared.state_dir))
                .unwrap();
        assert!(creds.contains("code-123#abc"), "{creds}");
        assert!(engine.credentials(&shared.state_dir).is_ok());
        assert_eq!(shared.turn_state(), TurnState::Idle);
        assert!(logins.send_line("late").await.is_err());
        assert!(!logins.cancel(), "nothing to cancel");
    }

    #[tokio::test]
    async fn cancel_and_restart_kill_the_running_login() {
        let (dir, shared, _) = fixture();
        let script = dir.path().join("login.sh");
        // A login that never reads: it only waits.
        std::fs::write(&script, "echo waiting\nexec sleep 30\n").unwrap();
        let logins = &shared.login;
        logins.set_engine(Arc::new(FakeLogin { script }));
        shared.set_turn_state(TurnState::NeedsLogin, None);

        let first = shared.start_login().unwrap();
        until("output", || !logins.view().unwrap().lines.is_empty()).await;
        // A new start replaces (kills) the first.
        let second = shared.start_login().unwrap();
        assert_ne!(first.id, second.id);
        until("output", || !logins.view().unwrap().lines.is_empty()).await;
        assert!(logins.cancel());
        until("the kill", || !logins.view().unwrap().running).await;
        let exit = logins.view().unwrap().exit.unwrap();
        assert_eq!(exit.code, None, "killed by a signal");
        assert!(!exit.success && !exit.logged_in);
        assert_eq!(shared.turn_state(), TurnState::NeedsLogin);
        assert!(!logins.cancel());

        // Dropping a session kills its process too.
        let spec = FakeLogin {
            script: dir.path().join("login.sh"),
        }
        .login_command(&shared.state_dir)
        .unwrap();
        let (tx, rx) = oneshot::channel();
        let session = LoginSession::start(
            9,
            spec,
            || false,
            move |e| {
                let _ = tx.send(e.clone());
            },
        )
        .unwrap();
        drop(session);
        let exit = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code, None);
    }

    #[test]
    fn output_is_plain_text() {
        assert_eq!(clean(b"\x1b[31mred\x1b[0m text\r"), "red text");
        assert_eq!(clean(b"spinner 1\rspinner 2"), "spinner 2");
        assert_eq!(
            clean(b"\x1b]8;;https://a.example\x1b\\link\x1b]8;;\x07 \x07bell"),
            "link bell"
        );
        assert_eq!(clean(b"tab\there \xff"), "tab\there \u{fffd}");
    }
}
