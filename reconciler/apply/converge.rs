//! `apply` and `rollback` for one site: lock, recover, plan, verify, then
//! the transaction; afterwards hooks and the health check, with an
//! automatic rollback and a quarantine when they fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::fsops::Steps;
use super::hooks::{HookEnv, run as run_hook};
use super::swap::{self, Swap};
use super::txn::{self, Change, FileRef, Journal, TxnError};
use crate::confined::Root;
use crate::inventory::cache::StatCache;
use crate::load::{Fleet, Loaded};
use crate::model::Site;
use crate::model::hash::BlobId;
use crate::model::values::{Timestamp, Version};
use crate::model::words::Layout;
use crate::observe::SiteContext;
use crate::plan::{ActionKind, HeldCode, Plan, SitePlan, fix_checksum};
use crate::store::{
    By, Health, LedgerKind, LedgerResult, PointKind, PointMeta, PointResult, Points, Record,
    SiteState, StoreError, Verdicts,
};

/// How `apply` or `rollback` ended for a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do.
    Unchanged,
    /// Changed; the new point.
    Changed {
        /// The point.
        point: u64,
        /// Files changed.
        files: usize,
        /// The version now.
        version: String,
    },
}

pub use super::error::{ApplyError, ErrorClass};

impl From<TxnError> for ApplyError {
    fn from(e: TxnError) -> Self {
        let full = super::error::is_disk_full(&e);
        ApplyError::failed("", e, full)
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        if super::error::is_disk_full(&e) {
            ApplyError::StorageFull {
                site: String::new(),
                detail: e.to_string(),
            }
        } else {
            ApplyError::Internal {
                site: String::new(),
                detail: e.to_string(),
            }
        }
    }
}

impl ApplyError {
    /// Names `site` in an error made where the site was not at hand
    /// (the `From` conversions above).
    fn at(mut self, name: &str) -> Self {
        let site = match &mut self {
            ApplyError::LockBusy { site }
            | ApplyError::SerializeBusy { site, .. }
            | ApplyError::Stopping { site }
            | ApplyError::NotAdopted { site }
            | ApplyError::StalePlan { site, .. }
            | ApplyError::ApprovalMissing { site, .. }
            | ApplyError::Untrusted { site, .. }
            | ApplyError::DriftBlocked { site, .. }
            | ApplyError::Preflight { site, .. }
            | ApplyError::NoPoint { site, .. }
            | ApplyError::RolledBack { site, .. }
            | ApplyError::StorageFull { site, .. }
            | ApplyError::Failed { site, .. }
            | ApplyError::Invalid { site, .. }
            | ApplyError::Internal { site, .. } => site,
        };
        if site.is_empty() {
            *site = name.to_owned();
        }
        self
    }
}

/// A change failed (and was undone, or never started): `detail` says what.
fn failed(site: &str, detail: impl std::fmt::Display) -> ApplyError {
    ApplyError::Failed {
        site: site.to_owned(),
        detail: detail.to_string(),
    }
}

/// Options of one run.
pub struct Options<'a> {
    /// `cli`, `watch` or `webhook`.
    pub via: &'a str,
    /// Wait for the lock (else refuse when it is held).
    pub wait: bool,
    /// `apply --plan FILE`: the saved plan to apply exactly.
    pub saved: Option<&'a Plan>,
    /// `apply --release V`: lifts that release's quarantine.
    pub forced: Option<&'a Version>,
    /// `apply --fix ID`: lifts that fix's quarantine.
    pub forced_fix: Option<&'a str>,
    /// Now.
    pub now: jiff::Timestamp,
    /// The state dir.
    pub state_dir: &'a Path,
    /// Draws staging and replacing (a bar on a terminal).
    pub progress: Option<&'a dyn crate::inventory::Progress>,
    /// Set by the daemon when it stops: a change in flight is undone.
    pub cancel: Option<&'a std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Writes `status.json` (SPEC §5): the current phase and progress, for
