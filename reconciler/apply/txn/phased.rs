//! One site's `in_place` transaction cut at its durability points, for a
//! group commit (`apply/group.rs`): each phase writes without fsync and
//! says what must be durable ([`Wants`]) before the next phase may run;
//! the group's barrier between two phases makes it so for many sites at
//! once. The journal, the commit step (the point's ref) and recovery are
//! those of [`super::execute`], so a crash at any instant is recovered
//! the same way, by the site's own journal.
//!
//! The phases, and why each barrier is where it is:
//!
//! 1. `stage`: the point's objects as a pack under temporary names, the
//!    point's ref under a temporary name, the new contents in the stage
//!    directory and the journal in a temporary file. Barrier: their data
//!    is durable before anything gives them their names, so no name can
//!    survive a crash without its bytes (an empty journal, pack or ref
//!    would stop every later command).
//! 2. `name`: the pack, then the journal get their names. Barrier: the
//!    journal and every content it names are durable before the first
//!    file of the site changes, so recovery can always undo.
//! 3. `replace`: the site's files are renamed into place. Barrier: their
//!    directories are durable before the commit step, so a committed
//!    change cannot lose a rename.
//! 4. `commit`: the ref is renamed into `refs/points/`: the commit step.
//!    Barrier: the point is durable before the ledger says it exists.
//! 5. `record`: the ledger records. Barrier: they are durable before the
//!    journal, the only other place recovery would find them, goes.
//! 6. [`finish_deferred`]: the stage and the journal go. Barrier: only so
//!    that the next command does not find the journal again (were it
//!    found, recovery would complete the committed change once more,
//!    which changes nothing but a `recovery` ledger record).

use std::path::PathBuf;

use super::{Journal, TxnError, io, parent, prepare, staged};
use crate::apply::fsops::Steps;
use crate::apply::group::{Durable, Wants};
use crate::confined::Root;
use crate::inventory::STAGE_DIR;
use crate::store::pack::Unnamed;
use crate::store::{Points, Prepared, SiteState};

/// A transaction between its phases.
pub struct Phased<'t> {
    root: &'t Root,
    state: &'t SiteState,
    points: &'t Points,
    steps: &'t Steps,
    journal: &'t Journal,
    prepared: Option<Prepared>,
    pack: Option<Unnamed>,
    staged_ref: Option<PathBuf>,
    journal_tmp: Option<PathBuf>,
}

fn order(what: &str) -> TxnError {
    TxnError::Io {
        what: format!("{what}: a phase of the group commit ran out of order"),
        source: std::io::Error::other("out of order"),
    }
}

impl<'t> Phased<'t> {
    /// A transaction of `journal` (every blob of which, old and new, is in
    /// `points` or queued there), not started.
    pub fn new(
        root: &'t Root,
        state: &'t SiteState,
        points: &'t Points,
        steps: &'t Steps,
        journal: &'t Journal,
    ) -> Self {
        Self {
            root,
            state,
            points,
            steps,
            journal,
            prepared: None,
            pack: None,
            staged_ref: None,
            journal_tmp: None,
        }
    }

    /// Phase 1: everything written under a name nothing reads yet.
    pub fn stage(&mut self, wants: &mut Wants) -> Result<(), TxnError> {
        let (root, steps, journal) = (self.root, self.steps, self.journal);
        if journal.swap.is_some() {
            // The symlink layout swaps a link instead; it is never grouped.
            return Err(TxnError::Io {
                what: "the symlink layout is not grouped".into(),
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            });
        }
        // The point's trees and commit, queued with the change's contents.
        let prepared = prepare(self.points, journal)?;
        steps.step("clear stage")?;
        root.remove_tree(STAGE_DIR).map_err(io("clear stage"))?;
        steps.step("create stage")?;
        let top = root.dir("").map_err(io("create stage"))?;
        rustix::fs::mkdirat(&top, STAGE_DIR, rustix::fs::Mode::from_raw_mode(0o755))
            .map_err(|e| io("create stage")(e.into()))?;
        if crate::durability::active() {
            crate::durability::made_dir(&crate::durability::at(&top, STAGE_DIR));
        }
        wants.add(Durable::SiteDir(String::new()));
        wants.add(Durable::SiteDir(STAGE_DIR.to_owned()));
        for (i, c) in journal.changes.iter().enumerate() {
            if let Some(f) = c.new {
                // Read while the contents are still queued: once packed
                // under a temporary name they are unreadable until named.
                let bytes = self.points.read_blob(f.blob)?;
                steps.step("stage")?;
                root.create_unsynced(&staged(i), &bytes, f.mode, f.symlink)
                    .map_err(io(format!("{}: stage", c.path)))?;
                if !f.symlink {
                    wants.add(Durable::SiteFile(staged(i)));
                }
            }
        }
        steps.step("pack")?;
        self.staged_ref = Some(self.points.stage_ref(&prepared, &journal.id)?);
        self.prepared = Some(prepared);
        if let Some(r) = &self.staged_ref {
            wants.add(Durable::StateFile(r.clone()));
        }
        self.pack = self.points.flush_unnamed(&journal.id)?;
        if let Some(p) = &self.pack {
            wants.add(Durable::StateFile(p.pack.clone()));
            wants.add(Durable::StateFile(p.idx.clone()));
        }
        steps.step("journal")?;
        let (tmp, made_dir) = write_journal_unsynced(self.state, journal)?;
        if made_dir {
            wants.add(Durable::StateDir(self.state.dir().to_owned()));
        }
        wants.add(Durable::StateFile(tmp.clone()));
        self.journal_tmp = Some(tmp);
        Ok(())
    }

