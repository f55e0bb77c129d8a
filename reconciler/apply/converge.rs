//! `apply` and `rollback` for one site: lock, recover, plan, verify, then
//! the transaction; afterwards hooks and the health check, with an
//! automatic rollback and a quarantine when they fail. This file holds the
//! entry points and a change's steps in order; the rooms of those steps
//! are below it: `locked` (lock, recovery, retention), `stage` (before
//! anything moves), `judge` (hooks, health, verdict), `journal`,
//! `quarantine` and `rollback`; `around` (what runs before and after a
//! change's transaction) and `batch` (many sites' transactions as group
//! commits, `apply` over several sites).

mod around;
mod batch;
mod journal;
mod judge;
mod locked;
mod quarantine;
mod request;
mod rollback;
mod settle;
mod stage;
mod written;

use std::path::Path;
use std::time::Duration;

use super::fsops::Steps;
use super::txn::{self, Change, Journal, TxnError};
use crate::load::{Fleet, Loaded};
use crate::model::values::{Command, Timestamp, Version};
use crate::model::{Release, Site};
use crate::observe::SiteContext;
use crate::plan::{HeldCode, Plan, SitePlan};
use crate::store::{
    By, ChangePhase, LedgerKind, LedgerResult, Points, Record, SiteState, StoreError,
};
use around::Begun;
pub use batch::apply_sites;
use judge::{Hooks, Verdict};
use locked::{Locked, lock_and_recover};
pub use quarantine::lift_item;
use quarantine::{lift_quarantine, quarantine_plan};
use request::unmet_request;
use rollback::{roll_back, rollback_to};
use settle::ChangeData;
use stage::{check_space, plan_changes, record_prestate, store_blobs};

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
        /// Something the operator should know about it (a rollback that
        /// left the data as it is).
        note: Option<String>,
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
            | ApplyError::FailureMarker { site, .. }
            | ApplyError::NotCarried { site, .. }
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
#[derive(Clone, Copy)]
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
    /// The command's start, which it plans against, and the time each
    /// record it writes is made.
    pub clock: crate::apply::clock::Clock,
    /// The state dir.
    pub state_dir: &'a Path,
    /// Draws staging and replacing (a bar on a terminal).
    pub progress: Option<&'a dyn crate::inventory::Progress>,
    /// Set by the daemon when it stops: a change in flight is undone.
    pub cancel: Option<&'a std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// Writes the site's [`crate::store::Progress`] (`status.json`, SPEC §5):
/// the current phase and percent, for status pages. Failing to write it
/// never fails a change.
fn progress(
    state: &SiteState,
    site: &str,
    phase: &str,
    percent: u8,
    plan: Option<&SitePlan>,
    message: Option<&str>,
) {
    let progress = crate::store::Progress {
        site: site.to_owned(),
        phase: phase.to_owned(),
        percent,
        from_version: plan.and_then(|p| p.from_version.clone()),
        to_version: plan.and_then(|p| p.to_version.clone()),
        updated: jiff::Timestamp::now(),
        message: message.map(str::to_owned),
    };
    let _ = progress.write(state);
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
    let state_dir = crate::store::StateDir::new(opts.state_dir);
    let dir = state_dir.locks();
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed(site, format_args!("{}: {e}", dir.display())))?;
    let path = state_dir.serialize_lock(name);
    if let Some(lock) = crate::store::SiteLock::acquire(&path, false)? {
        return Ok(lock);
    }
    if !opts.wait {
        return Err(ApplyError::SerializeBusy {
            site: site.to_owned(),
            name: name.to_owned(),
        });
    }
    progress(
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
            HeldCode::FailureMarker => return Some(ApplyError::FailureMarker { site, reason }),
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

/// Lock, recovery and the plan, checked against a saved one and against
/// the holds that refuse it (SPEC §6.7 among them); then the change.
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
    let plan = ctx.plan_to_apply(opts.clock.start(), opts.forced, opts.forced_fix);
    check_saved(opts.saved, &name, &plan)?;
    if let Some(refused) = refusal(&name, &plan).or_else(|| unmet_request(&name, &ctx, &plan, opts))
    {
        return Err(refused);
    }
    if !plan.has_changes() {
        progress(&locked.state, &name, "unchanged", 100, Some(&plan), None);
        return Ok(Outcome::Unchanged);
    }
    let outcome = Applying {
        name: &name,
        site,
        ctx: &ctx,
        plan: &plan,
        opts,
        by: By::here(opts.via),
    }
    .apply(&mut locked)?;
    // The index is rewritten after the plan and the gathered site (its
    // inventory, the releases' listings) are freed, so their memory and
    // the index's do not add up.
    drop(plan);
    drop(ctx);
    if let Some(written) = locked.written.take() {
        written::record(&locked, written);
    }
    Ok(outcome)
}

