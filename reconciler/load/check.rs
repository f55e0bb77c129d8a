//! Checks across files: unique site names, sites that would share files
//! (their roots, in `roots`), and every reference (product, channel, ring,
//! policy, `extends`, approvals, signers) resolving.
//!
//! Problems inside one file are found while parsing it; this module only
//! looks at how loaded files fit together, and reports all it finds.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::names;
use super::fleet::ChainError;
use super::source::EntryKind;
use super::{Diagnostics, Fleet};

pub(super) fn check(fleet: &Fleet, diags: &mut Diagnostics) {
    check_sites(fleet, diags);
    super::roots::check_roots(fleet, diags);
    check_policies(fleet, diags);
    check_approvals(fleet, diags);
    check_signers(fleet, diags);
    check_notify(fleet, diags);
}

/// `notify:` targets (SPEC §9): a secret file that can be read, and a
/// `sites` selector that matches a site (else the target would never hear
/// anything, which is surely not what was meant).
fn check_notify(fleet: &Fleet, diags: &mut Diagnostics) {
    let config = &fleet.config;
    for (n, target) in config.notify.iter().enumerate() {
        if let Some(secret) = &target.secret_file {
            let at = format!("notify[{n}].secret_file");
            match fleet.notify_secret_path(secret) {
                None => diags.push(config.origin.diag(
                    &at,
                    format!("the secret file {secret:?} is relative, but the fleet is read from git, where secrets do not belong (hint: give an absolute path on this host)"),
                )),
                Some(path) => {
                    if let Err(e) = std::fs::read(&path) {
                        diags.push(config.origin.diag(
                            &at,
                            format!(
                                "cannot read the secret file {}: {} (hint: create it, readable by the user sitekeeper runs as)",
                                path.display(),
                                match e.kind() {
                                    std::io::ErrorKind::NotFound => "it does not exist".to_owned(),
                                    std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                                    _ => e.to_string(),
                                }
                            ),
                        ));
                    }
                }
            }
        }
        if !target.sites.is_empty() && !fleet.sites.iter().any(|s| target.covers(&s.labels)) {
            let pairs: Vec<String> = target
                .sites
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            diags.push(config.origin.diag(
                &format!("notify[{n}].sites"),
                format!(
                    "the selector {} matches no site of the fleet, so {:?} would never hear anything (hint: check the labels of sites/*.yaml, or remove `sites` to hear about every site)",
                    pairs.join(","),
                    target.name
                ),
            ));
        }
    }
}

fn check_sites(fleet: &Fleet, diags: &mut Diagnostics) {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for site in &fleet.sites {
        let o = &site.origin;
        let name = site.site.as_str();
        if let Some(first) = seen.get(name) {
            diags.push(o.diag("site", format!("the site name {name:?} is already used at {first} (hint: site names must be unique across the fleet)")));
        } else {
            seen.insert(name, o.locate("site").to_string());
        }

        if fleet.unreadable.contains("fleet.yaml") {
            // Its catalogs are unknown; fleet.yaml's own error says why.
        } else if !fleet.config.catalogs.contains_key(&site.product) {
            let known = names(fleet.config.catalogs.keys());
            let hint = if known.is_empty() {
                "fleet.yaml has no catalogs; add one under catalogs:".to_owned()
            } else {
                suggest(
                    &site.product,
                    fleet.config.catalogs.keys(),
                    &format!("the products of fleet.yaml are {known}"),
                )
            };
            diags.push(o.diag(
                "product",
                format!(
                    "{:?} is not a product of fleet.yaml (hint: {hint})",
                    site.product
                ),
            ));
        } else if let Some(catalog) = fleet.catalogs.get(&site.product) {
            let channels = &catalog.catalog.channels;
            if !channels.contains_key(&site.channel) {
                diags.push(o.diag(
                    "channel",
                    format!(
                        "{:?} is not a channel of {} (hint: {})",
                        site.channel,
                        site.product,
                        suggest(
                            &site.channel,
                            channels.keys(),
                            &format!("the channels are {}", names(channels.keys()))
                        )
                    ),
                ));
            }
            let rings = &catalog.catalog.rings;
            if let Some(ring) = site.ring
                && !rings.is_empty()
                && !rings.contains_key(&ring)
            {
                let known: Vec<String> = rings.keys().map(u8::to_string).collect();
                diags.push(o.diag(
                    "ring",
                    format!(
                        "ring {ring} is not declared by the catalog (hint: the rings are {})",
                        known.join(", ")
                    ),
                ));
            }
        }

        if let Some(policy) = &site.policy
            && fleet.policy(policy).is_none()
            && !fleet.unreadable.contains(&format!("policies/{policy}"))
        {
            diags.push(o.diag(
                "policy",
                format!(
                    "there is no policy {policy:?} (hint: {})",
                    suggest(
                        policy,
                        all_policies(fleet, None).iter(),
                        &known_policies(fleet, None)
                    )
                ),
            ));
        }
    }
}

