//! Types of a policy file (SPEC §2.1): ceilings, defaults and upgrade rules.
//!
//! Every field is optional, because a policy may inherit it through
//! `extends`; resolution and provenance live in the `policy` module.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fleet::OptIn;
use super::values::Duration;
use super::words::{ChangeLevel, DriftMode, HotfixLevel, Layout, UpgradeLevel};

/// A policy: ceilings the sites cannot exceed, and defaults for their silence.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sitekeeper policy")]
pub struct Policy {
    /// The policy's name; equals the file name without `.yaml`.
    pub policy: String,
    /// A policy this one refines: its settings apply where this one is silent.
    pub extends: Option<String>,
    /// Limits no site can opt in above.
    #[serde(default)]
    pub ceilings: Ceilings,
    /// Used where the site is silent.
    #[serde(default)]
    pub defaults: Defaults,
    /// Whether pre-releases may be offered.
    pub prereleases: Option<bool>,
    /// Soak time after a release's date before an automatic upgrade.
    pub min_release_age: Option<Duration>,
    /// Security releases skip the window and soak time.
    pub urgent_bypass: Option<bool>,
    /// Levels of change that need an approved plan digest.
    pub require_approval: Option<Vec<ChangeLevel>>,
    /// How many rollback points to keep per site.
    pub keep_rollback_points: Option<u32>,
    /// Whether commands shipped by the catalog may run.
    pub allow_release_hooks: Option<bool>,
    /// Quiet time between notices of the same available upgrade.
    pub notify_interval: Option<Duration>,
}

impl Policy {
    /// A default above the policy's own ceiling is a contradiction: the
    /// default could never take effect as written.
    pub fn problems(&self) -> Vec<super::Problem> {
        fn above<T: PartialOrd + ToString>(
            field: &str,
            default: Option<T>,
            ceiling: Option<T>,
            out: &mut Vec<super::Problem>,
        ) {
            if let (Some(d), Some(c)) = (default, ceiling)
                && d > c
            {
                out.push(super::Problem::at(
                    format!("defaults.{field}"),
                    format!(
                        "the default {} is above this policy's ceiling {} (hint: lower the default or raise the ceiling)",
                        d.to_string(),
                        c.to_string()
                    ),
                ));
            }
        }
        let mut out = Vec::new();
        let (c, d) = (&self.ceilings, &self.defaults);
        above("upgrades", d.upgrades, c.upgrades, &mut out);
        above("hotfixes", d.hotfixes, c.hotfixes, &mut out);
        above("diagnostics", d.diagnostics, c.diagnostics, &mut out);
        above("vendor_access", d.vendor_access, c.vendor_access, &mut out);
        above(
            "status_reports",
            d.status_reports,
            c.status_reports,
            &mut out,
        );
        above("error_reports", d.error_reports, c.error_reports, &mut out);
        above(
            "public_listing",
            d.public_listing,
            c.public_listing,
            &mut out,
        );
        out
    }
}

/// Upper bounds on opt-ins: the same fields as a site's `opt_in`. For the
/// yes/no opt-ins, `false` forbids whatever the site says.
pub type Ceilings = OptIn;

/// Values for settings a site leaves out.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Default upgrade level.
    pub upgrades: Option<UpgradeLevel>,
    /// Default hot-fix selection.
    pub hotfixes: Option<HotfixLevel>,
    /// Default for diagnostic fixes.
    pub diagnostics: Option<bool>,
    /// Default for vendor-access fixes.
    pub vendor_access: Option<bool>,
    /// Default for status reports.
    pub status_reports: Option<bool>,
    /// Default for error details in reports.
    pub error_reports: Option<bool>,
    /// Default for publishing the site URL.
    pub public_listing: Option<bool>,
    /// Default drift handling.
    pub drift: Option<DriftMode>,
    /// Default layout.
    pub layout: Option<Layout>,
}
