//! The directory backend of [`Source`]: a plain directory, read through
//! [`crate::confined`] so that no symbolic link is ever followed.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Inner, Source, SourceError, TreeFile, join};
use crate::confined::{Kind, Root};
use crate::model::hash::BlobId;

impl Source {
    /// A plain directory. `label` prefixes paths in messages (e.g. `../catalog/`).
    pub fn dir(path: &Path, label: impl Into<String>) -> Result<Self, SourceError> {
        let label = label.into();
        let shown = match label.trim_end_matches('/') {
            "" => path.display().to_string(),
            named => named.to_owned(),
        };
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => SourceError::Missing {
                path: shown.clone(),
            },
            _ => SourceError::Io {
                path: shown.clone(),
                source,
            },
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotAFile {
                path: shown,
                what: "a file, not a directory",
            });
        }
        Ok(Self {
            inner: Inner::Dir(path.to_owned()),
            label,
            commit: None,
        })
    }

    /// [`Source::tree`] of a directory: walked through [`Root`], every
    /// file read to find its blob id.
    pub(super) fn dir_tree(
        &self,
        root: &Path,
        rel: &str,
    ) -> Result<BTreeMap<String, TreeFile>, SourceError> {
        let io = |path: &str| {
            let path = self.display(path);
            move |source| SourceError::Io { path, source }
        };
        let root = Root::open(root).map_err(io(rel))?;
        let mut out = BTreeMap::new();
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            let here = if dir.is_empty() {
                rel.to_owned()
            } else {
                join(rel, &dir)
            };
            for (name, meta) in root.list(&here).map_err(io(&here))? {
                let name = name.into_string().map_err(|n| SourceError::NotAFile {
                    path: self.display(&join(&here, &n.to_string_lossy())),
                    what: "named in bytes that are not UTF-8",
                })?;
                let path = join(&dir, &name);
                if meta.kind == Kind::Dir {
                    dirs.push(path);
                } else {
                    let file = self.dir_file(&root, &join(rel, &path), meta.kind)?;
                    out.insert(path, file);
                }
            }
        }
        Ok(out)
    }

    /// The link or regular file `at` (relative to the source) of a
    /// directory tree, read; anything else is refused.
    pub(super) fn dir_file(
        &self,
        root: &Root,
        at: &str,
        kind: Kind,
    ) -> Result<TreeFile, SourceError> {
        let io = |source| SourceError::Io {
            path: self.display(at),
            source,
        };
        match kind {
            Kind::Symlink => {
                let bytes = root.read_link(at).map_err(io)?.into_encoded_bytes();
                Ok(TreeFile {
                    mode: 0o777,
                    symlink: true,
                    blob: BlobId::of(&bytes),
                    content: Some(bytes),
                })
            }
            Kind::File => {
                let (mut file, meta) = root.open_file(at).map_err(io)?;
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io)?;
                Ok(TreeFile {
                    mode: meta.mode,
                    symlink: false,
                    blob: BlobId::of(&bytes),
                    content: Some(bytes),
                })
            }
            _ => Err(SourceError::NotAFile {
                path: self.display(at),
                what: "a special file, not a regular file",
            }),
        }
    }
}
