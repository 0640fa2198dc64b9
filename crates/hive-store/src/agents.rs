//! The agents registry: which agents exist, and the per-agent fields core
//! keeps for them (pause, status line, model, parent, deployed sha, flags,
//! web port, allowed recipients).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use hive_proto::{AgentName, MANAGER_AGENT, OPERATOR_RECIPIENT, Recipient, SYSTEM_SENDER};
use rusqlite::{Connection, OptionalExtension, Row, ToSql};

use crate::{Error, Result, Store, now_unix};

/// One registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: String,
    pub created_at: i64,
    pub paused: bool,
    pub status_text: Option<String>,
    pub status_set_at: Option<i64>,
    pub active_model: Option<String>,
    pub parent: Option<String>,
    pub deployed_sha: Option<String>,
    pub needs_login: bool,
    pub needs_update: bool,
    pub port: Option<u16>,
    /// Who this agent may send to besides the manager and the operator
    /// (always reachable). `None`: anyone.
    pub allowed_recipients: Option<Vec<String>>,
    /// A container exists for it; without one its kept state is a
    /// tombstone.
    pub has_container: bool,
    /// It should be running: core starts it again after a restart.
    pub want_running: bool,
    /// The node (id) of a multi-host runtime its state lives on, once it
    /// was first placed: it runs there or not at all.
    pub node: Option<String>,
    /// The generation of its state volume on a multi-host runtime
    /// (`h-<agent>-<hive>-state-<generation>`): a bump starts it on a fresh,
    /// empty one.
    pub generation: u32,
}

const AGENT_COLUMNS: &str = "name, created_at, paused, status_text, status_set_at, \
     active_model, parent, deployed_sha, needs_login, needs_update, port, allowed_recipients, \
     has_container, want_running, node, state_generation";

fn agent_from_row(row: &Row<'_>) -> rusqlite::Result<AgentRecord> {
    let allowed: Option<String> = row.get(11)?;
    Ok(AgentRecord {
        name: row.get(0)?,
        created_at: row.get(1)?,
        paused: row.get(2)?,
        status_text: row.get(3)?,
        status_set_at: row.get(4)?,
        active_model: row.get(5)?,
        parent: row.get(6)?,
        deployed_sha: row.get(7)?,
        needs_login: row.get(8)?,
        needs_update: row.get(9)?,
        port: row.get(10)?,
        allowed_recipients: allowed.map(|json| decode_names(&json, 11)).transpose()?,
        has_container: row.get(12)?,
        want_running: row.get(13)?,
        node: row.get(14)?,
        generation: row.get(15)?,
    })
}

/// Decodes a JSON array of names stored in column `idx`.
pub(crate) fn decode_names(json: &str, idx: usize) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Encodes names as the JSON array stored in sqlite.
pub(crate) fn encode_names(names: &[String]) -> String {
    serde_json::Value::from(names.to_vec()).to_string()
}

/// Whether `name` is a registered agent, on an open connection.
pub(crate) fn exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM agents WHERE name = ?1)")?
        .query_row([name], |r| r.get(0))
}

/// Every registered agent name except `except`, sorted.
/// Agents with a container other than `except`: who a broadcast reaches.
/// A destroyed agent's kept state is no recipient; it would find a pile of
/// stale broadcasts when revived.
/// Without `needs_container` (a hive with no runtime, whose agents never
/// have one), every registered agent but `except`.
pub(crate) fn names_except(
    conn: &Connection,
    except: &str,
    needs_container: bool,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM agents WHERE name <> ?1 AND (has_container = 1 OR NOT ?2) \
         ORDER BY name",
    )?;
    stmt.query_map((except, needs_container), |r| r.get(0))?
        .collect()
}

/// `name`'s allow-list as the file has it, `None` if it is not
/// registered; a list the file cannot decode is [`unreadable`].
fn registered(conn: &Connection, name: &str) -> Result<Option<Result<AllowList>>> {
    let json: Option<Option<String>> = conn
        .prepare_cached("SELECT allowed_recipients FROM agents WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(json.map(|json| {
        json.map(|j| decode_names(&j, 0))
            .transpose()
            .map_err(|e| unreadable(name, &e))
    }))
}

