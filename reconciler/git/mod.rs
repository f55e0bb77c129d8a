//! The one way sitekeeper fetches from a git repository it does not own: a
//! bare cache repository per URL, used under a lock, fetched with the
//! credentials [`GitAccess`] allows, its refs resolved to commits. Fleet and
//! catalog sources (`load`) and the report publisher (`watch::publish`) both
//! come through here, so an access option in [`GitAccess`] reaches every
//! fetch and push at once.
//!
//! Credentials (SPEC §3): `--git-ssh-key` (a deploy key, no agent), else
//! keys from the ssh agent; `--git-token-file` for https, else the git
//! credential helper of the user running sitekeeper. Each is offered once
//! per connection (the agent up to [`MAX_CREDENTIAL_TRIES`] times): libgit2
//! asks again for as long as it is given something, so a refused key or
//! token would otherwise loop. Host keys are checked here, always, against
//! `--git-known-hosts` or `~/.ssh/known_hosts` ([`known_hosts`]); an unknown
//! or changed key is refused, never trusted on first use. https
//! certificates are libgit2's to verify, against the system CAs plus
//! `--git-ca-file`.
//!
//! Failures come back typed ([`GitError`]): a refused host key, a refused
//! credential, an untrusted certificate and a network failure are told
//! apart by what the callbacks saw and by libgit2's error codes, never by
//! the wording of a message. Secrets never reach a message, a URL stored
//! in the cache's config (fetches use anonymous remotes), or a log.
//!
//! It imports nothing of ours and never checks anything out; which
//! directory holds the caches, and how a failure is worded for a fleet, a
//! catalog or a report, is the caller's to say.

mod access;
pub mod ca_store;
pub mod known_hosts;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

pub use access::{AccessError, AccessOptions, GitAccess, TOKEN_USER};
use known_hosts::{HostKeyRefused, KnownHosts, SSH_PORT};

/// How many times the credential callback answers with the ssh agent
/// before it gives up (an agent may hold several keys; a deploy key or a
/// token is offered once).
pub const MAX_CREDENTIAL_TRIES: u32 = 3;

/// Where [`Cache::fetch_ref`] keeps the fetched branches, as `git clone`
/// does; other revisions of a fetched source are looked up there too.
pub const ORIGIN: &str = "refs/remotes/origin/";

/// How long a connection to a git server may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a git server (`git://`, http, https) may stay silent in the
/// middle of a fetch or push before it is given up on. A daemon must not
/// wait for ever on a server that accepted the connection and hung; the
/// fetch fails and is retried with a backoff. `SITEKEEPER_GIT_TIMEOUT`
/// (seconds) overrides it. libgit2 has no such timeout for ssh.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The ssh server's host key was refused: nothing was fetched.
    #[error("{0}")]
    HostKey(Box<HostKeyRefused>),
    /// The server refused the credential offered.
    #[error("authentication failed: the server refused {offered}{}", hint_of(*.offered))]
    Auth {
        /// What was offered, in words.
        offered: Offered,
    },
    /// The https server's certificate is not trusted (or not valid).
    #[error("the server's TLS certificate is not trusted: {} (hint: give the CA that signed it with --git-ca-file)", .0.message())]
    Certificate(git2::Error),
    /// The server did not answer in time.
    #[error("the server did not answer in time: {}", .0.message())]
    Timeout(git2::Error),
    /// The fetch failed: the network or the server.
    #[error("fetch failed: {0}")]
    Fetch(git2::Error),
    /// The refs the remote advertised could not be listed.
    #[error("cannot list the branches: {0}")]
    List(git2::Error),
}

/// Which credential a server refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The key of `--git-ssh-key`.
    DeployKey,
    /// The keys of the ssh agent (or there was no agent).
    Agent,
    /// The token of `--git-token-file`.
    Token,
    /// What git's credential helper gave, or nothing.
    Helper,
}

impl std::fmt::Display for Offered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Offered::DeployKey => "the key of --git-ssh-key",
            Offered::Agent => "the keys of the ssh agent, or there is no agent",
            Offered::Token => "the token of --git-token-file",
            Offered::Helper => "the credentials of git's credential helper, or there were none",
        })
    }
}

fn hint_of(offered: Offered) -> &'static str {
    match offered {
        Offered::DeployKey => " (hint: add its public key to the repository's deploy keys)",
        Offered::Agent => {
            " (hint: give a deploy key with --git-ssh-key, or load it into ssh-agent)"
        }
        Offered::Token => " (hint: check that the token is valid and may read the repository)",
        Offered::Helper => " (hint: give a token with --git-token-file)",
    }
}

