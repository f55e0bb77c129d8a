//! The planner: a pure function from a site's desired and observed state
//! to what sitekeeper would do to it, and why (SPEC §4).
//!
//! Inputs come in as values ([`SiteInput`]) and contents through the
//! [`Contents`] trait, the clock included, so every rule is a unit test and
//! the same inputs give the same plan, byte for byte. Rendering lives in
//! [`render`]; nothing here writes anywhere.

pub mod choose;
mod fix;
pub mod render;
mod types;
mod work;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::inventory::Inventory;

use crate::load::payload::Payload;
use crate::model::Fix;
use crate::model::hash::ContentHash;
use crate::model::values::Version;
use crate::model::words::{ChangeLevel, DriftMode};
use fix::{FixOutcome, plan_fix, undoes};
pub use types::{
    Action, ActionKind, Contents, Detection, FailedSite, FileChange, FileOp, Held, HeldCode,
    Installed, Need, PREFLIGHT_WAITS, Plan, PreflightFailure, SiteInput, SitePlan, Space,
};
use work::Work;
pub use work::{Body, FileData};

/// Why `need` does not fit in `space`, if it does not: the `space`
/// preflight check, shared by the planner and by `apply`, which measures
/// again just before it writes.
pub fn shortfall(need: Need, space: Space) -> Option<String> {
    // A margin for the journal, directories and the point's trees.
    let changed = need.contents.saturating_add(1 << 20);
    let staged = changed.saturating_add(need.tree_bytes);
    if space.site_bytes < staged {
        return Some(format!(
            "the site's file system has {} bytes free; the change needs {staged} to stage its files (hint: free space on it, then run the command again)",
            space.site_bytes
        ));
    }
    // Staged files need inodes as well as bytes.
    let files = need
        .files
        .saturating_add(need.tree_entries)
        .saturating_add(16);
    if let Some(inodes) = space.site_inodes
        && inodes < files
    {
        return Some(format!(
            "the site's file system has {inodes} free inodes; the change needs about {files} to stage its files (hint: remove files on it, or give it more inodes, then run the command again)"
        ));
    }
    let recorded = changed.saturating_add(need.snapshot);
    if space.state_bytes < recorded {
        let what = if need.snapshot > 0 {
            "the rollback point and its data snapshot need"
        } else {
            "the rollback point needs"
        };
        return Some(format!(
            "the state dir has {} bytes free; {what} up to {recorded} (hint: free space on it, then run the command again)",
            space.state_bytes
        ));
    }
    None
}

/// `6690` → `6,690`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Finds the release whose payload a tree resembles most.
pub fn detect<'a>(
    inventory: &Inventory,
    payloads: impl Iterator<Item = (&'a Version, &'a Payload)>,
) -> Option<Detection> {
    payloads
        .map(|(version, payload)| {
            let matching = payload
                .files
                .iter()
                .filter(|(path, f)| {
                    inventory
                        .entries
                        .get(*path)
                        .is_some_and(|e| e.blob() == f.blob)
                })
                .count();
            Detection {
                version: version.clone(),
                matching,
                total: payload.files.len(),
            }
        })
        .filter(|d| d.total > 0)
        // Best share of matching files; on a tie, more matches, then the newer release.
        .max_by(|a, b| {
            let share = |d: &Detection| d.matching as f64 / d.total as f64;
            share(a)
                .total_cmp(&share(b))
                .then(a.matching.cmp(&b.matching))
                .then(a.version.cmp(&b.version))
        })
}

/// The checksum of a fix as written: its canonical JSON, so any change to
/// any field changes it.
pub fn fix_checksum(fix: &Fix) -> String {
    let json = serde_json::to_vec(fix).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(json)))
}

/// Plans one site.
pub fn plan_site(input: &SiteInput<'_>) -> SitePlan {
    let mut plan = plan_trusted(input);
    if let Some(reason) = input.trust.untrusted() {
        distrust(&mut plan, reason);
    } else if let Some(reason) = input.failure_marker {
        hold_for_failure(&mut plan, reason);
    } else if input.adopted {
        let mut failures = input.preflight.to_vec();
        if let Some(space) = input.space
            && let Some(reason) = shortfall(need(input, &plan), space)
        {
            failures.push(PreflightFailure {
                check: "space".into(),
                reason,
                release: None,
            });
        }
        preflight(&mut plan, &failures);
    }
    plan
}

