//! One engine run: spawn, feed the prompt, pump stdout lines to the live
//! bus (typed and folded into an [`Observation`]), stderr lines as notes,
//! and end it early on cancel or the wall-clock limit (SIGINT to its
//! process group, SIGKILL after a grace).

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use hive_proto::LiveEvent;
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};

use crate::engine::{Engine, EngineRequest, Verdict};
use crate::process;
use crate::state::Shared;
use crate::stream::{ContentBlock, Observation, StreamEvent};

/// Longest stdout line kept whole; longer ones are cut (and reported).
pub const MAX_LINE: usize = 8 * 1024 * 1024;
/// Longest stderr line shown in a note.
const MAX_NOTE: usize = 4096;
/// How long to keep reading output after the engine exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Limits of one run.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Wall-clock limit; past it the run is interrupted as timed out.
    pub limit: Duration,
    /// Between SIGINT and SIGKILL.
    pub grace: Duration,
    /// Where the running engine's pid is recorded (see
    /// [`process::reap_stale_engine`]).
    pub pid_file: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Finished(Verdict),
    Cancelled,
    TimedOut,
}

#[derive(Debug)]
pub struct RunOutcome {
    pub end: RunEnd,
    pub observation: Observation,
    /// When the engine process was spawned (None: it never was).
    pub spawned_at: Option<Instant>,
    /// When it exited (or the attempt to spawn it failed).
    pub exited_at: Instant,
    pub exit: Option<ExitStatus>,
}

enum Stop {
    Cancelled,
    TimedOut,
}