/// What kind of failure a [`GitError`] is, for metrics and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The network or the server: worth retrying as it is.
    Network,
    /// The server did not answer in time.
    Timeout,
    /// A host key was refused.
    HostKey,
    /// A credential was refused.
    Auth,
    /// A TLS certificate was not trusted.
    Certificate,
    /// The cache on this machine, or a URL git cannot use.
    Local,
}

impl FailureKind {
    /// The word for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Network => "network",
            FailureKind::Timeout => "timeout",
            FailureKind::HostKey => "host_key",
            FailureKind::Auth => "auth",
            FailureKind::Certificate => "certificate",
            FailureKind::Local => "local",
        }
    }
}

impl GitError {
    /// Its kind.
    pub fn kind(&self) -> FailureKind {
        match self {
            GitError::Io { .. } | GitError::Init { .. } | GitError::Url(_) => FailureKind::Local,
            GitError::HostKey(_) => FailureKind::HostKey,
            GitError::Auth { .. } => FailureKind::Auth,
            GitError::Certificate(_) => FailureKind::Certificate,
            GitError::Timeout(_) => FailureKind::Timeout,
            GitError::Fetch(_) | GitError::List(_) => FailureKind::Network,
        }
    }
}

/// `url` as it may be shown: without a password, should the URL hold one
/// (`https://user:secret@host/…`), so that it can go into messages,
/// metrics labels and logs.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Setting a password fails only for URLs that cannot have one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Sets libgit2's network timeouts, once per process.
pub(crate) fn configure() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let io = std::env::var("SITEKEEPER_GIT_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().trim_end_matches('s').parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(IO_TIMEOUT, Duration::from_secs);
        let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: these set two global ints that libgit2 reads when it
        // next opens a connection; `Once` keeps two threads from racing.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(
                CONNECT_TIMEOUT.min(io),
            ));
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis(io));
        }
    });
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
    /// What the callbacks of the last fetch or push refused, so that its
    /// failure is reported as that and not as libgit2's generic words.
    refused: Arc<Mutex<Option<Refused>>>,
    /// Held for as long as the cache is in use; released on drop.
    _lock: File,
}

/// Something a callback refused during a fetch or push.
#[derive(Debug, Clone)]
enum Refused {
    HostKey(HostKeyRefused),
    Credential(Offered),
}

impl Cache {
    /// Opens the cache of `url` in `dir` (`<sha256 of the URL, 24 hex>.git`),
    /// creating `dir` and the repository when missing, once it holds the
    /// lock file beside it (`….lock`): two processes of one host never
    /// fetch into, or push from, one cache at the same time.
    pub fn open(dir: &Path, url: &str, access: &GitAccess) -> Result<Self, GitError> {
        configure();
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
            refused: Arc::default(),
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
    /// [`GitAccess`] and the host key check. Add a push's own callbacks to
    /// them, and turn its failure into a [`GitError`] with
    /// [`Cache::transport_error`].
    pub fn callbacks(&self) -> git2::RemoteCallbacks<'static> {
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = None;
        callbacks(&self.access, &self.url, &self.refused)
    }

    /// What a failed fetch or push through [`Cache::callbacks`] means: a
    /// refused host key or credential as the callbacks saw it, else
    /// libgit2's error by its code.
    pub fn transport_error(&self, e: git2::Error) -> GitError {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match refused {
            Some(Refused::HostKey(r)) => GitError::HostKey(Box::new(r)),
            Some(Refused::Credential(offered)) => GitError::Auth { offered },
            None => match e.code() {
                git2::ErrorCode::Certificate => GitError::Certificate(e),
                git2::ErrorCode::Timeout => GitError::Timeout(e),
                git2::ErrorCode::Auth => GitError::Auth {
                    offered: if self.access.token.is_some() {
                        Offered::Token
                    } else {
                        Offered::Helper
                    },
                },
                _ => GitError::Fetch(e),
            },
        }
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
        // Anonymous: the URL is never written into the cache's config.
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(GitError::Url)?;
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(self.callbacks());
        options.download_tags(git2::AutotagOption::None);
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| self.transport_error(e))?;
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

/// Whether `url` reaches its repository over ssh: `ssh://` (and git's
/// `git+ssh://`, `ssh+git://`) or scp-like `user@host:path`.
fn is_ssh(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, _)) => matches!(scheme, "ssh" | "git+ssh" | "ssh+git"),
        None => is_url(url),
    }
}