/// What `plan` needs to be staged: its new contents, and for the
/// `symlink` layout the release directory copied whole (its managed and
/// other files, as scanned).
fn need(input: &SiteInput<'_>, plan: &SitePlan) -> Need {
    let mut contents = BTreeMap::new();
    for f in plan.actions.iter().flat_map(|a| &a.files) {
        if let (Some(after), Some(new)) = (f.after, &f.new) {
            contents.insert(after, new.len() as u64);
        }
    }
    let (tree_bytes, tree_entries) = match input.effective.layout.value {
        crate::model::words::Layout::InPlace => (0, 0),
        crate::model::words::Layout::Symlink => {
            input
                .inventory
                .entries
                .values()
                .fold((0u64, 0u64), |(bytes, n), e| match e {
                    crate::inventory::Entry::File { size, .. } => (bytes + size, n + 1),
                    crate::inventory::Entry::Symlink { .. } => (bytes, n + 1),
                })
        }
    };
    Need {
        contents: contents.values().sum(),
        files: contents.len() as u64,
        tree_bytes,
        tree_entries,
        snapshot: 0,
    }
}

/// Holds everything while the site has a failure marker (SPEC §6.6): one
/// held item says what failed and how to clear it, each action waits. Held
/// even when nothing else would change, so `plan` says why the site is
/// frozen.
fn hold_for_failure(plan: &mut SitePlan, reason: &str) {
    let cause = Held {
        item: "failure marker".to_owned(),
        code: HeldCode::FailureMarker,
        reason: reason.to_owned(),
    };
    hold_every_action(
        plan,
        vec![cause],
        HeldCode::FailureMarker,
        FAILURE_MARKER_WAITS,
    );
}

/// Holds every action of `plan` with `code` and the reason `waits`, after
/// the `causes` that say why: the plan then changes nothing, and its
/// digest is of what it holds. An approval it asked for no longer matters.
fn hold_every_action(plan: &mut SitePlan, mut causes: Vec<Held>, code: HeldCode, waits: &str) {
    for action in plan.actions.drain(..) {
        causes.push(Held {
            item: action_item(&action),
            code,
            reason: waits.to_owned(),
        });
    }
    plan.held.retain(|h| h.code != HeldCode::ApprovalRequired);
    causes.append(&mut plan.held);
    plan.held = causes;
    plan.to_version = plan.from_version.clone();
    plan.plan_digest = digest(plan);
}

/// How a held action is named: `release 4.2.16`, `fix 0007-…`.
fn action_item(action: &Action) -> String {
    match action.kind {
        ActionKind::Upgrade => format!("release {}", action.id),
        ActionKind::Fix => format!("fix {}", action.id),
        ActionKind::RemoveFix => format!("removal of fix {}", action.id),
        ActionKind::RevertDrift => "drift revert".to_owned(),
    }
}

/// The reason of an action held by a failure marker.
const FAILURE_MARKER_WAITS: &str = "waits until the failure marker is resolved";

/// Holds a plan with changes whose preflight failed (SPEC §6.7): one held
/// item per failing check, and each action as a held item, so `plan`,
/// `status` and `apply` agree that nothing can be done yet. A plan with
/// nothing to do runs nothing, so its preflight does not matter; nor does
/// that of a site not adopted here, which nothing is applied to on this
/// machine (a reviewer's CI job plans sites that live elsewhere).
fn preflight(plan: &mut SitePlan, failures: &[PreflightFailure]) {
    let target = plan.to_version.as_deref();
    let relevant: Vec<&PreflightFailure> = failures
        .iter()
        .filter(|f| match &f.release {
            None => true,
            Some(v) => {
                plan.to_version != plan.from_version && Some(v.to_string().as_str()) == target
            }
        })
        .collect();
    if relevant.is_empty() || !plan.has_changes() {
        return;
    }
    let checks: Vec<Held> = relevant
        .iter()
        .map(|f| Held {
            item: f.check.clone(),
            code: HeldCode::Preflight,
            reason: f.reason.clone(),
        })
        .collect();
    hold_every_action(plan, checks, HeldCode::Preflight, PREFLIGHT_WAITS);
}

