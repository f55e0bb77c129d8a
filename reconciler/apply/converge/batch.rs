//! `apply` over many sites as a group commit (issue 22, item 3): batches
//! of sites run their transactions phase by phase, and each phase's
//! writes are made durable for the whole batch at one barrier
//! (`apply/group.rs`: one `syncfs` per file system, or one fsync pass)
//! instead of by each site's own fsyncs. Each site keeps its own lock,
//! journal, commit step and recovery: a crash at any instant leaves every
//! site old or new, recovered by its own journal (`txn/phased.rs` argues
//! each barrier). Sites whose change is not a plain files transaction
//! (the `symlink` layout, migrations, a `serialize:` lock) converge alone,
//! as they always did, inside the same run.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::locked::{Locked, lock_and_recover_counting};
use super::{
    ApplyError, Applying, Begun, Options, Outcome, check_saved, context_error, progress, refusal,
    undo, unmet_request,
};
use crate::apply::fsops::Steps;
use crate::apply::group::{Group, SyncMode, Wants};
use crate::apply::txn::{Phased, TxnError};
use crate::load::{Fleet, Loaded};
use crate::model::Site;
use crate::model::words::Layout;
use crate::observe::SiteContext;
use crate::plan::SitePlan;
use crate::store::By;

/// Sites per batch: their locks, contexts and staged changes are held
/// together until the batch's last barrier, so a batch is bounded; past a
/// few dozen sites a barrier's cost is shared so widely that more would
/// save little.
const BATCH: usize = 64;

/// The phases between barriers, by the names their barriers carry as
/// numbered steps.
const PHASES: [&str; 5] = [
    "group: stage",
    "group: name",
    "group: replace",
    "group: commit",
    "group: record",
];

/// Converges `sites` with up to `jobs` at once, as group commits of up to
/// `BATCH` sites. Returns each site's name and result, in order. With
/// one site it is [`super::apply_site`], exactly. `done` hears each site's
/// result as soon as its batch has ended (the command's notifications go
/// out while later batches run).
pub fn apply_sites(
    fleet: &Fleet,
    sites: &[&Loaded<Site>],
    opts: &Options<'_>,
    jobs: usize,
    done: &(dyn Fn(&str, &Result<Outcome, ApplyError>) + Sync),
) -> Vec<(String, Result<Outcome, ApplyError>)> {
    if sites.len() < 2 {
        return sites
            .iter()
            .map(|s| {
                let r = super::apply_site(fleet, s, opts);
                done(s.site.as_str(), &r);
                (s.site.to_string(), r)
            })
            .collect();
    }
    let counter = Arc::new(AtomicU64::new(0));
    let workers = jobs.clamp(1, BATCH);
    let group = Group::new(
        workers,
        SyncMode::choose(),
        Steps::from_env_shared(Arc::clone(&counter)),
    );
    // Sites in name order, batch after batch: see `lock_all`.
    let mut order: Vec<usize> = (0..sites.len()).collect();
    order.sort_by(|a, b| sites[*a].site.as_str().cmp(sites[*b].site.as_str()));
    let mut results: Vec<Option<Result<Outcome, ApplyError>>> =
        sites.iter().map(|_| None).collect();
    for chunk in order.chunks(BATCH) {
        let mut shares: Vec<Vec<(usize, &Loaded<Site>, Locked)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut next = 0;
        for (i, locked) in lock_all(fleet, sites, chunk, opts, &counter) {
            match locked {
                Ok(l) => {
                    shares[next % workers].push((i, sites[i], l));
                    next += 1;
                }
                Err(e) => {
                    let r = Err(e);
                    done(sites[i].site.as_str(), &r);
                    results[i] = Some(r);
                }
            }
        }
        let ended: Vec<(usize, Result<Outcome, ApplyError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|mine| {
                    let group = &group;
                    s.spawn(move || Worker { fleet, opts, group }.run(mine))
                })
                .collect();
            handles
                .into_iter()
                // A worker that panicked took its sites' results with it;
                // each site's own journal recovers it (reported below).
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for (i, r) in ended {
            done(sites[i].site.as_str(), &r);
            results[i] = Some(r);
        }
    }
    let out = sites
        .iter()
        .zip(results)
        .map(|(site, r)| {
            let name = site.site.to_string();
            let r = r.unwrap_or_else(|| {
                Err(ApplyError::Internal {
                    site: name.clone(),
                    detail: "the worker converging it stopped; the next command recovers it".into(),
                })
            });
            (name, r)
        })
        .collect();
    tracing::debug!(calls = ?group.calls(), mode = ?group.mode(), "group commit");
    out
}

