//! Loading a fleet repo: `fleet.yaml`, sites, policies and approvals, and
//! then every catalog that `fleet.yaml` names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use super::catalog::{self, LoadedCatalog};
use super::signers::{self, AllowedSigners};
use super::source::{self, EntryKind, Source};
use super::stock::{STOCK_POLICIES, stock_file};
use super::trust::{self, Trust};
use super::{
    Diagnostic, Diagnostics, LoadOptions, Loaded, Location, Origin, read_doc, yaml, yaml_files,
};
use crate::model::{Approvals, FleetConfig, Policy, Site};

/// A fleet and everything it refers to, as loaded. Files that failed to
/// load are absent; their problems are in the diagnostics returned beside.
#[derive(Debug)]
pub struct Fleet {
    /// The fleet repo.
    pub source: Source,
    /// `fleet.yaml` (defaults when the file is absent).
    pub config: Loaded<FleetConfig>,
    /// Every site, in file order.
    pub sites: Vec<Loaded<Site>>,
    /// Fleet-local policies by name.
    pub policies: BTreeMap<String, Loaded<Policy>>,
    /// Stock policies by name.
    pub stock_policies: BTreeMap<String, Loaded<Policy>>,
    /// Approvals by site name.
    pub approvals: BTreeMap<String, Loaded<Approvals>>,
    /// Catalogs by product name; a product whose catalog failed to open is absent.
    pub catalogs: BTreeMap<String, LoadedCatalog>,
    /// Files that exist but could not be read (`fleet.yaml`, `policies/<name>`),
    /// so that checks do not report what they would have defined as missing.
    pub unreadable: BTreeSet<String>,
    /// The verdict on the fleet repo's own commit (SPEC §7): required only
    /// of a fleet fetched from a git URL.
    pub trust: Trust,
}

impl Fleet {
    /// The site named `name`.
    pub fn site(&self, name: &str) -> Option<&Loaded<Site>> {
        self.sites.iter().find(|s| s.site.as_str() == name)
    }

    /// The policy named `name`: the fleet's own, else the stock one. The flag
    /// says whether it is stock.
    pub fn policy(&self, name: &str) -> Option<(&Loaded<Policy>, bool)> {
        self.policies
            .get(name)
            .map(|p| (p, false))
            .or_else(|| self.stock_policies.get(name).map(|p| (p, true)))
    }

    /// The chain of `start` and the policies it extends, most specific first,
    /// each with whether it is stock. A fleet policy that extends its own name
    /// refines the stock policy of that name; stock policies extend only stock
    /// ones. The error says what is broken: a missing parent or a loop.
    pub fn policy_chain(&self, start: &str) -> Result<Vec<(&Loaded<Policy>, bool)>, ChainError> {
        let first = self.policy(start).ok_or_else(|| ChainError::Missing {
            from: None,
            name: start.to_owned(),
        })?;
        let mut chain = vec![first];
        while let Some((policy, stock)) = chain.last().copied()
            && let Some(parent) = &policy.extends
        {
            let next = if stock || parent == &policy.policy {
                self.stock_policies.get(parent).map(|p| (p, true))
            } else {
                self.policy(parent)
            };
            let next = next.ok_or_else(|| ChainError::Missing {
                from: Some(policy.policy.clone()),
                name: parent.clone(),
            })?;
            let seen = chain
                .iter()
                .any(|(p, s)| p.policy == next.0.policy && *s == next.1);
            chain.push(next);
            if seen {
                let names = chain
                    .iter()
                    .map(|(p, _)| p.policy.as_str())
                    .collect::<Vec<_>>()
                    .join(" → ");
                return Err(ChainError::Loop(names));
            }
        }
        Ok(chain)
    }

