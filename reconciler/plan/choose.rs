//! Choosing the target release (SPEC §4.2): candidates, their class
//! (eligible, questionable, ineligible) and every gate, each refusal a
//! [`Held`] item with a code and a sentence; and the upgrade query that
//! `check`, `status` and the daemon's notices ask of the same gates
//! ([`available`], [`upgrades`]).

use jiff::Timestamp;
use serde::Serialize;

use super::{Held, HeldCode, SitePlan};
use crate::model::values::Version;
use crate::model::words::{ChangeLevel, UpgradeLevel, Urgency};
use crate::model::{Catalog, Release, Window};
use crate::policy::{Effective, Provenance};

/// SPEC §4.2's classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Same major, major ≥ 1, neither a pre-release.
    Eligible,
    /// Major 0, or a different major.
    Questionable,
    /// A pre-release the channel or the installed version does not allow.
    Ineligible,
}

/// The level of change from `from` to `to`.
pub fn level(from: &semver::Version, to: &semver::Version) -> ChangeLevel {
    if from.major != to.major || (from.major == 0 && from.minor != to.minor) {
        ChangeLevel::Major
    } else if from.minor != to.minor {
        ChangeLevel::Minor
    } else {
        ChangeLevel::Patch
    }
}

/// The class of an upgrade from `from` to `to` on a channel that does or
/// does not offer pre-releases.
pub fn classify(
    from: &semver::Version,
    to: &semver::Version,
    channel_prerelease: bool,
    policy_prerelease: bool,
) -> Class {
    if !to.pre.is_empty() {
        let same_triple = from.major == to.major
            && from.minor == to.minor
            && from.patch == to.patch
            && !from.pre.is_empty();
        if !(same_triple || channel_prerelease && policy_prerelease) {
            return Class::Ineligible;
        }
    }
    if from.major != to.major || to.major == 0 {
        Class::Questionable
    } else {
        Class::Eligible
    }
}

/// Whether `now` falls in the window.
pub fn in_window(window: &Window, now: Timestamp) -> bool {
    let tz = window
        .tz
        .as_ref()
        .map_or(jiff::tz::TimeZone::UTC, |t| t.zone().clone());
    let local = now.to_zoned(tz);
    let time = local.time();
    let (start, end) = (window.start.0, window.end.0);
    // A window that ends before it starts spans midnight; it belongs to the day it opened.
    let (open, day) = if start < end {
        (start <= time && time < end, local.date())
    } else if time >= start {
        (true, local.date())
    } else {
        (time < end, local.date().yesterday().unwrap_or(local.date()))
    };
    open && (window.days.is_empty() || window.days.iter().any(|d| d.to_jiff() == day.weekday()))
}

/// What the choice needs about the site.
pub struct Gates<'a> {
    /// Effective settings.
    pub effective: &'a Effective,
    /// The catalog.
    pub catalog: &'a Catalog,
    /// Now.
    pub now: Timestamp,
    /// Releases that failed their health check on this site.
    pub quarantined: &'a [Version],
    /// `apply --release V`: an operator's explicit choice, which lifts the quarantine.
    pub forced: Option<&'a Version>,
}

/// The outcome of the choice.
#[derive(Debug, Default)]
pub struct Choice {
    /// The release to upgrade to, if any passes.
    pub target: Option<(Version, ChangeLevel, Class)>,
    /// Why newer releases were not chosen.
    pub held: Vec<Held>,
}

fn upgrade_word(l: ChangeLevel) -> UpgradeLevel {
    match l {
        ChangeLevel::Major => UpgradeLevel::Major,
        ChangeLevel::Minor => UpgradeLevel::Minor,
        _ => UpgradeLevel::Patch,
    }
}

