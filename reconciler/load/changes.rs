//! Which sites a change of the fleet (and of its catalogs) can affect, for
//! `plan --changed-since REV`: compares the fleet at REV with the fleet as
//! loaded now. Never plans, reads a site or fetches; [`changed_sites`] is pure.
//!
//! A site (by name, as it is at the head) is affected when:
//!
//! * its parsed site value differs, or it is new. Values are compared, not
//!   files: editing one site of a multi-site file selects that site only, a
//!   site moved to another file is unchanged, and comments or key order do
//!   not count;
//! * its effective policy chain (its policy and every policy it `extends`)
//!   differs: a fleet-local policy in it was added, removed or edited, or
//!   the chain now resolves differently. Stock policies are embedded in the
//!   binary, so they are the same on both sides;
//! * the `fleet.yaml` catalog entry of its product differs (source, ref,
//!   allowed_signers), or the content of that allowed signers file does;
//! * its approvals file differs (an approval changes what `apply` does);
//! * fleet-wide settings that every plan depends on differ: `state_dir`
//!   (where the ledger and points are) and the fleet's `allowed_signers`
//!   (entry or file content);
//! * its product's catalog moved (given by the caller, see [`moved_catalogs`]).
//!
//! A site present at REV and absent at the head is *removed*.

use std::collections::{BTreeMap, BTreeSet};

use super::{Diagnostic, Fleet, Source};
use crate::load::ChainError;

/// Why a site is affected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The site is new, or its site values changed.
    Site,
    /// These fleet-local policies of its chain changed (or the chain did).
    Policy(Vec<String>),
    /// Its product's `fleet.yaml` catalog entry or signers file changed.
    CatalogEntry,
    /// Its product's catalog moved.
    CatalogMoved,
    /// Its approvals file changed.
    Approvals,
    /// A fleet-wide setting (`state_dir`, `allowed_signers`) changed.
    FleetConfig,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Site => f.write_str("site file"),
            Reason::Policy(names) if names.is_empty() => f.write_str("policy chain"),
            Reason::Policy(names) => write!(f, "policy {}", names.join(", ")),
            Reason::CatalogEntry => f.write_str("catalog entry in fleet.yaml"),
            Reason::CatalogMoved => f.write_str("catalog moved"),
            Reason::Approvals => f.write_str("approvals"),
            Reason::FleetConfig => f.write_str("fleet.yaml settings"),
        }
    }
}

/// The sites a change affects, and those it removes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Affected sites of the head, by name, with every reason found.
    pub affected: BTreeMap<String, Vec<Reason>>,
    /// Sites at the base that the head no longer has.
    pub removed: BTreeSet<String>,
}

/// Compares the fleet at the base revision with the fleet at the head.
/// `moved` names the products whose catalog moved between the two (see
/// [`moved_catalogs`]); every site of such a product is affected.
pub fn changed_sites(base: &Fleet, head: &Fleet, moved: &BTreeSet<String>) -> Changes {
    let base_sites: BTreeMap<&str, serde_json::Value> = base
        .sites
        .iter()
        .rev() // so that the first of duplicate names wins, as at the head
        .map(|s| (s.site.as_str(), value(&s.value)))
        .collect();
    let fleet_wide = base.config.state_dir != head.config.state_dir
        || value(&base.config.allowed_signers) != value(&head.config.allowed_signers)
        || signers_text(
            base,
            head.config.allowed_signers.as_ref().map(|r| r.as_str()),
        ) != signers_text(
            head,
            head.config.allowed_signers.as_ref().map(|r| r.as_str()),
        );

    let mut changes = Changes::default();
    for site in &head.sites {
        let name = site.site.as_str();
        let mut reasons = Vec::new();
        if base_sites.get(name) != Some(&value(&site.value)) {
            reasons.push(Reason::Site);
        }
        let policy = site.policy.as_deref().unwrap_or("base");
        let (was, now) = (chain(base, policy), chain(head, policy));
        if was != now {
            reasons.push(Reason::Policy(changed_policies(base, head, &was, &now)));
        }
        let product = site.product.as_str();
        let (was, now) = (
            base.config.catalogs.get(product),
            head.config.catalogs.get(product),
        );
        let signers = now.and_then(|c| c.allowed_signers.as_ref().map(|r| r.as_str()));
        if value(&was) != value(&now) || signers_text(base, signers) != signers_text(head, signers)
        {
            reasons.push(Reason::CatalogEntry);
        }
        if moved.contains(product) {
            reasons.push(Reason::CatalogMoved);
        }
        if value(&base.approvals.get(name).map(|a| &a.value))
            != value(&head.approvals.get(name).map(|a| &a.value))
        {
            reasons.push(Reason::Approvals);
        }
        if fleet_wide {
            reasons.push(Reason::FleetConfig);
        }
        if !reasons.is_empty() {
            changes.affected.insert(name.to_owned(), reasons);
        }
    }
    changes.removed = base_sites
        .keys()
        .filter(|name| head.site(name).is_none())
        .map(|name| (*name).to_owned())
        .collect();
    changes
}

