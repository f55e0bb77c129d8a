//! `GET /sites/NAME`: one site's page, gathered on a blocking thread when
//! asked for (one site, so computing it is fine), with its work bounded:
//! diffs are capped in bytes, the ledger and `hooks.log` show their tails,
//! and release directories are measured by a walk that stops after a
//! fixed number of entries. It reads state and never writes any (but the
//! stat cache, as every read of a site does).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::live::Phase;
use super::pages::Viewer;
use crate::model::words::Layout;
use crate::observe::SiteContext;
use crate::observe::history::Entry;
use crate::plan::render::{FileDiff, action_title, unified_diff};
use crate::plan::{FileOp, Held, PreflightFailure};
use crate::store::{FailureMarker, Quarantine, Record, SiteState};
use crate::watch::controller::{Shared, SiteView};

/// The most diff text one page shows; later files get their summary line.
const DIFF_BUDGET: usize = 1 << 20;
/// The longest single diff shown.
const DIFF_MAX: usize = 256 * 1024;
/// Ledger records shown, newest first.
const LEDGER_TAIL: usize = 30;
/// Bytes of `hooks.log` shown, from its end.
const HOOKS_TAIL: u64 = 8 * 1024;
/// Entries a page walks to size release directories, in all.
const WALK_BUDGET: u64 = 200_000;

/// One file of an action, as the page shows it.
#[derive(Debug, Clone)]
pub struct FileView {
    /// Its path.
    pub path: String,
    /// `add`, `modify` or `delete`.
    pub op: &'static str,
    /// Its unified diff, when shown.
    pub diff: Option<String>,
    /// Else its summary line.
    pub summary: Option<String>,
}

/// One action of the plan.
#[derive(Debug, Clone)]
pub struct ActionView {
    /// As the Markdown plan titles it.
    pub title: String,
    /// Why.
    pub reason: String,
    /// Its files.
    pub files: Vec<FileView>,
}

/// The plan as the page shows it.
#[derive(Debug, Clone)]
pub struct PlanView {
    /// Versions before and after.
    pub from: Option<String>,
    /// After.
    pub to: Option<String>,
    /// The digest an approval names.
    pub digest: String,
    /// What it does.
    pub actions: Vec<ActionView>,
    /// What it holds back, and why.
    pub held: Vec<Held>,
    /// Drifted files.
    pub drift: Vec<String>,
    /// Notes for people.
    pub notes: Vec<String>,
}

/// A release directory of a `symlink` site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDir {
    /// Its name.
    pub name: String,
    /// Bytes of its regular files; `None` when the walk's budget ran out.
    pub bytes: Option<u64>,
    /// Whether the root links to it now.
    pub current: bool,
}

/// Free space on one file system.
#[derive(Debug, Clone)]
pub struct Space {
    /// What it holds ("the site's root").
    pub what: &'static str,
    /// The path asked about.
    pub path: PathBuf,
    /// Bytes free to this user, and the file system's size.
    pub free: Option<(u64, u64)>,
}

/// Everything the site page shows.
#[derive(Debug, Clone)]
pub struct SiteData {
    /// The site.
    pub name: String,
    /// Its layout.
    pub layout: Layout,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// The daemon's view.
    pub view: Option<SiteView>,
    /// Its phase now.
    pub phase: Phase,
    /// Whether the daemon works on it now.
    pub busy: bool,
    /// The plan, or why it could not be made.
    pub plan: Result<PlanView, String>,
    /// Its quarantine, or why it cannot be read.
    pub quarantine: Result<Quarantine, String>,
    /// Preflight checks that fail now.
    pub preflight: Vec<PreflightFailure>,
    /// Its failure marker.
    pub failure: Option<FailureMarker>,
    /// Its points, newest first, or why they cannot be read.
    pub history: Result<Vec<Entry>, String>,
    /// The ledger's last records, newest first.
    pub ledger: Vec<Record>,
    /// The ledger's length.
    pub ledger_len: usize,
    /// The end of `hooks.log`.
    pub hooks: Option<String>,
    /// Release directories (`symlink` layout).
    pub releases: Option<Vec<ReleaseDir>>,
    /// Free space on the root's and the state dir's file systems.
    pub space: Vec<Space>,
}

