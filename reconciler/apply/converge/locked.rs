//! A site locked and recovered: its lock taken, what a crash left behind
//! finished or undone, and its root open as it is now; and retention,
//! which runs under the same lock after a change. Nothing here changes a
//! site's files but recovery.

use super::{ApplyError, Options, failed};
use crate::apply::fsops::Steps;
use crate::apply::swap::{self, Swap};
use crate::apply::txn;
use crate::confined::Root;
use crate::load::{Fleet, Loaded};
use crate::model::Site;
use crate::model::values::Timestamp;
use crate::model::words::Layout;
use crate::store::{By, DataSnapshots, Health, PointResult, Points, SiteState, Verdicts};

/// A site locked, recovered and ready.
pub(super) struct Locked {
    /// The site's files: for the `symlink` layout, the release directory
    /// the link named when it was opened (see [`Locked::reopen`]).
    pub(super) root: Root,
    root_path: std::path::PathBuf,
    pub(super) layout: Layout,
    /// `keep_rollback_points`.
    keep: u32,
    pub(super) site: String,
    pub(super) state: SiteState,
    _lock: crate::store::SiteLock,
    /// The failpoints' step counter (`SITEKEEPER_FAILPOINT`), shared by
    /// every transaction run under this lock.
    pub(super) steps: Steps,
    /// What a change that stands wrote, for the site index once the
    /// command has let go of the gathered site ([`super::written`]).
    pub(super) written: Option<super::written::Pending>,
}

impl Locked {
    /// Opens the root again, after a swap pointed the link elsewhere.
    pub(super) fn reopen(&mut self) -> Result<(), ApplyError> {
        self.root = Root::open(&self.root_path).map_err(|e| {
            failed(
                &self.site,
                format_args!("{}: {e}", self.root_path.display()),
            )
        })?;
        Ok(())
    }

    /// For the `symlink` layout, the swap a change named `version` makes.
    pub(super) fn swap(&self, version: &str, txn: &str) -> Result<Option<Swap>, ApplyError> {
        match self.layout {
            Layout::InPlace => Ok(None),
            Layout::Symlink => Swap::new(&self.root_path, &self.site, version, txn)
                .map(Some)
                // Found before anything is written: the root is not what
                // the layout needs, which an operator must put right.
                .map_err(|e| ApplyError::Preflight {
                    site: self.site.clone(),
                    checks: vec![crate::plan::PreflightFailure {
                        check: "root".into(),
                        reason: e.to_string(),
                        release: None,
                    }],
                }),
        }
    }

    /// After a change: drops the points beyond retention, then the
    /// release directories no retained point names.
    pub(super) fn retain(&self, points: &Points) -> Result<(), ApplyError> {
        let verdicts = crate::store::verdicts(&self.state.ledger().read()?);
        prune(points, self.keep, &verdicts, &self.state.data())?;
        if self.layout == Layout::Symlink {
            swap::prune(&self.root_path, &self.site, points)?;
        }
        Ok(())
    }
}

/// Takes the site's lock (SPEC §6.1, serialized), refusing an untrusted
/// fleet first, and finishes or undoes an interrupted change (recovery),
/// so that every command starts from the old state or the new one.
pub(super) fn lock_and_recover(
    fleet: &Fleet,
    site: &Loaded<Site>,
    opts: &Options<'_>,
) -> Result<Locked, ApplyError> {
    lock_and_recover_counting(fleet, site, opts, None)
}

/// [`lock_and_recover`], the site's steps numbered on `shared` when it is
/// given (a group commit numbers every site's steps on one counter).
pub(super) fn lock_and_recover_counting(
    fleet: &Fleet,
    site: &Loaded<Site>,
    opts: &Options<'_>,
    shared: Option<&std::sync::Arc<std::sync::atomic::AtomicU64>>,
) -> Result<Locked, ApplyError> {
    let name = site.site.as_str();
    // An untrusted fleet may have redirected the site's root or state:
    // touch neither, not even to recover, until a trusted commit arrives.
    if let Some(reason) = fleet.trust.untrusted() {
        return Err(ApplyError::Untrusted {
            site: name.to_owned(),
            reason: reason.to_owned(),
        });
    }
    let root_path = fleet.site_root(site).ok_or_else(|| ApplyError::Invalid {
        site: name.to_owned(),
        detail: "its root is relative, but the fleet was read from git".into(),
    })?;
    let state = SiteState::new(opts.state_dir, name);
    let lock = state.lock(opts.wait)?.ok_or_else(|| ApplyError::LockBusy {
        site: name.to_owned(),
    })?;
    let root = Root::open(&root_path).map_err(|e| {
        failed(
            name,
            format_args!("its root {} cannot be opened: {e}", root_path.display()),
        )
    })?;
    let effective = crate::policy::resolve(fleet, site).map_err(|d| ApplyError::Invalid {
        site: name.to_owned(),
        detail: d.to_string(),
    })?;
    let layout = effective.layout.value;
    let steps = match shared {
        Some(counter) => Steps::from_env_shared(std::sync::Arc::clone(counter)),
        None => Steps::from_env(),
    }
    .for_site(name)
    .cancellable(opts.cancel.cloned());
    crate::cachefile::remove_temps(state.dir()).map_err(|e| {
        failed(
            name,
            format_args!(
                "removing what a crash left in {}: {e}",
                state.dir().display()
            ),
        )
    })?;
    txn::recover(
        &root,
        &state,
        &steps,
        By::here(opts.via),
        Timestamp(opts.clock.now()),
    )
    .map_err(|e| {
        let full = crate::apply::error::is_disk_full(&e);
        ApplyError::failed(
            name,
            format_args!("recovering an interrupted change failed: {e}"),
            full,
        )
    })?;
    // Recovery may have swapped the link: open the root as it is now.
    let root = if layout == Layout::Symlink {
        Root::open(&root_path)
            .map_err(|e| failed(name, format_args!("{}: {e}", root_path.display())))?
    } else {
        root
    };
    state.data().remove_temps()?;
    let mut locked = Locked {
        root,
        root_path,
        layout,
        keep: effective.keep_rollback_points.value,
        site: name.to_owned(),
        state,
        _lock: lock,
        steps,
        written: None,
    };
    // A change that runs migrations and was interrupted before it was
    // complete is a failed change: rolled back, its data restored.
    super::settle::recover_incomplete(&mut locked, site, opts)?;
    Ok(locked)
}

/// Drops the oldest point refs beyond `keep`, never the newest healthy one
/// (health `passed` or `skipped`, by the ledger's verdicts: SPEC §6.2) nor
/// the one holding the newest data snapshot; a dropped point's data
/// snapshot goes with it.
fn prune(
    points: &Points,
    keep: u32,
    verdicts: &Verdicts,
    data: &DataSnapshots,
) -> Result<(), ApplyError> {
    let list = points.list()?;
    if list.len() <= keep.max(1) as usize {
        return Ok(());
    }
    let snapshots = data.points()?;
    let newest_data = snapshots.last().copied();
    let newest_healthy = list.iter().rev().copied().find(|n| {
        points.meta(*n).is_ok_and(|m| {
            m.health(verdicts) != Health::Failed
                && matches!(m.result, PointResult::Ok | PointResult::Track)
        })
    });
    let excess = list.len() - keep.max(1) as usize;
    for n in list.into_iter().take(excess) {
        if Some(n) != newest_healthy && Some(n) != newest_data {
            points.drop_point(n)?;
            if snapshots.contains(&n) {
                data.remove(n)?;
            }
        }
    }
    Ok(())
}
