//! What an operator named on the command line (`apply --release V`,
//! `--fix ID`) against the plan the site gets: when the plan does not
//! carry it, the command says why and writes nothing, instead of "nothing
//! to do" or the rest of the plan without what was asked for.

use super::{ApplyError, Options};
use crate::observe::SiteContext;
use crate::plan::render::code_word;
use crate::plan::{ActionKind, SitePlan};

/// The refusal when the plan lacks the release or fix `opts` names; `None`
/// when it carries them, or when the site has them already.
pub(super) fn unmet_request(
    name: &str,
    ctx: &SiteContext<'_>,
    plan: &SitePlan,
    opts: &Options<'_>,
) -> Option<ApplyError> {
    let carries = |kind: ActionKind, id: &str| {
        plan.actions
            .iter()
            .any(|a| a.kind == kind && a.id == id && !a.files.is_empty())
    };
    let installed = ctx.installed.as_ref();
    if let Some(v) = opts.forced {
        let id = v.to_string();
        let has_it = installed.is_some_and(|i| i.version == *v);
        if !carries(ActionKind::Upgrade, &id) && !has_it {
            return Some(refuse(
                name,
                format!("release {id}"),
                release_reason(ctx, plan, v),
            ));
        }
    }
    if let Some(id) = opts.forced_fix {
        let has_it = installed.is_some_and(|i| i.fixes.contains_key(id));
        if !carries(ActionKind::Fix, id) && !has_it {
            return Some(refuse(name, format!("fix {id}"), fix_reason(ctx, plan, id)));
        }
    }
    None
}

fn refuse(site: &str, item: String, reason: String) -> ApplyError {
    ApplyError::NotCarried {
        site: site.to_owned(),
        item,
        reason,
    }
}

/// The plan's own hold for `item`, as `code: reason`.
fn held(plan: &SitePlan, item: &str) -> Option<String> {
    plan.held
        .iter()
        .find(|h| h.item == item)
        .map(|h| format!("{}: {}", code_word(h.code), h.reason))
}

/// Why release `v` is not in the plan: the plan's hold when a gate held
/// it, else what keeps it from being a candidate at all.
fn release_reason(
    ctx: &SiteContext<'_>,
    plan: &SitePlan,
    v: &crate::model::values::Version,
) -> String {
    let site = ctx.site.site.as_str();
    let product = &ctx.catalog.product;
    let Some(release) = ctx.catalog.releases.iter().find(|r| r.version == *v) else {
        return format!(
            "{product}, the product {site} runs, has no release {v} (hint: sitekeeper check {site} lists its releases)"
        );
    };
    if let Some(installed) = &ctx.installed
        && installed.version > *v
    {
        return format!(
            "{site} runs {}, which is newer; sitekeeper never upgrades to an older release (hint: sitekeeper rollback {site} --to POINT returns to an earlier point)",
            installed.version
        );
    }
    if let Some(why) = held(plan, &format!("release {v}")) {
        return format!("{why} (hint: sitekeeper plan {site} shows every hold)");
    }
    let channel = ctx.effective.channel.value.as_str();
    if !release.channels.iter().any(|c| c == channel) {
        return format!(
            "it is not on the channel {channel} that {site} follows (it is on {})",
            release.channels.join(", ")
        );
    }
    if let Some(pin) = &ctx.effective.version.value {
        return format!("it is outside {site}'s version pin {pin}");
    }
    format!("the plan does not reach it (hint: sitekeeper plan {site} says what it holds)")
}

/// Why fix `id` is not in the plan.
fn fix_reason(ctx: &SiteContext<'_>, plan: &SitePlan, id: &str) -> String {
    let site = ctx.site.site.as_str();
    if ctx.fixes_by_id(id).is_none() {
        return format!(
            "{}, the product {site} runs, has no fix {id} (hint: sitekeeper plan {site} lists the fixes it holds)",
            ctx.catalog.product
        );
    }
    if let Some(why) = held(plan, &format!("fix {id}")) {
        return format!("{why} (hint: sitekeeper plan {site} shows every hold)");
    }
    format!(
        "it does not apply to {site}'s release or files (hint: sitekeeper plan {site} says what it carries)"
    )
}
