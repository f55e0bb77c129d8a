//! Table-driven tests of every planning rule and every held code, with a
//! fixed clock and contents in memory: no temp dirs, no git.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::*;
use crate::inventory::Entry;
use crate::model::hash::BlobId;
use crate::model::words::{HotfixLevel, Layout, UpgradeLevel};
use crate::model::{Catalog, Channel, Release, Window};
use crate::policy::{Effective, Provenance, Setting};

fn builtin<T>(v: T) -> Setting<T> {
    Setting::new(v, Provenance::Builtin)
}

fn effective() -> Effective {
    Effective {
        site: "s".into(),
        file: "sites/s.yaml".into(),
        chain: vec![],
        policy: builtin("base".into()),
        product: builtin("acme".into()),
        channel: builtin("stable".into()),
        version: builtin(None),
        ring: builtin(1),
        layout: builtin(Layout::InPlace),
        drift: builtin(DriftMode::Preserve),
        upgrades: builtin(UpgradeLevel::Minor),
        hotfixes: builtin(HotfixLevel::Critical),
        diagnostics: builtin(false),
        vendor_access: builtin(false),
        status_reports: builtin(false),
        error_reports: builtin(false),
        public_listing: builtin(false),
        window: builtin(None),
        prereleases: builtin(false),
        min_release_age: builtin("0".parse().unwrap()),
        urgent_bypass: builtin(true),
        require_approval: builtin(vec![]),
        keep_rollback_points: builtin(20),
        allow_release_hooks: builtin(false),
        notify_interval: builtin("7d".parse().unwrap()),
    }
}

fn catalog() -> Catalog {
    Catalog {
        product: "acme".into(),
        channels: [
            ("stable".to_owned(), Channel { prerelease: false }),
            ("beta".to_owned(), Channel { prerelease: true }),
        ]
        .into(),
        rings: [(0, "0h".parse().unwrap()), (1, "48h".parse().unwrap())].into(),
    }
}

fn release(yaml: &str) -> Release {
    crate::load::yaml::parse::<Release>("r.yaml", yaml.as_bytes())
        .unwrap()
        .0
}

/// A release of `version` on stable, released a year before the clock.
fn rel(version: &str) -> Release {
    release(&format!(
        "version: {version}\nchannels: [stable, beta]\nreleased: 2025-11-01T00:00:00Z\npayload: {{tree: releases/{version}}}\n"
    ))
}

const NOW: &str = "2026-11-20T10:00:00Z";

fn now() -> jiff::Timestamp {
    NOW.parse().unwrap()
}

struct Case {
    name: &'static str,
    installed: &'static str,
    releases: Vec<Release>,
    tweak: fn(&mut Effective),
    quarantined: Vec<&'static str>,
    forced: Option<&'static str>,
    target: Option<&'static str>,
    held: Vec<HeldCode>,
}

fn case(
    name: &'static str,
    installed: &'static str,
    releases: Vec<Release>,
    target: Option<&'static str>,
    held: Vec<HeldCode>,
) -> Case {
    Case {
        name,
        installed,
        releases,
        tweak: |_| {},
        quarantined: vec![],
        forced: None,
        target,
        held,
    }
}