/// Holds everything a plan would do, with `untrusted_source` (SPEC §7): each
/// action becomes a held item, and one item for the source itself makes
/// sure that even a plan with nothing to do refuses `apply`. What the
/// untrusted commit would do stays visible to reviewers, but as `held`.
fn distrust(plan: &mut SitePlan, reason: &str) {
    let held = |item: String| Held {
        item,
        code: HeldCode::UntrustedSource,
        reason: reason.to_owned(),
    };
    let mut items = vec![held("source".to_owned())];
    for action in plan.actions.drain(..) {
        items.push(held(match action.kind {
            ActionKind::Upgrade => format!("release {}", action.id),
            ActionKind::Fix => format!("fix {}", action.id),
            ActionKind::RemoveFix => format!("removal of fix {}", action.id),
            ActionKind::RevertDrift => "drift revert".to_owned(),
        }));
    }
    // Nothing is done, so nothing needs an approval.
    plan.held.retain(|h| h.code != HeldCode::ApprovalRequired);
    items.append(&mut plan.held);
    plan.held = items;
    plan.to_version = plan.from_version.clone();
    plan.plan_digest = digest(plan);
}

/// Plans one site as if its sources were trusted (SPEC §4): adoption,
/// drift, the release, the drift revert, the fixes, and last the approval,
/// which covers the digest of everything before it.
fn plan_trusted(input: &SiteInput<'_>) -> SitePlan {
    let mut plan = SitePlan {
        site: input.name.to_owned(),
        plan_digest: String::new(),
        from_version: input.installed.as_ref().map(|i| i.version.to_string()),
        to_version: None,
        actions: Vec::new(),
        held: Vec::new(),
        adopted: input.adopted,
        drift: Vec::new(),
        notes: Vec::new(),
        catalog_commit: input.catalog_commit.map(str::to_owned),
    };
    if !input.adopted {
        not_adopted(input, &mut plan);
    }
    let Some(installed) = &input.installed else {
        plan.plan_digest = digest(&plan);
        return plan;
    };
    let mut work = Work::new(input);
    plan.drift = drift(input, installed);
    let drift_mode = input.effective.drift.value;
    if drift_mode == DriftMode::Block && !plan.drift.is_empty() {
        block_on_drift(&mut plan);
        return plan;
    }
    let (version, upgrade_level) = release(input, &mut work, installed, &mut plan);
    if drift_mode == DriftMode::Revert && !plan.drift.is_empty() {
        revert_drift(input, &mut work, installed, &mut plan);
    }
    let any_fix = fixes(input, &mut work, installed, &version, &mut plan);
    plan.to_version = Some(version.to_string());
    plan.plan_digest = digest(&plan);
    approval(input, &mut plan, upgrade_level, any_fix);
    plan
}

/// Holds a site not adopted yet, naming the release it looks like: its
/// plan shows what adoption would lead to, but nothing is applied.
fn not_adopted(input: &SiteInput<'_>, plan: &mut SitePlan) {
    let reason = match &input.detection {
        Some(d) => format!(
            "sitekeeper has not adopted {} yet; it {d}. Run `sitekeeper adopt {} --detect` (or --version V) before applying",
            input.name, input.name
        ),
        None => format!(
            "sitekeeper has not adopted {} and no release of the catalog resembles it",
            input.name
        ),
    };
    plan.held.push(Held {
        item: "site".into(),
        code: HeldCode::NotAdopted,
        reason,
    });
    if let Some(d) = &input.detection {
        plan.notes.push(d.to_string());
    }
}

