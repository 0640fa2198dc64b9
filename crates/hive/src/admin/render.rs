//! Human-readable output of host.sock responses: aligned tables and one-line summaries.

use hive_proto::{
    AgentStatusRow, Approval, HiveUrls, HostRequest, HostResponse, QuestionRow, Scope, Task,
    TaskStatus,
};

/// Columns of the `hive status` table.
pub const STATUS_HEADER: [&str; 10] = [
    "NAME",
    "STATE",
    "PAUSED",
    "LOGIN",
    "UPDATE",
    "REMINDERS",
    "MODEL",
    "SHA",
    "STATUS",
    "URL",
];
/// Columns of the `hive pending` table.
pub const PENDING_HEADER: [&str; 7] = [
    "ID",
    "KIND",
    "AGENT",
    "COMMIT",
    "STATUS",
    "AGE",
    "DESCRIPTION",
];
/// Columns of the `hive questions` table.
pub const QUESTIONS_HEADER: [&str; 6] = ["ID", "ASKER", "TO", "AGE", "TTL", "QUESTION"];
/// Longest question text a questions table shows.
const MAX_QUESTION: usize = 80;
/// Columns of the `hive tasks` table.
pub const TASKS_HEADER: [&str; 5] = ["ID", "STATUS", "WHO", "AFTER", "TITLE"];

/// How many hex digits of a commit a table shows.
const SHORT_SHA: usize = 12;
/// Longest status text a status table shows.
const MAX_STATUS_TEXT: usize = 48;
/// Longest description (with its note) a pending table shows.
const MAX_DESCRIPTION: usize = 80;
/// Spaces between columns.
const GAP: &str = "  ";
/// What an empty cell shows.
const NONE: &str = "-";