/// Every policy name, fleet and stock, except `but`.
fn all_policies(fleet: &Fleet, but: Option<&str>) -> Vec<String> {
    let all: BTreeSet<&String> = fleet
        .policies
        .keys()
        .chain(fleet.stock_policies.keys())
        .collect();
    all.into_iter()
        .filter(|n| Some(n.as_str()) != but)
        .cloned()
        .collect()
}

/// "did you mean `x`? " before `fallback`, when `word` looks like a typo of one of `options`.
fn suggest<'a>(word: &str, options: impl Iterator<Item = &'a String>, fallback: &str) -> String {
    match super::yaml::closest(word, options.map(String::as_str)) {
        Some(near) => format!("did you mean `{near}`? {}", capitalized(fallback)),
        None => fallback.to_owned(),
    }
}

/// `the x` → `The x`.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn known_policies(fleet: &Fleet, but: Option<&str>) -> String {
    let all = all_policies(fleet, but);
    format!("the policies are {}", all.join(", "))
}

/// Every `extends` names a policy, and no chain loops.
fn check_policies(fleet: &Fleet, diags: &mut Diagnostics) {
    // By file name: a policy whose `policy:` differs is reported elsewhere.
    let all = fleet.policies.iter().chain(fleet.stock_policies.iter());
    for (name, policy) in all {
        if policy.extends.is_none() {
            continue;
        }
        // A stock policy that the fleet shadows is checked through the fleet's own.
        let is_stock = fleet
            .stock_policies
            .get(name)
            .is_some_and(|p| std::ptr::eq(p, policy));
        if is_stock && fleet.policies.contains_key(name) {
            continue;
        }
        match fleet.policy_chain(name) {
            Ok(_) => {}
            Err(ChainError::Missing { name, .. })
                if fleet.unreadable.contains(&format!("policies/{name}")) => {}
            Err(e @ ChainError::Missing { .. }) => {
                diags.push(policy.origin.diag(
                    "extends",
                    format!(
                        "{e} (hint: {})",
                        suggest(
                            policy.extends.as_deref().unwrap_or(""),
                            all_policies(fleet, Some(&policy.policy)).iter(),
                            &known_policies(fleet, Some(&policy.policy))
                        )
                    ),
                ));
            }
            Err(e) => diags.push(policy.origin.diag("extends", e.to_string())),
        }
    }
}

fn check_approvals(fleet: &Fleet, diags: &mut Diagnostics) {
    for (site, approvals) in &fleet.approvals {
        if fleet.site(site).is_none() {
            diags.push(approvals.origin.diag(
                "",
                format!("approvals/{site}.yaml is for a site {site:?} that the fleet does not have (hint: name the file after the site)"),
            ));
        }
    }
}

fn check_signers(fleet: &Fleet, diags: &mut Diagnostics) {
    let config = &fleet.config;
    if let Some(signers) = &config.allowed_signers
        && fleet.source.kind(signers.as_str()) != Some(EntryKind::File)
    {
        diags.push(config.origin.diag(
            "allowed_signers",
            format!("the allowed signers file {signers} is not a file of the fleet repo"),
        ));
    }
    for (product, spec) in &config.catalogs {
        let Some(signers) = &spec.allowed_signers else {
            continue;
        };
        let at = format!("catalogs.{product}.allowed_signers");
        if fleet.source.kind(signers.as_str()) != Some(EntryKind::File) {
            diags.push(config.origin.diag(
                &at,
                format!("the allowed signers file {signers} is not a file of the fleet repo"),
            ));
        }
        // Decided from fleet.yaml alone (not from whether the catalog
        // opened), so it is reported even when the catalog is missing.
        if spec.git_ref.is_none() && !super::source::is_url(&spec.source) {
            diags.push(
                config
                    .origin
                    .diag(
                        &at,
                        format!(
                            "allowed_signers needs a git catalog, but {} is read as a plain directory, which has no commits to sign",
                            spec.source
                        ),
                    )
                    .with_hint(
                        "set `ref:` to read a local git repository at a branch, tag or commit, or remove allowed_signers",
                    ),
            );
        }
    }
}
