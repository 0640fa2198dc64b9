//! The broker's rows in flight, kept in memory: which popped rows are out
//! under which lease, whether each lease is held, when it runs out, and
//! the rows put back since.
//!
//! None of it is written: a pop, a renewal, a release, an expiry and a
//! requeue touch no file. Only an ack is durable (`broker.rs`). What a
//! crash of the daemon loses here is recovered conservatively
//! ([`crate::Store::recover_broker`]): every row unacked at the crash
//! comes again flagged `redelivered`. A clean stop
//! ([`crate::Store::stop_broker`]) writes the flags the rows in flight
//! would have come back with, so a restart redelivers them exactly as a
//! harness restart would.
//!
//! Invariant per inbox: every pending row (unacked in the file) with an
//! id at or below `cursor` is either in flight or in `returned`, and every
//! row above `cursor` is pending. So a pop takes `returned` first, then the
//! file's rows above `cursor` (the oldest rows not in flight), and the
//! unread count is `returned` plus the rows above `cursor`. An inbox is
//! read from the file when first needed (`Store::inbox`): its unacked rows
//! all put back, its cursor the last id issued.
//!
//! The rows above `cursor` are counted here too, not in the file: every
//! send announces its rows once committed ([`Flight::arrived`]), and a
//! row is kept in `above` while its id is above `cursor`. A pop that reads
//! a committed row before its send announced it moves `cursor` past it,
//! so the late announcement is ignored; an inbox read from the file after
//! a commit has the row at or below its cursor. Either way each row above
//! `cursor` is counted once, and none below.
//!
//! A pop reads no file when it need not: the rows above `cursor` keep
//! their content here too (`fresh`, within [`FRESH_ROWS`] per inbox and
//! [`FRESH_BYTES`] in all), and while every row written is announced
//! ([`Unannounced`] is zero) `above` is exactly the inbox's rows never
//! handed out, so a pop whose rows are all fresh takes them from memory.
//! Otherwise (a commit not yet announced, a row put back, a row not kept)
//! it reads the file as before. This holds because every row of
//! `messages` is written on the store's one connection, where the hooks
//! count it: a row another connection wrote would be neither counted nor
//! announced. Rows keep their order either way: a row
//! committed but not yet announced may be older than rows announced
//! already, and while there is one the count is not zero.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};

use hive_proto::{DeliveredMessage, MAX_RECV_BATCH};

/// Most rows above its cursor an inbox keeps the content of.
pub(crate) const FRESH_ROWS: usize = 2 * MAX_RECV_BATCH as usize;
/// Most body bytes every inbox's fresh rows hold together.
pub(crate) const FRESH_BYTES: usize = 8 * 1024 * 1024;
/// Most body bytes one inbox's fresh rows hold: an inbox nobody pops (a
/// stopped agent's, or one a hostile agent floods) keeps a small share.
pub(crate) const FRESH_BYTES_PER_INBOX: usize = 256 * 1024;

/// One row in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) lease: i64,
    /// It went out flagged `redelivered`.
    pub(crate) redelivered: bool,
}

/// One lease with rows in flight.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) recipient: String,
    /// Its client named it (it read the rows).
    pub(crate) held: bool,
    /// Its period, `None`: it never runs out (the original's `recv`).
    pub(crate) period_ms: Option<i64>,
    /// When it runs out (unix ms).
    pub(crate) until_ms: Option<i64>,
    /// Its rows still in flight, oldest first.
    pub(crate) ids: Vec<i64>,
}

/// One recipient's rows out and back.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// The highest id ever handed out (see the module's invariant).
    pub(crate) cursor: i64,
    /// Rows at or below `cursor` put back, and whether they come again
    /// flagged `redelivered`.
    pub(crate) returned: BTreeMap<i64, bool>,
    /// Rows in flight.
    pub(crate) out: BTreeMap<i64, Out>,
    /// Rows above `cursor` announced since the inbox was read: those
    /// waiting that were never handed out.
    pub(crate) above: BTreeSet<i64>,
    /// The content of rows of `above`, as they were sent, kept for the
    /// next pop while there is room ([`FRESH_ROWS`],
    /// [`FRESH_BYTES_PER_INBOX`], [`FRESH_BYTES`]).
    pub(crate) fresh: BTreeMap<i64, DeliveredMessage>,
    /// Body bytes of `fresh`.
    pub(crate) fresh_bytes: usize,
}

