//! A site's status (SPEC §3.1 `status`): the installed version, applied
//! fixes, rollback point, drift, pending items and the last result, from a
//! gathered context and its plan; and the newer releases with their class
//! and whether they would apply automatically (`check`, notices). Shared by
//! the commands and the daemon's `/status`; it reads state, never changes it.
//!
//! [`SiteStatus`] means this and nothing else: a change's phase and percent
//! (`status.json`) is `store::Progress`, what an opt-in status report may
//! say is `watch::publish::report::ReportInput`, and the daemon's per-site
//! record is `watch::controller::SiteView`.

use serde::Serialize;

use super::SiteContext;
use crate::load::Trust;
use crate::plan::choose::{self, Class, Gates, classify};
use crate::plan::{HeldCode, SitePlan};
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
    /// What failed on the site and is skipped (SPEC §6.2): `release V`,
    /// `fix ID`.
    pub quarantined: Vec<String>,
    /// The preflight checks that hold the plan (SPEC §6.7).
    pub preflight: Vec<crate::plan::PreflightFailure>,
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

/// Why an available release is not applied automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldWhy {
    /// SPEC §3.1 `held[].code`.
    pub code: HeldCode,
    /// In a sentence.
    pub reason: String,
}

/// A newer release on the site's channel, as `check` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upgrade {
    /// The release.
    pub version: String,
    /// Its SPEC §4.2 class.
    pub class: Class,
    /// The class in words.
    pub reason: String,
    /// Whether the policy lets it apply automatically now.
    pub automatic: bool,
    /// If not, the first gate that holds it.
    pub held: Option<HeldWhy>,
}

/// The newer releases on an adopted site's channel (not yanked), newest
/// first, each judged by the planner's own gates ([`choose::assess`]) at
/// `now`; `plan` (made from the same context) decides the gates that
/// depend on the whole plan: approval, drift blocking and trust.
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
    let channel = ctx.site.channel.as_str();
    let mut releases: Vec<&crate::model::Release> = ctx
        .catalog
        .releases
        .iter()
        .map(|r| &r.value)
        .filter(|r| !r.yanked && r.version > installed.version)
        .filter(|r| r.channels.iter().any(|c| c == channel))
        .collect();
    releases.sort_by(|a, b| b.version.cmp(&a.version));
    // A hold on the whole plan (untrusted source, drift: block) stops every
    // release, however good.
    let site_hold = plan
        .held
        .iter()
        .find(|h| matches!(h.code, HeldCode::UntrustedSource | HeldCode::DriftBlocked));
    releases
        .into_iter()
        .map(|r| {
            let a = choose::assess(&installed.version, r, &gates);
            let version = r.version.to_string();
            let mut held = a.held.into_iter().next().map(|h| HeldWhy {
                code: h.code,
                reason: h.reason,
            });
            if held.is_none()
                && let Some(h) = site_hold
            {
                held = Some(HeldWhy {
                    code: h.code,
                    reason: h.reason.clone(),
                });
            }
            // Approval covers a plan digest, so only the plan that upgrades
            // to this very release can carry it.
            if held.is_none() && ctx.effective.require_approval.value.contains(&a.change) {
                let planned = plan.to_version.as_deref() == Some(version.as_str());
                let waiting = plan
                    .held
                    .iter()
                    .find(|h| h.code == HeldCode::ApprovalRequired);
                match (planned, waiting) {
                    (true, None) => {}
                    (true, Some(h)) => {
                        held = Some(HeldWhy {
                            code: h.code,
                            reason: h.reason.clone(),
                        })
                    }
                    (false, _) => {
                        held = Some(HeldWhy {
                            code: HeldCode::ApprovalRequired,
                            reason: format!(
                                "the policy requires an approved plan for {} changes",
                                a.change.as_str()
                            ),
                        })
                    }
                }
            }
            Upgrade {
                reason: choose::class_reason(&installed.version.0, &r.version.0, a.class),
                class: a.class,
                automatic: held.is_none(),
                held,
                version,
            }
        })
        .collect()
}
