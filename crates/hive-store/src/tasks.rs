//! The task board: tasks with dependencies, claims, history.
//!
//! Who may do what: any agent creates, lists, claims what is claimable to
//! it, and updates, blocks or completes what it holds (its creator may also
//! update an unheld one); the manager and the operator (`actor` `manager` /
//! `operator`) also assign, reorder and cancel. A claim is a lease on the
//! claimer's container: [`Store::release_claims`] puts every task an agent
//! holds back to `open` when it crashes or is destroyed. Dependencies never
//! form a cycle: a change that would close one is refused. Every change and
//! its history line are one transaction.

use hive_proto::task::{NewTask, Task, TaskEvent, TaskFilter, TaskPatch, TaskStatus};
use hive_proto::{MANAGER_AGENT, OPERATOR_RECIPIENT, SYSTEM_SENDER};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Error, Result, Store, WriteTx, now_unix};

/// Longest title, in characters.
pub const MAX_TASK_TITLE: usize = 200;
/// Longest body, in bytes.
pub const MAX_TASK_BODY: usize = 16 * 1024;
/// Most dependencies or links one task carries.
pub const MAX_TASK_REFS: usize = 64;
/// Most tasks that are not done or cancelled, hive-wide.
pub const MAX_ACTIVE_TASKS: u64 = 10_000;

/// The actor that may assign, reorder and cancel any task.
fn privileged(actor: &str) -> bool {
    actor == MANAGER_AGENT || actor == OPERATOR_RECIPIENT
}

fn status_of(row: &Row<'_>) -> rusqlite::Result<TaskStatus> {
    let s: String = row.get("status")?;
    TaskStatus::parse(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown task status {s:?}").into(),
        )
    })
}

/// A row without its dependencies (filled by [`load`]).
fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let links: String = row.get("links")?;
    Ok(Task {
        id: row.get("id")?,
        title: row.get("title")?,
        body: row.get("body")?,
        creator: row.get("creator")?,
        assignee: row.get("assignee")?,
        status: status_of(row)?,
        reason: row.get("reason")?,
        depends_on: Vec::new(),
        links: serde_json::from_str(&links).unwrap_or_default(),
        rank: row.get("rank")?,
        claimable: false,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

/// Fills in dependencies and `claimable`.
fn complete_task(conn: &Connection, task: Task) -> Result<Task> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.depends_on, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on
         WHERE d.task = ?1 ORDER BY d.depends_on",
    )?;
    let deps = stmt
        .query_map([task.id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(with_deps(task, deps))
}

/// `task` with its dependencies (id, status), in id order.
fn with_deps(mut task: Task, deps: Vec<(i64, String)>) -> Task {
    task.claimable =
        task.status == TaskStatus::Open && deps.iter().all(|(_, status)| status == "done");
    task.depends_on = deps.into_iter().map(|(id, _)| id).collect();
    task
}

fn load(conn: &Connection, id: i64) -> Result<Task> {
    let task = conn
        .prepare_cached("SELECT * FROM tasks WHERE id = ?1")?
        .query_row([id], task_from_row)
        .optional()?
        .ok_or(Error::NotFound { what: "task", id })?;
    complete_task(conn, task)
}

fn log(conn: &Connection, task: i64, actor: &str, action: &str, note: Option<&str>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO task_history (task, at, actor, action, note) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![task, now_unix(), actor, action, note])?;
    Ok(())
}

fn set_status(
    conn: &Connection,
    id: i64,
    status: TaskStatus,
    assignee: Option<&str>,
    reason: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE tasks SET status = ?2, assignee = ?3, reason = ?4, updated_at = ?5 WHERE id = ?1",
    )?
    .execute(params![id, status.as_str(), assignee, reason, now_unix()])?;
    Ok(())
}

fn check_title(title: &str) -> Result<String> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Error::Refused("a task needs a title".into()));
    }
    if title.chars().count() > MAX_TASK_TITLE {
        return Err(Error::Refused(format!(
            "a task title is at most {MAX_TASK_TITLE} characters"
        )));
    }
    Ok(title.to_owned())
}

fn check_body(body: &str) -> Result<()> {
    if body.len() > MAX_TASK_BODY {
        return Err(Error::Refused(format!(
            "a task body is at most {MAX_TASK_BODY} bytes: put the detail in a file under /shared \
             and link it"
        )));
    }
    Ok(())
}

