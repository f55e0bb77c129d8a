//! Effective settings of a site, each with its provenance.
//!
//! A site's setting comes from the site file, else from the first policy of
//! its `extends` chain that sets a default, else from the built-in default;
//! then the first policy of the chain that sets a ceiling clamps it. Every
//! [`Setting`] remembers which file and line decided it, so `explain` can
//! say why a site gets what it gets. Pure: no I/O.

use std::fmt;

use serde::Serialize;

use crate::load::{Diagnostic, Fleet, Loaded, Location};
use crate::model::values::{Duration, VersionReq};
use crate::model::words::{ChangeLevel, DriftMode, HotfixLevel, Layout, UpgradeLevel};
use crate::model::{Policy, Site, Window};

/// The policy of a site that names none.
pub const DEFAULT_POLICY: &str = "base";

/// Who decided a setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Provenance {
    /// The site file.
    Site {
        /// Where.
        #[serde(flatten)]
        at: Location,
    },
    /// A policy's default or ceiling.
    Policy {
        /// The policy.
        policy: String,
        /// Whether it is a stock policy.
        stock: bool,
        /// Where.
        #[serde(flatten)]
        at: Location,
    },
    /// sitekeeper's own default.
    Builtin,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Site { at } => write!(f, "{at}"),
            Provenance::Policy {
                policy,
                stock: true,
                at,
            } => write!(f, "{at} (stock policy {policy})"),
            Provenance::Policy {
                policy,
                stock: false,
                at,
            } => write!(f, "{at} (policy {policy})"),
            Provenance::Builtin => f.write_str("built-in default"),
        }
    }
}

/// One effective setting.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    /// The value the site gets.
    pub value: T,
    /// Who decided it.
    pub from: Provenance,
    /// Why it differs from what was asked, when a ceiling clamped it.
    pub note: Option<String>,
}

impl<T> Setting<T> {
    /// A setting decided by `from`.
    pub fn new(value: T, from: Provenance) -> Self {
        Self {
            value,
            from,
            note: None,
        }
    }
}

/// A policy in a site's chain.
#[derive(Debug, Clone, Serialize)]
pub struct ChainLink {
    /// The policy's name.
    pub name: String,
    /// Whether it is a stock policy.
    pub stock: bool,
    /// Its file.
    pub file: String,
}

/// Everything a site effectively gets.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The site's name.
    pub site: String,
    /// The site file.
    pub file: String,
    /// The policy chain, most specific first.
    pub chain: Vec<ChainLink>,
    /// The site's policy.
    pub policy: Setting<String>,
    /// Product.
    pub product: Setting<String>,
    /// Channel.
    pub channel: Setting<String>,
    /// Version pin.
    pub version: Setting<Option<VersionReq>>,
    /// Rollout ring.
    pub ring: Setting<u8>,
    /// Layout.
    pub layout: Setting<Layout>,
    /// Drift handling.
    pub drift: Setting<DriftMode>,
    /// Upgrades opt-in, clamped.
    pub upgrades: Setting<UpgradeLevel>,
    /// Hot-fix opt-in, clamped.
    pub hotfixes: Setting<HotfixLevel>,
    /// Diagnostics opt-in, clamped.
    pub diagnostics: Setting<bool>,
    /// Vendor-access opt-in, clamped.
    pub vendor_access: Setting<bool>,
    /// Status reports opt-in, clamped.
    pub status_reports: Setting<bool>,
    /// Error reports opt-in, clamped.
    pub error_reports: Setting<bool>,
    /// Public listing opt-in, clamped.
    pub public_listing: Setting<bool>,
    /// Maintenance window; `None` means always open.
    pub window: Setting<Option<Window>>,
    /// Whether pre-releases may be offered.
    pub prereleases: Setting<bool>,
    /// Soak time.
    pub min_release_age: Setting<Duration>,
    /// Whether security releases bypass window and soak.
    pub urgent_bypass: Setting<bool>,
    /// Levels needing approval.
    pub require_approval: Setting<Vec<ChangeLevel>>,
    /// Rollback points kept.
    pub keep_rollback_points: Setting<u32>,
    /// Whether release hooks may run.
    pub allow_release_hooks: Setting<bool>,
    /// Quiet time between notices.
    pub notify_interval: Setting<Duration>,
}