    /// Where a `notify:` target's `secret_file` is: absolute, or relative
    /// to the fleet repo. `None` for a relative path of a fleet read from
    /// a URL (a secret is a file of this host, not of the repo).
    pub fn notify_secret_path(&self, secret: &str) -> Option<PathBuf> {
        let path = Path::new(secret);
        if path.is_absolute() {
            return Some(path.to_owned());
        }
        self.source.dir_path().map(|dir| dir.join(path))
    }

    /// The site's root directory: absolute, or relative to the fleet repo.
    /// `None` for a relative root of a fleet read from a URL.
    pub fn site_root(&self, site: &Site) -> Option<PathBuf> {
        let root = Path::new(&site.root);
        if root.is_absolute() {
            return Some(root.to_owned());
        }
        self.source.dir_path().map(|dir| dir.join(root))
    }
}

/// Why a policy chain cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A policy (or the parent of `from`) does not exist.
    #[error("there is no policy {name:?}{}", from.as_ref().map(|f| format!(" for {f:?} to extend")).unwrap_or_default())]
    Missing {
        /// The policy whose `extends` names it, if any.
        from: Option<String>,
        /// The missing name.
        name: String,
    },
    /// The chain comes back to a policy it already passed.
    #[error(
        "the policies extend each other in a loop: {0} (hint: one of them must stop extending)"
    )]
    Loop(String),
}

/// Opens the fleet source named by `--fleet`.
fn open_fleet(options: &LoadOptions) -> Result<Source, Diagnostic> {
    let spec = options.fleet.as_str();
    let opened = if source::is_url(spec) {
        let cache =
            crate::statedir::StateDir::new(super::state_dir(options.state_dir.as_deref(), None))
                .git_cache();
        Source::git_remote(spec, "HEAD", &cache, &options.git, format!("{spec}:"))
    } else {
        let label = if spec == "." || spec.is_empty() {
            String::new()
        } else {
            format!("{}/", spec.trim_end_matches('/'))
        };
        Source::dir(Path::new(spec), label)
    };
    opened.map_err(|e| {
        let d = Diagnostic::new(
            Location::file(crate::git::shown_url(spec)),
            format!("cannot open the fleet: {e}"),
        )
        .with_fetch(e.fetch_failure());
        match e.fetch_failure() {
            // The message says what failed, and carries its own hint.
            Some(_) => d,
            None => d.with_hint(
                "--fleet takes a fleet repo directory (holding fleet.yaml and sites/) or a git URL",
            ),
        }
    })
}

/// The fleet `--fleet` names: its own files, the verdict on its commit,
/// and every catalog it names.
pub(super) fn load_fleet(
    options: &LoadOptions,
    diags: &mut Diagnostics,
) -> Result<Fleet, Diagnostic> {
    let source = open_fleet(options)?;
    let (mut fleet, signers) = read_fleet(source, diags);
    fleet.trust = fleet_trust(&fleet, options, &signers);
    fleet.catalogs = open_catalogs(&fleet, options, &signers, diags);
    Ok(fleet)
}

/// Reads the fleet repo's own files (`fleet.yaml`, sites, policies,
/// approvals, signers files) from `source`, without opening any catalog
/// and without a trust verdict ([`Trust::NotRequired`]).
///
/// This is all `plan --changed-since` needs of the fleet at the revision
/// it compares with: which catalog a product names is in `fleet.yaml`, and
/// opening catalogs there would fetch, and fail on relative catalog paths
/// of a fleet read from git.
pub(super) fn load_fleet_files(source: Source, diags: &mut Diagnostics) -> Fleet {
    read_fleet(source, diags).0
}

/// Every allowed signers file the fleet names, by path: its text and keys
/// when it is usable (see [`read_signers`]).
type SignerFiles = BTreeMap<String, Option<(String, AllowedSigners)>>;