impl Inbox {
    /// How many rows wait: never handed out, or put back.
    pub(crate) fn unread(&self) -> usize {
        self.above.len() + self.returned.len()
    }
}

/// How [`Flight::put_back`] flags the rows it returns to their inbox.
#[derive(Clone, Copy)]
pub(crate) enum Flag {
    /// Nobody read them: they come again as they went out.
    Unflagged,
    /// Flagged `redelivered` if their lease was held (a turn may have
    /// acted on them).
    IfHeld,
}

/// Every inbox's rows in flight and every live lease.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    pub(crate) inboxes: HashMap<String, Inbox>,
    pub(crate) leases: HashMap<i64, Lease>,
    /// The broker stopped cleanly ([`crate::Store::stop_broker`]): nothing
    /// more is handed out.
    pub(crate) stopped: bool,
    /// Body bytes of every inbox's `fresh` rows.
    pub(crate) fresh_bytes: usize,
}

/// Rows of `messages` written on the store's connection and not yet
/// announced: counted by sqlite's own hooks ([`crate::watch_writes`]),
/// so no path that stores a message can be missed, and taken off by
/// [`Flight::arrived`]. A transaction rolled back after its commit began
/// could leave it above zero for good: pops then read the file, as they
/// always may.
#[derive(Debug, Default)]
pub(crate) struct Unannounced {
    /// Inserted by the transaction running now.
    running: AtomicI64,
    /// Committed (or committing) and not announced.
    committed: AtomicI64,
}

impl Unannounced {
    /// The running transaction inserted a row.
    pub(crate) fn inserted(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// The running transaction commits.
    pub(crate) fn committing(&self) {
        let n = self.running.swap(0, Ordering::Relaxed);
        self.committed.fetch_add(n, Ordering::AcqRel);
    }

    /// The running transaction rolled back.
    pub(crate) fn rolled_back(&self) {
        self.running.store(0, Ordering::Relaxed);
    }

    /// Whether every committed row was announced.
    pub(crate) fn none(&self) -> bool {
        self.committed.load(Ordering::Acquire) == 0
    }
}

impl Flight {
    /// Records `rows` (id, went out flagged) of `lease` as in flight.
    pub(crate) fn hand_out(&mut self, lease_id: i64, lease: Lease, rows: &[(i64, bool)]) {
        // The pop read the inbox first (`Store::inbox`).
        let inbox = self.inboxes.entry(lease.recipient.clone()).or_default();
        for &(id, redelivered) in rows {
            inbox.returned.remove(&id);
            inbox.cursor = inbox.cursor.max(id);
            inbox.out.insert(
                id,
                Out {
                    lease: lease_id,
                    redelivered,
                },
            );
        }
        // What the cursor passed was handed out now.
        let next = inbox.cursor.saturating_add(1);
        inbox.above = inbox.above.split_off(&next);
        let kept = inbox.fresh.split_off(&next);
        let passed = std::mem::replace(&mut inbox.fresh, kept);
        let bytes = passed.values().map(|m| m.body.len()).sum::<usize>();
        inbox.fresh_bytes -= bytes;
        self.fresh_bytes -= bytes;
        self.leases.insert(lease_id, lease);
        self.check_fresh();
    }

    /// Committed `rows` were announced: each waits above its inbox's
    /// cursor, its content kept while there is room, unless a pop already
    /// read it (or the inbox was read from the file since, or is not read
    /// yet). They are no longer unannounced.
    pub(crate) fn arrived(&mut self, rows: Vec<DeliveredMessage>, unannounced: &Unannounced) {
        let n = i64::try_from(rows.len()).unwrap_or(i64::MAX);
        for row in rows {
            let Some(inbox) = self.inboxes.get_mut(&row.to) else {
                continue;
            };
            if row.id <= inbox.cursor {
                continue;
            }
            if !inbox.above.insert(row.id) {
                // Announced once already.
                continue;
            }
            let len = row.body.len();
            if inbox.fresh.len() < FRESH_ROWS
                && inbox.fresh_bytes + len <= FRESH_BYTES_PER_INBOX
                && self.fresh_bytes + len <= FRESH_BYTES
            {
                inbox.fresh_bytes += len;
                self.fresh_bytes += len;
                inbox.fresh.insert(row.id, row);
            }
        }
        // Taken off under the same lock a pop checks it under.
        let before = unannounced.committed.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "{n} rows announced, {before} written");
        self.check_fresh();
    }