/// One line of `explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Setting name, as in the site file (`opt_in.upgrades`).
    pub name: &'static str,
    /// The value, as written in YAML.
    pub value: serde_json::Value,
    /// Who decided it.
    #[serde(flatten)]
    pub from: Provenance,
    /// Why it differs from what was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Effective {
    /// Every setting, in the order of the site file.
    pub fn rows(&self) -> Vec<Row> {
        fn row<T: Serialize>(name: &'static str, s: &Setting<T>) -> Row {
            Row {
                name,
                value: serde_json::to_value(&s.value).unwrap_or(serde_json::Value::Null),
                from: s.from.clone(),
                note: s.note.clone(),
            }
        }
        vec![
            row("product", &self.product),
            row("channel", &self.channel),
            row("version", &self.version),
            row("policy", &self.policy),
            row("ring", &self.ring),
            row("layout", &self.layout),
            row("opt_in.hotfixes", &self.hotfixes),
            row("opt_in.upgrades", &self.upgrades),
            row("opt_in.diagnostics", &self.diagnostics),
            row("opt_in.vendor_access", &self.vendor_access),
            row("opt_in.status_reports", &self.status_reports),
            row("opt_in.error_reports", &self.error_reports),
            row("opt_in.public_listing", &self.public_listing),
            Row {
                name: "window",
                value: self
                    .window
                    .value
                    .as_ref()
                    .map_or(serde_json::Value::Null, |w| w.to_string().into()),
                from: self.window.from.clone(),
                note: self.window.note.clone(),
            },
            row("drift", &self.drift),
            row("prereleases", &self.prereleases),
            row("min_release_age", &self.min_release_age),
            row("urgent_bypass", &self.urgent_bypass),
            row("require_approval", &self.require_approval),
            row("keep_rollback_points", &self.keep_rollback_points),
            row("allow_release_hooks", &self.allow_release_hooks),
            row("notify_interval", &self.notify_interval),
        ]
    }
}

/// The chain of policies a site uses, most specific first.
struct Chain<'a> {
    links: Vec<(&'a Loaded<Policy>, bool)>,
}

impl Chain<'_> {
    /// The first policy that sets a value, with where it set it.
    fn find<T>(&self, path: &str, get: impl Fn(&Policy) -> Option<T>) -> Option<Setting<T>> {
        self.links.iter().find_map(|(p, stock)| {
            get(p).map(|value| {
                Setting::new(
                    value,
                    Provenance::Policy {
                        policy: p.policy.clone(),
                        stock: *stock,
                        at: p.origin.locate(path),
                    },
                )
            })
        })
    }

    /// A policy-level setting (not in the site file), else the built-in.
    fn setting<T>(&self, path: &str, get: impl Fn(&Policy) -> Option<T>, builtin: T) -> Setting<T> {
        self.find(path, get)
            .unwrap_or_else(|| Setting::new(builtin, Provenance::Builtin))
    }

    /// The chain as `explain` shows it, most specific first.
    fn describe(&self) -> Vec<ChainLink> {
        self.links
            .iter()
            .map(|(p, stock)| ChainLink {
                name: p.policy.clone(),
                stock: *stock,
                file: p.origin.file().to_owned(),
            })
            .collect()
    }
}

/// The site's own value at `path`, else the chain's default, else `builtin`.
fn site_or_default<T>(
    site: &Loaded<Site>,
    path: &str,
    own: Option<T>,
    chain: &Chain,
    default_path: &str,
    get: impl Fn(&Policy) -> Option<T>,
    builtin: T,
) -> Setting<T> {
    match own {
        Some(v) => Setting::new(
            v,
            Provenance::Site {
                at: site.origin.locate(path),
            },
        ),
        None => chain.setting(default_path, get, builtin),
    }
}

