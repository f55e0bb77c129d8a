//! Everything the planner needs about one site, read from disk once: the
//! inventory (through the confined root and the site index), the last
//! rollback point's files (from the mapped index when it is of that
//! point), the ledger, and release payloads on demand. It is also the
//! planner's [`Contents`], so planning itself stays pure.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::confined::Root;
use crate::inventory::index::{Index, Writer};
use crate::inventory::{self, Inventory, PointFiles, Progress};
use crate::load::payload::Payload;
use crate::load::{Fleet, Loaded, LoadedCatalog, Trust};
use crate::model::Site;
use crate::model::hash::BlobId;
use crate::model::values::Version;
use crate::plan::{self, Contents, Detection, Installed, SiteInput, SitePlan};
use crate::policy::{self, Effective};
use crate::store::{LedgerKind, LedgerResult, Points, SiteState, StoreError};

/// Why a site's state cannot be gathered.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The site's root cannot be opened.
    #[error("{site}: its root {root} cannot be opened: {source}")]
    Root {
        /// The site.
        site: String,
        /// The root.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root is relative and the fleet came from a URL.
    #[error(
        "{0}: its root is relative, but the fleet was read from git, so it has no directory to be relative to"
    )]
    NoRoot(String),
    /// The site's product has no loaded catalog.
    #[error("{0}: its product's catalog did not load")]
    NoCatalog(String),
    /// Its settings do not resolve.
    #[error("{0}")]
    Policy(String),
    /// A scan failed.
    #[error("{site}: scanning its files failed at {0}", site = .1)]
    Scan(#[source] inventory::ScanError, String),
    /// The state dir failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A site's gathered state.
pub struct SiteContext<'f> {
    /// The fleet.
    pub fleet: &'f Fleet,
    /// The site.
    pub site: &'f Loaded<Site>,
    /// Its effective settings.
    pub effective: Effective,
    /// Its catalog.
    pub catalog: &'f LoadedCatalog,
    /// Its root.
    pub root: Root,
    /// Its state dir.
    pub state: SiteState,
    /// Its files.
    pub inventory: Inventory,
    /// Its rollback points, if adopted.
    pub points: Option<Points>,
    /// Its last point number.
    pub point: Option<u64>,
    /// What is installed.
    pub installed: Option<Installed>,
    /// For a site not adopted: the release it looks like.
    pub detection: Option<Detection>,
    /// What failed on it and is skipped (`quarantine.json`).
    pub quarantine: crate::store::Quarantine,
    /// The quarantined releases, as versions.
    pub quarantined: Vec<Version>,
    /// The quarantined fixes: id → checksum when they failed.
    pub quarantined_fixes: BTreeMap<String, String>,
    /// The failure marker (SPEC §6.6), if the site has one.
    pub failure: Option<crate::store::FailureMarker>,
    /// …and the line the plan holds everything with.
    pub failure_summary: Option<String>,
    /// Preflight checks that fail now (SPEC §6.7).
    pub preflight: Vec<crate::plan::PreflightFailure>,
    /// Free space on the root's and the state dir's file systems, for the
    /// preflight's `space` check; `None` when it cannot be read.
    pub space: Option<crate::plan::Space>,
    /// The site's approvals (`approvals/<site>.yaml`), oldest first. Per
    /// site, as SPEC §2.1 files them: a digest shared by several sites is
    /// approved for each by listing it in each file (`approve A B …`).
    pub approved: Vec<crate::model::Approval>,
    /// Whether the fleet and catalog commits may be acted on for this site
    /// (signatures and no downgrade, SPEC §7).
    pub trust: Trust,
    payloads: RefCell<HashMap<Version, Arc<Payload>>>,
    releases: Vec<crate::model::Release>,
    fixes: Vec<crate::model::Fix>,
}

