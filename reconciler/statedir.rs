//! The state dir's shared entries (SPEC §5): what lives beside the sites'
//! own directories, `<state_dir>/locks/` (the host-wide `serialize:`
//! locks), `cache/git` and `cache/reports` (fetched repositories),
//! `trust/` (fleet trust records) and `outbox/` (notifications not yet
//! delivered). [`StateDir`] names each; nothing else
//! spells those paths.
//!
//! It sits at the bottom of the crate, with [`crate::atomic`], rather than
//! in `store`: `load` keeps the fleet's trust record and the git cache
//! under the state dir, and `load` is below `store`. `store` re-exports it
//! (`store::StateDir`) and names each site's own files itself
//! (`store::SiteState`). It only names paths; it never reads or writes.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// A state dir, as resolved by `load::state_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state dir at `path` (nothing is created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of `site`'s own state (`store::SiteState` names what
    /// is in it).
    pub fn site(&self, site: &str) -> PathBuf {
        self.path.join(site)
    }

    /// Where the host-wide `serialize:` locks live.
    pub fn locks(&self) -> PathBuf {
        self.path.join("locks")
    }

    /// The host-wide lock `name` (a release's `serialize:`), in [`Self::locks`].
    pub fn serialize_lock(&self, name: &str) -> PathBuf {
        self.locks().join(format!("{name}.lock"))
    }

    /// Where notifications wait until their target accepts them (SPEC §5,
    /// §9): one file per event and target.
    pub fn outbox(&self) -> PathBuf {
        self.path.join("outbox")
    }

    /// Where fleet and catalog repositories fetched from URLs are cached.
    pub fn git_cache(&self) -> PathBuf {
        self.path.join("cache/git")
    }

    /// Where the clones of status report repositories are kept.
    pub fn report_cache(&self) -> PathBuf {
        self.path.join("cache/reports")
    }

    /// The trust record of the fleet fetched from `url` (SPEC §7): named by
    /// a hash of the URL, so any URL makes a plain file name.
    pub fn fleet_trust_record(&self, url: &str) -> PathBuf {
        let name = hex::encode(&Sha256::digest(url.as_bytes())[..12]);
        self.path.join("trust").join(format!("fleet-{name}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shared entry is a name no site may take.
    #[test]
    fn shared_entries_are_reserved_site_names() {
        let dir = StateDir::new("/s");
        for entry in [
            dir.locks(),
            dir.outbox(),
            dir.git_cache(),
            dir.report_cache(),
            dir.fleet_trust_record("u"),
        ] {
            let first = entry
                .strip_prefix("/s")
                .ok()
                .and_then(|p| p.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            assert!(
                crate::model::values::RESERVED_SITE_NAMES.contains(&first.as_str()),
                "{first}"
            );
        }
    }
}