/// Locks and recovers the sites `chunk` names (indices into `sites`, in
/// name order), one after another in this thread, before any worker
/// starts. A batch holds its sites' locks until its last barrier, and its
/// workers wait for each other at every barrier; were locks taken by the
/// workers as they go, two runs over overlapping sites could each hold a
/// lock the other waits for while their own workers waited at a barrier.
/// Taken all first and in one order (the sites' names), a run that waits
/// for a lock holds only locks that come before it, so no two runs (nor a
/// run and the daemon, which holds one lock at a time) wait in a cycle.
fn lock_all(
    fleet: &Fleet,
    sites: &[&Loaded<Site>],
    chunk: &[usize],
    opts: &Options<'_>,
    counter: &Arc<AtomicU64>,
) -> Vec<(usize, Result<Locked, ApplyError>)> {
    chunk
        .iter()
        .map(|&i| {
            let site = sites[i];
            let locked = lock_and_recover_counting(fleet, site, opts, Some(counter))
                .map_err(|e| e.at(site.site.as_str()));
            (i, locked)
        })
        .collect()
}

/// One thread of a batch: its share of the sites, through every phase.
struct Worker<'w, 'f> {
    fleet: &'f Fleet,
    opts: &'w Options<'w>,
    group: &'w Group,
}

/// A site locked and planned, with a change to make in the group.
struct Gathered<'f> {
    index: usize,
    name: String,
    site: &'f Loaded<Site>,
    ctx: SiteContext<'f>,
    plan: SitePlan,
    by: By,
    /// The file systems it writes to.
    devs: Vec<u64>,
}

/// How a site left the gathering: done already (nothing to do, refused,
/// or converged alone), or ready for the group.
enum Gather<'f> {
    Done(Result<Outcome, ApplyError>),
    Ready(Box<Gathered<'f>>, Box<Locked>),
}

/// A site's transaction between barriers.
struct Live<'t> {
    phased: Phased<'t>,
    wants: Wants,
    point: Option<u64>,
    /// Set when a phase or a barrier failed: the change was undone then.
    failed: Option<ApplyError>,
}

