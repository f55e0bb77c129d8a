//! Where YAML comes from: a plain directory, or a commit of a git repository
//! (local, or fetched from a URL into a cache), read straight from objects.
//!
//! A [`Source`] reads files by relative path and names them for messages.
//! It never follows a symbolic link and never checks anything out: a
//! directory is read through [`crate::confined`], so a link anywhere along a
//! path (`fixes/files -> /etc`) is refused by the kernel, not followed.
//!
//! This file holds the type, its errors and the reads that serve either
//! backend; `git.rs` opens commits (local, or fetched through
//! [`crate::git`]) and `dir.rs` opens directories.

mod dir;
mod git;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use self::git::CommitSignature;
use crate::confined::{Kind, Root};
// Where `load`'s callers have always found it.
pub use crate::git::is_url;
use crate::model::hash::BlobId;

/// What a path in a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory (or git tree).
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else: device, FIFO, socket, git submodule.
    Other,
}

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The path does not exist.
    #[error("{path} does not exist")]
    Missing {
        /// The path, as shown to people.
        path: String,
    },
    /// A git error.
    #[error("{what}: {source}")]
    Git {
        /// What was being done.
        what: String,
        /// The error.
        source: git2::Error,
    },
    /// A remote repository could not be fetched (the network, the server,
    /// a refused host key or credential): see [`crate::git::GitError`].
    #[error("{url}: {source}")]
    Fetch {
        /// The repository, as it may be shown.
        url: String,
        /// Why.
        source: crate::git::GitError,
    },
    /// The ref names nothing in the repository.
    #[error("{source_name}: no branch, tag or commit named {git_ref:?}")]
    NoSuchRef {
        /// The repository.
        source_name: String,
        /// The ref.
        git_ref: String,
    },
    /// A directory that `--changed-since` needs as a git work tree is not in one.
    #[error("{path} is not in a git work tree, so there is no history to compare with")]
    NotGit {
        /// The directory, as shown to people.
        path: String,
    },
    /// A directory that exists in the work tree is absent at the commit compared with.
    #[error("{path} does not exist at {git_ref:?}")]
    MissingAtRef {
        /// The directory, as shown to people.
        path: String,
        /// The ref.
        git_ref: String,
    },
    /// A path is not the kind of file it must be.
    #[error("{path} is {what}")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is instead.
        what: &'static str,
    },
}

impl SourceError {
    /// The failed fetch this is, if it is one, for those who count them.
    pub fn fetch_failure(&self) -> Option<super::FetchFailure> {
        match self {
            SourceError::Fetch { url, source } => Some(super::FetchFailure {
                repo: url.clone(),
                kind: source.kind(),
            }),
            _ => None,
        }
    }

    /// A hint for the person who has to fix it.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SourceError::NoSuchRef { .. } => Some(
                "check `ref:` in fleet.yaml; it must name a branch, tag or commit of the source",
            ),
            SourceError::NotAFile {
                what: "a symbolic link, not a regular file",
                ..
            } => Some(
                "sitekeeper never follows symbolic links in a fleet or catalog; commit the file itself",
            ),
            SourceError::Missing { .. } => {
                Some("check the path; a relative path is relative to the fleet repo")
            }
            SourceError::NotGit { .. } => Some(
                "--changed-since compares with a commit: run it on a git clone of the fleet repo, or give --fleet a git URL",
            ),
            SourceError::MissingAtRef { .. } => Some(
                "compare with a commit at which the fleet directory existed, or plan every site without --changed-since",
            ),
            _ => None,
        }
    }
}

/// A [`SourceError::Git`] for a failure while doing `what`.
fn git_error(what: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
    let what = what.into();
    move |source| SourceError::Git { what, source }
}

enum Inner {
    Dir(PathBuf),
    Git {
        /// Behind a mutex so a loaded fleet can be shared between threads
        /// (libgit2 handles are `Send`, not `Sync`); reads are short.
        repo: std::sync::Mutex<git2::Repository>,
        commit: git2::Oid,
        tree: git2::Oid,
    },
}

/// A readable tree of files: a directory or a git commit.
pub struct Source {
    inner: Inner,
    /// Prefix that turns a relative path into the name shown in messages.
    label: String,
    commit: Option<String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("label", &self.label)
            .field("commit", &self.commit)
            .finish()
    }
}

impl Source {
    /// The commit read, for git sources.
    pub fn commit(&self) -> Option<&str> {
        self.commit.as_deref()
    }

