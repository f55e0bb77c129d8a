//! Where YAML comes from: a plain directory, or a commit of a git repository
//! (local, or fetched from a URL into a cache), read straight from objects.
//!
//! A [`Source`] reads files by relative path and names them for messages.
//! It never follows a symbolic link and never checks anything out: a
//! directory is read through [`crate::confined`], so a link anywhere along a
//! path (`fixes/files -> /etc`) is refused by the kernel, not followed.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use crate::confined::{Kind, Root};
use crate::git::{Cache, GitAccess, GitError, ORIGIN};
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

fn git(what: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
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
    /// A plain directory. `label` prefixes paths in messages (e.g. `../catalog/`).
    pub fn dir(path: &Path, label: impl Into<String>) -> Result<Self, SourceError> {
        let label = label.into();
        let shown = match label.trim_end_matches('/') {
            "" => path.display().to_string(),
            named => named.to_owned(),
        };
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SourceError::Missing {
                path: shown.clone(),
            },
            _ => SourceError::Io {
                path: shown.clone(),
                source,
            },
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotAFile {
                path: shown,
                what: "a file, not a directory",
            });
        }
        Ok(Self {
            inner: Inner::Dir(path.to_owned()),
            label,
            commit: None,
        })
    }

    /// The tree of `git_ref` in the local repository at `path`.
    pub fn git_local(
        path: &Path,
        git_ref: &str,
        label: impl Into<String>,
    ) -> Result<Self, SourceError> {
        let repo = git2::Repository::open(path)
            .map_err(git(format!("{}: not a git repository", path.display())))?;
        let commit = resolve(
            &repo,
            git_ref,
            &[git_ref.to_owned()],
            &path.display().to_string(),
        )?;
        Self::from_commit(repo, commit, label)
    }

    /// The tree of `git_ref` in the repository at `url`, fetched into a bare
    /// cache repository under `cache_dir` (reused by later fetches) through
    /// [`crate::git`].
    pub fn git_remote(
        url: &str,
        git_ref: &str,
        cache_dir: &Path,
        label: impl Into<String>,
    ) -> Result<Self, SourceError> {
        // The `--git-*` options of SPEC §3 are not read yet: the defaults.
        let cache =
            Cache::open(cache_dir, url, &GitAccess::default()).map_err(|e| fetch_failed(url, e))?;
        let commit = cache
            .fetch_ref(git_ref)
            .map_err(|e| fetch_failed(url, e))?
            .ok_or_else(|| SourceError::NoSuchRef {
                source_name: url.to_owned(),
                git_ref: git_ref.to_owned(),
            })?;
        // The lock is released here: the commit is resolved, and reading
        // its objects needs no lock.
        Self::from_commit(cache.into_repo(), commit, label)
    }

    fn from_commit(
        repo: git2::Repository,
        commit: git2::Oid,
        label: impl Into<String>,
    ) -> Result<Self, SourceError> {
        let tree = repo
            .find_commit(commit)
            .map_err(git(format!("commit {commit}")))?
            .tree_id();
        Ok(Self {
            inner: Inner::Git {
                repo: std::sync::Mutex::new(repo),
                commit,
                tree,
            },
            label: label.into(),
            commit: Some(commit.to_string()),
        })
    }

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

    /// The same files at another revision `rev` (a branch, tag or commit,
    /// as git names them), labelled `label` in messages.
    ///
    /// For a git source, `rev` is resolved in the same repository; in a
    /// repository fetched from a URL its branches are found under
    /// `refs/remotes/origin/`. For a directory, the git work tree that holds
    /// it is found and the directory's path within it is read at `rev`, so a
    /// fleet that is a subdirectory of a repository works too. Nothing is
    /// fetched or checked out: a revision the repository does not hold is
    /// [`SourceError::NoSuchRef`].
    pub fn at_rev(&self, rev: &str, label: impl Into<String>) -> Result<Self, SourceError> {
        let candidates = [
            rev.to_owned(),
            format!("{ORIGIN}{rev}"),
            format!("refs/tags/{rev}"),
        ];
        match &self.inner {
            Inner::Git { repo, .. } => {
                let path = lock(repo).path().to_owned();
                let repo = git2::Repository::open(&path)
                    .map_err(git(format!("{}: cannot open again", path.display())))?;
                let commit = resolve(&repo, rev, &candidates, &self.label_name())?;
                Self::from_commit(repo, commit, label)
            }
            Inner::Dir(dir) => {
                let shown = self.label_name();
                // Discovery walks up from the directory, as `git` itself does.
                let repo = git2::Repository::discover(dir).map_err(|_| SourceError::NotGit {
                    path: shown.clone(),
                })?;
                let Some(workdir) = repo.workdir() else {
                    return Err(SourceError::NotGit { path: shown });
                };
                let canon = |p: &Path| {
                    std::fs::canonicalize(p).map_err(|source| SourceError::Io {
                        path: p.display().to_string(),
                        source,
                    })
                };
                let (full, top) = (canon(dir)?, canon(workdir)?);
                let sub = full
                    .strip_prefix(&top)
                    .map_err(|_| SourceError::NotGit {
                        path: shown.clone(),
                    })?
                    .to_owned();
                let commit = resolve(&repo, rev, &candidates, &shown)?;
                let mut source = Self::from_commit(repo, commit, label)?;
                if !sub.as_os_str().is_empty()
                    && let Inner::Git { repo, tree, .. } = &mut source.inner
                {
                    let repo = repo
                        .get_mut()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let entry = repo
                        .find_tree(*tree)
                        .and_then(|t| t.get_path(&sub))
                        .ok()
                        .filter(|e| e.kind() == Some(git2::ObjectType::Tree));
                    match entry {
                        Some(e) => *tree = e.id(),
                        None => {
                            return Err(SourceError::MissingAtRef {
                                path: shown,
                                git_ref: rev.to_owned(),
                            });
                        }
                    }
                }
                Ok(source)
            }
        }
    }

    /// The source's name in messages, without the trailing separator.
    fn label_name(&self) -> String {
        match self.label.trim_end_matches([':', '/']) {
            "" => ".".to_owned(),
            named => named.to_owned(),
        }
    }

    /// The SSH (or other) signature of the commit read, the bytes it signs
    /// and the committer time; `None` for directory sources. The signature
    /// is `None` for an unsigned commit.
    pub fn commit_signature(&self) -> Result<Option<CommitSignature>, SourceError> {
        let Inner::Git { repo, commit, .. } = &self.inner else {
            return Ok(None);
        };
        let repo = &*lock(repo);
        let what = || format!("{}commit {commit}", self.label);
        let time = repo
            .find_commit(*commit)
            .map_err(git(what()))?
            .committer()
            .when()
            .seconds();
        match repo.extract_signature(commit, None) {
            Ok((signature, signed)) => Ok(Some(CommitSignature {
                signature: Some(signature.to_vec()),
                signed: signed.to_vec(),
                time,
            })),
            // libgit2 says NotFound for a commit without a `gpgsig` header.
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(Some(CommitSignature {
                signature: None,
                signed: Vec::new(),
                time,
            })),
            Err(e) => Err(git(what())(e)),
        }
    }

    /// Whether the commit read is `ancestor` or descends from it. `false`
    /// when `ancestor` is not a commit of this repository (an unrelated
    /// history), and for directory sources.
    pub fn descends_from(&self, ancestor: &str) -> Result<bool, SourceError> {
        let Inner::Git { repo, commit, .. } = &self.inner else {
            return Ok(false);
        };
        let repo = &*lock(repo);
        let Ok(ancestor) = git2::Oid::from_str(ancestor) else {
            return Ok(false);
        };
        if *commit == ancestor {
            return Ok(true);
        }
        if repo.find_commit(ancestor).is_err() {
            return Ok(false);
        }
        repo.graph_descendant_of(*commit, ancestor)
            .map_err(git(format!("{}commit {commit}", self.label)))
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
                let tree = repo.find_tree(*tree).map_err(git(shown.clone()))?;
                let entry = tree.get_path(Path::new(rel)).map_err(git(shown.clone()))?;
                let blob = entry
                    .to_object(repo)
                    .and_then(|o| o.peel_to_blob())
                    .map_err(git(shown))?;
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

    /// [`Source::tree`] of a git source: the entries of the subtree at
    /// `rel`, from objects alone. A submodule or a name that is not UTF-8
    /// is refused.
    fn git_tree(
        &self,
        repo: &git2::Repository,
        tree: git2::Oid,
        rel: &str,
    ) -> Result<BTreeMap<String, TreeFile>, SourceError> {
        let sub = self
            .git_subtree(repo, tree, rel)?
            .ok_or_else(|| SourceError::Missing {
                path: self.display(rel),
            })?;
        let mut out = BTreeMap::new();
        let mut bad = None;
        sub.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let Ok(name) = entry.name() else {
                bad = Some(format!(
                    "{dir}{}",
                    String::from_utf8_lossy(entry.name_bytes())
                ));
                return git2::TreeWalkResult::Abort;
            };
            let path = format!("{dir}{name}");
            let (mode, symlink) = match entry.filemode() {
                0o100644 => (0o644, false),
                0o100755 => (0o755, false),
                0o120000 => (0o777, true),
                // A subtree: the walk goes into it by itself.
                0o040000 => return git2::TreeWalkResult::Ok,
                _ => {
                    bad = Some(path);
                    return git2::TreeWalkResult::Abort;
                }
            };
            let file = TreeFile {
                mode,
                symlink,
                blob: BlobId::from_oid(entry.id()),
                content: None,
            };
            out.insert(path, file);
            git2::TreeWalkResult::Ok
        })
        // An abort is an error of walk(); `bad` says why.
        .ok();
        match bad {
            Some(path) => Err(SourceError::NotAFile {
                path: self.display(&join(rel, &path)),
                what: "a submodule or a name that is not UTF-8",
            }),
            None => Ok(out),
        }
    }

    /// The subtree at `rel` of the git tree `tree`; `None` when `rel` is
    /// missing or not a directory.
    fn git_subtree<'r>(
        &self,
        repo: &'r git2::Repository,
        tree: git2::Oid,
        rel: &str,
    ) -> Result<Option<git2::Tree<'r>>, SourceError> {
        let root = repo.find_tree(tree).map_err(git(self.display(rel)))?;
        match root.get_path(Path::new(rel)) {
            Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => repo
                .find_tree(e.id())
                .map(Some)
                .map_err(git(self.display(rel))),
            _ => Ok(None),
        }
    }

    /// [`Source::tree`] of a directory: walked through [`Root`], every
    /// file read to find its blob id.
    fn dir_tree(&self, root: &Path, rel: &str) -> Result<BTreeMap<String, TreeFile>, SourceError> {
        let io = |path: &str| {
            let path = self.display(path);
            move |source| SourceError::Io { path, source }
        };
        let root = Root::open(root).map_err(io(rel))?;
        let mut out = BTreeMap::new();
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let here = if dir.is_empty() {
                rel.to_owned()
            } else {
                join(rel, &dir)
            };
            for (name, meta) in root.list(&here).map_err(io(&here))? {
                let name = name.into_string().map_err(|n| SourceError::NotAFile {
                    path: self.display(&join(&here, &n.to_string_lossy())),
                    what: "named in bytes that are not UTF-8",
                })?;
                let path = join(&dir, &name);
                if meta.kind == Kind::Dir {
                    dirs.push(path);
                } else {
                    let file = self.dir_file(&root, &join(rel, &path), meta.kind)?;
                    out.insert(path, file);
                }
            }
        }
        Ok(out)
    }

    /// The link or regular file `at` (relative to the source) of a
    /// directory tree, read; anything else is refused.
    fn dir_file(&self, root: &Root, at: &str, kind: Kind) -> Result<TreeFile, SourceError> {
        let io = |source| SourceError::Io {
            path: self.display(at),
            source,
        };
        match kind {
            Kind::Symlink => {
                let bytes = root.read_link(at).map_err(io)?.into_encoded_bytes();
                Ok(TreeFile {
                    mode: 0o777,
                    symlink: true,
                    blob: BlobId::of(&bytes),
                    content: Some(bytes),
                })
            }
            Kind::File => {
                let (mut file, meta) = root.open_file(at).map_err(io)?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io)?;
                Ok(TreeFile {
                    mode: meta.mode,
                    symlink: false,
                    blob: BlobId::of(&bytes),
                    content: Some(bytes),
                })
            }
            _ => Err(SourceError::NotAFile {
                path: self.display(at),
                what: "a special file, not a regular file",
            }),
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
                    .map_err(git(format!("blob {blob}")))?;
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
                    repo.find_tree(*tree).map_err(git(self.display(rel)))?
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

/// A commit's signature as git stores it, for verification elsewhere.
#[derive(Debug, Clone)]
pub struct CommitSignature {
    /// The armored signature of the `gpgsig` header; `None` when unsigned.
    pub signature: Option<Vec<u8>>,
    /// The commit object without that header: what the signer signed.
    pub signed: Vec<u8>,
    /// The committer time, in seconds since the epoch (what git checks a
    /// signer's validity interval against).
    pub time: i64,
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

/// The commit the first of `candidates` names, or [`SourceError::NoSuchRef`].
fn resolve(
    repo: &git2::Repository,
    git_ref: &str,
    candidates: &[String],
    source_name: &str,
) -> Result<git2::Oid, SourceError> {
    crate::git::resolve(repo, candidates).ok_or_else(|| SourceError::NoSuchRef {
        source_name: source_name.to_owned(),
        git_ref: git_ref.to_owned(),
    })
}

/// A failed fetch of a source, worded as it always was for fleets and catalogs.
fn fetch_failed(url: &str, e: GitError) -> SourceError {
    match e {
        GitError::Io { path, source } => SourceError::Io {
            path: path.display().to_string(),
            source,
        },
        GitError::Init { path, source } => {
            git(format!("{}: cannot create cache", path.display()))(source)
        }
        GitError::Url(source) => git(format!("{url}: not a git URL"))(source),
        GitError::Fetch(source) | GitError::List(source) => {
            git(format!("{url}: fetch failed"))(source)
        }
    }
}

/// The repository of a git source. A poisoned lock only means another
/// thread panicked while reading; the repository itself is unchanged.
fn lock(repo: &std::sync::Mutex<git2::Repository>) -> std::sync::MutexGuard<'_, git2::Repository> {
    repo.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
