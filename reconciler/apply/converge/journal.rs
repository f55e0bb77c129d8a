//! The journal of a change (SPEC §6.1): its file changes, the ledger
//! records it writes, one per action, and the point it makes. Built before
//! the transaction runs; recovery finishes or undoes the change from it.

use std::collections::BTreeMap;

use super::locked::Locked;
use super::{Applying, record};
use crate::apply::error::ApplyError;
use crate::apply::txn::{self, Change, Journal};
use crate::model::values::Timestamp;
use crate::plan::{ActionKind, fix_checksum};
use crate::store::{LedgerKind, PointKind, PointMeta, PointResult, Record};

impl Applying<'_> {
    /// The journal of the change (SPEC §6.1): its file changes, the ledger
    /// records it writes and the point it makes, with `base` as the point
    /// an undo returns to.
    pub(super) fn journal(
        &self,
        locked: &Locked,
        changes: Vec<Change>,
        base: Option<u64>,
        id: String,
    ) -> Result<Journal, ApplyError> {
        let plan = self.plan;
        let records = self.records();
        let created_dirs = txn::dirs_to_create(&locked.root, &changes);
        let swap = locked.swap(plan.to_version.as_deref().unwrap_or_default(), &id)?;
        let meta = PointMeta {
            point: 0,
            kind: PointKind::Apply,
            at: Timestamp(self.opts.clock.now()),
            version: plan.to_version.clone().unwrap_or_default(),
            fixes: self.fixes_after(),
            plan_digest: Some(plan.plan_digest.clone()),
            catalog_commit: plan.catalog_commit.clone(),
            legacy_health: None,
            result: PointResult::Ok,
            modes: BTreeMap::new(),
            txn: None,
            release_dir: swap
                .as_ref()
                .and_then(|s| s.new_name().ok().map(str::to_owned)),
        };
        Ok(Journal {
            id,
            base_point: base,
            created_dirs,
            changes,
            meta,
            records,
            swap,
        })
    }

    /// The fixes the site carries after the change: an upgrade starts
    /// afresh, then each fix the plan applies is added.
    fn fixes_after(&self) -> Vec<String> {
        let plan = self.plan;
        let mut f: Vec<String> = self
            .ctx
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
    }

    /// One ledger record per action of the plan; a fix's carries its
    /// checksum, which its quarantine is keyed on.
    fn records(&self) -> Vec<Record> {
        let plan = self.plan;
        plan.actions
            .iter()
            .map(|a| {
                let files: Vec<String> = a.files.iter().map(|f| f.path.clone()).collect();
                let (kind, id) = match a.kind {
                    ActionKind::Upgrade => (LedgerKind::Upgrade, Some(a.id.clone())),
                    ActionKind::Fix | ActionKind::RemoveFix => {
                        (LedgerKind::Fix, Some(a.id.clone()))
                    }
                    ActionKind::RevertDrift => (LedgerKind::DriftRevert, None),
                };
                let mut r = record(kind, id, Some(plan), files, &self.by, self.opts.clock.now());
                if a.kind == ActionKind::Fix {
                    r.checksum = self.ctx.fixes_by_id(&a.id).map(fix_checksum);
                }
                r
            })
            .collect()
    }
}
