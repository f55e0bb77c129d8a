//! The `symlink` layout (SPEC §6.3): the site root is a symbolic link to a
//! release directory. A change builds a whole new directory beside the
//! current one (a copy with the changes made), fsyncs it, and swaps the
//! link with one `rename`, so a reader that resolves the root once sees one
//! tree, old or new, never a mix.
//!
//! The new directory is invisible until the swap, so the journal only has
//! to name the two link targets: recovery points the link at the new one if
//! the change committed, else at the old one, and removes the unfinished
//! directory. Old release directories this module built for the site
//! (named `<site>@<version>@<txn>`) are pruned when no retained point names
//! them; any other directory is the operator's.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsops::Steps;
use super::txn::{Change, TxnError};
use crate::confined::{Kind, Root};
use crate::inventory::{Progress, STAGE_DIR};
use crate::store::Points;

/// A `symlink`-layout change: which link, and where it points before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    /// The link: the site's `root`.
    pub link: PathBuf,
    /// Its target before the change, as written in the link.
    pub old_target: PathBuf,
    /// Its target after the change: a sibling of the old one.
    pub new_target: PathBuf,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TxnError {
    let what = what.into();
    move |source| TxnError::Io { what, source }
}

fn invalid(what: String) -> TxnError {
    TxnError::Io {
        what,
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    }
}

/// The final component of a link target, if it is a plain name.
fn final_name(target: &Path) -> Option<&str> {
    match target.components().next_back() {
        Some(Component::Normal(n)) => n.to_str(),
        _ => None,
    }
}

/// The start of the names of the release directories built for `site`
/// (`@` is never in a site name, so one site's prefix never matches another's).
fn prefix(site: &str) -> String {
    format!("{site}@")
}

/// A name for a new release directory, unique per transaction.
fn release_name(site: &str, version: &str, txn: &str) -> String {
    let safe: String = version
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
        .collect();
    format!("{}{safe}@{txn}", prefix(site))
}

/// Reads where the link `link` points now.
fn read_target(link: &Path) -> Result<PathBuf, TxnError> {
    let meta = std::fs::symlink_metadata(link).map_err(io(format!("{}", link.display())))?;
    if !meta.file_type().is_symlink() {
        return Err(invalid(format!(
            "{} is not a symbolic link, but the site's layout is symlink (hint: move the tree into a release directory and link to it, e.g. `mv {0} {0}.1 && ln -s {1}.1 {0}`, or use layout: in_place)",
            link.display(),
            link.file_name()
                .map_or_else(|| "root".into(), |n| n.to_string_lossy()),
        )));
    }
    std::fs::read_link(link).map_err(io(format!("{}: readlink", link.display())))
}

impl Swap {
    /// A swap of `link` to a new release directory beside its current
    /// target, named after the site, `version` and the transaction `txn`.
    pub fn new(link: &Path, site: &str, version: &str, txn: &str) -> Result<Self, TxnError> {
        let old_target = read_target(link)?;
        if final_name(&old_target).is_none() {
            return Err(invalid(format!(
                "{} points to {}, which does not end in a directory name",
                link.display(),
                old_target.display()
            )));
        }
        let new_target = old_target.with_file_name(release_name(site, version, txn));
        Ok(Self {
            link: link.to_owned(),
            old_target,
            new_target,
        })
    }

    /// The directory that holds the release directories.
    fn base(&self) -> PathBuf {
        let dir = self.link.parent().unwrap_or(Path::new("/"));
        match self.old_target.parent() {
            Some(p) => dir.join(p),
            None => dir.to_owned(),
        }
    }

    /// The new release directory's name, in the directory of release directories. Checked, since
    /// a journal is read back from disk and the name is removed on undo.
    pub fn new_name(&self) -> Result<&str, TxnError> {
        final_name(&self.new_target)
            .filter(|n| n.contains('@'))
            .ok_or_else(|| {
                invalid(format!(
                    "{}: not a release directory sitekeeper built",
                    self.new_target.display()
                ))
            })
    }

    fn base_root(&self) -> Result<Root, TxnError> {
        let base = self.base();
        Root::open(&base).map_err(io(format!("{}", base.display())))
    }