/// Links are message ids (`msg:<id>`) or absolute, normalised paths under
/// `/shared` or `/state`.
fn check_links(links: &[String]) -> Result<String> {
    if links.len() > MAX_TASK_REFS {
        return Err(Error::Refused(format!(
            "a task carries at most {MAX_TASK_REFS} links"
        )));
    }
    for link in links {
        let message = link
            .strip_prefix("msg:")
            .is_some_and(|id| id.parse::<i64>().is_ok_and(|id| id > 0));
        let path = std::path::Path::new(link);
        let file = link.len() <= 4096
            && (path.starts_with("/shared") || path.starts_with("/state"))
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        if !message && !file {
            return Err(Error::Refused(format!(
                "task link {link:?} must be msg:<id> or an absolute path under /shared or /state"
            )));
        }
    }
    Ok(serde_json::to_string(links).unwrap_or_else(|_| "[]".into()))
}

/// Replaces `id`'s dependencies with `deps`, refusing unknown tasks,
/// itself, and any that would close a cycle.
fn set_deps(conn: &Connection, id: i64, deps: &[i64]) -> Result<()> {
    if deps.len() > MAX_TASK_REFS {
        return Err(Error::Refused(format!(
            "a task depends on at most {MAX_TASK_REFS} others"
        )));
    }
    conn.prepare_cached("DELETE FROM task_deps WHERE task = ?1")?
        .execute([id])?;
    for &dep in deps {
        if dep == id {
            return Err(Error::Refused(format!("task {id} cannot depend on itself")));
        }
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)")?
            .query_row([dep], |r| r.get(0))?;
        if !exists {
            return Err(Error::NotFound {
                what: "task",
                id: dep,
            });
        }
        // A cycle closes if `id` is already reachable from `dep`.
        let cycle: bool = conn
            .prepare_cached(
                "WITH RECURSIVE reach(t) AS (
                     SELECT ?1
                     UNION SELECT d.depends_on FROM task_deps d JOIN reach ON d.task = reach.t
                 )
                 SELECT EXISTS (SELECT 1 FROM reach WHERE t = ?2)",
            )?
            .query_row([dep, id], |r| r.get(0))?;
        if cycle {
            return Err(Error::Refused(format!(
                "task {id} cannot depend on task {dep}: task {dep} already depends on task {id} \
                 (a dependency cycle)"
            )));
        }
        conn.prepare_cached("INSERT OR IGNORE INTO task_deps (task, depends_on) VALUES (?1, ?2)")?
            .execute([id, dep])?;
    }
    Ok(())
}