#[test]
fn release_choice_rules_and_their_held_codes() {
    use HeldCode::*;
    let recent = |v: &str, days_before: i64| {
        let at = now() - jiff::SignedDuration::from_hours(24 * days_before);
        release(&format!(
            "version: {v}\nchannels: [stable]\nreleased: {at}\npayload: {{tree: x}}\n"
        ))
    };
    let cases = vec![
        case(
            "a patch is eligible",
            "1.0.0",
            vec![rel("1.0.1")],
            Some("1.0.1"),
            vec![],
        ),
        case(
            "a minor is eligible for upgrades: minor",
            "1.0.0",
            vec![rel("1.1.0")],
            Some("1.1.0"),
            vec![],
        ),
        Case {
            tweak: |e| e.upgrades = builtin(UpgradeLevel::Patch),
            ..case(
                "a minor is not opted in",
                "1.0.0",
                vec![rel("1.1.0")],
                None,
                vec![NotOptedIn],
            )
        },
        Case {
            tweak: |e| {
                e.upgrades = Setting {
                    value: UpgradeLevel::Patch,
                    from: Provenance::Policy {
                        policy: "conservative".into(),
                        stock: true,
                        at: crate::load::Location::file("p"),
                    },
                    note: Some("capped".into()),
                }
            },
            ..case(
                "a ceiling caps it",
                "1.0.0",
                vec![rel("1.1.0")],
                None,
                vec![PolicyCeiling],
            )
        },
        case(
            "a new major is questionable",
            "1.2.0",
            vec![rel("2.0.0")],
            None,
            vec![MajorUpgrade],
        ),
        Case {
            tweak: |e| e.upgrades = builtin(UpgradeLevel::Major),
            ..case(
                "a major with upgrades: major",
                "1.2.0",
                vec![rel("2.0.0")],
                Some("2.0.0"),
                vec![],
            )
        },
        case(
            "0.x minor changes are questionable",
            "0.3.0",
            vec![rel("0.4.0")],
            None,
            vec![ZeroMajor],
        ),
        case(
            "0.x patches are fine",
            "0.3.0",
            vec![rel("0.3.1")],
            Some("0.3.1"),
            vec![],
        ),
        case(
            "pre-releases are not offered on stable",
            "1.0.0",
            vec![rel("1.1.0-beta.1")],
            None,
            vec![Prerelease],
        ),
        Case {
            tweak: |e| {
                e.channel = builtin("beta".into());
                e.prereleases = builtin(true);
            },
            ..case(
                "pre-releases on a beta channel with the policy's consent",
                "1.0.0",
                vec![rel("1.1.0-beta.1")],
                Some("1.1.0-beta.1"),
                vec![],
            )
        },
        case(
            "a pre-release of the same version upgrades to its next",
            "1.1.0-beta.1",
            vec![rel("1.1.0-beta.2")],
            Some("1.1.0-beta.2"),
            vec![],
        ),
        case(
            "yanked releases are skipped",
            "1.0.0",
            vec![release(
                "version: 1.0.1\nchannels: [stable]\nreleased: 2025-01-01T00:00:00Z\nyanked: true\npayload: {tree: x}\n",
            )],
            None,
            vec![Yanked],
        ),
        Case {
            quarantined: vec!["1.0.1"],
            ..case(
                "quarantined releases are skipped",
                "1.0.0",
                vec![rel("1.0.1")],
                None,
                vec![Quarantined],
            )
        },
        Case {
            quarantined: vec!["1.0.1"],
            forced: Some("1.0.1"),
            ..case(
                "apply --release lifts a quarantine",
                "1.0.0",
                vec![rel("1.0.1")],
                Some("1.0.1"),
                vec![],
            )
        },
        case(
            "upgrade_from limits the path",
            "1.0.0",
            vec![release(
                "version: 1.2.0\nchannels: [stable]\nreleased: 2025-01-01T00:00:00Z\nupgrade_from: \">=1.1.0\"\npayload: {tree: x}\n",
            )],
            None,
            vec![UpgradePath],
        ),
        case(
            "ring 1 waits 48h",
            "1.0.0",
            vec![recent("1.0.1", 1)],
            None,
            vec![RingDelay],
        ),
        Case {
            tweak: |e| e.ring = builtin(0),
            ..case(
                "ring 0 does not wait",
                "1.0.0",
                vec![recent("1.0.1", 1)],
                Some("1.0.1"),
                vec![],
            )
        },
        Case {
            tweak: |e| e.min_release_age = builtin("3d".parse().unwrap()),
            ..case(
                "a release soaks for min_release_age",
                "1.0.0",
                vec![recent("1.0.1", 2)],
                None,
                vec![SoakTime],
            )
        },
        Case {
            tweak: |e| e.min_release_age = builtin("3d".parse().unwrap()),
            ..case(
                "security releases bypass ring and soak",
                "1.0.0",
                vec![{
                    let mut r = recent("1.0.1", 0);
                    r.urgency = crate::model::words::Urgency::Security;
                    r
                }],
                Some("1.0.1"),
                vec![],
            )
        },
        Case {
            tweak: |e| {
                e.window = builtin(Some(Window {
                    days: vec![],
                    start: "02:00".parse().unwrap(),
                    end: "05:00".parse().unwrap(),
                    tz: None,
                }))
            },
            ..case(
                "outside the window",
                "1.0.0",
                vec![rel("1.0.1")],
                None,
                vec![OutsideWindow],
            )
        },
        Case {
            tweak: |e| {
                e.window = builtin(Some(Window {
                    days: vec![],
                    start: "09:00".parse().unwrap(),
                    end: "11:00".parse().unwrap(),
                    tz: None,
                }))
            },
            ..case(
                "inside the window",
                "1.0.0",
                vec![rel("1.0.1")],
                Some("1.0.1"),
                vec![],
            )
        },
        Case {
            tweak: |e| {
                e.window = builtin(Some(Window {
                    days: vec![],
                    start: "10:30".parse().unwrap(),
                    end: "12:00".parse().unwrap(),
                    tz: Some("Europe/Berlin".parse().unwrap()),
                }))
            },
            ..case(
                "the window's time zone counts (10:00 UTC is 11:00 in Berlin)",
                "1.0.0",
                vec![rel("1.0.1")],
                Some("1.0.1"),
                vec![],
            )
        },
        case(
            "the newest that passes wins; newer ones are held",
            "1.0.0",
            vec![rel("1.0.1"), rel("2.0.0")],
            Some("1.0.1"),
            vec![MajorUpgrade],
        ),
        case(
            "older releases are never candidates",
            "1.5.0",
            vec![rel("1.4.0")],
            None,
            vec![],
        ),
    ];
    for c in cases {
        let mut e = effective();
        (c.tweak)(&mut e);
        let quarantined: Vec<Version> = c.quarantined.iter().map(|v| v.parse().unwrap()).collect();
        let forced: Option<Version> = c.forced.map(|v| v.parse().unwrap());
        let cat = catalog();
        let gates = choose::Gates {
            effective: &e,
            catalog: &cat,
            now: now(),
            quarantined: &quarantined,
            forced: forced.as_ref(),
        };
        let choice = choose::choose(&c.installed.parse().unwrap(), c.releases.iter(), &gates);
        assert_eq!(
            choice.target.as_ref().map(|t| t.0.to_string()).as_deref(),
            c.target,
            "{}: {:?}",
            c.name,
            choice.held
        );
        let codes: Vec<HeldCode> = choice.held.iter().map(|h| h.code).collect();
        assert_eq!(codes, c.held, "{}", c.name);
        assert!(
            choice.held.iter().all(|h| !h.reason.is_empty()),
            "{}",
            c.name
        );
    }
}

