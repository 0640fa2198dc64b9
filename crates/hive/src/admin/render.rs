//! Human-readable output of host.sock responses: aligned tables and one-line summaries.

use hive_proto::{
    AgentStatusRow, AgentUrl, Approval, HostRequest, HostResponse, Scope, Task, TaskStatus,
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
/// Columns of the `hive tasks` table.
pub const TASKS_HEADER: [&str; 5] = ["ID", "STATUS", "WHO", "AFTER", "TITLE"];
/// Columns of the `hive urls` table.
pub const URLS_HEADER: [&str; 2] = ["NAME", "URL"];

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
        Urls => {
            let urls = resp.urls.as_deref().unwrap_or_default();
            if urls.is_empty() {
                "no agent urls".to_owned()
            } else {
                return render_urls_table(urls);
            }
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
        Start { scope } => format!("started {}", scope_text(scope)),
        Stop {
            scope,
            graceful: false,
        } => format!("stopped {}", scope_text(scope)),
        Stop {
            scope,
            graceful: true,
        } => format!("stopped {} gracefully", scope_text(scope)),
        Restart { name } => format!("restarted {name}"),
        SetPaused { name, paused: true } => format!("paused {name}"),
        SetPaused {
            name,
            paused: false,
        } => format!("resumed {name}"),
        Send { to, .. } if to == hive_proto::BROADCAST_RECIPIENT => {
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
pub fn render_status_table(rows: &[AgentStatusRow], now: i64) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|row| status_cells(row, now)).collect();
    render_table(&STATUS_HEADER, &cells)
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

/// The `hive urls` table, header included.
pub fn render_urls_table(urls: &[AgentUrl]) -> String {
    let cells: Vec<Vec<String>> = urls
        .iter()
        .map(|u| vec![cell(&u.name), cell(&u.url)])
        .collect();
    render_table(&URLS_HEADER, &cells)
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

impl StatusStream {
    /// Starts the stream with a table of `rows` (possibly none).
    pub(super) fn start(rows: &[AgentStatusRow], now: i64) -> (Self, String) {
        let cells: Vec<Vec<String>> = rows.iter().map(|row| status_cells(row, now)).collect();
        let widths = column_widths(&STATUS_HEADER, &cells);
        let table = render_with_widths(&STATUS_HEADER, &cells, &widths);
        (Self { widths }, table)
    }

    /// One more row, newline-terminated.
    pub(super) fn row(&mut self, row: &AgentStatusRow, now: i64) -> String {
        let cells = status_cells(row, now);
        for (width, text) in self.widths.iter_mut().zip(&cells) {
            *width = (*width).max(text.chars().count());
        }
        format_row(&cells, &self.widths)
    }
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

/// A log line made safe for a terminal: control characters other than tab
/// (escape sequences a container printed) become spaces.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
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
        }
    }

    fn approval(id: i64, kind: ApprovalKind, agent: &str) -> Approval {
        Approval {
            id,
            agent: agent.to_owned(),
            kind,
            commit_ref: String::new(),
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
            render_status_table(&[coder, manager, broken, long], NOW),
            expected
        );
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
        let urls = [
            AgentUrl {
                name: "coder".into(),
                url: "http://127.0.0.1:8100/".into(),
            },
            AgentUrl {
                name: "manager".into(),
                url: "http://127.0.0.1:8101/".into(),
            },
        ];
        let expected = "\
NAME     URL
coder    http://127.0.0.1:8100/
manager  http://127.0.0.1:8101/
";
        assert_eq!(render_urls_table(&urls), expected);
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
                to: "*".into(),
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
    }

    #[test]
    fn stream_keeps_columns_and_widens() {
        let (mut stream, table) = StatusStream::start(&[row("coder")], NOW);
        assert_eq!(
            table,
            "NAME   STATE    PAUSED  LOGIN  UPDATE  REMINDERS  MODEL  SHA  STATUS  URL\n\
             coder  stopped  -       -      -       0          -      -    -       -\n"
        );
        let update = AgentStatusRow {
            running: true,
            ..row("coder")
        };
        assert_eq!(
            stream.row(&update, NOW),
            "coder  running  -       -      -       0          -      -    -       -\n"
        );
        assert_eq!(
            stream.row(&row("reviewer"), NOW),
            "reviewer  stopped  -       -      -       0          -      -    -       -\n"
        );
    }
}
