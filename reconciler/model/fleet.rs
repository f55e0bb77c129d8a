//! Types of the fleet repo: `fleet.yaml`, site files and approvals (SPEC §2.1).
//!
//! These are plain data, exactly as written; what a site *effectively* gets
//! after policies is computed in `policy`. No I/O here.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;
use super::values::{
    Command, Digest, Duration, Glob, HttpUrl, Pattern, RelPath, SiteName, TimeOfDay, TimeZoneName,
    Timestamp, VersionReq,
};
use super::words::{DataWhen, DriftMode, EventType, HotfixLevel, Layout, UpgradeLevel, Weekday};

/// `fleet.yaml`: where the catalogs come from and fleet-wide settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sitekeeper fleet.yaml")]
pub struct FleetConfig {
    /// One catalog per product; the key is the product name sites refer to.
    #[serde(default)]
    pub catalogs: BTreeMap<String, CatalogSource>,
    /// Where per-site state is kept (SPEC §5), unless `--state-dir` says otherwise.
    pub state_dir: Option<String>,
    /// Where opted-in status reports are published (SPEC §7).
    pub reports: Option<Reports>,
    /// Require the fleet repo's own commit to be signed by a key in this
    /// file (a path in the fleet repo) when the fleet is fetched from a git
    /// URL (SPEC §7). Once a fleet URL was seen requiring signatures, they
    /// stay required: see README "Signed catalogs and fleets".
    pub allowed_signers: Option<RelPath>,
    /// Where the operators hear about events (SPEC §9).
    #[serde(default)]
    pub notify: Vec<NotifyTarget>,
}

/// One `notify:` target: exactly one of `webhook`, `slack` and `email`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    /// The target's name, for `notify test NAME`, metrics and `/status`.
    pub name: String,
    /// POST each event as CloudEvents 1.0 JSON, signed with `secret_file`.
    pub webhook: Option<HttpUrl>,
    /// A Slack incoming-webhook URL: a readable message.
    pub slack: Option<HttpUrl>,
    /// A plain-text mail by SMTP.
    pub email: Option<EmailTarget>,
    /// The webhook's HMAC key, or the SMTP password (`USER:PASSWORD`, or
    /// a password sent with `from` as the user). Absolute, or relative to
    /// the fleet repo; kept out of the repo in practice.
    pub secret_file: Option<String>,
    /// The events this target hears about (default: all).
    #[serde(default)]
    pub events: Vec<EventType>,
    /// Only sites whose labels hold every pair (default: all sites).
    #[serde(default)]
    pub sites: BTreeMap<String, String>,
}

/// Where `email` targets send.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailTarget {
    /// The SMTP server, `host:port`.
    pub smtp: String,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

