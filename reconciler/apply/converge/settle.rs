//! A change's data (SPEC §6.6): the snapshot taken before it, the
//! release's migrations run after its files, the restore when it fails,
//! the failure marker when a restore fails, and the recovery of a change
//! that runs migrations which a crash interrupted before it was complete.
//!
//! A change that runs migrations is complete only once they and the
//! health check have passed: until then `journal/change.json`
//! ([`IncompleteChange`]) says how far it got, and recovery rolls it back
//! as a failed change (files back, data restored) instead of finishing it.

use std::path::Path;
use std::time::Duration;

use super::locked::Locked;
use super::rollback::rollback_to;
use super::{ApplyError, Applying, Options, failed, progress, record};
use crate::apply::clock::Clock;
use crate::apply::data::{DataRun, wanted};
use crate::apply::hooks::{self, HookEnv};
use crate::model::fleet::Data;
use crate::model::values::{Command, Timestamp};
use crate::model::{Release, Site};
use crate::store::{
    By, ChangePhase, FailureMarker, IncompleteChange, LedgerKind, LedgerResult, Points,
};

/// How long a data command or backup may take when the site's hooks do
/// not say: a large database takes longer to dump than a hook to run.
const DATA_TIMEOUT: Duration = Duration::from_secs(600);

/// What a change has done to the site's data so far.
pub(super) struct ChangeData {
    /// The point whose snapshot this change took, if it took one.
    pub(super) snapshot: Option<u64>,
    /// For a change that runs migrations, its durable record.
    pub(super) open: Option<IncompleteChange>,
}

impl ChangeData {
    /// Moves the open record, if any, to `phase` before the phase starts.
    pub(super) fn enter(&mut self, phase: ChangePhase, locked: &Locked) -> Result<(), ApplyError> {
        if let Some(open) = &mut self.open {
            step(locked, "change record")?;
            open.enter(phase, &locked.state)?;
        }
        Ok(())
    }

    /// The change is complete, or was cancelled before its data was
    /// touched: the open record goes.
    pub(super) fn close(&self, locked: &Locked) -> Result<(), ApplyError> {
        if self.open.is_some() {
            step(locked, "change record")?;
            IncompleteChange::remove(&locked.state)?;
        }
        Ok(())
    }
}

/// A numbered step of the change (failpoints, SPEC §6.1's crash tests),
/// failing as a plain error of the change.
fn step(locked: &Locked, what: &str) -> Result<(), ApplyError> {
    locked
        .steps
        .step(what)
        .map_err(|e| failed(&locked.site, format!("{what}: {e}")))
}

/// The site's commands' time limit for data: the hooks' own when set.
fn data_timeout(site: &Site) -> Duration {
    site.hooks.timeout.map_or(DATA_TIMEOUT, |d| d.0)
}

/// A [`DataRun`] of `data` on the locked site, telling commands the
/// versions `from` and `to`.
fn data_run<'a>(
    locked: &'a Locked,
    site: &'a Site,
    data: &'a Data,
    root: &'a Path,
    log: &'a Path,
    versions: (&'a str, &'a str),
) -> DataRun<'a> {
    DataRun {
        data,
        root: &locked.root,
        env: HookEnv {
            site: &locked.site,
            root,
            from: versions.0,
            to: versions.1,
            log,
            data_file: None,
        },
        timeout: data_timeout(site),
    }
}

