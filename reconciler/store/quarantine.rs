//! `quarantine.json` (SPEC §6.2): the releases and fixes that failed on a
//! site and that automatic changes skip, until a newer release appears,
//! the catalog changes the fix, or an operator lifts them with
//! `apply --release V` / `apply --fix ID`.
//!
//! Written durably through [`super::atomic_write`]; a file that cannot be read
//! is an error, never "nothing quarantined", so a damaged file can never
//! let a failed change through again.

use serde::{Deserialize, Serialize};

use super::{Durability, SiteState, StoreError, atomic_write, io};
use crate::model::values::Timestamp;

/// A release that failed on the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantinedRelease {
    /// The version.
    pub version: String,
    /// When it was quarantined (absent in files written before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A fix that failed on the site, as the catalog had it then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantinedFix {
    /// The fix id.
    pub id: String,
    /// Its checksum when it failed: a changed fix is tried again.
    pub checksum: String,
    /// When.
    pub at: Timestamp,
    /// Why, in words.
    pub reason: String,
}

/// Everything quarantined on one site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    /// Releases, oldest first.
    #[serde(default)]
    pub releases: Vec<QuarantinedRelease>,
    /// Fixes, oldest first.
    #[serde(default)]
    pub fixes: Vec<QuarantinedFix>,
}

/// What the file may hold: today's object, or the list of versions that
/// earlier releases of sitekeeper wrote.
#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Current(Quarantine),
    Versions(Vec<String>),
}

impl Quarantine {
    /// Reads the site's quarantine; an absent file is an empty one.
    pub fn read(state: &SiteState) -> Result<Self, StoreError> {
        let path = state.quarantine_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io(&path)(e)),
        };
        match serde_json::from_slice::<OnDisk>(&bytes) {
            Ok(OnDisk::Current(q)) => Ok(q),
            Ok(OnDisk::Versions(list)) => Ok(Self {
                releases: list
                    .into_iter()
                    .map(|version| QuarantinedRelease {
                        version,
                        at: None,
                        reason: None,
                    })
                    .collect(),
                fixes: Vec::new(),
            }),
            Err(e) => Err(StoreError::Corrupt {
                path,
                line: e.line(),
                message: format!(
                    "the quarantine cannot be read ({e}); nothing is applied until it is repaired (hint: restore it from a backup, or remove it to lift every quarantine of the site)"
                ),
            }),
        }
    }

    /// Writes it durably (temp file, fsync, rename, directory fsync).
    pub fn write(&self, state: &SiteState) -> Result<(), StoreError> {
        state.create()?;
        let path = state.quarantine_path();
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        atomic_write(&path, &bytes, Durability::Durable).map_err(io(&path))
    }

    /// Whether `version` is quarantined.
    pub fn has_release(&self, version: &str) -> bool {
        self.releases.iter().any(|r| r.version == version)
    }

    /// Quarantines `version`; false when it already was.
    pub fn add_release(&mut self, version: &str, at: Timestamp, reason: &str) -> bool {
        if self.has_release(version) {
            return false;
        }
        self.releases.push(QuarantinedRelease {
            version: version.to_owned(),
            at: Some(at),
            reason: Some(reason.to_owned()),
        });
        true
    }

    /// Quarantines fix `id` as it is now (`checksum`); a quarantine of an
    /// earlier version of the fix is replaced.
    pub fn add_fix(&mut self, id: &str, checksum: &str, at: Timestamp, reason: &str) -> bool {
        if self
            .fixes
            .iter()
            .any(|f| f.id == id && f.checksum == checksum)
        {
            return false;
        }
        self.fixes.retain(|f| f.id != id);
        self.fixes.push(QuarantinedFix {
            id: id.to_owned(),
            checksum: checksum.to_owned(),
            at,
            reason: reason.to_owned(),
        });
        true
    }

    /// Lifts the quarantine of `version`; false when there was none.
    pub fn lift_release(&mut self, version: &str) -> bool {
        let before = self.releases.len();
        self.releases.retain(|r| r.version != version);
        before != self.releases.len()
    }

    /// Lifts the quarantine of fix `id`; false when there was none.
    pub fn lift_fix(&mut self, id: &str) -> bool {
        let before = self.fixes.len();
        self.fixes.retain(|f| f.id != id);
        before != self.fixes.len()
    }

    /// Lifts one item as [`Quarantine::items`] names it (`release V`,
    /// `fix ID`); false when it is not quarantined (or not such a name).
    pub fn lift(&mut self, item: &str) -> bool {
        match item.split_once(' ') {
            Some(("release", version)) => self.lift_release(version),
            Some(("fix", id)) => self.lift_fix(id),
            _ => false,
        }
    }

    /// The items, as `status` names them: `release V`, `fix ID`.
    pub fn items(&self) -> Vec<String> {
        self.releases
            .iter()
            .map(|r| format!("release {}", r.version))
            .chain(self.fixes.iter().map(|f| format!("fix {}", f.id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, SiteState) {
        let dir = tempfile::tempdir().unwrap();
        let state = SiteState::new(dir.path(), "s");
        (dir, state)
    }

    #[test]
    fn round_trips_and_reads_the_old_list() {
        let (_d, state) = state();
        assert_eq!(Quarantine::read(&state).unwrap(), Quarantine::default());
        let mut q = Quarantine::default();
        let at = Timestamp("2026-01-01T00:00:00Z".parse().unwrap());
        assert!(q.add_release("1.0.1", at, "health check failed"));
        assert!(!q.add_release("1.0.1", at, "again"));
        assert!(q.add_fix("0001-a", "sha256:aa", at, "hook failed"));
        assert!(q.add_fix("0001-a", "sha256:bb", at, "changed fix failed too"));
        assert_eq!(q.fixes.len(), 1, "one entry per fix, the newest checksum");
        q.write(&state).unwrap();
        assert_eq!(Quarantine::read(&state).unwrap(), q);
        assert_eq!(q.items(), ["release 1.0.1", "fix 0001-a"]);
        let mut lifted = q.clone();
        assert!(!lifted.lift("release 9.9.9") && !lifted.lift("nonsense"));
        assert!(lifted.lift("fix 0001-a") && lifted.lift("release 1.0.1"));
        assert_eq!(lifted, Quarantine::default());

        std::fs::write(state.quarantine_path(), r#"["1.0.2"]"#).unwrap();
        let old = Quarantine::read(&state).unwrap();
        assert!(old.has_release("1.0.2"));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_quarantine() {
        let (_d, state) = state();
        state.create().unwrap();
        for damaged in ["", "{", "[1, 2]", r#"{"releases": 3}"#, "\u{0}\u{1}"] {
            std::fs::write(state.quarantine_path(), damaged).unwrap();
            let err = Quarantine::read(&state).unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt { .. }),
                "{damaged:?}: {err}"
            );
        }
    }
}