fn op_word(op: FileOp) -> &'static str {
    match op {
        FileOp::Add => "add",
        FileOp::Modify => "modify",
        FileOp::Delete => "delete",
    }
}

/// The plan with its diffs, within [`DIFF_BUDGET`].
fn plan_view(plan: &crate::plan::SitePlan) -> PlanView {
    let mut budget = DIFF_BUDGET;
    let actions = plan
        .actions
        .iter()
        .map(|a| ActionView {
            title: action_title(a),
            reason: a.reason.clone(),
            files: a
                .files
                .iter()
                .map(|f| {
                    let (diff, summary) = match unified_diff(f) {
                        FileDiff::Unified(d) if d.len() <= DIFF_MAX && d.len() <= budget => {
                            budget -= d.len();
                            (Some(d), None)
                        }
                        FileDiff::Unified(d) => (
                            None,
                            Some(format!(
                                "{}: a diff of {} bytes, more than this page shows (`sitekeeper plan --format markdown` has it)",
                                f.path,
                                d.len()
                            )),
                        ),
                        FileDiff::Summary(s) => (None, Some(s.trim_end().to_owned())),
                    };
                    FileView {
                        path: f.path.clone(),
                        op: op_word(f.op),
                        diff,
                        summary,
                    }
                })
                .collect(),
        })
        .collect();
    PlanView {
        from: plan.from_version.clone(),
        to: plan.to_version.clone(),
        digest: plan.plan_digest.clone(),
        actions,
        held: plan.held.clone(),
        drift: plan.drift.clone(),
        notes: plan.notes.clone(),
    }
}

/// The last `max` bytes of `path`, from a line start; `None` if absent.
fn tail(path: &Path, max: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    f.take(max).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some(if start > 0 {
        text.split_once('\n')
            .map_or(text.clone(), |(_, rest)| rest.to_owned())
    } else {
        text
    })
}

/// Bytes of the regular files under `dir` (links not followed), or
/// `None` once `budget` entries have been walked.
fn tree_bytes(dir: &Path, budget: &mut u64) -> Option<u64> {
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            *budget = budget.checked_sub(1)?;
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Some(total)
}

/// The release directories beside a `symlink` site's current one: those
/// sitekeeper built (`<site>@…`) and the one the link names.
fn release_dirs(link: &Path, site: &str) -> Option<Vec<ReleaseDir>> {
    let target = std::fs::read_link(link).ok()?;
    let target = if target.is_absolute() {
        target
    } else {
        link.parent()?.join(target)
    };
    let base = target.parent()?;
    let current = target.file_name()?.to_string_lossy().into_owned();
    let prefix = format!("{site}@");
    let mut names: Vec<String> = std::fs::read_dir(base)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) || *n == current)
        .collect();
    names.sort();
    let mut budget = WALK_BUDGET;
    Some(
        names
            .into_iter()
            .map(|name| ReleaseDir {
                bytes: tree_bytes(&base.join(&name), &mut budget),
                current: name == current,
                name,
            })
            .collect(),
    )
}

fn space(what: &'static str, path: PathBuf) -> Space {
    let free = rustix::fs::statvfs(&path).ok().map(|st| {
        (
            st.f_bavail.saturating_mul(st.f_frsize),
            st.f_blocks.saturating_mul(st.f_frsize),
        )
    });
    Space { what, path, free }
}