/// A value as JSON, for equality: the model types are compared by what
/// they say, not where they were written (their origins differ by line).
fn value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// One link of a resolved chain: name, whether stock, the policy's values.
type Link = (String, bool, serde_json::Value);

fn chain(fleet: &Fleet, start: &str) -> Result<Vec<Link>, ChainError> {
    fleet.policy_chain(start).map(|links| {
        links
            .into_iter()
            .map(|(p, stock)| (p.policy.clone(), stock, value(&p.value)))
            .collect()
    })
}

/// The fleet-local policies of either chain whose file changed, for the reason.
fn changed_policies(
    base: &Fleet,
    head: &Fleet,
    was: &Result<Vec<Link>, ChainError>,
    now: &Result<Vec<Link>, ChainError>,
) -> Vec<String> {
    let local = |c: &Result<Vec<Link>, ChainError>| -> Vec<String> {
        c.as_ref()
            .map(|links| {
                links
                    .iter()
                    .filter(|(_, stock, _)| !stock)
                    .map(|(n, _, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let names: BTreeSet<String> = local(was).into_iter().chain(local(now)).collect();
    names
        .into_iter()
        .filter(|n| {
            value(&base.policies.get(n).map(|p| &p.value))
                != value(&head.policies.get(n).map(|p| &p.value))
        })
        .collect()
}

/// The text of the signers file `rel` of `fleet`, when named and readable.
fn signers_text(fleet: &Fleet, rel: Option<&str>) -> Option<Vec<u8>> {
    rel.and_then(|rel| fleet.source.read(rel).ok())
}

/// The products of `head` whose catalog tree at its base revision differs
/// from the tree read at the head's `ref` (SPEC §3 `plan --catalog-base`).
/// `bases` gives each product to compare its base revision (a branch, tag
/// or commit of that catalog's repository; for a catalog fetched from a
/// URL, among the fetched branches and tags, as nothing is fetched);
/// products it does not name are not compared. Trees are compared, so a
/// commit that changes no file is no move. A catalog read from a plain
/// directory has no history: that is an error, as is a revision its
/// repository does not hold.
pub fn moved_catalogs(
    head: &Fleet,
    bases: &BTreeMap<String, String>,
) -> Result<BTreeSet<String>, Diagnostic> {
    let mut moved = BTreeSet::new();
    for (product, base_rev) in bases {
        let at = |message: String| {
            head.config
                .origin
                .diag(&format!("catalogs.{product}.source"), message)
        };
        let Some(cat) = head.catalogs.get(product) else {
            return Err(at(format!(
                "--catalog-base names the product {product}, which has no catalog in fleet.yaml"
            )));
        };
        let Some(now) = cat.source.tree_id() else {
            return Err(at(format!(
                "--catalog-base compares catalogs in git, but the catalog {product} is read from a directory"
            ))
            .with_hint("give it a `ref:` in fleet.yaml, or name only git catalogs with --catalog-base PRODUCT=REF"));
        };
        let base: Source = cat
            .source
            .at_rev(base_rev, format!("{base_rev}:"))
            .map_err(|e| {
                at(format!(
                    "cannot read the catalog {product} at {base_rev:?}: {e}"
                ))
                .with_hint("--catalog-base REF needs REF in every git catalog; name one catalog's base with --catalog-base PRODUCT=REF")
            })?;
        if base.tree_id().as_deref() != Some(now.as_str()) {
            moved.insert(product.clone());
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadOptions, load};

    const FLEET: &str =
        "catalogs:\n  acme:\n    source: ../catalog\n  other:\n    source: ../other\n";

    /// A fleet read from a directory holding `files`.
    fn fleet(files: &[(&str, &str)]) -> (tempfile::TempDir, Fleet) {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("fleet");
        for (rel, text) in files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let options = LoadOptions {
            fleet: root.display().to_string(),
            state_dir: Some(dir.path().join("state")),
            git: Default::default(),
        };
        let (fleet, _) = load(&options).expect("the fleet opens");
        (dir, fleet)
    }

    fn site(name: &str, product: &str, policy: Option<&str>) -> String {
        let policy = policy.map(|p| format!("policy: {p}\n")).unwrap_or_default();
        format!("site: {name}\nroot: /srv/{name}\nproduct: {product}\nchannel: stable\n{policy}")
    }

    fn names(changes: &Changes) -> Vec<&str> {
        changes.affected.keys().map(String::as_str).collect()
    }

    #[test]
    fn nothing_changed_selects_nothing() {
        let a = site("a", "acme", None);
        let files = [("fleet.yaml", FLEET), ("sites/a.yaml", a.as_str())];
        let (_b, base) = fleet(&files);
        let (_h, head) = fleet(&files);
        assert_eq!(
            changed_sites(&base, &head, &BTreeSet::new()),
            Changes::default()
        );
    }

    #[test]
    fn one_edited_site_of_a_list_selects_only_that_site() {
        let base_list = format!(
            "- {}\n- {}",
            site("a", "acme", None).replace('\n', "\n  "),
            site("b", "acme", None).replace('\n', "\n  ")
        );
        let head_list = base_list.replace("root: /srv/b", "root: /srv/b2");
        let (_b, base) = fleet(&[("fleet.yaml", FLEET), ("sites/all.yaml", &base_list)]);
        let (_h, head) = fleet(&[("fleet.yaml", FLEET), ("sites/all.yaml", &head_list)]);
        assert_eq!(base.sites.len(), 2, "the list parses");
        let changes = changed_sites(&base, &head, &BTreeSet::new());
        assert_eq!(names(&changes), ["b"]);
        assert_eq!(changes.affected["b"], [Reason::Site]);
    }

    #[test]
    fn a_site_moved_to_another_file_or_recommented_is_unchanged() {
        let a = site("a", "acme", None);
        let (_b, base) = fleet(&[("fleet.yaml", FLEET), ("sites/a.yaml", &a)]);
        let moved = format!("# moved\n{a}");
        let (_h, head) = fleet(&[("fleet.yaml", FLEET), ("sites/shop.yaml", &moved)]);
        assert!(
            changed_sites(&base, &head, &BTreeSet::new())
                .affected
                .is_empty()
        );
    }

    #[test]
    fn a_base_policy_edit_selects_the_sites_whose_chain_extends_it() {
        let (a, b, c, d) = (
            site("a", "acme", Some("strict")),
            site("b", "acme", Some("house")),
            site("c", "acme", None),
            site("d", "acme", Some("conservative")),
        );
        let with_house = |house: &str| {
            fleet(&[
                ("fleet.yaml", FLEET),
                ("policies/strict.yaml", "policy: strict\nextends: house\n"),
                ("policies/house.yaml", house),
                ("sites/a.yaml", &a),
                ("sites/b.yaml", &b),
                ("sites/c.yaml", &c),
                ("sites/d.yaml", &d),
            ])
        };
        let (_b, base) = with_house("policy: house\nextends: base\nkeep_rollback_points: 5\n");
        let (_h, head) = with_house("policy: house\nextends: base\nkeep_rollback_points: 9\n");
        let changes = changed_sites(&base, &head, &BTreeSet::new());
        assert_eq!(names(&changes), ["a", "b"]);
        assert_eq!(
            changes.affected["a"],
            [Reason::Policy(vec!["house".to_owned()])]
        );
    }

    #[test]
    fn a_new_fleet_policy_shadowing_a_stock_one_selects_its_sites() {
        let a = site("a", "acme", Some("conservative"));
        let (_b, base) = fleet(&[("fleet.yaml", FLEET), ("sites/a.yaml", &a)]);
        let (_h, head) = fleet(&[
            ("fleet.yaml", FLEET),
            ("sites/a.yaml", &a),
            (
                "policies/conservative.yaml",
                "policy: conservative\nextends: conservative\nkeep_rollback_points: 3\n",
            ),
        ]);
        assert_eq!(names(&changed_sites(&base, &head, &BTreeSet::new())), ["a"]);
    }

    #[test]
    fn catalog_entry_and_moved_catalog_select_every_site_of_that_product_only() {
        let a = site("a", "acme", None);
        let b = site("b", "other", None);
        let files = |fleet_yaml: &'static str| {
            vec![
                ("fleet.yaml", fleet_yaml),
                ("sites/a.yaml", a.as_str()),
                ("sites/b.yaml", b.as_str()),
            ]
        };
        let (_b, base) = fleet(&files(FLEET));
        let (_h, head) = fleet(&files(
            "catalogs:\n  acme:\n    source: ../catalog\n    ref: v2\n  other:\n    source: ../other\n",
        ));
        let changes = changed_sites(&base, &head, &BTreeSet::new());
        assert_eq!(names(&changes), ["a"]);
        assert_eq!(changes.affected["a"], [Reason::CatalogEntry]);

        let (_h2, same) = fleet(&files(FLEET));
        let moved = BTreeSet::from(["other".to_owned()]);
        let changes = changed_sites(&base, &same, &moved);
        assert_eq!(names(&changes), ["b"]);
        assert_eq!(changes.affected["b"], [Reason::CatalogMoved]);
    }

    #[test]
    fn removed_and_added_sites_and_approvals() {
        let a = site("a", "acme", None);
        let b = site("b", "acme", None);
        let c = site("c", "acme", None);
        let approval = format!(
            "approved:\n  - plan_digest: \"sha256:{}\"\n    by: alice\n    at: 2026-11-20T10:00:00Z\n",
            "0".repeat(64)
        );
        let (_b, base) = fleet(&[
            ("fleet.yaml", FLEET),
            ("sites/a.yaml", &a),
            ("sites/b.yaml", &b),
        ]);
        let (_h, head) = fleet(&[
            ("fleet.yaml", FLEET),
            ("sites/a.yaml", &a),
            ("sites/c.yaml", &c),
            ("approvals/a.yaml", &approval),
        ]);
        assert!(head.approvals.contains_key("a"), "the approval loads");
        let changes = changed_sites(&base, &head, &BTreeSet::new());
        assert_eq!(names(&changes), ["a", "c"]);
        assert_eq!(changes.affected["a"], [Reason::Approvals]);
        assert_eq!(changes.affected["c"], [Reason::Site]);
        assert_eq!(changes.removed, BTreeSet::from(["b".to_owned()]));
    }

    #[test]
    fn a_new_state_dir_selects_every_site() {
        let a = site("a", "acme", None);
        let b = site("b", "other", None);
        let (_b, base) = fleet(&[
            ("fleet.yaml", FLEET),
            ("sites/a.yaml", &a),
            ("sites/b.yaml", &b),
        ]);
        let with_state = format!("{FLEET}state_dir: /var/lib/elsewhere\n");
        let (_h, head) = fleet(&[
            ("fleet.yaml", &with_state),
            ("sites/a.yaml", &a),
            ("sites/b.yaml", &b),
        ]);
        assert_eq!(
            names(&changed_sites(&base, &head, &BTreeSet::new())),
            ["a", "b"]
        );
    }
}