/// Issue 15: `released + min_release_age` overflowed jiff's clock and
/// panicked. Every date the parser takes, with the longest delay it takes,
/// at either end of the clock, is judged without a panic; a release due
/// past the clock's end is held, not applied.
#[test]
fn release_dates_and_delays_at_the_ends_of_the_clock_do_not_panic() {
    use HeldCode::*;
    let longest = crate::model::values::Duration(crate::model::values::Duration::MAX);
    let at = |released: &str| {
        release(&format!(
            "version: 1.0.1\nchannels: [stable]\nreleased: {released}\npayload: {{tree: x}}\n"
        ))
    };
    let mut e = effective();
    e.min_release_age = builtin(longest);
    let mut cat = catalog();
    cat.rings.insert(1, longest);
    let clocks = [jiff::Timestamp::MIN, now(), jiff::Timestamp::MAX];
    for released in [
        "9999-12-30T22:00:00Z",
        "-009999-01-02T01:59:59Z",
        "2026-01-01T00:00:00Z",
    ] {
        let r = at(released);
        for clock in clocks {
            let gates = choose::Gates {
                effective: &e,
                catalog: &cat,
                now: clock,
                quarantined: &[],
                forced: None,
            };
            let choice = choose::choose(&"1.0.0".parse().unwrap(), [r.clone()].iter(), &gates);
            let codes: Vec<HeldCode> = choice.held.iter().map(|h| h.code).collect();
            // Due once a century has passed since the release; for one
            // dated in the clock's last century, only at its very end.
            let due = clock == jiff::Timestamp::MAX
                || clock != jiff::Timestamp::MIN && released.starts_with('-');
            if due {
                assert!(choice.target.is_some(), "{released} at {clock}: {codes:?}");
            } else {
                assert_eq!(codes, vec![RingDelay, SoakTime], "{released} at {clock}");
            }
        }
    }
}

#[test]
fn classes() {
    use choose::{Class, classify};
    let v = |s: &str| semver::Version::parse(s).unwrap();
    assert_eq!(
        classify(&v("4.2.0"), &v("4.2.16"), false, false),
        Class::Eligible
    );
    assert_eq!(
        classify(&v("4.2.0"), &v("4.3.0"), false, false),
        Class::Eligible
    );
    assert_eq!(
        classify(&v("4.2.0"), &v("5.0.0"), false, false),
        Class::Questionable
    );
    assert_eq!(
        classify(&v("0.2.0"), &v("0.2.1"), false, false),
        Class::Questionable
    );
    assert_eq!(
        classify(&v("4.2.0"), &v("4.3.0-rc.1"), false, false),
        Class::Ineligible
    );
    assert_eq!(
        classify(&v("4.3.0-rc.1"), &v("4.3.0-rc.2"), false, false),
        Class::Eligible
    );
}

#[test]
fn class_reasons_in_words() {
    use choose::{class_reason, classify};
    let v = |s: &str| semver::Version::parse(s).unwrap();
    let say = |from: &str, to: &str| {
        class_reason(&v(from), &v(to), classify(&v(from), &v(to), false, false))
    };
    assert_eq!(say("4.2.0", "4.2.16"), "same major 4, a patch step");
    assert_eq!(say("4.2.0", "4.3.0"), "same major 4, a minor step");
    assert_eq!(say("4.2.0", "5.0.0"), "a new major: 4 → 5");
    assert_eq!(say("0.2.0", "0.3.0"), "0.x: any minor change may break");
    assert_eq!(
        say("0.2.0", "0.2.1"),
        "0.x: even a patch step promises nothing"
    );
    assert!(say("4.2.0", "4.3.0-rc.1").starts_with("a pre-release the channel does not offer"));
    assert_eq!(
        say("4.3.0-rc.1", "4.3.0-rc.2"),
        "same major 4, a patch step, a pre-release"
    );
}

#[test]
fn assess_holds_what_choose_would_skip_and_passes_what_it_would_take() {
    let mut e = effective();
    e.version = builtin(Some("^1.4".parse().unwrap()));
    let cat = catalog();
    let gates = choose::Gates {
        effective: &e,
        catalog: &cat,
        now: now(),
        quarantined: &[],
        forced: None,
    };
    let installed: Version = "1.4.0".parse().unwrap();
    let pinned = choose::assess(&installed, &rel("2.0.0"), &gates);
    assert_eq!(pinned.held[0].code, HeldCode::Pinned);
    assert!(pinned.held[0].reason.contains("^1.4"), "{:?}", pinned.held);
    let minor = choose::assess(&installed, &rel("1.5.0"), &gates);
    assert!(minor.held.is_empty(), "{:?}", minor.held);
    assert_eq!(minor.change, ChangeLevel::Minor);
    // The planner itself never names the pin: it does not consider 2.0.0.
    let choice = choose::choose(&installed, [rel("2.0.0")].iter(), &gates);
    assert!(choice.held.is_empty() && choice.target.is_none());
}

