//! What runs around a change and judges it (SPEC §6.2, §6.4): the pre and
//! post hooks (the owner's, and the release's where the policy allows
//! them), the health check before and after, and the verdict they give.
//! Runs the site's commands; writes nothing but `hooks.log`.

use std::path::PathBuf;
use std::time::Duration;

use super::{ApplyError, failed, record};
use crate::apply::health;
use crate::apply::hooks::{HookEnv, run as run_hook};
use crate::model::fleet::Health;
use crate::model::values::Command;
use crate::plan::SitePlan;
use crate::store::{By, LedgerKind, LedgerResult, Record, SiteState};

/// The commands around one change, and what each is told.
pub(super) struct Hooks<'a> {
    /// Before the files change: the owner's, then the release's.
    pub(super) pre: Vec<&'a Command>,
    /// After: the release's, then the owner's.
    pub(super) post: Vec<&'a Command>,
    /// Each hook's time limit.
    pub(super) timeout: Duration,
    /// The site's health check, if it has one.
    pub(super) health: Option<&'a Health>,
    /// The site, for `SITEKEEPER_SITE`.
    pub(super) site: &'a str,
    /// The root the commands run in, as it was before the change.
    pub(super) root: PathBuf,
    /// `SITEKEEPER_VERSION_FROM` and `_TO`.
    pub(super) from: String,
    pub(super) to: String,
    /// `hooks.log`.
    pub(super) log: PathBuf,
    /// The site's state, where `visual` checks keep their screenshots.
    pub(super) state: SiteState,
}

impl Hooks<'_> {
    /// Whether the change runs any hook (a data snapshot is taken first
    /// where the site has `data:`, SPEC §6.6).
    pub(super) fn runs_any(&self) -> bool {
        !self.pre.is_empty() || !self.post.is_empty()
    }

    fn env(&self) -> HookEnv<'_> {
        HookEnv {
            site: self.site,
            root: &self.root,
            from: &self.from,
            to: &self.to,
            log: &self.log,
            data_file: None,
        }
    }

    /// The check before the change: a check that already fails is
    /// reported but cannot blame the change, so a broken site still
    /// receives the fix that may repair it. `None`: the site has no check.
    pub(super) fn health_before(&self) -> Option<health::Before> {
        self.health
            .map(|check| health::before(check, &self.env(), &self.state))
    }

    /// The pre hooks, in order; the first that fails cancels the change
    /// before anything is written.
    pub(super) fn run_pre(&self) -> Result<(), ApplyError> {
        let env = self.env();
        for cmd in &self.pre {
            run_hook(&cmd.0, &env, self.timeout).map_err(|e| {
                failed(
                    self.site,
                    format!("pre_apply hook: {e}; nothing was changed"),
                )
            })?;
        }
        Ok(())
    }

    /// After the change: the post hooks, then the health check. Only a
    /// hook, or a check that passed `before`, can blame the change.
    /// `None`: nothing judged it (no hooks failed and the site has no check).
    pub(super) fn judge_after(&self, before: Option<health::Before>) -> Option<Verdict> {
        let env = self.env();
        let mut failure = None;
        for cmd in &self.post {
            if let Err(e) = run_hook(&cmd.0, &env, self.timeout) {
                failure = Some(format!("post_apply hook: {e}"));
                break;
            }
        }
        match (failure, self.health, before) {
            (Some(reason), _, _) => Some(Verdict::Blamed(reason)),
            (None, Some(check), Some(before)) => Some(Verdict::of(&health::after(
                check,
                &env,
                &self.state,
                before,
            ))),
            _ => None,
        }
    }
}

/// What the check after a change found.
pub(super) enum Verdict {
    /// It passed.
    Passed,
    /// A hook, or a check that passed before, failed: the change is undone.
    Blamed(String),
    /// The check failed, but it failed before the change too.
    NotBlamed(String),
}

impl Verdict {
    /// The verdict of every item of a site's health judged before and
    /// after: the change is blamed for the items that passed before and
    /// fail after, and only for those (SPEC §6.2).
    fn of(judged: &[health::Judged]) -> Verdict {
        let blamed: Vec<String> = judged
            .iter()
            .filter(|j| j.blames())
            .filter_map(|j| j.after.as_ref().err().map(ToString::to_string))
            .collect();
        if !blamed.is_empty() {
            return Verdict::Blamed(format!("health check: {}", blamed.join("; ")));
        }
        let failing: Vec<String> = judged
            .iter()
            .filter_map(|j| match (&j.before, &j.after) {
                (Err(was), Err(now)) => {
                    Some(format!("{now}; it failed before the change too ({was})"))
                }
                _ => None,
            })
            .collect();
        if failing.is_empty() {
            Verdict::Passed
        } else {
            Verdict::NotBlamed(format!(
                "health check: {}, so the change is kept",
                failing.join("; ")
            ))
        }
    }

    /// The `health` ledger record of `point` (SPEC §5).
    pub(super) fn record(
        &self,
        point: u64,
        plan: Option<&SitePlan>,
        by: &By,
        now: jiff::Timestamp,
    ) -> Record {
        let (word, result, error) = match self {
            Verdict::Passed => ("passed", LedgerResult::Ok, None),
            Verdict::Blamed(e) => ("failed", LedgerResult::RolledBack, Some(e.clone())),
            Verdict::NotBlamed(e) => ("failed", LedgerResult::Failed, Some(e.clone())),
        };
        let mut r = record(
            LedgerKind::Health,
            Some(word.to_owned()),
            plan,
            Vec::new(),
            by,
            now,
        );
        r.point = Some(point);
        r.result = result;
        r.error = error;
        r
    }
}
