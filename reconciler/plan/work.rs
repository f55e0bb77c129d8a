//! The planner's working tree: the files on disk, overlaid by the changes
//! planned so far (upgrade, drift revert, fixes in order), read lazily so
//! only files a change touches are ever read.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use super::{Contents, FileChange, FileOp, SiteInput};
use crate::inventory::{Entry, Inventory, is_preserved};
use crate::model::hash::ContentHash;
use crate::model::values::Glob;

/// A file's content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    /// The bytes (a link's target, for links).
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Whether it is a symbolic link.
    pub symlink: bool,
    /// SHA-256 of the bytes.
    pub hash: ContentHash,
}

impl FileData {
    /// Content with its hash.
    pub fn new(bytes: Vec<u8>, mode: u32, symlink: bool) -> Self {
        let hash = ContentHash::of(&bytes);
        Self {
            bytes,
            mode,
            symlink,
            hash,
        }
    }
}

/// Disk plus planned changes.
#[derive(Clone)]
pub(super) struct Work<'a> {
    inventory: &'a Inventory,
    contents: &'a dyn Contents,
    preserve: &'a [Glob],
    overlay: BTreeMap<String, Option<Arc<FileData>>>,
    read: Rc<RefCell<HashMap<String, Option<Arc<FileData>>>>>,
    diffs: bool,
}

impl<'a> Work<'a> {
    pub(super) fn new(input: &SiteInput<'a>) -> Self {
        Self {
            inventory: input.inventory,
            contents: input.contents,
            preserve: input.preserve,
            overlay: BTreeMap::new(),
            read: Rc::default(),
            diffs: input.diffs,
        }
    }

    /// Whether a planned change touches `path`.
    pub(super) fn touched(&self, path: &str) -> bool {
        self.overlay.contains_key(path)
    }

    /// The current content of `path` (planned, else on disk).
    pub(super) fn content(&self, path: &str) -> Option<Arc<FileData>> {
        if let Some(planned) = self.overlay.get(path) {
            return planned.clone();
        }
        if let Some(cached) = self.read.borrow().get(path) {
            return cached.clone();
        }
        let data = match self.inventory.entries.get(path) {
            Some(Entry::File { mode, .. }) => self
                .contents
                .disk(path)
                .ok()
                .map(|b| Arc::new(FileData::new(b, *mode, false))),
            Some(Entry::Symlink { target }) => Some(Arc::new(FileData::new(
                target.clone().into_bytes(),
                0o777,
                true,
            ))),
            None => None,
        };
        self.read.borrow_mut().insert(path.to_owned(), data.clone());
        data
    }

    fn hash(&self, path: &str) -> Option<ContentHash> {
        match self.overlay.get(path) {
            Some(planned) => planned.as_ref().map(|d| d.hash),
            None => self.inventory.entries.get(path).map(Entry::hash),
        }
    }

    fn mode(&self, path: &str) -> Option<u32> {
        match self.overlay.get(path) {
            Some(planned) => planned.as_ref().map(|d| d.mode),
            None => match self.inventory.entries.get(path) {
                Some(Entry::File { mode, .. }) => Some(*mode),
                Some(Entry::Symlink { .. }) => Some(0o777),
                None => None,
            },
        }
    }

    /// Plans `path` to become `data` (`None`: deleted). Returns the change,
    /// or `None` when nothing would change.
    pub(super) fn set(&mut self, path: &str, data: Option<FileData>) -> Option<FileChange> {
        let before = self.hash(path);
        let after = data.as_ref().map(|d| d.hash);
        let same_mode = match &data {
            Some(d) => self
                .mode(path)
                .is_some_and(|m| (m & 0o111 != 0) == (d.mode & 0o111 != 0)),
            None => true,
        };
        if before == after && same_mode {
            return None;
        }
        let old = if before.is_some() && self.diffs {
            self.content(path)
        } else {
            None
        };
        let new = data.map(Arc::new);
        self.overlay.insert(path.to_owned(), new.clone());
        let op = match (before, after) {
            (None, _) => FileOp::Add,
            (_, None) => FileOp::Delete,
            _ => FileOp::Modify,
        };
        Some(FileChange {
            path: path.to_owned(),
            op,
            before,
            after,
            old,
            new,
        })
    }

    /// Every present path matching one of `globs`, preserved paths excepted.
    pub(super) fn matching(&self, globs: &[Glob]) -> Vec<String> {
        let on_disk = self
            .inventory
            .entries
            .keys()
            .filter(|p| !self.overlay.contains_key(*p));
        let planned = self
            .overlay
            .iter()
            .filter(|(_, d)| d.is_some())
            .map(|(p, _)| p);
        let mut out: Vec<String> = on_disk
            .chain(planned)
            .filter(|p| globs.iter().any(|g| g.is_match(p)) && !is_preserved(self.preserve, p))
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