    /// The link's directory and the link's name in it.
    fn link_dir(&self) -> Result<(Root, String), TxnError> {
        let dir = self.link.parent().unwrap_or(Path::new("/"));
        let name = self
            .link
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(format!("{}: not a usable link name", self.link.display())))?;
        let root = Root::open(dir).map_err(io(format!("{}", dir.display())))?;
        Ok((root, name.to_owned()))
    }

    /// Builds the new release directory: a copy of `old` (the current
    /// release, through its root) with `changes` made and every directory
    /// fsynced. Nothing a reader sees changes.
    pub fn build(
        &self,
        old: &Root,
        points: &Points,
        steps: &Steps,
        changes: &[Change],
        progress: Option<&dyn Progress>,
    ) -> Result<(), TxnError> {
        let base = self.base_root()?;
        let name = self.new_name()?;
        steps.step("clear release dir")?;
        base.remove_tree(name)
            .map_err(io(format!("{name}: clear")))?;
        steps.step("create release dir")?;
        base.create_dirs(name)
            .map_err(io(format!("{name}: create")))?;
        let new = Root::open(&self.base().join(name)).map_err(io(format!("{name}: open")))?;
        steps.step("copy tree")?;
        let mut dirs = Vec::new();
        copy_tree(old, &new, "", &mut dirs)?;
        if let Some(p) = progress {
            p.start(changes.len() as u64);
        }
        for c in changes {
            steps.step("write")?;
            if c.old.is_some() {
                new.remove(&c.path)
                    .map_err(io(format!("{}: replace", c.path)))?;
            }
            if let Some(f) = c.new {
                let bytes = points.read_blob(f.blob)?;
                let parent = c.path.rsplit_once('/').map_or("", |(p, _)| p);
                new.create_dirs(parent)
                    .map_err(io(format!("{}: create directories", c.path)))?;
                new.create(&c.path, &bytes, f.mode, f.symlink)
                    .map_err(io(format!("{}: write", c.path)))?;
            }
            if let Some(p) = progress {
                p.advance();
            }
        }
        if let Some(p) = progress {
            p.finish();
        }
        let deleted: Vec<&str> = changes
            .iter()
            .filter(|c| c.new.is_none())
            .map(|c| c.path.as_str())
            .collect();
        super::txn::prune_empty_dirs(&new, steps, &deleted)?;
        // Modes last, so a read-only directory did not stop the copy; then
        // every directory is made durable before the link may point at it.
        steps.step("fsync tree")?;
        for (dir, mode) in dirs.iter().rev() {
            match new.set_dir_mode(dir, *mode) {
                Ok(()) => {}
                // Pruned after deletes: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(format!("{dir}/: chmod"))(e)),
            }
            new.sync_dir(dir).map_err(io(format!("{dir}/: fsync")))?;
        }
        // Directories the change created hold new entries too.
        let copied: std::collections::BTreeSet<&str> =
            dirs.iter().map(|(d, _)| d.as_str()).collect();
        let created: std::collections::BTreeSet<&str> = changes
            .iter()
            .filter(|c| c.new.is_some())
            .map(|c| c.path.rsplit_once('/').map_or("", |(p, _)| p))
            .filter(|d| !d.is_empty() && !copied.contains(d))
            .collect();
        for dir in created {
            new.sync_dir(dir).map_err(io(format!("{dir}/: fsync")))?;
        }
        new.sync_dir("").map_err(io("release dir: fsync"))?;
        base.sync_dir("").map_err(io("release dirs: fsync"))?;
        Ok(())
    }

    /// Points the link at `target` by one `rename` of a fresh link over it.
    fn point_link(&self, steps: &Steps, target: &Path) -> Result<(), TxnError> {
        let (dir, name) = self.link_dir()?;
        let tmp = format!(".{name}.sitekeeper-swap");
        steps.step("link")?;
        dir.remove(&tmp).map_err(io("clear the swap link"))?;
        dir.create(&tmp, target.as_os_str().as_bytes(), 0o777, true)
            .map_err(io("create the swap link"))?;
        steps.step("swap")?;
        dir.rename(&tmp, &name)
            .map_err(io(format!("{}: swap", self.link.display())))?;
        steps.step("fsync link dir")?;
        dir.sync_dir("").map_err(io("fsync the link's directory"))?;
        Ok(())
    }

    /// Publishes the new release directory: the one atomic step readers see.
    pub fn publish(&self, steps: &Steps) -> Result<(), TxnError> {
        self.point_link(steps, &self.new_target)
    }

    /// After a crash: the link ends at the new directory if the change
    /// committed, else at the old one (and the new directory goes).
    /// Idempotent, so a crash inside it is recovered by the next call.
    pub fn recover(&self, steps: &Steps, committed: bool) -> Result<(), TxnError> {
        let want = if committed {
            &self.new_target
        } else {
            &self.old_target
        };
        if read_target(&self.link)? != *want {
            self.point_link(steps, want)?;
        }
        let (dir, name) = self.link_dir()?;
        let tmp = format!(".{name}.sitekeeper-swap");
        if dir.metadata(&tmp).is_ok() {
            steps.step("remove swap link")?;
            dir.remove(&tmp).map_err(io("remove the swap link"))?;
            dir.sync_dir("").map_err(io("fsync the link's directory"))?;
        }
        if !committed {
            steps.step("remove release dir")?;
            let base = self.base_root()?;
            let name = self.new_name()?;
            base.remove_tree(name)
                .map_err(io(format!("{name}: remove")))?;
            // Durably gone before the journal is: a crash must not bring
            // back a half-built directory that nothing would remove.
            base.sync_dir("").map_err(io("release dirs: fsync"))?;
        }
        Ok(())
    }
}