/// Chooses the newest release on the site's channel that passes every gate.
pub fn choose<'r>(
    installed: &Version,
    releases: impl Iterator<Item = &'r Release>,
    gates: &Gates<'_>,
) -> Choice {
    let e = gates.effective;
    let channel = e.channel.value.as_str();
    let mut candidates: Vec<&Release> = releases
        .filter(|r| r.channels.iter().any(|c| c == channel))
        .filter(|r| r.version > *installed)
        .filter(|r| {
            e.version
                .value
                .as_ref()
                .is_none_or(|pin| pin_matches(pin, &r.version))
        })
        .collect();
    candidates.sort_by(|a, b| b.version.cmp(&a.version));
    if let Some(forced) = gates.forced {
        candidates.retain(|r| &r.version == forced);
    }
    let mut choice = Choice::default();
    for r in candidates {
        let Assessment {
            class,
            change,
            held: reasons,
        } = assess(installed, r, gates);
        if reasons.is_empty() {
            choice.target = Some((r.version.clone(), change, class));
            break;
        }
        choice.held.extend(reasons);
    }
    choice
}

/// One candidate release judged against the site: its class, its level of
/// change, and every gate that holds it (empty: it would be applied
/// automatically, approval aside, which depends on the whole plan).
#[derive(Debug, Clone)]
pub struct Assessment {
    /// SPEC §4.2 class.
    pub class: Class,
    /// The level of change from the installed version.
    pub change: ChangeLevel,
    /// Why it is not taken automatically, most fundamental first.
    pub held: Vec<Held>,
}

/// Judges one release against the installed version and the site's gates:
/// the rule [`choose`] applies to each candidate, exposed so `check` and
/// the daemon's notices say exactly what the planner would do. The version
/// pin is a gate here too (`choose` drops pinned-out releases silently).
pub fn assess(installed: &Version, r: &Release, gates: &Gates<'_>) -> Assessment {
    let e = gates.effective;
    let channel_pre = gates
        .catalog
        .channels
        .get(e.channel.value.as_str())
        .is_some_and(|c| c.prerelease);
    let (from, v) = (&installed.0, &r.version.0);
    let class = classify(from, v, channel_pre, e.prereleases.value);
    let change = level(from, v);
    let mut reasons = offered(installed, r, gates, class);
    reasons.extend(opted_in(installed, r, e, class, change));
    // A security release skips the waits where the policy lets urgent
    // changes through.
    if !(r.urgency == Urgency::Security && e.urgent_bypass.value) {
        reasons.extend(due(r, gates));
    }
    let item = format!("release {}", r.version);
    Assessment {
        class,
        change,
        held: reasons
            .into_iter()
            .map(|(code, reason)| Held {
                item: item.clone(),
                code,
                reason,
            })
            .collect(),
    }
}

/// Whether the release is offered to this site at all: within its version
/// pin, not withdrawn, not quarantined here, reachable from the installed
/// version, and not a pre-release it does not take.
fn offered(
    installed: &Version,
    r: &Release,
    gates: &Gates<'_>,
    class: Class,
) -> Vec<(HeldCode, String)> {
    let mut reasons = Vec::new();
    if let Some(pin) = &gates.effective.version.value
        && !pin_matches(pin, &r.version)
    {
        reasons.push((
            HeldCode::Pinned,
            format!("{} is outside the site's version pin {pin}", r.version),
        ));
    }
    if r.yanked {
        reasons.push((
            HeldCode::Yanked,
            format!("{} was withdrawn by the vendor", r.version),
        ));
    }
    if gates.quarantined.contains(&r.version) && gates.forced != Some(&r.version) {
        reasons.push((
            HeldCode::Quarantined,
            format!("{} failed its health check on this site and was rolled back; run `sitekeeper apply --release {}` to try it again", r.version, r.version),
        ));
    }
    if let Some(from_req) = &r.upgrade_from
        && !from_req.0.matches(&installed.0)
    {
        reasons.push((
            HeldCode::UpgradePath,
            format!(
                "{} can be reached only from {from_req}; upgrade to an intermediate release first",
                r.version
            ),
        ));
    }
    if class == Class::Ineligible {
        reasons.push((
            HeldCode::Prerelease,
            format!(
                "{} is a pre-release; the channel or the policy does not offer pre-releases",
                r.version
            ),
        ));
    }
    reasons
}