    /// Phase 2: the pack, then the journal, take their names. From the
    /// barrier after it on, recovery knows what to finish or undo.
    pub fn name(&mut self, wants: &mut Wants) -> Result<(), TxnError> {
        self.steps.step("name journal")?;
        if let Some(pack) = self.pack.take() {
            let dir = pack.dir().to_owned();
            self.points.install(pack)?;
            wants.add(Durable::StateDir(dir));
        }
        let tmp = self.journal_tmp.take().ok_or_else(|| order("name"))?;
        let path = self.state.journal_path();
        let op = || std::fs::rename(&tmp, &path);
        if crate::durability::active() {
            let from = crate::durability::real(&tmp);
            crate::durability::rename(&from, &crate::durability::real(&path), op)
        } else {
            op()
        }
        .map_err(io("write journal"))?;
        if let Some(dir) = path.parent() {
            wants.add(Durable::StateDir(dir.to_owned()));
        }
        Ok(())
    }

    /// Phase 3: the site's files change, as in [`super::execute`].
    pub fn replace(
        &mut self,
        progress: Option<&dyn crate::inventory::Progress>,
        wants: &mut Wants,
    ) -> Result<(), TxnError> {
        let (root, steps, journal) = (self.root, self.steps, self.journal);
        if let Some(p) = progress {
            p.start(journal.changes.len() as u64);
        }
        super::replace_all(root, steps, journal, progress)?;
        let dirs: std::collections::BTreeSet<&str> =
            journal.changes.iter().map(|c| parent(&c.path)).collect();
        for dir in dirs {
            steps.step("fsync dir")?;
            wants.add(Durable::SiteDir(dir.to_owned()));
        }
        Ok(())
    }

    /// Phase 4, the commit step: the point's ref takes its name.
    pub fn commit(&mut self, wants: &mut Wants) -> Result<u64, TxnError> {
        self.steps.step("commit point")?;
        let prepared = self.prepared.take().ok_or_else(|| order("commit"))?;
        let staged = self.staged_ref.take().ok_or_else(|| order("commit"))?;
        let point = self.points.install_ref(prepared, &staged)?;
        wants.add(Durable::StateDir(self.points.refs_dir()));
        Ok(point)
    }

    /// Phase 5: the ledger records of the committed `point`.
    pub fn record(&mut self, point: u64, wants: &mut Wants) -> Result<(), TxnError> {
        let ledger = self.state.ledger();
        let existed = ledger.path().exists();
        let existing = ledger.read()?;
        for r in &self.journal.records {
            if existing
                .iter()
                .any(|e| e.point == Some(point) && e.kind == r.kind && e.id == r.id)
            {
                continue;
            }
            self.steps.step("ledger")?;
            let mut r = r.clone();
            r.point = Some(point);
            ledger.append_unsynced(r)?;
        }
        wants.add(Durable::StateFile(ledger.path().to_owned()));
        if !existed {
            wants.add(Durable::StateDir(self.state.dir().to_owned()));
        }
        Ok(())
    }
}

/// Writes the journal to a temporary file beside its place, without
/// fsync; the name is the one [`crate::store::atomic_write`] gives its
/// temporary files, so recovery removes what a crash leaves of it.
/// Returns it, and whether the journal's directory had to be made.
fn write_journal_unsynced(
    state: &SiteState,
    journal: &Journal,
) -> Result<(PathBuf, bool), TxnError> {
    let path = state.journal_path();
    let dir = path.parent().unwrap_or(state.dir()).to_owned();
    let made = !dir.is_dir();
    if made {
        std::fs::create_dir_all(&dir).map_err(io("journal directory"))?;
        if crate::durability::active() {
            crate::durability::made_dir(&crate::durability::real(&dir));
        }
    }
    let text = serde_json::to_vec_pretty(journal).map_err(|e| io("journal")(e.into()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(&dir)
        .map_err(io("write journal"))?;
    let noted = crate::durability::active().then(|| crate::durability::real(tmp.path()));
    if let Some(p) = &noted {
        crate::durability::created(p);
    }
    std::io::Write::write_all(&mut tmp, &text).map_err(io("write journal"))?;
    if let Some(p) = &noted {
        crate::durability::wrote(p, 0);
    }
    let (_, tmp) = tmp.keep().map_err(|e| io("write journal")(e.error))?;
    Ok((tmp, made))
}

/// [`super::finish`] without the fsync: the stage and the journal go,
/// and the journal's directory is what the last barrier makes durable.
pub fn finish_deferred(
    root: &Root,
    state: &SiteState,
    steps: &Steps,
    wants: &mut Wants,
) -> Result<(), TxnError> {
    steps.step("remove stage")?;
    root.remove_tree(STAGE_DIR).map_err(io("remove stage"))?;
    steps.step("remove journal")?;
    let path = state.journal_path();
    let op = || match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    if crate::durability::active() {
        crate::durability::remove(&crate::durability::real(&path), op)
    } else {
        op().map(drop)
    }
    .map_err(io("remove journal"))?;
    if let Some(dir) = path.parent() {
        wants.add(Durable::StateDir(dir.to_owned()));
    }
    Ok(())
}