/// The port an ssh URL names (22 when it names none): libgit2 gives the
/// host key check the host alone, and known_hosts names other ports.
fn ssh_port(url: &str) -> u16 {
    if !url.contains("://") {
        // scp-like `user@host:path` has no port.
        return SSH_PORT;
    }
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(SSH_PORT)
}

/// The callbacks of one fetch or push to `url` with `access`; what they
/// refuse is left in `refused`.
fn callbacks(
    access: &GitAccess,
    url: &str,
    refused: &Arc<Mutex<Option<Refused>>>,
) -> git2::RemoteCallbacks<'static> {
    // Spelled out so that a field added to GitAccess fails to compile here
    // until the callbacks use it: an option that is parsed but ignored
    // would silently fall back to the agent or the credential helper. The
    // CA file is not used here: it was installed into libgit2 when read.
    let GitAccess {
        ssh_key,
        known_hosts,
        ca_file: _,
        token,
    } = access.clone();
    let mut callbacks = git2::RemoteCallbacks::new();
    let record = {
        let refused = Arc::clone(refused);
        move |r: Refused| {
            *refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
        }
    };
    let record_credential = record.clone();
    let (mut agent_tries, mut key_offered, mut token_offered) = (0, false, false);
    callbacks.credentials(move |url, username, allowed| {
        let user = username.unwrap_or("git");
        let refuse = |offered: Offered| {
            record_credential(Refused::Credential(offered));
            Err(git2::Error::from_str("the server refused the credentials"))
        };
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            match &ssh_key {
                // Asked again: the server refused it.
                Some(_) if key_offered => refuse(Offered::DeployKey),
                Some(key) => {
                    key_offered = true;
                    git2::Cred::ssh_key_from_memory(user, key.public.as_deref(), &key.private, None)
                }
                None if agent_tries >= MAX_CREDENTIAL_TRIES => refuse(Offered::Agent),
                None => {
                    agent_tries += 1;
                    git2::Cred::ssh_key_from_agent(user)
                }
            }
        } else if allowed.contains(git2::CredentialType::USERNAME) {
            git2::Cred::username(user)
        } else if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            match &token {
                Some(_) if token_offered => refuse(Offered::Token),
                Some(t) => {
                    token_offered = true;
                    git2::Cred::userpass_plaintext(&t.user, &t.secret)
                }
                None if agent_tries >= MAX_CREDENTIAL_TRIES => refuse(Offered::Helper),
                None => {
                    agent_tries += 1;
                    // No helper, or none with an answer: nothing to offer.
                    git2::Config::open_default()
                        .and_then(|config| git2::Cred::credential_helper(&config, url, username))
                        .or_else(|_| refuse(Offered::Helper))
                }
            }
        } else {
            git2::Cred::default()
        }
    });
    if !is_ssh(url) {
        // https: libgit2 verifies the certificate against the system CAs
        // and --git-ca-file. No callback, so that an untrusted one fails
        // with libgit2's certificate error code: a callback's passthrough
        // turns it into a generic error.
        return callbacks;
    }
    let port = ssh_port(url);
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            return Err(git2::Error::from_str(
                "an ssh connection presented a TLS certificate",
            ));
        };
        let Some(presented) = hostkey.hostkey() else {
            return Err(git2::Error::from_str(
                "the ssh server's host key cannot be read, so it cannot be checked",
            ));
        };
        let checked = match &known_hosts {
            Some(given) => given.check(host, port, presented),
            None => KnownHosts::read_home().check(host, port, presented),
        };
        match checked {
            Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
            Err(refusal) => {
                let message = refusal.to_string();
                record(Refused::HostKey(refusal));
                Err(git2::Error::new(
                    git2::ErrorCode::Certificate,
                    git2::ErrorClass::Ssh,
                    message,
                ))
            }
        }
    });
    callbacks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_and_their_ports() {
        for (url, ssh, port) in [
            ("ssh://git@example.com/a.git", true, 22),
            ("ssh://git@127.0.0.1:2222/srv/a.git", true, 2222),
            ("git+ssh://example.com:7999/a", true, 7999),
            ("git@example.com:acme/a.git", true, 22),
            ("https://example.com/a.git", false, 22),
            ("git://127.0.0.1:9418/a.git", false, 9418),
        ] {
            assert_eq!(is_ssh(url), ssh, "{url}");
            if ssh {
                assert_eq!(ssh_port(url), port, "{url}");
            }
        }
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            shown_url("https://me:s3cret@example.com/a.git"),
            "https://me:***@example.com/a.git"
        );
        assert_eq!(shown_url("git@example.com:a.git"), "git@example.com:a.git");
    }

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
