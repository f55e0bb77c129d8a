//! Publishing opt-in status reports (SPEC §7) to the report repository
//! named in `fleet.yaml` `reports:`, through git. What a report may say is
//! decided by [`super::privacy`]; this module sends exactly that and nothing
//! else, and when no site opted in it does not even connect.
//!
//! # Publishing
//!
//! [`publish`] keeps a bare clone of the report repository under
//! `<state_dir>/cache/reports/<sha256 of the URL, 24 hex>.git` (a
//! [`crate::git::Cache`], guarded by a lock file beside it, so two processes
//! of one host do not interleave),
//! fetches the branch, writes `status/<site>.json` (pretty JSON, keys sorted,
//! trailing newline) for each report straight into git objects (nothing is
//! checked out), commits only when some file changed, and pushes. Several
//! hosts push to one branch: a push that lost a race (non-fast-forward, or a
//! ref that moved under it) is retried from a fresh fetch, with a jittered
//! backoff, up to [`MAX_ATTEMPTS`] times. Each host only writes its own
//! sites' files, so rebuilding on the new tip never undoes another host's.
//!
//! Transports:
//! * local paths and `file://` URLs: the target must be a bare repository.
//!   The update is a compare-and-swap on the branch ref in the target
//!   (objects copied first), not libgit2's local push transport: that one
//!   force-updates the remote ref without checking its old value, so two
//!   hosts pushing at once could silently drop one's commit.
//! * `git://`, `http(s)://` and `ssh://` / `user@host:path`: `git2`
//!   `Remote::push` with the refspec `refs/heads/B:refs/heads/B` (never
//!   forced); a rejection reported by the server counts as a lost race when
//!   its message says so, else it is an error. Credentials and host keys
//!   are those of every fetch, from [`crate::git`].
//!
//! Commits are made by [`Committer::default`] (`sitekeeper
//! <sitekeeper@localhost>`): a host or user name in commit metadata would
//! leave the machine without any site having opted in to that.
//!
//! A site that stops opting in stops being updated; its earlier file stays in
//! the report repository until someone deletes it, since retracting it
//! would mean connecting on behalf of a site that opted out.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::privacy::bodies_for_fleet;
use crate::git::{Cache, GitAccess, GitError, is_url};
use crate::load::Fleet;
use crate::model::fleet::Reports;
use crate::model::values::SiteName;
use crate::store::{LedgerResult, SiteState, StoreError};

/// The branch reports go to when `reports:` names none.
pub const DEFAULT_BRANCH: &str = "status";

/// How many times [`publish`] fetches, commits and pushes before it gives
/// up on a branch that other hosts keep moving.
pub const MAX_ATTEMPTS: u32 = 8;

/// Why a report could not be built or published. Each names the report
/// repository and what failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A report names no valid site.
    #[error("status report for {site:?}: {message}")]
    Site {
        /// The site as given.
        site: String,
        /// What is wrong.
        message: String,
    },
    /// The branch name is not one git accepts.
    #[error(
        "{url}: {branch:?} is not a valid branch name for reports (hint: set `reports.branch` in fleet.yaml, such as `status`)"
    )]
    Branch {
        /// The report repository.
        url: String,
        /// The branch.
        branch: String,
    },
    /// A git operation failed.
    #[error("{url}: {what}: {}", .source.message())]
    Git {
        /// The report repository.
        url: String,
        /// What was being done.
        what: String,
        /// The error.
        source: git2::Error,
    },
    /// A file of the cache could not be made.
    #[error("{url}: the report cache {path} cannot be used: {source}")]
    Io {
        /// The report repository.
        url: String,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A local target is not a bare repository.
    #[error(
        "{url} is not a bare git repository, so reports cannot be pushed to it (hint: create it with `git init --bare`)"
    )]
    NotBare {
        /// The report repository.
        url: String,
    },
    /// The server refused the push for a reason other than a race.
    #[error("{url} refused the update of branch {branch}: {message}")]
    Rejected {
        /// The report repository.
        url: String,
        /// The branch.
        branch: String,
        /// The server's reason.
        message: String,
    },
    /// Every attempt lost a race with another host.
    #[error(
        "{url}: gave up after {attempts} attempts to update branch {branch}, which other hosts kept moving ({last}); the next run will try again"
    )]
    Contended {
        /// The report repository.
        url: String,
        /// The branch.
        branch: String,
        /// Attempts made.
        attempts: u32,
        /// The last reason.
        last: String,
    },
    /// A relative local target in a fleet read from git.
    #[error(
        "reports.git {url:?} is a relative path, but the fleet was read from git, so it has no directory to be relative to (hint: use an absolute path or a git URL)"
    )]
    Relative {
        /// The path as written.
        url: String,
    },
    /// The report repository could not be reached: the network, the
    /// server, a refused host key or credential (typed in `source`).
    #[error("{url}: {what}: {source}")]
    Transport {
        /// The report repository, as it may be shown.
        url: String,
        /// What was being done.
        what: String,
        /// Why.
        source: GitError,
    },
    /// The site's state could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReportError {
    /// The failed fetch or push this is, if it is one, for the daemon's
    /// per-repository failure counts.
    pub fn transport_failure(&self) -> Option<crate::load::FetchFailure> {
        match self {
            ReportError::Transport { url, source, .. } => Some(crate::load::FetchFailure {
                repo: url.clone(),
                kind: source.kind(),
            }),
            _ => None,
        }
    }
}

