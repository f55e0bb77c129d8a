//! The group commit's side of `points.git` (`apply/group.rs`): a point's
//! pack and ref written under temporary names without fsync, named once
//! the group's barrier made their bytes durable, and what a crash left
//! of them removed. A name never reaches the disk before its bytes: an
//! empty pack index or ref would stop every later command on the site.

use std::path::{Path, PathBuf};

use super::{Points, Prepared, StoreError, pack};

/// The prefix of a ref [`Points::stage_ref`] wrote and
/// [`Points::install_ref`] has not renamed yet.
const UNNAMED_REF: &str = "tmp_ref_sk_";

impl Points {
    /// For a group commit (`apply/group.rs`): writes what is queued as a
    /// pack under temporary names, without fsync ([`pack::write_unnamed`]).
    /// Its objects are not readable from the repository until
    /// [`Points::install`]; the caller reads none of them in between.
    pub fn flush_unnamed(&self, tag: &str) -> Result<Option<pack::Unnamed>, StoreError> {
        let objects = std::mem::take(&mut *self.pending.borrow_mut()).objects;
        if objects.is_empty() {
            return Ok(None);
        }
        pack::write_unnamed(&self.repo, &objects, tag)
            .map(Some)
            .map_err(|source| StoreError::Io {
                path: self.path.join("objects/pack"),
                source,
            })
    }

    /// Names a pack [`Points::flush_unnamed`] wrote, once its data is
    /// durable; the caller makes `objects/pack` durable after.
    pub fn install(&self, unnamed: pack::Unnamed) -> Result<(), StoreError> {
        pack::install(&self.repo, unnamed).map_err(self.git())
    }

    /// For a group commit: writes `prepared`'s ref under a temporary name
    /// beside the repository, without fsync. [`Points::install_ref`] is
    /// then the commit step, a rename, once the data is durable: a ref
    /// named before its content is durable could be found empty after a
    /// crash, and an unreadable ref would stop every later command.
    pub fn stage_ref(&self, prepared: &Prepared, tag: &str) -> Result<PathBuf, StoreError> {
        let path = self.path.join(format!("{UNNAMED_REF}{tag}"));
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        if crate::durability::active() {
            crate::durability::created(&crate::durability::real(&path));
        }
        std::io::Write::write_all(&mut f, format!("{}\n", prepared.commit).as_bytes())
            .map_err(io)?;
        if crate::durability::active() {
            crate::durability::wrote(&crate::durability::real(&path), 0);
        }
        Ok(path)
    }

    /// The directory a point's ref is renamed into (to make it durable).
    pub fn refs_dir(&self) -> PathBuf {
        self.path.join("refs/points")
    }

    /// The commit step of a group commit: renames the ref
    /// [`Points::stage_ref`] wrote into `refs/points/<n>`. Everything the
    /// point names was installed before. Returns the point's number.
    pub fn install_ref(&self, prepared: Prepared, staged: &Path) -> Result<u64, StoreError> {
        let Prepared { point, .. } = prepared;
        if self.latest()? >= Some(point) {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                line: 0,
                message: format!("point {point} was written while this change was prepared"),
            });
        }
        let dir = self.refs_dir();
        let to = dir.join(point.to_string());
        let io = |source| StoreError::Io {
            path: to.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let op = || std::fs::rename(staged, &to);
        if crate::durability::active() {
            let from = crate::durability::real(staged);
            crate::durability::rename(&from, &crate::durability::real(&to), op).map_err(io)?;
        } else {
            op().map_err(io)?;
        }
        Ok(point)
    }

    /// Removes what a crash left of a group commit's temporary pack and
    /// ref files: nothing names them until they are installed, and a ref
    /// left unnamed is a change that never committed.
    pub fn remove_unnamed(path: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        pack::remove_unnamed(path).map_err(io)?;
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            if entry.file_name().to_string_lossy().starts_with(UNNAMED_REF) {
                std::fs::remove_file(entry.path()).map_err(io)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::meta;
    use crate::store::{Points, Snapshot, SnapshotEntry};

    /// A group commit's pack and ref, written unsynced under temporary
    /// names and then installed, are what libgit2 and git read: the
    /// objects, the point, and git's strictest check. Left uninstalled,
    /// they are invisible and removed.
    #[test]
    fn an_unnamed_pack_and_ref_become_a_point_once_installed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("points.git");
        let points = Points::open_or_init(&repo).unwrap();
        let mut snap = Snapshot::new();
        let mut blobs = Vec::new();
        for i in 0..300 {
            let blob = points
                .write_blob(format!("file {i}\n").repeat(i).as_bytes())
                .unwrap();
            blobs.push(blob);
            snap.insert(
                format!("d{}/f{i}", i % 7),
                SnapshotEntry::File { mode: 0o644, blob },
            );
        }
        let first = points.commit(&snap, meta()).unwrap();
        snap.insert(
            "new.php".into(),
            SnapshotEntry::File {
                mode: 0o600,
                blob: points.write_blob(b"<?php // new\n").unwrap(),
            },
        );
        let prepared = points.prepare(&snap, meta()).unwrap();
        let staged = points.stage_ref(&prepared, "t1").unwrap();
        let unnamed = points.flush_unnamed("t1").unwrap().unwrap();
        assert_eq!(points.list().unwrap(), vec![first], "nothing named yet");
        // A crash here: recovery removes both, and the point never was.
        let copy = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&repo)
            .arg(copy.path())
            .status()
            .unwrap();
        assert!(status.success());
        let copied = copy.path().join("points.git");
        let names = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("_sk_"))
                .collect()
        };
        assert_eq!(
            names(&copied).len() + names(&copied.join("objects/pack")).len(),
            3
        );
        Points::remove_unnamed(&copied).unwrap();
        assert!(names(&copied).is_empty() && names(&copied.join("objects/pack")).is_empty());

        points.install(unnamed).unwrap();
        let second = points.install_ref(prepared, &staged).unwrap();
        assert_eq!(second, first + 1);
        assert_eq!(points.snapshot(second).unwrap(), snap);
        let fresh = Points::open_or_init(&repo).unwrap();
        assert_eq!(fresh.snapshot(second).unwrap(), snap);
        assert_eq!(
            fresh.meta(second).unwrap().modes.get("new.php"),
            Some(&0o600)
        );
        let git = |args: &[&str]| crate::store::test_git(&repo, args);
        git(&["fsck", "--strict", "--no-dangling"]);
        for idx in std::fs::read_dir(repo.join("objects/pack")).unwrap() {
            let idx = idx.unwrap().path();
            if idx.extension().is_some_and(|e| e == "idx") {
                git(&["verify-pack", idx.to_str().unwrap()]);
            }
        }
        Points::remove_unnamed(&repo).unwrap();
        assert_eq!(
            fresh.snapshot(second).unwrap(),
            snap,
            "installed files stay"
        );
    }
}