impl<'f> Worker<'_, 'f> {
    /// Runs `mine` (index in the batch, site) and returns their results.
    /// Every worker passes every barrier, sites or not.
    fn run(
        &self,
        mine: Vec<(usize, &'f Loaded<Site>, Locked)>,
    ) -> Vec<(usize, Result<Outcome, ApplyError>)> {
        let mut out = Vec::new();
        let mut gathered = Vec::new();
        let mut locks = Vec::new();
        for (index, site, locked) in mine {
            match self.gather(index, site, locked) {
                Gather::Done(r) => out.push((index, r)),
                Gather::Ready(g, l) => {
                    gathered.push(*g);
                    locks.push(*l);
                }
            }
        }
        let applying: Vec<Applying<'_>> = gathered
            .iter()
            .map(|g| Applying {
                name: &g.name,
                site: g.site,
                ctx: &g.ctx,
                plan: &g.plan,
                opts: self.opts,
                by: g.by.clone(),
            })
            .collect();
        // Staging, the health check before, the pre hooks and the journal,
        // each site as it would alone.
        let mut begun: Vec<Option<Begun<'_>>> = Vec::new();
        for ((a, locked), g) in applying.iter().zip(&locks).zip(&gathered) {
            match a.begin(locked) {
                Ok(b) => begun.push(Some(b)),
                Err(e) => {
                    out.push((g.index, Err(e.at(&g.name))));
                    begun.push(None);
                }
            }
        }
        let points = self.transact(&locks, &begun, &gathered);
        // The tail of each change (judged, rolled back or finished), its
        // journal's removal made durable by the last barrier.
        let mut ends = Vec::new();
        let mut wants: Vec<Wants> = Vec::new();
        for (((a, locked), b), (g, point)) in applying
            .iter()
            .zip(locks.iter_mut())
            .zip(begun)
            .zip(gathered.iter().zip(points))
        {
            let Some(b) = b else { continue };
            let mut w = Wants::default();
            let r = a
                .end(locked, b, point, Some(&mut w))
                .map_err(|e| e.at(&g.name));
            if r.is_ok() {
                self.group.touch(&g.devs);
            }
            // What the change wrote goes into the site's index, as
            // `converge_site` does for one site (a cache: no barrier).
            if let Some(written) = locked.written.take() {
                super::written::record(locked, written);
            }
            let locked: &Locked = locked;
            ends.push((g.index, r, locked));
            wants.push(w);
        }
        let pass: Vec<(&crate::confined::Root, &Wants)> = ends
            .iter()
            .zip(&wants)
            .map(|((_, _, l), w)| (&l.root, w))
            .collect();
        let synced = self.group.barrier("group: finish", &pass);
        for ((index, r, locked), s) in ends.into_iter().zip(synced) {
            let r = match (r, s) {
                (Ok(Outcome::Changed { point, .. }), Err(e)) => Err(super::failed(
                    &locked.site,
                    format!(
                        "the change committed (point {point}), but removing its journal did not reach the disk ({e}); the next command completes it"
                    ),
                )),
                (r, _) => r,
            };
            out.push((index, r));
        }
        out
    }

    /// The plan of a site locked and recovered ([`lock_all`]) and its
    /// checks, as [`super::converge_site`] does; a change that cannot join
    /// a group converges alone here.
    fn gather(&self, index: usize, site: &'f Loaded<Site>, mut locked: Locked) -> Gather<'f> {
        let name = site.site.to_string();
        let fail = |e: ApplyError| Gather::Done(Err(e.at(&name)));
        let ctx = match SiteContext::gather(self.fleet, site, self.opts.state_dir, None) {
            Ok(c) => c,
            Err(e) => return fail(context_error(&name, e)),
        };
        if !ctx.adopted() {
            return fail(ApplyError::NotAdopted { site: name.clone() });
        }
        let opts = self.opts;
        let plan = ctx.plan_to_apply(opts.clock.start(), opts.forced, opts.forced_fix);
        if let Err(e) = check_saved(opts.saved, &name, &plan) {
            return fail(e);
        }
        if let Some(refused) =
            refusal(&name, &plan).or_else(|| unmet_request(&name, &ctx, &plan, opts))
        {
            return fail(refused);
        }
        if !plan.has_changes() {
            progress(&locked.state, &name, "unchanged", 100, Some(&plan), None);
            return Gather::Done(Ok(Outcome::Unchanged));
        }
        let by = By::here(opts.via);
        let applying = Applying {
            name: &name,
            site,
            ctx: &ctx,
            plan: &plan,
            opts,
            by: by.clone(),
        };
        let release = applying.release();
        let alone = locked.layout != Layout::InPlace
            || release.is_some_and(|r| r.serialize.is_some())
            || !applying.migrations(release).is_empty();
        if alone {
            // A link swap, migrations (complete only once they pass) or a
            // host-wide lock (which a batch would hold across barriers
            // while another site of it waits): the change runs by itself.
            return Gather::Done(applying.apply(&mut locked).map_err(|e| e.at(&name)));
        }
        let devs = match self.group.join(&locked.root, locked.state.dir()) {
            Ok(d) => d,
            Err(e) => {
                return fail(super::failed(
                    &name,
                    format!("joining the group commit: {e}"),
                ));
            }
        };
        Gather::Ready(
            Box::new(Gathered {
                index,
                name,
                site,
                ctx,
                plan,
                by,
                devs,
            }),
            Box::new(locked),
        )
    }

    /// The transactions of the begun changes, phase by phase with a
    /// barrier after each. Returns each site's point, or why its change
    /// failed (and was undone at once, as [`super::execute_or_undo`] does).
    fn transact(
        &self,
        locks: &[Locked],
        begun: &[Option<Begun<'_>>],
        gathered: &[Gathered<'_>],
    ) -> Vec<Result<u64, ApplyError>> {
        let now = self.opts.clock.now();
        let mut lives: Vec<Option<Live<'_>>> = locks
            .iter()
            .zip(begun)
            .map(|(locked, b)| {
                let b = b.as_ref()?;
                Some(Live {
                    phased: Phased::new(
                        &locked.root,
                        &locked.state,
                        &b.points,
                        &locked.steps,
                        &b.journal,
                    ),
                    wants: Wants::default(),
                    point: None,
                    failed: None,
                })
            })
            .collect();
        let by_site = |i: usize| &gathered[i].by;
        for (phase, barrier) in PHASES.iter().enumerate() {
            for (i, live) in lives.iter_mut().enumerate() {
                let Some(live) = live.as_mut().filter(|l| l.failed.is_none()) else {
                    continue;
                };
                live.wants = Wants::default();
                let r = match phase {
                    0 => live.phased.stage(&mut live.wants),
                    1 => live.phased.name(&mut live.wants),
                    2 => live.phased.replace(None, &mut live.wants),
                    3 => live.phased.commit(&mut live.wants).map(|p| {
                        live.point = Some(p);
                    }),
                    _ => match live.point {
                        Some(p) => live.phased.record(p, &mut live.wants),
                        None => Ok(()),
                    },
                };
                match r {
                    Ok(()) => self.group.touch(&gathered[i].devs),
                    Err(e) => {
                        live.failed = Some(undo(&locks[i], &locks[i].steps, &e, by_site(i), now));
                    }
                }
            }
            let active: Vec<usize> = (0..lives.len())
                .filter(|i| lives[*i].as_ref().is_some_and(|l| l.failed.is_none()))
                .collect();
            let synced = {
                let pass: Vec<(&crate::confined::Root, &Wants)> = active
                    .iter()
                    .filter_map(|i| Some((&locks[*i].root, &lives[*i].as_ref()?.wants)))
                    .collect();
                self.group.barrier(barrier, &pass)
            };
            for (i, r) in active.into_iter().zip(synced) {
                if let (Err(e), Some(live)) = (r, lives[i].as_mut()) {
                    let e = TxnError::Io {
                        what: (*barrier).to_owned(),
                        source: e,
                    };
                    live.failed = Some(undo(&locks[i], &locks[i].steps, &e, by_site(i), now));
                }
            }
        }
        lives
            .into_iter()
            .zip(gathered)
            .map(|(live, g)| match live {
                Some(Live {
                    failed: Some(e), ..
                }) => Err(e),
                Some(Live { point: Some(p), .. }) => Ok(p),
                _ => Err(super::failed(
                    &g.name,
                    "the change did not reach its commit step",
                )),
            })
            .collect()
    }
}