/// An allow-list the file holds but cannot decode (edited by hand): a
/// refusal of its own agent's sends, never a failure of the database.
fn unreadable(name: &str, e: &rusqlite::Error) -> Error {
    Error::Refused(format!(
        "the allowed recipients of {name} cannot be read: {e}"
    ))
}

/// Whether an allow-list lets its agent reach `to`. The manager and the
/// operator are always reachable.
pub(crate) fn allows(list: Option<&[String]>, to: &str) -> bool {
    to == MANAGER_AGENT
        || to == OPERATOR_RECIPIENT
        || list.is_none_or(|names| names.iter().any(|n| n == to))
}

/// Who is registered and whom each may reach, read from the file once
/// per change of `agents`: every send checks its recipients here rather
/// than with two queries. [`crate::watch_writes`] calls
/// [`Reach::changed`] on any write to `agents` and on any rollback, and
/// the next check starts over from the file.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    changes: AtomicU64,
    known: Mutex<Known>,
}

/// An agent's allow-list: `None`, it may reach anyone.
type AllowList = Option<Vec<String>>;

/// The registered names read since `changes` last moved (never a name
/// that is not registered: an agent sending to ever new names must not
/// grow it).
#[derive(Debug, Default)]
struct Known {
    /// `Reach::changes` when they were read.
    at: u64,
    /// Per registered name, its allow-list, or why it cannot be read (a
    /// file edited by hand): that refuses the agent's own sends only.
    names: HashMap<String, std::result::Result<AllowList, String>>,
}

impl Known {
    /// `name`'s allow-list as the file has it (read from `conn` the first
    /// time), `None` if it is not registered.
    fn read(
        &mut self,
        conn: &Connection,
        name: &str,
    ) -> Result<Option<&std::result::Result<AllowList, String>>> {
        if !self.names.contains_key(name) {
            let Some(list) = registered(conn, name)? else {
                return Ok(None);
            };
            self.names
                .insert(name.to_owned(), list.map_err(|e| e.to_string()));
        }
        Ok(self.names.get(name))
    }

    /// [`Reach::allow_list`] on these names, borrowed.
    fn allow_list(&mut self, conn: &Connection, from: &str) -> Result<Option<&[String]>> {
        match from {
            OPERATOR_RECIPIENT | SYSTEM_SENDER => Ok(None),
            _ => match self.read(conn, from)? {
                None => Ok(None),
                Some(Ok(list)) => Ok(list.as_deref()),
                Some(Err(why)) => Err(Error::Refused(why.clone())),
            },
        }
    }
}

impl Reach {
    /// How many names it holds.
    #[cfg(test)]
    pub(crate) fn known_names(&self) -> usize {
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .len()
    }

    /// `agents` changed (or may have).
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The names read since `agents` last changed (none, if it changed).
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let changes = self.changes.load(Ordering::Acquire);
        if known.at != changes {
            *known = Known {
                at: changes,
                names: HashMap::new(),
            };
        }
        known
    }

    /// Whom `from` may reach (`None`: anyone; an agent not registered, the
    /// operator and core are not restricted), as read from `conn` (the
    /// caller holds it); an allow-list the file cannot decode refuses.
    pub(crate) fn allow_list(&self, conn: &Connection, from: &str) -> Result<AllowList> {
        Ok(Known::allow_list(&mut self.known(), conn, from)?.map(<[String]>::to_vec))
    }

    /// Refuses unless `to` is a registered agent that `from` may reach,
    /// as read from `conn` (the caller holds it).
    pub(crate) fn check(&self, conn: &Connection, from: &str, to: &str) -> Result<()> {
        let mut known = self.known();
        if known.read(conn, to)?.is_none() {
            return Err(Error::UnknownAgent(to.to_owned()));
        }
        // Borrowed: a send copies no allow-list.
        if allows(Known::allow_list(&mut known, conn, from)?, to) {
            Ok(())
        } else {
            Err(Error::NotAllowed {
                from: from.to_owned(),
                to: to.to_owned(),
            })
        }
    }
}

impl Store {
    /// Registers `name` (created now). Registering a known agent changes
    /// nothing.
    pub fn register_agent(&self, name: &AgentName) -> Result<()> {
        self.conn()
            .prepare_cached("INSERT OR IGNORE INTO agents (name, created_at) VALUES (?1, ?2)")?
            .execute((name.as_str(), now_unix()))?;
        Ok(())
    }