/// Contents in memory.
#[derive(Default)]
struct Mem {
    disk: BTreeMap<String, Vec<u8>>,
    payloads: HashMap<Version, Arc<Payload>>,
    point: HashMap<BlobId, Vec<u8>>,
}

impl Contents for Mem {
    fn disk(&self, path: &str) -> Result<Vec<u8>, String> {
        self.disk
            .get(path)
            .cloned()
            .ok_or_else(|| format!("{path}: absent"))
    }
    fn payload(&self, version: &Version) -> Result<Arc<Payload>, String> {
        self.payloads
            .get(version)
            .cloned()
            .ok_or_else(|| format!("no payload {version}"))
    }
    fn payload_blob(&self, version: &Version, blob: BlobId) -> Result<Vec<u8>, String> {
        let p = Contents::payload(self, version)?;
        p.content(
            &crate::load::Source::dir(std::path::Path::new("/"), "").map_err(|e| e.to_string())?,
            blob,
        )
        .map_err(|e| e.to_string())
    }
    fn fix_source(&self, rel: &str) -> Result<Vec<u8>, String> {
        Err(format!("{rel}: absent"))
    }
    fn point_blob(&self, blob: BlobId) -> Result<Vec<u8>, String> {
        self.point
            .get(&blob)
            .cloned()
            .ok_or_else(|| "absent".into())
    }
}

fn inventory(files: &BTreeMap<String, Vec<u8>>) -> Inventory {
    let mut inv = Inventory::default();
    for (p, b) in files {
        inv.entries.insert(
            p.clone(),
            Entry::File {
                mode: 0o644,
                size: b.len() as u64,
                hash: ContentHash::of(b),
                blob: BlobId::of(b),
            },
        );
    }
    inv
}

fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    list.iter()
        .map(|(p, c)| ((*p).to_owned(), c.as_bytes().to_vec()))
        .collect()
}

fn fix(yaml: &str) -> Fix {
    crate::load::yaml::parse::<Fix>("f.yaml", yaml.as_bytes())
        .unwrap()
        .0
}

struct World {
    mem: Mem,
    inventory: Inventory,
    effective: Effective,
    catalog: Catalog,
    releases: Vec<Release>,
    fixes: Vec<Fix>,
    installed: Installed,
    labels: BTreeMap<String, String>,
    approved: Vec<crate::model::Approval>,
    adopted: bool,
    trust: crate::load::Trust,
    quarantined_fixes: BTreeMap<String, String>,
    forced_fix: Option<String>,
    preflight: Vec<crate::plan::PreflightFailure>,
}

impl World {
    /// A site on 1.0.0 whose files equal the payload (and the last point).
    fn new(payload: &[(&str, &str)]) -> Self {
        let disk = files(payload);
        let inventory = inventory(&disk);
        let snapshot = disk
            .iter()
            .map(|(p, b)| (p.clone(), BlobId::of(b)))
            .collect::<BTreeMap<_, _>>()
            .into();
        let mut mem = Mem {
            disk: disk.clone(),
            ..Mem::default()
        };
        mem.point = disk.values().map(|b| (BlobId::of(b), b.clone())).collect();
        mem.payloads.insert(
            "1.0.0".parse().unwrap(),
            Arc::new(Payload::from_files(
                disk.iter()
                    .map(|(p, b)| (p.clone(), (0o644, false, b.clone())))
                    .collect(),
            )),
        );
        World {
            mem,
            inventory,
            effective: effective(),
            catalog: catalog(),
            releases: vec![rel("1.0.0")],
            fixes: vec![],
            installed: Installed {
                version: "1.0.0".parse().unwrap(),
                snapshot,
                fixes: BTreeMap::new(),
            },
            labels: BTreeMap::new(),
            approved: Vec::new(),
            adopted: true,
            trust: crate::load::Trust::NotRequired,
            quarantined_fixes: BTreeMap::new(),
            forced_fix: None,
            preflight: Vec::new(),
        }
    }

    fn edit(&mut self, path: &str, content: &str) {
        self.mem
            .disk
            .insert(path.into(), content.as_bytes().to_vec());
        self.inventory = inventory(&self.mem.disk);
    }

    fn plan(&self) -> SitePlan {
        self.plan_with(true)
    }

    fn plan_with(&self, diffs: bool) -> SitePlan {
        let input = SiteInput {
            name: "s",
            labels: &self.labels,
            preserve: &[],
            effective: &self.effective,
            catalog: &self.catalog,
            releases: &self.releases,
            fixes: &self.fixes,
            catalog_commit: None,
            trust: &self.trust,
            installed: Some(self.installed.clone()),
            adopted: self.adopted,
            detection: None,
            inventory: &self.inventory,
            quarantined: &[],
            quarantined_fixes: &self.quarantined_fixes,
            forced: None,
            forced_fix: self.forced_fix.as_deref(),
            space: None,
            preflight: &self.preflight,
            failure_marker: None,
            approved: &self.approved,
            now: now(),
            contents: &self.mem,
            diffs,
        };
        plan_site(&input)
    }
}

