//! `journal/change.json`: a change that runs migrations, from before its
//! data snapshot until its migrations and health check have passed (SPEC
//! §6.6). Such a change is complete only then; recovery of one interrupted
//! earlier rolls it back as a failed change (files back, data restored)
//! instead of finishing it, and this record says how far it got.
//!
//! The files transaction's own journal (`journal/txn.json`) ends at its
//! commit step, which comes before the migrations; this record outlives it.

use serde::{Deserialize, Serialize};

use super::{SiteState, StoreError, read_record, remove_record, write_record};

/// How far a change that runs migrations got, in SPEC §6.6's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePhase {
    /// Taking the data snapshot: the data is untouched.
    Snapshot,
    /// The files transaction: the data is untouched.
    Files,
    /// Migrations have started: the data may have changed.
    Migrating,
    /// Hooks and the health check after the migrations.
    Judging,
    /// The change failed and its data is being restored.
    Restoring,
}

impl ChangePhase {
    /// Whether the data may differ from the snapshot: from the first
    /// migration on.
    pub fn data_touched(self) -> bool {
        self >= ChangePhase::Migrating
    }
}

/// A change that is not complete until its migrations and health passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncompleteChange {
    /// The files transaction's id (its point's `txn`).
    pub txn: String,
    /// The point a rollback of the change returns to; its data snapshot
    /// is `data/<base_point>/`.
    pub base_point: u64,
    /// Whether the snapshot of `base_point` was taken for this change.
    pub snapshot: bool,
    /// The version before and after.
    pub version_from: String,
    pub version_to: String,
    /// How far it got.
    pub phase: ChangePhase,
}

impl IncompleteChange {
    /// The record, if a change is open.
    pub fn read(state: &SiteState) -> Result<Option<Self>, StoreError> {
        read_record(&state.incomplete_path())
    }

    /// Writes the record (durably: recovery acts on it after a crash).
    pub fn write(&self, state: &SiteState) -> Result<(), StoreError> {
        write_record(&state.incomplete_path(), self)
    }

    /// Moves to `phase`, durably, before the phase starts.
    pub fn enter(&mut self, phase: ChangePhase, state: &SiteState) -> Result<(), StoreError> {
        self.phase = phase;
        self.write(state)
    }

    /// The change is complete (or fully undone): the record goes.
    pub fn remove(state: &SiteState) -> Result<bool, StoreError> {
        remove_record(&state.incomplete_path())
    }
}
