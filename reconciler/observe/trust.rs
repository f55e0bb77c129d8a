//! One site's trust verdict (SPEC §7): the fleet's and its catalog's
//! signature verdicts from loading, plus the no-downgrade rule, which needs
//! the site's rollback points: a signed catalog commit that does not
//! descend from the one last applied to the site is refused too.
//!
//! Reads the state dir, never writes it; `watch` calls [`site_trust`] to
//! report a verdict without scanning the site.

use std::path::Path;

use crate::load::trust::short;
use crate::load::{Fleet, Loaded, LoadedCatalog, Trust};
use crate::model::Site;
use crate::store::{PointKind, Points, SiteState, StoreError};

/// The verdict for a site whose catalog is `catalog` and whose rollback
/// points are `points` (`None` before adoption): untrusted when the fleet
/// or the catalog commit is, or when the catalog requires signatures and
/// its commit does not descend from the catalog commit the site last
/// applied; else the catalog's own verdict.
pub fn verdict(
    fleet: &Fleet,
    catalog: &LoadedCatalog,
    points: Option<&Points>,
) -> Result<Trust, StoreError> {
    if let Some(reason) = fleet.trust.untrusted() {
        return Ok(Trust::Untrusted {
            reason: reason.to_owned(),
        });
    }
    if catalog.trust.untrusted().is_some() || !catalog.trust.required() {
        return Ok(catalog.trust.clone());
    }
    // Without signatures anyone who can push can publish anything, so
    // refusing an older commit would protect nothing; with them, it stops
    // a replay of an old, validly signed commit (a freeze or rollback).
    let Some(points) = points else {
        return Ok(catalog.trust.clone());
    };
    let Some((point, applied)) = last_applied(points)? else {
        return Ok(catalog.trust.clone());
    };
    let now = catalog.source.commit().unwrap_or_default();
    match catalog.source.descends_from(&applied) {
        Ok(true) => Ok(catalog.trust.clone()),
        Ok(false) => Ok(Trust::Untrusted {
            reason: format!(
                "commit {} of the catalog {} is not a descendant of {} applied at point {point} (no silent downgrade)",
                short(now),
                catalog.product,
                short(&applied)
            ),
        }),
        Err(e) => Ok(Trust::Untrusted {
            reason: format!(
                "whether commit {} of the catalog {} descends from {} cannot be told: {e}",
                short(now),
                catalog.product,
                short(&applied)
            ),
        }),
    }
}

/// The catalog commit the site last applied, and the point that recorded
/// it: the newest point that names one. Rollback points carry the newest
/// commit forward (see `converge::rollback_to`), so returning to older
/// files never lowers this mark.
fn last_applied(points: &Points) -> Result<Option<(u64, String)>, StoreError> {
    let list = points.list()?;
    let Some(latest) = list.last().copied() else {
        return Ok(None);
    };
    let Some(commit) = points.meta(latest)?.catalog_commit else {
        return Ok(None);
    };
    // Name the point where that commit was applied, not a later rollback
    // or bookkeeping point that carried it forward.
    let mut named = latest;
    for n in list.iter().rev().copied() {
        let meta = points.meta(n)?;
        if meta.catalog_commit.as_deref() != Some(commit.as_str()) {
            break;
        }
        if matches!(meta.kind, PointKind::Apply | PointKind::Adopt)
            && meta.result == crate::store::PointResult::Ok
        {
            named = n;
        }
    }
    Ok(Some((named, commit)))
}

/// The verdict for `site` as [`verdict`] gives it, reading its points from
/// `state_dir`: what `watch` reports per site, without scanning its files.
/// `None` when the site's product has no loaded catalog.
pub fn site_trust(
    fleet: &Fleet,
    site: &Loaded<Site>,
    state_dir: &Path,
) -> Result<Option<Trust>, StoreError> {
    let Some(catalog) = fleet.catalogs.get(&site.product) else {
        return Ok(None);
    };
    let state = SiteState::new(state_dir, site.site.as_str());
    let points = state.existing_points()?;
    verdict(fleet, catalog, points.as_ref()).map(Some)
}