/// Whether the site takes this level of change automatically
/// (`opt_in.upgrades`, capped by the policy ceiling), and if not, why in
/// the words that fit: the ceiling, a 0.x step, a new major, or the site's
/// own choice.
fn opted_in(
    installed: &Version,
    r: &Release,
    e: &Effective,
    class: Class,
    change: ChangeLevel,
) -> Option<(HeldCode, String)> {
    let allowed = e.upgrades.value;
    if allowed.allows(change) {
        return None;
    }
    let (from, v) = (&installed.0, &r.version.0);
    let wanted = upgrade_word(change);
    let code = if e.upgrades.note.is_some() && matches!(e.upgrades.from, Provenance::Policy { .. })
    {
        HeldCode::PolicyCeiling
    } else if class == Class::Questionable && from.major == 0 && v.major == 0 {
        HeldCode::ZeroMajor
    } else if class == Class::Questionable {
        HeldCode::MajorUpgrade
    } else {
        HeldCode::NotOptedIn
    };
    let why = match code {
        HeldCode::PolicyCeiling => format!(
            "{} is a {wanted} upgrade; the policy caps automatic upgrades at {allowed}",
            r.version
        ),
        HeldCode::ZeroMajor => format!(
            "{} changes the minor version of a 0.x release, which may break anything; it needs upgrades: major",
            r.version
        ),
        HeldCode::MajorUpgrade => format!(
            "{} is a new major version, which may need changes to the site; it needs upgrades: major",
            r.version
        ),
        _ => format!(
            "{} is a {wanted} upgrade and the site takes {allowed} upgrades automatically",
            r.version
        ),
    };
    Some((code, why))
}

/// Whether the release is due on this site now: its ring's delay and
/// `min_release_age` have passed, and the maintenance window is open.
fn due(r: &Release, gates: &Gates<'_>) -> Vec<(HeldCode, String)> {
    let e = gates.effective;
    let mut reasons = Vec::new();
    // Saturating: a release dated near the end of the clock (year 9999)
    // is due "never"; jiff's `+` would panic on the overflow.
    let released = r.released.0;
    if let Some(delay) = gates.catalog.rings.get(&e.ring.value) {
        let due = delay.after(released);
        if gates.now < due {
            reasons.push((
                HeldCode::RingDelay,
                format!(
                    "ring {} takes {} {delay} after its release (due {due})",
                    e.ring.value, r.version
                ),
            ));
        }
    }
    let soak = e.min_release_age.value;
    let due = soak.after(released);
    if gates.now < due {
        reasons.push((
            HeldCode::SoakTime,
            format!(
                "{} must be out for {soak} before an automatic upgrade (due {due})",
                r.version
            ),
        ));
    }
    if let Some(w) = &e.window.value
        && !in_window(w, gates.now)
    {
        reasons.push((
            HeldCode::OutsideWindow,
            format!("{} waits for the maintenance window ({w})", r.version),
        ));
    }
    reasons
}

/// The class of an upgrade in words, for `check` and notices: what kind of
/// step it is and why that makes it eligible, questionable or ineligible.
pub fn class_reason(from: &semver::Version, to: &semver::Version, class: Class) -> String {
    let step = match level(from, to) {
        ChangeLevel::Patch => "a patch step",
        _ if from.minor != to.minor => "a minor step",
        _ => "a major step",
    };
    let pre = if to.pre.is_empty() {
        ""
    } else {
        ", a pre-release"
    };
    match class {
        Class::Ineligible => {
            "a pre-release the channel does not offer (or the policy does not take)".to_owned()
        }
        Class::Eligible => format!("same major {}, {step}{pre}", from.major),
        Class::Questionable if from.major != to.major => {
            format!("a new major: {} → {}{pre}", from.major, to.major)
        }
        Class::Questionable if from.minor != to.minor => {
            format!("0.x: any minor change may break{pre}")
        }
        Class::Questionable => format!("0.x: even a patch step promises nothing{pre}"),
    }
}