/// Clamps a requested opt-in at the chain's ceiling, explaining the clamp.
fn clamp<T: Ord + Copy + fmt::Display>(
    requested: Setting<T>,
    ceiling: Option<Setting<T>>,
) -> Setting<T> {
    let Some(ceiling) = ceiling else {
        return requested;
    };
    if requested.value <= ceiling.value {
        return requested;
    }
    let asker = match &requested.from {
        Provenance::Site { .. } => "site asked for".to_owned(),
        Provenance::Policy { policy, .. } => format!("policy `{policy}` defaults to"),
        Provenance::Builtin => "the built-in default is".to_owned(),
    };
    let (capper, at) = match &ceiling.from {
        Provenance::Policy { policy, at, .. } => {
            (policy.clone(), format!("{}:{}", at.file, at.line))
        }
        _ => (String::new(), String::new()),
    };
    let verb = if ceiling.value.to_string() == "false" {
        "forbids it".to_owned()
    } else {
        format!("caps it at `{}`", ceiling.value)
    };
    Setting {
        value: ceiling.value,
        from: ceiling.from,
        note: Some(format!(
            "{asker} `{}`, policy `{capper}` ({at}) {verb}",
            requested.value
        )),
    }
}

/// Resolves every setting of `site`. Fails (with a located diagnostic) only
/// when its policy chain is broken, which `validate` also reports.
///
/// The steps follow SPEC §2.1: the site's policy and its `extends` chain;
/// what only the site file says; what it says, else the chain's defaults;
/// the opt-ins, clamped at the chain's ceilings; and what only policies say.
pub fn resolve(fleet: &Fleet, site: &Loaded<Site>) -> Result<Effective, Diagnostic> {
    let policy = named_policy(site);
    let links = fleet
        .policy_chain(&policy.value)
        .map_err(|e| site.origin.diag("policy", e.to_string()))?;
    let chain = Chain { links };
    let own = SiteOnly::resolve(site);
    let defaulted = Defaulted::resolve(site, &chain);
    let opt_in = OptIns::resolve(site, &chain);
    let rules = PolicyOnly::resolve(&chain);
    Ok(Effective {
        site: site.site.to_string(),
        file: site.origin.file().to_owned(),
        chain: chain.describe(),
        product: own.product,
        channel: own.channel,
        version: own.version,
        ring: own.ring,
        layout: defaulted.layout,
        drift: defaulted.drift,
        upgrades: opt_in.upgrades,
        hotfixes: opt_in.hotfixes,
        diagnostics: opt_in.diagnostics,
        vendor_access: opt_in.vendor_access,
        status_reports: opt_in.status_reports,
        error_reports: opt_in.error_reports,
        public_listing: opt_in.public_listing,
        window: own.window,
        policy,
        prereleases: rules.prereleases,
        min_release_age: rules.min_release_age,
        urgent_bypass: rules.urgent_bypass,
        require_approval: rules.require_approval,
        keep_rollback_points: rules.keep_rollback_points,
        allow_release_hooks: rules.allow_release_hooks,
        notify_interval: rules.notify_interval,
    })
}

/// The policy the site names, else [`DEFAULT_POLICY`]: the head of the
/// chain every other setting is looked up in.
fn named_policy(site: &Loaded<Site>) -> Setting<String> {
    match &site.policy {
        Some(name) => Setting::new(
            name.clone(),
            Provenance::Site {
                at: site.origin.locate("policy"),
            },
        ),
        None => Setting::new(DEFAULT_POLICY.to_owned(), Provenance::Builtin),
    }
}

/// The site's own value at `path`, else `builtin`: for the settings a
/// policy has no say in.
fn site_or_builtin<T>(site: &Loaded<Site>, path: &str, own: Option<T>, builtin: T) -> Setting<T> {
    match own {
        Some(v) => Setting::new(
            v,
            Provenance::Site {
                at: site.origin.locate(path),
            },
        ),
        None => Setting::new(builtin, Provenance::Builtin),
    }
}

/// What only the site file says: which product and release it runs, its
/// ring and its window belong to the site, not to a policy.
struct SiteOnly {
    product: Setting<String>,
    channel: Setting<String>,
    version: Setting<Option<VersionReq>>,
    ring: Setting<u8>,
    window: Setting<Option<Window>>,
}