/// Drift (SPEC §4.4): managed files that differ from the last rollback point.
fn drift(input: &SiteInput<'_>, installed: &Installed) -> Vec<String> {
    installed
        .snapshot
        .iter()
        .filter(|(path, blob)| input.inventory.entries.get(*path).map(|e| e.blob()) != Some(*blob))
        .map(|(path, _)| path.to_owned())
        .collect()
}

/// `drift: block` with local changes: the whole plan is held.
fn block_on_drift(plan: &mut SitePlan) {
    plan.held.push(Held {
        item: "site".into(),
        code: HeldCode::DriftBlocked,
        reason: format!(
            "{} managed file(s) changed locally ({}); with drift: block nothing is done until they are restored or adopted",
            plan.drift.len(),
            preview(&plan.drift)
        ),
    });
    plan.to_version = plan.from_version.clone();
    plan.plan_digest = digest(plan);
}

/// The target release (SPEC §4.2) and its upgrade, into `work` and `plan`.
/// Returns the version the site will run and the upgrade's level of
/// change, if it upgrades.
fn release(
    input: &SiteInput<'_>,
    work: &mut Work<'_>,
    installed: &Installed,
    plan: &mut SitePlan,
) -> (Version, Option<ChangeLevel>) {
    let gates = choose::Gates {
        effective: input.effective,
        catalog: input.catalog,
        now: input.now,
        quarantined: input.quarantined,
        forced: input.forced,
    };
    let choice = choose::choose(&installed.version, input.releases.iter(), &gates);
    plan.held.extend(choice.held);
    let Some((target, change, _class)) = choice.target else {
        return (installed.version.clone(), None);
    };
    match upgrade(input, work, &installed.version, &target) {
        Ok(action) => {
            plan.actions.extend(action);
            (target, Some(change))
        }
        Err(held) => {
            plan.held.push(held);
            (installed.version.clone(), None)
        }
    }
}

/// `drift: revert`: the drifted files the upgrade left alone go back to
/// the last rollback point's content.
fn revert_drift(
    input: &SiteInput<'_>,
    work: &mut Work<'_>,
    installed: &Installed,
    plan: &mut SitePlan,
) {
    let mut files = Vec::new();
    for path in &plan.drift {
        if work.touched(path) {
            continue;
        }
        let Some(blob) = installed.snapshot.get(path) else {
            continue;
        };
        match input.contents.point_blob(blob) {
            Ok(bytes) => {
                let mode = input
                    .inventory
                    .entries
                    .get(path)
                    .map_or(0o644, |e| match e {
                        crate::inventory::Entry::File { mode, .. } => *mode,
                        crate::inventory::Entry::Symlink { .. } => 0o777,
                    });
                if let Some(change) = work.set(path, Some(FileData::new(bytes, mode, false))) {
                    files.push(change);
                }
            }
            Err(e) => plan.notes.push(format!("cannot revert {path}: {e}")),
        }
    }
    if !files.is_empty() {
        plan.actions.push(Action {
            kind: ActionKind::RevertDrift,
            id: "drift".into(),
            reason: format!(
                "drift: revert puts {} locally changed file(s) back",
                files.len()
            ),
            files,
        });
    }
}

/// The fixes, in name order, re-evaluated against the release the site
/// will run. Returns whether any is applied.
fn fixes(
    input: &SiteInput<'_>,
    work: &mut Work<'_>,
    installed: &Installed,
    version: &Version,
    plan: &mut SitePlan,
) -> bool {
    let mut any_fix = false;
    for (n, fix) in input.fixes.iter().enumerate() {
        let before = work.clone();
        match plan_fix(input, work, installed, version, fix) {
            FixOutcome::Skip => {}
            FixOutcome::Held(h) => plan.held.push(h),
            FixOutcome::Action(a) => {
                match undoes(input, work, installed, version, &input.fixes[..n]) {
                    // Applying both would change the files again on every run
                    // (found by the property tests): keep the earlier fix's result.
                    Some(earlier) => {
                        *work = before;
                        plan.held.push(Held {
                        item: format!("fix {}", fix.id),
                        code: HeldCode::FixConflict,
                        reason: format!(
                            "{}: it changes what fix {earlier} did, so applying both would never settle (hint: the catalog should make one of them expect the other's result)",
                            fix.title
                        ),
                    });
                    }
                    None => {
                        any_fix = true;
                        plan.actions.push(a);
                    }
                }
            }
        }
    }
    any_fix
}