/// What an operator reads after a successful `req` answered by `resp`; empty
/// or newline-terminated. `now` (unix seconds) dates the ages in tables.
pub fn render_response(req: &HostRequest, resp: &HostResponse, now: i64) -> String {
    use HostRequest::*;
    let text = match req {
        List => {
            return resp
                .agents
                .iter()
                .flatten()
                .map(|name| format!("{}\n", cell(name)))
                .collect();
        }
        AgentStatus { .. } | SubscribeAgentStatus => {
            let rows = resp.agent_statuses.as_deref().unwrap_or_default();
            if rows.is_empty() {
                "no agents".to_owned()
            } else {
                return render_status_table(rows, now);
            }
        }
        Pending => {
            let approvals = resp.approvals.as_deref().unwrap_or_default();
            if approvals.is_empty() {
                "no pending approvals".to_owned()
            } else {
                return render_pending_table(approvals, now);
            }
        }
        Logs { .. } => {
            return resp
                .logs
                .iter()
                .flatten()
                .map(|line| format!("{}\n", sanitize(line)))
                .collect();
        }
        Urls => match &resp.urls {
            Some(urls) => return render_hive_urls(urls),
            None => "no urls".to_owned(),
        },
        Questions => {
            let questions = resp.questions.as_deref().unwrap_or_default();
            if questions.is_empty() {
                "no open questions".to_owned()
            } else {
                return render_questions(questions, now);
            }
        }
        Answer { id, .. } => format!("answered question #{id}"),
        CancelQuestion { id } => format!("cancelled question #{id}"),
        Show { .. } => {
            let mut text = render_pending_table(resp.approvals.as_deref().unwrap_or_default(), now);
            if let Some(diff) = &resp.diff {
                text.push('\n');
                text.push_str(&render_diff(diff, colour_for_stdout()));
            }
            return text;
        }
        Approve { id } => format!("approved #{id}{}", approval_detail(resp, *id)),
        Deny { id, .. } => format!("denied #{id}{}", approval_detail(resp, *id)),
        Spawn { name } => format!("spawned {name}"),
        RequestSpawn { name, .. } => {
            let queued = resp.approvals.iter().flatten();
            let mut queued = queued
                .clone()
                .filter(|a| a.agent == name.as_str())
                .chain(queued);
            match queued.next() {
                Some(approval) => format!(
                    "queued spawn approval #{id} for {name} — approve with `hive approve {id}`",
                    id = approval.id
                ),
                None => format!("queued a spawn approval for {name} — see `hive pending`"),
            }
        }
        Rollback { name, .. } => match resp.approvals.iter().flatten().next() {
            Some(approval) => format!(
                "queued rollback approval #{id} for {name} — approve with `hive approve {id}`",
                id = approval.id
            ),
            None => format!("queued a rollback approval for {name} — see `hive pending`"),
        },
        Kill { name } => format!("killed {name}"),
        Destroy { name, purge: false } => format!("destroyed {name} (state and config kept)"),
        Destroy { name, purge: true } => format!("destroyed {name} and purged its state"),
        Rebuild { name } => format!("rebuilt {name}"),
        Checkpoint { name } => match resp.agent_statuses.iter().flatten().next() {
            Some(AgentStatusRow {
                checkpoint_bytes: Some(bytes),
                ..
            }) => format!(
                "checkpoint of {name} kept ({})",
                hive_core::checkpoint::human_bytes(*bytes)
            ),
            _ => format!("checkpoint of {name} kept"),
        },
        Move { name, node } => match resp.approvals.iter().flatten().next() {
            Some(approval) => format!(
                "queued move approval #{id} of {name} to {node} — approve with `hive approve {id}`{}",
                approval
                    .description
                    .as_deref()
                    .map(|d| format!("\n{}", cell(d)))
                    .unwrap_or_default(),
                id = approval.id
            ),
            None => format!("queued a move approval for {name} — see `hive pending`"),
        },
        Start { scope } => format!("started {}", scope_text(scope)),
        Stop { scope, graceful } => {
            let how = if *graceful { " gracefully" } else { "" };
            let mut text = match resp.kept_running.as_deref() {
                Some(kept) if scope.is_all() && !kept.is_empty() => {
                    let names: Vec<String> = kept.iter().map(|k| cell(&k.name)).collect();
                    format!("stopped every agent{how} but {}", names.join(", "))
                }
                _ => format!("stopped {}{how}", scope_text(scope)),
            };
            for kept in resp.kept_running.iter().flatten() {
                text.push_str(&format!(
                    "\n{} still runs: {}",
                    cell(&kept.name),
                    cell(&kept.reason)
                ));
            }
            text
        }
        Restart { name } => format!("restarted {name}"),
        SetPaused { name, paused: true } => format!("paused {name}"),
        SetPaused {
            name,
            paused: false,
        } => format!("resumed {name}"),
        Send { to, .. } if *to == hive_proto::Recipient::Broadcast => {
            "sent to every agent".to_owned()
        }
        Send { to, .. } => format!("sent to {to}"),
        Tasks { .. } => {
            let tasks = resp.tasks.as_deref().unwrap_or_default();
            if tasks.is_empty() {
                "no tasks".to_owned()
            } else {
                return render_tasks_table(tasks);
            }
        }
        TaskAdd { .. } | TaskAssign { .. } | TaskCancel { .. } => {
            let verb = match req {
                TaskAdd { .. } => "added",
                TaskAssign { .. } => "assigned",
                _ => "cancelled",
            };
            match resp.tasks.iter().flatten().next() {
                Some(t) => format!("{verb} task #{}: {}", t.id, cell(&t.title)),
                None => format!("{verb} the task"),
            }
        }
    };
    text + "\n"
}

/// " (spawn for coder)" when the response carries approval `id`.
fn approval_detail(resp: &HostResponse, id: i64) -> String {
    match resp.approvals.iter().flatten().find(|a| a.id == id) {
        Some(a) => format!(" ({} for {})", a.kind.as_str(), cell(&a.agent)),
        None => String::new(),
    }
}

