//! The planner's values: what it takes about a site ([`SiteInput`],
//! [`Installed`], the [`Contents`] it reads through) and what it gives
//! back ([`SitePlan`] with its actions and held items, [`Plan`] for a
//! fleet). Only data and the few methods that read it; the rules that
//! make a plan are in the module above.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::thousands;
use super::work::FileData;
use crate::inventory::{Inventory, PointFiles};
use crate::load::Trust;
use crate::load::payload::Payload;
use crate::model::hash::{BlobId, ContentHash};
use crate::model::values::{Glob, Version};
use crate::model::{Approval, Catalog, Fix, Release};
use crate::policy::Effective;

/// Why an item is not done (SPEC §3.1 `held[].code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldCode {
    /// The policy caps the opt-in below what this needs.
    PolicyCeiling,
    /// The site did not opt in.
    NotOptedIn,
    /// Outside the maintenance window.
    OutsideWindow,
    /// The release is too new (`min_release_age`).
    SoakTime,
    /// The site's ring is not due yet.
    RingDelay,
    /// An approved plan digest is needed.
    ApprovalRequired,
    /// A pre-release not offered to this site.
    Prerelease,
    /// A new major version.
    MajorUpgrade,
    /// A minor change of a 0.x release.
    ZeroMajor,
    /// Withdrawn by the vendor.
    Yanked,
    /// Failed its health check on this site.
    Quarantined,
    /// Not reachable directly from the installed version.
    UpgradePath,
    /// A file is customised where the change needs it unchanged.
    FixConflict,
    /// A fix's target files do not exist.
    FixTargetMissing,
    /// Local changes and `drift: block`.
    DriftBlocked,
    /// The catalog commit is not trusted.
    UntrustedSource,
    /// The site has not been adopted.
    NotAdopted,
    /// Outside the site's `version` pin (only `check` reports it: the
    /// planner never considers such a release at all).
    Pinned,
    /// A preflight check failed (SPEC §6.7): the change could not be
    /// carried out or judged.
    Preflight,
    /// The site has a failure marker (SPEC §6.6): nothing changes it until
    /// an operator resolves it.
    FailureMarker,
}

/// Free space where a change is staged and recorded (SPEC §6.1), read
/// before planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes free to this user on the site's file system.
    pub site_bytes: u64,
    /// Inodes free there; `None` where the file system does not count them.
    pub site_inodes: Option<u64>,
    /// Bytes free on the state dir's file system.
    pub state_bytes: u64,
}

/// What a change needs to be staged and recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// New contents, in bytes.
    pub contents: u64,
    /// New files.
    pub files: u64,
    /// For the `symlink` layout, the release directory copied whole:
    /// its bytes and entries (0 in place).
    pub tree_bytes: u64,
    /// …and its entries.
    pub tree_entries: u64,
    /// The data snapshot taken before the change (SPEC §6.6), as large as
    /// the last one or, for a first, as the databases are; 0 without one.
    pub snapshot: u64,
}

/// The reason of an action held by a failed preflight check (the checks
/// themselves are held items of their own, with their reasons).
pub const PREFLIGHT_WAITS: &str = "waits for the preflight checks to pass";

/// A preflight check that failed (SPEC §6.7), gathered before planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightFailure {
    /// Which check (`health.command`, `hooks.post_apply[0]`, `root`, `space`).
    pub check: String,
    /// Why, with a hint.
    pub reason: String,
    /// For a release's own hooks: the release; the check matters only to
    /// a change that upgrades to it.
    #[serde(skip)]
    pub release: Option<Version>,
}

/// An item the plan does not do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// What (`release 5.0.0`, `fix 0007-escape-search`, `site`).
    pub item: String,
    /// Why, as a code.
    pub code: HeldCode,
    /// Why, in a sentence.
    pub reason: String,
}