impl<'f> SiteContext<'f> {
    /// Reads the site's state. `progress` draws the hashing phase of the scan.
    pub fn gather(
        fleet: &'f Fleet,
        site: &'f Loaded<Site>,
        state_dir: &Path,
        progress: Option<&dyn Progress>,
    ) -> Result<Self, ContextError> {
        let name = site.site.to_string();
        let effective =
            policy::resolve(fleet, site).map_err(|d| ContextError::Policy(d.to_string()))?;
        let catalog = fleet
            .catalogs
            .get(&site.product)
            .ok_or_else(|| ContextError::NoCatalog(name.clone()))?;
        let root_path = fleet
            .site_root(site)
            .ok_or_else(|| ContextError::NoRoot(name.clone()))?;
        let root = Root::open(&root_path).map_err(|source| ContextError::Root {
            site: name.clone(),
            root: root_path.clone(),
            source,
        })?;
        let state = SiteState::new(state_dir, &name);

        let index = Arc::new(Index::open(&state.index_path()));
        let inventory = inventory::scan(&root, &site.paths.preserve, &index, progress)
            .map_err(|e| ContextError::Scan(e, site.site.to_string()))?;
        let points = state.existing_points()?;
        let point = match &points {
            Some(p) => p.latest()?,
            None => None,
        };
        let trust = super::trust::verdict(fleet, catalog, points.as_ref())?;
        // A damaged quarantine is an error: reading it as empty would let
        // a change that failed through again (SPEC §6.2).
        let quarantine = crate::store::Quarantine::read(&state)?;
        let (quarantined, quarantined_fixes) = quarantined(&quarantine);
        // Likewise the failure marker (SPEC §6.6): damaged is an error.
        let failure = crate::store::FailureMarker::read(&state)?;
        let failure_summary = failure.as_ref().map(|f| f.summary(&name));
        let releases: Vec<crate::model::Release> =
            catalog.releases.iter().map(|r| r.value.clone()).collect();
        let preflight = super::preflight::gather(site, &effective, &releases, &root_path);
        let space = super::preflight::space(&root, &state);
        let approved = fleet
            .approvals
            .get(&name)
            .map(|a| a.approved.clone())
            .unwrap_or_default();
        let mut ctx = SiteContext {
            fleet,
            site,
            effective,
            catalog,
            root,
            state,
            inventory,
            points,
            point,
            installed: None,
            detection: None,
            quarantine,
            quarantined,
            quarantined_fixes,
            failure,
            failure_summary,
            preflight,
            space,
            approved,
            trust,
            payloads: RefCell::default(),
            releases,
            fixes: catalog.fixes.iter().map(|f| f.value.clone()).collect(),
        };
        let key = match (&ctx.points, ctx.point) {
            (Some(points), Some(n)) => Some(points.commit_key(n)?),
            _ => None,
        };
        ctx.installed = ctx.installed(&index, key)?;
        ctx.save_index(&index, key);
        Ok(ctx)
    }

