//! The ADD transaction: the plan recorded before the node is touched, each attachment marked
//! started and done with its result, then either committed or aborted — undoing in reverse
//! what was started, and only that.

use super::undo::{self, Undo, Undone};
use super::{ContainerLock, Entry, Journal, JournalError, Record, State};
use crate::invoke::{Added, InvokeError};
use cni::{CniResult, Version};
use serde_json::Value;

/// The write policy of an ADD: the entry is written twice, the plan before any delegate runs
/// (on disk, `fsync`ed, before the node is touched) and everything else with the
/// network-status at the end, appended without waiting for the disk. A crash in between, or a
/// power cut before the end reached the disk, leaves attachments journaled as `Planned`, and
/// DEL undoes those too (by name, tag and container ID, as their delegates' own DEL would), so
/// writing each result as it comes, or waiting for the last write, would buy nothing but
/// `fsync`s.
pub struct AddTransaction<'j> {
    journal: &'j Journal,
    lock: ContainerLock,
    entry: Entry,
    /// Which attachments may have done something on the node.
    started: Vec<bool>,
}

impl<'j> AddTransaction<'j> {
    /// Records the plan. On disk before the node is touched: a crash from here on is undone
    /// by DEL. The container's lock is held until the transaction ends.
    pub fn begin(
        journal: &'j Journal,
        lock: ContainerLock,
        entry: Entry,
    ) -> Result<AddTransaction<'j>, JournalError> {
        let tx = AddTransaction {
            journal,
            lock,
            started: vec![false; entry.attachments.len()],
            entry,
        };
        tx.journal.write(&tx.lock, &tx.entry)?;
        tracing::debug!(attachments = tx.entry.attachments.len(), "plan journaled");
        Ok(tx)
    }

    pub fn records(&self) -> &[Record] {
        &self.entry.attachments
    }

    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// Attachment `i` is about to run: from now on an abort undoes it.
    pub fn start(&mut self, i: usize) {
        self.started[i] = true;
    }

    /// Attachment `i` is added: its result and the links it made are recorded, in memory
    /// until [`AddTransaction::report`] writes them with the rest.
    pub fn done(&mut self, i: usize, added: Added) {
        let record = &mut self.entry.attachments[i];
        record.state = State::Added;
        record.links = added.links;
        record.result = Some(added.result.to_value(Version::V1_1_0));
    }

    /// Attachment `i` failed. A chain that could not even start left nothing to undo; one
    /// that failed midway may have.
    pub fn failed(&mut self, i: usize, e: &InvokeError) {
        self.entry.attachments[i].delegate_error = Some(e.to_string());
        if e.nothing_ran() {
            self.started[i] = false;
        }
    }

    /// The results as reported, once pod-wide changes (default routes) rewrote them.
    pub fn rewrite_results(&mut self, results: &[CniResult]) {
        for (record, result) in self.entry.attachments.iter_mut().zip(results) {
            record.result = Some(result.to_value(Version::V1_1_0));
        }
    }

    /// Records the network-status with everything else the ADD did.
    pub fn report(&mut self, network_status: Option<Value>) -> Result<(), JournalError> {
        self.entry.network_status = network_status;
        self.journal.update(&self.lock, &self.entry)
    }

    /// Ends the ADD as done; the lock goes.
    pub fn commit(self) {}

    /// Gives up: every attachment that was started is undone the way DEL undoes it, in
    /// reverse, by the identities its records hold; the rest never ran. The entry goes when
    /// every DEL succeeded; otherwise it stays so the runtime's DEL retries what is left.
    pub fn abort(mut self, how: &Undo) {
        for (record, started) in self.entry.attachments.iter_mut().zip(&self.started) {
            if !started {
                record.state = State::Removed;
            }
        }
        match undo::entry(self.journal, &self.lock, &mut self.entry, how) {
            Ok(Undone::All) => {}
            Ok(Undone::Partly { error, .. }) => {
                tracing::error!(error = %error, "rollback left attachments for the next DEL");
            }
            Err(e) => tracing::error!(error = %e, "rollback left attachments for the next DEL"),
        }
    }
}