fn codes(p: &SitePlan) -> Vec<HeldCode> {
    p.held.iter().map(|h| h.code).collect()
}

const XSS_FIX: &str = "id: 0001-x\ntitle: Escape\nreason: XSS\nseverity: critical\napplies_to: \">=1.0.0\"\nfixed_in: 1.1.0\nops:\n  - replace: {files: [\"*.php\"], find: \"echo $q;\", with: \"echo esc($q);\"}\n";

#[test]
fn a_fix_applies_and_then_counts_as_applied() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    let p = w.plan();
    assert_eq!(p.actions.len(), 1);
    assert_eq!(
        p.actions[0].files[0].after,
        Some(ContentHash::of(b"<?php echo esc($q);\n"))
    );
    w.edit("search.php", "<?php echo esc($q);\n");
    w.installed
        .snapshot
        .insert("search.php".into(), BlobId::of(b"<?php echo esc($q);\n"));
    assert!(
        w.plan().actions.is_empty(),
        "re-planning after apply plans nothing"
    );
}

#[test]
fn binary_files_are_left_alone_and_said_so() {
    let mut w = World::new(&[
        ("search.php", "<?php echo $q;\n"),
        ("logo.php", "\0\0binary echo $q;"),
    ]);
    w.fixes.push(fix(XSS_FIX));
    let p = w.plan();
    assert_eq!(p.actions[0].files.len(), 1);
    assert!(
        p.actions[0]
            .reason
            .ends_with("(binary files left alone: logo.php)"),
        "{}",
        p.actions[0].reason
    );
}

#[test]
fn fix_conflict_and_target_missing() {
    let mut w = World::new(&[("search.php", "<?php print(h($q));\n")]);
    w.fixes.push(fix(XSS_FIX));
    assert_eq!(codes(&w.plan()), vec![HeldCode::FixConflict]);
    let mut w = World::new(&[("index.html", "<p>")]);
    w.fixes.push(fix(XSS_FIX));
    assert_eq!(codes(&w.plan()), vec![HeldCode::FixTargetMissing]);
}

#[test]
fn fixed_in_drops_a_fix_after_the_upgrade_and_applies_to_rewrites_it() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    w.releases.push(rel("1.1.0"));
    w.mem.payloads.insert(
        "1.1.0".parse().unwrap(),
        Arc::new(Payload::from_files(
            [(
                "search.php".into(),
                (0o644, false, b"<?php echo esc2($q);\n".to_vec()),
            )]
            .into(),
        )),
    );
    let p = w.plan();
    assert_eq!(p.to_version.as_deref(), Some("1.1.0"));
    let kinds: Vec<ActionKind> = p.actions.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        vec![ActionKind::Upgrade],
        "the fix is fixed in 1.1.0: {p:#?}"
    );
}

#[test]
fn an_upgrade_over_a_customised_file_is_a_conflict_unless_drift_revert() {
    let mut w = World::new(&[("a.php", "v1"), ("b.php", "same")]);
    w.releases.push(rel("1.0.1"));
    w.mem.payloads.insert(
        "1.0.1".parse().unwrap(),
        Arc::new(Payload::from_files(
            [
                ("a.php".into(), (0o644, false, b"v2".to_vec())),
                ("b.php".into(), (0o644, false, b"same".to_vec())),
            ]
            .into(),
        )),
    );
    // Customised before adoption: the point has it, the release does not.
    w.edit("a.php", "v1 + local");
    w.installed
        .snapshot
        .insert("a.php".into(), BlobId::of(b"v1 + local"));
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::FixConflict]);
    assert_eq!(p.to_version.as_deref(), Some("1.0.0"));
    w.effective.drift = builtin(DriftMode::Revert);
    let p = w.plan();
    assert_eq!(p.to_version.as_deref(), Some("1.0.1"));
    assert_eq!(p.actions[0].files.len(), 1);
}

#[test]
fn drift_block_holds_everything_and_revert_restores_the_point() {
    let mut w = World::new(&[("a.php", "v1")]);
    w.fixes.push(fix(XSS_FIX));
    w.edit("a.php", "hacked");
    w.effective.drift = builtin(DriftMode::Block);
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::DriftBlocked]);
    assert!(p.actions.is_empty());
    assert_eq!(p.drift, vec!["a.php".to_owned()]);
    w.effective.drift = builtin(DriftMode::Revert);
    let p = w.plan();
    assert_eq!(p.actions[0].kind, ActionKind::RevertDrift);
    assert_eq!(p.actions[0].files[0].after, Some(ContentHash::of(b"v1")));
    w.effective.drift = builtin(DriftMode::Preserve);
    assert!(w.plan().actions.is_empty());
}