/// What the state dir knows about a site, as far as a report may say: the
/// input of `body`. (Not the `status` command's `observe::status::ReportInput`,
/// nor the daemon's per-site `watch::controller::SiteView`.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportInput {
    /// The installed release; `None` before adoption.
    pub version: Option<String>,
    /// Applied fixes, in order.
    pub fixes: Vec<String>,
    /// `passed`, `failed` or `skipped`; `None` before adoption.
    pub health: Option<String>,
    /// The last change's error, if it failed.
    pub error: Option<String>,
}

impl ReportInput {
    /// Reads `site`'s status from `state_dir` without scanning its files:
    /// version, fixes and health from the latest rollback point; when the
    /// last ledger record failed or was rolled back, its error (and, for a
    /// rollback after a failed check, `health: failed`: the point restored
    /// carries the health of the older change, not of the one that failed).
    pub fn read(state_dir: &Path, site: &str) -> Result<Self, ReportError> {
        let state = SiteState::new(state_dir, site);
        let mut status = ReportInput::default();
        let ledger = state.ledger().read()?;
        if let Some(points) = state.existing_points()?
            && let Some(n) = points.latest()?
        {
            let meta = points.meta(n)?;
            status.health = Some(
                meta.health(&crate::store::verdicts(&ledger))
                    .as_str()
                    .to_owned(),
            );
            status.version = Some(meta.version);
            status.fixes = meta.fixes;
        }
        if let Some(last) = ledger
            .iter()
            .rev()
            .find(|r| r.kind != crate::store::LedgerKind::Health)
        {
            match last.result {
                LedgerResult::Ok => {}
                LedgerResult::Failed => status.error = last.error.clone(),
                LedgerResult::RolledBack => {
                    status.error = last.error.clone();
                    if last.error.is_some() {
                        status.health = Some("failed".into());
                    }
                }
            }
        }
        Ok(status)
    }
}

/// Who commits reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committer {
    /// Author and committer name.
    pub name: String,
    /// Author and committer e-mail.
    pub email: String,
}