/// What an action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// A release upgrade.
    Upgrade,
    /// A hot fix.
    Fix,
    /// Local changes put back to the last rollback point.
    RevertDrift,
    /// A fix undone.
    RemoveFix,
}

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// Created.
    Add,
    /// Changed.
    Modify,
    /// Removed.
    Delete,
}

/// One file of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileChange {
    /// Relative to the site root.
    pub path: String,
    /// What happens.
    pub op: FileOp,
    /// Content hash before (`null` when absent).
    pub before: Option<ContentHash>,
    /// Content hash after (`null` when deleted).
    pub after: Option<ContentHash>,
    /// Contents, for diffs and for applying; not part of the JSON.
    #[serde(skip)]
    pub old: Option<Arc<FileData>>,
    /// The new content and mode.
    #[serde(skip)]
    pub new: Option<Arc<FileData>>,
}

/// One thing the plan does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    /// What kind.
    pub kind: ActionKind,
    /// The release version or fix id.
    pub id: String,
    /// Why, for people.
    pub reason: String,
    /// The files.
    pub files: Vec<FileChange>,
}

/// A site's plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SitePlan {
    /// The site.
    pub site: String,
    /// Hash of what the plan does (not of the site's name or root).
    pub plan_digest: String,
    /// Installed (or detected) version.
    pub from_version: Option<String>,
    /// Version after the plan.
    pub to_version: Option<String>,
    /// What it does.
    pub actions: Vec<Action>,
    /// What it does not do, and why.
    pub held: Vec<Held>,
    /// Whether the site is adopted (a plan of a site that is not cannot be applied).
    pub adopted: bool,
    /// Managed files that differ from the last rollback point.
    pub drift: Vec<String>,
    /// Other facts for people (the release a non-adopted site looks like).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The catalog commit planned against.
    pub catalog_commit: Option<String>,
}

impl SitePlan {
    /// Whether the plan changes anything.
    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(|a| !a.files.is_empty())
    }

    /// The preflight checks that hold this plan (SPEC §6.7), without the
    /// actions they hold.
    pub fn preflight_failures(&self) -> Vec<PreflightFailure> {
        self.held
            .iter()
            .filter(|h| h.code == HeldCode::Preflight && h.reason != PREFLIGHT_WAITS)
            .map(|h| PreflightFailure {
                check: h.item.clone(),
                reason: h.reason.clone(),
                release: None,
            })
            .collect()
    }
}

/// The plan of a fleet (SPEC §3.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Hash of every site's name and digest.
    pub plan_id: String,
    /// The catalog commit (the first product's, where there are several).
    pub catalog_commit: Option<String>,
    /// One plan per site, in name order.
    pub sites: Vec<SitePlan>,
    /// The sites that could not be planned, in name order (SPEC §3), so
    /// that no summary reads "0 sites change" over a broken site. Not in
    /// `plan_id`: a site that failed has no plan to pin.
    #[serde(default)]
    pub failed: Vec<FailedSite>,
}

/// A site that could not be planned or applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedSite {
    /// The site.
    pub site: String,
    /// The error, in words.
    pub error: String,
}

impl Plan {
    /// A fleet plan from site plans.
    pub fn new(mut sites: Vec<SitePlan>) -> Self {
        sites.sort_by(|a, b| a.site.cmp(&b.site));
        let mut h = Sha256::new();
        for s in &sites {
            h.update(s.site.as_bytes());
            h.update(b"\0");
            h.update(s.plan_digest.as_bytes());
            h.update(b"\n");
        }
        let catalog_commit = sites.iter().find_map(|s| s.catalog_commit.clone());
        Plan {
            plan_id: format!("sha256:{}", hex::encode(h.finalize())),
            catalog_commit,
            sites,
            failed: Vec::new(),
        }
    }

    /// The same plan, with the sites that could not be planned.
    pub fn with_failed(mut self, mut failed: Vec<FailedSite>) -> Self {
        failed.sort_by(|a, b| a.site.cmp(&b.site));
        self.failed = failed;
        self
    }
}

