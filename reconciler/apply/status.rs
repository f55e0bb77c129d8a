//! A site's status (SPEC §3.1 `status`): the installed version, applied
//! fixes, rollback point, drift, pending items and the last result, from a
//! gathered context and its plan. Shared by `status` and the daemon's
//! `/status`; it reads state, never changes it.

use serde::Serialize;

use super::SiteContext;
use crate::load::Trust;
use crate::plan::SitePlan;
use crate::plan::choose::{Class, classify};
use crate::store::StoreError;

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
    let last_result = ctx.state.ledger().read()?.last().map(|r| {
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
    })
}

/// The releases on the site's channel newer than the installed one (not
/// yanked), each with its SPEC §4.2 class, newest first.
pub fn available(ctx: &SiteContext<'_>) -> Vec<(crate::model::values::Version, Class)> {
    let Some(installed) = &ctx.installed else {
        return Vec::new();
    };
    let channel = ctx.site.channel.as_str();
    let channel_pre = ctx
        .catalog
        .catalog
        .channels
        .get(channel)
        .is_some_and(|c| c.prerelease);
    let mut out: Vec<_> = ctx
        .catalog
        .releases
        .iter()
        .filter(|r| !r.yanked && r.version > installed.version)
        .filter(|r| r.channels.iter().any(|c| c == channel))
        .map(|r| {
            let class = classify(
                &installed.version.0,
                &r.version.0,
                channel_pre,
                ctx.effective.prereleases.value,
            );
            (r.version.clone(), class)
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}