impl Applying<'_> {
    /// The release's migrations, where the policy allows release commands.
    pub(super) fn migrations<'r>(&self, release: Option<&'r Release>) -> Vec<&'r Command> {
        match release {
            Some(r) if self.ctx.effective.allow_release_hooks.value => r.migrate.iter().collect(),
            _ => Vec::new(),
        }
    }

    /// How much room the data snapshot needs in the state dir: as much as
    /// the newest snapshot took, else the databases' sizes as they are
    /// (a command's dump is unknown until it has run once).
    pub(super) fn snapshot_estimate(&self, locked: &Locked, runs_commands: bool) -> u64 {
        let Some(data) = self
            .site
            .data
            .as_ref()
            .filter(|_| wanted(self.site.data.as_ref(), runs_commands))
        else {
            return 0;
        };
        let snapshots = locked.state.data();
        let newest = snapshots
            .points()
            .ok()
            .and_then(|p| p.last().copied())
            .and_then(|n| snapshots.manifest(n).ok().flatten());
        match newest {
            Some(m) => m.files.iter().map(|f| f.raw_bytes).sum(),
            None => data
                .sqlite
                .iter()
                .filter_map(|p| locked.root.metadata(p.as_str()).ok())
                .map(|m| m.size)
                .sum(),
        }
    }

    /// Step 2 of SPEC §6.6: captures the site's data as the snapshot of
    /// `base` (the point a rollback of this change returns to), when the
    /// change runs commands or the site asks for it always; a change that
    /// runs migrations is recorded as open first, so that a crash from here
    /// on is recovered as a failed change.
    pub(super) fn capture_data(
        &self,
        locked: &Locked,
        base: Option<u64>,
        txn: &str,
        runs_commands: bool,
        migrating: bool,
    ) -> Result<ChangeData, ApplyError> {
        let from = self.plan.from_version.clone().unwrap_or_default();
        let to = self.plan.to_version.clone().unwrap_or_default();
        let take = wanted(self.site.data.as_ref(), runs_commands);
        let mut change = ChangeData {
            snapshot: None,
            open: None,
        };
        let Some(base) = base else {
            return Ok(change);
        };
        if migrating {
            let open = IncompleteChange {
                txn: txn.to_owned(),
                base_point: base,
                snapshot: take,
                version_from: from.clone(),
                version_to: to.clone(),
                phase: ChangePhase::Snapshot,
            };
            step(locked, "change record")?;
            open.write(&locked.state)?;
            change.open = Some(open);
        }
        let Some(data) = self.site.data.as_ref().filter(|_| take) else {
            return Ok(change);
        };
        progress(
            &locked.state,
            self.name,
            "snapshot",
            30,
            Some(self.plan),
            None,
        );
        let (root, log) = (locked.root.path().to_owned(), locked.state.hooks_log());
        let run = data_run(locked, self.site, data, &root, &log, (&from, &to));
        let manifest = step(locked, "snapshot")
            .and_then(|()| {
                run.capture(&locked.state.data(), base)
                    .map_err(|e| failed(self.name, e))
            })
            .map_err(|e| {
                let _ = change.close(locked);
                failed(
                    self.name,
                    format!("taking the data snapshot failed: {e}; nothing was changed"),
                )
            })?;
        let mut r = record(
            LedgerKind::Snapshot,
            None,
            Some(self.plan),
            manifest.files.iter().map(|f| f.name.clone()).collect(),
            &self.by,
            self.opts.clock.now(),
        );
        r.point = Some(base);
        locked.state.ledger().append(r)?;
        change.snapshot = Some(base);
        Ok(change)
    }

    /// Step 4: the release's migrations, in order, each a ledger record of
    /// its own, stopping at the first that fails; `Err` says which failed
    /// and why. `status.json` shows phase `migrating` and a percent from
    /// the lines printed against the release's `migrate_lines`.
    pub(super) fn migrate(
        &self,
        locked: &Locked,
        release: Option<&Release>,
        commands: &[&Command],
        point: u64,
    ) -> Result<Result<(), String>, ApplyError> {
        let total = commands.len();
        let expected = release.and_then(|r| r.migrate_lines).filter(|n| *n > 0);
        let (root, log) = (locked.root.path().to_owned(), locked.state.hooks_log());
        let from = self.plan.from_version.clone().unwrap_or_default();
        let to = self.plan.to_version.clone().unwrap_or_default();
        let env = HookEnv {
            site: self.name,
            root: &root,
            from: &from,
            to: &to,
            log: &log,
            data_file: None,
        };
        let timeout = data_timeout(self.site);
        let shown = MigrationProgress {
            locked,
            site: self.name,
            plan: self.plan,
            bar: self.opts.progress,
            expected,
            total,
            printed: std::cell::Cell::new((0, 0)),
            percent: std::cell::Cell::new(u8::MAX),
        };
        shown.start();
        for (n, cmd) in commands.iter().enumerate() {
            let what = format!("migration {} of {total}", n + 1);
            shown.command(n, &what);
            let result = match step(locked, "migrate") {
                Ok(()) => hooks::run_counting(&cmd.0, &env, timeout, &|lines| {
                    shown.lines(n, &what, lines)
                })
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let mut r = record(
                LedgerKind::Migrate,
                Some(format!("{to}/migrate/{}", n + 1)),
                Some(self.plan),
                Vec::new(),
                &self.by,
                self.opts.clock.now(),
            );
            r.point = Some(point);
            if let Err(e) = &result {
                r.result = LedgerResult::Failed;
                r.error = Some(e.clone());
            }
            locked.state.ledger().append(r)?;
            if let Err(e) = result {
                shown.finish();
                return Ok(Err(format!("{what} failed: {e}")));
            }
        }
        shown.finish();
        Ok(Ok(()))
    }

    /// After a failed change's files were rolled back: its data restored
    /// from the snapshot it took (SPEC §6.6). A restore that fails leaves
    /// the failure marker; so does a change that ran migrations without a
    /// snapshot to return to.
    pub(super) fn restore_data(
        &self,
        locked: &Locked,
        change: &mut ChangeData,
        reason: &str,
    ) -> Result<(), ApplyError> {
        change.enter(ChangePhase::Restoring, locked)?;
        let versions = (
            self.plan.to_version.clone().unwrap_or_default(),
            self.plan.from_version.clone().unwrap_or_default(),
        );
        let outcome = restore(
            locked,
            self.site,
            change.snapshot,
            change.open.is_some(),
            (&versions.0, &versions.1),
            &self.by,
            &self.opts.clock,
            reason,
        );
        change.close(locked)?;
        outcome
    }
}