/// Copies directory `rel` of `from` into `to`, recording every directory
/// and its mode (set afterwards). Links are copied as links, never
/// followed; a FIFO, socket or device is refused.
fn copy_tree(
    from: &Root,
    to: &Root,
    rel: &str,
    dirs: &mut Vec<(String, u32)>,
) -> Result<(), TxnError> {
    let mut entries = from
        .list(rel)
        .map_err(io(format!("{}/: list", display(rel))))?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, meta) in entries {
        let Some(name) = name.to_str() else {
            return Err(invalid(format!(
                "{}/{}: the name is not UTF-8, so the symlink layout cannot carry it over",
                display(rel),
                name.to_string_lossy()
            )));
        };
        if rel.is_empty() && name == STAGE_DIR {
            continue;
        }
        let path = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        match meta.kind {
            Kind::Dir => {
                to.create_dirs(&path)
                    .map_err(io(format!("{path}/: create")))?;
                dirs.push((path.clone(), meta.mode));
                copy_tree(from, to, &path, dirs)?;
            }
            Kind::File => from
                .copy_file(&path, to, &path, meta.mode)
                .map_err(io(format!("{path}: copy")))?,
            Kind::Symlink => {
                let target: OsString = from
                    .read_link(&path)
                    .map_err(io(format!("{path}: readlink")))?;
                to.create(&path, target.as_bytes(), 0o777, true)
                    .map_err(io(format!("{path}: copy link")))?;
            }
            other => {
                return Err(invalid(format!(
                    "{path} is {}, which the symlink layout will not copy into a new release directory (hint: move it out of the site)",
                    other.describe()
                )));
            }
        }
    }
    Ok(())
}

fn display(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

/// Removes the release directories sitekeeper built for `site` beside its
/// current one that neither the link nor a retained point names.
pub fn prune(link: &Path, site: &str, points: &Points) -> Result<Vec<String>, TxnError> {
    let target = read_target(link)?;
    let mut keep: BTreeSet<String> = BTreeSet::new();
    keep.extend(final_name(&target).map(str::to_owned));
    for n in points.list()? {
        keep.extend(points.meta(n)?.release_dir);
    }
    let swap = Swap {
        link: link.to_owned(),
        old_target: target.clone(),
        new_target: target,
    };
    let base = swap.base_root()?;
    let mut removed = Vec::new();
    for (name, meta) in base.list("").map_err(io("list release dirs"))? {
        let Some(name) = name.to_str() else { continue };
        if meta.kind == Kind::Dir && name.starts_with(&prefix(site)) && !keep.contains(name) {
            base.remove_tree(name)
                .map_err(io(format!("{name}: remove")))?;
            removed.push(name.to_owned());
        }
    }
    if !removed.is_empty() {
        base.sync_dir("").map_err(io("release dirs: fsync"))?;
    }
    Ok(removed)
}

/// The bytes of the regular files under `rel` of `root`, and the number of
/// entries, to check that a copy of the tree fits.
pub fn tree_size(root: &Root, rel: &str) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0, 0);
    for (name, meta) in root.list(rel)? {
        let name = name.to_string_lossy();
        if rel.is_empty() && name == STAGE_DIR {
            continue;
        }
        entries += 1;
        match meta.kind {
            Kind::File => bytes += meta.size,
            Kind::Dir => {
                let child = if rel.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel}/{name}")
                };
                let (b, e) = tree_size(root, &child)?;
                bytes += b;
                entries += e;
            }
            _ => {}
        }
    }
    Ok((bytes, entries))
}
