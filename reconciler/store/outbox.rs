//! `<state_dir>/outbox/` (SPEC §5, §9): notifications written durably
//! before they are sent and removed once their target accepted them, so
//! delivery is at least once across crashes and restarts.
//!
//! One file per (event, target), named by the event's stable id and a hash
//! of the target's name: raising the same event again while it waits
//! replaces it rather than queueing a second copy. Events carry names,
//! versions and reasons, never the content of a site's files. Sending is
//! `watch`'s business; this module only keeps the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{Durability, StateDir, StoreError, atomic_write, io, remove_durably};

/// Something the operators hear about (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Stable: a hash of (type, site, item), so the same happening raised
    /// twice (a retry, a restart) is recognisably the same event.
    pub id: String,
    /// `rolled_back`, `recovered`, … (`model::words::EventType`), or `test`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was raised (RFC 3339).
    pub at: String,
    /// The site.
    pub site: String,
    /// The site's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The version the site runs, when known.
    pub version: Option<String>,
    /// What it is about: a release, a fix, a check (may be empty).
    #[serde(default)]
    pub item: String,
    /// Why, in words.
    #[serde(default)]
    pub reason: String,
    /// The rollback point it concerns, when there is one.
    pub point: Option<u64>,
}

impl Event {
    /// An event with its stable id: no time or duration goes into it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: &str,
        at: String,
        site: &str,
        labels: BTreeMap<String, String>,
        version: Option<String>,
        item: &str,
        reason: String,
        point: Option<u64>,
    ) -> Self {
        Self {
            id: event_id(kind, site, item),
            kind: kind.to_owned(),
            at,
            site: site.to_owned(),
            labels,
            version,
            item: item.to_owned(),
            reason,
            point,
        }
    }
}

/// The stable id of an event: `sha256` of its type, site and item, each
/// ended by a NUL so that no two triples join to the same text.
pub fn event_id(kind: &str, site: &str, item: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind, site, item] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// An event waiting for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// The `notify:` target's name.
    pub target: String,
    /// The event.
    pub event: Event,
}

/// The relay's log in the outbox directory ([`Outbox::log`]).
pub const LOG: &str = "relay.log";

/// The size past which the relay's log starts again.
const LOG_LIMIT: u64 = 1 << 20;

/// The outbox directory of a state dir.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// The outbox of `state_dir` (nothing is created until an event is put).
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: StateDir::new(state_dir).outbox(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `queued` is kept.
    pub fn path_of(&self, queued: &Queued) -> PathBuf {
        let target = hex::encode(&Sha256::digest(queued.target.as_bytes())[..6]);
        self.dir.join(format!("{}-{target}.json", queued.event.id))
    }

    /// Writes `queued` durably: once this returns, a crash does not lose it.
    pub fn put(&self, queued: &Queued) -> Result<PathBuf, StoreError> {
        let path = self.path_of(queued);
        let bytes = serde_json::to_vec_pretty(queued).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        atomic_write(&path, &bytes, Durability::Durable).map_err(io(&path))?;
        Ok(path)
    }

    /// Every event waiting, oldest first (by when it was raised). A file
    /// that cannot be read or parsed is skipped with its error beside, and
    /// left in place for an operator: it is never sent half-read.
    pub fn list(&self) -> (Vec<(PathBuf, Queued)>, Vec<StoreError>) {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (found, errors),
            Err(e) => {
                errors.push(io(&self.dir)(e));
                return (found, errors);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                // The atomic writer's temp files, left by a crash.
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Queued>(&bytes) {
                    Ok(q) => found.push((path, q)),
                    Err(e) => errors.push(StoreError::Corrupt {
                        path,
                        line: e.line(),
                        message: e.to_string(),
                    }),
                },
                Err(e) => errors.push(io(&path)(e)),
            }
        }
        found.sort_by(|a, b| (&a.1.event.at, &a.0).cmp(&(&b.1.event.at, &b.0)));
        (found, errors)
    }

    /// Removes a delivered event (durably: a crash after the target
    /// accepted it must not send it again).
    pub fn remove(&self, path: &Path) -> Result<(), StoreError> {
        remove_durably(path).map_err(io(path))
    }

    /// Appends `line`, with the time, to the log of what the background
    /// relay sent (`relay.log` beside the entries; `list` reads only
    /// `*.json`). The relay has no terminal, so this is where an operator
    /// reads what became of a command's notifications. Past `LOG_LIMIT`
    /// the log starts again, the previous one kept as `relay.log.1`.
    /// Best effort: a log that cannot be written is no reason to hold a
    /// notification back.
    pub fn log(&self, line: &str) {
        use std::io::Write as _;
        let path = self.dir.join(LOG);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_LIMIT) {
            let _ = std::fs::rename(&path, self.dir.join(format!("{LOG}.1")));
        }
        let _ = std::fs::create_dir_all(&self.dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            // One write per line, so lines from the relay's threads never interleave.
            let _ = f.write_all(format!("{} {line}\n", jiff::Timestamp::now()).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, site: &str, at: &str) -> Event {
        Event::new(
            kind,
            at.into(),
            site,
            BTreeMap::new(),
            Some("1.0.0".into()),
            "release 1.1.0",
            "health failed".into(),
            Some(3),
        )
    }

    #[test]
    fn ids_are_stable_and_ignore_time() {
        let a = event("rolled_back", "s", "2026-01-01T00:00:00Z");
        let b = event("rolled_back", "s", "2026-02-01T00:00:00Z");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, event("failed", "s", "x").id);
        assert_ne!(a.id, event("rolled_back", "t", "x").id);
        assert_ne!(event_id("a", "bc", ""), event_id("ab", "c", ""));
    }

    #[test]
    fn events_wait_per_target_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path());
        assert!(outbox.list().0.is_empty());
        let first = Queued {
            target: "ops".into(),
            event: event("rolled_back", "s", "2026-01-01T00:00:01Z"),
        };
        let other = Queued {
            target: "mail".into(),
            ..first.clone()
        };
        let earlier = Queued {
            target: "ops".into(),
            event: event("failed", "t", "2026-01-01T00:00:00Z"),
        };
        outbox.put(&first).unwrap();
        outbox.put(&first).unwrap();
        let p = outbox.put(&other).unwrap();
        outbox.put(&earlier).unwrap();
        let (list, errors) = outbox.list();
        assert!(errors.is_empty());
        assert_eq!(
            list.len(),
            3,
            "the same event for the same target is kept once"
        );
        assert_eq!(list[0].1, earlier);
        outbox.remove(&p).unwrap();
        assert_eq!(outbox.list().0.len(), 2);
        std::fs::write(outbox.dir().join("bad.json"), "{").unwrap();
        let (list, errors) = outbox.list();
        assert_eq!((list.len(), errors.len()), (2, 1));
    }
}