#[test]
fn opt_ins_selectors_and_kinds() {
    let normal = XSS_FIX.replace("severity: critical", "severity: normal");
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(&normal));
    assert_eq!(
        codes(&w.plan()),
        vec![HeldCode::NotOptedIn],
        "critical-only site, normal fix"
    );
    w.effective.hotfixes = builtin(HotfixLevel::All);
    assert!(codes(&w.plan()).is_empty());

    let diag = XSS_FIX.replace("severity: critical", "severity: critical\nkind: diagnostic");
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(&diag));
    assert_eq!(codes(&w.plan()), vec![HeldCode::NotOptedIn]);
    w.effective.diagnostics = Setting {
        value: false,
        from: Provenance::Policy {
            policy: "privacy-strict".into(),
            stock: true,
            at: crate::load::Location::file("p"),
        },
        note: Some("site asked for `true`, policy forbids it".into()),
    };
    assert_eq!(codes(&w.plan()), vec![HeldCode::PolicyCeiling]);

    let staging = XSS_FIX.replace("fixed_in: 1.1.0\n", "selector: {env: staging}\n");
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(&staging));
    assert!(
        w.plan().actions.is_empty() && w.plan().held.is_empty(),
        "a selector that does not match skips quietly"
    );
    w.labels.insert("env".into(), "staging".into());
    assert_eq!(w.plan().actions.len(), 1);
}

#[test]
fn the_window_holds_normal_fixes_but_not_critical_ones() {
    let closed = || {
        Some(Window {
            days: vec![],
            start: "02:00".parse().unwrap(),
            end: "05:00".parse().unwrap(),
            tz: None,
        })
    };
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.effective.hotfixes = builtin(HotfixLevel::All);
    w.effective.window = builtin(closed());
    w.fixes.push(fix(
        &XSS_FIX.replace("severity: critical", "severity: normal")
    ));
    assert_eq!(codes(&w.plan()), vec![HeldCode::OutsideWindow]);
    w.fixes = vec![fix(XSS_FIX)];
    assert_eq!(
        w.plan().actions.len(),
        1,
        "critical fixes pass with urgent_bypass"
    );
    w.effective.urgent_bypass = builtin(false);
    assert_eq!(codes(&w.plan()), vec![HeldCode::OutsideWindow]);
}

#[test]
fn a_fix_changed_after_it_was_applied_is_not_reapplied() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    w.installed
        .fixes
        .insert("0001-x".into(), "sha256:0000".into());
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::FixConflict]);
    assert!(
        p.held[0]
            .reason
            .contains("changed in the catalog after it was applied")
    );
}

#[test]
fn a_quarantined_fix_waits_until_the_catalog_changes_it_or_it_is_lifted() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    let checksum = crate::plan::fix_checksum(&w.fixes[0]);
    w.quarantined_fixes.insert("0001-x".into(), checksum);
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(codes(&p), vec![HeldCode::Quarantined]);
    assert!(
        p.held[0].reason.contains("apply --fix 0001-x"),
        "{}",
        p.held[0].reason
    );

    w.forced_fix = Some("0001-x".into());
    assert_eq!(w.plan().actions.len(), 1, "apply --fix lifts it");
    w.forced_fix = None;

    w.quarantined_fixes
        .insert("0001-x".into(), "sha256:an-older-version-of-the-fix".into());
    assert_eq!(
        w.plan().actions.len(),
        1,
        "a fix the catalog changed since it failed is tried again"
    );
}

#[test]
fn a_failed_preflight_holds_a_plan_with_changes_and_only_such_a_plan() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.preflight.push(crate::plan::PreflightFailure {
        check: "health.command".into(),
        reason: "`php` is not installed here".into(),
        release: None,
    });
    let idle = w.plan();
    assert!(
        idle.held.is_empty(),
        "nothing to do, nothing to check: {:?}",
        idle.held
    );

    w.fixes.push(fix(XSS_FIX));
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(
        p.held.iter().all(|h| h.code == HeldCode::Preflight),
        "{:?}",
        p.held
    );
    assert_eq!(
        p.preflight_failures()
            .iter()
            .map(|f| f.check.as_str())
            .collect::<Vec<_>>(),
        ["health.command"]
    );
    assert!(
        p.held.iter().any(|h| h.item == "fix 0001-x"),
        "{:?}",
        p.held
    );

    // A release's own hooks matter only to an upgrade to that release.
    w.preflight[0].release = Some("9.9.9".parse().unwrap());
    assert_eq!(w.plan().actions.len(), 1);
}

#[test]
fn approval_required_until_the_digest_is_approved() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    w.effective.require_approval = builtin(vec![ChangeLevel::Hotfix]);
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::ApprovalRequired]);
    assert!(
        p.held[0].reason.contains(&p.plan_digest) && p.held[0].reason.contains("approvals/s.yaml"),
        "the reason names the digest to approve and the file: {}",
        p.held[0].reason
    );
    w.approved.push(approval(&p.plan_digest, "alice"));
    let approved = w.plan();
    assert!(codes(&approved).is_empty());
    assert_eq!(
        approved.plan_digest, p.plan_digest,
        "an approval changes nothing the plan does"
    );
}

fn approval(digest: &str, by: &str) -> crate::model::Approval {
    crate::model::Approval {
        plan_digest: digest.parse().unwrap(),
        by: by.into(),
        at: "2026-11-19T08:00:00Z".parse().unwrap(),
    }
}

/// A site on 1.0.0 with 1.0.1 (a patch) and 1.1.0 (a minor) on offer.
fn upgradable() -> World {
    let mut w = World::new(&[("index.php", "v1.0.0")]);
    for v in ["1.0.1", "1.1.0"] {
        w.releases.push(rel(v));
        w.mem.payloads.insert(
            v.parse().unwrap(),
            Arc::new(Payload::from_files(
                [(
                    "index.php".into(),
                    (0o644, false, format!("v{v}").into_bytes()),
                )]
                .into(),
            )),
        );
    }
    w
}

