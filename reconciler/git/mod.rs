//! The one way sitekeeper fetches from a git repository it does not own: a
//! bare cache repository per URL, used under a lock, fetched with the
//! credentials [`GitAccess`] allows, its refs resolved to commits. Fleet and
//! catalog sources (`load`) and the report publisher (`watch::publish`) both
//! come through here, so an access option added to [`GitAccess`] reaches
//! every fetch and push at once.
//!
//! Credentials, without options: SSH keys from the ssh agent
//! (`SSH_AUTH_SOCK`); an https user and password from the git credential
//! helper configured for the user running sitekeeper; else libgit2's default
//! credentials. After [`MAX_CREDENTIAL_TRIES`] refused credentials it stops
//! asking instead of looping. Host keys are checked by libgit2's defaults
//! (`known_hosts`).
//!
//! It imports nothing of ours and never checks anything out; which directory
//! holds the caches, and how a failure is worded, is the caller's to say.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// How many times the credential callback answers before it gives up:
/// libgit2 asks again for as long as it is given something, so a refused
/// key or password would otherwise loop for ever.
pub const MAX_CREDENTIAL_TRIES: u32 = 3;

/// Where [`Cache::fetch_ref`] keeps the fetched branches, as `git clone`
/// does; other revisions of a fetched source are looked up there too.
pub const ORIGIN: &str = "refs/remotes/origin/";

/// How to reach remote repositories (SPEC §3, "Git access").
///
/// Empty today: every fetch and push uses what SPEC §3 names for when no
/// option is given (keys from the ssh agent, host keys checked by libgit2
/// against `known_hosts`, the system CAs, git's credential helper for
/// https). `--git-ssh-key`, `--git-known-hosts`, `--git-ca-file` and
/// `--git-token-file` become fields here, read by the credential callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitAccess {}

/// Why a cache could not be opened or fetched into. Each caller words it for
/// its own reader (a catalog or fleet source, the report repository), so
/// the variants say which step failed and carry the cause.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The cache directory or its lock file could not be made or locked.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The cache repository could not be created.
    #[error("{}: cannot create cache: {source}", path.display())]
    Init {
        /// The cache repository.
        path: PathBuf,
        /// The error.
        source: git2::Error,
    },
    /// The URL is not one git can use.
    #[error("not a git URL: {0}")]
    Url(git2::Error),
    /// The fetch failed: the network, the credentials or the server.
    #[error("fetch failed: {0}")]
    Fetch(git2::Error),
    /// The refs the remote advertised could not be listed.
    #[error("cannot list the branches: {0}")]
    List(git2::Error),
}

/// Whether `spec` names a remote git repository rather than a local path.
pub fn is_url(spec: &str) -> bool {
    if spec.contains("://") {
        return true;
    }
    // scp-like `user@host:path`, as git itself accepts.
    match (spec.find('@'), spec.find(':'), spec.find('/')) {
        (Some(at), Some(colon), slash) => at < colon && slash.is_none_or(|s| colon < s),
        _ => false,
    }
}

/// The bare cache repository of one URL, held under its lock.
pub struct Cache {
    repo: git2::Repository,
    url: String,
    access: GitAccess,
    /// Held for as long as the cache is in use; released on drop.
    _lock: File,
}