impl Store {
    /// Creates an open task; `creator` is whoever asked.
    pub fn create_task(&self, creator: &str, new: &NewTask) -> Result<Task> {
        let title = check_title(&new.title)?;
        check_body(&new.body)?;
        let links = check_links(&new.links)?;
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let active: i64 = tx.query_row(
            "SELECT COUNT(*) FROM tasks WHERE status NOT IN ('done', 'cancelled')",
            [],
            |r| r.get(0),
        )?;
        if u64::try_from(active).unwrap_or(0) >= MAX_ACTIVE_TASKS {
            return Err(Error::Refused(format!(
                "the board already holds {MAX_ACTIVE_TASKS} active tasks"
            )));
        }
        let now = now_unix();
        let rank: i64 = tx.query_row("SELECT COALESCE(MAX(rank), 0) + 1 FROM tasks", [], |r| {
            r.get(0)
        })?;
        tx.prepare_cached(
            "INSERT INTO tasks (title, body, creator, status, links, rank, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'open', ?4, ?5, ?6, ?6)",
        )?
        .execute(params![title, new.body, creator, links, rank, now])?;
        let id = tx.last_insert_rowid();
        set_deps(&tx, id, &new.depends_on)?;
        log(&tx, id, creator, "created", None)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// One task.
    pub fn task(&self, id: i64) -> Result<Task> {
        load(&self.conn(), id)
    }

    /// The tasks that depend on `id`, in id order.
    pub fn task_dependents(&self, id: i64) -> Result<Vec<Task>> {
        let conn = self.conn();
        let ids: Vec<i64> = conn
            .prepare_cached("SELECT task FROM task_deps WHERE depends_on = ?1 ORDER BY task")?
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        ids.into_iter().map(|id| load(&conn, id)).collect()
    }

    /// One task's history, oldest first.
    pub fn task_history(&self, id: i64) -> Result<Vec<TaskEvent>> {
        let conn = self.conn();
        load(&conn, id)?;
        let mut stmt = conn.prepare_cached(
            "SELECT at, actor, action, note FROM task_history WHERE task = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(TaskEvent {
                at: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                note: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Tasks in board order (rank, then id), as `who` sees `filter`.
    pub fn tasks(&self, who: &str, filter: TaskFilter) -> Result<Vec<Task>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT * FROM tasks ORDER BY rank, id")?;
        let rows = stmt
            .query_map([], task_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Every dependency in one query, not one query per task: the
        // dashboard reads the whole board on each snapshot.
        let mut deps: std::collections::HashMap<i64, Vec<(i64, String)>> =
            std::collections::HashMap::new();
        let mut dep_stmt = conn.prepare_cached(
            "SELECT d.task, d.depends_on, t.status FROM task_deps d
             JOIN tasks t ON t.id = d.depends_on ORDER BY d.task, d.depends_on",
        )?;
        for row in dep_stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })? {
            let (task, on, status) = row?;
            deps.entry(task).or_default().push((on, status));
        }
        let mut out = Vec::new();
        for task in rows {
            let own = deps.remove(&task.id).unwrap_or_default();
            let task = with_deps(task, own);
            let keep = match filter {
                TaskFilter::All => true,
                TaskFilter::Active => !task.status.is_final(),
                TaskFilter::Mine => {
                    task.assignee.as_deref() == Some(who) && !task.status.is_final()
                }
                TaskFilter::Claimable => {
                    task.claimable && task.assignee.as_deref().is_none_or(|a| a == who)
                }
            };
            if keep {
                out.push(task);
            }
        }
        Ok(out)
    }

    /// `agent` takes `id`: it must be open (or blocked by `agent`, which
    /// resumes it), every dependency done, and not reserved for another.
    pub fn claim_task(&self, agent: &str, id: i64) -> Result<Task> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let task = load(&tx, id)?;
        let holder = task.assignee.as_deref();
        match task.status {
            TaskStatus::Open => {}
            TaskStatus::Blocked if holder == Some(agent) => {}
            TaskStatus::Claimed if holder == Some(agent) => return Ok(task),
            TaskStatus::Claimed | TaskStatus::Blocked => {
                return Err(Error::Refused(format!(
                    "task {id} is {} by {}",
                    task.status.as_str(),
                    holder.unwrap_or("nobody")
                )));
            }
            TaskStatus::Done | TaskStatus::Cancelled => {
                return Err(Error::Refused(format!(
                    "task {id} is {}",
                    task.status.as_str()
                )));
            }
        }
        if let Some(other) = holder.filter(|h| *h != agent) {
            return Err(Error::Refused(format!("task {id} is assigned to {other}")));
        }
        let open_deps: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "SELECT t.id, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on
                 WHERE d.task = ?1 AND t.status <> 'done' ORDER BY t.id",
            )?;
            stmt.query_map([id], |r| {
                Ok(format!(
                    "{} ({})",
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        if !open_deps.is_empty() {
            return Err(Error::Refused(format!(
                "task {id} depends on tasks not done yet: {}",
                open_deps.join(", ")
            )));
        }
        set_status(&tx, id, TaskStatus::Claimed, Some(agent), None)?;
        let action = if task.status == TaskStatus::Blocked {
            "resumed"
        } else {
            "claimed"
        };
        log(&tx, id, agent, action, None)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// Changes a task's fields: its holder, its creator while nobody holds
    /// it, the manager or the operator.
    pub fn update_task(&self, actor: &str, id: i64, patch: &TaskPatch) -> Result<Task> {
        let title = patch.title.as_deref().map(check_title).transpose()?;
        if let Some(body) = &patch.body {
            check_body(body)?;
        }
        let links = patch.links.as_deref().map(check_links).transpose()?;
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let task = load(&tx, id)?;
        if task.status.is_final() {
            return Err(Error::Refused(format!(
                "task {id} is {}",
                task.status.as_str()
            )));
        }
        let holds = task.assignee.as_deref() == Some(actor) && task.status != TaskStatus::Open;
        let creates = task.creator == actor && task.status == TaskStatus::Open;
        if !(holds || creates || privileged(actor)) {
            return Err(Error::Refused(format!(
                "task {id} is not yours to change: its holder, its creator while it is open, or \
                 the manager may"
            )));
        }
        let now = now_unix();
        if let Some(title) = title {
            tx.prepare_cached("UPDATE tasks SET title = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, title, now])?;
        }
        if let Some(body) = &patch.body {
            tx.prepare_cached("UPDATE tasks SET body = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, body, now])?;
        }
        if let Some(links) = links {
            tx.prepare_cached("UPDATE tasks SET links = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, links, now])?;
        }
        if let Some(deps) = &patch.depends_on {
            set_deps(&tx, id, deps)?;
            tx.prepare_cached("UPDATE tasks SET updated_at = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
        }
        log(&tx, id, actor, "updated", None)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// The holder marks its task done.
    pub fn complete_task(&self, agent: &str, id: i64, note: Option<&str>) -> Result<Task> {
        self.holder_moves(agent, id, TaskStatus::Done, "completed", note)
    }

    /// The holder stops on its task, saying why.
    pub fn block_task(&self, agent: &str, id: i64, reason: &str) -> Result<Task> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::Refused("blocking a task needs a reason".into()));
        }
        self.holder_moves(agent, id, TaskStatus::Blocked, "blocked", Some(reason))
    }

    fn holder_moves(
        &self,
        agent: &str,
        id: i64,
        to: TaskStatus,
        action: &str,
        note: Option<&str>,
    ) -> Result<Task> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let task = load(&tx, id)?;
        let holder = task.assignee.as_deref();
        let held = matches!(task.status, TaskStatus::Claimed | TaskStatus::Blocked);
        if !held || holder != Some(agent) {
            let why = match (held, holder) {
                (true, Some(other)) => format!("it is held by {other}"),
                _ if task.status.is_final() => format!("it is {}", task.status.as_str()),
                _ => "nobody holds it: claim it first".to_owned(),
            };
            return Err(Error::Refused(format!(
                "only the agent holding task {id} can mark it {}: {why}",
                to.as_str()
            )));
        }
        let reason = (to == TaskStatus::Blocked).then_some(note).flatten();
        set_status(&tx, id, to, Some(agent), reason)?;
        log(&tx, id, agent, action, note)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// Reserves an unfinished task for `agent` (manager, operator): it goes
    /// back to open for `agent` to claim.
    pub fn assign_task(&self, actor: &str, id: i64, agent: &str) -> Result<Task> {
        self.privileged_change(actor, id, "assign", |tx, task| {
            if task.status.is_final() {
                return Err(Error::Refused(format!(
                    "task {id} is {}",
                    task.status.as_str()
                )));
            }
            set_status(tx, id, TaskStatus::Open, Some(agent), None)?;
            log(tx, id, actor, "assigned", Some(agent))
        })
    }

    /// Moves a task in board order (manager, operator).
    pub fn reorder_task(&self, actor: &str, id: i64, rank: i64) -> Result<Task> {
        self.privileged_change(actor, id, "reorder", |tx, _| {
            tx.prepare_cached("UPDATE tasks SET rank = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, rank, now_unix()])?;
            log(tx, id, actor, "reordered", Some(&rank.to_string()))
        })
    }

    /// Cancels an unfinished task (manager, operator, or its creator while
    /// nobody holds it).
    pub fn cancel_task(&self, actor: &str, id: i64, reason: Option<&str>) -> Result<Task> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let task = load(&tx, id)?;
        let creates = task.creator == actor && task.status == TaskStatus::Open;
        if !(privileged(actor) || creates) {
            return Err(Error::Refused(format!(
                "only the manager, the operator or its creator (while it is open) can cancel \
                 task {id}"
            )));
        }
        if task.status.is_final() {
            return Err(Error::Refused(format!(
                "task {id} is already {}",
                task.status.as_str()
            )));
        }
        set_status(
            &tx,
            id,
            TaskStatus::Cancelled,
            task.assignee.as_deref(),
            reason,
        )?;
        log(&tx, id, actor, "cancelled", reason)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    fn privileged_change(
        &self,
        actor: &str,
        id: i64,
        verb: &str,
        change: impl FnOnce(&Connection, &Task) -> Result<()>,
    ) -> Result<Task> {
        if !privileged(actor) {
            return Err(Error::Refused(format!(
                "only the manager or the operator can {verb} tasks"
            )));
        }
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let task = load(&tx, id)?;
        change(&tx, &task)?;
        let task = load(&tx, id)?;
        tx.commit()?;
        Ok(task)
    }

    /// The lease ends: every task `agent` holds (claimed or blocked) goes
    /// back to open for anyone, with `why` in its history. Returns them.
    pub fn release_claims(&self, agent: &str, why: &str) -> Result<Vec<Task>> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let ids: Vec<i64> = tx
            .prepare_cached(
                "SELECT id FROM tasks WHERE assignee = ?1 AND status IN ('claimed', 'blocked')
                 ORDER BY id",
            )?
            .query_map([agent], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut released = Vec::with_capacity(ids.len());
        for id in ids {
            set_status(&tx, id, TaskStatus::Open, None, None)?;
            log(&tx, id, SYSTEM_SENDER, "released", Some(why))?;
            released.push(load(&tx, id)?);
        }
        tx.commit()?;
        Ok(released)
    }
}