#[test]
fn approval_follows_the_upgrade_level_and_fixes_count_as_hotfix() {
    // A minor upgrade under require_approval: [patch] needs none ...
    let mut w = upgradable();
    w.effective.require_approval = builtin(vec![ChangeLevel::Patch]);
    let p = w.plan();
    assert_eq!(p.to_version.as_deref(), Some("1.1.0"));
    assert!(codes(&p).is_empty(), "{:?}", p.held);
    // ... under [minor] it does, and the reason names the level.
    w.effective.require_approval = builtin(vec![ChangeLevel::Minor, ChangeLevel::Major]);
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::ApprovalRequired]);
    assert!(
        p.held[0].reason.contains("for minor changes"),
        "{}",
        p.held[0].reason
    );
    assert_eq!(p.actions.len(), 1, "reviewers still see what it would do");
    // A patch-only site under [minor] needs none (1.1.0 is held for
    // another reason, which is not one apply refuses for).
    w.effective.upgrades = builtin(UpgradeLevel::Patch);
    let p = w.plan();
    assert_eq!(p.to_version.as_deref(), Some("1.0.1"));
    assert_eq!(codes(&p), vec![HeldCode::NotOptedIn]);
    // A fix is a hotfix: [hotfix] holds a plan with one, an upgrade alone passes.
    w.effective.require_approval = builtin(vec![ChangeLevel::Hotfix]);
    assert_eq!(codes(&w.plan()), vec![HeldCode::NotOptedIn]);
    w.fixes.push(fix(
        "id: 0001-greet\ntitle: Greet\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [index.php], find: v, with: w}\n",
    ));
    let p = w.plan();
    assert_eq!(
        codes(&p),
        vec![HeldCode::NotOptedIn, HeldCode::ApprovalRequired]
    );
    let reason = &p.held[1].reason;
    assert!(reason.contains("for hotfix changes"), "{reason}");
}

#[test]
fn a_plan_with_nothing_to_do_needs_no_approval() {
    let mut w = World::new(&[("search.php", "<?php echo esc($q);\n")]);
    w.fixes.push(fix(XSS_FIX));
    w.effective.require_approval = builtin(vec![ChangeLevel::Hotfix]);
    let p = w.plan();
    assert!(!p.has_changes());
    assert!(codes(&p).is_empty(), "{:?}", p.held);
}

#[test]
fn a_stale_approval_says_whose_it_was_and_that_the_plan_changed() {
    let mut w = World::new(&[
        ("search.php", "<?php echo $q;\n"),
        ("other.php", "<?php echo $q;\n"),
    ]);
    w.fixes.push(fix(XSS_FIX));
    w.effective.require_approval = builtin(vec![ChangeLevel::Hotfix]);
    let before = w.plan();
    w.approved.push(approval(&before.plan_digest, "alice"));
    assert!(codes(&w.plan()).is_empty());

    // The site drifts: the fix now edits other content, so another digest.
    w.edit("other.php", "<?php echo $q; // local\n");
    let after = w.plan();
    assert_ne!(after.plan_digest, before.plan_digest);
    assert_eq!(codes(&after), vec![HeldCode::ApprovalRequired]);
    let reason = &after.held[0].reason;
    for words in [
        "approvals/s.yaml approves",
        before.plan_digest.as_str(),
        "by alice at 2026-11-19T08:00:00Z",
        "the plan changed since it was approved",
        "drifted",
        "other.php",
        "that approval does not apply",
        after.plan_digest.as_str(),
    ] {
        assert!(reason.contains(words), "{words:?} missing from: {reason}");
    }
}

#[test]
fn a_site_that_is_not_adopted_is_planned_and_held() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    w.adopted = false;
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::NotAdopted]);
    assert_eq!(
        p.actions.len(),
        1,
        "the preview still shows what adoption would lead to"
    );
}

#[test]
fn equal_states_share_a_digest_and_names_do_not_count() {
    let mut a = World::new(&[("search.php", "<?php echo $q;\n")]);
    a.fixes.push(fix(XSS_FIX));
    let mut b = World::new(&[("search.php", "<?php echo $q;\n")]);
    b.fixes.push(fix(XSS_FIX));
    b.labels.insert("env".into(), "prod".into());
    assert_eq!(a.plan().plan_digest, b.plan().plan_digest);
    b.edit("search.php", "<?php echo $q; echo 1;\n");
    assert_ne!(a.plan().plan_digest, b.plan().plan_digest);
}

#[test]
fn detection_prefers_the_best_share_of_matching_files() {
    let disk = files(&[("a", "1"), ("b", "2"), ("c", "custom")]);
    let inv = inventory(&disk);
    let p1 = Payload::from_files(
        files(&[("a", "1"), ("b", "2"), ("c", "3")])
            .into_iter()
            .map(|(p, b)| (p, (0o644, false, b)))
            .collect(),
    );
    let p2 = Payload::from_files(
        files(&[("a", "1"), ("b", "x"), ("c", "y"), ("d", "z")])
            .into_iter()
            .map(|(p, b)| (p, (0o644, false, b)))
            .collect(),
    );
    let (v1, v2): (Version, Version) = ("1.0.0".parse().unwrap(), "2.0.0".parse().unwrap());
    let d = detect(&inv, [(&v1, &p1), (&v2, &p2)].into_iter()).unwrap();
    assert_eq!(d.version, v1);
    assert_eq!(
        d.to_string(),
        "looks like 1.0.0: 2 of 3 files match; 1 differ"
    );
    assert_eq!(thousands(6690), "6,690");
}

