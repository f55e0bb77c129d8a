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
    /// The verdict of the health check after a change (its `point`):
    /// `result: ok` passed, `failed` failed; `error` says why.
    Health,
    /// A data snapshot taken before a change (SPEC §6.6); `point` is the
    /// point it belongs to.
    Snapshot,
    /// One of a release's `migrate` commands; `id` is
    /// `<version>/migrate/<n>`, `error` the tail of its output on failure.
    Migrate,
    /// Data restored from a snapshot.
    Restore,
    /// A failure marker cleared by an operator (`sitekeeper resolve`).
    Resolve,
    /// A quarantined release or fix lifted by an operator from the
    /// dashboard (`id`: `release V` or `fix ID`), so automatic changes may
    /// try it again.
    Lift,
}

/// Health verdicts by point, from the ledger's `health` records.
pub type Verdicts = std::collections::BTreeMap<u64, super::points::Health>;

/// The newest verdict of each point that a `health` record names.
pub fn verdicts(records: &[Record]) -> Verdicts {
    records
        .iter()
        .filter(|r| r.kind == LedgerKind::Health)
        .filter_map(|r| {
            let verdict = match r.result {
                LedgerResult::Ok => super::points::Health::Passed,
                LedgerResult::Failed | LedgerResult::RolledBack => super::points::Health::Failed,
            };
            r.point.map(|p| (p, verdict))
        })
        .collect()
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
    /// `cli`, `watch`, `webhook` or `ui` (the daemon's dashboard).
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

    /// Every complete record, oldest first. A torn tail (what a crash left
    /// of the last appends: a line without its newline, or bytes that are
    /// not a record, zeros or noise) is skipped; a line that does not parse
    /// followed by one that does is corruption, and an error.
    pub fn read(&self) -> Result<Vec<Record>, StoreError> {
        self.scan().map(|(records, _)| records)
    }

    /// The records and the length of the file that holds them: where a
    /// torn tail begins, or the whole file.
    fn scan(&self) -> Result<(Vec<Record>, u64), StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => return Err(io(&self.path)(e)),
        };
        let mut records = Vec::new();
        let mut good = 0;
        // The first line that is not a record, and why: the tail from it
        // on is torn, unless a record follows.
        let mut torn: Option<(usize, String)> = None;
        let mut start = 0;
        for (n, line) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            let end = start + line.len();
            let parsed = match line.strip_suffix(b"\n") {
                None => Err("the line has no end".to_owned()),
                Some(l) if l.trim_ascii().is_empty() => {
                    start = end;
                    if torn.is_none() {
                        good = end;
                    }
                    continue;
                }
                Some(l) => serde_json::from_slice::<Record>(l).map_err(|e| e.to_string()),
            };
            match (parsed, &torn) {
                (Ok(record), None) => {
                    records.push(record);
                    good = end;
                }
                (Ok(_), Some((line, why))) => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        line: *line,
                        message: format!("not a ledger record: {why}"),
                    });
                }
                (Err(why), None) => torn = Some((n + 1, why)),
                (Err(_), Some(_)) => {}
            }
            start = end;
        }
        Ok((records, good as u64))
    }

    /// Appends `record` (its `seq` is set to follow the last) and fsyncs.
    /// The caller holds the site lock.
    pub fn append(&self, record: Record) -> Result<Record, StoreError> {
        self.append_synced(record, true)
    }

    /// [`Ledger::append`] without the fsyncs, for a group commit
    /// (`apply/group.rs`) that makes many sites' ledgers durable at once
    /// before anything depends on them. A tail a crash tears off before
    /// then is cut off by the next append, as any torn tail is.
    pub fn append_unsynced(&self, record: Record) -> Result<Record, StoreError> {
        self.append_synced(record, false)
    }

    fn append_synced(&self, mut record: Record, sync: bool) -> Result<Record, StoreError> {
        let (existing, good) = self.scan()?;
        record.seq = existing.last().map_or(1, |r| r.seq + 1);
        let mut line = serde_json::to_vec(&record).map_err(|e| io(&self.path)(e.into()))?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        // A tail torn by a crash would glue onto this record: cut it off
        // first (it was never a record).
        let len = file.metadata().map_err(io(&self.path))?.len();
        if good < len {
            file.set_len(good).map_err(io(&self.path))?;
        }
        let noted = crate::durability::active().then(|| crate::durability::real(&self.path));
        if let Some(p) = &noted
            && len == 0
        {
            crate::durability::created(p);
        }
        file.write_all(&line).map_err(io(&self.path))?;
        if let Some(p) = &noted {
            crate::durability::wrote(p, good);
        }
        if !sync {
            return Ok(record);
        }
        file.sync_all().map_err(io(&self.path))?;
        if let Some(p) = &noted {
            crate::durability::synced_file(p);
        }
        if len == 0
            && let Some(dir) = self.path.parent()
        {
            // A new file's directory entry must reach the disk too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
            if crate::durability::active() {
                crate::durability::synced_dir(&crate::durability::real(dir));
            }
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

    #[test]
    fn a_tail_of_zeros_or_noise_is_torn_but_a_bad_line_before_a_record_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("ledger.jsonl"));
        ledger.append(record()).unwrap();
        let good = std::fs::read(ledger.path()).unwrap();
        // What a crash can leave of unsynced appends: zeros, or noise with
        // newlines and bytes that are not UTF-8 in it.
        for tail in [&[0u8; 300][..], b"\xff\xfe{\n\x00garbage\n\x80"] {
            let mut bytes = good.clone();
            bytes.extend_from_slice(tail);
            std::fs::write(ledger.path(), &bytes).unwrap();
            assert_eq!(ledger.read().unwrap().len(), 1, "{tail:?}");
            assert_eq!(ledger.append(record()).unwrap().seq, 2);
            assert_eq!(ledger.read().unwrap().len(), 2, "the tail was cut off");
            std::fs::write(ledger.path(), &good).unwrap();
        }
        // A damaged line with a record after it was not torn by a crash.
        let mut bytes = b"{not json}\n".to_vec();
        bytes.extend_from_slice(&good);
        std::fs::write(ledger.path(), &bytes).unwrap();
        let err = ledger.read().unwrap_err().to_string();
        assert!(err.contains(":1: not a ledger record"), "{err}");
    }
}