/// `apply --plan FILE` (SPEC §6.1, exact): the saved plan must still be
/// the plan, against the same catalog commit; anything that moved refuses.
fn check_saved(saved: Option<&Plan>, name: &str, plan: &SitePlan) -> Result<(), ApplyError> {
    let Some(saved) = saved else {
        return Ok(());
    };
    let Some(theirs) = saved.sites.iter().find(|s| s.site == name) else {
        return Err(ApplyError::StalePlan {
            site: name.to_owned(),
            detail: "the saved plan has no such site".into(),
        });
    };
    if theirs.plan_digest != plan.plan_digest || theirs.catalog_commit != plan.catalog_commit {
        return Err(ApplyError::StalePlan {
            site: name.to_owned(),
            detail: format!(
                "the saved plan is stale (its digest {} is now {}): files or the catalog moved; plan again",
                theirs.plan_digest, plan.plan_digest
            ),
        });
    }
    Ok(())
}

/// One change under way: what its steps share.
struct Applying<'a> {
    name: &'a str,
    site: &'a Loaded<Site>,
    ctx: &'a SiteContext<'a>,
    plan: &'a SitePlan,
    opts: &'a Options<'a>,
    by: By,
}

impl<'a> Applying<'a> {
    /// The change, in SPEC §6.6's order: stage it, judge the site before,
    /// record the state before, run the pre hooks, then the journaled
    /// transaction; judge the site after, and roll back a change the
    /// verdict blames, or finish one that stands.
    fn apply(&self, locked: &mut Locked) -> Result<Outcome, ApplyError> {
        let begun = self.begin(locked)?;
        let point = execute_or_undo(
            self.opts.progress,
            locked,
            &begun.points,
            &locked.steps,
            &begun.journal,
            &self.by,
            self.opts.clock.now(),
        );
        self.end(locked, begun, point, None)
    }

    /// A files transaction that failed: undone at once, or, when it failed
    /// after its commit step, finished by its recovery. A change that runs
    /// migrations is complete only once they have passed, so one finished
    /// that way is rolled back here as a failed change (its data was never
    /// touched). An undo that failed leaves the record to the next
    /// command's recovery.
    fn unfinished(&self, locked: &mut Locked, data: &ChangeData, e: ApplyError) -> ApplyError {
        if data.open.is_none() || txn::pending(&locked.state) {
            return e;
        }
        match settle::recover_incomplete(locked, self.site, self.opts) {
            Ok(()) => e,
            Err(undo) => failed(self.name, format!("{e}; then {undo}")),
        }
    }

