//! Questions core asks the operator when an agent reaches its spend limit:
//! which question is about which agent, so that its answer (raise, pause,
//! stop) acts on that agent. An agent's own `ask` never lands here.

use rusqlite::OptionalExtension;

use crate::{Result, Store, WriteTx};

/// The options of a budget question after the first ("raise …").
pub const BUDGET_OPTIONS: [&str; 2] = ["pause", "stop"];

impl Store {
    /// Asks the operator what to do about `agent` over its budget — `raise`
    /// (the first option, saying by how much), pause, stop — unless a
    /// question about it is still open: the new question, or `None`.
    pub fn ask_about_budget(
        &self,
        agent: &str,
        question: &str,
        raise: &str,
    ) -> Result<Option<crate::Question>> {
        if self.open_budget_question(agent)?.is_some() {
            return Ok(None);
        }
        let options: Vec<String> = std::iter::once(raise)
            .chain(BUDGET_OPTIONS)
            .map(str::to_owned)
            .collect();
        let q = self.ask(agent, None, question, &options, false, None)?;
        let conn = self.conn();
        let tx = WriteTx::begin(&conn)?;
        tx.prepare_cached("INSERT INTO budget_questions (question, agent) VALUES (?1, ?2)")?
            .execute((q.id, agent))?;
        tx.commit()?;
        Ok(Some(q))
    }

    /// The agent a budget question is about, if `question` is one.
    pub fn budget_question_agent(&self, question: i64) -> Result<Option<String>> {
        Ok(self
            .conn()
            .prepare_cached("SELECT agent FROM budget_questions WHERE question = ?1")?
            .query_row([question], |r| r.get(0))
            .optional()?)
    }

    /// The unanswered budget question about `agent`, if any.
    pub fn open_budget_question(&self, agent: &str) -> Result<Option<i64>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT b.question FROM budget_questions b JOIN questions q ON q.id = b.question
                 WHERE b.agent = ?1 AND q.answered_at IS NULL ORDER BY b.question DESC LIMIT 1",
            )?
            .query_row([agent], |r| r.get(0))
            .optional()?)
    }
}
