//! The failure marker, `failure.json` (SPEC §6.6): written when a failed
//! change's data could not be restored, or recovery cannot tell whether
//! the data is consistent. While it exists nothing changes the site;
//! `sitekeeper resolve` removes it once an operator has repaired the site.
//!
//! Written durably: a marker lost to a crash would let automatic changes
//! run on a site whose data is in an unknown state.

use serde::{Deserialize, Serialize};

use super::{By, SiteState, StoreError, read_record, remove_record, write_record};
use crate::model::values::Timestamp;

/// What failed, and what an operator needs to repair it by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureMarker {
    /// What failed, in words ("restoring the data of point 3").
    pub what: String,
    /// When.
    pub at: Timestamp,
    /// The error.
    pub error: String,
    /// The data snapshot an operator can restore by hand, if there is one.
    pub snapshot: Option<String>,
    /// The rollback point that snapshot belongs to.
    pub point: Option<u64>,
    /// Who was running when it failed.
    pub by: By,
}

impl FailureMarker {
    /// The site's marker, if it has one; a file that cannot be read is an
    /// error, never "no marker".
    pub fn read(state: &SiteState) -> Result<Option<Self>, StoreError> {
        read_record(&state.failure_path())
    }

    /// Writes the marker durably.
    pub fn write(&self, state: &SiteState) -> Result<(), StoreError> {
        state.create()?;
        write_record(&state.failure_path(), self)
    }

    /// Removes the marker durably; `false` when there was none.
    pub fn remove(state: &SiteState) -> Result<bool, StoreError> {
        remove_record(&state.failure_path())
    }

    /// One line for `plan`, `status` and errors: what failed and how to
    /// clear it.
    pub fn summary(&self, site: &str) -> String {
        let snapshot = self
            .snapshot
            .as_deref()
            .map(|s| format!("; the data snapshot to restore by hand is {s}"))
            .unwrap_or_default();
        format!(
            "{} failed at {}: {}{snapshot} (hint: repair the site, then run `sitekeeper resolve {site} --by NAME`)",
            self.what, self.at, self.error
        )
    }
}