#[test]
fn an_untrusted_source_holds_every_action_and_asks_no_approval() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(XSS_FIX));
    w.effective.require_approval = builtin(vec![ChangeLevel::Hotfix]);
    let trusted = w.plan();
    assert_eq!(trusted.actions.len(), 1);
    assert!(codes(&trusted).contains(&HeldCode::ApprovalRequired));

    w.trust = crate::load::Trust::Untrusted {
        reason: "commit abc of the catalog acme is not signed".into(),
    };
    let p = w.plan();
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert!(!p.has_changes());
    let held: Vec<(&str, HeldCode, &str)> = p
        .held
        .iter()
        .map(|h| (h.item.as_str(), h.code, h.reason.as_str()))
        .collect();
    let why = "commit abc of the catalog acme is not signed";
    assert_eq!(
        held,
        vec![
            ("source", HeldCode::UntrustedSource, why),
            ("fix 0001-x", HeldCode::UntrustedSource, why),
        ]
    );
    assert_eq!(p.to_version, p.from_version);
    assert_ne!(p.plan_digest, trusted.plan_digest);
}

#[test]
fn an_untrusted_source_is_held_even_with_nothing_to_do() {
    let mut w = World::new(&[("index.php", "<?php\n")]);
    w.trust = crate::load::Trust::Untrusted {
        reason: "not a descendant".into(),
    };
    let p = w.plan();
    assert_eq!(codes(&p), vec![HeldCode::UntrustedSource]);
    w.trust = crate::load::Trust::Trusted {
        commit: "c".into(),
        signer: "alice".into(),
        key: "SHA256:x".into(),
    };
    assert!(w.plan().held.is_empty());
}

#[test]
fn planning_without_diffs_is_the_same_plan_without_the_old_contents() {
    let mut w = World::new(&[
        ("search.php", "<?php echo $q;\n"),
        ("gone.php", "<?php // removed in 1.1.0\n"),
    ]);
    w.fixes.push(fix(XSS_FIX));
    w.releases.push(rel("1.1.0"));
    w.mem.payloads.insert(
        "1.1.0".parse().unwrap(),
        Arc::new(Payload::from_files(
            [(
                "search.php".into(),
                (0o644, false, b"<?php echo esc2($q);\n".to_vec()),
            )]
            .into(),
        )),
    );
    let with = w.plan_with(true);
    let without = w.plan_with(false);
    assert_eq!(with.plan_digest, without.plan_digest);
    assert_eq!(
        render::json(&Plan::new(vec![with.clone()])),
        render::json(&Plan::new(vec![without.clone()]))
    );
    let files = |p: &SitePlan| -> Vec<(bool, bool)> {
        p.actions
            .iter()
            .flat_map(|a| &a.files)
            .map(|f| (f.old.is_some(), f.new.is_some()))
            .collect()
    };
    // A modified and a deleted file: both have old contents for diffs...
    assert_eq!(files(&with), vec![(true, false), (true, true)]);
    // ...and none without, while the new content is there for applying.
    assert_eq!(files(&without), vec![(false, false), (false, true)]);
}

#[test]
fn plans_to_apply_name_payload_contents_and_fixes_still_land_on_them() {
    let mut w = World::new(&[("search.php", "<?php echo $q;\n")]);
    w.fixes.push(fix(&XSS_FIX.replace("fixed_in: 1.1.0\n", "")));
    w.releases.push(rel("1.1.0"));
    let upgraded = b"<?php $n = 1; echo $q;\n".to_vec();
    w.mem.payloads.insert(
        "1.1.0".parse().unwrap(),
        Arc::new(Payload::from_files(
            [("search.php".into(), (0o644, false, upgraded.clone()))].into(),
        )),
    );
    let with = w.plan_with(true);
    let without = w.plan_with(false);
    assert_eq!(with.plan_digest, without.plan_digest);
    let kinds: Vec<_> = without.actions.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, vec![ActionKind::Upgrade, ActionKind::Fix]);
    // The upgrade names the release's blob without holding its bytes...
    let new = without.actions[0].files[0].new.clone().unwrap();
    assert_eq!(new.bytes(), None);
    assert_eq!(new.blob(), BlobId::of(&upgraded));
    assert_eq!(new.load(&w.mem).unwrap().as_ref(), upgraded.as_slice());
    // ...and the fix, which read it again, lands on the new release.
    let fixed = without.actions[1].files[0].new.clone().unwrap();
    assert_eq!(fixed.bytes(), Some(&b"<?php $n = 1; echo esc($q);\n"[..]));
    // A plan with diffs holds the same contents in memory.
    let held = with.actions[0].files[0].new.clone().unwrap();
    assert_eq!(held.bytes(), Some(upgraded.as_slice()));
    assert_eq!(held.hash, new.hash);
}
