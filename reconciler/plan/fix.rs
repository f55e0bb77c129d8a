//! Planning one hot fix (SPEC §4.3): whether the site takes it (its
//! targets, opt-in, window, quarantine), then every op tried in order on a
//! copy of the working tree, so a fix lands whole or not at all.
//! Pure, like the rest of the planner.

use std::collections::BTreeMap;

use super::work::Work;
use super::{
    Action, ActionKind, FileChange, FileData, FileOp, Held, HeldCode, Installed, SiteInput, choose,
    fix_checksum, preview, through_link,
};
use crate::fixops::{self, FileState};
use crate::model::values::Version;
use crate::model::words::{FixKind, HotfixLevel, Severity};
use crate::model::{Fix, Op, WriteOp};
use crate::policy::{Effective, Provenance};

/// What planning a fix found.
pub(super) enum FixOutcome {
    /// It does not concern the site, or changes nothing.
    Skip,
    /// It concerns the site but is not done, and why.
    Held(Held),
    /// Its changes.
    Action(Action),
}

/// Why a fix is held, before the item it names is known: a code and a
/// sentence.
type Refusal = (HeldCode, String);

/// The files an op looked at, each with what the op found there.
type States = Vec<(String, FileState)>;

/// Plans `fix` on top of `work` (the release and the fixes before it),
/// for a site that will run `version`; on an action, `work` holds its
/// result.
pub(super) fn plan_fix(
    input: &SiteInput<'_>,
    work: &mut Work<'_>,
    installed: &Installed,
    version: &Version,
    fix: &Fix,
) -> FixOutcome {
    if !concerns(input, version, fix) {
        return FixOutcome::Skip;
    }
    let held = |(code, reason): Refusal| {
        FixOutcome::Held(Held {
            item: format!("fix {}", fix.id),
            code,
            reason,
        })
    };
    if let Err(refusal) = admit(input, installed, fix) {
        return held(refusal);
    }
    let mut trial = Trial {
        work: work.clone(),
        changes: BTreeMap::new(),
        binaries: Vec::new(),
        // A regex op that no longer matches its own result is still applied.
        previously_applied: installed.fixes.contains_key(&fix.id),
    };
    for (n, op) in fix.ops.iter().enumerate() {
        let states = match op {
            Op::Write(w) | Op::Add(w) => trial.write(input, fix, w, matches!(op, Op::Add(_))),
            Op::Replace(_) | Op::Regex(_) | Op::Delete(_) => trial.edit_matching(op),
        };
        let states = match states {
            Ok(states) => states,
            Err(refusal) => return held(refusal),
        };
        trial.binaries.extend(
            states
                .iter()
                .filter(|(_, s)| *s == FileState::Binary)
                .map(|(p, _)| p.clone()),
        );
        if let Some((code, why)) = unmet(n, op, &states) {
            return held((code, format!("{}: {why}", fix.title)));
        }
    }
    *work = trial.work;
    action(fix, trial.changes, &trial.binaries)
}

/// Whether `fix` is meant for this site at all: its installed versions,
/// not yet fixed in `version`, and the labels its selector names.
fn concerns(input: &SiteInput<'_>, version: &Version, fix: &Fix) -> bool {
    fix.applies_to.matches(version)
        && fix.fixed_in.as_ref().is_none_or(|f| f > version)
        && fix
            .selector
            .iter()
            .all(|(k, v)| input.labels.get(k) == Some(v))
}

/// The gates a fix that concerns the site must pass before its ops are
/// tried: the site's opt-in, the window, a quarantine, and a fix that
/// changed in the catalog after it was applied.
fn admit(input: &SiteInput<'_>, installed: &Installed, fix: &Fix) -> Result<(), Refusal> {
    fix_opt_in(input.effective, fix)
        .map_err(|(code, why)| (code, format!("{}: {why}", fix.title)))?;
    // The window holds fixes too, except critical ones where the policy
    // lets urgent changes through.
    if let Some(w) = &input.effective.window.value
        && !choose::in_window(w, input.now)
        && !(fix.severity == Severity::Critical && input.effective.urgent_bypass.value)
    {
        return Err((
            HeldCode::OutsideWindow,
            format!("{} waits for the maintenance window ({w})", fix.title),
        ));
    }
    let checksum = fix_checksum(fix);
    if input.quarantined_fixes.get(&fix.id) == Some(&checksum)
        && input.forced_fix != Some(fix.id.as_str())
    {
        return Err((
            HeldCode::Quarantined,
            format!(
                "{} failed on this site and was rolled back; it waits for the catalog to change it, or run `sitekeeper apply --fix {}` to try it again",
                fix.title, fix.id
            ),
        ));
    }
    if let Some(applied) = installed.fixes.get(&fix.id)
        && applied != &checksum
    {
        return Err((
            HeldCode::FixConflict,
            format!(
                "{} changed in the catalog after it was applied; it is not applied again by itself",
                fix.id
            ),
        ));
    }
    Ok(())
}