    /// Up to `max` of `recipient`'s waiting rows from memory, oldest
    /// first, if memory holds them all: nothing is put back, every
    /// committed row was announced (`all_announced`), and each of the
    /// oldest rows above the cursor is fresh. `None`: the file must be
    /// read.
    pub(crate) fn take_fresh(
        &mut self,
        recipient: &str,
        max: usize,
        all_announced: bool,
    ) -> Option<Vec<DeliveredMessage>> {
        let inbox = self.inboxes.get_mut(recipient)?;
        if !all_announced || !inbox.returned.is_empty() {
            return None;
        }
        // `fresh` is a subset of `above` (`check_fresh`): the oldest rows
        // are all fresh when both begin with the same ids.
        if !inbox
            .above
            .iter()
            .take(max)
            .eq(inbox.fresh.keys().take(max))
        {
            return None;
        }
        let n = max.min(inbox.above.len());
        // They stay in `above` until `hand_out` passes them.
        let taken: Vec<DeliveredMessage> = std::iter::from_fn(|| inbox.fresh.pop_first())
            .map(|(_, m)| m)
            .take(n)
            .collect();
        let bytes = taken.iter().map(|m| m.body.len()).sum::<usize>();
        inbox.fresh_bytes -= bytes;
        self.fresh_bytes -= bytes;
        self.check_fresh();
        Some(taken)
    }