/// The fleet's own files in `source`, with no catalogs and no trust
/// verdict yet, and the signers files they name.
fn read_fleet(source: Source, diags: &mut Diagnostics) -> (Fleet, SignerFiles) {
    let mut unreadable = BTreeSet::new();
    let config = read_config(&source, &mut unreadable, diags);
    let mut sites = Vec::new();
    for (_, rel) in yaml_files(&source, "sites", diags) {
        load_site_file(&source, &rel, diags, &mut sites);
    }
    let policies = read_policies(&source, &mut unreadable, diags);
    let stock_policies = read_stock_policies(diags);
    let mut approvals = BTreeMap::new();
    for (stem, rel) in yaml_files(&source, "approvals", diags) {
        if let Some((value, origin)) = read_doc::<Approvals>(&source, &rel, diags) {
            approvals.insert(stem, Loaded { value, origin });
        }
    }
    let signers = read_signer_files(&source, &config, diags);
    let fleet = Fleet {
        source,
        config,
        sites,
        policies,
        stock_policies,
        approvals,
        catalogs: BTreeMap::new(),
        unreadable,
        trust: Trust::NotRequired,
    };
    (fleet, signers)
}

/// `fleet.yaml`, or the defaults when the file is absent. A file that is
/// there but does not read is `unreadable` (and defaults stand in).
fn read_config(
    source: &Source,
    unreadable: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) -> Loaded<FleetConfig> {
    let config = if source.kind("fleet.yaml").is_some() {
        let config = read_doc::<FleetConfig>(source, "fleet.yaml", diags)
            .map(|(value, origin)| Loaded { value, origin });
        if let Some(config) = &config {
            for p in config.problems() {
                diags.push(config.origin.problem(&p));
            }
        }
        if config.is_none() {
            unreadable.insert("fleet.yaml".to_owned());
        }
        config
    } else {
        None
    };
    config.unwrap_or_else(|| Loaded {
        value: FleetConfig::default(),
        origin: Origin::new(source.display("fleet.yaml"), yaml::SpanIndex::default()),
    })
}

