//! Preflight (SPEC §6.7): before anything is written, can the change be
//! carried out and judged? Every command it may run names a program that
//! exists (hooks, health, `data` and `migrate`, the browser of a `visual`
//! check), and the site's root can
//! be written. Gathered with the site's state, before planning, so `plan`, `status` and `apply` hold the same
//! plan with `preflight`; free space, which depends on the plan, is
//! checked by `apply` once the plan is known.
//!
//! A health URL that does not answer is not a preflight failure: the check
//! then fails before the change, so by SPEC §6.2 it blames nothing.

use std::path::Path;

use rustix::fs::Access;

use crate::model::words::Layout;
use crate::model::{Release, Site};
use crate::plan::{PreflightFailure, Space};
use crate::policy::Effective;

/// Every preflight check that fails for `site` now.
pub fn gather(
    site: &Site,
    effective: &Effective,
    releases: &[Release],
    root: &Path,
) -> Vec<PreflightFailure> {
    let mut failures = Vec::new();
    let checks = site.health.as_ref().map_or(&[][..], |h| &h.checks[..]);
    if let Some(n) = checks.iter().position(|c| c.visual.is_some())
        && let Err(reason) = browser()
    {
        failures.push(PreflightFailure {
            check: format!("health.checks[{n}].visual"),
            reason,
            release: None,
        });
    }
    let mut command = |check: String, argv: &[String], release: Option<&Release>| {
        if let Some(reason) = missing_program(argv, root) {
            failures.push(PreflightFailure {
                check,
                reason,
                release: release.map(|r| r.version.clone()),
            });
        }
    };
    if let Some(cmd) = site.health.as_ref().and_then(|h| h.command.as_ref()) {
        command("health.command".into(), &cmd.0, None);
    }
    for (n, cmd) in site.hooks.pre_apply.iter().enumerate() {
        command(format!("hooks.pre_apply[{n}]"), &cmd.0, None);
    }
    for (n, cmd) in site.hooks.post_apply.iter().enumerate() {
        command(format!("hooks.post_apply[{n}]"), &cmd.0, None);
    }
    if let Some(data) = &site.data {
        if let Some(cmd) = &data.snapshot {
            command("data.snapshot".into(), &cmd.0, None);
        }
        if let Some(cmd) = &data.restore {
            command("data.restore".into(), &cmd.0, None);
        }
    }
    // Release hooks run only where the policy allows them; they matter
    // only to a change that upgrades to their release (the planner picks).
    if effective.allow_release_hooks.value {
        for r in releases {
            for (n, cmd) in r.hooks.pre_apply.iter().enumerate() {
                let check = format!("release {} hooks.pre_apply[{n}]", r.version);
                command(check, &cmd.0, Some(r));
            }
            for (n, cmd) in r.hooks.post_apply.iter().enumerate() {
                let check = format!("release {} hooks.post_apply[{n}]", r.version);
                command(check, &cmd.0, Some(r));
            }
            // A migration runs in the new release's files, so a program it
            // names by path (`./bin/migrate`) may arrive with the change:
            // only programs found on PATH can be checked beforehand.
            for (n, cmd) in r.migrate.iter().enumerate() {
                if cmd.0.first().is_some_and(|p| !p.contains('/')) {
                    let check = format!("release {} migrate[{n}]", r.version);
                    command(check, &cmd.0, Some(r));
                }
            }
        }
    }
    if let Some(reason) = unwritable(root, effective.layout.value) {
        failures.push(PreflightFailure {
            check: "root".into(),
            reason,
            release: None,
        });
    }
    failures
}

/// The environment variable that names the browser `visual` checks run.
pub const BROWSER_VAR: &str = "SITEKEEPER_CHROMIUM";