    /// Steps 4 and 5 of SPEC §6.6: the migrations, then the post hooks and
    /// the health check. A failed migration blames the change without
    /// running the rest.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        locked: &Locked,
        hooks: &Hooks<'_>,
        before: Option<crate::apply::health::Before>,
        release: Option<&Release>,
        migrations: &[&Command],
        data: &mut ChangeData,
        point: u64,
    ) -> Result<Option<Verdict>, ApplyError> {
        if !migrations.is_empty() {
            data.enter(ChangePhase::Migrating, locked)?;
            if let Err(reason) = self.migrate(locked, release, migrations, point)? {
                return Ok(Some(Verdict::Blamed(reason)));
            }
        }
        data.enter(ChangePhase::Judging, locked)?;
        progress(
            &locked.state,
            self.name,
            "checking",
            90,
            Some(self.plan),
            None,
        );
        Ok(hooks.judge_after(before))
    }

    /// The release the change upgrades to, if it upgrades.
    fn release(&self) -> Option<&'a Release> {
        let plan = self.plan;
        self.ctx
            .catalog
            .releases
            .iter()
            .find(|r| {
                Some(r.version.to_string()) == plan.to_version
                    && plan.to_version != plan.from_version
            })
            .map(|r| &r.value)
    }

    /// Stages the change (SPEC §6.1): the final state of every path, each
    /// checked against disk; the free space it needs; and every old and
    /// new content stored in `points.git` before anything changes.
    fn stage(
        &self,
        locked: &Locked,
        runs_commands: bool,
    ) -> Result<(Vec<Change>, Points), ApplyError> {
        let (changes, contents) = plan_changes(&locked.root, self.plan)?;
        let snapshot = self.snapshot_estimate(locked, runs_commands);
        check_space(locked, &contents, snapshot)?;
        let points = locked.state.points()?;
        store_blobs(&locked.root, &points, &changes, &contents, self.ctx)?;
        Ok((changes, points))
    }

    /// The commands around the change (SPEC §6.4): the owner's hooks, the
    /// release's where the policy allows them, and the health check, each
    /// told the versions and the root as it is before the change.
    fn hooks(&self, locked: &Locked, release: Option<&'a Release>) -> Hooks<'a> {
        let site = self.site;
        let mut pre: Vec<&Command> = site.hooks.pre_apply.iter().collect();
        let mut post: Vec<&Command> = Vec::new();
        if self.ctx.effective.allow_release_hooks.value
            && let Some(r) = release
        {
            pre.extend(r.hooks.pre_apply.iter());
            post.extend(r.hooks.post_apply.iter());
        }
        post.extend(site.hooks.post_apply.iter());
        Hooks {
            pre,
            post,
            timeout: site.hooks.timeout.map_or(Duration::from_secs(60), |d| d.0),
            health: site.health.as_ref(),
            site: self.name,
            root: locked.root.path().to_owned(),
            from: self.plan.from_version.clone().unwrap_or_default(),
            to: self.plan.to_version.clone().unwrap_or_default(),
            log: locked.state.hooks_log(),
            state: locked.state.clone(),
        }
    }

    /// Records the state before the change as a point of its own, when the
    /// last point is not it, so that a rollback restores it: local changes
    /// to tracked files, and files the change touches that no point tracks
    /// yet (a theme override a fix lands on). Returns the point a rollback
    /// of this change returns to.
    fn record_state_before(
        &self,
        locked: &Locked,
        points: &Points,
        changes: &[Change],
    ) -> Result<Option<u64>, ApplyError> {
        let ctx = self.ctx;
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
        if self.plan.drift.is_empty() && untracked.is_empty() {
            return Ok(ctx.point);
        }
        record_prestate(locked, points, ctx, &untracked, self.opts).map(Some)
    }

    /// The verdict on the point, recorded only now that it is known (a
    /// `health` ledger record, SPEC §6.2).
    fn record_verdict(
        &self,
        locked: &Locked,
        verdict: &Verdict,
        point: u64,
    ) -> Result<(), ApplyError> {
        locked.state.ledger().append(verdict.record(
            point,
            Some(self.plan),
            &self.by,
            self.opts.clock.now(),
        ))?;
        if let Verdict::NotBlamed(reason) = verdict {
            tracing::warn!(site = %self.name, %reason, "the site is unhealthy, as it was before the change");
        }
        Ok(())
    }

    /// Rolls back a change its verdict blames (SPEC §6.2): what it carried
    /// is quarantined, then the files return to `base` as a new point.
    /// Returns the error the change ends with ([`ApplyError::RolledBack`]),
    /// or fails with why the rollback itself failed.
    fn roll_back(
        &self,
        locked: &mut Locked,
        points: &Points,
        base: Option<u64>,
        reason: String,
        data: &mut ChangeData,
    ) -> Result<ApplyError, ApplyError> {
        let to = base.ok_or_else(|| {
            failed(
                self.name,
                format!("{reason}; there is no point to roll back to"),
            )
        })?;
        // Quarantined before the rollback, so that a crash during it can
        // never let the same change be tried again by itself.
        let quarantined = quarantine_plan(
            self.ctx,
            &locked.state,
            self.plan,
            &reason,
            self.opts.clock.now(),
        )?;
        // Numbered on from the apply's steps, so a crash test reaches them.
        let undo = locked.steps.undoing();
        let (rolled, _, _) = rollback_to(
            locked,
            points,
            to,
            None,
            &undo,
            self.opts,
            &self.by,
            Some(&reason),
        )?;
        // The files are back; now the data they go with (SPEC §6.6).
        self.restore_data(locked, data, &reason)?;
        progress(
            &locked.state,
            self.name,
            "rolled_back",
            100,
            Some(self.plan),
            Some(&reason),
        );
        Ok(ApplyError::RolledBack {
            site: self.name.to_owned(),
            reason,
            point: rolled,
            quarantined,
        })
    }

    /// A change that stands: the transaction's last step, the quarantine an
    /// operator's `--release`/`--fix` lifted, and retention.
    fn finish(
        &self,
        locked: &Locked,
        points: &Points,
        group: Option<&mut crate::apply::group::Wants>,
    ) -> Result<(), ApplyError> {
        match group {
            Some(wants) => {
                txn::finish_deferred(&locked.root, &locked.state, &locked.steps, wants)?;
            }
            None => txn::finish(&locked.root, &locked.state, &locked.steps)?,
        }
        lift_quarantine(self.ctx, &locked.state, self.plan, self.opts)?;
        locked.retain(points)
    }
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
    .map_err(|e| undo(locked, steps, &e, by, now))
}

