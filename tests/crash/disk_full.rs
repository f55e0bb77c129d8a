//! A real full disk (issue #7): the site lives on a small tmpfs, and the
//! site owner's `pre_apply` hook fills it after sitekeeper checked the
//! free space, so staging meets a real ENOSPC from the kernel. The apply
//! fails in plain words, the site is exactly as before, nothing is left
//! behind, and once space is freed the same apply succeeds. A file system
//! with too few free inodes for the change is refused before anything is
//! written.
//!
//! Mounting needs privilege (root, as in CI); where the platform does not
//! allow it, the test says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Layout, catalog, check, leftovers, run, scale, scenario_with, tree_hash};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, options: &str) -> Result<Self, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Self(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The scenario with its site moved onto a fresh tmpfs at `disk/`, and
/// bound back at `site/`; `extra` (with `{disk}` standing for the tmpfs's
/// path) is added to the site file.
fn on_tmpfs(extra: &str, options: &str) -> Result<(tempfile::TempDir, Mount, Mount), String> {
    let cat = catalog(scale(100));
    let dir = super::fast_tempdir();
    let disk = dir.path().join("disk");
    let extra = extra.replace("{disk}", disk.to_str().unwrap());
    let scenario = scenario_with(cat.path(), Layout::InPlace, &extra);
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", scenario.path().display()))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mount = Mount::tmpfs(&disk, options)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(dir.path().join("site"))
        .arg(disk.join("site"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(dir.path().join("site")).unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    let out = Command::new("mount")
        .arg("--bind")
        .arg(disk.join("site"))
        .arg(dir.path().join("site"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bind = Mount(dir.path().join("site"));
    // The catalog must outlive the runs.
    let _ = cat.keep();
    Ok((dir, mount, bind))
}

fn skip(why: &str) {
    eprintln!("SKIPPED: a real full disk needs a tmpfs mount, which this platform refused: {why}");
}

#[test]
fn a_disk_that_fills_during_the_change_fails_it_cleanly_and_it_succeeds_once_space_is_freed() {
    let fill = "pre_apply: [[\"sh\", \"-c\", \"cat /dev/zero > {disk}/filler 2>/dev/null; true\"]]";
    let (dir, _mount, _bind) = match on_tmpfs(&format!("hooks:\n  {fill}\n"), "size=64m") {
        Ok(m) => m,
        Err(why) => return skip(&why),
    };
    let site = dir.path().join("site");
    let old = tree_hash(&site);
    let out = run(dir.path(), &["apply", "s"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("No space left on device") && stderr.contains("the file system is full"),
        "{stderr}"
    );
    assert!(
        std::fs::metadata(dir.path().join("disk/filler"))
            .unwrap()
            .len()
            > 32 << 20,
        "the hook filled the disk"
    );
    assert_eq!(tree_hash(&site), old, "the site is exactly as before");
    assert!(!site.join(".sitekeeper-stage").exists());
    leftovers(dir.path(), "after ENOSPC");

    // Space freed (and the hook made harmless), the same change goes through.
    std::fs::remove_file(dir.path().join("disk/filler")).unwrap();
    let sites = dir.path().join("fleet/sites/s.yaml");
    let text = std::fs::read_to_string(&sites).unwrap();
    let hook = text.lines().find(|l| l.contains("filler")).unwrap();
    std::fs::write(&sites, text.replace(hook, "  pre_apply: [[\"true\"]]")).unwrap();
    let out = run(dir.path(), &["apply", "s"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = tree_hash(&site);
    assert_ne!(new, old);
    check(dir.path(), &old, &new, "after freeing space");
}

#[test]
fn too_few_free_inodes_for_the_change_is_refused_before_anything_is_written() {
    let (dir, mount, _bind) = match on_tmpfs("", "size=64m,nr_inodes=100000") {
        Ok(m) => m,
        Err(why) => return skip(&why),
    };
    let st = rustix::fs::statvfs(dir.path().join("disk")).unwrap();
    let used = st.f_files - st.f_ffree;
    // Room for a couple of new files, not for the change's.
    mount.remount(&format!("nr_inodes={}", used + 2));
    let site = dir.path().join("site");
    let old = tree_hash(&site);
    let out = run(dir.path(), &["apply", "s"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("free inodes"), "{stderr}");
    assert_eq!(tree_hash(&site), old);
    leftovers(dir.path(), "after the inode refusal");
    mount.remount("nr_inodes=100000");
    let out = run(dir.path(), &["apply", "s"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
