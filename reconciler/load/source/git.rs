//! The git backend of [`Source`]: a commit of a local repository, or of one
//! fetched from a URL through [`crate::git`], read straight from objects;
//! other revisions of the same history (`--changed-since`); the commit's
//! signature and ancestry for the trust verdict. Nothing is checked out.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Inner, Source, SourceError, TreeFile, git_error, join, lock};
use crate::git::{Cache, GitAccess, GitError, ORIGIN};
use crate::model::hash::BlobId;

impl Source {
    /// The tree of `git_ref` in the local repository at `path`.
    pub fn git_local(
        path: &Path,
        git_ref: &str,
        label: impl Into<String>,
    ) -> Result<Self, SourceError> {
        let repo = git2::Repository::open(path).map_err(git_error(format!(
            "{}: not a git repository",
            path.display()
        )))?;
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
    /// [`crate::git`], with the credentials and host keys of `access`.
    pub fn git_remote(
        url: &str,
        git_ref: &str,
        cache_dir: &Path,
        access: &GitAccess,
        label: impl Into<String>,
    ) -> Result<Self, SourceError> {
        let cache = Cache::open(cache_dir, url, access).map_err(|e| fetch_failed(url, e))?;
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
            .map_err(git_error(format!("commit {commit}")))?
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
                    .map_err(git_error(format!("{}: cannot open again", path.display())))?;
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
            .map_err(git_error(what()))?
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
            Err(e) => Err(git_error(what())(e)),
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
            .map_err(git_error(format!("{}commit {commit}", self.label)))
    }

    /// [`Source::tree`] of a git source: the entries of the subtree at
    /// `rel`, from objects alone. A submodule or a name that is not UTF-8
    /// is refused.
    pub(super) fn git_tree(
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
    pub(super) fn git_subtree<'r>(
        &self,
        repo: &'r git2::Repository,
        tree: git2::Oid,
        rel: &str,
    ) -> Result<Option<git2::Tree<'r>>, SourceError> {
        let root = repo.find_tree(tree).map_err(git_error(self.display(rel)))?;
        match root.get_path(Path::new(rel)) {
            Ok(e) if e.kind() == Some(git2::ObjectType::Tree) => repo
                .find_tree(e.id())
                .map(Some)
                .map_err(git_error(self.display(rel))),
            _ => Ok(None),
        }
    }
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

/// A failed fetch of a source: its URL (never a password it may hold)
/// and the typed cause.
fn fetch_failed(url: &str, source: GitError) -> SourceError {
    SourceError::Fetch {
        url: crate::git::shown_url(url),
        source,
    }
}