/// Undoes a transaction that failed with `e` (its steps numbered on from
/// `steps`, so a test can fail the undo as well) and says how that went.
fn undo(locked: &Locked, steps: &Steps, e: &TxnError, by: &By, now: jiff::Timestamp) -> ApplyError {
    let full = super::error::is_disk_full(e);
    let detail = match txn::recover(
        &locked.root,
        &locked.state,
        &steps.undoing(),
        by.clone(),
        Timestamp(now),
    ) {
        Ok(txn::Recovered::Forward(point)) => format!(
            "{e}; the change had already committed, so it was completed (point {point}) without its hooks and health check"
        ),
        Ok(_) => format!("{e}; the site was returned to its state before"),
        Err(u) => format!("{e}; undoing it also failed ({u}); the next command will retry"),
    };
    ApplyError::failed(&locked.site, detail, full)
}

fn txn_id(now: jiff::Timestamp) -> String {
    format!("{}-{}", now.as_nanosecond(), std::process::id())
}

/// `resolve SITE --by NAME` (SPEC §6.6): under the lock, removes the
/// site's failure marker and records who cleared it (`kind: resolve`).
/// Returns the marker that was cleared; `None` when there was none.
pub fn resolve_site(
    fleet: &Fleet,
    site: &Loaded<Site>,
    by_name: &str,
    opts: &Options<'_>,
) -> Result<Option<crate::store::FailureMarker>, ApplyError> {
    let name = site.site.to_string();
    let resolve = || -> Result<_, ApplyError> {
        let locked = lock_and_recover(fleet, site, opts)?;
        let Some(marker) = crate::store::FailureMarker::read(&locked.state)? else {
            return Ok(None);
        };
        let mut by = By::here(opts.via);
        by.user = by_name.to_owned();
        let mut r = record(
            LedgerKind::Resolve,
            None,
            None,
            Vec::new(),
            &by,
            opts.clock.now(),
        );
        r.point = marker.point;
        r.error = Some(format!("cleared: {}: {}", marker.what, marker.error));
        locked.state.ledger().append(r)?;
        crate::store::FailureMarker::remove(&locked.state)?;
        Ok(Some(marker))
    };
    resolve().map_err(|e| e.at(&name))
}

/// `rollback SITE [--to POINT] [--data]`: `data` also restores the data
/// snapshot of the point (SPEC §6.6); without it data is never touched.
pub fn rollback_site(
    fleet: &Fleet,
    site: &Loaded<Site>,
    to: Option<u64>,
    data: bool,
    opts: &Options<'_>,
) -> Result<Outcome, ApplyError> {
    let name = site.site.to_string();
    roll_back(fleet, site, to, data, opts).map_err(|e| e.at(&name))
}