/// Gathers the page of `name`; `None` when the daemon serves no such site.
pub fn gather(shared: &Shared, name: &str) -> Option<SiteData> {
    let fleet = shared.fleet();
    let site = fleet.site(name)?;
    let state = SiteState::new(&shared.state_dir, name);
    let layout = crate::policy::resolve(&fleet, site).map_or(Layout::InPlace, |e| e.layout.value);
    let root = fleet.site_root(site);
    let (plan, quarantine, preflight, failure) =
        match SiteContext::gather(&fleet, site, &shared.state_dir, None) {
            Ok(ctx) => {
                let plan = ctx.plan(shared.now(), None);
                let preflight = plan.preflight_failures();
                (
                    Ok(plan_view(&plan)),
                    Ok(ctx.quarantine.clone()),
                    preflight,
                    ctx.failure.clone(),
                )
            }
            Err(e) => (
                Err(e.to_string()),
                Quarantine::read(&state).map_err(|e| e.to_string()),
                Vec::new(),
                FailureMarker::read(&state).ok().flatten(),
            ),
        };
    let (history, ledger) = match crate::observe::history::read(&state) {
        Ok((h, l)) => (Ok(h), l),
        Err(e) => (Err(e.to_string()), Vec::new()),
    };
    let ledger_len = ledger.len();
    let view = shared
        .views
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        .cloned();
    let mut spaces = Vec::new();
    if let Some(root) = &root {
        spaces.push(space("the site's root", root.clone()));
    }
    spaces.push(space("the state directory", shared.state_dir.clone()));
    Some(SiteData {
        name: name.to_owned(),
        layout,
        labels: site
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        view,
        phase: shared.ui.live.phase(&shared.state_dir, name),
        busy: shared.ui.live.is_busy(name),
        plan,
        quarantine,
        preflight,
        failure,
        history,
        ledger: ledger.into_iter().rev().take(LEDGER_TAIL).collect(),
        ledger_len,
        hooks: tail(&state.hooks_log(), HOOKS_TAIL),
        releases: match (&root, layout) {
            (Some(root), Layout::Symlink) => release_dirs(root, name),
            _ => None,
        },
        space: spaces,
    })
}

/// `GET /sites/NAME`.
pub async fn page(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let session = shared.ui.auth.session(super::cookie_header(&headers));
    let flash = session
        .as_ref()
        .and_then(|s| shared.ui.auth.take_flash(&s.id));
    let viewer = Viewer {
        enabled: shared.ui.auth.enabled(),
        csrf: session.map(|s| s.csrf),
    };
    let s = Arc::clone(&shared);
    let wanted = name.clone();
    match tokio::task::spawn_blocking(move || gather(&s, &wanted)).await {
        Ok(Some(data)) => super::html(
            StatusCode::OK,
            super::site_page::render(&data, &viewer, flash.as_deref()),
        ),
        Ok(None) => super::html(
            StatusCode::NOT_FOUND,
            super::pages::message(
                "No such site",
                &format!("This daemon serves no site named {name:?}."),
                None,
            ),
        ),
        Err(e) => super::html(
            StatusCode::INTERNAL_SERVER_ERROR,
            super::pages::message("The site could not be read", &e.to_string(), None),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_start_at_a_line_and_walks_stop_at_their_budget() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.log");
        std::fs::write(&log, "first line\nsecond line\nthird\n").unwrap();
        assert_eq!(
            tail(&log, 1000).unwrap(),
            "first line\nsecond line\nthird\n"
        );
        assert_eq!(tail(&log, 10).unwrap(), "third\n");
        assert_eq!(tail(&dir.path().join("none"), 10), None);
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("f{i}")), "12345").unwrap();
        }
        let mut budget = 100;
        assert_eq!(tree_bytes(dir.path(), &mut budget), Some(25 + 29));
        let mut budget = 3;
        assert_eq!(tree_bytes(dir.path(), &mut budget), None);
    }

    #[test]
    fn release_directories_of_a_symlink_site_are_listed_with_their_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let releases = dir.path().join("releases");
        for (name, bytes) in [
            ("initial", 10),
            ("shop@1.0.1@t1", 20),
            ("shop@1.0.2@t2", 30),
            ("other@1.0.0@t", 5),
        ] {
            std::fs::create_dir_all(releases.join(name).join("lib")).unwrap();
            std::fs::write(releases.join(name).join("lib/f"), vec![b'x'; bytes]).unwrap();
        }
        let link = dir.path().join("shop");
        std::os::unix::fs::symlink("releases/shop@1.0.2@t2", &link).unwrap();
        let dirs = release_dirs(&link, "shop").unwrap();
        let seen: Vec<(&str, Option<u64>, bool)> = dirs
            .iter()
            .map(|d| (d.name.as_str(), d.bytes, d.current))
            .collect();
        assert_eq!(
            seen,
            [
                ("shop@1.0.1@t1", Some(20), false),
                ("shop@1.0.2@t2", Some(30), true)
            ],
            "another site's and the operator's directories are not this site's"
        );
        assert_eq!(
            release_dirs(&dir.path().join("releases"), "shop"),
            None,
            "not a link"
        );
    }
}
