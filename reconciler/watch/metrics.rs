//! The daemon's Prometheus metrics (`GET /metrics`): reconciles, failures,
//! durations, drifted files, pending items, available upgrades by class,
//! upgrade notices sent, the last success per site, and failed fetches
//! per repository, notifications by target and result and the outbox's
//! depth. Only counts and gauges; it never decides anything.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels naming a site.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    /// The site.
    pub site: String,
}

/// Labels naming a site and a reconcile result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The site.
    pub site: String,
    /// `unchanged`, `changed`, `refused`, `failed`, or `deferred` (looked
    /// at while backing off, and left alone).
    pub result: String,
}

/// Labels naming a site and an error kind (`ApplyError::kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The site.
    pub site: String,
    /// `preflight`, `rolled_back`, `storage_full`, …
    pub kind: String,
}

/// Labels naming a site and an upgrade class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// The site.
    pub site: String,
    /// `eligible`, `questionable` or `ineligible`.
    pub class: String,
}

/// Labels naming a product (a catalog).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProductLabel {
    /// The product.
    pub product: String,
}

/// Labels naming a repository the daemon fetches from or pushes to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabel {
    /// Its URL (never a password).
    pub repo: String,
}

/// Labels naming a `notify:` target and a delivery result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetResultLabels {
    /// The target's name.
    pub target: String,
    /// `delivered` or `failed`.
    pub result: String,
}

/// Every metric the daemon keeps.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by site and result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Failed reconciles by site.
    pub failures: Family<SiteLabel, Counter>,
    /// How long reconciles take (all sites: a histogram per site would
    /// multiply the series by the buckets).
    pub duration: Histogram,
    /// Managed files that differ from the last point.
    pub drifted: Family<SiteLabel, Gauge>,
    /// Actions waiting (held or to apply).
    pub pending: Family<SiteLabel, Gauge>,
    /// Held items.
    pub held: Family<SiteLabel, Gauge>,
    /// Newer releases on the site's channel, by class.
    pub upgrades: Family<ClassLabels, Gauge>,
    /// Upgrade notices sent, by site and class.
    pub upgrade_notices: Family<ClassLabels, Counter>,
    /// Unix time of the last successful reconcile.
    pub last_success: Family<SiteLabel, Gauge<f64, AtomicU64>>,
    /// Errors by site and kind.
    pub errors: Family<KindLabels, Counter>,
    /// Seconds a failing site waits before it is tried again (0: not failing).
    pub backoff: Family<SiteLabel, Gauge<f64, AtomicU64>>,
    /// Whether each catalog's commit is trusted (1) or not (0).
    pub catalog_trusted: Family<ProductLabel, Gauge>,
    /// Fleet loads that failed (the last good fleet stays in use).
    pub load_failures: Counter,
    /// Fetches (and report pushes) that failed, by repository.
    pub fetch_failures: Family<RepoLabel, Counter>,
    /// Seconds until a failing repository is fetched again (0: not failing).
    pub fetch_backoff: Family<RepoLabel, Gauge<f64, AtomicU64>>,
    /// Notification messages by target and result (SPEC §9).
    pub notifications: Family<TargetResultLabels, Counter>,
    /// Events in the outbox, waiting for their targets.
    pub outbox_depth: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sitekeeper");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by site and result",
            reconciles.clone(),
        );
        let failures = Family::<SiteLabel, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles by site",
            failures.clone(),
        );
        let duration = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]);
        registry.register_with_unit(
            "reconcile_duration",
            "Time one reconcile of one site takes",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        let drifted = Family::<SiteLabel, Gauge>::default();
        registry.register(
            "drifted_files",
            "Managed files that differ from the last rollback point",
            drifted.clone(),
        );
        let pending = Family::<SiteLabel, Gauge>::default();
        registry.register(
            "pending_items",
            "Actions the plan would take now",
            pending.clone(),
        );
        let held = Family::<SiteLabel, Gauge>::default();
        registry.register("held_items", "Items the plan holds back", held.clone());
        let upgrades = Family::<ClassLabels, Gauge>::default();
        registry.register(
            "available_upgrades",
            "Newer releases on the site's channel, by SPEC 4.2 class",
            upgrades.clone(),
        );
        let upgrade_notices = Family::<ClassLabels, Counter>::default();
        registry.register(
            "upgrade_notices",
            "Notices of newer releases that will not apply automatically, by site and class",
            upgrade_notices.clone(),
        );
        let last_success = Family::<SiteLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the site's last successful reconcile",
            last_success.clone(),
        );
        let errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that did not converge, by site and error kind",
            errors.clone(),
        );
        let backoff = Family::<SiteLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "backoff_seconds",
            "How long a failing site waits before it is tried again (0 when it is not failing)",
            backoff.clone(),
        );
        let catalog_trusted = Family::<ProductLabel, Gauge>::default();
        registry.register(
            "catalog_trusted",
            "1 if the catalog commit in use is trusted, else 0",
            catalog_trusted.clone(),
        );
        let load_failures = Counter::default();
        registry.register(
            "fleet_load_failures",
            "Fleet loads that failed; the last good fleet stays in use",
            load_failures.clone(),
        );
        let fetch_failures = Family::<RepoLabel, Counter>::default();
        registry.register(
            "fetch_failures",
            "Fetches from (and pushes to) a git repository that failed; the last good commit stays in use",
            fetch_failures.clone(),
        );
        let fetch_backoff = Family::<RepoLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "fetch_backoff_seconds",
            "How long the daemon waits after a failed fetch before it tries the repository again (0 when it is not failing)",
            fetch_backoff.clone(),
        );
        let notifications = Family::<TargetResultLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification messages sent, by target and result (delivered, failed)",
            notifications.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "notify_outbox_depth",
            "Events in the outbox waiting for their notify targets",
            outbox_depth.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            drifted,
            pending,
            held,
            upgrades,
            upgrade_notices,
            last_success,
            errors,
            backoff,
            catalog_trusted,
            load_failures,
            fetch_failures,
            fetch_backoff,
            notifications,
            outbox_depth,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Forgets a site that left the fleet, so its series stop.
    pub fn forget(&self, site: &str) {
        let label = SiteLabel { site: site.into() };
        self.drifted.remove(&label);
        self.pending.remove(&label);
        self.held.remove(&label);
        self.last_success.remove(&label);
        self.backoff.remove(&label);
        for class in ["eligible", "questionable", "ineligible"] {
            let labels = ClassLabels {
                site: site.into(),
                class: class.into(),
            };
            self.upgrades.remove(&labels);
            self.upgrade_notices.remove(&labels);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