/// Whether the site takes this fix at all, or the held item saying why not.
fn fix_opt_in(e: &Effective, fix: &Fix) -> Result<(), Refusal> {
    let capped = |from: &Provenance, note: &Option<String>| {
        note.is_some() && matches!(from, Provenance::Policy { .. })
    };
    let wanted = match fix.severity {
        Severity::Critical => HotfixLevel::Critical,
        Severity::Normal => HotfixLevel::All,
    };
    if e.hotfixes.value < wanted {
        let code = if capped(&e.hotfixes.from, &e.hotfixes.note) {
            HeldCode::PolicyCeiling
        } else {
            HeldCode::NotOptedIn
        };
        return Err((
            code,
            format!(
                "a {} fix; the site takes hot fixes: {}",
                fix.severity, e.hotfixes.value
            ),
        ));
    }
    let (needed, setting) = match fix.kind {
        FixKind::Fix => return Ok(()),
        FixKind::Diagnostic => ("diagnostics", &e.diagnostics),
        FixKind::Access => ("vendor_access", &e.vendor_access),
    };
    if !setting.value {
        let code = if capped(&setting.from, &setting.note) {
            HeldCode::PolicyCeiling
        } else {
            HeldCode::NotOptedIn
        };
        return Err((
            code,
            format!("a {} fix needs opt_in.{needed}: true", fix.kind),
        ));
    }
    Ok(())
}

/// A fix held because a content it needs cannot be read.
fn unreadable(error: String) -> Refusal {
    (
        HeldCode::FixTargetMissing,
        format!("its content cannot be read: {error}"),
    )
}

/// A fix being tried: a copy of the working tree with its ops applied so
/// far, the changes they make, and the binary files text ops left alone.
struct Trial<'w> {
    work: Work<'w>,
    changes: BTreeMap<String, FileChange>,
    binaries: Vec<String>,
    /// The site has this fix already.
    previously_applied: bool,
}

impl Trial<'_> {
    /// A `replace`, `regex` or `delete` op on every file its globs match;
    /// globs that match nothing are reported missing.
    fn edit_matching(&mut self, op: &Op) -> Result<States, Refusal> {
        let globs = op.files();
        let targets = self.work.matching(globs);
        let mut states = Vec::new();
        if targets.is_empty() {
            states.extend(globs.iter().map(|g| (g.to_string(), FileState::Missing)));
        }
        for path in targets {
            if let Op::Delete(_) = op {
                if let Some(c) = self.work.set(&path, None) {
                    self.changes.entry(path.clone()).or_insert(c);
                }
                states.push((path, FileState::Applicable));
                continue;
            }
            if let Some(state) = self.edit(&path, op)? {
                states.push((path, state));
            }
        }
        Ok(states)
    }

    /// One text edit (`replace` or `regex`) of `path`, and what it found;
    /// `None` for a symbolic link, whose "content" is its target, which
    /// text ops never edit.
    fn edit(&mut self, path: &str, op: &Op) -> Result<Option<FileState>, Refusal> {
        let Some(current) = self.work.content(path).map_err(unreadable)? else {
            return Ok(Some(FileState::Missing));
        };
        if current.symlink {
            return Ok(None);
        }
        let bytes = current.bytes().unwrap_or_default();
        let outcome = match op {
            Op::Replace(r) => fixops::replace(bytes, r),
            Op::Regex(r) => fixops::regex(bytes, r),
            Op::Write(_) | Op::Add(_) | Op::Delete(_) => return Ok(None),
        };
        let state = match outcome.state {
            FileState::Conflict if self.previously_applied && matches!(op, Op::Regex(_)) => {
                FileState::Applied
            }
            s => s,
        };
        if let Some(bytes) = outcome.content
            && let Some(c) = self.work.set(
                path,
                Some(FileData::new(bytes, current.mode, current.symlink)),
            )
        {
            merge_change(&mut self.changes, c);
        }
        Ok(Some(state))
    }

    /// A `write` (or, with `add_only`, an `add`) of one whole file, never
    /// under a preserved path nor through a symbolic link.
    fn write(
        &mut self,
        input: &SiteInput<'_>,
        fix: &Fix,
        w: &WriteOp,
        add_only: bool,
    ) -> Result<States, Refusal> {
        let path = w.path.to_string();
        if crate::inventory::is_preserved(input.preserve, &path) {
            return Ok(Vec::new());
        }
        if let Some(link) = through_link(input.inventory, &path) {
            return Err((
                HeldCode::FixConflict,
                format!(
                    "{}: {path} lies under {link}, which is a symbolic link on this site; sitekeeper never writes through links",
                    fix.title
                ),
            ));
        }
        let new = match (&w.content, &w.source) {
            (Some(text), _) => Ok(text.clone().into_bytes()),
            (None, Some(src)) => input.contents.fix_source(src.as_str()),
            (None, None) => Err("no content".to_owned()),
        }
        .map_err(unreadable)?;
        let current = self.work.content(&path).map_err(unreadable)?;
        let now = current.as_ref().and_then(|c| c.bytes());
        let state = if add_only {
            fixops::add(now)
        } else {
            fixops::write(now, &new)
        };
        if state == FileState::Applicable {
            // A link's 0o777 is no file mode: a file written in place of a
            // link gets the mode of a new file, never a world-writable one.
            let mode = current
                .as_ref()
                .filter(|c| !c.symlink)
                .map_or(0o644, |c| c.mode);
            if let Some(c) = self.work.set(&path, Some(FileData::new(new, mode, false))) {
                merge_change(&mut self.changes, c);
            }
        }
        Ok(vec![(path, state)])
    }
}

