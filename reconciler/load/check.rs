//! Checks across files: unique site names, and every reference (product,
//! channel, ring, policy, `extends`, approvals, signers) resolving.
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
    check_policies(fleet, diags);
    check_approvals(fleet, diags);
    check_signers(fleet, diags);
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

        if !fleet.config.catalogs.contains_key(&site.product) {
            let known = names(fleet.config.catalogs.keys());
            let hint = if known.is_empty() {
                "fleet.yaml has no catalogs; add one under catalogs:".to_owned()
            } else {
                format!("the products of fleet.yaml are {known}")
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
                        "{:?} is not a channel of {} (hint: the channels are {})",
                        site.channel,
                        site.product,
                        names(channels.keys())
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
        {
            diags.push(o.diag(
                "policy",
                format!(
                    "there is no policy {policy:?} (hint: {})",
                    known_policies(fleet)
                ),
            ));
        }
    }
}

fn known_policies(fleet: &Fleet) -> String {
    let mut all: BTreeSet<&String> = fleet.policies.keys().collect();
    all.extend(fleet.stock_policies.keys());
    format!(
        "the policies are {}",
        all.into_iter().cloned().collect::<Vec<_>>().join(", ")
    )
}

/// Every `extends` names a policy, and no chain loops.
fn check_policies(fleet: &Fleet, diags: &mut Diagnostics) {
    let all = fleet.policies.values().chain(fleet.stock_policies.values());
    for policy in all {
        if policy.extends.is_none() {
            continue;
        }
        let mut chain = fleet.policy_chain(&policy.policy);
        // The chain of a shadowed stock policy starts at the fleet's own.
        if fleet
            .stock_policies
            .get(&policy.policy)
            .is_some_and(|p| std::ptr::eq(p, policy))
        {
            chain = Ok(Vec::new());
        }
        match chain {
            Ok(_) => {}
            Err(e @ ChainError::Missing { .. }) => {
                diags.push(
                    policy
                        .origin
                        .diag("extends", format!("{e} (hint: {})", known_policies(fleet))),
                );
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
    for (product, spec) in &fleet.config.catalogs {
        if let Some(signers) = &spec.allowed_signers
            && fleet.source.kind(signers.as_str()) != Some(EntryKind::File)
        {
            diags.push(fleet.config.origin.diag(
                &format!("catalogs.{product}.allowed_signers"),
                format!("the allowed signers file {signers} is not a file of the fleet repo"),
            ));
        }
    }
}
