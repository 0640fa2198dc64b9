//! The approval queue: spawns, config deploys and config seeds waiting for
//! the operator, and the history of how each was resolved.

use hive_proto::{AgentName, Approval, ApprovalKind, ApprovalStatus};
use rusqlite::{Connection, OptionalExtension, Row};

use crate::{Error, Result, Store, WriteTx, now_unix};

const APPROVAL_COLUMNS: &str =
    "id, agent, kind, commit_ref, requested_at, status, resolved_at, note, description";

fn approval_from_row(row: &Row<'_>) -> rusqlite::Result<Approval> {
    let kind: String = row.get(2)?;
    let status: String = row.get(5)?;
    let kind = ApprovalKind::parse(&kind).ok_or_else(|| bad_text(2, "approval kind", &kind))?;
    let commit_ref: String = row.get(3)?;
    // A deploy's `commit_ref` is stored as the full sha core resolved and
    // fetched into the applied repo (never a branch name), so that is the
    // fetched sha too.
    let fetched_sha =
        (kind == ApprovalKind::ApplyCommit && !commit_ref.is_empty()).then(|| commit_ref.clone());
    Ok(Approval {
        id: row.get(0)?,
        agent: row.get(1)?,
        kind,
        commit_ref,
        fetched_sha,
        requested_at: row.get(4)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| bad_text(5, "approval status", &status))?,
        resolved_at: row.get(6)?,
        note: row.get(7)?,
        description: row.get(8)?,
    })
}

fn bad_text(idx: usize, what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        idx,
        rusqlite::types::Type::Text,
        format!("unknown {what} {value:?}").into(),
    )
}

fn load(conn: &Connection, id: i64) -> Result<Approval> {
    conn.prepare_cached(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?1"
    ))?
    .query_row([id], approval_from_row)
    .optional()?
    .ok_or(Error::NotFound {
        what: "approval",
        id,
    })
}

/// Whether an approval may move from `from` to `to`.
fn may_resolve(from: ApprovalStatus, to: ApprovalStatus) -> bool {
    use ApprovalStatus::*;
    matches!(
        (from, to),
        (Pending, Approved | Denied | Cancelled | Failed) | (Approved, Failed | Superseded)
    )
}

impl Store {
    /// Queues a pending approval for `agent` (a valid agent name; it need not
    /// be registered yet, e.g. for a spawn). `commit_ref` is empty except for
    /// `apply_commit`.
    pub fn queue_approval(
        &self,
        agent: &str,
        kind: ApprovalKind,
        commit_ref: &str,
        description: Option<&str>,
    ) -> Result<Approval> {
        AgentName::parse(agent)?;
        let conn = self.conn();
        conn.prepare_cached(
            "INSERT INTO approvals (agent, kind, commit_ref, requested_at, status, description)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
        )?
        .execute((agent, kind.as_str(), commit_ref, now_unix(), description))?;
        load(&conn, conn.last_insert_rowid())
    }

    /// One approval; `NotFound` if there is none with `id`.
    pub fn approval(&self, id: i64) -> Result<Approval> {
        load(&self.conn(), id)
    }

    /// Every pending approval, oldest first.
    pub fn pending_approvals(&self) -> Result<Vec<Approval>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status = 'pending' ORDER BY id"
        ))?;
        let rows = stmt
            .query_map([], approval_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The last `limit` resolved approvals, most recently resolved first.
    pub fn approval_history(&self, limit: u64) -> Result<Vec<Approval>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE status <> 'pending'
             ORDER BY resolved_at DESC, id DESC LIMIT ?1"
        ))?;
        let rows = stmt
            .query_map([crate::limit(limit)], approval_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Moves an approval to `status`, stamping `resolved_at` now and setting
    /// `note` (an absent note keeps the previous one). Allowed: pending →
    /// approved, denied, cancelled or failed; approved → failed. Anything
    /// else is refused with "approval N is already `<status>`".
    pub fn resolve_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
    ) -> Result<Approval> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let current = load(&tx, id)?;
        if !may_resolve(current.status, status) {
            return Err(Error::Refused(format!(
                "approval {id} is already {}",
                current.status.as_str()
            )));
        }
        tx.prepare_cached(
            "UPDATE approvals SET status = ?2, resolved_at = ?3, note = COALESCE(?4, note)
             WHERE id = ?1",
        )?
        .execute((id, status.as_str(), now_unix(), note))?;
        let resolved = load(&tx, id)?;
        tx.commit()?;
        Ok(resolved)
    }

    /// Cancels every pending approval of `agent` (e.g. when it is destroyed),
    /// returning them as resolved.
    pub fn cancel_pending_approvals_for(
        &self,
        agent: &str,
        note: Option<&str>,
    ) -> Result<Vec<Approval>> {
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        let cancelled = tx
            .prepare_cached(&format!(
                "UPDATE approvals SET status = 'cancelled', resolved_at = ?2, note = ?3
                 WHERE agent = ?1 AND status = 'pending' RETURNING {APPROVAL_COLUMNS}"
            ))?
            .query_map((agent, now_unix(), note), approval_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.commit()?;
        let mut cancelled = cancelled;
        cancelled.sort_unstable_by_key(|a| a.id);
        Ok(cancelled)
    }
}