/// Runs the engine once.
pub async fn run(
    shared: &Shared,
    engine: &dyn Engine,
    request: &EngineRequest<'_>,
    limits: &RunLimits,
    cancel: &Notify,
) -> RunOutcome {
    let spec = engine.command(request);
    let mut child = match process::spawn(&spec) {
        Ok(child) => child,
        Err(e) => {
            let verdict = if e.kind() == std::io::ErrorKind::NotFound {
                Verdict::EngineMissing(crate::login::engine_missing(engine))
            } else {
                Verdict::Failed(format!("cannot start {}: {e}", spec.program.display()))
            };
            return RunOutcome {
                end: RunEnd::Finished(verdict),
                observation: Observation::default(),
                spawned_at: None,
                exited_at: Instant::now(),
                exit: None,
            };
        }
    };
    let spawned_at = Instant::now();
    if let (Some(file), Some(pid)) = (&limits.pid_file, child.pid()) {
        process::record_engine(file, pid);
    }

    if let Some(mut stdin) = child.child.stdin.take() {
        let prompt = request.prompt.to_owned();
        tokio::spawn(async move {
            // An engine that exits before reading its prompt is reported
            // by its exit status, not here.
            let _ = stdin.write_all(prompt.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    if let Some(stderr) = child.child.stderr.take() {
        let bus = shared.bus.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.trim().is_empty() {
                    bus.note(format!("stderr: {}", truncate(&line, MAX_NOTE)));
                }
            }
        });
    }
    let (tx, mut rx) = mpsc::channel::<String>(256);
    if let Some(stdout) = child.child.stdout.take() {
        tokio::spawn(read_lines(stdout, tx));
    } else {
        drop(tx);
    }

    let mut observation = Observation::default();
    let deadline = tokio::time::Instant::now() + limits.limit;
    let mut stop: Option<Stop> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut exit: Option<std::io::Result<ExitStatus>> = None;
    let mut drain_until: Option<tokio::time::Instant> = None;
    let mut eof = false;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        if eof && exit.is_some() {
            break;
        }
        tokio::select! {
            line = rx.recv(), if !eof => match line {
                Some(line) => handle_line(shared, engine, &line, &mut observation),
                None => eof = true,
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(status);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && !eof => {
                shared.bus.note("the engine exited but its output stayed open; stopped reading");
                break;
            }
            () = cancel.notified(), if stop.is_none() && exit.is_none() => {
                shared.bus.note("cancelling the turn: SIGINT");
                stop = Some(Stop::Cancelled);
                child.signal(Signal::SIGINT);
                kill_at = Some(tokio::time::Instant::now() + limits.grace);
            }
            () = tokio::time::sleep_until(deadline), if stop.is_none() && exit.is_none() => {
                shared.bus.note(format!(
                    "the turn hit its {}s limit: SIGINT",
                    limits.limit.as_secs()
                ));
                stop = Some(Stop::TimedOut);
                child.signal(Signal::SIGINT);
                kill_at = Some(tokio::time::Instant::now() + limits.grace);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && exit.is_none() => {
                shared.bus.note("the engine ignored SIGINT: SIGKILL");
                child.signal(Signal::SIGKILL);
                kill_at = None;
            }
        }
    }
    let exited_at = Instant::now();
    // Whatever the engine left behind in its group (its MCP servers, a
    // shell command) goes with it.
    drop(child);
    if let Some(file) = &limits.pid_file {
        process::forget_engine(file);
    }
    let exit = match exit {
        Some(Ok(status)) => Some(status),
        Some(Err(e)) => {
            shared
                .bus
                .note(format!("waiting for the engine failed: {e}"));
            None
        }
        None => None,
    };
    let end = match stop {
        Some(Stop::Cancelled) => RunEnd::Cancelled,
        Some(Stop::TimedOut) => RunEnd::TimedOut,
        None => RunEnd::Finished(engine.verdict(&observation, exit.is_some_and(|s| s.success()))),
    };
    RunOutcome {
        end,
        observation,
        spawned_at: Some(spawned_at),
        exited_at,
        exit,
    }
}

fn handle_line(shared: &Shared, engine: &dyn Engine, line: &str, obs: &mut Observation) {
    if line.trim().is_empty() {
        return;
    }
    match engine.parse(line) {
        Ok((event, raw)) => {
            let status_before = obs.status_text.clone();
            obs.observe(&event);
            track_tool(shared, &event);
            if raw.is_object() {
                shared.emit(LiveEvent::Stream(raw));
            } else {
                shared.bus.note(truncate(line, MAX_NOTE).to_owned());
            }
            if obs.status_text != status_before {
                shared.set_status_text(obs.status_text.clone());
            }
        }
        Err(_) => shared.bus.note(truncate(line, MAX_NOTE).to_owned()),
    }
}

/// Moves the turn state to `tool` (noting the tool's name) while the
/// agent's own tool call runs, and back to `thinking` when its result comes
/// back; a sub-agent's lines (Task tool) leave it alone.
fn track_tool(shared: &Shared, event: &StreamEvent) {
    use hive_proto::live::TurnState;
    match event {
        StreamEvent::Assistant(a) if a.parent_tool_use_id.is_none() => {
            let tool = a.content.iter().rev().find_map(|block| match block {
                ContentBlock::ToolUse { name, .. } => Some(name.clone()),
                _ => None,
            });
            if let Some(tool) = tool {
                shared.set_turn_state(TurnState::Tool, Some(tool));
            }
        }
        StreamEvent::User(u)
            if u.parent_tool_use_id.is_none()
                && shared.turn_state() == TurnState::Tool
                && u.content
                    .iter()
                    .any(|block| matches!(block, ContentBlock::ToolResult { .. })) =>
        {
            shared.set_turn_state(TurnState::Thinking, None);
        }
        _ => {}
    }
}

/// Reads newline-terminated lines of at most [`MAX_LINE`] bytes (longer
/// ones are cut) and sends them on until EOF.
async fn read_lines(stream: impl AsyncRead + Unpin, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line: Vec<u8> = Vec::new();
    let mut cut = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(e) => {
                tracing::warn!("reading engine output: {e}");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let newline = done > chunk.len();
        let room = MAX_LINE.saturating_sub(line.len());
        if chunk.len() > room {
            cut = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(done);
        if newline {
            let mut text = String::from_utf8_lossy(&line).into_owned();
            if std::mem::take(&mut cut) {
                text = format!("[line cut at {MAX_LINE} bytes] {}", truncate(&text, 200));
            }
            line.clear();
            if tx.send(text).await.is_err() {
                return;
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned()).await;
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_long_ones_cut() {
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nlast");
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(read_lines(std::io::Cursor::new(input), tx));
        assert_eq!(rx.recv().await.unwrap(), "one");
        assert_eq!(rx.recv().await.unwrap(), "two");
        let cut = rx.recv().await.unwrap();
        assert!(cut.starts_with("[line cut at"), "{}", truncate(&cut, 50));
        assert!(cut.len() < 300);
        assert_eq!(rx.recv().await.unwrap(), "last");
        assert_eq!(rx.recv().await, None);
    }

    /// An engine that runs a shell script (with `program` as its shell).
    struct Script {
        program: &'static str,
        script: &'static str,
    }

    impl Engine for Script {
        fn name(&self) -> &'static str {
            "script"
        }
        fn auth_env(&self) -> &'static [&'static str] {
            &[]
        }
        fn credentials_file(&self, home: &std::path::Path) -> std::path::PathBuf {
            home.join("credentials")
        }
        fn program(&self) -> &std::path::Path {
            std::path::Path::new(self.program)
        }
        fn command(&self, _: &EngineRequest<'_>) -> process::CommandSpec {
            let mut spec = process::CommandSpec::new(self.program).args(["-c", self.script]);
            spec.stdin = process::Io::Piped;
            spec.stdout = process::Io::Piped;
            spec.stderr = process::Io::Piped;
            spec.own_group = true;
            spec
        }
        fn compact_prompt(&self) -> String {
            "/compact".into()
        }
        fn verdict(&self, obs: &Observation, exit_ok: bool) -> Verdict {
            crate::engine::claude::verdict(obs, exit_ok)
        }
        fn credentials(&self, _: &std::path::Path) -> Result<String, String> {
            Ok("none needed".into())
        }
    }

    async fn run_script(
        program: &'static str,
        script: &'static str,
        limit: Duration,
        cancel_after: Option<Duration>,
    ) -> (RunOutcome, Vec<LiveEvent>) {
        let dir = tempfile::tempdir().unwrap();
        let shared = Shared::new(
            "t".into(),
            crate::Role::Agent,
            dir.path().to_owned(),
            crate::client::SocketClient::new(dir.path().join("none.sock")),
            "m".into(),
        );
        let mcp = crate::engine::McpSetup::default();
        let request = EngineRequest {
            kind: crate::engine::RunKind::Turn,
            prompt: "hello engine",
            model: "m",
            continue_session: false,
            role_prompt: None,
            mcp: &mcp,
            state_dir: dir.path(),
            extra_dirs: &[],
        };
        let limits = RunLimits {
            limit,
            grace: Duration::from_millis(300),
            pid_file: Some(dir.path().join("engine.pid")),
        };
        let cancel = Notify::new();
        let engine = Script { program, script };
        let run = run(&shared, &engine, &request, &limits, &cancel);
        let outcome = match cancel_after {
            Some(after) => {
                tokio::pin!(run);
                tokio::select! {
                    outcome = &mut run => outcome,
                    () = tokio::time::sleep(after) => {
                        cancel.notify_one();
                        run.await
                    }
                }
            }
            None => run.await,
        };
        assert!(!dir.path().join("engine.pid").exists());
        let (_, frames) = shared.bus.history(100);
        (outcome, frames.into_iter().map(|f| f.event).collect())
    }

    /// A tool call moves the turn state to `tool` (its name the note) and
    /// its result back to `thinking`; a sub-agent's tool call does not.
    #[tokio::test]
    async fn a_tool_call_is_a_turn_state() {
        let script = r#"read prompt
echo '{"type":"assistant","message":{"id":"m1","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}'
echo '{"type":"assistant","parent_tool_use_id":"t0","message":{"id":"m2","content":[{"type":"tool_use","id":"t2","name":"Read","input":{}}]}}'
echo '{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok"}'"#;
        let (outcome, events) = run_script("/bin/sh", script, Duration::from_secs(30), None).await;
        assert_eq!(outcome.end, RunEnd::Finished(Verdict::Ok));
        let states: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::TurnStateChanged { state } => Some(*state),
                _ => None,
            })
            .collect();
        use hive_proto::live::TurnState;
        assert_eq!(states, [TurnState::Tool, TurnState::Thinking]);
    }

    #[tokio::test]
    async fn a_clean_run_streams_its_lines() {
        let script = r#"read prompt; echo "{\"type\":\"assistant\",\"message\":{\"id\":\"m\",\"content\":[{\"type\":\"text\",\"text\":\"$prompt\"}]}}"; echo 'not json'; echo oops >&2; echo '{"type":"result","subtype":"success","is_error":false,"result":"ok"}'"#;
        let (outcome, events) = run_script("/bin/sh", script, Duration::from_secs(30), None).await;
        assert_eq!(outcome.end, RunEnd::Finished(Verdict::Ok));
        assert!(outcome.exit.unwrap().success());
        let streams: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::Stream(v) => Some(v.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(streams.len(), 2);
        assert_eq!(streams[0]["message"]["content"][0]["text"], "hello engine");
        assert!(events.contains(&LiveEvent::Note {
            text: "not json".into()
        }));
        assert!(events.contains(&LiveEvent::Note {
            text: "stderr: oops".into()
        }));
    }

    #[tokio::test]
    async fn cancel_interrupts_and_kills_the_group() {
        // The engine ignores SIGINT and has a child of its own.
        let script = "trap '' INT; sleep 60 & sleep 60";
        let started = std::time::Instant::now();
        let (outcome, events) = run_script(
            "/bin/sh",
            script,
            Duration::from_secs(60),
            Some(Duration::from_millis(300)),
        )
        .await;
        assert_eq!(outcome.end, RunEnd::Cancelled);
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, LiveEvent::Note { text } if text.contains("SIGKILL")))
        );
    }

    #[tokio::test]
    async fn the_wall_clock_limit_ends_a_runaway_turn() {
        let (outcome, _) =
            run_script("/bin/sh", "sleep 60", Duration::from_millis(300), None).await;
        assert_eq!(outcome.end, RunEnd::TimedOut);
    }

    #[tokio::test]
    async fn a_failing_engine_and_a_missing_one() {
        let (outcome, _) = run_script("/bin/sh", "exit 3", Duration::from_secs(30), None).await;
        assert!(matches!(outcome.end, RunEnd::Finished(Verdict::Failed(_))));
        assert_eq!(outcome.exit.unwrap().code(), Some(3));
        let (outcome, _) = run_script("/no/such/claude", "", Duration::from_secs(30), None).await;
        assert!(
            matches!(&outcome.end, RunEnd::Finished(Verdict::EngineMissing(why)) if why.contains("--script-bin")),
            "{:?}",
            outcome.end
        );
        assert!(outcome.spawned_at.is_none());
    }

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
