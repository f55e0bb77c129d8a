//! The planner's working tree: the files on disk, overlaid by the changes
//! planned so far (upgrade, drift revert, fixes in order), read lazily so
//! only files a change touches are ever read.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use super::{Contents, FileChange, FileOp, SiteInput};
use crate::inventory::{Entry, Inventory, is_preserved};
use crate::model::hash::{BlobId, ContentHash};
use crate::model::values::{Glob, Version};

/// A file's content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    /// The bytes (a link's target, for links), or where to read them.
    pub body: Body,
    /// Permission bits.
    pub mode: u32,
    /// Whether it is a symbolic link.
    pub symlink: bool,
    /// SHA-256 of the bytes.
    pub hash: ContentHash,
}

/// Where a planned file's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// In memory: fix results, files on disk, and every content of a plan
    /// rendered with diffs.
    Bytes(Vec<u8>),
    /// A blob of a release's payload, read again when it is needed. Plans
    /// made to be applied carry upgrades this way, so an upgrade of
    /// thousands of files does not hold every new file in memory: `apply`
    /// reads each one once more while it stores it.
    Payload {
        /// The release.
        version: Version,
        /// The blob (also the content's git blob id).
        blob: BlobId,
        /// Its size.
        len: usize,
    },
}

impl FileData {
    /// Content with its hash.
    pub fn new(bytes: Vec<u8>, mode: u32, symlink: bool) -> Self {
        let hash = ContentHash::of(&bytes);
        Self {
            body: Body::Bytes(bytes),
            mode,
            symlink,
            hash,
        }
    }

    /// A payload blob's content, hashed now and read again when needed.
    fn payload(version: &Version, blob: BlobId, bytes: &[u8], mode: u32, symlink: bool) -> Self {
        Self {
            body: Body::Payload {
                version: version.clone(),
                blob,
                len: bytes.len(),
            },
            mode,
            symlink,
            hash: ContentHash::of(bytes),
        }
    }

    /// The bytes, when they are in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Bytes(b) => Some(b),
            Body::Payload { .. } => None,
        }
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Bytes(b) => b.len(),
            Body::Payload { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The git blob id of the bytes.
    pub fn blob(&self) -> BlobId {
        match &self.body {
            Body::Bytes(b) => BlobId::of(b),
            Body::Payload { blob, .. } => *blob,
        }
    }

    /// The bytes, read from the payload when they are not in memory.
    pub fn load(&self, contents: &dyn Contents) -> Result<Cow<'_, [u8]>, String> {
        match &self.body {
            Body::Bytes(b) => Ok(Cow::Borrowed(b)),
            Body::Payload { version, blob, .. } => {
                let bytes = contents.payload_blob(version, *blob)?;
                // The catalog is read twice; a blob is named by its content,
                // so this only fails on a broken store, never by returning
                // other bytes than the plan hashed.
                if ContentHash::of(&bytes) != self.hash {
                    return Err(format!(
                        "blob {blob} of {version} changed while it was applied"
                    ));
                }
                Ok(Cow::Owned(bytes))
            }
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

    /// The current content of `path` (planned, else on disk), with its
    /// bytes in memory. Fails only when a planned payload blob cannot be
    /// read again.
    pub(super) fn content(&self, path: &str) -> Result<Option<Arc<FileData>>, String> {
        if let Some(planned) = self.overlay.get(path) {
            return match planned {
                Some(d) if d.bytes().is_none() => {
                    let bytes = d.load(self.contents)?.into_owned();
                    Ok(Some(Arc::new(FileData {
                        body: Body::Bytes(bytes),
                        ..(**d).clone()
                    })))
                }
                other => Ok(other.clone()),
            };
        }
        if let Some(cached) = self.read.borrow().get(path) {
            return Ok(cached.clone());
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
        Ok(data)
    }

    /// A payload blob's content as the plan should carry it: in memory
    /// for diffs, else only named (for `apply`).
    pub(super) fn payload_data(
        &self,
        version: &Version,
        blob: BlobId,
        bytes: Vec<u8>,
        mode: u32,
        symlink: bool,
    ) -> FileData {
        if self.diffs {
            FileData::new(bytes, mode, symlink)
        } else {
            FileData::payload(version, blob, &bytes, mode, symlink)
        }
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
            // Plans with diffs keep every content in memory, so this
            // never reads a payload again.
            self.content(path).ok().flatten()
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