/// "every agent" for the empty scope, else the names.
fn scope_text(scope: &Scope) -> String {
    if scope.is_all() {
        "every agent".to_owned()
    } else {
        scope
            .agent_names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `hive status` table, header included.
/// A hive whose runtime schedules across hosts adds a NODE column; one
/// with checkpoints a CHECKPOINT column (age and size).
pub fn render_status_table(rows: &[AgentStatusRow], now: i64) -> String {
    let mut cells: Vec<Vec<String>> = rows.iter().map(|row| status_cells(row, now)).collect();
    let mut header: Vec<&str> = STATUS_HEADER.to_vec();
    if rows.iter().any(|r| r.node.is_some()) {
        for (cells, row) in cells.iter_mut().zip(rows) {
            let node = row.node.as_deref().map_or_else(|| NONE.to_owned(), cell);
            cells.push(if row.node_down {
                format!("{node} (down)")
            } else {
                node
            });
        }
        header.push("NODE");
    }
    if rows.iter().any(|r| r.checkpoint_at.is_some()) {
        for (cells, row) in cells.iter_mut().zip(rows) {
            cells.push(match (row.checkpoint_at, row.checkpoint_bytes) {
                (Some(at), bytes) => format!(
                    "{} ago, {}",
                    format_age(now - at),
                    hive_core::checkpoint::human_bytes(bytes.unwrap_or_default())
                ),
                _ => NONE.to_owned(),
            });
        }
        header.push("CHECKPOINT");
    }
    render_table(&header, &cells)
}

/// The `hive pending` table, header included.
pub fn render_pending_table(approvals: &[Approval], now: i64) -> String {
    let cells: Vec<Vec<String>> = approvals
        .iter()
        .map(|a| {
            let commit = if a.commit_ref.is_empty() {
                NONE.to_owned()
            } else {
                cell(&a.commit_ref.chars().take(SHORT_SHA).collect::<String>())
            };
            let description = match (a.description.as_deref(), a.note.as_deref()) {
                (Some(d), Some(n)) => format!("{d} [note: {n}]"),
                (Some(d), None) => d.to_owned(),
                (None, Some(n)) => format!("[note: {n}]"),
                (None, None) => NONE.to_owned(),
            };
            vec![
                a.id.to_string(),
                a.kind.as_str().to_owned(),
                cell(&a.agent),
                commit,
                a.status.as_str().to_owned(),
                format_age(now - a.requested_at),
                clip(&description, MAX_DESCRIPTION),
            ]
        })
        .collect();
    render_table(&PENDING_HEADER, &cells)
}

/// The `hive tasks` table, header included: board order, with who holds
/// each task (or whom an open one is reserved for) and its dependencies.
pub fn render_tasks_table(tasks: &[Task]) -> String {
    let cells: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let mut status = t.status.as_str().to_owned();
            if t.claimable {
                status.push_str(" (claimable)");
            }
            let who = match (&t.assignee, t.status) {
                (Some(a), TaskStatus::Open) => format!("for {}", cell(a)),
                (Some(a), _) => cell(a),
                (None, _) => NONE.to_owned(),
            };
            let after = if t.depends_on.is_empty() {
                NONE.to_owned()
            } else {
                t.depends_on
                    .iter()
                    .map(|d| format!("#{d}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut title = t.title.clone();
            if let Some(reason) = &t.reason {
                title.push_str(&format!(" [{reason}]"));
            }
            vec![
                format!("#{}", t.id),
                status,
                who,
                after,
                clip(&title, MAX_DESCRIPTION),
            ]
        })
        .collect();
    render_table(&TASKS_HEADER, &cells)
}

/// `hive urls`: where the hive is reached.
pub fn render_hive_urls(urls: &HiveUrls) -> String {
    let mut rows = vec![
        vec!["domain".to_owned(), cell(&urls.domain)],
        vec!["home".to_owned(), cell(&urls.home)],
    ];
    for (label, url) in [("forge", &urls.forge), ("matrix", &urls.matrix)] {
        if let Some(url) = url {
            rows.push(vec![label.to_owned(), cell(url)]);
        }
    }
    let mut out = String::new();
    let widths = column_widths(&["", ""], &rows);
    for row in &rows {
        out.push_str(&format_row(row, &widths));
    }
    out
}

/// `hive pending`: the approvals table, then the questions table.
pub fn render_pending(approvals: &[Approval], questions: &[QuestionRow], now: i64) -> String {
    let mut out = if approvals.is_empty() {
        "no pending approvals\n".to_owned()
    } else {
        render_pending_table(approvals, now)
    };
    out.push('\n');
    if questions.is_empty() {
        out.push_str("no open questions\n");
    } else {
        out.push_str(&render_questions(questions, now));
    }
    out
}

/// The questions table, each question's options numbered under it.
pub fn render_questions(questions: &[QuestionRow], now: i64) -> String {
    let cells: Vec<Vec<String>> = questions
        .iter()
        .map(|q| {
            vec![
                q.id.to_string(),
                cell(&q.asker),
                q.target
                    .as_deref()
                    .map_or_else(|| "operator".to_owned(), cell),
                format_age(now - q.asked_at),
                q.deadline_at
                    .map_or_else(|| NONE.to_owned(), |at| format_age(at - now)),
                clip(&q.question, MAX_QUESTION),
            ]
        })
        .collect();
    let widths = column_widths(&QUESTIONS_HEADER, &cells);
    let mut out = format_row(&QUESTIONS_HEADER, &widths);
    // Options indent under the QUESTION column.
    let indent: usize = widths[..QUESTIONS_HEADER.len() - 1]
        .iter()
        .map(|w| w + GAP.len())
        .sum();
    for (q, row) in questions.iter().zip(&cells) {
        out.push_str(&format_row(row, &widths));
        for (i, option) in q.options.iter().enumerate() {
            out.push_str(&format!(
                "{}{}. {}\n",
                " ".repeat(indent),
                i + 1,
                clip(option, MAX_QUESTION)
            ));
        }
        if q.multi && !q.options.is_empty() {
            out.push_str(&format!(
                "{}(pick several: `hive answer {} 1 3`)\n",
                " ".repeat(indent),
                q.id
            ));
        }
    }
    out
}

/// The answer `hive answer` sends for `words`: when `q` offers options and
/// every word (commas split words too) is an option's number or its text,
/// those options (one unless `q.multi`, joined with ", "); otherwise the
/// words as free text.
pub fn pick_answer(q: &QuestionRow, words: &[String]) -> Result<String, String> {
    let free = words.join(" ");
    if q.options.is_empty() {
        return Ok(free);
    }
    let parts: Vec<&str> = words
        .iter()
        .flat_map(|w| w.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let whole = free.trim();
    if let Some(option) = q.options.iter().find(|o| o.as_str() == whole) {
        return Ok(option.clone());
    }
    let picked: Option<Vec<&String>> = parts
        .iter()
        .map(|p| match p.parse::<usize>() {
            Ok(n) => q.options.get(n.wrapping_sub(1)),
            Err(_) => q.options.iter().find(|o| o.as_str() == *p),
        })
        .collect();
    match picked {
        Some(picked) if picked.len() > 1 && !q.multi => Err(format!(
            "question #{} takes one option; pick one of 1..{}",
            q.id,
            q.options.len()
        )),
        Some(picked) if !picked.is_empty() => Ok(picked
            .iter()
            .map(|o| o.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
        _ if parts.iter().all(|p| p.parse::<usize>().is_ok()) => Err(format!(
            "question #{} has options 1..{}; {} is not one",
            q.id,
            q.options.len(),
            whole
        )),
        _ => Ok(free),
    }
}

/// Whether what goes to stdout may be coloured: a terminal, no `NO_COLOR`.
pub fn colour_for_stdout() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A unified diff for a terminal: each line made plain (a config commit is
/// the manager's text), then, with `colour`, additions green, removals
/// red, hunk headers cyan.
pub fn render_diff(diff: &str, colour: bool) -> String {
    let mut out = String::new();
    for line in diff.lines() {
        let line = sanitize(line);
        let paint = if !colour || line.starts_with("+++") || line.starts_with("---") {
            None
        } else if line.starts_with('+') {
            Some("32")
        } else if line.starts_with('-') {
            Some("31")
        } else if line.starts_with("@@") {
            Some("36")
        } else {
            None
        };
        match paint {
            Some(code) => out.push_str(&format!("\x1b[{code}m{line}\x1b[0m\n")),
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// `hive status`: the table of agents with a container, then the names
/// kept without one.
pub fn render_status(rows: &[AgentStatusRow], kept: &[String], now: i64) -> String {
    let mut out = if rows.is_empty() {
        "no agents with a container\n".to_owned()
    } else {
        render_status_table(rows, now)
    };
    if !kept.is_empty() {
        let names: Vec<String> = kept.iter().map(|n| cell(n)).collect();
        out.push_str(&format!(
            "\nkept state, no container (destroyed; `hive spawn NAME` revives, `hive destroy NAME --purge` deletes): {}\n",
            names.join(", ")
        ));
    }
    out
}

/// `running`, `failed` or `stopped`.
pub fn state_label(row: &AgentStatusRow) -> &'static str {
    if row.running {
        "running"
    } else if row.failed {
        "failed"
    } else {
        "stopped"
    }
}

/// One status row's cells, in [`STATUS_HEADER`] order.
fn status_cells(row: &AgentStatusRow, now: i64) -> Vec<String> {
    let flag = |on: bool, word: &str| if on { word.to_owned() } else { NONE.to_owned() };
    let optional = |value: Option<&str>| value.map_or_else(|| NONE.to_owned(), cell);
    let status = match (row.status_text.as_deref(), row.status_set_at) {
        (Some(text), Some(at)) => {
            format!(
                "{} ({} ago)",
                clip(text, MAX_STATUS_TEXT),
                format_age(now - at)
            )
        }
        (Some(text), None) => clip(text, MAX_STATUS_TEXT),
        (None, _) => NONE.to_owned(),
    };
    vec![
        cell(&row.name),
        state_label(row).to_owned(),
        flag(row.paused, "yes"),
        flag(row.needs_login, "needed"),
        flag(row.needs_update, "needed"),
        row.pending_reminders.to_string(),
        optional(row.active_model.as_deref()),
        optional(
            row.deployed_sha
                .as_deref()
                .map(|s| s.get(..SHORT_SHA).unwrap_or(s)),
        ),
        status,
        optional(row.url.as_deref()),
    ]
}

/// Prints status rows as they stream in (`hive status --watch`), keeping the
/// columns of the first table as long as the rows fit them.
#[derive(Debug)]
pub(super) struct StatusStream {
    widths: Vec<usize>,
}

/// Columns of `hive status --watch`: when each row was seen (UTC), then
/// [`STATUS_HEADER`].
fn watch_header() -> Vec<&'static str> {
    std::iter::once("TIME(UTC)").chain(STATUS_HEADER).collect()
}

impl StatusStream {
    /// Starts the stream with a table of `rows` (possibly none).
    pub(super) fn start(rows: &[AgentStatusRow], now: i64) -> (Self, String) {
        let cells: Vec<Vec<String>> = rows.iter().map(|row| watch_cells(row, now)).collect();
        let header = watch_header();
        let widths = column_widths(&header, &cells);
        let table = render_with_widths(&header, &cells, &widths);
        (Self { widths }, table)
    }

    /// One more row, newline-terminated.
    pub(super) fn row(&mut self, row: &AgentStatusRow, now: i64) -> String {
        let cells = watch_cells(row, now);
        for (width, text) in self.widths.iter_mut().zip(&cells) {
            *width = (*width).max(text.chars().count());
        }
        format_row(&cells, &self.widths)
    }
}

/// A watched row: the time it was seen, then its status cells.
fn watch_cells(row: &AgentStatusRow, now: i64) -> Vec<String> {
    let stamp = hive_proto::rfc3339::format(now);
    let clock = stamp.get(11..19).unwrap_or(&stamp).to_owned();
    std::iter::once(clock)
        .chain(status_cells(row, now))
        .collect()
}

/// Left-aligned columns two spaces apart; no trailing spaces.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths = column_widths(header, rows);
    render_with_widths(header, rows, &widths)
}

fn render_with_widths(header: &[&str], rows: &[Vec<String>], widths: &[usize]) -> String {
    let mut out = format_row(header, widths);
    for row in rows {
        out.push_str(&format_row(row, widths));
    }
    out
}

fn column_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    header
        .iter()
        .enumerate()
        .map(|(i, title)| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|text| text.chars().count())
                .chain([title.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

fn format_row<S: AsRef<str>>(cells: &[S], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, text) in cells.iter().enumerate() {
        let text = text.as_ref();
        if i > 0 {
            line.push_str(GAP);
        }
        line.push_str(text);
        let width = widths.get(i).copied().unwrap_or(0);
        line.extend(std::iter::repeat_n(
            ' ',
            width.saturating_sub(text.chars().count()),
        ));
    }
    let mut line = line.trim_end().to_owned();
    line.push('\n');
    line
}

/// `secs` as one rounded-down unit: `42s`, `5m`, `3h`, `2d`; `0s` for the future.
pub fn format_age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3_600 => format!("{}m", secs / 60),
        3_600..86_400 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A log line made safe for a terminal: escape sequences and control
/// characters other than tab removed (core strips them already; a line is
/// never trusted to be plain).
pub fn sanitize(text: &str) -> String {
    hive_runtime::plain::plain_text(text)
}

/// Untrusted text made safe for one table cell: control characters (line
/// breaks, terminal escapes) become spaces.
fn cell(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// [`cell`], cut to `max` characters with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    let text = cell(text);
    if text.chars().count() <= max {
        text
    } else {
        let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use hive_proto::{AgentName, ApprovalKind, ApprovalStatus};

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn row(name: &str) -> AgentStatusRow {
        AgentStatusRow {
            name: name.to_owned(),
            running: false,
            failed: false,
            needs_update: false,
            needs_login: false,
            deployed_sha: None,
            pending_reminders: 0,
            paused: false,
            parent: None,
            active_model: None,
            status_text: None,
            status_set_at: None,
            url: None,
            node: None,
            node_down: false,
            checkpoint_at: None,
            checkpoint_bytes: None,
        }
    }

    fn approval(id: i64, kind: ApprovalKind, agent: &str) -> Approval {
        Approval {
            id,
            agent: agent.to_owned(),
            kind,
            commit_ref: String::new(),
            fetched_sha: None,
            requested_at: NOW,
            status: ApprovalStatus::Pending,
            resolved_at: None,
            note: None,
            description: None,
        }
    }

    fn name(s: &str) -> AgentName {
        AgentName::parse(s).unwrap()
    }

    #[test]
    fn status_table() {
        let coder = AgentStatusRow {
            running: true,
            needs_login: true,
            deployed_sha: Some("0123456789abcdef0123".into()),
            pending_reminders: 2,
            active_model: Some("sonnet".into()),
            status_text: Some("reviewing\nthe diff".into()),
            status_set_at: Some(NOW - 300),
            url: Some("http://127.0.0.1:8100/".into()),
            ..row("coder")
        };
        let manager = AgentStatusRow {
            paused: true,
            needs_update: true,
            url: Some("http://127.0.0.1:8101/".into()),
            ..row("manager")
        };
        let broken = AgentStatusRow {
            failed: true,
            ..row("broken")
        };
        let long = AgentStatusRow {
            status_text: Some("x".repeat(60)),
            ..row("chatty")
        };
        let expected = [
            "NAME     STATE    PAUSED  LOGIN   UPDATE  REMINDERS  MODEL   SHA           STATUS                                            URL",
            "coder    running  -       needed  -       2          sonnet  0123456789ab  reviewing the diff (5m ago)                       http://127.0.0.1:8100/",
            "manager  stopped  yes     -       needed  0          -       -             -                                                 http://127.0.0.1:8101/",
            "broken   failed   -       -       -       0          -       -             -                                                 -",
            &format!("chatty   stopped  -       -       -       0          -       -             {}…  -", "x".repeat(47)),
            "",
        ]
        .join("\n");
        assert_eq!(
            render_status_table(&[coder.clone(), manager, broken, long], NOW),
            expected
        );
        // Under a multi-host runtime, where each runs.
        let placed = AgentStatusRow {
            node: Some("node-2".into()),
            node_down: false,
            ..coder
        };
        let table = render_status_table(&[placed, row("idle")], NOW);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].ends_with("URL                     NODE"),
            "{table}"
        );
        assert!(
            lines[1].ends_with("http://127.0.0.1:8100/  node-2"),
            "{table}"
        );
        assert!(lines[2].ends_with("-                       -"), "{table}");
    }

    #[test]
    fn pending_table() {
        let apply = Approval {
            commit_ref: "fedcba9876543210fedcba9876543210fedcba98".into(),
            requested_at: NOW - 2 * 3_600 - 5,
            description: Some("give coder ripgrep".into()),
            ..approval(3, ApprovalKind::ApplyCommit, "coder")
        };
        let spawn = Approval {
            requested_at: NOW - 42,
            description: Some("a reviewer".into()),
            ..approval(14, ApprovalKind::Spawn, "reviewer")
        };
        let failed = Approval {
            status: ApprovalStatus::Failed,
            requested_at: NOW - 3 * 86_400,
            note: Some("build failed".into()),
            ..approval(15, ApprovalKind::InitConfig, "tester")
        };
        let expected = "\
ID  KIND          AGENT     COMMIT        STATUS   AGE  DESCRIPTION
3   apply_commit  coder     fedcba987654  pending  2h   give coder ripgrep
14  spawn         reviewer  -             pending  42s  a reviewer
15  init_config   tester    -             failed   3d   [note: build failed]
";
        assert_eq!(render_pending_table(&[apply, spawn, failed], NOW), expected);
    }

    #[test]
    fn urls_table() {
        let urls = HiveUrls {
            domain: "127.0.0.1".into(),
            home: "http://127.0.0.1:7000/".into(),
            forge: None,
            matrix: Some("https://m.example.org/".into()),
        };
        let expected = "\
domain  127.0.0.1
home    http://127.0.0.1:7000/
matrix  https://m.example.org/
";
        assert_eq!(render_hive_urls(&urls), expected);
    }

    fn question(id: i64, options: &[&str], multi: bool) -> QuestionRow {
        QuestionRow {
            id,
            asker: "coder".into(),
            target: None,
            question: "ship\nit?".into(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            multi,
            asked_at: NOW - 120,
            deadline_at: Some(NOW + 600),
        }
    }

    #[test]
    fn pending_shows_questions_beside_approvals() {
        let peer = QuestionRow {
            target: Some("reviewer".into()),
            deadline_at: None,
            ..question(8, &[], false)
        };
        let expected = "\
no pending approvals

ID  ASKER  TO        AGE  TTL  QUESTION
7   coder  operator  2m   10m  ship it?
                               1. yes
                               2. no
                               3. later
                               (pick several: `hive answer 7 1 3`)
8   coder  reviewer  2m   -    ship it?
";
        assert_eq!(
            render_pending(
                &[],
                &[question(7, &["yes", "no", "later"], true), peer],
                NOW
            ),
            expected
        );
        assert_eq!(
            render_pending(&[], &[], NOW),
            "no pending approvals\n\nno open questions\n"
        );
    }

    #[test]
    fn answers_pick_options_by_number_or_text() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let single = question(7, &["yes", "no", "ship it later"], false);
        let multi = question(8, &["a", "b", "c"], true);
        let free = question(9, &[], false);
        assert_eq!(pick_answer(&single, &words(&["2"])).unwrap(), "no");
        assert_eq!(pick_answer(&single, &words(&["yes"])).unwrap(), "yes");
        assert_eq!(
            pick_answer(&single, &words(&["ship", "it", "later"])).unwrap(),
            "ship it later"
        );
        assert_eq!(
            pick_answer(&single, &words(&["not", "now"])).unwrap(),
            "not now"
        );
        assert_eq!(
            pick_answer(&single, &words(&["1", "2"])).unwrap_err(),
            "question #7 takes one option; pick one of 1..3"
        );
        assert_eq!(
            pick_answer(&single, &words(&["4"])).unwrap_err(),
            "question #7 has options 1..3; 4 is not one"
        );
        assert_eq!(pick_answer(&multi, &words(&["1", "3"])).unwrap(), "a, c");
        assert_eq!(pick_answer(&multi, &words(&["1,b"])).unwrap(), "a, b");
        assert_eq!(pick_answer(&free, &words(&["42"])).unwrap(), "42");
    }

    #[test]
    fn diffs_colour_only_for_a_terminal() {
        let diff = "--- a/agent.toml\n+++ b/agent.toml\n@@ -1 +1 @@\n-model = \"a\"\n+model = \"b\x1b[2J\"\n same\n";
        assert_eq!(
            render_diff(diff, false),
            "--- a/agent.toml\n+++ b/agent.toml\n@@ -1 +1 @@\n-model = \"a\"\n+model = \"b\"\n same\n"
        );
        assert_eq!(
            render_diff(diff, true),
            "--- a/agent.toml\n+++ b/agent.toml\n\x1b[36m@@ -1 +1 @@\x1b[0m\n\x1b[31m-model = \"a\"\x1b[0m\n\x1b[32m+model = \"b\"\x1b[0m\n same\n"
        );
    }

    #[test]
    fn status_separates_kept_state() {
        let text = render_status(&[row("coder")], &["old".to_owned()], NOW);
        assert_eq!(
            text,
            "NAME   STATE    PAUSED  LOGIN  UPDATE  REMINDERS  MODEL  SHA  STATUS  URL\n\
             coder  stopped  -       -      -       0          -      -    -       -\n\
             \n\
             kept state, no container (destroyed; `hive spawn NAME` revives, `hive destroy NAME --purge` deletes): old\n"
        );
    }

    #[test]
    fn ages() {
        let cases = [
            (-5, "0s"),
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3_599, "59m"),
        ];
        let more = [
            (3_600, "1h"),
            (86_399, "23h"),
            (86_400, "1d"),
            (10 * 86_400, "10d"),
        ];
        for (secs, expected) in cases.into_iter().chain(more) {
            assert_eq!(format_age(secs), expected, "{secs}");
        }
    }

    #[test]
    fn summaries() {
        let ok = HostResponse::success();
        let check = |req: HostRequest, resp: &HostResponse, expected: &str| {
            assert_eq!(render_response(&req, resp, NOW), expected);
        };
        check(
            HostRequest::Kill {
                name: name("coder"),
            },
            &ok,
            "killed coder\n",
        );
        check(
            HostRequest::Start {
                scope: Scope::default(),
            },
            &ok,
            "started every agent\n",
        );
        let two = Scope {
            agent_names: vec![name("a"), name("b")],
        };
        check(
            HostRequest::Stop {
                scope: two,
                graceful: true,
            },
            &ok,
            "stopped a, b gracefully\n",
        );
        check(
            HostRequest::SetPaused {
                name: name("a"),
                paused: false,
            },
            &ok,
            "resumed a\n",
        );
        check(HostRequest::Deny { id: 4, note: None }, &ok, "denied #4\n");
        let spawned = HostResponse::approvals(vec![approval(4, ApprovalKind::Spawn, "coder")]);
        check(
            HostRequest::Approve { id: 4 },
            &spawned,
            "approved #4 (spawn for coder)\n",
        );
        check(
            HostRequest::RequestSpawn {
                name: name("coder"),
                description: None,
            },
            &spawned,
            "queued spawn approval #4 for coder — approve with `hive approve 4`\n",
        );
        check(
            HostRequest::Send {
                to: hive_proto::Recipient::Broadcast,
                body: "hi".into(),
            },
            &ok,
            "sent to every agent\n",
        );
        check(
            HostRequest::List,
            &HostResponse::agents(vec!["a".into(), "b".into()]),
            "a\nb\n",
        );
        check(HostRequest::List, &HostResponse::agents(vec![]), "");
        check(
            HostRequest::Pending,
            &HostResponse::approvals(vec![]),
            "no pending approvals\n",
        );
        check(
            HostRequest::Stop {
                scope: Scope::default(),
                graceful: false,
            },
            &HostResponse::stopped(vec![hive_proto::KeptRunning {
                name: "manager".into(),
                reason: "name it to stop it".into(),
            }]),
            "stopped every agent but manager\nmanager still runs: name it to stop it\n",
        );
        check(
            HostRequest::Answer {
                id: 3,
                answer: "yes".into(),
            },
            &ok,
            "answered question #3\n",
        );
    }

    #[test]
    fn stream_keeps_columns_and_widens() {
        let (mut stream, table) = StatusStream::start(&[row("coder")], NOW);
        assert_eq!(
            table,
            "TIME(UTC)  NAME   STATE    PAUSED  LOGIN  UPDATE  REMINDERS  MODEL  SHA  STATUS  URL\n\
             22:13:20   coder  stopped  -       -      -       0          -      -    -       -\n"
        );
        let update = AgentStatusRow {
            running: true,
            ..row("coder")
        };
        assert_eq!(
            stream.row(&update, NOW + 61),
            "22:14:21   coder  running  -       -      -       0          -      -    -       -\n"
        );
        assert_eq!(
            stream.row(&row("reviewer"), NOW),
            "22:13:20   reviewer  stopped  -       -      -       0          -      -    -       -\n"
        );
    }
}
