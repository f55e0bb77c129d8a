//! A site's data around a change (SPEC §6.6): capturing it into a data
//! snapshot before the change, and putting it back from one when the
//! change fails or an operator rolls back with `--data`.
//!
//! SQLite databases go through SQLite's online backup API, which copies a
//! consistent state while the site keeps writing (a plain file copy of a
//! live database can catch half a transaction). Anything else goes through
//! the site's `snapshot` and `restore` commands with
//! `$SITEKEEPER_DATA_FILE`, run under the hook rules (process group,
//! timeout, capped output). Where the snapshot lands, and its manifest,
//! are `store::data`'s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::hooks::{self, HookEnv, HookError};
use crate::confined::Root;
use crate::model::fleet::Data;
use crate::model::words::DataWhen;
use crate::store::data::{Compression, DataFile, DataSource, sha256_file};
use crate::store::{DataSnapshots, Manifest, StoreError};

/// Stored compressed only when that saves at least this share (in
/// percent) of the file: below it, decompressing on restore costs more
/// time than the disk it saves is worth.
const WORTH_COMPRESSING: u64 = 10;

/// How long a backup step waits for a writer's lock before it tries again.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// Why capturing or restoring data failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A `sqlite` path is not a regular file inside the root.
    #[error("{path}: {reason}")]
    NotADatabase {
        /// Relative to the root.
        path: String,
        /// Why.
        reason: String,
    },
    /// SQLite refused.
    #[error("{path}: {source}")]
    Sqlite {
        /// The database, relative to the root.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
    /// A writer held the database for longer than the timeout.
    #[error("{path}: the database stayed locked by another writer for {secs} s")]
    Busy {
        /// The database.
        path: String,
        /// How long it waited.
        secs: u64,
    },
    /// The `snapshot` or `restore` command failed.
    #[error("the data {which} command: {source}")]
    Command {
        /// `snapshot` or `restore`.
        which: &'static str,
        /// Why.
        source: HookError,
    },
    /// The `snapshot` command succeeded but wrote nothing.
    #[error(
        "the data snapshot command exited 0 but wrote nothing to $SITEKEEPER_DATA_FILE (hint: make it write its dump to that file, e.g. `pg_dump -Fc db > \"$SITEKEEPER_DATA_FILE\"`)"
    )]
    NothingWritten,
    /// The snapshot has a command's file but the site has no `restore`.
    #[error("the snapshot holds a command's dump, but the site has no data.restore command")]
    NoRestore,
    /// A file of the snapshot could not be written or read.
    #[error("{}: {}", path.display(), crate::store::plain(source))]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed (a damaged or missing snapshot among others).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether a change must capture the site's data first: the site has
/// `data:`, and the change runs migrations or hooks, or `when: always`.
pub fn wanted(data: Option<&Data>, runs_commands: bool) -> bool {
    data.is_some_and(|d| runs_commands || d.when == Some(DataWhen::Always))
}

/// What capturing and restoring run with.
pub struct DataRun<'a> {
    /// The site's `data:`.
    pub data: &'a Data,
    /// Its root, where the databases are and the commands run.
    pub root: &'a Root,
    /// The site's commands' environment (`data_file` is set here).
    pub env: HookEnv<'a>,
    /// Each command's and each backup's time limit.
    pub timeout: Duration,
}