impl NotifyTarget {
    /// Whether this target hears about `event` (every event when `events` is empty).
    pub fn wants(&self, event: EventType) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }

    /// Whether this target hears about a site with `labels`.
    pub fn covers(&self, labels: &BTreeMap<String, String>) -> bool {
        self.sites.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl FleetConfig {
    /// Checks of `notify:` that need more than one field; paths are
    /// relative to `fleet.yaml`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (n, target) in self.notify.iter().enumerate() {
            let at = |field: &str| format!("notify[{n}].{field}");
            if target.name.trim().is_empty() {
                out.push(Problem::at(
                    at("name"),
                    "a notify target needs a name (hint: such as ops, for `sitekeeper notify test ops`)",
                ));
            } else if !names.insert(target.name.as_str()) {
                out.push(Problem::at(
                    at("name"),
                    format!(
                        "the notify target name {:?} is used twice (hint: names must be unique)",
                        target.name.as_str()
                    ),
                ));
            }
            let kinds = [
                target.webhook.is_some(),
                target.slack.is_some(),
                target.email.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                0 => out.push(Problem::at(
                    format!("notify[{n}]"),
                    "a notify target needs one of `webhook`, `slack` or `email`",
                )),
                1 => {}
                _ => out.push(Problem::at(
                    format!("notify[{n}]"),
                    "a notify target has more than one of `webhook`, `slack` and `email` (hint: make one target each)",
                )),
            }
            if let Some(email) = &target.email {
                if !valid_host_port(&email.smtp) {
                    out.push(Problem::at(
                        at("email.smtp"),
                        format!(
                            "{:?} is not host:port (hint: such as smtp.example.com:587)",
                            email.smtp
                        ),
                    ));
                }
                if !email.from.contains('@') {
                    out.push(Problem::at(
                        at("email.from"),
                        format!("{:?} is not a mail address", email.from),
                    ));
                }
                if email.to.is_empty() {
                    out.push(Problem::at(
                        at("email.to"),
                        "email has no recipients (hint: list addresses under `to`)",
                    ));
                }
                for (i, to) in email.to.iter().enumerate() {
                    if !to.contains('@') {
                        out.push(Problem::at(
                            at(&format!("email.to[{i}]")),
                            format!("{to:?} is not a mail address"),
                        ));
                    }
                }
            }
            if target.webhook.is_some() && target.secret_file.is_none() {
                out.push(Problem::at(
                    at("webhook"),
                    "a webhook needs a `secret_file` with the key its requests are signed with (hint: the receiver checks X-Sitekeeper-Signature with it)",
                ));
            }
        }
        out
    }
}

/// Whether `text` is `host:port` with a port number.
fn valid_host_port(text: &str) -> bool {
    text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Where a product's catalog comes from.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogSource {
    /// A directory, a local git repository, or a git URL. Relative paths are
    /// relative to the fleet repo.
    pub source: String,
    /// Branch, tag or commit to read (git sources only; default `HEAD`).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// Require the catalog commit to be signed by a key in this file (SPEC §7).
    pub allowed_signers: Option<RelPath>,
}

/// Destination of opted-in status reports.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    /// A git URL to push reports to.
    pub git: String,
    /// The branch that receives them.
    pub branch: Option<String>,
}

/// One site, as its owner describes it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Unique name: lower-case letters, digits and `-`.
    pub site: SiteName,
    /// The install's directory: absolute, or relative to the fleet repo.
    pub root: String,
    /// A key of `fleet.yaml` `catalogs`.
    pub product: String,
    /// A channel declared by the product's catalog.
    pub channel: String,
    /// Optional pin: only releases matching this requirement are candidates.
    pub version: Option<VersionReq>,
    /// Fleet policy, else stock policy of that name (default: `base`).
    pub policy: Option<String>,
    /// Rollout ring; 0 is the canary ring (default: 1).
    pub ring: Option<u8>,
    /// Free-form labels that fixes may select on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How files are replaced (default: `in_place`).
    pub layout: Option<Layout>,
    /// What the site accepts.
    #[serde(default)]
    pub opt_in: OptIn,
    /// Path rules.
    #[serde(default)]
    pub paths: Paths,
    /// When automatic changes may happen.
    pub window: Option<Window>,
    /// Run after every change; a failure rolls the change back.
    pub health: Option<Health>,
    /// The site's data, captured with rollback points (SPEC §6.6).
    pub data: Option<Data>,
    /// The owner's commands around a change.
    #[serde(default)]
    pub hooks: Hooks,
    /// What to do with local changes to managed files (default from policy).
    pub drift: Option<DriftMode>,
}

/// A site's opt-ins. Silence means the policy's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptIn {
    /// Which hot fixes to take.
    pub hotfixes: Option<HotfixLevel>,
    /// How far automatic upgrades may go.
    pub upgrades: Option<UpgradeLevel>,
    /// Vendor diagnostic fixes (`kind: diagnostic`).
    pub diagnostics: Option<bool>,
    /// Fixes that grant the vendor access (`kind: access`).
    pub vendor_access: Option<bool>,
    /// Publish version and health status (call home).
    pub status_reports: Option<bool>,
    /// Include error details in status reports.
    pub error_reports: Option<bool>,
    /// Include the site's URL in status reports.
    pub public_listing: Option<bool>,
}