impl Default for Committer {
    /// `sitekeeper <sitekeeper@localhost>`: names no host or user (module doc).
    fn default() -> Self {
        Self {
            name: "sitekeeper".into(),
            email: "sitekeeper@localhost".into(),
        }
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The commit pushed; `None` when nothing changed or nothing was sent.
    pub commit: Option<String>,
    /// Sites whose report file that commit changed.
    pub changed: Vec<String>,
    /// Times the branch was fetched: 0 when nothing was to be sent (the
    /// repository was not contacted), more than 1 when a push lost a race
    /// with another host and was retried.
    pub attempts: u32,
}

/// The daemon's entry: publishes the reports of `fleet`'s opted-in sites
/// (those with an entry in `statuses`) to `fleet.yaml` `reports:`. `None`
/// when the fleet names no report repository. A relative local path in
/// `reports.git` is relative to the fleet repo, like catalog sources.
pub fn publish_for_fleet(
    fleet: &Fleet,
    state_dir: &Path,
    statuses: &BTreeMap<String, ReportInput>,
    access: &GitAccess,
) -> Result<Option<Published>, ReportError> {
    let Some(reports) = &fleet.config.reports else {
        return Ok(None);
    };
    let bodies = bodies_for_fleet(fleet, statuses);
    if bodies.is_empty() {
        // Before resolving anything about the target: no site opted in,
        // so nothing is looked at, let alone contacted.
        return Ok(Some(Published::default()));
    }
    let mut reports = reports.clone();
    if !is_url(&reports.git) && Path::new(&reports.git).is_relative() {
        let Some(dir) = fleet.source.dir_path() else {
            return Err(ReportError::Relative { url: reports.git });
        };
        reports.git = dir.join(&reports.git).display().to_string();
    }
    publish(&reports, &bodies, state_dir, &Committer::default(), access).map(Some)
}

/// Publishes `bodies` (site name, report: a
/// [`ReportBody`](super::privacy::ReportBody) from the privacy rules) to
/// `reports` as `status/<site>.json` on its branch, reached with `access`;
/// see the module doc. With no bodies it returns at once without touching
/// the cache or the network.
pub fn publish(
    reports: &Reports,
    bodies: &[(String, impl Serialize)],
    state_dir: &Path,
    by: &Committer,
    access: &GitAccess,
) -> Result<Published, ReportError> {
    if bodies.is_empty() {
        // Privacy: no site opted in, so the report repository must not
        // even learn that this host exists.
        return Ok(Published::default());
    }
    let url = reports.git.as_str();
    let branch = reports.branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(ReportError::Branch {
            url: url.to_owned(),
            branch: branch.to_owned(),
        });
    }
    let files = render(bodies)?;
    let cache = ReportCache::open(state_dir, url, branch, access)?;
    let target = Target::of(url);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let parent = cache.fetch(branch)?;
        let (tree, changed) = cache.build_tree(parent, &files)?;
        if changed.is_empty() {
            return Ok(Published {
                commit: None,
                changed,
                attempts: attempt,
            });
        }
        let commit = cache.commit(parent, tree, &changed, by)?;
        let pushed = match &target {
            Target::Local(path) => cache.push_local(path, branch, commit, parent),
            Target::Remote => cache.push_remote(branch, commit),
        };
        match pushed {
            Ok(()) => {
                // Remember the new tip so the next fetch negotiates from it.
                cache
                    .repo()
                    .reference(&tracking(branch), commit, true, "sitekeeper: pushed")
                    .map_err(cache.git("cannot record the pushed commit"))?;
                return Ok(Published {
                    commit: Some(commit.to_string()),
                    changed,
                    attempts: attempt,
                });
            }
            Err(Push::Moved(last)) if attempt >= MAX_ATTEMPTS => {
                return Err(ReportError::Contended {
                    url: url.to_owned(),
                    branch: branch.to_owned(),
                    attempts: attempt,
                    last,
                });
            }
            Err(Push::Moved(_)) => std::thread::sleep(backoff(attempt)),
            Err(Push::Failed(e)) => return Err(e),
        }
    }
}

/// A jittered, doubling pause: hosts that collided must not retry in
/// lockstep, or they collide again.
fn backoff(attempt: u32) -> std::time::Duration {
    let base = (20u64 << attempt.min(5)).min(640);
    std::time::Duration::from_millis(base / 2 + fastrand::u64(0..=base))
}

/// One report file: the site, its path in the repository and its bytes.
struct ReportFile {
    site: String,
    path: String,
    bytes: Vec<u8>,
}

/// Renders each body as `status/<site>.json`: pretty, keys sorted, with a
/// trailing newline, so the same status gives the same bytes (and blob) on
/// every host and run.
///
/// Nothing here sorts: a [`ReportBody`](super::privacy::ReportBody)
/// declares its fields in sorted order, and a `serde_json::Value` (a caller
/// may pass one) keeps object keys in a `BTreeMap` as long as serde_json's
/// `preserve_order` feature is off in the build, which the unit test
/// `rendering_sorts_keys_and_ends_with_a_newline` checks.
fn render(bodies: &[(String, impl Serialize)]) -> Result<Vec<ReportFile>, ReportError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (site, body) in bodies {
        // The name becomes a path: only a valid site name may.
        let name = SiteName::from_str(site).map_err(|message| ReportError::Site {
            site: site.clone(),
            message,
        })?;
        if !seen.insert(name.to_string()) {
            return Err(ReportError::Site {
                site: site.clone(),
                message: "given twice in one publish".into(),
            });
        }
        let mut text = serde_json::to_string_pretty(body).map_err(|e| ReportError::Site {
            site: site.clone(),
            message: e.to_string(),
        })?;
        text.push('\n');
        out.push(ReportFile {
            site: name.to_string(),
            path: format!("status/{name}.json"),
            bytes: text.into_bytes(),
        });
    }
    Ok(out)
}

