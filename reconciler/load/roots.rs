//! Sites that would share files: two site roots that are one directory, or
//! one inside the other, once links and `..` are resolved (SPEC §3).
//!
//! Each site's lock serializes its own changes only, so two sites over one
//! tree would stage, swap and roll back each other's files. This module
//! resolves paths (lstat, readlink, realpath) and never reads a site file.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Component, Path, PathBuf};

use super::{Diagnostic, Diagnostics, Fleet, Loaded};
use crate::model::Site;
use crate::model::words::Layout;

/// The directory a site's changes are confined to, as compared with the
/// other sites', and what it is to that site.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    /// Absolute and resolved where it exists; lexical where it does not.
    dir: PathBuf,
    /// `layout: symlink`: `dir` holds the release directories the root
    /// links to, rather than being the root.
    releases: bool,
}

impl Claim {
    /// How the claim of `site` is named in a message: with the root as
    /// written, and what it resolved to where that differs.
    fn describe(&self, site: &Site) -> String {
        let (name, written, dir) = (site.site.as_str(), &site.root, self.dir.display());
        if self.releases {
            format!(
                "the directory of the release directories of {name:?} ({dir}, which its root {written} links into)"
            )
        } else if Path::new(written) == self.dir {
            format!("the root of {name:?} ({dir})")
        } else {
            format!("the root of {name:?} ({written}, that is {dir})")
        }
    }
}

/// How a later site's claim meets an earlier one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overlap {
    /// One directory.
    Same,
    /// The later one lies inside the earlier one.
    Inside,
    /// The later one contains the earlier one.
    Contains,
}

/// Reports every site whose claim meets an earlier site's (in file order),
/// at the later site's `root:`, naming the earlier site. Each site is
/// reported once, against the first overlap found.
pub(super) fn check_roots(fleet: &Fleet, diags: &mut Diagnostics) {
    let claims: Vec<Claim> = fleet.sites.iter().map(|s| claim(fleet, s)).collect();
    let mut seen: BTreeMap<&Path, usize> = BTreeMap::new();
    for (later, mine) in claims.iter().enumerate() {
        if let Some((earlier, how)) = overlap(&seen, &mine.dir) {
            diags.push(message(fleet, earlier, &claims[earlier], later, mine, how));
        }
        // Kept even when it overlaps: a third site may meet this one
        // without meeting the first.
        seen.entry(mine.dir.as_path()).or_insert(later);
    }
}

/// The first earlier claim that `dir` meets, if any.
fn overlap(seen: &BTreeMap<&Path, usize>, dir: &Path) -> Option<(usize, Overlap)> {
    if let Some(&i) = seen.get(dir) {
        return Some((i, Overlap::Same));
    }
    if let Some(i) = dir.ancestors().skip(1).find_map(|a| seen.get(a)) {
        return Some((*i, Overlap::Inside));
    }
    // Paths order component by component, so the paths inside `dir`
    // directly follow it: the next key is inside it, or none is.
    let (next, &i) = seen
        .range::<Path, _>((Bound::Excluded(dir), Bound::Unbounded))
        .next()?;
    next.starts_with(dir).then_some((i, Overlap::Contains))
}

fn message(
    fleet: &Fleet,
    earlier: usize,
    theirs: &Claim,
    later: usize,
    mine: &Claim,
    how: Overlap,
) -> Diagnostic {
    let (first, second) = (&fleet.sites[earlier], &fleet.sites[later]);
    let (a, b) = (first.site.as_str(), second.site.as_str());
    let (mine, theirs) = (mine.describe(second), theirs.describe(first));
    let relation = match how {
        Overlap::Same => "is the same directory as",
        Overlap::Inside => "is inside",
        Overlap::Contains => "contains",
    };
    let text = format!(
        "the sites {b:?} and {a:?} would share files: {mine} {relation} {theirs} ({a:?} is defined at {}) (hint: give each site a directory of its own; with layout: symlink, a directory of release directories of its own)",
        first.origin.locate("root"),
    );
    second.origin.diag("root", text)
}