impl Cache {
    /// Opens the cache of `url` in `dir` (`<sha256 of the URL, 24 hex>.git`),
    /// creating `dir` and the repository when missing, once it holds the
    /// lock file beside it (`….lock`): two processes of one host never
    /// fetch into, or push from, one cache at the same time.
    pub fn open(dir: &Path, url: &str, access: &GitAccess) -> Result<Self, GitError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| GitError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let name = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let path = dir.join(format!("{name}.git"));
        let repo = match git2::Repository::open_bare(&path) {
            Ok(repo) => repo,
            Err(_) => git2::Repository::init_bare(&path).map_err(|source| GitError::Init {
                path: path.clone(),
                source,
            })?,
        };
        Ok(Self {
            repo,
            url: url.to_owned(),
            access: access.clone(),
            _lock: lock,
        })
    }

    /// The cache repository.
    pub fn repo(&self) -> &git2::Repository {
        &self.repo
    }

    /// The URL it caches.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The repository without the lock, for reading what was fetched. Safe
    /// to read unlocked: objects are found by id and never change, and a
    /// later fetch (by another process) only adds objects and moves refs.
    pub fn into_repo(self) -> git2::Repository {
        self.repo
    }

    /// Callbacks for a fetch or push to the URL: the credentials of
    /// [`GitAccess`]. Add a push's own callbacks to them.
    pub fn callbacks(&self) -> git2::RemoteCallbacks<'static> {
        credentials(&self.access)
    }

    /// Fetches `refspecs` from the URL (no tags besides those they name) and
    /// returns the refs the repository advertised in that same conversation,
    /// by full name: a branch a refspec names but the list lacks does not
    /// exist there (any more).
    pub fn fetch(&self, refspecs: &[String]) -> Result<Vec<(String, git2::Oid)>, GitError> {
        let remote = self.fetch_into(refspecs)?;
        // The list stays available after the fetch disconnects.
        let heads = remote.list().map_err(GitError::List)?;
        Ok(heads
            .iter()
            .map(|h| (h.name().to_owned(), h.oid()))
            .collect())
    }

    /// Fetches the repository's `HEAD`, every branch and every tag, and
    /// returns the commit `git_ref` names: a branch, a tag, `HEAD`, or
    /// anything else git can resolve (a commit id). `None` when it names
    /// nothing fetched.
    pub fn fetch_ref(&self, git_ref: &str) -> Result<Option<git2::Oid>, GitError> {
        self.fetch_into(&[
            "+HEAD:refs/sitekeeper/HEAD".to_owned(),
            format!("+refs/heads/*:{ORIGIN}*"),
            "+refs/tags/*:refs/tags/*".to_owned(),
        ])?;
        let candidates = [
            format!("{ORIGIN}{git_ref}"),
            format!("refs/tags/{git_ref}"),
            if git_ref == "HEAD" {
                "refs/sitekeeper/HEAD".to_owned()
            } else {
                git_ref.to_owned()
            },
        ];
        Ok(resolve(&self.repo, &candidates))
    }

    fn fetch_into(&self, refspecs: &[String]) -> Result<git2::Remote<'_>, GitError> {
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(GitError::Url)?;
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        options.download_tags(git2::AutotagOption::None);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(GitError::Fetch)?;
        Ok(remote)
    }
}

/// The commit the first of `candidates` that resolves names (a ref, a tag
/// or anything `git rev-parse` takes, peeled to a commit).
pub fn resolve(repo: &git2::Repository, candidates: &[String]) -> Option<git2::Oid> {
    candidates.iter().find_map(|candidate| {
        let object = repo.revparse_single(candidate).ok()?;
        Some(object.peel_to_commit().ok()?.id())
    })
}

/// Credentials for `access`, giving up after [`MAX_CREDENTIAL_TRIES`].
fn credentials(access: &GitAccess) -> git2::RemoteCallbacks<'static> {
    // Spelled out so that a field added to GitAccess fails to compile here
    // until the callback uses it: an option that is parsed but ignored
    // would silently fall back to the agent or the credential helper.
    let GitAccess {} = access;
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut asked = 0;
    callbacks.credentials(move |url, username, allowed| {
        asked += 1;
        if asked > MAX_CREDENTIAL_TRIES {
            return Err(git2::Error::from_str(
                "no credential was accepted (hint: load the deploy key into ssh-agent, or configure a git credential helper for this URL)",
            ));
        }
        let user = username.unwrap_or("git");
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            git2::Cred::ssh_key_from_agent(user)
        } else if allowed.contains(git2::CredentialType::USERNAME) {
            git2::Cred::username(user)
        } else if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            let config = git2::Config::open_default()?;
            git2::Cred::credential_helper(&config, url, username)
        } else {
            git2::Cred::default()
        }
    });
    callbacks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_url("file:///srv/catalog.git"));
        assert!(is_url("https://git.example.com/acme/catalog.git"));
        assert!(is_url("git@github.com:acme/catalog.git"));
        assert!(!is_url("../catalog"));
        assert!(!is_url("/srv/cat@log/x:y"));
    }

    #[test]
    fn a_cache_has_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let url = "file:///srv/nowhere.git";
        let first = Cache::open(dir.path(), url, &GitAccess::default()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let cache_dir = dir.path().to_owned();
        let second = std::thread::spawn(move || {
            let cache = Cache::open(&cache_dir, url, &GitAccess::default()).unwrap();
            tx.send(()).unwrap();
            cache.into_repo()
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "a second holder got the cache while the first held it"
        );
        let path = first.repo().path().to_owned();
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the second holder gets the cache once the first lets go");
        assert_eq!(second.join().unwrap().path(), path, "the same repository");
    }
}
