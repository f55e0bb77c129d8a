//! Data snapshots (SPEC §6.6): `data/<point>/` holds what a snapshot
//! captured before a change (each SQLite database, the `snapshot`
//! command's file) and `manifest.json`, which names each file with the
//! sha256 of its bytes as stored. `<point>` is the point that was current
//! when it was taken: the one a rollback of that change returns to.
//!
//! A snapshot is built in a temp directory beside the others and renamed
//! into place once every file and the manifest are on disk, so a crash
//! leaves a whole snapshot or none; what it leaves of a partial one is
//! removed under the site's lock ([`DataSnapshots::remove_temps`]).
//! Capturing and restoring (SQLite, commands) are `apply`'s; this module
//! only names, seals, verifies and removes.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{StoreError, io};
use crate::atomic::{Durability, atomic_write, sync_dir};
use crate::model::values::Timestamp;

/// The name of a snapshot's manifest inside its directory.
const MANIFEST: &str = "manifest.json";

/// Temp directories of snapshots being taken start with this.
const BUILDING: &str = ".building-";

/// Replaced snapshots wait under this name until they are removed.
const REPLACED: &str = ".replaced-";

/// Where a captured file came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DataSource {
    /// A SQLite database under the root (`data.sqlite`), by its path.
    Sqlite {
        /// Relative to the root.
        path: String,
    },
    /// The file the `data.snapshot` command wrote.
    Command,
}

/// How a captured file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// As captured.
    None,
    /// zstd: smaller by enough to be worth it.
    Zstd,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    /// Its name in the snapshot's directory.
    pub name: String,
    /// What it holds.
    pub source: DataSource,
    /// `sha256:<hex>` of the bytes as stored.
    pub sha256: String,
    /// Its size as stored.
    pub bytes: u64,
    /// Its size as captured (before compression).
    pub raw_bytes: u64,
    /// How it is stored.
    pub compression: Compression,
}

/// `manifest.json` of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The point it belongs to.
    pub point: u64,
    /// When it was taken.
    pub at: Timestamp,
    /// Its files.
    pub files: Vec<DataFile>,
}

impl Manifest {
    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// A snapshot being taken: files go into [`Building::dir`], then
/// [`DataSnapshots::seal`] makes it the point's snapshot.
#[derive(Debug)]
pub struct Building {
    dir: PathBuf,
    point: u64,
}

impl Building {
    /// Where the captured files go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A site's data snapshots, `<state_dir>/<site>/data/`.
#[derive(Debug, Clone)]
pub struct DataSnapshots {
    dir: PathBuf,
}

impl DataSnapshots {
    /// The snapshots under `dir` (nothing is created yet).
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory of point `point`'s snapshot.
    pub fn path(&self, point: u64) -> PathBuf {
        self.dir.join(point.to_string())
    }

    /// Starts a snapshot of `point`, in a fresh temp directory.
    pub fn begin(&self, point: u64) -> Result<Building, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let dir = self
            .dir
            .join(format!("{BUILDING}{point}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(Building { dir, point })
    }

    /// Makes `building` point `point`'s snapshot: every file fsynced, the
    /// manifest written durably, then one rename publishes it (replacing
    /// an older snapshot of the same point, taken by a change that was
    /// cancelled before it committed).
    pub fn seal(&self, building: Building, files: Vec<DataFile>) -> Result<Manifest, StoreError> {
        let manifest = Manifest {
            point: building.point,
            at: Timestamp(jiff::Timestamp::now()),
            files,
        };
        for f in &manifest.files {
            let path = building.dir.join(&f.name);
            std::fs::File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(io(&path))?;
        }
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Corrupt {
            path: building.dir.join(MANIFEST),
            line: 0,
            message: e.to_string(),
        })?;
        let manifest_path = building.dir.join(MANIFEST);
        atomic_write(&manifest_path, &text, Durability::Durable).map_err(io(&manifest_path))?;
        let target = self.path(building.point);
        if target.exists() {
            let old = self.dir.join(format!("{REPLACED}{}", building.point));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&target, &old).map_err(io(&target))?;
        }
        std::fs::rename(&building.dir, &target).map_err(io(&target))?;
        sync_dir(&self.dir).map_err(io(&self.dir))?;
        self.remove_temps()?;
        Ok(manifest)
    }