/// The fleet's own policies by name, each checked, and named after its file.
fn read_policies(
    source: &Source,
    unreadable: &mut BTreeSet<String>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Loaded<Policy>> {
    let mut policies = BTreeMap::new();
    for (stem, rel) in yaml_files(source, "policies", diags) {
        let Some((value, origin)) = read_doc::<Policy>(source, &rel, diags) else {
            unreadable.insert(format!("policies/{stem}"));
            continue;
        };
        for p in value.problems() {
            diags.push(origin.problem(&p));
        }
        if value.policy != stem {
            diags.push(origin.diag(
                "policy",
                format!(
                    "the policy is named {:?} but its file is {stem}.yaml (hint: name the file after the policy)",
                    value.policy
                ),
            ));
        }
        policies.insert(stem, Loaded { value, origin });
    }
    policies
}

/// The stock policies embedded in the binary, by name.
fn read_stock_policies(diags: &mut Diagnostics) -> BTreeMap<String, Loaded<Policy>> {
    let mut stock_policies = BTreeMap::new();
    for (name, text) in STOCK_POLICIES {
        match yaml::parse::<Policy>(&stock_file(name), text.as_bytes()) {
            Ok((value, index)) => {
                let origin = Origin::new(stock_file(name), index);
                stock_policies.insert((*name).to_owned(), Loaded { value, origin });
            }
            Err(d) => diags.push(d),
        }
    }
    stock_policies
}

/// Every signers file `fleet.yaml` names, for the fleet or a catalog, read
/// and checked once however many name it.
fn read_signer_files(
    source: &Source,
    config: &FleetConfig,
    diags: &mut Diagnostics,
) -> SignerFiles {
    let mut signer_files = SignerFiles::new();
    let named = config.allowed_signers.iter().chain(
        config
            .catalogs
            .values()
            .filter_map(|c| c.allowed_signers.as_ref()),
    );
    for rel in named {
        signer_files
            .entry(rel.as_str().to_owned())
            .or_insert_with(|| read_signers(source, rel.as_str(), diags));
    }
    signer_files
}

/// The verdict on the fleet repo's own commit (SPEC §7): required only of
/// a fleet fetched from a git URL, against the signers file at its head.
fn fleet_trust(fleet: &Fleet, options: &LoadOptions, signer_files: &SignerFiles) -> Trust {
    if !source::is_url(&options.fleet) {
        // A directory is what the person running sitekeeper has in hand:
        // there is no fetched commit to check. Its signers file is still
        // checked when it is read, so that CI catches a broken one before
        // it is pushed.
        return Trust::NotRequired;
    }
    let config = &fleet.config;
    let head = config.allowed_signers.as_ref().and_then(|rel| {
        signer_files
            .get(rel.as_str())
            .and_then(Option::as_ref)
            .map(|(text, _)| (rel.as_str(), text.as_str()))
    });
    // Unreadable or broken signers at the head: keep requiring them
    // (validate reports why), rather than fall back to no signatures.
    let head = match (&config.allowed_signers, head) {
        (Some(rel), None) => Some((rel.as_str(), "")),
        (_, head) => head,
    };
    let record_dir = super::state_dir(options.state_dir.as_deref(), None);
    trust::fleet_trust(&fleet.source, &options.fleet, &record_dir, head)
}

/// Opens every catalog `fleet.yaml` names, each with its trust verdict
/// where it names allowed signers; one that fails to open is reported at
/// its `source` field and left out.
fn open_catalogs(
    fleet: &Fleet,
    options: &LoadOptions,
    signer_files: &SignerFiles,
    diags: &mut Diagnostics,
) -> BTreeMap<String, LoadedCatalog> {
    let cache =
        crate::statedir::StateDir::new(super::state_dir(options.state_dir.as_deref(), Some(fleet)))
            .git_cache();
    let mut catalogs = BTreeMap::new();
    for (product, spec) in &fleet.config.catalogs {
        let path = format!("catalogs.{product}.source");
        let opened = open_catalog(
            &fleet.source,
            &spec.source,
            spec.git_ref.as_deref(),
            &cache,
            &options.git,
        );
        match opened {
            Ok(cat_source) => {
                if let Some(mut cat) = catalog::load_catalog(product, cat_source, diags) {
                    if let Some(rel) = &spec.allowed_signers {
                        let name = fleet.source.display(rel.as_str());
                        cat.trust = match signer_files.get(rel.as_str()).and_then(Option::as_ref) {
                            Some((_, keys)) => trust::verify_source(
                                &cat.source,
                                &format!("the catalog {product}"),
                                keys,
                                &name,
                            ),
                            None => Trust::Untrusted {
                                reason: format!(
                                    "the allowed signers file {name} of the catalog {product} cannot be used (see `sitekeeper validate`)"
                                ),
                            },
                        };
                    }
                    catalogs.insert(product.clone(), cat);
                }
            }
            Err((message, fetch)) => {
                diags.push(fleet.config.origin.diag(&path, message).with_fetch(fetch))
            }
        }
    }
    catalogs
}

/// Reads and checks the allowed signers file `rel` of the fleet repo,
/// recording every bad line. Its text and keys when it is usable; a file
/// that is absent is reported by the cross-file checks instead.
fn read_signers(
    source: &Source,
    rel: &str,
    diags: &mut Diagnostics,
) -> Option<(String, AllowedSigners)> {
    if source.kind(rel) != Some(EntryKind::File) {
        return None;
    }
    let shown = source.display(rel);
    let bytes = match source.read(rel) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::new(Location::file(shown), e.to_string()));
            return None;
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        diags.push(Diagnostic::new(
            Location::file(shown),
            "the allowed signers file is not UTF-8 text",
        ));
        return None;
    };
    let (keys, errors) = signers::parse(&text);
    let clean = errors.is_empty();
    for e in errors {
        diags.push(Diagnostic::new(
            Location {
                file: shown.clone(),
                line: e.line,
                column: e.column,
            },
            e.message,
        ));
    }
    if clean && keys.entries.is_empty() {
        diags.push(
            Diagnostic::new(
                Location::file(shown),
                "the allowed signers file lists no keys, so no commit could be trusted",
            )
            .with_hint("add a line `principal ssh-ed25519 AAAA…` per signer"),
        );
        return None;
    }
    clean.then_some((text, keys))
}