/// What the migrations show while they run: phase `migrating` in
/// `status.json` with a percent from the lines printed so far against the
/// release's `migrate_lines` (else from the commands done), and the
/// terminal's bar advanced per line. `status.json` is written only when
/// the percent changes, not for every line.
struct MigrationProgress<'a> {
    locked: &'a Locked,
    site: &'a str,
    plan: &'a crate::plan::SitePlan,
    bar: Option<&'a dyn crate::inventory::Progress>,
    expected: Option<u64>,
    total: usize,
    /// Lines printed by the commands before this one, and in all so far.
    printed: std::cell::Cell<(u64, u64)>,
    /// The percent last written.
    percent: std::cell::Cell<u8>,
}

impl MigrationProgress<'_> {
    fn start(&self) {
        if let (Some(bar), Some(lines)) = (self.bar, self.expected) {
            bar.start(lines);
        }
    }

    /// Command `n` starts: the lines so far are its predecessors'.
    fn command(&self, n: usize, what: &str) {
        let (_, all) = self.printed.get();
        self.printed.set((all, all));
        self.show(self.percent_at(n, all), what);
    }

    /// Command `n` has printed `lines` lines so far.
    fn lines(&self, n: usize, what: &str, lines: u64) {
        let (before, shown) = self.printed.get();
        let all = before + lines;
        if let Some(bar) = self.bar {
            for _ in shown..all {
                bar.advance();
            }
        }
        self.printed.set((before, all));
        self.show(self.percent_at(n, all), what);
    }

    fn percent_at(&self, n: usize, lines: u64) -> u8 {
        match self.expected {
            Some(all) => (lines.saturating_mul(100) / all).min(99) as u8,
            None => (n * 100 / self.total.max(1)) as u8,
        }
    }

    fn show(&self, percent: u8, what: &str) {
        if percent != self.percent.get() {
            self.percent.set(percent);
            progress(
                &self.locked.state,
                self.site,
                "migrating",
                percent,
                Some(self.plan),
                Some(what),
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

/// Restores the data of point `snapshot` (when there is one), with a
/// `restore` ledger record; on failure, or when `migrated` without a
/// snapshot, writes the failure marker and says so.
#[allow(clippy::too_many_arguments)]
fn restore(
    locked: &Locked,
    site: &Site,
    snapshot: Option<u64>,
    migrated: bool,
    versions: (&str, &str),
    by: &By,
    clock: &Clock,
    reason: &str,
) -> Result<(), ApplyError> {
    let (Some(point), Some(data)) = (snapshot, site.data.as_ref()) else {
        if !migrated {
            return Ok(());
        }
        let marker = FailureMarker {
            what: "a failed change's migrations ran without a data snapshot to restore".into(),
            at: Timestamp(clock.now()),
            error: format!("{reason}; the site has no `data:`, so its data may be half migrated"),
            snapshot: None,
            point: None,
            by: by.clone(),
        };
        marker.write(&locked.state)?;
        return Err(failed(&locked.site, marker.summary(&locked.site)));
    };
    progress(
        &locked.state,
        &locked.site,
        "restoring",
        95,
        None,
        Some(reason),
    );
    let (root, log) = (locked.root.path().to_owned(), locked.state.hooks_log());
    let run = data_run(locked, site, data, &root, &log, versions);
    let snapshots = locked.state.data();
    let result = step(locked, "restore").and_then(|()| {
        run.restore(&snapshots, point)
            .map_err(|e| failed(&locked.site, e))
    });
    let mut r = record(
        LedgerKind::Restore,
        Some(format!("point {point}")),
        None,
        Vec::new(),
        by,
        clock.now(),
    );
    r.point = Some(point);
    r.version_before = Some(versions.0.to_owned());
    r.version_after = Some(versions.1.to_owned());
    if let Err(e) = &result {
        r.result = LedgerResult::Failed;
        r.error = Some(e.to_string());
    }
    locked.state.ledger().append(r)?;
    if let Err(e) = result {
        let marker = FailureMarker {
            what: format!("restoring the data of point {point}"),
            at: Timestamp(clock.now()),
            error: format!("{e} (after: {reason})"),
            snapshot: Some(snapshots.path(point).display().to_string()),
            point: Some(point),
            by: by.clone(),
        };
        marker.write(&locked.state)?;
        return Err(failed(&locked.site, marker.summary(&locked.site)));
    }
    Ok(())
}

/// `rollback --to N --data`: the data of point `point` restored by an
/// operator's request (the files are already the point's). A restore that
/// fails leaves the failure marker.
pub(super) fn restore_point(
    locked: &Locked,
    site: &Site,
    point: u64,
    versions: (&str, &str),
    by: &By,
    clock: &Clock,
) -> Result<(), ApplyError> {
    restore(
        locked,
        site,
        Some(point),
        false,
        versions,
        by,
        clock,
        &format!("an operator's rollback to point {point} with its data"),
    )
}

/// Recovery of a change that runs migrations, interrupted before it was
/// complete (SPEC §6.6): its files back to the point it started from (a
/// new point, kind `rollback`, if it had committed), its data restored if
/// its migrations may have started, the failure marker if that fails.
/// Called under the lock, after the files transaction's own recovery.
pub(super) fn recover_incomplete(
    locked: &mut Locked,
    site: &Site,
    opts: &Options<'_>,
) -> Result<(), ApplyError> {
    let Some(open) = IncompleteChange::read(&locked.state)? else {
        return Ok(());
    };
    let by = By::here(opts.via);
    let reason = format!(
        "the change to {} was interrupted ({}) before its migrations and health check passed",
        open.version_to,
        match open.phase {
            ChangePhase::Snapshot => "while taking the data snapshot",
            ChangePhase::Files => "while changing the files",
            ChangePhase::Migrating => "while migrating",
            ChangePhase::Judging => "while judging the site",
            ChangePhase::Restoring => "while restoring the data",
        }
    );
    let points: Points = locked.state.points()?;
    let committed = match points.latest()? {
        Some(n) => points.meta(n)?.txn.as_deref() == Some(open.txn.as_str()),
        None => false,
    };
    if committed {
        let undo = locked.steps.undoing();
        rollback_to(
            locked,
            &points,
            open.base_point,
            None,
            &undo,
            opts,
            &by,
            Some(&reason),
        )?;
    }
    let outcome = if open.phase.data_touched() {
        restore(
            locked,
            site,
            open.snapshot.then_some(open.base_point),
            true,
            (&open.version_to, &open.version_from),
            &by,
            &opts.clock,
            &reason,
        )
    } else {
        Ok(())
    };
    let mut r = record(
        LedgerKind::Recovery,
        None,
        None,
        Vec::new(),
        &by,
        opts.clock.now(),
    );
    r.version_before = Some(open.version_to.clone());
    r.version_after = Some(open.version_from.clone());
    r.point = Some(open.base_point);
    r.result = LedgerResult::RolledBack;
    r.error = Some(match &outcome {
        Ok(()) if open.phase.data_touched() => format!(
            "{reason}; its files and data were returned to point {}",
            open.base_point
        ),
        Ok(()) => format!(
            "{reason}; its files were returned to point {}, its data was never touched",
            open.base_point
        ),
        Err(e) => format!("{reason}; {e}"),
    });
    locked.state.ledger().append(r)?;
    IncompleteChange::remove(&locked.state)?;
    outcome
}