/// status pages. Only a report: failing to write it never fails a change.
fn report(
    state: &SiteState,
    site: &str,
    phase: &str,
    percent: u8,
    plan: Option<&SitePlan>,
    message: Option<&str>,
) {
    let body = serde_json::json!({
        "site": site,
        "phase": phase,
        "percent": percent,
        "from_version": plan.and_then(|p| p.from_version.clone()),
        "to_version": plan.and_then(|p| p.to_version.clone()),
        "updated": jiff::Timestamp::now().to_string(),
        "message": message,
    });
    let path = state.dir().join("status.json");
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(state.dir())?;
        std::io::Write::write_all(
            &mut tmp,
            serde_json::to_string_pretty(&body)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    let _ = write();
}

/// Takes the host-wide lock `name` (`serialize:` of a release), reporting
/// `waiting` while another site holds it.
fn serialize_lock(
    opts: &Options<'_>,
    state: &SiteState,
    site: &str,
    name: &str,
    plan: &SitePlan,
) -> Result<crate::store::SiteLock, ApplyError> {
    let dir = opts.state_dir.join("locks");
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed(site, format_args!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{name}.lock"));
    if let Some(lock) = crate::store::SiteLock::acquire(&path, false)? {
        return Ok(lock);
    }
    if !opts.wait {
        return Err(ApplyError::SerializeBusy {
            site: site.to_owned(),
            name: name.to_owned(),
        });
    }
    report(
        state,
        site,
        "waiting",
        10,
        Some(plan),
        Some(&format!("queued behind another site for {name:?}")),
    );
    crate::store::SiteLock::acquire(&path, true)?
        .ok_or_else(|| failed(site, format_args!("the lock {name:?} could not be taken")))
}

/// A site locked, recovered and ready.
struct Locked {
    /// The site's files: for the `symlink` layout, the release directory
    /// the link named when it was opened (see [`Locked::reopen`]).
    root: Root,
    root_path: std::path::PathBuf,
    layout: Layout,
    /// `keep_rollback_points`.
    keep: u32,
    site: String,
    state: SiteState,
    _lock: crate::store::SiteLock,
    steps: Steps,
}

impl Locked {
    /// Opens the root again, after a swap pointed the link elsewhere.
    fn reopen(&mut self) -> Result<(), ApplyError> {
        self.root = Root::open(&self.root_path).map_err(|e| {
            failed(
                &self.site,
                format_args!("{}: {e}", self.root_path.display()),
            )
        })?;
        Ok(())
    }

    /// For the `symlink` layout, the swap a change named `version` makes.
    fn swap(&self, version: &str, txn: &str) -> Result<Option<Swap>, ApplyError> {
        match self.layout {
            Layout::InPlace => Ok(None),
            Layout::Symlink => Swap::new(&self.root_path, &self.site, version, txn)
                .map(Some)
                // Found before anything is written: the root is not what
                // the layout needs, which an operator must put right.
                .map_err(|e| ApplyError::Preflight {
                    site: self.site.clone(),
                    checks: vec![crate::plan::PreflightFailure {
                        check: "root".into(),
                        reason: e.to_string(),
                        release: None,
                    }],
                }),
        }
    }

    /// After a change: drops the points beyond retention, then the
    /// release directories no retained point names.
    fn retain(&self, points: &Points) -> Result<(), ApplyError> {
        let verdicts = crate::store::verdicts(&self.state.ledger().read()?);
        prune(points, self.keep, &verdicts)?;
        if self.layout == Layout::Symlink {
            swap::prune(&self.root_path, &self.site, points)?;
        }
        Ok(())
    }
}

fn lock_and_recover(
    fleet: &Fleet,
    site: &Loaded<Site>,
    opts: &Options<'_>,
) -> Result<Locked, ApplyError> {
    let name = site.site.as_str();
    // An untrusted fleet may have redirected the site's root or state:
    // touch neither, not even to recover, until a trusted commit arrives.
    if let Some(reason) = fleet.trust.untrusted() {
        return Err(ApplyError::Untrusted {
            site: name.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let root_path = fleet.site_root(site).ok_or_else(|| ApplyError::Invalid {
        site: name.to_owned(),
        detail: "its root is relative, but the fleet was read from git".into(),
    })?;
    let state = SiteState::new(opts.state_dir, name);
    let lock = state.lock(opts.wait)?.ok_or_else(|| ApplyError::LockBusy {
        site: name.to_owned(),
    })?;
    let root = Root::open(&root_path).map_err(|e| {
        failed(
            name,
            format_args!("its root {} cannot be opened: {e}", root_path.display()),
        )
    })?;
    let effective = crate::policy::resolve(fleet, site).map_err(|d| ApplyError::Invalid {
        site: name.to_owned(),
        detail: d.to_string(),
    })?;
    let layout = effective.layout.value;
    let steps = Steps::from_env().cancellable(opts.cancel.cloned());
    crate::cachefile::remove_temps(state.dir()).map_err(|e| {
        failed(
            name,
            format_args!(
                "removing what a crash left in {}: {e}",
                state.dir().display()
            ),
        )
    })?;
    txn::recover(
        &root,
        &state,
        &steps,
        By::here(opts.via),
        Timestamp(opts.now),
    )
    .map_err(|e| {
        let full = super::error::is_disk_full(&e);
        ApplyError::failed(
            name,
            format_args!("recovering an interrupted change failed: {e}"),
            full,
        )
    })?;
    // Recovery may have swapped the link: open the root as it is now.
    let root = if layout == Layout::Symlink {
        Root::open(&root_path)
            .map_err(|e| failed(name, format_args!("{}: {e}", root_path.display())))?
    } else {
        root
    };
    Ok(Locked {
        root,
        root_path,
        layout,
        keep: effective.keep_rollback_points.value,
        site: name.to_owned(),
        state,
        _lock: lock,
        steps,
    })
}

/// Recovers an interrupted change on `site`, if any, under its lock.
pub fn recover_site(
    fleet: &Fleet,
    site: &Loaded<Site>,
    opts: &Options<'_>,
) -> Result<(), ApplyError> {
    lock_and_recover(fleet, site, opts)
        .map(|_| ())
        .map_err(|e| e.at(site.site.as_str()))
}

/// New contents by blob, shared with the plan rather than copied.
type Contents = BTreeMap<BlobId, std::sync::Arc<crate::plan::FileData>>;

/// The final state of every path a plan touches, with its new content.
fn plan_changes(root: &Root, plan: &SitePlan) -> Result<(Vec<Change>, Contents), ApplyError> {
    let mut last: BTreeMap<
        &str,
        (
            Option<crate::model::hash::ContentHash>,
            Option<&std::sync::Arc<crate::plan::FileData>>,
        ),
    > = BTreeMap::new();
    for a in &plan.actions {
        for f in &a.files {
            let entry = last.entry(f.path.as_str()).or_insert((f.before, None));
            entry.1 = f.new.as_ref();
        }
    }
    let mut changes = Vec::new();
    let mut contents = BTreeMap::new();
    for (path, (before, new)) in last {
        // Re-verify: the file is still what the plan saw (one read gives
        // both the blob the journal records and the hash the plan saw).
        let (old, now_hash) = match txn::current_with_content(root, path)? {
            Some((file, bytes)) => (
                Some(file),
                Some(crate::model::hash::ContentHash::of(&bytes)),
            ),
            None => (None, None),
        };
        if now_hash != before {
            return Err(ApplyError::StalePlan {
                site: String::new(),
                detail: format!("{path} changed since the plan was made; plan again"),
            });
        }
        let new_ref = new.map(|d| {
            let blob = d.blob();
            contents.insert(blob, std::sync::Arc::clone(d));
            FileRef {
                blob,
                mode: d.mode,
                symlink: d.symlink,
            }
        });
        changes.push(Change {
            path: path.to_owned(),
            old,
            new: new_ref,
        });
    }
    Ok((changes, contents))
}

fn read(root: &Root, path: &str) -> Result<Vec<u8>, ApplyError> {
    let meta = root
        .metadata(path)
        .map_err(|e| failed("", format!("{path}: {e}")))?;
    if meta.kind == crate::confined::Kind::Symlink {
        return Ok(root
            .read_link(path)
            .map_err(|e| failed("", format!("{path}: {e}")))?
            .into_encoded_bytes());
    }
    let (mut f, _) = root
        .open_file(path)
        .map_err(|e| failed("", format!("{path}: {e}")))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut bytes)
        .map_err(|e| failed("", format!("{path}: {e}")))?;
    Ok(bytes)
}

/// Stores every old and new content in `points.git` before anything changes.
/// New contents the plan only names are read from the catalog one at a
/// time here, so memory stays bounded by the largest file.
fn store_blobs(
    root: &Root,
    points: &Points,
    changes: &[Change],
    contents: &Contents,
    catalog: &dyn crate::plan::Contents,
) -> Result<(), ApplyError> {
    for c in changes {
        if let Some(old) = c.old
            && !points.has_blob(old.blob)
        {
            points.write_blob(&read(root, &c.path)?)?;
        }
        if let Some(new) = c.new
            && !points.has_blob(new.blob)
        {
            let data = contents
                .get(&new.blob)
                .ok_or_else(|| failed("", format!("{}: new content missing", c.path)))?;
            let bytes = data
                .load(catalog)
                .map_err(|e| failed("", format!("{}: {e}", c.path)))?;
            points.write_blob(&bytes)?;
        }
    }
    // Recovery finishes or undoes the change from these blobs: the
    // transaction makes them durable, with its point, before its journal.
    Ok(())
}

/// Refuses a change that would not fit: staged contents on the site's file
/// system, and snapshots in the state dir.
/// A shortfall is a preflight failure (SPEC §6.7), named `space`.
fn check_space(locked: &Locked, contents: &Contents) -> Result<(), ApplyError> {
    let short = |reason: String| ApplyError::Preflight {
        site: locked.site.clone(),
        checks: vec![crate::plan::PreflightFailure {
            check: "space".into(),
            reason,
            release: None,
        }],
    };
    let failed = |e: std::io::Error| failed("", format!("free space: {e}"));
    // The symlink layout builds a whole new release directory.
    let (tree_bytes, tree_entries) = match locked.layout {
        Layout::InPlace => (0, 0),
        Layout::Symlink => swap::tree_size(&locked.root, "").map_err(failed)?,
    };
    let need = crate::plan::Need {
        contents: contents.values().map(|d| d.len() as u64).sum(),
        files: contents.len() as u64,
        tree_bytes,
        tree_entries,
    };
    let state = rustix::fs::statvfs(locked.state.dir()).map_err(|e| failed(e.into()))?;
    let space = crate::plan::Space {
        site_bytes: locked.root.free_bytes().map_err(failed)?,
        site_inodes: locked.root.free_inodes().map_err(failed)?,
        state_bytes: state.f_bavail.saturating_mul(state.f_frsize),
    };
    match crate::plan::shortfall(need, space) {
        Some(reason) => Err(short(reason)),
        None => Ok(()),
    }
}

fn record(
    kind: LedgerKind,
    id: Option<String>,
    plan: Option<&SitePlan>,
    files: Vec<String>,
    by: &By,
    now: jiff::Timestamp,
) -> Record {
    Record {
        seq: 0,
        at: Timestamp(now),
        kind,
        id,
        checksum: None,
        version_before: plan.and_then(|p| p.from_version.clone()),
        version_after: plan.and_then(|p| p.to_version.clone()),
        files,
        point: None,
        plan_digest: plan.map(|p| p.plan_digest.clone()),
        by: by.clone(),
        result: LedgerResult::Ok,
        error: None,
    }
}

/// Why a site's state could not be gathered, as an [`ApplyError`].
pub fn context_error(site: &str, e: crate::observe::ContextError) -> ApplyError {
    use crate::observe::ContextError as C;
    let (site, detail) = (site.to_owned(), e.to_string());
    match e {
        C::NoRoot(_) | C::NoCatalog(_) | C::Policy(_) => ApplyError::Invalid { site, detail },
        C::Store(s) if super::error::is_disk_full(&s) => ApplyError::StorageFull { site, detail },
        C::Store(_) => ApplyError::Internal { site, detail },
        C::Root { .. } | C::Scan(..) => ApplyError::Failed { site, detail },
    }
}

/// The error for a plan that `apply` must not carry out: held with a code
/// that refuses (SPEC §3 exit 3), each as its own kind.
pub fn refusal(site: &str, plan: &SitePlan) -> Option<ApplyError> {
    let site = site.to_owned();
    for h in &plan.held {
        let reason = h.reason.clone();
        match h.code {
            HeldCode::UntrustedSource => return Some(ApplyError::Untrusted { site, reason }),
            HeldCode::DriftBlocked => return Some(ApplyError::DriftBlocked { site, reason }),
            HeldCode::ApprovalRequired => {
                return Some(ApplyError::ApprovalMissing { site, reason });
            }
            HeldCode::Preflight => {
                return Some(ApplyError::Preflight {
                    site,
                    checks: plan.preflight_failures(),
                });
            }
            _ => {}
        }
    }
    None
}

/// Converges one site to its plan.
pub fn apply_site(
    fleet: &Fleet,
    site: &Loaded<Site>,
    opts: &Options<'_>,
) -> Result<Outcome, ApplyError> {
    converge_site(fleet, site, opts).map_err(|e| e.at(site.site.as_str()))
}

fn converge_site(
    fleet: &Fleet,
    site: &Loaded<Site>,
    opts: &Options<'_>,
) -> Result<Outcome, ApplyError> {
    let name = site.site.to_string();
    let mut locked = lock_and_recover(fleet, site, opts)?;
    let ctx = SiteContext::gather(fleet, site, opts.state_dir, None)
        .map_err(|e| context_error(&name, e))?;
    if !ctx.adopted() {
        return Err(ApplyError::NotAdopted { site: name });
    }
    let plan = ctx.plan_to_apply(opts.now, opts.forced, opts.forced_fix);
    if let Some(saved) = opts.saved {
        let Some(theirs) = saved.sites.iter().find(|s| s.site == name) else {
            return Err(ApplyError::StalePlan {
                site: name,
                detail: "the saved plan has no such site".into(),
            });
        };
        if theirs.plan_digest != plan.plan_digest || theirs.catalog_commit != plan.catalog_commit {
            return Err(ApplyError::StalePlan {
                site: name,
                detail: format!(
                    "the saved plan is stale (its digest {} is now {}): files or the catalog moved; plan again",
                    theirs.plan_digest, plan.plan_digest
                ),
            });
        }
    }
    if let Some(refused) = refusal(&name, &plan) {
        return Err(refused);
    }
    if !plan.has_changes() {
        report(&locked.state, &name, "unchanged", 100, Some(&plan), None);
        return Ok(Outcome::Unchanged);
    }
    report(&locked.state, &name, "planning", 5, Some(&plan), None);
    let serialize = ctx
        .catalog
        .releases
        .iter()
        .find(|r| {
            Some(r.version.to_string()) == plan.to_version && plan.to_version != plan.from_version
        })
        .and_then(|r| r.serialize.clone());
    let _serialized = match &serialize {
        Some(lock_name) => Some(serialize_lock(
            opts,
            &locked.state,
            &name,
            lock_name,
            &plan,
        )?),
        None => None,
    };
    report(&locked.state, &name, "staging", 20, Some(&plan), None);
    let (changes, contents) = plan_changes(&locked.root, &plan)?;
    check_space(&locked, &contents)?;
    let points = locked.state.points()?;
    store_blobs(&locked.root, &points, &changes, &contents, &ctx)?;
    let by = By::here(opts.via);
    let env_from = plan.from_version.clone().unwrap_or_default();
    let env_to = plan.to_version.clone().unwrap_or_default();
    let root_path = locked.root.path().to_owned();
    let hook_log = locked.state.dir().join("hooks.log");
    let env = HookEnv {
        site: &name,
        root: &root_path,
        from: &env_from,
        to: &env_to,
        log: &hook_log,
    };
    let hook_timeout = site.hooks.timeout.map_or(Duration::from_secs(60), |d| d.0);
    // The check before the change (SPEC §6.2): a check that already fails
    // is reported but cannot blame the change, so a broken site still
    // receives the fix that may repair it.
    let before = site
        .health
        .as_ref()
        .map(|check| super::health::run(check, &env));

    // The state before the change is recorded first, so a rollback restores
    // it: local changes to tracked files, and files the change touches that
    // no point tracks yet (a theme override a fix lands on).
    // The last point's file list was read when the site was gathered.
    let tracked = ctx
        .installed
        .as_ref()
        .filter(|_| ctx.point.is_some())
        .map(|i| &i.snapshot);
    let untracked: Vec<String> = changes
        .iter()
        .filter(|c| c.old.is_some() && !tracked.is_some_and(|t| t.contains_key(&c.path)))
        .map(|c| c.path.clone())
        .collect();
    let mut base = ctx.point;
    if !plan.drift.is_empty() || !untracked.is_empty() {
        base = Some(record_prestate(&locked, &points, &ctx, &untracked, opts)?);
    }

    let release = ctx.catalog.releases.iter().find(|r| {
        Some(r.version.to_string()) == plan.to_version && plan.to_version != plan.from_version
    });
    let allow_release_hooks = ctx.effective.allow_release_hooks.value;
    let mut pre: Vec<&crate::model::values::Command> = site.hooks.pre_apply.iter().collect();
    let mut post: Vec<&crate::model::values::Command> = Vec::new();
    if allow_release_hooks && let Some(r) = release {
        pre.extend(r.hooks.pre_apply.iter());
        post.extend(r.hooks.post_apply.iter());
    }
    post.extend(site.hooks.post_apply.iter());
    for cmd in &pre {
        run_hook(&cmd.0, &env, hook_timeout)
            .map_err(|e| failed(&name, format!("pre_apply hook: {e}; nothing was changed")))?;
    }

    let fixes_now: Vec<String> = {
        let mut f: Vec<String> = ctx
            .installed
            .as_ref()
            .map(|i| i.fixes.keys().cloned().collect())
            .unwrap_or_default();
        if plan.to_version != plan.from_version {
            f.clear();
        }
        for a in &plan.actions {
            if a.kind == ActionKind::Fix && !f.contains(&a.id) {
                f.push(a.id.clone());
            }
        }
        f
    };
    let mut records = Vec::new();
    for a in &plan.actions {
        let files: Vec<String> = a.files.iter().map(|f| f.path.clone()).collect();
        let mut r = match a.kind {
            ActionKind::Upgrade => record(
                LedgerKind::Upgrade,
                Some(a.id.clone()),
                Some(&plan),
                files,
                &by,
                opts.now,
            ),
            ActionKind::Fix | ActionKind::RemoveFix => record(
                LedgerKind::Fix,
                Some(a.id.clone()),
                Some(&plan),
                files,
                &by,
                opts.now,
            ),
            ActionKind::RevertDrift => record(
                LedgerKind::DriftRevert,
                None,
                Some(&plan),
                files,
                &by,
                opts.now,
            ),
        };
        if a.kind == ActionKind::Fix {
            r.checksum = ctx.fixes_by_id(&a.id).map(fix_checksum);
        }
        records.push(r);
    }
    let created_dirs = txn::dirs_to_create(&locked.root, &changes);
    let id = txn_id(opts.now);
    let swap = locked.swap(plan.to_version.as_deref().unwrap_or_default(), &id)?;
    let journal = Journal {
        id,
        base_point: base,
        created_dirs,
        changes,
        meta: PointMeta {
            point: 0,
            kind: PointKind::Apply,
            at: Timestamp(opts.now),
            version: plan.to_version.clone().unwrap_or_default(),
            fixes: fixes_now,
            plan_digest: Some(plan.plan_digest.clone()),
            catalog_commit: plan.catalog_commit.clone(),
            legacy_health: None,
            result: PointResult::Ok,
            modes: BTreeMap::new(),
            txn: None,
            release_dir: swap
                .as_ref()
                .and_then(|s| s.new_name().ok().map(str::to_owned)),
        },
        records,
        swap,
    };
    report(&locked.state, &name, "replacing", 50, Some(&plan), None);
    let point = execute_or_undo(
        opts.progress,
        &locked,
        &points,
        &locked.steps,
        &journal,
        &by,
        opts.now,
    )
    .inspect_err(|e| {
        report(
            &locked.state,
            &name,
            "failed",
            100,
            Some(&plan),
            Some(&e.to_string()),
        );
    })?;
    if locked.layout == Layout::Symlink {
        locked.reopen()?;
    }
    report(&locked.state, &name, "checking", 90, Some(&plan), None);

    // After the change: the owner's and the release's hooks, then health.
    let mut failure = None;
    for cmd in &post {
        if let Err(e) = run_hook(&cmd.0, &env, hook_timeout) {
            failure = Some(format!("post_apply hook: {e}"));
            break;
        }
    }
    // The verdict on the point, recorded only now that it is known: only a
    // check that passed before the change can blame it (SPEC §6.2).
    let verdict = match (&failure, &site.health, &before) {
        (Some(reason), _, _) => Some(Verdict::Blamed(reason.clone())),
        (None, Some(check), Some(before)) => {
            Some(match (before, super::health::run(check, &env)) {
                (_, Ok(())) => Verdict::Passed,
                (Ok(()), Err(e)) => Verdict::Blamed(format!("health check: {e}")),
                (Err(was), Err(e)) => Verdict::NotBlamed(format!(
                    "health check: {e}; it failed before the change too ({was}), so the change is kept"
                )),
            })
        }
        _ => None,
    };
    if let Some(v) = &verdict {
        locked
            .state
            .ledger()
            .append(v.record(point, Some(&plan), &by, opts.now))?;
    }
    if let Some(Verdict::NotBlamed(reason)) = &verdict {
        tracing::warn!(site = %name, %reason, "the site is unhealthy, as it was before the change");
    }
    if let Some(Verdict::Blamed(reason)) = verdict {
        let to = base.ok_or_else(|| {
            failed(
                &name,
                format!("{reason}; there is no point to roll back to"),
            )
        })?;
        // Quarantined before the rollback, so that a crash during it can
        // never let the same change be tried again by itself.
        let quarantined = quarantine_plan(&ctx, &locked.state, &plan, &reason, opts.now)?;
        // Numbered on from the apply's steps, so a crash test reaches them.
        let undo = locked.steps.undoing();
        let (rolled, _, _) = rollback_to(
            &mut locked,
            &points,
            to,
            None,
            &undo,
            opts,
            &by,
            Some(&reason),
        )?;
        report(
            &locked.state,
            &name,
            "rolled_back",
            100,
            Some(&plan),
            Some(&reason),
        );
        return Err(ApplyError::RolledBack {
            site: name,
            reason,
            point: rolled,
            quarantined,
        });
    }
    txn::finish(&locked.root, &locked.state, &locked.steps)?;
    lift_quarantine(&ctx, &locked.state, &plan, opts)?;
    locked.retain(&points)?;
    report(&locked.state, &name, "done", 100, Some(&plan), None);
    let files = journal.changes.len();
    Ok(Outcome::Changed {
        point,
        files,
        version: plan.to_version.unwrap_or_default(),
    })
}

/// What the check after a change found.
enum Verdict {
    /// It passed.
    Passed,
    /// A hook, or a check that passed before, failed: the change is undone.
    Blamed(String),
    /// The check failed, but it failed before the change too.
    NotBlamed(String),
}

impl Verdict {
    /// The `health` ledger record of `point` (SPEC §5).
    fn record(&self, point: u64, plan: Option<&SitePlan>, by: &By, now: jiff::Timestamp) -> Record {
        let (word, result, error) = match self {
            Verdict::Passed => ("passed", LedgerResult::Ok, None),
            Verdict::Blamed(e) => ("failed", LedgerResult::RolledBack, Some(e.clone())),
            Verdict::NotBlamed(e) => ("failed", LedgerResult::Failed, Some(e.clone())),
        };
        let mut r = record(
            LedgerKind::Health,
            Some(word.to_owned()),
            plan,
            Vec::new(),
            by,
            now,
        );
        r.point = Some(point);
        r.result = result;
        r.error = error;
        r
    }
}

/// Quarantines what a failed change carried (SPEC §6.2): its release, and
/// each fix it applied, as the catalog has them now. Returns the items.
fn quarantine_plan(
    ctx: &SiteContext<'_>,
    state: &SiteState,
    plan: &SitePlan,
    reason: &str,
    now: jiff::Timestamp,
) -> Result<Vec<String>, ApplyError> {
    let mut quarantine = ctx.quarantine.clone();
    let at = Timestamp(now);
    let mut items = Vec::new();
    for a in &plan.actions {
        match a.kind {
            ActionKind::Upgrade => {
                quarantine.add_release(&a.id, at, reason);
                items.push(format!("release {}", a.id));
            }
            ActionKind::Fix => {
                if let Some(fix) = ctx.fixes_by_id(&a.id) {
                    quarantine.add_fix(&a.id, &fix_checksum(fix), at, reason);
                    items.push(format!("fix {}", a.id));
                }
            }
            ActionKind::RevertDrift | ActionKind::RemoveFix => {}
        }
    }
    if quarantine != ctx.quarantine {
        quarantine.write(state)?;
    }
    Ok(items)
}

/// After a change that succeeded: an operator's `--release V` or
/// `--fix ID` lifted that item's quarantine for good.
fn lift_quarantine(
    ctx: &SiteContext<'_>,
    state: &SiteState,
    plan: &SitePlan,
    opts: &Options<'_>,
) -> Result<(), ApplyError> {
    let mut quarantine = ctx.quarantine.clone();
    for a in &plan.actions {
        let forced = match a.kind {
            ActionKind::Upgrade => opts.forced.is_some_and(|v| v.to_string() == a.id),
            ActionKind::Fix => opts.forced_fix == Some(a.id.as_str()),
            _ => false,
        };
        if forced {
            match a.kind {
                ActionKind::Upgrade => quarantine.lift_release(&a.id),
                _ => quarantine.lift_fix(&a.id),
            };
        }
    }
    if quarantine != ctx.quarantine {
        quarantine.write(state)?;
    }
    Ok(())
}

/// Runs the transaction; on failure undoes it at once (its steps numbered
/// on, so a test can fail the undo as well) and says how that went.
fn execute_or_undo(
    progress: Option<&dyn crate::inventory::Progress>,
    locked: &Locked,
    points: &Points,
    steps: &Steps,
    journal: &Journal,
    by: &By,
    now: jiff::Timestamp,
) -> Result<u64, ApplyError> {
    txn::execute(
        progress,
        &locked.root,
        &locked.state,
        points,
        steps,
        journal,
    )
    .map_err(|e| {
        let full = super::error::is_disk_full(&e);
        let detail = match txn::recover(
            &locked.root,
            &locked.state,
            &steps.undoing(),
            by.clone(),
            Timestamp(now),
        ) {
            Ok(_) => format!("{e}; the site was returned to its state before"),
            Err(u) => format!("{e}; undoing it also failed ({u}); the next command will retry"),
        };
        ApplyError::failed(&locked.site, detail, full)
    })
}

fn txn_id(now: jiff::Timestamp) -> String {
    format!("{}-{}", now.as_nanosecond(), std::process::id())
}

/// Commits the state before a change as a point (result `track`): tracked
/// files as they are now (drift included), plus `untracked` paths the
/// change is about to touch.
fn record_prestate(
    locked: &Locked,
    points: &Points,
    ctx: &SiteContext<'_>,
    untracked: &[String],
    opts: &Options<'_>,
) -> Result<u64, ApplyError> {
    let Some(base) = ctx.point else {
        return Err(failed("", "no point to record the state on"));
    };
    let snapshot = points.snapshot(base)?;
    let mut changes = Vec::new();
    for path in untracked {
        let now = txn::current(&locked.root, path)?;
        if let Some(n) = now
            && !points.has_blob(n.blob)
        {
            points.write_blob(&read(&locked.root, path)?)?;
        }
        changes.push(Change {
            path: path.clone(),
            old: None,
            new: now,
        });
    }
    for (path, entry) in &snapshot {
        let now = txn::current(&locked.root, path)?;
        let was = match entry {
            crate::store::SnapshotEntry::File { mode, blob } => FileRef {
                blob: *blob,
                mode: *mode,
                symlink: false,
            },
            crate::store::SnapshotEntry::Symlink { blob } => FileRef {
                blob: *blob,
                mode: 0o777,
                symlink: true,
            },
        };
        if now != Some(was) {
            if let Some(n) = now
                && !points.has_blob(n.blob)
            {
                points.write_blob(&read(&locked.root, path)?)?;
            }
            changes.push(Change {
                path: path.clone(),
                old: Some(was),
                new: now,
            });
        }
    }
    let mut meta = points.meta(base)?;
    meta.kind = PointKind::Apply;
    meta.at = Timestamp(opts.now);
    meta.plan_digest = None;
    meta.result = PointResult::Track;
    meta.legacy_health = None;
    meta.txn = None;
    let snapshot = txn::apply_to_snapshot(snapshot, &changes);
    Ok(points.commit(&snapshot, meta)?)
}

/// What returning the tracked files to point `to` changes, from what is on
/// disk now (the stat cache vouching for unchanged files).
fn rollback_changes(locked: &Locked, points: &Points, to: u64) -> Result<Vec<Change>, ApplyError> {
    let latest = points.latest()?.unwrap_or(to);
    let cache = StatCache::load(&locked.state.stat_cache_path());
    Ok(txn::diff(
        &locked.root,
        &cache,
        points,
        latest,
        &points.snapshot(latest)?,
        &points.snapshot(to)?,
    )?)
}

/// Returns the tracked files to point `to`, as a new point (kind
/// `rollback`); `error` marks an automatic rollback after a failed check.
/// `changes` are [`rollback_changes`] to `to`, when the caller has them.
/// Returns the new point, the files changed and the version restored.
#[allow(clippy::too_many_arguments)]
fn rollback_to(
    locked: &mut Locked,
    points: &Points,
    to: u64,
    changes: Option<Vec<Change>>,
    steps: &Steps,
    opts: &Options<'_>,
    by: &By,
    error: Option<&str>,
) -> Result<(u64, usize, String), ApplyError> {
    let latest = points.latest()?.unwrap_or(to);
    let changes = match changes {
        Some(changes) => changes,
        None => rollback_changes(locked, points, to)?,
    };
    for c in &changes {
        if let Some(old) = c.old
            && !points.has_blob(old.blob)
        {
            points.write_blob(&read(&locked.root, &c.path)?)?;
        }
    }
    // Undo after a crash puts these back: the transaction makes them
    // durable before its journal.
    let mut meta = points.meta(to)?;
    // Returning to older files does not return to an older catalog: the
    // newest catalog commit applied stays the mark that later catalog
    // commits must descend from (SPEC §7, no silent downgrade).
    if let Some(newest) = points.meta(latest)?.catalog_commit {
        meta.catalog_commit = Some(newest);
    }
    let version = meta.version.clone();
    meta.kind = PointKind::Rollback;
    meta.at = Timestamp(opts.now);
    meta.txn = None;
    meta.result = PointResult::Ok;
    meta.legacy_health = None;
    let id = txn_id(opts.now) + if error.is_some() { "-auto" } else { "" };
    let swap = locked.swap(&version, &id)?;
    meta.release_dir = swap
        .as_ref()
        .and_then(|s| s.new_name().ok().map(str::to_owned));
    let mut r = record(
        LedgerKind::Rollback,
        Some(format!("point {to}")),
        None,
        changes.iter().map(|c| c.path.clone()).collect(),
        by,
        opts.now,
    );
    r.version_before = points.meta(latest).ok().map(|m| m.version);
    r.version_after = Some(version.clone());
    if let Some(e) = error {
        r.result = LedgerResult::RolledBack;
        r.error = Some(e.to_owned());
    }
    let files = changes.len();
    let created_dirs = txn::dirs_to_create(&locked.root, &changes);
    let journal = Journal {
        id,
        base_point: Some(latest),
        changes,
        meta,
        records: vec![r],
        created_dirs,
        swap,
    };
    let point = execute_or_undo(opts.progress, locked, points, steps, &journal, by, opts.now)
        .map_err(|e| match e {
            ApplyError::StorageFull { site, detail } => ApplyError::StorageFull {
                site,
                detail: format!("rolling back to point {to}: {detail}"),
            },
            e => failed(&locked.site, format!("rolling back to point {to}: {e}")),
        })?;
    if locked.layout == Layout::Symlink {
        locked.reopen()?;
    }
    txn::finish(&locked.root, &locked.state, steps)?;
    locked.retain(points)?;
    Ok((point, files, version))
}

/// `rollback SITE [--to POINT]`.
pub fn rollback_site(
    fleet: &Fleet,
    site: &Loaded<Site>,
    to: Option<u64>,
    opts: &Options<'_>,
) -> Result<Outcome, ApplyError> {
    let name = site.site.to_string();
    roll_back(fleet, site, to, opts).map_err(|e| e.at(&name))
}

fn roll_back(
    fleet: &Fleet,
    site: &Loaded<Site>,
    to: Option<u64>,
    opts: &Options<'_>,
) -> Result<Outcome, ApplyError> {
    let name = site.site.to_string();
    let mut locked = lock_and_recover(fleet, site, opts)?;
    // The failpoints count this rollback's steps; the struct keeps none.
    let steps = std::mem::replace(&mut locked.steps, Steps::none());
    let no_point = |detail: String| ApplyError::NoPoint {
        site: name.clone(),
        detail,
    };
    let points = locked
        .state
        .existing_points()?
        .ok_or_else(|| no_point("it is not adopted, so it has no rollback points".into()))?;
    let list = points.list()?;
    let to = match to {
        Some(n) if list.contains(&n) => n,
        Some(n) => {
            return Err(no_point(format!(
                "it has no point {n} (hint: sitekeeper history {name})"
            )));
        }
        None => match list.len() {
            0 | 1 => {
                return Err(no_point(
                    "it has only its first point; there is nothing to roll back to".into(),
                ));
            }
            n => list[n - 2],
        },
    };
    let by = By::here(opts.via);
    let changes = rollback_changes(&locked, &points, to)?;
    if changes.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let from = points.meta(points.latest()?.unwrap_or(to))?.version;
    let (point, files, version) = rollback_to(
        &mut locked,
        &points,
        to,
        Some(changes),
        &steps,
        opts,
        &by,
        None,
    )?;
    // An operator's rollback is judged like any change, so `history`
    // says how the site is after it; a failing check does not undo it
    // (there is nothing better to return to), it is recorded.
    if let Some(check) = &site.health {
        let root_path = locked.root.path().to_owned();
        let log = locked.state.dir().join("hooks.log");
        let env = HookEnv {
            site: &name,
            root: &root_path,
            from: &from,
            to: &version,
            log: &log,
        };
        let verdict = match super::health::run(check, &env) {
            Ok(()) => Verdict::Passed,
            Err(e) => Verdict::NotBlamed(format!("health check after the rollback: {e}")),
        };
        let mut r = verdict.record(point, None, &by, opts.now);
        r.version_before = Some(from);
        r.version_after = Some(version.clone());
        locked.state.ledger().append(r)?;
    }
    Ok(Outcome::Changed {
        point,
        files,
        version,
    })
}

/// Drops the oldest point refs beyond `keep`, never the newest healthy one
/// (health `passed` or `skipped`, by the ledger's verdicts: SPEC §6.2).
fn prune(points: &Points, keep: u32, verdicts: &Verdicts) -> Result<(), ApplyError> {
    let list = points.list()?;
    if list.len() <= keep.max(1) as usize {
        return Ok(());
    }
    let newest_healthy = list.iter().rev().copied().find(|n| {
        points.meta(*n).is_ok_and(|m| {
            m.health(verdicts) != Health::Failed
                && matches!(m.result, PointResult::Ok | PointResult::Track)
        })
    });
    let excess = list.len() - keep.max(1) as usize;
    for n in list.into_iter().take(excess) {
        if Some(n) != newest_healthy {
            points.drop_point(n)?;
        }
    }
    Ok(())
}
