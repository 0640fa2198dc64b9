//! The operator's admin verbs (`hive status`, `hive approve 4`, …), a client of host.sock.
//!
//! Each verb is one JSON request line and one JSON response line on a fresh
//! connection ([`request`]); `hive status --watch` keeps a subscription open
//! instead. Names are validated while the command line is parsed, so a bad
//! name never reaches the daemon.

mod client;
pub mod render;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use hive_proto::{
    AgentName, AgentStatusRow, ApprovalKind, HostRequest, HostResponse, MAX_BODY_BYTES, Recipient,
    Scope,
};

pub use client::request;
pub use render::render_response;

/// Options shared by every admin verb.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The daemon's admin socket.
    #[arg(long, env = "HIVE_SOCKET", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the raw JSON response line(s) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The operator's verbs on host.sock.
#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Print every known agent's name, one per line.
    List,
    /// Show each agent's state (every agent when no names are given).
    Status {
        /// Agents to show.
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        names: Vec<AgentName>,
        /// Keep watching: print a row whenever an agent's status changes, until
        /// Ctrl-C or the daemon goes away.
        #[arg(long, short)]
        watch: bool,
    },
    /// Show the approvals and questions waiting for the operator.
    Pending {
        /// Also print each config deploy's diff against what runs now.
        #[arg(long)]
        diff: bool,
    },
    /// Show one approval, with its diff when it is a config deploy.
    Show {
        /// The approval's id, as `hive pending` shows it.
        #[arg(value_name = "ID", value_parser = parse_approval_id)]
        id: i64,
    },
    /// Show the questions waiting for an answer, with their options.
    Questions,
    /// Answer a question: an option by its number or text (several for a
    /// multiple-choice question), or free text.
    Answer {
        /// The question's id, as `hive questions` shows it.
        #[arg(value_name = "ID", value_parser = parse_approval_id)]
        id: i64,
        /// The answer: option numbers or texts (`1 3`, `1,3`), or words
        /// joined by spaces.
        #[arg(value_name = "ANSWER", required = true, trailing_var_arg = true)]
        answer: Vec<String>,
    },
    /// Withdraw a question; the asker hears `[cancelled]`.
    CancelQuestion {
        /// The question's id, as `hive questions` shows it.
        #[arg(value_name = "ID", value_parser = parse_approval_id)]
        id: i64,
    },
    /// Approve a pending approval; its action runs now.
    Approve {
        /// The approval's id, as `hive pending` shows it.
        #[arg(value_name = "ID", value_parser = parse_approval_id)]
        id: i64,
    },
    /// Deny a pending approval.
    Deny {
        /// The approval's id, as `hive pending` shows it.
        #[arg(value_name = "ID", value_parser = parse_approval_id)]
        id: i64,
        /// Why, for the requester.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// Create and start an agent now, bypassing the approval queue.
    Spawn {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Queue a spawn approval for an agent.
    RequestSpawn {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
        /// What the agent is for.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
    },
    /// Stop an agent's container; its state is kept.
    Kill {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Start agents.
    #[command(group = clap::ArgGroup::new("targets").required(true).args(["names", "all"]))]
    Start {
        /// Agents to start.
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        names: Vec<AgentName>,
        /// Start every agent.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Stop agents.
    #[command(group = clap::ArgGroup::new("targets").required(true).args(["names", "all"]))]
    Stop {
        /// Agents to stop.
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        names: Vec<AgentName>,
        /// Stop every agent.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Let each agent finish its current turn first.
        #[arg(long)]
        graceful: bool,
    },
    /// Stop then start an agent.
    Restart {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Re-apply an agent's deployed config to its container.
    Rebuild {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Copy a running agent's /state into core's kept checkpoint (over the
    /// link); `hive status` shows its age and size.
    Checkpoint {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Ask to move an agent to another node (an approval): checkpoint,
    /// stop, re-pin, start there from the checkpoint.
    Move {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
        /// The node's id (as `docker node ls` shows it).
        #[arg(value_name = "NODE")]
        node: String,
    },
    /// Tear an agent's container down; state and config are kept unless --purge.
    Destroy {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
        /// Also delete the agent's state and config repos.
        #[arg(long)]
        purge: bool,
    },
    /// Pause an agent between turns.
    Pause {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Resume a paused agent.
    Resume {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
    },
    /// Show each agent's web UI address.
    Urls,
    /// Queue an approval that redeploys an earlier deployed config.
    Rollback {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
        /// The approval id of the deploy to go back to (its `deployed/<id>` tag).
        #[arg(value_name = "ID", value_parser = parse_approval_id)]
        id: i64,
    },
    /// Show what an agent's container printed.
    Logs {
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        name: AgentName,
        /// How many of the last lines to show.
        #[arg(short = 'n', long = "lines", default_value_t = 100)]
        lines: u32,
        /// Keep printing new lines as they come, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },
    /// Send a message from the operator to an agent.
    Send {
        /// The agent to message, or `*` for every agent.
        #[arg(long, value_name = "NAME", value_parser = parse_send_target)]
        to: Recipient,
        /// The message, words joined by spaces; `-` reads it from stdin.
        #[arg(value_name = "BODY", required = true, trailing_var_arg = true)]
        body: Vec<String>,
    },
    /// Show the task board (tasks not done or cancelled; --all for every one).
    Tasks {
        /// Include done and cancelled tasks.
        #[arg(long)]
        all: bool,
    },
    /// Create, assign or cancel a task on the board.
    Task {
        #[command(subcommand)]
        verb: TaskVerb,
    },
}

/// `hive task …`: the operator's board verbs.
#[derive(Debug, clap::Subcommand)]
pub enum TaskVerb {
    /// Put a task on the board.
    Add {
        /// One line saying what is to be done.
        #[arg(value_name = "TITLE")]
        title: String,
        /// The detail.
        #[arg(long, value_name = "TEXT", default_value = "")]
        body: String,
        /// Tasks that must be done first (repeatable).
        #[arg(long = "after", value_name = "ID", value_parser = parse_task_id)]
        depends_on: Vec<i64>,
        /// Reserve it for an agent.
        #[arg(long = "assign", value_name = "NAME", value_parser = AgentName::parse)]
        assignee: Option<AgentName>,
    },
    /// Reserve a task for an agent (it is told).
    Assign {
        #[arg(value_name = "ID", value_parser = parse_task_id)]
        id: i64,
        #[arg(value_name = "NAME", value_parser = AgentName::parse)]
        agent: AgentName,
    },
    /// Cancel a task.
    Cancel {
        #[arg(value_name = "ID", value_parser = parse_task_id)]
        id: i64,
        /// Why, for the board's history.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
}

/// A task id, with or without the `#` the board prints.
fn parse_task_id(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix('#').unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("invalid task id {s:?}: expected a number such as 4"))
}

/// An approval (or question) id, with or without the `#` the summaries print.
fn parse_approval_id(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix('#').unwrap_or(s);
    digits
        .parse()
        .map_err(|_| format!("invalid id {s:?}: expected a number such as 4"))
}

/// `--to`: an agent name or `*`; the operator does not message itself.
fn parse_send_target(s: &str) -> Result<Recipient, String> {
    match Recipient::parse(s).map_err(|err| err.to_string())? {
        Recipient::Operator => {
            Err("the operator cannot message `operator`; name an agent or `*`".to_owned())
        }
        target => Ok(target),
    }
}

/// Runs one admin verb against the daemon. `default_socket` is used when
/// `--socket`/HIVE_SOCKET is absent.
pub fn run(args: &ClientArgs, default_socket: &Path, cmd: AdminCommand) -> Result<()> {
    let socket = args.socket.as_deref().unwrap_or(default_socket);
    let mut out = io::stdout().lock();
    run_with(socket, args.json, cmd, &mut out, &mut io::stdin().lock())
}

/// [`run`] with its standard streams passed in.
fn run_with(
    socket: &Path,
    json: bool,
    cmd: AdminCommand,
    out: &mut dyn Write,
    input: &mut dyn Read,
) -> Result<()> {
    if let AdminCommand::Status { names, watch: true } = cmd {
        return watch(socket, json, &names, out);
    }
    if let AdminCommand::Logs {
        name,
        lines,
        follow: true,
    } = cmd
    {
        return follow_logs(socket, json, name, lines, out);
    }
    let req = match cmd {
        AdminCommand::Pending { diff } if !json => return pending(socket, diff, out),
        AdminCommand::Status { names, .. } if !json => return status(socket, names, out),
        AdminCommand::Answer { id, answer } => HostRequest::Answer {
            id,
            answer: answer_text(socket, id, &answer)?,
        },
        cmd => to_request(cmd, input)?,
    };
    let (line, resp) = client::round_trip(socket, &req)?;
    if json {
        emit(out, &format!("{line}\n"))?;
    }
    check_ok(&resp)?;
    if !json {
        emit(out, &render_response(&req, &resp, unix_now()))?;
    }
    Ok(())
}

/// The request a verb sends (`status --watch` aside).
fn to_request(cmd: AdminCommand, input: &mut dyn Read) -> Result<HostRequest> {
    use AdminCommand as C;
    Ok(match cmd {
        C::List => HostRequest::List,
        C::Tasks { all } => HostRequest::Tasks {
            filter: if all {
                hive_proto::TaskFilter::All
            } else {
                hive_proto::TaskFilter::Active
            },
        },
        C::Task {
            verb:
                TaskVerb::Add {
                    title,
                    body,
                    depends_on,
                    assignee,
                },
        } => HostRequest::TaskAdd {
            title,
            body,
            depends_on,
            assignee,
        },
        C::Task {
            verb: TaskVerb::Assign { id, agent },
        } => HostRequest::TaskAssign { id, agent },
        C::Task {
            verb: TaskVerb::Cancel { id, reason },
        } => HostRequest::TaskCancel { id, reason },
        C::Status { names, .. } => HostRequest::AgentStatus {
            scope: Scope { agent_names: names },
        },
        C::Pending { .. } => HostRequest::Pending,
        C::Show { id } => HostRequest::Show { id },
        C::Questions => HostRequest::Questions,
        C::Answer { id, answer } => HostRequest::Answer {
            id,
            answer: answer.join(" "),
        },
        C::CancelQuestion { id } => HostRequest::CancelQuestion { id },
        C::Approve { id } => HostRequest::Approve { id },
        C::Deny { id, note } => HostRequest::Deny { id, note },
        C::Spawn { name } => HostRequest::Spawn { name },
        C::RequestSpawn { name, description } => HostRequest::RequestSpawn { name, description },
        C::Kill { name } => HostRequest::Kill { name },
        C::Start { names, all } => HostRequest::Start {
            scope: scope(names, all)?,
        },
        C::Stop {
            names,
            all,
            graceful,
        } => HostRequest::Stop {
            scope: scope(names, all)?,
            graceful,
        },
        C::Restart { name } => HostRequest::Restart { name },
        C::Rebuild { name } => HostRequest::Rebuild { name },
        C::Checkpoint { name } => HostRequest::Checkpoint { name },
        C::Move { name, node } => HostRequest::Move { name, node },
        C::Destroy { name, purge } => HostRequest::Destroy { name, purge },
        C::Pause { name } => HostRequest::SetPaused { name, paused: true },
        C::Resume { name } => HostRequest::SetPaused {
            name,
            paused: false,
        },
        C::Urls => HostRequest::Urls,
        C::Rollback { name, id } => HostRequest::Rollback { name, id },
        C::Logs {
            name,
            lines,
            follow,
        } => HostRequest::Logs {
            name,
            lines: Some(lines),
            follow,
        },
        C::Send { to, body } => {
            if to == Recipient::Operator {
                bail!("the operator cannot message `operator`");
            }
            HostRequest::Send {
                to,
                body: message_body(&body, input)?,
            }
        }
    })
}

/// `hive pending`: approvals, then questions; with `diff`, each config
/// deploy's diff after the tables.
fn pending(socket: &Path, diff: bool, out: &mut dyn Write) -> Result<()> {
    let approvals = request(socket, &HostRequest::Pending)?;
    check_ok(&approvals)?;
    let questions = request(socket, &HostRequest::Questions)?;
    check_ok(&questions)?;
    let now = unix_now();
    let approvals = approvals.approvals.unwrap_or_default();
    emit(
        out,
        &render::render_pending(
            &approvals,
            questions.questions.as_deref().unwrap_or_default(),
            now,
        ),
    )?;
    if diff {
        let colour = render::colour_for_stdout();
        for a in approvals
            .iter()
            .filter(|a| a.kind == ApprovalKind::ApplyCommit)
        {
            let shown = request(socket, &HostRequest::Show { id: a.id })?;
            let text = match (shown.ok, shown.diff) {
                (true, Some(diff)) => render::render_diff(&diff, colour),
                (true, None) => "(no changes)\n".to_owned(),
                (false, _) => format!(
                    "(no diff: {})\n",
                    shown
                        .error
                        .as_deref()
                        .unwrap_or("the daemon did not say why")
                ),
            };
            emit(out, &format!("\n#{} {} diff:\n{text}", a.id, a.agent))?;
        }
    }
    Ok(())
}

/// `hive status`: the agents with a container, then the names whose state
/// is kept without one (destroyed, revivable).
fn status(socket: &Path, names: Vec<AgentName>, out: &mut dyn Write) -> Result<()> {
    let scope = Scope {
        agent_names: names.clone(),
    };
    let statuses = request(socket, &HostRequest::AgentStatus { scope })?;
    check_ok(&statuses)?;
    let known = request(socket, &HostRequest::List)?;
    check_ok(&known)?;
    let rows = statuses.agent_statuses.unwrap_or_default();
    let kept: Vec<String> = known
        .agents
        .unwrap_or_default()
        .into_iter()
        .filter(|n| !rows.iter().any(|r| &r.name == n))
        .filter(|n| names.is_empty() || names.iter().any(|w| w.as_str() == n))
        .collect();
    emit(out, &render::render_status(&rows, &kept, unix_now()))
}

/// The text `hive answer ID …` sends: options picked by number or text
/// when the question offers them, else the words joined by spaces.
fn answer_text(socket: &Path, id: i64, words: &[String]) -> Result<String> {
    let listed = request(socket, &HostRequest::Questions)?;
    check_ok(&listed)?;
    let question = listed
        .questions
        .unwrap_or_default()
        .into_iter()
        .find(|q| q.id == id);
    match question {
        Some(q) => render::pick_answer(&q, words).map_err(|e| anyhow!(e)),
        // Not pending (or unknown): the daemon says which.
        None => Ok(words.join(" ")),
    }
}

/// The scope of `start`/`stop`: the names, or (only with `--all`) every agent.
fn scope(names: Vec<AgentName>, all: bool) -> Result<Scope> {
    match (names.is_empty(), all) {
        (false, false) => Ok(Scope { agent_names: names }),
        (true, true) => Ok(Scope::default()),
        (true, false) => bail!("name the agents, or pass --all for every agent"),
        (false, true) => bail!("pass either agent names or --all, not both"),
    }
}

/// BODY words joined by spaces, or stdin for `-`.
fn message_body(words: &[String], input: &mut dyn Read) -> Result<String> {
    let body = if words == ["-"] {
        let mut body = String::new();
        input
            .read_to_string(&mut body)
            .context("reading the message from stdin")?;
        body.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        words.join(" ")
    };
    if body.trim().is_empty() {
        bail!(hive_proto::EMPTY_BODY);
    }
    if body.len() > MAX_BODY_BYTES {
        bail!(
            "the message is {} bytes; at most {MAX_BODY_BYTES} are allowed",
            body.len()
        );
    }
    Ok(body)
}

/// `hive status --watch`: subscribe, show the current table, then one row per change.
/// `logs --follow`: the tail, then new lines until the daemon closes.
fn follow_logs(
    socket: &Path,
    json: bool,
    name: AgentName,
    lines: u32,
    out: &mut dyn Write,
) -> Result<()> {
    let mut conn = client::Connection::open(socket)?;
    conn.set_read_timeout(None)?;
    conn.send(&HostRequest::Logs {
        name,
        lines: Some(lines),
        follow: true,
    })?;
    while let Some((line, resp)) = conn.next_response()? {
        if json {
            emit(out, &format!("{line}\n"))?;
        }
        check_ok(&resp)?;
        if !json {
            for text in resp.logs.unwrap_or_default() {
                emit(out, &format!("{}\n", render::sanitize(&text)))?;
            }
        }
    }
    Ok(())
}

fn watch(socket: &Path, json: bool, names: &[AgentName], out: &mut dyn Write) -> Result<()> {
    let mut sub = client::Connection::open(socket)?;
    sub.set_read_timeout(Some(client::QUICK_TIMEOUT))?;
    sub.send(&HostRequest::SubscribeAgentStatus)?;
    let (line, ack) = sub.next_response()?.ok_or_else(|| {
        anyhow!(
            "{} closed the connection instead of acknowledging the subscription",
            socket.display()
        )
    })?;
    if json {
        emit(out, &format!("{line}\n"))?;
    }
    check_ok(&ack)?;
    sub.set_read_timeout(None)?;

    // Subscribed first, so no change between the snapshot and the stream is lost.
    let mut stream = None;
    if !json {
        let scope = Scope {
            agent_names: names.to_vec(),
        };
        let snapshot = request(socket, &HostRequest::AgentStatus { scope })?;
        check_ok(&snapshot)?;
        let rows = snapshot.agent_statuses.unwrap_or_default();
        let (started, table) = render::StatusStream::start(&rows, unix_now());
        emit(out, &table)?;
        stream = Some(started);
    }
    let wanted =
        |row: &AgentStatusRow| names.is_empty() || names.iter().any(|n| n.as_str() == row.name);
    while let Some((line, resp)) = sub.next_response()? {
        check_ok(&resp)?;
        let rows: Vec<AgentStatusRow> = resp
            .agent_statuses
            .unwrap_or_default()
            .into_iter()
            .filter(wanted)
            .collect();
        if rows.is_empty() {
            continue;
        }
        match stream.as_mut() {
            None => emit(out, &format!("{line}\n"))?,
            Some(stream) => {
                let now = unix_now();
                let text: String = rows.iter().map(|row| stream.row(row, now)).collect();
                emit(out, &text)?;
            }
        }
    }
    eprintln!("the daemon closed the subscription");
    Ok(())
}

/// The daemon's own error for an `ok:false` response.
fn check_ok(resp: &HostResponse) -> Result<()> {
    if resp.ok {
        return Ok(());
    }
    Err(anyhow!(
        "{}",
        resp.error
            .as_deref()
            .unwrap_or("the daemon refused the request without saying why")
    ))
}

/// Writes and flushes, so a watcher sees each row as it arrives.
fn emit(out: &mut dyn Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::thread::{self, JoinHandle};

    use clap::{CommandFactory, Parser};

    use super::*;

    /// Stand-in for the binary's top-level parser, embedding the admin verbs
    /// the way main.rs does.
    #[derive(Debug, Parser)]
    #[command(name = "hive")]
    struct Cli {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        /// Stand-in for the binary's own verbs.
        Serve,
        #[command(flatten)]
        Admin(AdminCommand),
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from([&["hive"], args].concat())
    }

    fn admin(args: &[&str]) -> AdminCommand {
        match parse(args).unwrap().command {
            Command::Admin(cmd) => cmd,
            Command::Serve => panic!("parsed as serve"),
        }
    }

    fn name(s: &str) -> AgentName {
        AgentName::parse(s).unwrap()
    }

    fn request_of(args: &[&str]) -> HostRequest {
        to_request(admin(args), &mut io::empty()).unwrap()
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn verbs_map_to_requests() {
        let cases = [
            (&["list"][..], HostRequest::List),
            (
                &["status"],
                HostRequest::AgentStatus {
                    scope: Scope::default(),
                },
            ),
            (
                &["status", "coder"],
                HostRequest::AgentStatus {
                    scope: Scope::one(name("coder")),
                },
            ),
            (&["approve", "#4"], HostRequest::Approve { id: 4 }),
            (
                &["deny", "4", "--note", "too broad"],
                HostRequest::Deny {
                    id: 4,
                    note: Some("too broad".into()),
                },
            ),
            (
                &["request-spawn", "coder", "--description", "writes code"],
                HostRequest::RequestSpawn {
                    name: name("coder"),
                    description: Some("writes code".into()),
                },
            ),
            (
                &["start", "a", "b"],
                HostRequest::Start {
                    scope: Scope {
                        agent_names: vec![name("a"), name("b")],
                    },
                },
            ),
            (
                &["start", "--all"],
                HostRequest::Start {
                    scope: Scope::default(),
                },
            ),
            (
                &["stop", "--all", "--graceful"],
                HostRequest::Stop {
                    scope: Scope::default(),
                    graceful: true,
                },
            ),
            (
                &["destroy", "coder", "--purge"],
                HostRequest::Destroy {
                    name: name("coder"),
                    purge: true,
                },
            ),
            (
                &["pause", "coder"],
                HostRequest::SetPaused {
                    name: name("coder"),
                    paused: true,
                },
            ),
            (
                &["resume", "coder"],
                HostRequest::SetPaused {
                    name: name("coder"),
                    paused: false,
                },
            ),
            (
                &["send", "--to", "coder", "fix", "-v", "it"],
                HostRequest::Send {
                    to: Recipient::parse("coder").unwrap(),
                    body: "fix -v it".into(),
                },
            ),
            (
                &["send", "--to", "*", "hello"],
                HostRequest::Send {
                    to: Recipient::Broadcast,
                    body: "hello".into(),
                },
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(request_of(args), expected, "{args:?}");
        }
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&["status", "--json", "--socket", "/tmp/h.sock", "--watch"]).unwrap();
        assert!(cli.client.json);
        assert_eq!(cli.client.socket.as_deref(), Some(Path::new("/tmp/h.sock")));
        assert!(matches!(
            cli.command,
            Command::Admin(AdminCommand::Status { watch: true, .. })
        ));
        assert!(matches!(parse(&["serve"]).unwrap().command, Command::Serve));
    }

    #[test]
    fn bad_names_are_refused_with_the_name_rule() {
        let err = parse(&["kill", "Bob"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(
            text.contains(
                "invalid agent name \"Bob\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)"
            ),
            "{text}"
        );
        let err = parse(&["start", "coder", "../etc"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid agent name \"../etc\""), "{err}");
        let err = parse(&["send", "--to", "operator", "hi"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the operator cannot message `operator`"),
            "{err}"
        );
        let err = parse(&["approve", "four"]).unwrap_err().to_string();
        assert!(err.contains("invalid id \"four\""), "{err}");
    }

    #[test]
    fn start_and_stop_everything_only_with_all() {
        for verb in ["start", "stop"] {
            let err = parse(&[verb]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{verb}"
            );
            assert!(err.to_string().contains("--all"), "{err}");
            let err = parse(&[verb, "--all", "coder"]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{verb}"
            );
        }
        assert!(scope(vec![], false).is_err());
    }

    #[test]
    fn send_reads_stdin_for_dash() {
        let cmd = admin(&["send", "--to", "coder", "-"]);
        let req = to_request(cmd, &mut "line one\nline two\n".as_bytes()).unwrap();
        let expected = HostRequest::Send {
            to: Recipient::parse("coder").unwrap(),
            body: "line one\nline two".into(),
        };
        assert_eq!(req, expected);
        let cmd = admin(&["send", "--to", "coder", "-"]);
        let err = to_request(cmd, &mut "\n".as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "the message is empty");
        assert!(parse(&["send", "--to", "coder"]).is_err());
    }

    /// A daemon on a temp-dir socket that answers each of its connections
    /// with the given lines, then closes; returns the request lines it read.
    fn fake_daemon(connections: Vec<Vec<&'static str>>) -> (tempfile::TempDir, PathBuf, Daemon) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for lines in connections {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                requests.push(request);
                let stream = reader.get_mut();
                for line in lines {
                    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
                }
            }
            requests
        });
        (dir, path, handle)
    }

    type Daemon = JoinHandle<Vec<String>>;

    /// Runs `args` against `socket`; stdout and the result.
    fn run_cli(socket: &Path, args: &[&str]) -> (String, Result<()>) {
        let cli = parse(args).unwrap();
        let Command::Admin(cmd) = cli.command else {
            panic!("not an admin verb")
        };
        let mut out = Vec::new();
        let result = run_with(socket, cli.client.json, cmd, &mut out, &mut io::empty());
        (String::from_utf8(out).unwrap(), result)
    }

    #[test]
    fn one_round_trip() {
        let (_dir, path, daemon) = fake_daemon(vec![vec![r#"{"version":1,"ok":true}"#]]);
        let (out, result) = run_cli(&path, &["kill", "coder"]);
        result.unwrap();
        assert_eq!(out, "killed coder\n");
        assert_eq!(
            daemon.join().unwrap(),
            [r#"{"cmd":"kill","name":"coder"}"#.to_owned() + "\n"]
        );
    }

    #[test]
    fn json_prints_the_line_unmodified() {
        let line = r#"{"version":1,"ok":true,"agents":["coder"],"extra":{"b":1,"a":2}}"#;
        let (_dir, path, daemon) = fake_daemon(vec![vec![line]]);
        let (out, result) = run_cli(&path, &["list", "--json"]);
        result.unwrap();
        assert_eq!(out, format!("{line}\n"));
        daemon.join().unwrap();
    }

    #[test]
    fn daemon_errors_become_errors() {
        let line = r#"{"version":1,"ok":false,"error":"no agent named coder"}"#;
        let (_dir, path, daemon) = fake_daemon(vec![vec![line], vec![line]]);
        let (out, result) = run_cli(&path, &["kill", "coder"]);
        assert_eq!(out, "");
        assert_eq!(format!("{:#}", result.unwrap_err()), "no agent named coder");
        let (out, result) = run_cli(&path, &["kill", "coder", "--json"]);
        assert_eq!(out, format!("{line}\n"));
        assert_eq!(format!("{:#}", result.unwrap_err()), "no agent named coder");
        daemon.join().unwrap();
        // `request` itself hands back ok:false responses.
        let (_dir, path, daemon) = fake_daemon(vec![vec![line]]);
        let resp = request(&path, &HostRequest::List).unwrap();
        assert_eq!(resp, HostResponse::error("no agent named coder"));
        daemon.join().unwrap();
    }

    #[test]
    fn bad_response_lines_are_named() {
        let (_dir, path, daemon) = fake_daemon(vec![vec!["Internal Server Error"], vec![]]);
        let (_, result) = run_cli(&path, &["list"]);
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.starts_with(
                "the daemon sent a line that is not valid JSON: \"Internal Server Error\""
            ),
            "{err}"
        );
        let (_, result) = run_cli(&path, &["list"]);
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.ends_with("closed the connection without answering"),
            "{err}"
        );
        daemon.join().unwrap();
    }

    #[test]
    fn unreachable_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sock");
        let shown = path.display();
        let (_, result) = run_cli(&path, &["list"]);
        let err = format!("{:#}", result.unwrap_err());
        assert_eq!(
            err,
            format!("no socket at {shown} — is `hive serve` running?")
        );

        drop(UnixListener::bind(&path).unwrap());
        let (_, result) = run_cli(&path, &["list"]);
        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.starts_with(&format!("connection refused at {shown}")),
            "{err}"
        );

        let file = dir.path().join("plain");
        std::fs::write(&file, "").unwrap();
        let (_, result) = run_cli(&file, &["list"]);
        let err = format!("{:#}", result.unwrap_err());
        assert_eq!(
            err,
            format!(
                "{} is not a socket — check --socket / HIVE_SOCKET",
                file.display()
            )
        );
    }

    #[test]
    fn watch_prints_snapshot_then_changes() {
        const ACK: &str = r#"{"version":1,"ok":true}"#;
        const SNAPSHOT: &str = r#"{"version":1,"ok":true,"agent_statuses":[{"name":"coder","running":false,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false}]}"#;
        const OTHER: &str = r#"{"version":1,"ok":true,"agent_statuses":[{"name":"other","running":true,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":0,"paused":false}]}"#;
        const CHANGE: &str = r#"{"version":1,"ok":true,"agent_statuses":[{"name":"coder","running":true,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":1,"paused":false}]}"#;

        // The subscription is acknowledged before the snapshot connection is
        // accepted; the changes follow once the snapshot is answered.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let daemon = thread::spawn(move || {
            let accept = |listener: &UnixListener| {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                (reader.into_inner(), request)
            };
            let (mut sub, first) = accept(&listener);
            writeln!(sub, "{ACK}").unwrap();
            let (mut snap, second) = accept(&listener);
            writeln!(snap, "{SNAPSHOT}").unwrap();
            drop(snap);
            writeln!(sub, "{OTHER}\n{CHANGE}").unwrap();
            (first, second)
        });
        let (out, result) = run_cli(&path, &["status", "--watch", "coder"]);
        result.unwrap();
        // Each row starts with the time it was seen (`HH:MM:SS` under
        // `TIME(UTC)`, 11 columns with the gap).
        let (times, rows): (Vec<&str>, Vec<&str>) = out.lines().map(|l| l.split_at(11)).unzip();
        assert_eq!(times[0], "TIME(UTC)  ");
        for time in &times[1..] {
            assert!(
                time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
                "{time:?}"
            );
        }
        let expected = [
            "NAME   STATE    PAUSED  LOGIN  UPDATE  REMINDERS  MODEL  SHA  STATUS  URL",
            "coder  stopped  -       -      -       0          -      -    -       -",
            "coder  running  -       -      -       1          -      -    -       -",
        ];
        assert_eq!(rows, expected);
        let (first, second) = daemon.join().unwrap();
        assert_eq!(first, "{\"cmd\":\"subscribe_agent_status\"}\n");
        assert_eq!(
            second,
            "{\"cmd\":\"agent_status\",\"scope\":{\"agent_names\":[\"coder\"]}}\n"
        );
    }

    #[test]
    fn watch_json_prints_raw_lines() {
        const ACK: &str = r#"{"version":1,"ok":true}"#;
        const CHANGE: &str = r#"{"version":1,"ok":true,"agent_statuses":[{"name":"coder","running":true,"failed":false,"needs_update":false,"needs_login":false,"pending_reminders":1,"paused":false}]}"#;
        let (_dir, path, daemon) = fake_daemon(vec![vec![ACK, CHANGE]]);
        let (out, result) = run_cli(&path, &["status", "--watch", "--json"]);
        result.unwrap();
        assert_eq!(out, format!("{ACK}\n{CHANGE}\n"));
        daemon.join().unwrap();
    }
}