/// Path rules of a site.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Never read, written or snapshotted.
    #[serde(default)]
    pub preserve: Vec<Glob>,
}

/// A weekly maintenance window.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Days the window opens on (default: every day).
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM`.
    pub start: TimeOfDay,
    /// Closing time, `HH:MM`; before `start` means the window spans midnight.
    pub end: TimeOfDay,
    /// IANA time zone of `start` and `end` (default: UTC).
    pub tz: Option<TimeZoneName>,
}

impl std::fmt::Display for Window {
    /// `sat, sun 02:00-05:00 Europe/Berlin`, or `daily …` without days.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.days.is_empty() {
            f.write_str("daily")?;
        } else {
            let days: Vec<&str> = self.days.iter().map(|d| d.as_str()).collect();
            f.write_str(&days.join(", "))?;
        }
        let tz = self
            .tz
            .as_ref()
            .map_or("UTC".to_owned(), ToString::to_string);
        write!(f, " {}-{} {tz}", self.start, self.end)
    }
}

/// A site's health (SPEC §6.2): a `command`, an `http` URL, and smoke
/// `checks` of pages, at least one of them; every one must pass.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// A command that exits 0 when the site is healthy.
    pub command: Option<Command>,
    /// A URL that answers 2xx when the site is healthy.
    pub http: Option<HttpUrl>,
    /// Smoke checks of pages, each judged before and after a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<PageCheck>,
    /// Failing checks are retried until this long after the change, for
    /// sites that restart or answer 503 for a while (default: 0, no retry).
    pub settle: Option<Duration>,
    /// How long the command or one request may take (default: 30s).
    pub timeout: Option<Duration>,
}

/// One page a change must not break (SPEC §2.1 `health.checks`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageCheck {
    /// The page, an http(s) URL.
    pub url: HttpUrl,
    /// The status it must answer (default: any 2xx).
    #[schemars(range(min = 100, max = 599))]
    pub status: Option<u16>,
    /// Texts the body must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    /// Texts the body must not contain (`Fatal error`, a stack trace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
    /// The least similarity (0..1) of the page's visible text to the same
    /// page fetched before the change.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub similar: Option<f64>,
    /// Regexes removed from both bodies before they are compared (tokens,
    /// dates, nonces that change on every request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<Pattern>,
    /// The least similarity (0..1) of a screenshot of the page, rendered by
    /// headless Chromium, to one taken before the change.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub visual: Option<f64>,
}

/// A site's data (SPEC §6.6): what a data snapshot captures before a
/// change, and how it is put back when the change fails.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// SQLite databases under the root, copied through SQLite's online
    /// backup API; each must also be a preserved path.
    #[serde(default)]
    pub sqlite: Vec<RelPath>,
    /// A command that writes the site's data to `$SITEKEEPER_DATA_FILE`
    /// (`pg_dump`, `mysqldump`, …).
    pub snapshot: Option<Command>,
    /// A command that puts back the data `snapshot` wrote, read from
    /// `$SITEKEEPER_DATA_FILE`.
    pub restore: Option<Command>,
    /// `migrations` (default): before changes that run migrations or
    /// hooks; `always`: before every change.
    pub when: Option<DataWhen>,
}

impl Data {
    /// `data:` checks (SPEC §6.6): something to capture; a `snapshot`
    /// with the `restore` that puts it back; every database a preserved
    /// path, so that no change of the site's files ever writes it.
    fn problems(&self, preserve: &[Glob]) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.sqlite.is_empty() && self.snapshot.is_none() {
            out.push(Problem::at(
                "data",
                "data names nothing to capture (hint: list SQLite files under `sqlite`, or give a `snapshot` and a `restore` command)",
            ));
        }
        match (&self.snapshot, &self.restore) {
            (Some(_), None) => out.push(Problem::at(
                "data.snapshot",
                "data has a `snapshot` command but no `restore` command, so a snapshot could never be put back (hint: add `restore`, reading $SITEKEEPER_DATA_FILE)",
            )),
            (None, Some(_)) => out.push(Problem::at(
                "data.restore",
                "data has a `restore` command but no `snapshot` command to write what it reads (hint: add `snapshot`, writing $SITEKEEPER_DATA_FILE)",
            )),
            _ => {}
        }
        for (n, path) in self.sqlite.iter().enumerate() {
            if !preserve.iter().any(|g| g.is_match(path.as_str())) {
                out.push(Problem::at(
                    format!("data.sqlite[{n}]"),
                    format!(
                        "{path:?} is not a preserved path, so a release could overwrite the live database (hint: add it, or a glob such as \"db/**\", to paths.preserve)",
                        path = path.as_str()
                    ),
                ));
            }
        }
        out
    }
}

/// The site owner's commands around a change.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run before files change; a failure cancels the change.
    #[serde(default)]
    pub pre_apply: Vec<Command>,
    /// Run after files change; a failure rolls the change back.
    #[serde(default)]
    pub post_apply: Vec<Command>,
    /// How long each hook may take (default: 60s).
    pub timeout: Option<Duration>,
}

/// A site file holds one site, or a list of sites.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(title = "sitekeeper site file")]
pub enum SiteFile {
    /// One site.
    One(Box<Site>),
    /// Several sites in one file.
    Many(Vec<Site>),
}

/// `approvals/<site>.yaml`: plan digests reviewers approved.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sitekeeper approvals file")]
pub struct Approvals {
    /// Approved plans, oldest first.
    #[serde(default)]
    pub approved: Vec<Approval>,
}

/// One approved plan digest.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The `plan_digest` from `plan --format json` or Markdown.
    pub plan_digest: Digest,
    /// Who approved it.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

impl Health {
    /// `health:` checks (SPEC §2.1): something to judge; `command` or
    /// `http`, not both; ratios within 0..1 and statuses that exist.
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        match (&self.command, &self.http) {
            (None, None) if self.checks.is_empty() => out.push(Problem::at(
                "health",
                "health needs a `command`, an `http` URL or `checks` of pages",
            )),
            (Some(_), Some(_)) => out.push(Problem::at(
                "health.http",
                "health has both `command` and `http` (hint: keep one)",
            )),
            _ => {}
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            out.push(Problem::at(
                "health.timeout",
                "a zero timeout can never pass",
            ));
        }
        for (n, check) in self.checks.iter().enumerate() {
            if let Some(status) = check.status
                && !(100..=599).contains(&status)
            {
                out.push(Problem::at(
                    format!("health.checks[{n}].status"),
                    format!("{status} is not an HTTP status (hint: such as 200, or 404 for a page that must stay gone)"),
                ));
            }
            for (field, ratio) in [("similar", check.similar), ("visual", check.visual)] {
                // `contains` is false for NaN too, which YAML can spell `.nan`.
                if let Some(r) = ratio
                    && !(0.0..=1.0).contains(&r)
                {
                    out.push(Problem::at(
                        format!("health.checks[{n}].{field}"),
                        format!(
                            "{field} is {r}, outside 0..1 (hint: a ratio such as 0.8 for 80% alike)"
                        ),
                    ));
                }
            }
        }
        out
    }
}

impl Site {
    /// Checks that need more than one field; paths are relative to the site.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.root.is_empty() {
            out.push(Problem::at(
                "root",
                "root is empty (hint: the site's install directory)",
            ));
        }
        if let Some(health) = &self.health {
            out.extend(health.problems());
        }
        if let Some(window) = &self.window
            && window.start == window.end
        {
            out.push(Problem::at(
                "window.end",
                "the window closes when it opens, so it is never open (hint: make start and end differ)",
            ));
        }
        if let Some(data) = &self.data {
            out.extend(data.problems(&self.paths.preserve));
        }
        for (key, value) in &self.labels {
            if key.is_empty() || value.is_empty() {
                out.push(Problem::at(
                    format!("labels.{key}"),
                    "labels need a non-empty name and value",
                ));
            }
        }
        out
    }
}