    /// Takes `ids` of `recipient` out of flight (acked, or about to be
    /// put back); returns those that were, with how they went out. Their
    /// leases forget them, and a lease left with no row is dropped.
    pub(crate) fn take(&mut self, recipient: &str, ids: &[i64]) -> Vec<(i64, Out, bool)> {
        let Some(inbox) = self.inboxes.get_mut(recipient) else {
            return Vec::new();
        };
        let mut taken = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(out) = inbox.out.remove(id) else {
                continue;
            };
            let mut held = false;
            if let Some(lease) = self.leases.get_mut(&out.lease) {
                held = lease.held;
                lease.ids.retain(|i| i != id);
                if lease.ids.is_empty() {
                    self.leases.remove(&out.lease);
                }
            }
            taken.push((*id, out, held));
        }
        taken
    }

    /// Puts `ids` of `recipient` that are in flight back in its inbox,
    /// flagged as `flag` says; returns how many went back.
    pub(crate) fn put_back(&mut self, recipient: &str, ids: &[i64], flag: Flag) -> usize {
        let taken = self.take(recipient, ids);
        if let Some(inbox) = self.inboxes.get_mut(recipient) {
            for &(id, out, held) in &taken {
                let flagged = match flag {
                    Flag::Unflagged => out.redelivered,
                    Flag::IfHeld => out.redelivered || held,
                };
                inbox.returned.insert(id, flagged);
            }
        }
        taken.len()
    }

    /// The ids of `recipient` in flight whose lease `pick` chooses.
    pub(crate) fn ids_where(
        &self,
        recipient: &str,
        mut pick: impl FnMut(i64, &Lease) -> bool,
    ) -> Vec<i64> {
        let Some(inbox) = self.inboxes.get(recipient) else {
            return Vec::new();
        };
        inbox
            .out
            .iter()
            .filter(|(_, out)| {
                self.leases
                    .get(&out.lease)
                    .is_some_and(|lease| pick(out.lease, lease))
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// `ids` (in flight for `recipient`, ascending) as runs `(first, last)`
    /// holding no other unacked row of `recipient`: by the module's
    /// invariant those at or below `cursor` are all in flight or put back,
    /// so a run's id range, filtered by recipient and unacked, is exactly
    /// its rows.
    pub(crate) fn runs(&self, recipient: &str, ids: &[i64]) -> Vec<(i64, i64)> {
        let mut runs: Vec<(i64, i64)> = Vec::new();
        let (Some(inbox), Some(&lo), Some(&hi)) =
            (self.inboxes.get(recipient), ids.first(), ids.last())
        else {
            return runs;
        };
        let mut chosen = ids.iter().peekable();
        let mut others = inbox
            .out
            .range(lo..=hi)
            .map(|(id, _)| *id)
            .filter(|id| ids.binary_search(id).is_err())
            .chain(inbox.returned.range(lo..=hi).map(|(id, _)| *id))
            .collect::<Vec<_>>();
        others.sort_unstable();
        let mut others = others.into_iter().peekable();
        while let Some(&first) = chosen.next() {
            let mut last = first;
            // The run ends before the next unacked row that is not chosen.
            let stop = loop {
                match others.peek() {
                    Some(&o) if o < first => {
                        others.next();
                    }
                    next => break next.copied(),
                }
            };
            while let Some(&&next) = chosen.peek() {
                if stop.is_some_and(|stop| next > stop) {
                    break;
                }
                last = next;
                chosen.next();
            }
            runs.push((first, last));
        }
        runs
    }

    /// Debug builds check that the kept bytes add up, every inbox's and
    /// all together, after each step that changes them.
    fn check_fresh(&self) {
        if cfg!(debug_assertions) {
            let mut all = 0;
            for (name, inbox) in &self.inboxes {
                let bytes: usize = inbox.fresh.values().map(|m| m.body.len()).sum();
                assert_eq!(bytes, inbox.fresh_bytes, "kept bytes of {name}");
                assert!(inbox.fresh.keys().all(|id| inbox.above.contains(id)));
                all += bytes;
            }
            assert_eq!(all, self.fresh_bytes, "kept bytes in all");
        }
    }

    /// How many rows of `recipient` are in flight.
    pub(crate) fn out(&self, recipient: &str) -> usize {
        self.inboxes
            .get(recipient)
            .map_or(0, |inbox| inbox.out.len())
    }

    /// When the earliest lease runs out (unix ms), if any does.
    pub(crate) fn next_expiry(&self) -> Option<i64> {
        self.leases.values().filter_map(|l| l.until_ms).min()
    }

    /// Drops the content `recipient`'s inbox keeps: its next pop reads
    /// the file.
    pub(crate) fn drop_fresh(&mut self, recipient: &str) {
        if let Some(inbox) = self.inboxes.get_mut(recipient) {
            inbox.fresh.clear();
            self.fresh_bytes -= std::mem::take(&mut inbox.fresh_bytes);
        }
    }

    /// Forgets `recipient`'s inbox and its leases (all its rows acked):
    /// it is read from the file again when next needed.
    pub(crate) fn forget(&mut self, recipient: &str) {
        if let Some(inbox) = self.inboxes.remove(recipient) {
            self.fresh_bytes -= inbox.fresh_bytes;
            for out in inbox.out.into_values() {
                self.leases.remove(&out.lease);
            }
        }
    }

    /// The rows that must come again flagged `redelivered` if the broker
    /// stopped now: those in flight under a held lease or that went out
    /// flagged, and those put back flagged.
    pub(crate) fn flagged(&self) -> Vec<i64> {
        let mut ids = Vec::new();
        for inbox in self.inboxes.values() {
            for (id, out) in &inbox.out {
                let held = self.leases.get(&out.lease).is_some_and(|l| l.held);
                if held || out.redelivered {
                    ids.push(*id);
                }
            }
            ids.extend(
                inbox
                    .returned
                    .iter()
                    .filter(|(_, flagged)| **flagged)
                    .map(|(id, _)| *id),
            );
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ack's runs never span an unacked row it does not ack: one in
    /// flight under another lease, or one put back.
    #[test]
    fn runs_stop_at_every_row_not_acked() {
        let mut flight = Flight::default();
        let lease = |ids: &[i64]| Lease {
            recipient: "bob".into(),
            held: true,
            period_ms: None,
            until_ms: None,
            ids: ids.to_vec(),
        };
        flight.hand_out(
            1,
            lease(&[1, 2, 3, 4]),
            &[(1, false), (2, false), (3, false), (4, false)],
        );
        flight.hand_out(2, lease(&[6, 7, 9]), &[(6, false), (7, false), (9, false)]);
        flight.put_back("bob", &[4], Flag::Unflagged);
        assert_eq!(flight.runs("bob", &[1, 2, 3, 6, 7, 9]), [(1, 3), (6, 9)]);
        assert_eq!(
            flight.runs("bob", &[1, 3, 6, 9]),
            [(1, 1), (3, 3), (6, 6), (9, 9)]
        );
        assert_eq!(flight.runs("bob", &[2]), [(2, 2)]);
        assert_eq!(flight.runs("alice", &[2]), []);
        assert_eq!(flight.runs("bob", &[]), []);
    }
}