/// What a site file holds, for messages about an empty or scalar file.
const SITE_SHAPE: &str = "one site (site:, root:, product:, channel:, …) or a list of sites";

fn load_site_file(
    source: &Source,
    rel: &str,
    diags: &mut Diagnostics,
    sites: &mut Vec<Loaded<Site>>,
) {
    let shown = source.display(rel);
    let bytes = match source.read(rel) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::new(Location::file(shown), e.to_string()));
            return;
        }
    };
    let is_list = match yaml::scan_only(&shown, &bytes, SITE_SHAPE) {
        Ok(index) => index.root_is_sequence(),
        Err(d) => return diags.push(d),
    };
    let parsed = if is_list {
        yaml::parse::<Vec<Site>>(&shown, &bytes).map(|(v, i)| {
            let origin = Origin::new(shown.clone(), i);
            v.into_iter()
                .enumerate()
                .map(|(n, value)| Loaded {
                    value,
                    origin: origin.child(&format!("[{n}]")),
                })
                .collect::<Vec<_>>()
        })
    } else {
        yaml::parse::<Site>(&shown, &bytes).map(|(value, i)| {
            vec![Loaded {
                value,
                origin: Origin::new(shown.clone(), i),
            }]
        })
    };
    match parsed {
        Ok(loaded) => {
            for site in &loaded {
                for p in site.problems() {
                    diags.push(site.origin.problem(&p));
                }
            }
            sites.extend(loaded);
        }
        Err(d) => diags.push(d),
    }
}

/// Opens a catalog named in `fleet.yaml`; the error is a message for the
/// `source` field, and the failed fetch it reports, if it is one.
fn open_catalog(
    fleet: &Source,
    spec: &str,
    git_ref: Option<&str>,
    cache: &Path,
    access: &crate::git::GitAccess,
) -> Result<Source, (String, Option<super::FetchFailure>)> {
    if source::is_url(spec) {
        let r = git_ref.unwrap_or("HEAD");
        return Source::git_remote(spec, r, cache, access, format!("{spec}@{r}:"))
            .map_err(|e| (format!("cannot read the catalog: {e}"), e.fetch_failure()));
    }
    let path = Path::new(spec);
    let (path, shown) = if path.is_absolute() {
        (path.to_owned(), spec.to_owned())
    } else {
        let Some(dir) = fleet.dir_path() else {
            return Err((
                format!(
                    "{spec:?} is a relative path, but the fleet was read from git (hint: use an absolute path or a git URL)"
                ),
                None,
            ));
        };
        (dir.join(path), normalize(&fleet.display(spec)))
    };
    let opened = match git_ref {
        Some(r) => Source::git_local(&path, r, format!("{shown}@{r}:")),
        None => Source::dir(&path, format!("{}/", shown.trim_end_matches('/'))),
    };
    opened.map_err(|e| {
        let hint = e
            .hint()
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default();
        (format!("cannot read the catalog: {e}{hint}"), None)
    })
}

/// `a/b/../c` → `a/c`, for display only (never for access).
fn normalize(shown: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(shown).components() {
        match c {
            Component::ParentDir if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            Component::ParentDir => parts.push(".."),
            Component::CurDir => {}
            Component::RootDir => parts.push(""),
            Component::Normal(s) => parts.push(s.to_str().unwrap_or("?")),
            Component::Prefix(_) => {}
        }
    }
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn display_paths_are_normalized() {
        assert_eq!(normalize("examples/fleet/../catalog"), "examples/catalog");
        assert_eq!(normalize("../catalog"), "../catalog");
        assert_eq!(normalize("/srv/x/../y"), "/srv/y");
    }
}