fn tracking(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

/// How the branch is updated.
enum Target {
    /// A bare repository on this machine (a path or `file://`).
    Local(PathBuf),
    /// Anything else, through `Remote::push`.
    Remote,
}

impl Target {
    fn of(url: &str) -> Self {
        if let Some(path) = url.strip_prefix("file://") {
            Target::Local(PathBuf::from(path))
        } else if is_url(url) {
            Target::Remote
        } else {
            Target::Local(PathBuf::from(url))
        }
    }
}

/// Why a push did not land.
enum Push {
    /// The branch moved since the fetch: fetch again and retry.
    Moved(String),
    /// Anything else.
    Failed(ReportError),
}

/// The bare clone of the report repository, held under its lock (the
/// shared [`crate::git::Cache`]), and the steps of one publish on it.
struct ReportCache {
    cache: Cache,
}

impl ReportCache {
    fn open(
        state_dir: &Path,
        url: &str,
        branch: &str,
        access: &GitAccess,
    ) -> Result<Self, ReportError> {
        let cache = Cache::open(
            &crate::store::StateDir::new(state_dir).report_cache(),
            url,
            access,
        )
        .map_err(|e| cache_error(url, branch, e))?;
        Ok(Self { cache })
    }

    fn repo(&self) -> &git2::Repository {
        self.cache.repo()
    }

    fn url(&self) -> &str {
        self.cache.url()
    }

    fn git(&self, what: &str) -> impl FnOnce(git2::Error) -> ReportError + use<> {
        let (url, what) = (self.url().to_owned(), what.to_owned());
        move |source| ReportError::Git { url, what, source }
    }

    /// Fetches `branch` into its tracking ref; its tip, or `None` when the
    /// report repository has no such branch yet.
    fn fetch(&self, branch: &str) -> Result<Option<git2::Oid>, ReportError> {
        let head = format!("refs/heads/{branch}");
        let advertised = self
            .cache
            .fetch(&[format!("+{head}:{}", tracking(branch))])
            .map_err(|e| cache_error(self.url(), branch, e))?;
        let tip = advertised
            .into_iter()
            .find(|(name, _)| *name == head)
            .map(|(_, oid)| oid);
        match tip {
            Some(oid) => {
                self.repo()
                    .reference(&tracking(branch), oid, true, "sitekeeper: fetched")
                    .map_err(self.git("cannot record the fetched branch"))?;
            }
            None => {
                // The branch is gone (or never was): start it afresh rather
                // than build on a tip nobody else can see.
                if let Ok(mut stale) = self.repo().find_reference(&tracking(branch)) {
                    stale
                        .delete()
                        .map_err(self.git("cannot forget the old branch"))?;
                }
            }
        }
        Ok(tip)
    }

    /// The tree of `parent` with `files` written in, and the sites whose
    /// file changed (none: the tree is `parent`'s, and no commit is due).
    fn build_tree(
        &self,
        parent: Option<git2::Oid>,
        files: &[ReportFile],
    ) -> Result<(git2::Oid, Vec<String>), ReportError> {
        let base = match parent {
            Some(p) => self
                .repo()
                .find_commit(p)
                .and_then(|c| c.tree())
                .map_err(self.git("cannot read the branch tip"))?,
            None => {
                let empty = self
                    .repo()
                    .treebuilder(None)
                    .and_then(|b| b.write())
                    .map_err(self.git("cannot write a tree"))?;
                self.repo()
                    .find_tree(empty)
                    .map_err(self.git("cannot read a tree"))?
            }
        };
        let mut update = git2::build::TreeUpdateBuilder::new();
        let mut changed = Vec::new();
        for file in files {
            let blob = self
                .repo()
                .blob(&file.bytes)
                .map_err(self.git("cannot write a report"))?;
            let same = base
                .get_path(Path::new(&file.path))
                .is_ok_and(|e| e.id() == blob && e.filemode() == 0o100644);
            if !same {
                update.upsert(file.path.as_str(), blob, git2::FileMode::Blob);
                changed.push(file.site.clone());
            }
        }
        if changed.is_empty() {
            return Ok((base.id(), changed));
        }
        let tree = update
            .create_updated(self.repo(), &base)
            .map_err(self.git("cannot write a tree"))?;
        Ok((tree, changed))
    }

    fn commit(
        &self,
        parent: Option<git2::Oid>,
        tree: git2::Oid,
        changed: &[String],
        by: &Committer,
    ) -> Result<git2::Oid, ReportError> {
        let sig = git2::Signature::now(&by.name, &by.email)
            .map_err(self.git("the committer name is not valid"))?;
        let tree = self
            .repo()
            .find_tree(tree)
            .map_err(self.git("cannot read a tree"))?;
        let parents = parent
            .map(|p| self.repo().find_commit(p))
            .transpose()
            .map_err(self.git("cannot read the branch tip"))?;
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        let message = if changed.len() <= 5 {
            format!("status: {}\n", changed.join(", "))
        } else {
            format!(
                "status: {} sites\n\n{}\n",
                changed.len(),
                changed.join("\n")
            )
        };
        self.repo()
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .map_err(self.git("cannot commit the reports"))
    }

    /// Copies the new objects into the bare repository at `path` and moves
    /// `branch` from `expected` to `commit` only if it is still there.
    fn push_local(
        &self,
        path: &Path,
        branch: &str,
        commit: git2::Oid,
        expected: Option<git2::Oid>,
    ) -> Result<(), Push> {
        let fail = |what: &str| {
            let f = self.git(what);
            move |e| Push::Failed(f(e))
        };
        let target = git2::Repository::open(path).map_err(fail("cannot open the repository"))?;
        if !target.is_bare() {
            return Err(Push::Failed(ReportError::NotBare {
                url: self.url().to_owned(),
            }));
        }
        copy_objects(self.repo(), &target, commit).map_err(fail("cannot copy the commit"))?;
        let name = format!("refs/heads/{branch}");
        let message = "sitekeeper: status reports";
        let updated = match expected {
            Some(old) => target.reference_matching(&name, commit, true, old, message),
            None => target.reference(&name, commit, false, message),
        };
        match updated {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code(),
                    git2::ErrorCode::Modified | git2::ErrorCode::Exists | git2::ErrorCode::Locked
                ) =>
            {
                Err(Push::Moved(e.message().to_owned()))
            }
            Err(e) => Err(fail(&format!("cannot update branch {branch}"))(e)),
        }
    }

    /// Pushes `commit` to `branch` with `Remote::push`, never forced.
    fn push_remote(&self, branch: &str, commit: git2::Oid) -> Result<(), Push> {
        let fail = |what: &str| {
            let f = self.git(what);
            move |e| Push::Failed(f(e))
        };
        let local = format!("refs/heads/{branch}");
        self.repo()
            .reference(&local, commit, true, "sitekeeper: to push")
            .map_err(fail("cannot prepare the push"))?;
        let mut remote = self
            .repo()
            .remote_anonymous(self.url())
            .map_err(fail("not a git URL"))?;
        let rejected: RefCell<Option<String>> = RefCell::new(None);
        let result = {
            let mut cbs = self.cache.callbacks();
            // A server refusal arrives here, not as an error of push().
            cbs.push_update_reference(|_, status| {
                if let Some(message) = status {
                    *rejected.borrow_mut() = Some(message.to_owned());
                }
                Ok(())
            });
            let mut options = git2::PushOptions::new();
            options.remote_callbacks(cbs);
            remote.push(&[format!("{local}:{local}")], Some(&mut options))
        };
        match result {
            // libgit2 checks before sending: the branch advertised is not
            // an ancestor of ours, i.e. someone pushed since our fetch.
            Err(e) if e.code() == git2::ErrorCode::NotFastForward => {
                Err(Push::Moved(e.message().to_owned()))
            }
            Err(e) => Err(Push::Failed(ReportError::Transport {
                url: crate::git::shown_url(self.url()),
                what: format!("cannot push branch {branch}"),
                source: self.cache.transport_error(e),
            })),
            Ok(()) => match rejected.into_inner() {
                None => Ok(()),
                Some(message) if lost_race(&message) => Err(Push::Moved(message)),
                Some(message) => Err(Push::Failed(ReportError::Rejected {
                    url: self.url().to_owned(),
                    branch: branch.to_owned(),
                    message,
                })),
            },
        }
    }
}

