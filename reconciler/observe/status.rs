//! A site's status (SPEC §3.1 `status`): the installed version, applied
//! fixes, rollback point, drift, pending items and the last result, from a
//! gathered context and its plan; and the newer releases with their class
//! and whether they would apply automatically (`check`, notices), asked of
//! the planner's gates in [`choose`] with this context's values. Shared by
//! the commands and the daemon's `/status`; it reads state, never changes it.
//!
//! [`SiteStatus`] means this and nothing else: a change's phase and percent
//! (`status.json`) is `store::Progress`, what an opt-in status report may
//! say is `watch::publish::report::ReportInput`, and the daemon's per-site
//! record is `watch::controller::SiteView`.

use serde::Serialize;

use super::SiteContext;
use crate::load::Trust;
use crate::plan::SitePlan;
use crate::plan::choose::{self, Class, Gates};
use crate::store::StoreError;

use crate::plan::choose::Upgrade;

/// One site's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteStatus {
    /// The site.
    pub site: String,
    /// The release installed (`None`: not adopted).
    pub version: Option<String>,
    /// Fixes applied on top, in order.
    pub fixes: Vec<String>,
    /// The latest rollback point.
    pub point: Option<u64>,
    /// Managed files that differ from the latest point.
    pub drift: Vec<String>,
    /// Actions the plan would take now.
    pub pending: usize,
    /// The result of the last ledger record (`ok`, `failed`, `rolled_back`).
    pub last_result: Option<String>,
    /// The verdict on the catalog commit for this site (SPEC §7), the
    /// fleet's included: what decides whether its plan is held.
    pub catalog_trust: Trust,
    /// The verdict on the fleet repo's own commit.
    pub fleet_trust: Trust,
    /// What failed on the site and is skipped (SPEC §6.2): `release V`,
    /// `fix ID`.
    pub quarantined: Vec<String>,
    /// The preflight checks that hold the plan (SPEC §6.7).
    pub preflight: Vec<crate::plan::PreflightFailure>,
    /// The failure marker (SPEC §6.6): while it is set nothing changes
    /// the site.
    pub failure: Option<crate::store::FailureMarker>,
}

/// The status of `ctx`'s site, given the plan made from it.
pub fn of(ctx: &SiteContext<'_>, plan: &SitePlan) -> Result<SiteStatus, StoreError> {
    let (version, fixes) = match (&ctx.points, ctx.point) {
        (Some(points), Some(n)) => {
            let m = points.meta(n)?;
            (Some(m.version), m.fixes)
        }
        _ => (None, Vec::new()),
    };
    // The last change's result: a health record is a verdict on a point,
    // and the change's own records say how it ended.
    let ledger = ctx.state.ledger().read()?;
    let last = ledger
        .iter()
        .rev()
        .find(|r| r.kind != crate::store::LedgerKind::Health);
    let last_result = last.map(|r| {
        serde_json::to_value(r.result)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    });
    Ok(SiteStatus {
        site: ctx.site.site.to_string(),
        version,
        fixes,
        point: ctx.point,
        drift: plan.drift.clone(),
        pending: plan.actions.len(),
        last_result,
        catalog_trust: ctx.trust.clone(),
        fleet_trust: ctx.fleet.trust.clone(),
        quarantined: ctx.quarantine.items(),
        preflight: plan.preflight_failures(),
        failure: ctx.failure.clone(),
    })
}

/// The releases on the site's channel newer than the installed one (not
/// yanked), each with its SPEC §4.2 class, newest first
/// ([`choose::available`] on the context's values).
pub fn available(ctx: &SiteContext<'_>) -> Vec<(crate::model::values::Version, Class)> {
    let Some(installed) = &ctx.installed else {
        return Vec::new();
    };
    choose::available(
        &installed.version,
        ctx.site.channel.as_str(),
        ctx.catalog.releases.iter().map(|r| &r.value),
        &ctx.catalog.catalog,
        ctx.effective.prereleases.value,
    )
}

/// The newer releases on an adopted site's channel, newest first, each
/// judged by the planner's own gates at `now` ([`choose::upgrades`] on the
/// context's values); `plan` is the plan made from the same context.
pub fn upgrades(ctx: &SiteContext<'_>, plan: &SitePlan, now: jiff::Timestamp) -> Vec<Upgrade> {
    let Some(installed) = ctx.installed.as_ref().filter(|_| ctx.adopted()) else {
        return Vec::new();
    };
    let gates = Gates {
        effective: &ctx.effective,
        catalog: &ctx.catalog.catalog,
        now,
        quarantined: &ctx.quarantined,
        forced: None,
    };
    choose::upgrades(
        &installed.version,
        ctx.site.channel.as_str(),
        ctx.catalog.releases.iter().map(|r| &r.value),
        &gates,
        plan,
    )
}