/// A release a tree looks like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detection {
    /// The closest release.
    pub version: Version,
    /// Its files found with equal content.
    pub matching: usize,
    /// Its files in all.
    pub total: usize,
}

impl std::fmt::Display for Detection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let differ = self.total - self.matching;
        write!(
            f,
            "looks like {}: {} of {} files match; {} differ",
            self.version,
            thousands(self.matching),
            thousands(self.total),
            thousands(differ)
        )
    }
}

/// Where the planner gets contents it needs: files on disk, release
/// payloads, fix sources and rollback points. Implementations do the I/O;
/// tests give them from memory.
pub trait Contents {
    /// A file of the site, as it is now.
    fn disk(&self, path: &str) -> Result<Vec<u8>, String>;
    /// A release's payload.
    fn payload(&self, version: &Version) -> Result<Arc<Payload>, String>;
    /// A blob of a release's payload.
    fn payload_blob(&self, version: &Version, blob: BlobId) -> Result<Vec<u8>, String>;
    /// A fix's `source:` file (relative to the catalog's `fixes/`).
    fn fix_source(&self, rel: &str) -> Result<Vec<u8>, String>;
    /// A blob of the last rollback point.
    fn point_blob(&self, blob: BlobId) -> Result<Vec<u8>, String>;
}

/// What the site has installed, per its last rollback point.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The release.
    pub version: Version,
    /// The last point's files (path → blob), or for a site that is not
    /// adopted, its current files at the detected release's paths; read
    /// in place from the site index when it is of the last point.
    pub snapshot: PointFiles,
    /// Fixes applied since the last upgrade, with their checksums.
    pub fixes: BTreeMap<String, String>,
}

/// Everything the planner needs about one site.
pub struct SiteInput<'a> {
    /// The site's name.
    pub name: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Paths never read, written or snapshotted.
    pub preserve: &'a [Glob],
    /// Effective settings.
    pub effective: &'a Effective,
    /// The catalog of its product.
    pub catalog: &'a Catalog,
    /// Its releases.
    pub releases: &'a [Release],
    /// Its fixes, in name order.
    pub fixes: &'a [Fix],
    /// The catalog commit planned against (git catalogs).
    pub catalog_commit: Option<&'a str>,
    /// Whether the fleet and catalog commits may be acted on (SPEC §7);
    /// when not, the plan holds everything with `untrusted_source`.
    pub trust: &'a Trust,
    /// What is installed; `None` when not adopted and no release matches.
    pub installed: Option<Installed>,
    /// Whether the site is adopted.
    pub adopted: bool,
    /// For a site that is not adopted: the release it looks like.
    pub detection: Option<Detection>,
    /// The files on disk.
    pub inventory: &'a Inventory,
    /// Releases quarantined on this site.
    pub quarantined: &'a [Version],
    /// Fixes quarantined on this site: id → checksum when they failed.
    pub quarantined_fixes: &'a BTreeMap<String, String>,
    /// `apply --release V`.
    pub forced: Option<&'a Version>,
    /// `apply --fix ID`: lifts that fix's quarantine.
    pub forced_fix: Option<&'a str>,
    /// Preflight checks that failed (SPEC §6.7).
    pub preflight: &'a [PreflightFailure],
    /// The site's failure marker, as one line (SPEC §6.6): while it is
    /// there, everything is held.
    pub failure_marker: Option<&'a str>,
    /// Free space for the `space` check; `None` when it could not be read
    /// (then `apply` still measures before it writes).
    pub space: Option<Space>,
    /// The site's approvals file (`approvals/<site>.yaml`), oldest first;
    /// empty when it has none.
    pub approved: &'a [Approval],
    /// Now.
    pub now: jiff::Timestamp,
    /// Contents.
    pub contents: &'a dyn Contents,
    /// Whether each changed file keeps its old content, for diffs. `apply`
    /// renders none, so it plans without: the reads, and the memory of
    /// every changed file's old bytes, are saved. Nothing else differs.
    pub diffs: bool,
}
