//! Checks across files: unique site names, and every reference (product,
//! channel, ring, policy, `extends`, approvals, signers) resolving.
//!
//! Problems inside one file are found while parsing it; this module only
//! looks at how loaded files fit together, and reports all it finds.

use std::collections::{BTreeMap, BTreeSet};

use super::catalog::names;
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
            diags.push(o.diag("product", format!("{:?} is not a product of fleet.yaml (hint: {hint})", site.product)));
        } else if let Some(catalog) = fleet.catalogs.get(&site.product) {
            let channels = &catalog.catalog.channels;
            if !channels.contains_key(&site.channel) {
                diags.push(o.diag(
                    "channel",
                    format!("{:?} is not a channel of {} (hint: the channels are {})", site.channel, site.product, names(channels.keys())),
                ));
            }
            let rings = &catalog.catalog.rings;
            if let Some(ring) = site.ring
                && !rings.is_empty()
                && !rings.contains_key(&ring)
            {
                let known: Vec<String> = rings.keys().map(u8::to_string).collect();
                diags.push(o.diag("ring", format!("ring {ring} is not declared by the catalog (hint: the rings are {})", known.join(", "))));
            }
        }

        if let Some(policy) = &site.policy
            && fleet.policy(policy).is_none()
        {
            diags.push(o.diag("policy", format!("there is no policy {policy:?} (hint: {})", known_policies(fleet))));
        }
    }
}

fn known_policies(fleet: &Fleet) -> String {
    let mut all: BTreeSet<&String> = fleet.policies.keys().collect();
    all.extend(fleet.stock_policies.keys());
    format!("the policies are {}", all.into_iter().cloned().collect::<Vec<_>>().join(", "))
}

/// Every `extends` names a policy, and no chain loops. A fleet policy may
/// extend a stock policy of its own name: that is how it refines it.
fn check_policies(fleet: &Fleet, diags: &mut Diagnostics) {
    let all = fleet.policies.iter().map(|(n, p)| (n, p, false)).chain(fleet.stock_policies.iter().map(|(n, p)| (n, p, true)));
    for (name, policy, stock) in all {
        let Some(parent) = &policy.extends else { continue };
        // A fleet policy extending its own name means the stock one.
        let resolves = if parent == name && !stock {
            fleet.stock_policies.contains_key(parent)
        } else {
            fleet.policy(parent).is_some()
        };
        if !resolves {
            diags.push(policy.origin.diag("extends", format!("there is no policy {parent:?} to extend (hint: {})", known_policies(fleet))));
            continue;
        }
        // Walk the chain; a name seen twice is a cycle.
        let mut chain = vec![name.clone()];
        let mut current = (name.clone(), stock);
        loop {
            let Some((p, is_stock)) = lookup(fleet, &current.0, current.1) else { break };
            let Some(next) = &p.extends else { break };
            let next_stock = is_stock || next == &current.0;
            if chain.contains(next) && !(next == &current.0 && !is_stock) {
                chain.push(next.clone());
                diags.push(policy.origin.diag(
                    "extends",
                    format!("the policies extend each other in a loop: {} (hint: one of them must stop extending)", chain.join(" → ")),
                ));
                break;
            }
            chain.push(next.clone());
            current = (next.clone(), next_stock);
            if chain.len() > 64 {
                break;
            }
        }
    }
}

/// A policy by name, the stock one where `stock` (or where the fleet has none).
fn lookup<'a>(fleet: &'a Fleet, name: &str, stock: bool) -> Option<(&'a super::Loaded<crate::model::Policy>, bool)> {
    if stock {
        fleet.stock_policies.get(name).map(|p| (p, true))
    } else {
        fleet.policy(name)
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