/// Why op `n` does not hold, if its `expect` is not met by what it found:
/// it conflicts with customised files, or it found nothing to change.
fn unmet(n: usize, op: &Op, states: &States) -> Option<Refusal> {
    let only: Vec<FileState> = states.iter().map(|(_, s)| *s).collect();
    if fixops::expect_met(op.expect(), &only) {
        return None;
    }
    let conflicts: Vec<String> = states
        .iter()
        .filter(|(_, s)| *s == FileState::Conflict)
        .map(|(p, _)| p.clone())
        .collect();
    Some(if conflicts.is_empty() {
        let missing: Vec<String> = states.iter().map(|(p, _)| p.clone()).collect();
        (
            HeldCode::FixTargetMissing,
            format!(
                "op {} ({}) finds no file to change ({})",
                n + 1,
                op.name(),
                preview(&missing)
            ),
        )
    } else {
        (
            HeldCode::FixConflict,
            format!(
                "op {} ({}) does not match customised file(s) {}",
                n + 1,
                op.name(),
                preview(&conflicts)
            ),
        )
    })
}

/// The fix's action from the changes its ops made; a fix whose result is
/// already there changes nothing and is skipped.
fn action(fix: &Fix, changes: BTreeMap<String, FileChange>, binaries: &[String]) -> FixOutcome {
    let files: Vec<FileChange> = changes
        .into_values()
        .filter(|c| c.before != c.after)
        .collect();
    if files.is_empty() {
        return FixOutcome::Skip;
    }
    let mut reason = fix.reason.clone();
    if !binaries.is_empty() {
        reason.push_str(&format!(
            " (binary files left alone: {})",
            preview(binaries)
        ));
    }
    FixOutcome::Action(Action {
        kind: ActionKind::Fix,
        id: fix.id.clone(),
        reason,
        files,
    })
}

/// The first of `earlier` fixes that would change `work` again: what a
/// fix just applied to `work` undid. Each is tried on a copy.
pub(super) fn undoes<'a>(
    input: &SiteInput<'_>,
    work: &Work<'_>,
    installed: &Installed,
    version: &Version,
    earlier: &'a [Fix],
) -> Option<&'a str> {
    earlier.iter().find_map(|e| {
        let mut probe = work.clone();
        matches!(
            plan_fix(input, &mut probe, installed, version, e),
            FixOutcome::Action(_)
        )
        .then_some(e.id.as_str())
    })
}

/// Two edits of one file within a fix are one change: first before, last after.
fn merge_change(changes: &mut BTreeMap<String, FileChange>, c: FileChange) {
    match changes.get_mut(&c.path) {
        Some(existing) => {
            existing.after = c.after;
            existing.new = c.new;
            existing.op = match (existing.before, existing.after) {
                (None, _) => FileOp::Add,
                (_, None) => FileOp::Delete,
                _ => FileOp::Modify,
            };
        }
        None => {
            changes.insert(c.path.clone(), c);
        }
    }
}