/// The releases on `channel` newer than `installed` and not yanked,
/// newest first.
fn newer<'r>(
    installed: &Version,
    channel: &str,
    releases: impl Iterator<Item = &'r Release>,
) -> Vec<&'r Release> {
    let mut out: Vec<&Release> = releases
        .filter(|r| !r.yanked && r.version > *installed)
        .filter(|r| r.channels.iter().any(|c| c == channel))
        .collect();
    out.sort_by(|a, b| b.version.cmp(&a.version));
    out
}

/// The releases on `channel` newer than `installed` (not yanked), each
/// with its SPEC §4.2 class, newest first. `prereleases` is the policy's
/// setting; the catalog says whether the channel offers them.
pub fn available<'r>(
    installed: &Version,
    channel: &str,
    releases: impl Iterator<Item = &'r Release>,
    catalog: &Catalog,
    prereleases: bool,
) -> Vec<(Version, Class)> {
    let channel_pre = catalog.channels.get(channel).is_some_and(|c| c.prerelease);
    newer(installed, channel, releases)
        .into_iter()
        .map(|r| {
            let class = classify(&installed.0, &r.version.0, channel_pre, prereleases);
            (r.version.clone(), class)
        })
        .collect()
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

/// The releases on `channel` newer than `installed` (not yanked), newest
/// first, each judged by the planner's own gates ([`assess`]); `plan`
/// (the site's plan under the same gates) decides the gates that depend
/// on the whole plan: approval, drift blocking and trust.
pub fn upgrades<'r>(
    installed: &Version,
    channel: &str,
    releases: impl Iterator<Item = &'r Release>,
    gates: &Gates<'_>,
    plan: &SitePlan,
) -> Vec<Upgrade> {
    // A hold on the whole plan (untrusted source, drift: block) stops every
    // release, however good.
    let site_hold = plan
        .held
        .iter()
        .find(|h| matches!(h.code, HeldCode::UntrustedSource | HeldCode::DriftBlocked));
    newer(installed, channel, releases)
        .into_iter()
        .map(|r| {
            let a = assess(installed, r, gates);
            let version = r.version.to_string();
            let held = a
                .held
                .into_iter()
                .next()
                .map(|h| HeldWhy {
                    code: h.code,
                    reason: h.reason,
                })
                .or_else(|| site_hold.map(held_why))
                .or_else(|| {
                    gates
                        .effective
                        .require_approval
                        .value
                        .contains(&a.change)
                        .then(|| approval_hold(plan, &version, a.change))
                        .flatten()
                });
            Upgrade {
                reason: class_reason(&installed.0, &r.version.0, a.class),
                class: a.class,
                automatic: held.is_none(),
                held,
                version,
            }
        })
        .collect()
}

fn held_why(h: &Held) -> HeldWhy {
    HeldWhy {
        code: h.code,
        reason: h.reason.clone(),
    }
}

/// What holds an upgrade to `version` whose level of change needs an
/// approval. Approval covers a plan digest, so only the plan that upgrades
/// to this very release can carry it: that plan's own hold, if it waits;
/// any other release waits for a plan of its own.
fn approval_hold(plan: &SitePlan, version: &str, change: ChangeLevel) -> Option<HeldWhy> {
    if plan.to_version.as_deref() != Some(version) {
        return Some(HeldWhy {
            code: HeldCode::ApprovalRequired,
            reason: format!(
                "the policy requires an approved plan for {} changes",
                change.as_str()
            ),
        });
    }
    plan.held
        .iter()
        .find(|h| h.code == HeldCode::ApprovalRequired)
        .map(held_why)
}

/// A pin matches pre-releases of versions it names as well (semver's own
/// rule would never match `5.1.0-beta.1` with `^5`).
fn pin_matches(pin: &crate::model::values::VersionReq, v: &Version) -> bool {
    if pin.matches(v) {
        return true;
    }
    let mut release = v.0.clone();
    release.pre = semver::Prerelease::EMPTY;
    !v.0.pre.is_empty() && pin.0.matches(&release)
}
