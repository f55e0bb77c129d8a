//! Returning a site's tracked files to an earlier point, as a new point
//! of kind `rollback`: an operator's `rollback`, and the automatic one
//! after a change its verdict blames. Undo is a new forward operation;
//! history is never rewritten.

use super::judge::Verdict;
use super::locked::{Locked, lock_and_recover};
use super::stage::read;
use super::{ApplyError, Options, Outcome, execute_or_undo, failed, record, txn_id};
use crate::apply::fsops::Steps;
use crate::apply::hooks::HookEnv;
use crate::apply::txn::{self, Change, Journal};
use crate::inventory::cache::StatCache;
use crate::load::{Fleet, Loaded};
use crate::model::Site;
use crate::model::values::Timestamp;
use crate::model::words::Layout;
use crate::store::{By, LedgerKind, LedgerResult, PointKind, PointResult, Points};

/// What returning the tracked files to point `to` changes, from what is on
/// disk now (the stat cache vouching for unchanged files).
fn rollback_changes(locked: &Locked, points: &Points, to: u64) -> Result<Vec<Change>, ApplyError> {
    let latest = points.latest()?.unwrap_or(to);
    let cache = StatCache::open(&locked.state.index_path());
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
pub(super) fn rollback_to(
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
    meta.at = Timestamp(opts.clock.now());
    meta.txn = None;
    meta.result = PointResult::Ok;
    meta.legacy_health = None;
    let id = txn_id(opts.clock.now()) + if error.is_some() { "-auto" } else { "" };
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
        opts.clock.now(),
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
    let point = execute_or_undo(
        opts.progress,
        locked,
        points,
        steps,
        &journal,
        by,
        opts.clock.now(),
    )
    .map_err(|e| match e {
        ApplyError::StorageFull { site, detail } => ApplyError::StorageFull {
            site,
            detail: format!("rolling back to point {to}: {detail}"),
        },
        e => failed(&locked.site, format!("rolling back to point {to}: {e}")),
    })?;
    if let Some(written) = super::written::capture(
        locked,
        points,
        journal.base_point,
        point,
        &journal.changes,
        Vec::new(),
    ) {
        super::written::record(locked, written);
    }
    if locked.layout == Layout::Symlink {
        locked.reopen()?;
    }
    txn::finish(&locked.root, &locked.state, steps)?;
    locked.retain(points)?;
    Ok((point, files, version))
}

/// `rollback SITE [--to POINT]`, under the lock ([`super::rollback_site`]).
pub(super) fn roll_back(
    fleet: &Fleet,
    site: &Loaded<Site>,
    to: Option<u64>,
    data: bool,
    opts: &Options<'_>,
) -> Result<Outcome, ApplyError> {
    let name = site.site.to_string();
    let mut locked = lock_and_recover(fleet, site, opts)?;
    // While the failure marker is there, nothing changes the site (SPEC
    // §6.6), an operator's rollback included: `resolve` comes first.
    if let Some(marker) = crate::store::FailureMarker::read(&locked.state)? {
        return Err(ApplyError::FailureMarker {
            site: name.clone(),
            reason: marker.summary(&name),
        });
    }
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
    let snapshots = locked.state.data();
    if data && !snapshots.has(to) {
        return Err(no_point(format!(
            "point {to} has no data snapshot, so --data has nothing to restore (hint: `sitekeeper history {name}` shows `data: true` on the points that have one)"
        )));
    }
    let changes = rollback_changes(&locked, &points, to)?;
    if changes.is_empty() && !data {
        return Ok(Outcome::Unchanged);
    }
    let from = points.meta(points.latest()?.unwrap_or(to))?.version;
    let (point, files, version) = if changes.is_empty() {
        // Only the data is asked for: the files are already the point's.
        (points.latest()?.unwrap_or(to), 0, from.clone())
    } else {
        rollback_to(
            &mut locked,
            &points,
            to,
            Some(changes),
            &steps,
            opts,
            &by,
            None,
        )?
    };
    let note = if data {
        super::settle::restore_point(&locked, site, to, (&from, &version), &by, &opts.clock)?;
        Some(format!("its data was restored from point {to}'s snapshot"))
    } else if snapshots.has(to) {
        Some(format!(
            "its data was left as it is; point {to} has a data snapshot, which `rollback --to {to} --data` restores"
        ))
    } else {
        None
    };
    // An operator's rollback is judged like any change, so `history`
    // says how the site is after it; a failing check does not undo it
    // (there is nothing better to return to), it is recorded.
    if let Some(check) = &site.health {
        let root_path = locked.root.path().to_owned();
        let log = locked.state.hooks_log();
        let env = HookEnv {
            site: &name,
            root: &root_path,
            from: &from,
            to: &version,
            log: &log,
            data_file: None,
        };
        let verdict = match crate::apply::health::run(check, &env) {
            Ok(()) => Verdict::Passed,
            Err(e) => Verdict::NotBlamed(format!("health check after the rollback: {e}")),
        };
        let mut r = verdict.record(point, None, &by, opts.clock.now());
        r.version_before = Some(from);
        r.version_after = Some(version.clone());
        locked.state.ledger().append(r)?;
    }
    Ok(Outcome::Changed {
        point,
        files,
        version,
        note,
    })
}
