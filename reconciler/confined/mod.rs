//! Confined access to a site's files: every path is resolved by the kernel
//! beneath the site root, with no `..`, no absolute part and no symbolic
//! link anywhere along the way (`openat2` with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`), so no string check can be fooled.
//!
//! Everything that reads (and later writes) a site's files goes through a
//! [`Root`]. It never follows a link, never opens a FIFO, socket or device,
//! and never crosses out of the tree, whatever the tree holds.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::durability;

/// The resolution rules for every path under a root.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// What a path under the root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character or block device.
    Device,
}

impl Kind {
    fn of(ft: FileType) -> Self {
        match ft {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            _ => Kind::Device,
        }
    }

    /// A word for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::Device => "a device node",
        }
    }
}

/// What `lstat` says about a path, as much as sitekeeper uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status-change time, in nanoseconds since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// Hard-link count.
    pub nlink: u64,
}

impl Meta {
    // The widths of `stat` fields differ between platforms; the casts are
    // no-ops on x86_64 but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rustix::fs::Stat) -> Self {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Meta {
            kind: Kind::of(FileType::from_raw_mode(st.st_mode)),
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            ino: st.st_ino,
            dev: st.st_dev,
            nlink: st.st_nlink as u64,
        }
    }
}

/// A site root, opened once; every path below it is confined to it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Splits `rel` into parent and final name, refusing what can never be
/// under a root (before the kernel would): empty, absolute, `..`, NUL.
fn split(rel: &str) -> io::Result<(&str, &str)> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{rel:?}: {why}"),
        ))
    };
    if rel.is_empty() || rel.starts_with('/') {
        return bad("not a relative path");
    }
    if rel.contains('\0') {
        return bad("contains a NUL byte");
    }
    if rel
        .split('/')
        .any(|c| c == ".." || c.is_empty() || c == ".")
    {
        return bad("has an empty, . or .. component");
    }
    Ok(match rel.rfind('/') {
        Some(cut) => (&rel[..cut], &rel[cut + 1..]),
        None => ("", rel),
    })
}