/// Approval: the plan's levels of change against the policy's
/// `require_approval`; a plan that needs one and whose digest the site's
/// approvals file does not list is held.
fn approval(
    input: &SiteInput<'_>,
    plan: &mut SitePlan,
    upgrade_level: Option<ChangeLevel>,
    any_fix: bool,
) {
    let mut levels = BTreeSet::new();
    if let Some(l) = upgrade_level {
        levels.insert(l);
    }
    if any_fix {
        levels.insert(ChangeLevel::Hotfix);
    }
    let needed: Vec<ChangeLevel> = input
        .effective
        .require_approval
        .value
        .iter()
        .copied()
        .filter(|l| levels.contains(l))
        .collect();
    let approved = input
        .approved
        .iter()
        .any(|a| a.plan_digest.as_str() == plan.plan_digest);
    if !needed.is_empty() && plan.has_changes() && !approved {
        let reason = approval_reason(input, plan, &needed);
        plan.held.push(Held {
            item: "plan".into(),
            code: HeldCode::ApprovalRequired,
            reason,
        });
    }
}

/// Why a plan waits for an approval: which levels need one, the digest to
/// approve and the file to list it in. When the file already approves other
/// digests, the plan changed after the review, and the reviewer must see
/// that: the newest of them is named, with who approved it and when, so
/// they can tell a stale approval from a missing one.
fn approval_reason(input: &SiteInput<'_>, plan: &SitePlan, needed: &[ChangeLevel]) -> String {
    let words: Vec<&str> = needed.iter().map(|l| l.as_str()).collect();
    let file = format!("approvals/{}.yaml", input.name);
    let ask = format!(
        "approve {} in {file} (sitekeeper approve {} --digest {} --by NAME)",
        plan.plan_digest, input.name, plan.plan_digest
    );
    let Some(last) = input.approved.last() else {
        return format!(
            "the policy requires an approved plan for {} changes; {ask}",
            words.join(" and ")
        );
    };
    let others = match input.approved.len() - 1 {
        0 => String::new(),
        1 => " (and 1 older digest)".to_owned(),
        n => format!(" (and {n} older digests)"),
    };
    let why = if plan.drift.is_empty() {
        "the catalog or the site's files moved".to_owned()
    } else {
        format!(
            "the site's files drifted ({} managed file(s) differ from the last rollback point: {}) or the catalog moved",
            plan.drift.len(),
            preview(&plan.drift)
        )
    };
    format!(
        "the policy requires an approved plan for {} changes; {file} approves {} (by {} at {}){others}, but the plan changed since it was approved: {why}, so that approval does not apply. The plan's digest is now {}; review it and {ask}",
        words.join(" and "),
        last.plan_digest,
        last.by,
        last.at,
        plan.plan_digest
    )
}

/// The ancestor of `path` that is a symbolic link on disk, if any: writing
/// there would go through the link, which sitekeeper never does.
fn through_link(inventory: &Inventory, path: &str) -> Option<String> {
    let mut prefix = path;
    while let Some((parent, _)) = prefix.rsplit_once('/') {
        if let Some(crate::inventory::Entry::Symlink { .. }) = inventory.entries.get(parent) {
            return Some(parent.to_owned());
        }
        prefix = parent;
    }
    None
}

/// Up to five paths for a sentence.
fn preview(paths: &[String]) -> String {
    let mut s = paths.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 5 {
        s.push_str(&format!(" and {} more", paths.len() - 5));
    }
    s
}

