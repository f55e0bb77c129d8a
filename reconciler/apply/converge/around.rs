//! What runs around a change's transaction: before it, everything up to
//! its journal (the serialize lock, staging, the health check before, the
//! state before, the data snapshot, the pre hooks); after it, the verdict
//! and the rollback or the finish. A change alone runs its transaction
//! between the two; a group commit (`batch`) runs many changes'
//! transactions phase by phase between them.

use super::locked::Locked;
use super::{
    ApplyError, Applying, ChangeData, Hooks, Outcome, Verdict, progress, serialize_lock, txn_id,
};
use crate::apply::group::Wants;
use crate::apply::txn::Journal;
use crate::model::Release;
use crate::model::values::Command;
use crate::model::words::Layout;
use crate::store::{ChangePhase, Points};

/// A change staged and journaled, its transaction not yet run.
pub(super) struct Begun<'a> {
    pub(super) release: Option<&'a Release>,
    pub(super) hooks: Hooks<'a>,
    pub(super) migrations: Vec<&'a Command>,
    pub(super) before: Option<crate::apply::health::Before>,
    pub(super) base: Option<u64>,
    pub(super) data: ChangeData,
    pub(super) journal: Journal,
    pub(super) points: Points,
    /// Held until the change ends (`serialize:` of a release).
    pub(super) _serialized: Option<crate::store::SiteLock>,
}

impl<'a> Applying<'a> {
    /// Everything before the transaction: the serialize lock, staging,
    /// the health check before, the state before, the data snapshot, the
    /// pre hooks and the journal.
    pub(super) fn begin(&self, locked: &Locked) -> Result<Begun<'a>, ApplyError> {
        let (name, plan) = (self.name, self.plan);
        progress(&locked.state, name, "planning", 5, Some(plan), None);
        let release = self.release();
        let serialized = match release.and_then(|r| r.serialize.as_deref()) {
            Some(lock_name) => Some(serialize_lock(
                self.opts,
                &locked.state,
                name,
                lock_name,
                plan,
            )?),
            None => None,
        };
        let hooks = self.hooks(locked, release);
        let migrations = self.migrations(release);
        let runs_commands = !migrations.is_empty() || hooks.runs_any();
        progress(&locked.state, name, "staging", 20, Some(plan), None);
        let (changes, points) = self.stage(locked, runs_commands)?;
        let before = hooks.health_before();
        let base = self.record_state_before(locked, &points, &changes)?;
        let txn = txn_id(self.opts.clock.now());
        let mut data =
            self.capture_data(locked, base, &txn, runs_commands, !migrations.is_empty())?;
        if let Err(e) = hooks.run_pre() {
            data.close(locked)?;
            return Err(e);
        }
        let journal = self.journal(locked, changes, base, txn)?;
        data.enter(ChangePhase::Files, locked)?;
        progress(&locked.state, name, "replacing", 50, Some(plan), None);
        Ok(Begun {
            release,
            hooks,
            migrations,
            before,
            base,
            data,
            journal,
            points,
            _serialized: serialized,
        })
    }

    /// Everything after the transaction ended with `point`: an undone one
    /// reported, a committed one judged, then rolled back or finished.
    /// `group` is set when the change is part of a group commit: the
    /// journal's removal is then made durable by the group's barrier.
    pub(super) fn end(
        &self,
        locked: &mut Locked,
        begun: Begun<'a>,
        point: Result<u64, ApplyError>,
        group: Option<&mut Wants>,
    ) -> Result<Outcome, ApplyError> {
        let (name, plan) = (self.name, self.plan);
        let Begun {
            release,
            hooks,
            migrations,
            before,
            base,
            mut data,
            journal,
            points,
            _serialized,
        } = begun;
        let point = match point {
            Ok(point) => point,
            Err(e) => {
                progress(
                    &locked.state,
                    name,
                    "failed",
                    100,
                    Some(plan),
                    Some(&e.to_string()),
                );
                return Err(self.unfinished(locked, &data, e));
            }
        };
        let written = super::written::capture(
            locked,
            &points,
            journal.base_point,
            point,
            &journal.changes,
            super::written::plan_contents(plan, &journal.changes),
        );
        if locked.layout == Layout::Symlink {
            locked.reopen()?;
        }
        let verdict = self.judge(
            locked,
            &hooks,
            before,
            release,
            &migrations,
            &mut data,
            point,
        )?;
        if let Some(v) = &verdict {
            self.record_verdict(locked, v, point)?;
        }
        let note = match verdict {
            Some(Verdict::Blamed(reason)) => {
                return Err(self.roll_back(locked, &points, base, reason, &mut data)?);
            }
            // The operator hears that the site is unhealthy, as it was
            // before, not only the ledger.
            Some(Verdict::NotBlamed(reason)) => Some(reason),
            _ => None,
        };
        data.close(locked)?;
        self.finish(locked, &points, group)?;
        // Recorded by `converge_site` once the plan and the gathered site
        // are gone; a change rolled back above recorded its rollback.
        locked.written = written;
        progress(&locked.state, name, "done", 100, Some(plan), None);
        Ok(Outcome::Changed {
            point,
            files: journal.changes.len(),
            version: plan.to_version.clone().unwrap_or_default(),
            note,
        })
    }
}