    /// The id of the tree read, for git sources: two commits with the same
    /// tree hold the same files, so comparing trees ignores empty commits.
    pub fn tree_id(&self) -> Option<String> {
        match &self.inner {
            Inner::Git { tree, .. } => Some(tree.to_string()),
            Inner::Dir(_) => None,
        }
    }

    /// The source's name in messages, without the trailing separator.
    fn label_name(&self) -> String {
        match self.label.trim_end_matches([':', '/']) {
            "" => ".".to_owned(),
            named => named.to_owned(),
        }
    }

    /// The directory on disk, for directory sources.
    pub fn dir_path(&self) -> Option<&Path> {
        match &self.inner {
            Inner::Dir(p) => Some(p),
            Inner::Git { .. } => None,
        }
    }

    /// The name of `rel` in messages.
    pub fn display(&self, rel: &str) -> String {
        format!("{}{rel}", self.label)
    }

    /// What `rel` is, or `None` when it does not exist.
    pub fn kind(&self, rel: &str) -> Option<EntryKind> {
        match &self.inner {
            Inner::Dir(root) => {
                let rel = rel.trim_end_matches('/');
                if rel.is_empty() {
                    return Some(EntryKind::Dir);
                }
                match Root::open(root).and_then(|r| r.metadata(rel)) {
                    Ok(meta) => Some(entry_kind(meta.kind)),
                    // A link along the path: it is reached only through one.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                        Some(EntryKind::Symlink)
                    }
                    Err(_) => None,
                }
            }
            Inner::Git { repo, tree, .. } => {
                let repo = &*lock(repo);
                let rel = rel.trim_end_matches('/');
                if rel.is_empty() {
                    return Some(EntryKind::Dir);
                }
                let tree = repo.find_tree(*tree).ok()?;
                let entry = tree.get_path(Path::new(rel)).ok()?;
                Some(mode_kind(entry.filemode()))
            }
        }
    }

    /// The bytes of the regular file `rel`; links and special files are refused.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, SourceError> {
        let shown = self.display(rel);
        match self.kind(rel) {
            Some(EntryKind::File) => {}
            Some(EntryKind::Symlink) => {
                return Err(SourceError::NotAFile {
                    path: shown,
                    what: "a symbolic link, not a regular file",
                });
            }
            Some(EntryKind::Dir) => {
                return Err(SourceError::NotAFile {
                    path: shown,
                    what: "a directory, not a regular file",
                });
            }
            Some(EntryKind::Other) => {
                return Err(SourceError::NotAFile {
                    path: shown,
                    what: "a special file, not a regular file",
                });
            }
            None => return Err(SourceError::Missing { path: shown }),
        }
        match &self.inner {
            Inner::Dir(root) => {
                // Opened beneath the root with no link followed and never
                // blocking (a FIFO swapped in after the check is refused).
                let read = || -> std::io::Result<Vec<u8>> {
                    let (mut file, meta) = Root::open(root)?.open_file(rel)?;
                    let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
                    std::io::Read::read_to_end(&mut file, &mut bytes)?;
                    Ok(bytes)
                };
                read().map_err(|source| SourceError::Io {
                    path: shown,
                    source,
                })
            }
            Inner::Git { repo, tree, .. } => {
                let repo = &*lock(repo);
                let tree = repo.find_tree(*tree).map_err(git_error(shown.clone()))?;
                let entry = tree
                    .get_path(Path::new(rel))
                    .map_err(git_error(shown.clone()))?;
                let blob = entry
                    .to_object(repo)
                    .and_then(|o| o.peel_to_blob())
                    .map_err(git_error(shown))?;
                Ok(blob.content().to_vec())
            }
        }
    }

    /// The SHA-256 of the regular file `rel`, in lower-case hex, read in
    /// chunks so that a large archive is never held in memory from a directory.
    pub fn sha256(&self, rel: &str) -> Result<String, SourceError> {
        let mut hasher = Sha256::new();
        match &self.inner {
            Inner::Dir(root) => {
                if self.kind(rel) != Some(EntryKind::File) {
                    return self.read(rel).map(|_| String::new());
                }
                let shown = self.display(rel);
                let (mut file, _) =
                    Root::open(root)
                        .and_then(|r| r.open_file(rel))
                        .map_err(|source| SourceError::Io {
                            path: shown.clone(),
                            source,
                        })?;
                std::io::copy(&mut file, &mut hasher).map_err(|source| SourceError::Io {
                    path: shown,
                    source,
                })?;
            }
            Inner::Git { .. } => hasher.update(self.read(rel)?),
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Every file below directory `rel`, by path relative to it. Git trees
    /// give blob ids without reading contents; a directory is read. Links
    /// are recorded, never followed; special files are refused.
    pub fn tree(&self, rel: &str) -> Result<BTreeMap<String, TreeFile>, SourceError> {
        let rel = rel.trim_end_matches('/');
        match &self.inner {
            Inner::Git { repo, tree, .. } => self.git_tree(&lock(repo), *tree, rel),
            Inner::Dir(root) => self.dir_tree(root, rel),
        }
    }

    /// The content of a blob of a git source (`None` for directories,
    /// whose [`Source::tree`] carries contents).
    pub fn read_blob(&self, blob: BlobId) -> Result<Option<Vec<u8>>, SourceError> {
        match &self.inner {
            Inner::Git { repo, .. } => {
                let repo = &*lock(repo);
                let b = repo
                    .find_blob(blob.to_oid())
                    .map_err(git_error(format!("blob {blob}")))?;
                Ok(Some(b.content().to_vec()))
            }
            Inner::Dir(_) => Ok(None),
        }
    }

    /// The entries of directory `rel`, sorted by name; empty when it does not exist.
    /// Names that are not UTF-8 are returned in `skipped`.
    pub fn list(&self, rel: &str) -> Result<Listing, SourceError> {
        let mut listing = Listing::default();
        match &self.inner {
            Inner::Dir(root) => {
                if self.kind(rel) != Some(EntryKind::Dir) {
                    return Ok(listing);
                }
                let entries = Root::open(root)
                    .and_then(|r| r.list(rel.trim_end_matches('/')))
                    .map_err(|source| SourceError::Io {
                        path: self.display(rel),
                        source,
                    })?;
                for (name, meta) in entries {
                    match name.into_string() {
                        Ok(name) => listing.entries.push((name, entry_kind(meta.kind))),
                        Err(raw) => listing.skipped.push(raw.to_string_lossy().into_owned()),
                    }
                }
            }
            Inner::Git { repo, tree, .. } => {
                let repo = &*lock(repo);
                let sub = if rel.is_empty() {
                    repo.find_tree(*tree)
                        .map_err(git_error(self.display(rel)))?
                } else {
                    match self.git_subtree(repo, *tree, rel)? {
                        Some(sub) => sub,
                        None => return Ok(listing),
                    }
                };
                for entry in sub.iter() {
                    match entry.name() {
                        Ok(name) => listing
                            .entries
                            .push((name.to_owned(), mode_kind(entry.filemode()))),
                        Err(_) => listing
                            .skipped
                            .push(String::from_utf8_lossy(entry.name_bytes()).into_owned()),
                    }
                }
            }
        }
        listing.entries.sort();
        Ok(listing)
    }
}

/// A file of a tree read with [`Source::tree`].
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Permission bits (0o644 or 0o755 from git; exact from a directory).
    pub mode: u32,
    /// Whether it is a symbolic link (its content is the target).
    pub symlink: bool,
    /// Its git blob id.
    pub blob: BlobId,
    /// Its content, when it had to be read to find the blob id.
    pub content: Option<Vec<u8>>,
}

/// The entries of a directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Name and kind, sorted by name.
    pub entries: Vec<(String, EntryKind)>,
    /// Names that are not UTF-8, which sitekeeper refuses to handle.
    pub skipped: Vec<String>,
}

/// `dir/name`, or `name` at the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

fn entry_kind(kind: Kind) -> EntryKind {
    match kind {
        Kind::File => EntryKind::File,
        Kind::Dir => EntryKind::Dir,
        Kind::Symlink => EntryKind::Symlink,
        Kind::Fifo | Kind::Socket | Kind::Device => EntryKind::Other,
    }
}

fn mode_kind(mode: i32) -> EntryKind {
    match mode & 0o170000 {
        0o040000 => EntryKind::Dir,
        0o120000 => EntryKind::Symlink,
        0o100000 => EntryKind::File,
        _ => EntryKind::Other,
    }
}

/// The repository of a git source. A poisoned lock only means another
/// thread panicked while reading; the repository itself is unchanged.
fn lock(repo: &std::sync::Mutex<git2::Repository>) -> std::sync::MutexGuard<'_, git2::Repository> {
    repo.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