    /// Writes the site index again when the scan or the point changed what
    /// it should say: the files on disk merged, in path order, with the
    /// last point's list. Only a cache: a state dir that cannot be written
    /// costs speed, not correctness; a converged site's plan writes
    /// nothing, so it stays read-only.
    fn save_index(&self, index: &Index, key: Option<[u8; 20]>) {
        if !self.inventory.index_changed(index) && index.point_commit() == key {
            return;
        }
        let mut w = Writer::new(key);
        let point = match (&self.installed, key) {
            (Some(i), Some(_)) => Some(i.snapshot.clone()),
            _ => None,
        };
        let mut disk = self.inventory.entries.iter().peekable();
        let mut kept = point.iter().flat_map(|p| p.iter()).peekable();
        let merged = std::iter::from_fn(|| {
            let next = match (disk.peek(), kept.peek()) {
                (None, None) => return None,
                (Some((d, _)), Some((k, _))) => d.as_bytes().cmp(k.as_bytes()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
            };
            Some(match next {
                std::cmp::Ordering::Less => disk.next().map(|(p, _)| (p.as_str(), None)),
                std::cmp::Ordering::Greater => kept.next().map(|(p, b)| (p, Some(b))),
                std::cmp::Ordering::Equal => {
                    let (p, _) = disk.next()?;
                    Some((p.as_str(), kept.next().map(|(_, b)| b)))
                }
            })
        })
        .flatten();
        for (path, blob) in merged {
            let stat = self.inventory.index_stat(index, path);
            if w.push(path, stat, blob).is_err() {
                return;
            }
        }
        for (blob, hash) in index.known_all() {
            w.know(blob, hash);
        }
        if self.state.create().is_ok() && w.save(&self.state.index_path()).is_ok() {
            for old in self.state.superseded_caches() {
                let _ = std::fs::remove_file(old);
            }
        }
    }

    /// What is installed: the latest point's release, files and fixes; for
    /// a site not adopted, the release its files look like (its detection
    /// is kept on the context too).
    fn installed(
        &mut self,
        index: &Arc<Index>,
        key: Option<[u8; 20]>,
    ) -> Result<Option<Installed>, ContextError> {
        let ctx = self;
        Ok(match (&ctx.points, ctx.point) {
            (Some(points), Some(n)) => {
                let meta = points.meta(n)?;
                // The index's list when it is of this point: read in place.
                let snapshot = match key {
                    Some(k) if index.point_commit() == Some(k) => {
                        PointFiles::Mapped(Arc::clone(index))
                    }
                    _ => PointFiles::from(points.blobs(n)?),
                };
                let version: Version =
                    meta.version
                        .parse()
                        .map_err(|e: String| StoreError::Corrupt {
                            path: ctx.state.points_path(),
                            line: 0,
                            message: format!("point {n} names version {:?}: {e}", meta.version),
                        })?;
                Some(Installed {
                    version,
                    snapshot,
                    fixes: applied_fixes(&ctx.state, &meta.fixes)?,
                })
            }
            _ => {
                ctx.detection = ctx.detect();
                ctx.detection.as_ref().map(|d| {
                    let snapshot = ctx
                        .payload(&d.version)
                        .map(|p| {
                            p.files
                                .keys()
                                .filter_map(|path| {
                                    ctx.inventory
                                        .entries
                                        .get(path)
                                        .map(|e| (path.clone(), e.blob()))
                                })
                                .collect::<BTreeMap<_, _>>()
                                .into()
                        })
                        .unwrap_or_default();
                    Installed {
                        version: d.version.clone(),
                        snapshot,
                        fixes: BTreeMap::new(),
                    }
                })
            }
        })
    }

    /// Whether the site has been adopted.
    pub fn adopted(&self) -> bool {
        self.point.is_some()
    }

    /// The release the site's files resemble most.
    pub fn detect(&self) -> Option<Detection> {
        let payloads: Vec<(Version, Arc<Payload>)> = self
            .catalog
            .releases
            .iter()
            .filter_map(|r| {
                self.payload(&r.version)
                    .ok()
                    .map(|p| (r.version.clone(), p))
            })
            .collect();
        plan::detect(
            &self.inventory,
            payloads.iter().map(|(v, p)| (v, p.as_ref())),
        )
    }

    /// A release's payload, read once.
    pub fn payload(&self, version: &Version) -> Result<Arc<Payload>, String> {
        if let Some(p) = self.payloads.borrow().get(version) {
            return Ok(p.clone());
        }
        let release = self
            .catalog
            .releases
            .iter()
            .find(|r| &r.version == version)
            .ok_or_else(|| format!("the catalog has no release {version}"))?;
        let payload = Arc::new(Payload::load(self.catalog, release).map_err(|e| e.to_string())?);
        self.payloads
            .borrow_mut()
            .insert(version.clone(), payload.clone());
        Ok(payload)
    }

    /// The catalog's fix with this id.
    pub fn fixes_by_id(&self, id: &str) -> Option<&crate::model::Fix> {
        self.fixes.iter().find(|f| f.id == id)
    }

    /// Plans the site at `now`.
    pub fn plan(&self, now: jiff::Timestamp, forced: Option<&Version>) -> SitePlan {
        self.plan_with(now, forced, None, true)
    }

    /// [`SiteContext::plan`] without the old contents that only diffs use:
    /// the same plan and digest, for `apply`, which renders no diff.
    /// `forced_fix` (`apply --fix ID`) lifts that fix's quarantine.
    pub fn plan_to_apply(
        &self,
        now: jiff::Timestamp,
        forced: Option<&Version>,
        forced_fix: Option<&str>,
    ) -> SitePlan {
        self.plan_with(now, forced, forced_fix, false)
    }

    fn plan_with(
        &self,
        now: jiff::Timestamp,
        forced: Option<&Version>,
        forced_fix: Option<&str>,
        diffs: bool,
    ) -> SitePlan {
        let input = SiteInput {
            name: self.site.site.as_str(),
            labels: &self.site.labels,
            preserve: &self.site.paths.preserve,
            effective: &self.effective,
            catalog: &self.catalog.catalog,
            releases: &self.releases,
            fixes: &self.fixes,
            catalog_commit: self.catalog.source.commit(),
            trust: &self.trust,
            installed: self.installed.clone(),
            adopted: self.adopted(),
            detection: self.detection.clone(),
            inventory: &self.inventory,
            quarantined: &self.quarantined,
            quarantined_fixes: &self.quarantined_fixes,
            forced,
            forced_fix,
            preflight: &self.preflight,
            failure_marker: self.failure_summary.as_deref(),
            space: self.space,
            approved: &self.approved,
            now,
            contents: self,
            diffs,
        };
        plan::plan_site(&input)
    }
}

impl Contents for SiteContext<'_> {
    fn disk(&self, path: &str) -> Result<Vec<u8>, String> {
        let (mut file, _) = self
            .root
            .open_file(path)
            .map_err(|e| format!("{path}: {e}"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("{path}: {e}"))?;
        Ok(bytes)
    }

    fn payload(&self, version: &Version) -> Result<Arc<Payload>, String> {
        SiteContext::payload(self, version)
    }

    fn payload_blob(&self, version: &Version, blob: BlobId) -> Result<Vec<u8>, String> {
        let payload = SiteContext::payload(self, version)?;
        self.catalog.payload_blob(&payload, blob)
    }

    fn fix_source(&self, rel: &str) -> Result<Vec<u8>, String> {
        self.catalog.fix_source(rel)
    }

    fn point_blob(&self, blob: BlobId) -> Result<Vec<u8>, String> {
        match &self.points {
            Some(points) => points.read_blob(blob).map_err(|e| e.to_string()),
            None => Err("the site has no rollback points".into()),
        }
    }
}

/// The quarantined releases as versions, and the fixes as id → checksum,
/// as the planner takes them.
fn quarantined(q: &crate::store::Quarantine) -> (Vec<Version>, BTreeMap<String, String>) {
    (
        q.releases
            .iter()
            .filter_map(|r| r.version.parse().ok())
            .collect(),
        q.fixes
            .iter()
            .map(|f| (f.id.clone(), f.checksum.clone()))
            .collect(),
    )
}

/// The fixes in the site's files now (`fixes`, as the latest point names
/// them), each with the checksum it had when it was last applied.
///
/// The point, not the ledger, says which fixes are in: a change that was
/// rolled back left its fix records behind, but not its fixes.
fn applied_fixes(
    state: &SiteState,
    fixes: &[String],
) -> Result<BTreeMap<String, String>, StoreError> {
    let mut sums = BTreeMap::new();
    for r in state.ledger().read()? {
        if let (LedgerKind::Fix, LedgerResult::Ok, Some(id), Some(sum)) =
            (r.kind, r.result, r.id, r.checksum)
        {
            sums.insert(id, sum);
        }
    }
    Ok(fixes
        .iter()
        .filter_map(|id| sums.get(id).map(|sum| (id.clone(), sum.clone())))
        .collect())
}