    /// Point `point`'s snapshot, if it has one.
    pub fn manifest(&self, point: u64) -> Result<Option<Manifest>, StoreError> {
        let path = self.path(point).join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                line: e.line(),
                message: format!("not a data snapshot manifest: {e}"),
            })
    }

    /// Whether point `point` has a snapshot.
    pub fn has(&self, point: u64) -> bool {
        self.path(point).join(MANIFEST).is_file()
    }

    /// The points that have a snapshot, oldest first.
    pub fn points(&self) -> Result<Vec<u64>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok())
                && self.has(n)
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Reads point `point`'s snapshot back and checks every file against
    /// its sum: a snapshot restored from must be the one that was taken.
    pub fn verify(&self, point: u64) -> Result<Manifest, StoreError> {
        let dir = self.path(point);
        let manifest = self.manifest(point)?.ok_or_else(|| StoreError::Corrupt {
            path: dir.join(MANIFEST),
            line: 0,
            message: "the data snapshot is missing".into(),
        })?;
        for f in &manifest.files {
            let path = dir.join(&f.name);
            let sum = sha256_file(&path)?;
            if sum != f.sha256 {
                return Err(StoreError::Corrupt {
                    path,
                    line: 0,
                    message: format!(
                        "the data snapshot file is damaged (sha256 {sum}, the manifest says {})",
                        f.sha256
                    ),
                });
            }
        }
        Ok(manifest)
    }

    /// Removes point `point`'s snapshot (retention).
    pub fn remove(&self, point: u64) -> Result<(), StoreError> {
        let dir = self.path(point);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => sync_dir(&self.dir).map_err(io(&self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }

    /// Removes what a crash left of snapshots being taken or replaced.
    /// Called under the site's lock.
    pub fn remove_temps(&self) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if let Some(point) = name.strip_prefix(REPLACED) {
                // A crash between the two renames of `seal` left the old
                // snapshot aside and no new one: put the old one back, so
                // the point keeps a snapshot.
                let target = self.dir.join(point);
                if target.exists() {
                    std::fs::remove_dir_all(&path).map_err(io(&path))?;
                } else {
                    std::fs::rename(&path, &target).map_err(io(&target))?;
                    sync_dir(&self.dir).map_err(io(&self.dir))?;
                }
            } else if name.starts_with(BUILDING) {
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

/// `sha256:<hex>` of a file's bytes, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String, StoreError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> DataFile {
        std::fs::write(dir.join(name), bytes).unwrap();
        DataFile {
            name: name.into(),
            source: DataSource::Command,
            sha256: sha256_file(&dir.join(name)).unwrap(),
            bytes: bytes.len() as u64,
            raw_bytes: bytes.len() as u64,
            compression: Compression::None,
        }
    }

    #[test]
    fn a_sealed_snapshot_is_found_verified_replaced_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataSnapshots::new(tmp.path().join("data"));
        assert!(data.points().unwrap().is_empty());
        let b = data.begin(3).unwrap();
        let f = file(b.dir(), "dump", b"one");
        data.seal(b, vec![f]).unwrap();
        assert_eq!(data.points().unwrap(), vec![3]);
        assert_eq!(data.verify(3).unwrap().bytes(), 3);

        // A second snapshot of the same point replaces the first whole.
        let b = data.begin(3).unwrap();
        let f = file(b.dir(), "dump", b"second");
        data.seal(b, vec![f]).unwrap();
        assert_eq!(data.verify(3).unwrap().bytes(), 6);
        let names: Vec<String> = std::fs::read_dir(tmp.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["3".to_owned()], "no temp directory is left");

        // A damaged file is found.
        std::fs::write(data.path(3).join("dump"), b"secoNd").unwrap();
        let err = data.verify(3).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");

        data.remove(3).unwrap();
        assert!(data.points().unwrap().is_empty());
    }

    #[test]
    fn what_a_crash_left_of_a_snapshot_is_removed_and_never_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataSnapshots::new(tmp.path().join("data"));
        let b = data.begin(1).unwrap();
        file(b.dir(), "dump", b"half");
        // Not sealed: a crash here leaves the temp directory only.
        assert!(data.points().unwrap().is_empty());
        assert!(!data.has(1));
        data.remove_temps().unwrap();
        assert_eq!(
            std::fs::read_dir(tmp.path().join("data")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_snapshot_set_aside_by_a_crash_during_its_replacement_is_put_back() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataSnapshots::new(tmp.path().join("data"));
        let b = data.begin(2).unwrap();
        let f = file(b.dir(), "dump", b"old");
        data.seal(b, vec![f]).unwrap();
        // As `seal` of a second snapshot leaves it after its first rename.
        let aside = tmp.path().join("data").join(format!("{REPLACED}2"));
        std::fs::rename(data.path(2), &aside).unwrap();
        assert!(!data.has(2));
        data.remove_temps().unwrap();
        assert_eq!(
            data.verify(2).unwrap().bytes(),
            3,
            "the old snapshot is back"
        );
        assert!(!aside.exists());
    }
}
