//! `status.json` (SPEC §5): where a change of a site is (its phase and
//! percent), written by `apply` and `rollback` as they go and read back by
//! the daemon's `GET /status`. Both sides use [`Progress`], so the file has
//! one shape.
//!
//! "Progress" is this file and nothing else; a site's status (the `status`
//! command) is `observe::status`. It is only a report: it is written at
//! `Durability::Cache`, failing to write it never fails a change, and a
//! missing or unreadable file reads as no change in progress.

use serde::{Deserialize, Serialize};

use super::{Durability, SiteState, atomic_write};

/// Where a site's change is. The fields are in alphabetical order, the
/// order of the keys of the file as it was written before it had a type
/// (an untyped JSON object), so its bytes did not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The version before the change, if the plan knows it.
    pub from_version: Option<String>,
    /// Words for people (why it waits, why it failed).
    pub message: Option<String>,
    /// How far, 0 to 100.
    pub percent: u8,
    /// `waiting`, `planning`, `staging`, `replacing`, `checking`, `done`,
    /// `unchanged`, `failed`, `rolled_back`.
    pub phase: String,
    /// The site.
    pub site: String,
    /// The version after the change, if the plan knows it.
    pub to_version: Option<String>,
    /// When this was written.
    pub updated: jiff::Timestamp,
}

impl Progress {
    /// The site's progress, if its file is there and reads.
    pub fn read(state: &SiteState) -> Option<Self> {
        let bytes = std::fs::read(state.progress_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes it (temp file and rename, no fsync: a report).
    pub fn write(&self, state: &SiteState) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        atomic_write(&state.progress_path(), text.as_bytes(), Durability::Cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_reads_back_and_keeps_the_keys_it_always_had() {
        let dir = tempfile::tempdir().unwrap();
        let state = SiteState::new(dir.path(), "shop");
        assert_eq!(Progress::read(&state), None, "no file, no progress");
        let progress = Progress {
            from_version: Some("1.0.0".into()),
            message: None,
            percent: 20,
            phase: "staging".into(),
            site: "shop".into(),
            to_version: Some("1.0.1".into()),
            updated: "2026-11-20T10:00:00Z".parse().unwrap(),
        };
        progress.write(&state).unwrap();
        assert_eq!(Progress::read(&state).as_ref(), Some(&progress));
        // What the untyped writer made of the same values.
        let untyped = serde_json::json!({
            "site": "shop",
            "phase": "staging",
            "percent": 20,
            "from_version": "1.0.0",
            "to_version": "1.0.1",
            "updated": "2026-11-20T10:00:00Z",
            "message": null,
        });
        assert_eq!(
            std::fs::read_to_string(state.progress_path()).unwrap(),
            serde_json::to_string_pretty(&untyped).unwrap()
        );
        std::fs::write(state.progress_path(), b"{\"phase\": ").unwrap();
        assert_eq!(Progress::read(&state), None, "a torn file is no progress");
    }
}
