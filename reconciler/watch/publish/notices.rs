//! Upgrade notices: which newer releases, that will not apply on their own,
//! the daemon tells people about, and when. [`due`] is the pure rule (the
//! clock comes in); [`record`] keeps its memory in `<state>/<site>/notices.json`.
//! Nothing here decides what is applied.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::values::saturating_after;
use crate::plan::HeldCode;
use crate::plan::choose::Class;
use crate::plan::choose::{HeldWhy, Upgrade};
use crate::store::{Durability, SiteState, atomic_write};

/// The variable that silences every notice (`SITEKEEPER_NO_NOTICES=1`).
pub const OPT_OUT: &str = "SITEKEEPER_NO_NOTICES";

/// Why the notice memory cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// Reading or writing `notices.json` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether a value of [`OPT_OUT`] silences notices: set, non-empty and
/// not `0` (so `SITEKEEPER_NO_NOTICES=0` leaves them on).
pub fn opted_out(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether this process runs with notices silenced.
pub fn opted_out_by_env() -> bool {
    opted_out(std::env::var_os(OPT_OUT).as_deref())
}

/// When a release was last notified, and what the site ran then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// When.
    pub at: Timestamp,
    /// The installed version at that time.
    pub installed: String,
}

/// A site's notice memory: per release version, the last notice.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeState {
    /// By release version.
    #[serde(default)]
    pub releases: BTreeMap<String, Sent>,
}

/// One notice: a newer release that will not apply automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    /// The site.
    pub site: String,
    /// What it runs.
    pub installed: String,
    /// The release.
    pub version: String,
    /// Its SPEC §4.2 class.
    pub class: Class,
    /// The class in words.
    pub reason: String,
    /// Why it will not apply automatically.
    pub held: HeldWhy,
    /// When it was (last) notified.
    pub notified_at: Timestamp,
}

/// Whether an available release deserves a notice: it is held by something
/// a person has to change. Releases waiting only for time (soak, ring,
/// window) apply on their own soon, and whole-plan holds (untrusted
/// source, drift: block) are reported by the daemon already.
pub fn worth_notice(u: &Upgrade) -> bool {
    u.held.as_ref().is_some_and(|h| {
        !matches!(
            h.code,
            HeldCode::SoakTime
                | HeldCode::RingDelay
                | HeldCode::OutsideWindow
                | HeldCode::UntrustedSource
                | HeldCode::DriftBlocked
        )
    })
}

fn notice(site: &str, installed: &str, u: &Upgrade, held: &HeldWhy, at: Timestamp) -> Notice {
    Notice {
        site: site.to_owned(),
        installed: installed.to_owned(),
        version: u.version.clone(),
        class: u.class,
        reason: u.reason.clone(),
        held: held.clone(),
        notified_at: at,
    }
}

/// The notices due now, updating `state`. A release is notified once, then
/// not again for `interval` (SPEC §2.1 `notify_interval`: quiet time between
/// notices of the same upgrade); when the site's installed version changes
/// the memory resets, so a release still not automatic is notified again.
/// A newly published release is notified at once. `opted_out`: none at all,
/// and `state` is left alone.
pub fn due(
    site: &str,
    installed: &str,
    available: &[Upgrade],
    state: &mut NoticeState,
    now: Timestamp,
    interval: std::time::Duration,
    opted_out: bool,
) -> Vec<Notice> {
    if opted_out {
        return Vec::new();
    }
    // What was said about another version no longer holds.
    state.releases.retain(|_, s| s.installed == installed);
    let mut out = Vec::new();
    for u in available.iter().filter(|u| worth_notice(u)) {
        let Some(held) = &u.held else { continue };
        let fresh = state
            .releases
            .get(&u.version)
            .is_none_or(|s| now >= saturating_after(s.at, interval));
        if fresh {
            state.releases.insert(
                u.version.clone(),
                Sent {
                    at: now,
                    installed: installed.to_owned(),
                },
            );
            out.push(notice(site, installed, u, held, now));
        }
    }
    out
}