/// Whether a server's refusal means the branch moved under the push (so a
/// fresh fetch can fix it), as git's receive-pack and common hosts word it.
fn lost_race(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "non-fast-forward",
        "fetch first",
        "failed to update ref",
        "cannot lock ref",
        "failed to lock",
        "stale info",
        "does not match",
        "already exists",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// Writes into `to` the objects of `commit` that it lacks. A tree `to`
/// already has is skipped whole: git repositories hold the objects a tree
/// names (and the parent came from `to`, so it is there).
fn copy_objects(
    from: &git2::Repository,
    to: &git2::Repository,
    commit: git2::Oid,
) -> Result<(), git2::Error> {
    fn copy(src: &git2::Odb, dst: &git2::Odb, oid: git2::Oid) -> Result<(), git2::Error> {
        if !dst.exists(oid) {
            let object = src.read(oid)?;
            dst.write(object.kind(), object.data())?;
        }
        Ok(())
    }
    fn tree(
        repo: &git2::Repository,
        src: &git2::Odb,
        dst: &git2::Odb,
        oid: git2::Oid,
    ) -> Result<(), git2::Error> {
        if dst.exists(oid) {
            return Ok(());
        }
        for entry in repo.find_tree(oid)?.iter() {
            match entry.kind() {
                Some(git2::ObjectType::Tree) => tree(repo, src, dst, entry.id())?,
                Some(git2::ObjectType::Blob) => copy(src, dst, entry.id())?,
                _ => {}
            }
        }
        // The tree last, so that it never exists there without its entries.
        copy(src, dst, oid)
    }
    let (src, dst) = (from.odb()?, to.odb()?);
    tree(from, &src, &dst, from.find_commit(commit)?.tree_id())?;
    copy(&src, &dst, commit)
}

/// A failure of the shared git cache, worded for the report repository.
fn cache_error(url: &str, branch: &str, e: GitError) -> ReportError {
    let git = |what: String, source| ReportError::Git {
        url: url.to_owned(),
        what,
        source,
    };
    match e {
        GitError::Io { path, source } => ReportError::Io {
            url: url.to_owned(),
            path,
            source,
        },
        GitError::Init { path, source } => git(
            format!("cannot create the report cache {}", path.display()),
            source,
        ),
        GitError::Url(source) => git("not a git URL".to_owned(), source),
        GitError::List(source) => git("cannot list the branches".to_owned(), source),
        transport @ (GitError::HostKey(_)
        | GitError::Auth { .. }
        | GitError::Certificate(_)
        | GitError::Timeout(_)
        | GitError::Fetch(_)) => ReportError::Transport {
            url: crate::git::shown_url(url),
            what: format!("cannot fetch branch {branch}"),
            source: transport,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn rendering_sorts_keys_and_ends_with_a_newline() {
        let files = render(&[(
            "shop".into(),
            serde_json::json!({"version": "1", "site": "shop", "fixes": [], "health": null}),
        )])
        .unwrap();
        let text = String::from_utf8(files[0].bytes.clone()).unwrap();
        assert_eq!(
            text,
            "{\n  \"fixes\": [],\n  \"health\": null,\n  \"site\": \"shop\",\n  \"version\": \"1\"\n}\n"
        );
        assert_eq!(files[0].path, "status/shop.json");
    }

    #[test]
    fn a_site_name_cannot_become_a_path_outside_status() {
        let err = render(&[("../x".into(), Value::Null)]).err().unwrap();
        assert!(err.to_string().contains("not a valid site name"), "{err}");
    }

    #[test]
    fn races_are_told_from_refusals() {
        assert!(lost_race("[rejected] (non-fast-forward)"));
        assert!(lost_race("failed to update ref"));
        assert!(!lost_race("pre-receive hook declined"));
        assert!(!lost_race("protected branch hook declined"));
    }
}