impl SiteOnly {
    fn resolve(site: &Loaded<Site>) -> Self {
        let here = |path: &str| Provenance::Site {
            at: site.origin.locate(path),
        };
        SiteOnly {
            product: Setting::new(site.product.clone(), here("product")),
            channel: Setting::new(site.channel.clone(), here("channel")),
            version: site_or_builtin(site, "version", site.version.clone().map(Some), None),
            ring: site_or_builtin(site, "ring", site.ring, 1),
            window: site_or_builtin(site, "window", site.window.clone().map(Some), None),
        }
    }
}

/// What the site file says, else the chain's default ("omitted fields take
/// the policy's default, then the built-in default"), with no ceiling.
struct Defaulted {
    layout: Setting<Layout>,
    drift: Setting<DriftMode>,
}

impl Defaulted {
    fn resolve(site: &Loaded<Site>, chain: &Chain) -> Self {
        Defaulted {
            layout: site_or_default(
                site,
                "layout",
                site.layout,
                chain,
                "defaults.layout",
                |p| p.defaults.layout,
                Layout::InPlace,
            ),
            drift: site_or_default(
                site,
                "drift",
                site.drift,
                chain,
                "defaults.drift",
                |p| p.defaults.drift,
                DriftMode::Preserve,
            ),
        }
    }
}

/// The opt-ins: the site's, else the chain's default, else the built-in,
/// then clamped at the chain's ceiling, since "a site can never opt in above
/// these".
struct OptIns {
    upgrades: Setting<UpgradeLevel>,
    hotfixes: Setting<HotfixLevel>,
    diagnostics: Setting<bool>,
    vendor_access: Setting<bool>,
    status_reports: Setting<bool>,
    error_reports: Setting<bool>,
    public_listing: Setting<bool>,
}

impl OptIns {
    fn resolve(site: &Loaded<Site>, chain: &Chain) -> Self {
        let o = &site.opt_in;
        macro_rules! opt_in {
            ($field:ident, $builtin:expr) => {
                clamp(
                    site_or_default(
                        site,
                        concat!("opt_in.", stringify!($field)),
                        o.$field,
                        chain,
                        concat!("defaults.", stringify!($field)),
                        |p| p.defaults.$field,
                        $builtin,
                    ),
                    chain.find(concat!("ceilings.", stringify!($field)), |p| {
                        p.ceilings.$field
                    }),
                )
            };
        }
        OptIns {
            upgrades: opt_in!(upgrades, UpgradeLevel::None),
            hotfixes: opt_in!(hotfixes, HotfixLevel::Critical),
            diagnostics: opt_in!(diagnostics, false),
            vendor_access: opt_in!(vendor_access, false),
            status_reports: opt_in!(status_reports, false),
            error_reports: opt_in!(error_reports, false),
            public_listing: opt_in!(public_listing, false),
        }
    }
}

/// What only policies say: how releases are admitted and how the site's
/// changes are kept and announced are the fleet's rules, not the site's.
struct PolicyOnly {
    prereleases: Setting<bool>,
    min_release_age: Setting<Duration>,
    urgent_bypass: Setting<bool>,
    require_approval: Setting<Vec<ChangeLevel>>,
    keep_rollback_points: Setting<u32>,
    allow_release_hooks: Setting<bool>,
    notify_interval: Setting<Duration>,
}

impl PolicyOnly {
    fn resolve(chain: &Chain) -> Self {
        PolicyOnly {
            prereleases: chain.setting("prereleases", |p| p.prereleases, false),
            min_release_age: chain.setting(
                "min_release_age",
                |p| p.min_release_age,
                Duration(std::time::Duration::ZERO),
            ),
            urgent_bypass: chain.setting("urgent_bypass", |p| p.urgent_bypass, true),
            require_approval: chain.setting(
                "require_approval",
                |p| p.require_approval.clone(),
                Vec::new(),
            ),
            keep_rollback_points: chain.setting(
                "keep_rollback_points",
                |p| p.keep_rollback_points,
                20,
            ),
            allow_release_hooks: chain.setting(
                "allow_release_hooks",
                |p| p.allow_release_hooks,
                false,
            ),
            notify_interval: chain.setting(
                "notify_interval",
                |p| p.notify_interval,
                Duration(std::time::Duration::from_secs(7 * 86_400)),
            ),
        }
    }
}