/// The notices in effect: releases notified at this installed version that
/// still deserve one. What `/status` shows between notices.
pub fn current(
    site: &str,
    installed: &str,
    available: &[Upgrade],
    state: &NoticeState,
) -> Vec<Notice> {
    available
        .iter()
        .filter(|u| worth_notice(u))
        .filter_map(|u| {
            let sent = state.releases.get(&u.version)?;
            let held = u.held.as_ref()?;
            (sent.installed == installed).then(|| notice(site, installed, u, held, sent.at))
        })
        .collect()
}

/// What [`record`] found: the notices due now, and all those in effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notices {
    /// Notified now.
    pub new: Vec<Notice>,
    /// In effect (including the new ones).
    pub current: Vec<Notice>,
}

/// Applies [`due`] to the site's notice memory on disk and saves it when it
/// changed. A missing or unreadable file is an empty memory: the worst case
/// is one repeated notice, never a missed upgrade.
pub fn record(
    state: &SiteState,
    site: &str,
    installed: &str,
    available: &[Upgrade],
    now: Timestamp,
    interval: std::time::Duration,
    opted_out: bool,
) -> Result<Notices, NoticeError> {
    if opted_out {
        return Ok(Notices::default());
    }
    let path = state.notices_path();
    let before: NoticeState = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut after = before.clone();
    let new = due(site, installed, available, &mut after, now, interval, false);
    if after != before {
        save(&path, &after)?;
    }
    Ok(Notices {
        current: current(site, installed, available, &after),
        new,
    })
}