/// The headless browser that renders `visual` checks: the program
/// `SITEKEEPER_CHROMIUM` names (a path, or a name on `PATH`), else
/// `chromium` on `PATH`. `Err` says why there is none.
pub fn browser() -> Result<std::path::PathBuf, String> {
    let named = std::env::var_os(BROWSER_VAR).filter(|v| !v.is_empty());
    let program = named
        .as_deref()
        .map_or_else(|| "chromium".into(), |v| v.to_string_lossy().into_owned());
    let executable = |p: &Path| p.is_file() && rustix::fs::access(p, Access::EXEC_OK).is_ok();
    let found = if program.contains('/') {
        let path = std::path::PathBuf::from(&program);
        executable(&path).then_some(path)
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(&program))
            .find(|p| executable(p))
    };
    found.ok_or_else(|| match named {
        Some(_) => format!(
            "the browser {BROWSER_VAR} names, `{program}`, does not exist or is not executable (hint: point it at a Chromium or Chrome binary)"
        ),
        None => format!(
            "a `visual` check needs headless Chromium, and `chromium` is not installed here (not found on PATH) (hint: install Debian's `chromium` package, or set {BROWSER_VAR} to a Chromium or Chrome binary)"
        ),
    })
}

/// Free space on the site's and the state dir's file systems, for the
/// planner's `space` check; `None` when either cannot be read (a state dir
/// not made yet: the site is not adopted, and not checked).
pub fn space(root: &crate::confined::Root, state: &crate::store::SiteState) -> Option<Space> {
    let st = rustix::fs::statvfs(state.dir()).ok()?;
    Some(Space {
        site_bytes: root.free_bytes().ok()?,
        site_inodes: root.free_inodes().ok()?,
        state_bytes: st.f_bavail.saturating_mul(st.f_frsize),
    })
}

/// Why `argv` cannot run, if it cannot: its program is not found on
/// `PATH` (or, when it names a path, relative to the site root where
/// commands run), or is not executable.
fn missing_program(argv: &[String], root: &Path) -> Option<String> {
    let Some(program) = argv.first() else {
        return Some("the command is empty".into());
    };
    let executable = |p: &Path| p.is_file() && rustix::fs::access(p, Access::EXEC_OK).is_ok();
    if program.contains('/') {
        let path = root.join(program);
        return (!executable(&path)).then(|| {
            format!(
                "`{program}` does not exist or is not executable (hint: install it, or fix the command in the site file)"
            )
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|dir| executable(&dir.join(program)));
    (!found).then(|| {
        format!(
            "`{program}` is not installed here (not found on PATH) (hint: install it, or change the command in the site file)"
        )
    })
}

/// Why the site's files cannot be changed, if they cannot: the root (for
/// the `symlink` layout, the directory holding the link, where release
/// directories are built) is not writable or on a read-only file system.
fn unwritable(root: &Path, layout: Layout) -> Option<String> {
    let dir = match layout {
        Layout::InPlace => root.to_path_buf(),
        Layout::Symlink => root.parent().unwrap_or(root).to_path_buf(),
    };
    match rustix::fs::access(&dir, Access::WRITE_OK) {
        Ok(()) => None,
        Err(e) => Some(format!(
            "{} cannot be written: {} (hint: run sitekeeper as the user that owns the site, on a file system mounted read-write)",
            dir.display(),
            crate::store::plain(&e.into())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(missing_program(&["sh".into()], root), None);
        assert!(missing_program(&["no-such-tool-here".into()], root).is_some());
        assert!(missing_program(&["./bin/tool".into()], root).is_some());
        std::fs::create_dir(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/tool"), "#!/bin/sh\n").unwrap();
        assert!(
            missing_program(&["./bin/tool".into()], root).is_some(),
            "not executable"
        );
        let mut perms = std::fs::metadata(root.join("bin/tool"))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(root.join("bin/tool"), perms).unwrap();
        assert_eq!(missing_program(&["./bin/tool".into()], root), None);
        assert!(missing_program(&[], root).is_some());
    }
}
