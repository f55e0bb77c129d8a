//! The applied-patch ledger (`ledger.jsonl`, SPEC §5): one JSON record per
//! line, appended and fsynced, never rewritten. A line torn by a crash
//! (the last one, without its newline) is ignored when reading.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StoreError, io};
use crate::model::values::Timestamp;

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// A site taken over.
    Adopt,
    /// A hot fix applied.
    Fix,
    /// A release upgrade.
    Upgrade,
    /// A return to an earlier point.
    Rollback,
    /// An interrupted change finished or undone.
    Recovery,
    /// Local changes reverted.
    DriftRevert,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerResult {
    /// Done.
    Ok,
    /// Failed; the site was returned to its state before.
    Failed,
    /// Done, then undone because the health check failed.
    RolledBack,
}

/// Who made the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct By {
    /// Host name.
    pub host: String,
    /// User name.
    pub user: String,
    /// `cli`, `watch` or `webhook`.
    pub via: String,
}

impl By {
    /// The current host and user, via `via`.
    pub fn here(via: &str) -> Self {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()));
        Self {
            host,
            user,
            via: via.to_owned(),
        }
    }
}

/// One ledger record (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1, 2, 3… in order of writing.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: LedgerKind,
    /// The fix id, or the release version for upgrades.
    pub id: Option<String>,
    /// The fix's checksum (SHA-256 of its file) when it was applied.
    pub checksum: Option<String>,
    /// Version before.
    pub version_before: Option<String>,
    /// Version after.
    pub version_after: Option<String>,
    /// Paths changed.
    pub files: Vec<String>,
    /// The rollback point the change produced.
    pub point: Option<u64>,
    /// The plan it carried out.
    pub plan_digest: Option<String>,
    /// Who.
    pub by: By,
    /// How it ended.
    pub result: LedgerResult,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// The ledger file of one site.
#[derive(Debug, Clone)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every complete record, oldest first. A torn last line is skipped;
    /// any other line that does not parse is an error.
    pub fn read(&self) -> Result<Vec<Record>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        complete
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    line: n + 1,
                    message: format!("not a ledger record: {e}"),
                })
            })
            .collect()
    }

    /// Appends `record` (its `seq` is set to follow the last) and fsyncs.
    /// The caller holds the site lock.
    pub fn append(&self, mut record: Record) -> Result<Record, StoreError> {
        let existing = self.read()?;
        record.seq = existing.last().map_or(1, |r| r.seq + 1);
        let mut line = serde_json::to_vec(&record).map_err(|e| io(&self.path)(e.into()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        // A line torn by a crash would glue onto this one: cut it off first
        // (it was never a record: records end with their newline).
        let bytes = std::fs::read(&self.path).map_err(io(&self.path))?;
        let len = bytes.len() as u64;
        let good = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i as u64 + 1);
        if good < len {
            file.set_len(good).map_err(io(&self.path))?;
        }
        file.write_all(&line).map_err(io(&self.path))?;
        file.sync_all().map_err(io(&self.path))?;
        if len == 0
            && let Some(dir) = self.path.parent()
        {
            // A new file's directory entry must reach the disk too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            seq: 0,
            at: "2026-11-20T10:00:00Z".parse().unwrap(),
            kind: LedgerKind::Adopt,
            id: None,
            checksum: None,
            version_before: None,
            version_after: Some("4.2.0".into()),
            files: vec![],
            point: Some(1),
            plan_digest: None,
            by: By {
                host: "h".into(),
                user: "u".into(),
                via: "cli".into(),
            },
            result: LedgerResult::Ok,
            error: None,
        }
    }

    #[test]
    fn appends_number_records_and_survive_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("ledger.jsonl"));
        assert_eq!(ledger.append(record()).unwrap().seq, 1);
        assert_eq!(ledger.append(record()).unwrap().seq, 2);
        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(ledger.path()).unwrap();
        f.write_all(br#"{"seq":3,"at":"2026"#).unwrap();
        assert_eq!(
            ledger.read().unwrap().len(),
            2,
            "the torn line is not a record"
        );
        assert_eq!(ledger.append(record()).unwrap().seq, 3);
        let all = ledger.read().unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        let text = std::fs::read_to_string(ledger.path()).unwrap();
        assert!(
            !text.contains(r#""at":"2026{"#),
            "the torn fragment was cut off: {text}"
        );
    }
}