/// Writes the memory atomically, so a crash leaves the old file or the new
/// one. A cache-level write: losing the last save costs one repeated
/// notice, which does not justify an fsync per notice.
fn save(path: &std::path::Path, s: &NoticeState) -> Result<(), NoticeError> {
    let io = |source| NoticeError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(s).map_err(|e| io(e.into()))?;
    atomic_write(path, &bytes, Durability::Cache).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn held(version: &str, code: HeldCode) -> Upgrade {
        Upgrade {
            version: version.into(),
            class: Class::Questionable,
            reason: "a new major: 1 → 2".into(),
            automatic: false,
            held: Some(HeldWhy {
                code,
                reason: "it needs upgrades: major".into(),
            }),
        }
    }

    fn versions(n: &[Notice]) -> Vec<&str> {
        n.iter().map(|n| n.version.as_str()).collect()
    }

    #[test]
    fn a_release_is_notified_once_and_a_new_release_at_once() {
        let mut state = NoticeState::default();
        let two = [held("2.0.0", HeldCode::MajorUpgrade)];
        let t0 = at("2026-11-01T00:00:00Z");
        let first = due("shop", "1.2.0", &two, &mut state, t0, 7 * DAY, false);
        assert_eq!(versions(&first), ["2.0.0"]);
        assert_eq!(first[0].held.code, HeldCode::MajorUpgrade);
        let again = due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-01T00:01:00Z"),
            7 * DAY,
            false,
        );
        assert!(again.is_empty(), "{again:?}");
        // A newer release published meanwhile is news of its own.
        let both = [held("3.0.0", HeldCode::MajorUpgrade), two[0].clone()];
        let third = due(
            "shop",
            "1.2.0",
            &both,
            &mut state,
            at("2026-11-02T00:00:00Z"),
            7 * DAY,
            false,
        );
        assert_eq!(versions(&third), ["3.0.0"]);
    }

    /// The quiet time is added to the last notice's time: at the end of
    /// the clock, with the longest interval, it saturates instead of
    /// panicking, and the notice stays quiet.
    #[test]
    fn the_longest_interval_at_the_end_of_the_clock_is_quiet_not_a_panic() {
        let two = [held("2.0.0", HeldCode::MajorUpgrade)];
        for interval in [
            crate::model::values::Duration::MAX,
            std::time::Duration::MAX,
        ] {
            let mut state = NoticeState::default();
            let last = at("9999-12-30T00:00:00Z");
            let first = due("shop", "1.2.0", &two, &mut state, last, interval, false);
            assert_eq!(versions(&first), ["2.0.0"]);
            let end = Timestamp::MAX;
            let again = due("shop", "1.2.0", &two, &mut state, end, interval, false);
            assert_eq!(versions(&again), ["2.0.0"], "due at the clock's very end");
            let before = due("shop", "1.2.0", &two, &mut state, last, interval, false);
            assert!(before.is_empty(), "{before:?}");
        }
    }

    #[test]
    fn the_same_release_is_notified_again_only_after_the_interval() {
        let mut state = NoticeState::default();
        let two = [held("2.0.0", HeldCode::PolicyCeiling)];
        due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-01T00:00:00Z"),
            7 * DAY,
            false,
        );
        let day6 = due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-07T23:59:59Z"),
            7 * DAY,
            false,
        );
        assert!(day6.is_empty(), "{day6:?}");
        let day7 = due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-08T00:00:00Z"),
            7 * DAY,
            false,
        );
        assert_eq!(versions(&day7), ["2.0.0"]);
        // And the quiet time restarts from that notice.
        let day8 = due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-09T00:00:00Z"),
            7 * DAY,
            false,
        );
        assert!(day8.is_empty(), "{day8:?}");
    }

    #[test]
    fn a_change_of_installed_version_resets_the_memory() {
        let mut state = NoticeState::default();
        let two = [held("2.0.0", HeldCode::MajorUpgrade)];
        due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-01T00:00:00Z"),
            7 * DAY,
            false,
        );
        // The site went 1.2.0 → 1.3.0 (automatic minor); 2.0.0 is still held.
        let after = due(
            "shop",
            "1.3.0",
            &two,
            &mut state,
            at("2026-11-02T00:00:00Z"),
            7 * DAY,
            false,
        );
        assert_eq!(versions(&after), ["2.0.0"]);
        assert_eq!(after[0].installed, "1.3.0");
        assert!(state.releases.values().all(|s| s.installed == "1.3.0"));
    }

    #[test]
    fn releases_waiting_only_for_time_or_already_automatic_get_no_notice() {
        let mut state = NoticeState::default();
        let mut auto = held("1.2.1", HeldCode::MajorUpgrade);
        auto.held = None;
        auto.automatic = true;
        let list = [
            auto,
            held("1.2.2", HeldCode::SoakTime),
            held("1.2.3", HeldCode::OutsideWindow),
            held("1.3.0", HeldCode::RingDelay),
        ];
        let n = due(
            "shop",
            "1.2.0",
            &list,
            &mut state,
            at("2026-11-01T00:00:00Z"),
            DAY,
            false,
        );
        assert!(n.is_empty(), "{n:?}");
    }

    #[test]
    fn the_opt_out_silences_everything_and_remembers_nothing() {
        let mut state = NoticeState::default();
        let two = [held("2.0.0", HeldCode::MajorUpgrade)];
        let n = due(
            "shop",
            "1.2.0",
            &two,
            &mut state,
            at("2026-11-01T00:00:00Z"),
            DAY,
            true,
        );
        assert!(n.is_empty());
        assert_eq!(state, NoticeState::default());
        assert!(opted_out(Some("1".as_ref())));
        assert!(opted_out(Some("yes".as_ref())));
        assert!(!opted_out(Some("0".as_ref())));
        assert!(!opted_out(Some("".as_ref())));
        assert!(!opted_out(None));
    }

    #[test]
    fn record_keeps_its_memory_on_disk_and_reports_the_notices_in_effect() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = SiteState::new(dir.path(), "shop");
        let two = [held("2.0.0", HeldCode::MajorUpgrade)];
        let t0 = at("2026-11-01T00:00:00Z");
        let first = record(&state, "shop", "1.2.0", &two, t0, DAY, false).expect("record");
        assert_eq!(versions(&first.new), ["2.0.0"]);
        assert_eq!(versions(&first.current), ["2.0.0"]);
        assert!(dir.path().join("shop/notices.json").is_file());
        let second = record(
            &state,
            "shop",
            "1.2.0",
            &two,
            at("2026-11-01T01:00:00Z"),
            DAY,
            false,
        )
        .expect("record");
        assert!(second.new.is_empty(), "{:?}", second.new);
        assert_eq!(versions(&second.current), ["2.0.0"]);
        assert_eq!(second.current[0].notified_at, t0);
        let silenced = record(
            &state,
            "shop",
            "1.2.0",
            &two,
            at("2026-11-09T00:00:00Z"),
            DAY,
            true,
        )
        .expect("record");
        assert_eq!(silenced, Notices::default());
    }
}
