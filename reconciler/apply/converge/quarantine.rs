//! Quarantine around a change (SPEC §6.2): what a failed change carried
//! is quarantined for the site before it is rolled back; what an operator
//! forced with `--release` or `--fix` is lifted once the change stands.
//! `quarantine.json` is a safety record, written durably by `store`.

use super::{ApplyError, Options};
use crate::model::values::Timestamp;
use crate::observe::SiteContext;
use crate::plan::{ActionKind, SitePlan, fix_checksum};
use crate::store::SiteState;

/// Quarantines what a failed change carried (SPEC §6.2): its release, and
/// each fix it applied, as the catalog has them now. Returns the items.
pub(super) fn quarantine_plan(
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
pub(super) fn lift_quarantine(
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

/// An operator lifts one quarantined item (`release V` or `fix ID`, as
/// `status` names them) from the daemon's dashboard, under the site's
/// lock, recorded in the ledger (kind `lift`, `by.via` from `via`), so
/// the next look may try it again. Returns false when the item was not
/// quarantined (nothing is written then). Never waits for the lock: a
/// change in flight makes it [`ApplyError::LockBusy`].
pub fn lift_item(
    state_dir: &std::path::Path,
    site: &str,
    item: &str,
    via: &str,
    now: jiff::Timestamp,
) -> Result<bool, ApplyError> {
    let state = SiteState::new(state_dir, site);
    if !state.is_adopted() {
        return Ok(false);
    }
    let Some(_lock) = state.lock(false)? else {
        return Err(ApplyError::LockBusy {
            site: site.to_owned(),
        });
    };
    let mut quarantine = crate::store::Quarantine::read(&state)?;
    if !quarantine.lift(item) {
        return Ok(false);
    }
    quarantine.write(&state)?;
    let record = super::record(
        crate::store::LedgerKind::Lift,
        Some(item.to_owned()),
        None,
        Vec::new(),
        &crate::store::By::here(via),
        now,
    );
    state.ledger().append(record)?;
    Ok(true)
}
