//! The privacy rules of status reports (SPEC §7): what one site's report
//! may contain, given its opt-ins. Pure: no I/O, no git; the publisher
//! ([`super::report`]) sends only what [`body`] returns, and nothing for a
//! site that did not opt in.
//!
//! # What a report holds
//!
//! [`body`] is a pure function of the site file, its effective settings
//! ([`crate::policy::resolve`], so a policy ceiling beats the site's own
//! opt-in) and its [`ReportInput`]:
//!
//! * nothing at all (`None`) unless `opt_in.status_reports` is effectively on;
//! * then always `site`, `version`, `fixes` and `health` (`null` where the
//!   state dir knows nothing yet, e.g. a site not adopted);
//! * `error` only with `opt_in.error_reports` and only when there is an error
//!   (the last ledger record failed or was rolled back), cut at
//!   [`MAX_ERROR_CHARS`] characters;
//! * `url` only with `opt_in.public_listing` and only when a public URL is
//!   known ([`site_url`]).
//!
//! `error_reports` and `public_listing` only add to a status report; on
//! their own they send nothing.
//!
//! # Where a site's URL comes from
//!
//! A site file has no URL field. [`site_url`] takes the label `url` when the
//! site has one (the owner wrote it down for people to see, so it is sent
//! minus any `user:password@`, in the normal form `url::Url` writes: host in
//! lower case, default port dropped, an empty path as `/`). Otherwise it
//! takes the scheme, host and port of the `health.http` URL, but only when
//! that host looks public: health checks usually probe `127.0.0.1`, a
//! private address or a cluster name without a dot, which would name
//! nothing to the outside and tell it about the inside. The health URL's
//! path (`/healthz`), query and credentials are never sent. No public URL
//! known: no `url` key.

use std::collections::BTreeMap;

use serde::Serialize;
use url::{Host, Url};

use super::report::ReportInput;
use crate::load::Fleet;
use crate::model::Site;
use crate::policy::{self, Effective};

/// Error text longer than this is cut (with `…`): a report is a status,
/// not a log, and a long error is more likely to carry local details.
pub const MAX_ERROR_CHARS: usize = 2000;

/// The reports of every site of `fleet` that has an entry in `statuses`,
/// for those that effectively opted in. A site whose policy chain does not
/// resolve (which `validate` reports) has not provably opted in, so it
/// sends nothing.
pub fn bodies_for_fleet(
    fleet: &Fleet,
    statuses: &BTreeMap<String, ReportInput>,
) -> Vec<(String, ReportBody)> {
    fleet
        .sites
        .iter()
        .filter_map(|site| {
            let status = statuses.get(site.site.as_str())?;
            let effective = policy::resolve(fleet, site).ok()?;
            body(site, &effective, status).map(|b| (site.site.to_string(), b))
        })
        .collect()
}

/// One site's report, as `status/<site>.json` holds it.
///
/// The fields are declared in alphabetical order because serde writes
/// them in declaration order: the file's keys come out sorted, so the same
/// status gives the same bytes (and blob) on every host and run. `error`
/// and `url` are left out when absent; `version` and `health` are `null`
/// when the state dir knows nothing yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportBody {
    /// The last change's error, cut; only with `error_reports`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Applied fixes, in order.
    pub fixes: Vec<String>,
    /// `passed`, `failed` or `skipped`.
    pub health: Option<String>,
    /// The site's name.
    pub site: String,
    /// The site's public URL; only with `public_listing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The installed release.
    pub version: Option<String>,
}

/// The report of one site, or `None` when it did not (effectively) opt in
/// to status reports. Pure; see the module doc for what goes in.
pub fn body(site: &Site, effective: &Effective, status: &ReportInput) -> Option<ReportBody> {
    if !effective.status_reports.value {
        return None;
    }
    Some(ReportBody {
        error: status
            .error
            .as_deref()
            .filter(|_| effective.error_reports.value)
            .map(cut),
        fixes: status.fixes.clone(),
        health: status.health.clone(),
        site: site.site.to_string(),
        url: effective
            .public_listing
            .value
            .then(|| site_url(site))
            .flatten(),
        version: status.version.clone(),
    })
}

/// `error` cut at [`MAX_ERROR_CHARS`] characters.
fn cut(error: &str) -> String {
    match error.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &error[..at]),
        None => error.to_owned(),
    }
}

/// The URL a public listing shows for `site`: its `url` label, else the
/// origin of a public `health.http` URL (module doc). `None` when neither
/// gives one.
pub fn site_url(site: &Site) -> Option<String> {
    if let Some(label) = site.labels.get("url") {
        // The owner's explicit choice: a label that is no http(s) URL sends
        // nothing rather than falling back to a URL they did not choose.
        let mut url = http_url(label)?;
        // Cannot fail on an http(s) URL, which always has a host.
        url.set_username("").ok()?;
        url.set_password(None).ok()?;
        return Some(url.into());
    }
    let health = site.health.as_ref()?.http.as_ref()?;
    let url = http_url(health.as_str())?;
    if is_local(url.host()?) {
        return None;
    }
    // The origin is scheme, host and port: no credentials, path or query.
    Some(format!("{}/", url.origin().ascii_serialization()))
}