    /// Purges `name` from the registry. Its messages, questions and
    /// reminders stay; a reminder aimed at it will fail and park.
    pub fn forget_agent(&self, name: &str) -> Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM agents WHERE name = ?1")?
            .execute([name])?;
        // The content its inbox kept goes (its rows stay in the file).
        self.flight().drop_fresh(name);
        self.inner
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        Ok(())
    }

    /// Every registered agent, sorted by name.
    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY name"))?;
        let rows = stmt
            .query_map([], agent_from_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// One agent, if registered.
    pub fn agent(&self, name: &str) -> Result<Option<AgentRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE name = ?1"
        ))?;
        Ok(stmt.query_row([name], agent_from_row).optional()?)
    }

    /// Whether `name` is a registered agent.
    pub fn is_agent(&self, name: &str) -> Result<bool> {
        Ok(exists(&self.conn(), name)?)
    }

    pub fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        self.set_field(name, "paused = ?2", &paused)
    }

    /// Sets the one-line status and stamps `status_set_at` now; `None`
    /// clears both.
    pub fn set_status_text(&self, name: &str, text: Option<&str>) -> Result<()> {
        let at = text.map(|_| now_unix());
        self.set_fields(name, "status_text = ?2, status_set_at = ?3", &[&text, &at])
    }

    pub fn set_active_model(&self, name: &str, model: Option<&str>) -> Result<()> {
        self.set_field(name, "active_model = ?2", &model)
    }

    pub fn set_parent(&self, name: &str, parent: Option<&str>) -> Result<()> {
        self.set_field(name, "parent = ?2", &parent)
    }

    pub fn set_deployed_sha(&self, name: &str, sha: Option<&str>) -> Result<()> {
        self.set_field(name, "deployed_sha = ?2", &sha)
    }

    pub fn set_needs_login(&self, name: &str, v: bool) -> Result<()> {
        self.set_field(name, "needs_login = ?2", &v)
    }

    pub fn set_needs_update(&self, name: &str, v: bool) -> Result<()> {
        self.set_field(name, "needs_update = ?2", &v)
    }

    /// Records an agent's web port; a port another agent holds is refused.
    pub fn set_port(&self, name: &str, port: Option<u16>) -> Result<()> {
        self.set_field(name, "port = ?2", &port)
            .map_err(|e| match e {
                Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Error::Refused(format!(
                        "port {} is already taken by another agent",
                        port.unwrap_or(0)
                    ))
                }
                e => e,
            })
    }

    /// Makes `*` skip agents without a container (a hive with a runtime,
    /// where those are destroyed with their state kept); off by default.
    pub fn set_broadcast_needs_container(&self, yes: bool) {
        self.inner
            .broadcast_needs_container
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn broadcast_needs_container(&self) -> bool {
        self.inner
            .broadcast_needs_container
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_has_container(&self, name: &str, v: bool) -> Result<()> {
        self.set_field(name, "has_container = ?2", &v)
    }

    pub fn set_want_running(&self, name: &str, v: bool) -> Result<()> {
        self.set_field(name, "want_running = ?2", &v)
    }

    /// Pins `name` to the node its state lives on (`None`: unpinned).
    pub fn set_node(&self, name: &str, node: Option<&str>) -> Result<()> {
        self.set_field(name, "node = ?2", &node)
    }

    /// Pins `name` to `node` (`None`: unpinned, placed afresh at its next
    /// start) with its state in volume generation `generation`, both in one
    /// write.
    pub fn set_placement(&self, name: &str, node: Option<&str>, generation: u32) -> Result<()> {
        self.set_fields(
            name,
            "node = ?2, state_generation = ?3",
            &[&node, &generation],
        )
    }

    /// Restricts who `name` may send to (`None`: anyone). Entries must be
    /// agent names or `operator`; the manager and the operator stay
    /// reachable whatever the list says.
    pub fn set_allowed_recipients(&self, name: &str, allowed: Option<&[String]>) -> Result<()> {
        if let Some(list) = allowed {
            for entry in list {
                if matches!(Recipient::parse(entry)?, Recipient::Broadcast) {
                    return Err(Error::Refused(
                        "allowed recipients are agent names, not \"*\"".to_owned(),
                    ));
                }
            }
        }
        let json = allowed.map(encode_names);
        self.set_field(name, "allowed_recipients = ?2", &json)
    }

    fn set_field(&self, name: &str, assignment: &str, value: &dyn ToSql) -> Result<()> {
        self.set_fields(name, assignment, &[value])
    }

    /// Runs `UPDATE agents SET <assignments> WHERE name = ?1` with `values`
    /// bound from `?2`; `UnknownAgent` when no row matched.
    fn set_fields(&self, name: &str, assignments: &str, values: &[&dyn ToSql]) -> Result<()> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached(&format!("UPDATE agents SET {assignments} WHERE name = ?1"))?;
        let mut params: Vec<&dyn ToSql> = Vec::with_capacity(values.len() + 1);
        params.push(&name);
        params.extend_from_slice(values);
        if stmt.execute(params.as_slice())? == 0 {
            return Err(Error::UnknownAgent(name.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_set_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
        let coder = AgentName::parse("coder").unwrap();
        store.register_agent(&coder).unwrap();
        store.register_agent(&coder).unwrap();
        store.register_agent(&AgentName::manager()).unwrap();
        assert_eq!(
            store
                .agents()
                .unwrap()
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>(),
            ["coder", "manager"]
        );

        store.set_paused("coder", true).unwrap();
        store.set_status_text("coder", Some("refactoring")).unwrap();
        store.set_active_model("coder", Some("opus")).unwrap();
        store.set_parent("coder", Some("manager")).unwrap();
        store.set_deployed_sha("coder", Some("abc1234")).unwrap();
        store.set_needs_login("coder", true).unwrap();
        store.set_needs_update("coder", true).unwrap();
        store.set_port("coder", Some(8123)).unwrap();
        store
            .set_allowed_recipients("coder", Some(&["tester".to_owned()]))
            .unwrap();
        let rec = store.agent("coder").unwrap().unwrap();
        assert!(rec.paused && rec.needs_login && rec.needs_update);
        assert_eq!(rec.status_text.as_deref(), Some("refactoring"));
        assert!(rec.status_set_at.is_some());
        assert_eq!(rec.active_model.as_deref(), Some("opus"));
        assert_eq!(rec.parent.as_deref(), Some("manager"));
        assert_eq!(rec.deployed_sha.as_deref(), Some("abc1234"));
        assert_eq!(rec.port, Some(8123));
        assert_eq!(rec.allowed_recipients, Some(vec!["tester".to_owned()]));

        store.set_status_text("coder", None).unwrap();
        let rec = store.agent("coder").unwrap().unwrap();
        assert_eq!((rec.status_text, rec.status_set_at), (None, None));

        let err = store.set_paused("ghost", true).unwrap_err();
        assert_eq!(err.to_string(), "unknown agent \"ghost\"");
        assert!(
            store
                .set_allowed_recipients("coder", Some(&["*".to_owned()]))
                .is_err()
        );
        assert!(
            store
                .set_allowed_recipients("coder", Some(&["../x".to_owned()]))
                .is_err()
        );

        store.forget_agent("coder").unwrap();
        assert!(!store.is_agent("coder").unwrap());
        assert_eq!(store.agent("coder").unwrap(), None);
    }

    #[test]
    fn a_placement_is_a_node_and_a_state_generation_set_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hive.sqlite")).unwrap();
        store
            .register_agent(&AgentName::parse("coder").unwrap())
            .unwrap();
        let placement = |store: &Store| {
            let rec = store.agent("coder").unwrap().unwrap();
            (rec.node, rec.generation)
        };
        assert_eq!(
            placement(&store),
            (None, 0),
            "a new agent: unpinned, generation 0"
        );
        store.set_node("coder", Some("n1")).unwrap();
        assert_eq!(placement(&store), (Some("n1".to_owned()), 0));
        store.set_placement("coder", None, 1).unwrap();
        assert_eq!(
            placement(&store),
            (None, 1),
            "moved: placed afresh on a new volume"
        );
        store.set_node("coder", Some("n2")).unwrap();
        assert_eq!(placement(&store), (Some("n2".to_owned()), 1));
        let err = store.set_placement("ghost", None, 1).unwrap_err();
        assert_eq!(err.to_string(), "unknown agent \"ghost\"");
    }
}