/// The directory `site` changes: its root resolved, or, for the symlink
/// layout, the directory holding the release directory its root links
/// to, where new release directories are made beside the current one.
fn claim(fleet: &Fleet, site: &Loaded<Site>) -> Claim {
    let Some(root) = fleet.site_root(site) else {
        // A relative root of a fleet read from git has no directory yet:
        // such roots are compared with each other as written.
        return Claim {
            dir: lexical(Path::new(&site.root)),
            releases: false,
        };
    };
    let root = std::path::absolute(&root).unwrap_or(root);
    if layout(fleet, site) == Some(Layout::Symlink)
        && let Some(target) = link_target(&root)
        && let Some(parent) = resolve(&target).parent()
    {
        return Claim {
            dir: parent.to_owned(),
            releases: true,
        };
    }
    Claim {
        dir: resolve(&root),
        releases: false,
    }
}

/// The site's layout: its own, else the nearest default of its policy
/// chain, as `policy::resolve` takes it (which sits above this module).
/// A broken chain is reported elsewhere; the root is then compared as an
/// `in_place` one.
fn layout(fleet: &Fleet, site: &Site) -> Option<Layout> {
    // SPEC §2.1: a site that names no policy has the stock policy `base`.
    let name = site.policy.as_deref().unwrap_or("base");
    site.layout.or_else(|| {
        let chain = fleet.policy_chain(name).ok()?;
        chain.iter().find_map(|(p, _)| p.defaults.layout)
    })
}

/// Where the link `path` points, as an absolute path (unresolved), or
/// `None` when `path` is no link.
fn link_target(path: &Path) -> Option<PathBuf> {
    if !std::fs::symlink_metadata(path)
        .ok()?
        .file_type()
        .is_symlink()
    {
        return None;
    }
    let target = std::fs::read_link(path).ok()?;
    let dir = path.parent().map_or_else(|| PathBuf::from("/"), resolve);
    Some(dir.join(target))
}

/// `path` (absolute) with every link and `..` resolved as far as it
/// exists; what does not exist yet is appended with `..` taken lexically.
fn resolve(path: &Path) -> PathBuf {
    for existing in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(existing) {
            let rest = path.strip_prefix(existing).unwrap_or(Path::new(""));
            return lexical(&real.join(rest));
        }
    }
    lexical(path)
}

/// `a/./b/../c` → `a/c`, without looking at the file system; `..` at the
/// top of an absolute path stays there, as the kernel has it.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let can_pop = matches!(out.components().next_back(), Some(Component::Normal(_)));
                if can_pop {
                    out.pop();
                } else if !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_is_taken_lexically() {
        assert_eq!(lexical(Path::new("/srv/a/../b/./c")), Path::new("/srv/b/c"));
        assert_eq!(lexical(Path::new("/../srv")), Path::new("/srv"));
        assert_eq!(lexical(Path::new("../x/../../y")), Path::new("../../y"));
    }

    #[test]
    fn a_missing_tail_is_appended_to_the_resolved_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("real")).unwrap();
        std::os::unix::fs::symlink(real.join("real"), real.join("link")).unwrap();
        assert_eq!(
            resolve(&real.join("link/missing/../new")),
            real.join("real/new")
        );
    }

    fn seen(paths: &[&'static str]) -> BTreeMap<&'static Path, usize> {
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| (Path::new(*p), i))
            .collect()
    }

    #[test]
    fn overlaps_are_found_in_both_directions_and_siblings_pass() {
        let s = seen(&["/srv/a", "/srv/b/c"]);
        assert_eq!(overlap(&s, Path::new("/srv/a")), Some((0, Overlap::Same)));
        assert_eq!(
            overlap(&s, Path::new("/srv/a/x")),
            Some((0, Overlap::Inside))
        );
        assert_eq!(
            overlap(&s, Path::new("/srv/b")),
            Some((1, Overlap::Contains))
        );
        assert_eq!(overlap(&s, Path::new("/")), Some((0, Overlap::Contains)));
        // A name that only starts like another is a sibling.
        assert_eq!(overlap(&s, Path::new("/srv/a-b")), None);
        assert_eq!(overlap(&s, Path::new("/srv/b-c")), None);
        assert_eq!(overlap(&s, Path::new("/srv/b/d")), None);
    }
}