/// `text` as an http(s) URL, if it is spelled out as one: `http://` or
/// `https://` (any case), a host, and no whitespace. `url::Url` alone is
/// more forgiving than that (it takes `http:host`, `http:///host` and
/// `http:\\host`, and drops tabs and newlines), and a URL that goes out to
/// the world should be one a person would recognise as written.
fn http_url(text: &str) -> Option<Url> {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    let after = ["https://", "http://"]
        .into_iter()
        .find(|scheme| lower.starts_with(scheme))
        .map(|scheme| &text[scheme.len()..])?;
    if text.contains(char::is_whitespace) || after.starts_with(['/', '\\', '?', '#']) {
        return None;
    }
    Url::parse(text).ok()
}

/// Whether `host` can only mean something inside the machine or its
/// network: loopback, private and link-local addresses, `localhost`, and
/// names without a dot (container and cluster names).
fn is_local(host: Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => {
            ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified()
        }
        Host::Ipv6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || first & 0xfe00 == 0xfc00 // unique local fc00::/7
                || first & 0xffc0 == 0xfe80 // link local fe80::/10
        }
        // Already lower case: url::Url lowers the host of http(s) URLs.
        Host::Domain(name) => {
            name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".local")
                || name.ends_with(".internal")
                || !name.trim_end_matches('.').contains('.')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(yaml_labels: &[(&str, &str)], health: Option<&str>) -> Site {
        let mut site: Site = serde_json::from_value(serde_json::json!({
            "site": "shop",
            "root": "/srv/shop",
            "product": "acme",
            "channel": "stable",
        }))
        .unwrap();
        for (k, v) in yaml_labels {
            site.labels.insert((*k).into(), (*v).into());
        }
        if let Some(url) = health {
            site.health = Some(crate::model::Health {
                http: Some(url.parse().unwrap()),
                ..Default::default()
            });
        }
        site
    }

    #[test]
    fn the_url_label_wins_and_loses_its_credentials() {
        let s = site(
            &[("url", "https://bob:pw@shop.example.com/en/")],
            Some("https://shop.example.com/healthz"),
        );
        assert_eq!(
            site_url(&s).as_deref(),
            Some("https://shop.example.com/en/")
        );
        let bad = site(&[("url", "shop.example.com")], Some("https://x.example/h"));
        assert_eq!(site_url(&bad), None, "a bad label does not fall back");
    }

    #[test]
    fn a_public_health_url_gives_its_origin_only() {
        let s = site(&[], Some("https://u:p@shop.example.com:8443/healthz?k=v"));
        assert_eq!(
            site_url(&s).as_deref(),
            Some("https://shop.example.com:8443/")
        );
    }

    #[test]
    fn inside_health_urls_name_nothing() {
        for url in [
            "http://127.0.0.1:8080/healthz",
            "http://localhost/healthz",
            "http://10.1.2.3/h",
            "http://192.168.0.9/h",
            "http://[::1]:8080/h",
            "http://[fd00::1]/h",
            "http://web:8080/healthz",
            "http://shop.svc.internal/h",
        ] {
            assert_eq!(site_url(&site(&[], Some(url))), None, "{url}");
        }
        assert_eq!(site_url(&site(&[], None)), None);
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        let c = cut(&long);
        assert_eq!(c.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(c.ends_with('…'));
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn a_report_has_its_keys_sorted_and_leaves_out_what_is_absent() {
        let full = ReportBody {
            error: Some("boom".into()),
            fixes: vec!["f1".into()],
            health: Some("failed".into()),
            site: "shop".into(),
            url: Some("https://shop.example.com/".into()),
            version: Some("1.0.0".into()),
        };
        assert_eq!(
            serde_json::to_string(&full).unwrap(),
            r#"{"error":"boom","fixes":["f1"],"health":"failed","site":"shop","url":"https://shop.example.com/","version":"1.0.0"}"#
        );
        let bare = ReportBody {
            error: None,
            url: None,
            health: None,
            version: None,
            ..full
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"fixes":["f1"],"health":null,"site":"shop","version":null}"#
        );
    }

    #[test]
    fn loopback_spelled_another_way_is_still_inside() {
        for url in [
            "http://127.1/healthz",
            "http://0x7f000001/healthz",
            "http://%31%32%37.0.0.1/healthz",
        ] {
            assert_eq!(site_url(&site(&[], Some(url))), None, "{url}");
        }
    }

    #[test]
    fn only_a_well_formed_url_spelled_out_counts() {
        for label in [
            "http:shop.example.com",
            "http:///shop.example.com/",
            "https://shop.example.com/a b",
            "https://shop.example.com:99999/",
        ] {
            assert_eq!(site_url(&site(&[("url", label)], None)), None, "{label}");
        }
        let s = site(&[("url", "HTTPS://Shop.Example.com:443")], None);
        assert_eq!(
            site_url(&s).as_deref(),
            Some("https://shop.example.com/"),
            "sent in its normal form"
        );
    }
}