/// The upgrade's file changes, or why it is held.
fn upgrade(
    input: &SiteInput<'_>,
    work: &mut Work<'_>,
    from: &Version,
    to: &Version,
) -> Result<Option<Action>, Held> {
    let item = format!("release {to}");
    let fail = |e: String| Held {
        item: item.clone(),
        code: HeldCode::UpgradePath,
        reason: format!("the payload cannot be read: {e}"),
    };
    let base = input.contents.payload(from).unwrap_or_default();
    let target = input.contents.payload(to).map_err(fail)?;
    let revert = input.effective.drift.value == DriftMode::Revert;
    let paths = union_keys(&base.files, &target.files);
    let mut conflicts = Vec::new();
    let mut wanted: Vec<(String, Option<FileData>)> = Vec::new();
    for path in paths {
        if crate::inventory::is_preserved(input.preserve, path) {
            continue;
        }
        let i = base.files.get(path);
        let t = target.files.get(path);
        let same = |a: Option<&crate::load::payload::PayloadFile>,
                    b: Option<&crate::load::payload::PayloadFile>| match (a, b) {
            (Some(a), Some(b)) => {
                a.blob == b.blob
                    && (a.mode & 0o111 != 0) == (b.mode & 0o111 != 0)
                    && a.symlink == b.symlink
            }
            (None, None) => true,
            _ => false,
        };
        if same(i, t) {
            continue;
        }
        let d = input.inventory.entries.get(path).map(|e| e.blob());
        if d == t.map(|t| t.blob) && t.is_some() {
            continue;
        }
        if (d != i.map(|i| i.blob) && !revert) || through_link(input.inventory, path).is_some() {
            conflicts.push(path.clone());
            continue;
        }
        match t {
            Some(t) => {
                let bytes = input.contents.payload_blob(to, t.blob).map_err(fail)?;
                let data = work.payload_data(to, t.blob, bytes, t.mode, t.symlink);
                wanted.push((path.clone(), Some(data)));
            }
            None => wanted.push((path.clone(), None)),
        }
    }
    if !conflicts.is_empty() {
        return Err(Held {
            item,
            code: HeldCode::FixConflict,
            reason: format!(
                "{to} changes {} file(s) that were changed locally ({}); restore them, or set drift: revert to let the release overwrite them",
                conflicts.len(),
                preview(&conflicts)
            ),
        });
    }
    let files: Vec<FileChange> = wanted
        .into_iter()
        .filter_map(|(path, data)| work.set(&path, data))
        .collect();
    let release = input.releases.iter().find(|r| &r.version == to);
    let notes = release.and_then(|r| r.notes.clone()).unwrap_or_default();
    let reason = if notes.is_empty() {
        format!("{from} → {to}")
    } else {
        notes
    };
    Ok((!files.is_empty()).then_some(Action {
        kind: ActionKind::Upgrade,
        id: to.to_string(),
        reason,
        files,
    }))
}

/// The keys of two sorted maps, in order, each once: a merge of the two
/// listings as they stream by, rather than a set of every path of both
/// releases built first.
fn union_keys<'a, A, B>(
    a: &'a BTreeMap<String, A>,
    b: &'a BTreeMap<String, B>,
) -> impl Iterator<Item = &'a String> {
    let mut a = a.keys().peekable();
    let mut b = b.keys().peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.cmp(y) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                b.next();
                a.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// The digest of what a plan does (SPEC §4.1): versions, actions, paths and
/// hashes; not the site's name or root, so equal states share a digest.
pub fn digest(plan: &SitePlan) -> String {
    /// A file change as the digest sees it: path, op, before, after.
    type CanonFile<'a> = (&'a str, FileOp, Option<ContentHash>, Option<ContentHash>);
    #[derive(Serialize)]
    struct Canon<'a> {
        from: &'a Option<String>,
        to: &'a Option<String>,
        actions: Vec<(ActionKind, &'a str, Vec<CanonFile<'a>>)>,
    }
    let canon = Canon {
        from: &plan.from_version,
        to: &plan.to_version,
        actions: plan
            .actions
            .iter()
            .map(|a| {
                (
                    a.kind,
                    a.id.as_str(),
                    a.files
                        .iter()
                        .map(|f| (f.path.as_str(), f.op, f.before, f.after))
                        .collect(),
                )
            })
            .collect(),
    };
    let json = serde_json::to_vec(&canon).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(json)))
}

#[cfg(test)]
mod tests;