impl DataRun<'_> {
    /// Captures the site's data as point `point`'s snapshot.
    pub fn capture(&self, snapshots: &DataSnapshots, point: u64) -> Result<Manifest, DataError> {
        let building = snapshots.begin(point)?;
        let mut files = Vec::new();
        for (n, rel) in self.data.sqlite.iter().enumerate() {
            let name = format!("sqlite-{n}.db");
            let raw = building.dir().join(&name);
            self.backup(rel.as_str(), &raw)?;
            files.push(store(
                &raw,
                DataSource::Sqlite {
                    path: rel.as_str().to_owned(),
                },
            )?);
        }
        if let Some(cmd) = &self.data.snapshot {
            let raw = building.dir().join("dump");
            let env = HookEnv {
                data_file: Some(&raw),
                ..self.env
            };
            hooks::run(&cmd.0, &env, self.timeout).map_err(|source| DataError::Command {
                which: "snapshot",
                source,
            })?;
            if !raw.is_file() {
                return Err(DataError::NothingWritten);
            }
            files.push(store(&raw, DataSource::Command)?);
        }
        Ok(snapshots.seal(building, files)?)
    }

    /// Puts the data back from point `point`'s snapshot, checked against
    /// its manifest first: every database through the backup API, and the
    /// command's dump through `restore`.
    pub fn restore(&self, snapshots: &DataSnapshots, point: u64) -> Result<Manifest, DataError> {
        let manifest = snapshots.verify(point)?;
        let dir = snapshots.path(point);
        for f in &manifest.files {
            let stored = dir.join(&f.name);
            let unpacked = unpacked(&stored, f.compression)?;
            let source = unpacked.as_deref().unwrap_or(&stored);
            let result = match &f.source {
                DataSource::Sqlite { path } => self.restore_sqlite(path, source),
                DataSource::Command => self.run_restore(source),
            };
            if let Some(temp) = &unpacked {
                let _ = std::fs::remove_file(temp);
            }
            result?;
        }
        Ok(manifest)
    }

    /// The `restore` command, reading `file`.
    fn run_restore(&self, file: &Path) -> Result<(), DataError> {
        let cmd = self.data.restore.as_ref().ok_or(DataError::NoRestore)?;
        let env = HookEnv {
            data_file: Some(file),
            ..self.env
        };
        hooks::run(&cmd.0, &env, self.timeout)
            .map(drop)
            .map_err(|source| DataError::Command {
                which: "restore",
                source,
            })
    }

    /// Copies the live database `rel` to `to` through the backup API.
    fn backup(&self, rel: &str, to: &Path) -> Result<(), DataError> {
        let live = self.open_live(rel, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let sqlite = |source| DataError::Sqlite {
            path: rel.to_owned(),
            source,
        };
        let mut copy = Connection::open(to).map_err(sqlite)?;
        let backup = Backup::new(&live, &mut copy).map_err(sqlite)?;
        self.run_backup(rel, &backup)
    }

    /// Overwrites the live database `rel` with the copy at `from`.
    fn restore_sqlite(&self, rel: &str, from: &Path) -> Result<(), DataError> {
        let mut live = self.open_live(
            rel,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        let sqlite = |source| DataError::Sqlite {
            path: rel.to_owned(),
            source,
        };
        let copy =
            Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
        let backup = Backup::new(&copy, &mut live).map_err(sqlite)?;
        self.run_backup(rel, &backup)
    }

    /// Copies every page in one step, so the copy is of one instant: in
    /// small steps, a write to the source between two of them restarts the
    /// backup, and a site that writes steadily would never let it finish.
    /// A writer's lock is waited out, up to the timeout.
    fn run_backup(&self, rel: &str, backup: &Backup<'_, '_>) -> Result<(), DataError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match backup.step(-1) {
                Ok(StepResult::Done) => return Ok(()),
                Ok(StepResult::More) => {}
                Ok(StepResult::Busy | StepResult::Locked) => {
                    if Instant::now() >= deadline {
                        return Err(DataError::Busy {
                            path: rel.to_owned(),
                            secs: self.timeout.as_secs(),
                        });
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
                Ok(_) => {}
                Err(source) => {
                    return Err(DataError::Sqlite {
                        path: rel.to_owned(),
                        source,
                    });
                }
            }
        }
    }

    /// Opens the live database `rel` inside the root. Its directory is
    /// opened through the confined root (no link is followed out of it)
    /// and SQLite is handed that directory as `/proc/self/fd/N/NAME`, so
    /// it opens the file there and its journal beside it.
    fn open_live(&self, rel: &str, flags: OpenFlags) -> Result<Connection, DataError> {
        let not = |reason: String| DataError::NotADatabase {
            path: rel.to_owned(),
            reason,
        };
        match self.root.metadata(rel) {
            Ok(m) if m.kind == crate::confined::Kind::File => {}
            Ok(m) => {
                return Err(not(format!(
                    "is {}, not a database file",
                    m.kind.describe()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not(
                    "does not exist (hint: create the database, or remove it from data.sqlite)"
                        .into(),
                ));
            }
            Err(e) => return Err(not(e.to_string())),
        }
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = self
            .root
            .dir(parent)
            .map_err(|e| not(format!("its directory: {e}")))?;
        let path = format!(
            "/proc/self/fd/{}/{name}",
            std::os::fd::AsRawFd::as_raw_fd(&dir)
        );
        let conn = Connection::open_with_flags(&path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|source| DataError::Sqlite {
                path: rel.to_owned(),
                source,
            })?;
        // SQLite has resolved the directory and opened the file; the
        // descriptor has done its work.
        drop(dir);
        conn.busy_timeout(self.timeout)
            .map_err(|source| DataError::Sqlite {
                path: rel.to_owned(),
                source,
            })?;
        Ok(conn)
    }
}

/// Stores the captured file `raw`: compressed with zstd when that pays,
/// else as it is; returns its manifest entry.
fn store(raw: &Path, source: DataSource) -> Result<DataFile, DataError> {
    let raw_bytes = std::fs::metadata(raw).map_err(io(raw))?.len();
    let packed = raw.with_file_name(format!(
        "{}.zst",
        raw.file_name().unwrap_or_default().to_string_lossy()
    ));
    {
        let input = std::fs::File::open(raw).map_err(io(raw))?;
        let output = std::fs::File::create(&packed).map_err(io(&packed))?;
        zstd::stream::copy_encode(input, output, 3).map_err(io(&packed))?;
    }
    let packed_bytes = std::fs::metadata(&packed).map_err(io(&packed))?.len();
    let pays =
        packed_bytes.saturating_mul(100) <= raw_bytes.saturating_mul(100 - WORTH_COMPRESSING);
    let (path, bytes, compression) = if pays {
        std::fs::remove_file(raw).map_err(io(raw))?;
        (packed, packed_bytes, Compression::Zstd)
    } else {
        std::fs::remove_file(&packed).map_err(io(&packed))?;
        (raw.to_owned(), raw_bytes, Compression::None)
    };
    Ok(DataFile {
        name: path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        source,
        sha256: sha256_file(&path)?,
        bytes,
        raw_bytes,
        compression,
    })
}

/// A compressed file unpacked beside it (the caller removes it); `None`
/// for a file stored as it is.
fn unpacked(stored: &Path, compression: Compression) -> Result<Option<PathBuf>, DataError> {
    match compression {
        Compression::None => Ok(None),
        Compression::Zstd => {
            let out = stored.with_extension("restoring");
            let input = std::fs::File::open(stored).map_err(io(stored))?;
            let output = std::fs::File::create(&out).map_err(io(&out))?;
            zstd::stream::copy_decode(input, output).map_err(io(&out))?;
            Ok(Some(out))
        }
    }
}