impl Root {
    /// Opens the directory at `path` as a root. The path itself is the
    /// operator's and may pass through links; nothing below it may.
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path the root was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens directory `rel` (`""` is the root) with `flags`, confined.
    fn open_dir(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let path = if rel.is_empty() { "." } else { rel };
        if !rel.is_empty() {
            split(rel)?;
        }
        Ok(rustix::fs::openat2(
            &self.fd,
            path,
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?)
    }

    fn with_parent<T>(
        &self,
        rel: &str,
        f: impl FnOnce(BorrowedFd<'_>, &str) -> io::Result<T>,
    ) -> io::Result<T> {
        let (parent, name) = split(rel)?;
        if parent.is_empty() {
            f(self.fd.as_fd(), name)
        } else {
            let dir = self.open_dir(parent, OFlags::PATH)?;
            f(dir.as_fd(), name)
        }
    }

    /// `lstat` of `rel`: what is there, without following a final link.
    pub fn metadata(&self, rel: &str) -> io::Result<Meta> {
        self.with_parent(rel, |dir, name| {
            Ok(Meta::from_stat(&rustix::fs::statat(
                dir,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
            )?))
        })
    }

    /// The entries of directory `rel` (`""` for the root), unsorted, with
    /// their metadata. Names that are not UTF-8 come back as raw bytes.
    pub fn list(&self, rel: &str) -> io::Result<Vec<(OsString, Meta)>> {
        let fd = self.open_dir(rel, OFlags::RDONLY)?;
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let st = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
            out.push((OsStr::from_bytes(name).to_owned(), Meta::from_stat(&st)));
        }
        Ok(out)
    }

    /// Opens the regular file `rel` for reading. A link, FIFO, socket,
    /// device or directory is refused without blocking: the open is
    /// non-blocking and the opened file is checked with `fstat`.
    pub fn open_file(&self, rel: &str) -> io::Result<(File, Meta)> {
        split(rel)?;
        let fd = rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )?;
        let meta = Meta::from_stat(&rustix::fs::fstat(&fd)?);
        if meta.kind != Kind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{rel} is {}, not a regular file", meta.kind.describe()),
            ));
        }
        // Reads of a regular file never block; clear the flag for plain I/O.
        rustix::fs::fcntl_setfl(&fd, OFlags::RDONLY)?;
        Ok((File::from(fd), meta))
    }

    /// Opens directory `rel` (`""` for the root) for `*at` calls and fsync.
    pub fn dir(&self, rel: &str) -> io::Result<OwnedFd> {
        self.open_dir(rel, OFlags::RDONLY)
    }

    /// Creates directory `rel` and its missing parents, one confined step
    /// at a time, so no link along the way is ever followed.
    pub fn create_dirs(&self, rel: &str) -> io::Result<()> {
        if rel.is_empty() {
            return Ok(());
        }
        split(rel)?;
        let mut done = String::new();
        for part in rel.split('/') {
            let parent = self.dir(&done)?;
            match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    if durability::active() {
                        durability::made_dir(&durability::at(&parent, part));
                    }
                    rustix::fs::fsync(&parent)?;
                    if durability::active() {
                        durability::synced_dir(&durability::at(&parent, ""));
                    }
                }
                Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            done = if done.is_empty() {
                part.to_owned()
            } else {
                format!("{done}/{part}")
            };
            // Refuse an existing link or file in place of the directory.
            self.dir(&done)?;
        }
        Ok(())
    }

    /// Creates the new file `rel` (it must not exist) with `bytes` and
    /// permission bits `mode`, and fsyncs it. A symbolic link is made
    /// instead when `symlink` (the bytes are its target).
    pub fn create(&self, rel: &str, bytes: &[u8], mode: u32, symlink: bool) -> io::Result<()> {
        self.create_file(rel, bytes, mode, symlink, true)
    }

    /// [`Root::create`] without the fsync, for a caller that fsyncs a whole
    /// batch afterwards with [`Root::sync_file`] before anything depends
    /// on it (staging: in parallel, so the disk sees the flushes together).
    pub fn create_unsynced(
        &self,
        rel: &str,
        bytes: &[u8],
        mode: u32,
        symlink: bool,
    ) -> io::Result<()> {
        self.create_file(rel, bytes, mode, symlink, false)
    }

    /// Fsyncs the regular file `rel`.
    pub fn sync_file(&self, rel: &str) -> io::Result<()> {
        let (file, _) = self.open_file(rel)?;
        file.sync_all()?;
        if durability::active() {
            self.with_parent(rel, |dir, name| {
                durability::synced_file(&durability::at(dir, name));
                Ok(())
            })?;
        }
        Ok(())
    }

    fn create_file(
        &self,
        rel: &str,
        bytes: &[u8],
        mode: u32,
        symlink: bool,
        sync: bool,
    ) -> io::Result<()> {
        self.with_parent(rel, |dir, name| {
            let noted = durability::active().then(|| durability::at(dir, name));
            if symlink {
                rustix::fs::symlinkat(bytes, dir, name)?;
                if let Some(p) = &noted {
                    durability::created(p);
                }
                return Ok(());
            }
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            if let Some(p) = &noted {
                durability::created(p);
            }
            let mut file = File::from(fd);
            std::io::Write::write_all(&mut file, bytes)?;
            if let Some(p) = &noted {
                durability::wrote(p, 0);
            }
            // Set the mode explicitly: the process umask must not decide it.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))?;
            if sync {
                file.sync_all()?;
                if let Some(p) = &noted {
                    durability::synced_file(p);
                }
            }
            Ok(())
        })
    }

    /// Copies the regular file `rel` to `to_rel` under `to` (which must not
    /// exist there), with permission bits `mode`, streaming (the kernel's
    /// `copy_file_range` where it can), and fsyncs the copy.
    pub fn copy_file(&self, rel: &str, to: &Root, to_rel: &str, mode: u32) -> io::Result<()> {
        let (mut from, _) = self.open_file(rel)?;
        to.with_parent(to_rel, |dir, name| {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let noted = durability::active().then(|| durability::at(dir, name));
            if let Some(p) = &noted {
                durability::created(p);
            }
            let mut file = File::from(fd);
            std::io::copy(&mut from, &mut file)?;
            if let Some(p) = &noted {
                durability::wrote(p, 0);
            }
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))?;
            file.sync_all()?;
            if let Some(p) = &noted {
                durability::synced_file(p);
            }
            Ok(())
        })
    }

    /// Sets the permission bits of directory `rel` (`""` for the root).
    pub fn set_dir_mode(&self, rel: &str, mode: u32) -> io::Result<()> {
        Ok(rustix::fs::fchmod(
            self.dir(rel)?,
            Mode::from_raw_mode(mode & 0o7777),
        )?)
    }

    /// Renames `from` to `to`, both under the root, replacing `to`.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.with_parent(from, |from_dir, from_name| {
            self.with_parent(to, |to_dir, to_name| {
                let op = || Ok(rustix::fs::renameat(from_dir, from_name, to_dir, to_name)?);
                if durability::active() {
                    let from = durability::at(from_dir, from_name);
                    durability::rename(&from, &durability::at(to_dir, to_name), op)
                } else {
                    op()
                }
            })
        })
    }

    /// Removes the file or link `rel`; absent is fine.
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        self.with_parent(rel, |dir, name| {
            let op = || match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::NOENT) => Ok(false),
                Err(e) => Err(e.into()),
            };
            if durability::active() {
                durability::remove(&durability::at(dir, name), op)
            } else {
                op().map(|_| ())
            }
        })
    }

    /// Removes the directory `rel` and everything in it (for staging
    /// areas): entries are unlinked, never followed.
    pub fn remove_tree(&self, rel: &str) -> io::Result<()> {
        let entries = match self.list(rel) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for (name, meta) in entries {
            let child = format!("{rel}/{}", name.to_string_lossy());
            if meta.kind == Kind::Dir {
                self.remove_tree(&child)?;
            } else {
                self.remove(&child)?;
            }
        }
        self.with_parent(rel, |dir, name| {
            let noted = durability::active()
                .then(|| {
                    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
                    Some((durability::at(dir, name), st.st_mode & 0o7777))
                })
                .flatten();
            match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
                Ok(()) => {
                    if let Some((path, mode)) = noted {
                        durability::removed_dir(&path, mode);
                    }
                    Ok(())
                }
                Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Fsyncs directory `rel` (`""` for the root), so renames in it are durable.
    pub fn sync_dir(&self, rel: &str) -> io::Result<()> {
        let dir = self.dir(rel)?;
        rustix::fs::fsync(&dir)?;
        if durability::active() {
            durability::synced_dir(&durability::at(&dir, ""));
        }
        Ok(())
    }

    /// Free bytes available to this user on the root's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::fstatvfs(&self.fd)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Free inodes available to this user on the root's file system, or
    /// `None` where the file system does not count them.
    pub fn free_inodes(&self) -> io::Result<Option<u64>> {
        let st = rustix::fs::fstatvfs(&self.fd)?;
        Ok((st.f_files > 0).then_some(st.f_favail))
    }

    /// Whether the root's file system gives a change made after a `stat`
    /// a status-change time different from the one that `stat` saw
    /// (Linux's multigrain timestamps: ext4, XFS, Btrfs and tmpfs from
    /// 6.13 on). Then stat data taken right after writing a file vouches
    /// for its content at once; elsewhere a write within the same clock
    /// tick could go unseen, so only files older than the racy window are
    /// trusted.
    pub fn fine_ctime(&self) -> bool {
        const MULTIGRAIN: [i64; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];
        let kernel = rustix::system::uname();
        let release = kernel.release().to_string_lossy();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        // `f_type`'s width differs between platforms; the cast is a no-op
        // on x86_64 but not everywhere.
        #[allow(clippy::unnecessary_cast)]
        let fine = |st: rustix::fs::StatFs| MULTIGRAIN.contains(&(st.f_type as i64));
        version >= (6, 13) && rustix::fs::fstatfs(&self.fd).is_ok_and(fine)
    }

    /// The target of the symbolic link `rel`, without following it.
    pub fn read_link(&self, rel: &str) -> io::Result<OsString> {
        self.with_parent(rel, |dir, name| {
            Ok(OsString::from_vec(
                rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("site/a")).unwrap();
        std::fs::write(dir.path().join("site/a/f.txt"), b"inside").unwrap();
        std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
        std::os::unix::fs::symlink("../secret.txt", dir.path().join("site/out")).unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("site/inner")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("site/etc")).unwrap();
        dir
    }

    #[test]
    fn reads_inside_and_refuses_every_way_out() {
        let dir = tree();
        let root = Root::open(&dir.path().join("site")).unwrap();
        let (mut f, _) = root.open_file("a/f.txt").unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "inside");
        for bad in [
            "../secret.txt",
            "/etc/passwd",
            "out",
            "inner/f.txt",
            "etc/passwd",
            "a/../a/f.txt",
            "a//f.txt",
        ] {
            assert!(root.open_file(bad).is_err(), "{bad} was opened");
        }
        assert_eq!(root.metadata("out").unwrap().kind, Kind::Symlink);
        assert_eq!(root.read_link("out").unwrap(), "../secret.txt");
        assert!(
            root.metadata("inner/f.txt").is_err(),
            "a link along the path must be refused"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tree();
        let fifo = dir.path().join("site/pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let root = Root::open(&dir.path().join("site")).unwrap();
        assert_eq!(root.metadata("pipe").unwrap().kind, Kind::Fifo);
        let err = root.open_file("pipe").unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }
}
