//! The markup of `GET /sites/NAME` (maud, every value escaped): the
//! site's state, its actions when an operator is signed in, the failure
//! marker, preflight, quarantine, the plan with its diffs and held items,
//! the history table, release directories, free space and the tails of
//! the ledger and `hooks.log`. What is shown is gathered by `site`.

use maud::{Markup, html};

use super::fleet::Standing;
use super::pages::{Viewer, layout, truncate};
use super::site::{PlanView, SiteData};
use crate::observe::history::Entry;

/// `1.5 GiB`, `320 KiB`, `12 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The snake_case word serde writes for an enum value.
fn word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A POST form with the CSRF token and one button.
fn action(viewer: &Viewer, to: &str, fields: &[(&str, String)], button: &str) -> Markup {
    html! {
        @if let Some(csrf) = &viewer.csrf {
            form.act method="post" action=(to) {
                input type="hidden" name="csrf" value=(csrf);
                @for (k, v) in fields { input type="hidden" name=(k) value=(v); }
                button type="submit" { (button) }
            }
        }
    }
}

fn plan(p: &PlanView) -> Markup {
    html! {
        p {
            "From " strong { (p.from.as_deref().unwrap_or("nothing")) }
            " to " strong { (p.to.as_deref().unwrap_or("the same")) }
            ". Plan digest " code { (p.digest) } "."
        }
        @for n in &p.notes { p.note { (n) } }
        @if p.actions.is_empty() {
            p { "Nothing to do: the site is what git asks for." }
        }
        @for a in &p.actions {
            section.action {
                h3 { (a.title) " (" (a.files.len()) " files)" }
                p { "Why: " (a.reason) }
                @for f in &a.files {
                    @if let Some(d) = &f.diff {
                        details {
                            summary { code { (f.path) } " (" (f.op) ")" }
                            pre.diff { code { (d) } }
                        }
                    } @else {
                        p.file { code { (f.path) } " (" (f.op) "): " (f.summary.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        @if !p.drift.is_empty() {
            h3 { "Drifted files" }
            ul { @for d in &p.drift { li { code { (d) } } } }
        }
        h3 { "Held items" }
        @if p.held.is_empty() {
            p { "None." }
        } @else {
            table {
                thead { tr { th scope="col" { "Item" } th scope="col" { "Why (code)" } th scope="col" { "Reason" } } }
                tbody { @for h in &p.held { tr { td { (h.item) } td { code { (word(&h.code)) } } td { (h.reason) } } } }
            }
        }
    }
}

fn history_row(d: &SiteData, e: &Entry, latest: u64, viewer: &Viewer) -> Markup {
    let rolled_back = e.result == "rolled_back";
    html! {
        tr id={ "point-" (e.point) } class=[rolled_back.then_some("undone")] {
            th scope="row" { (e.point) }
            td {
                (word(&e.kind))
                @if let Some(u) = &e.rollback {
                    br;
                    strong { @if u.automatic { "automatic rollback" } @else { "rollback" } }
                    @if let Some(to) = u.to { " to " a href={ "#point-" (to) } { "point " (to) } }
                    @if let Some(undid) = u.undid { ", undoing " a href={ "#point-" (undid) } { "point " (undid) } }
                    @if let Some(r) = &u.reason { br; span.reason { "Why: " (r) } }
                }
            }
            td { (e.version) }
            td { @if e.fixes.is_empty() { "—" } @else { (e.fixes.join(", ")) } }
            td {
                (e.health.as_str())
                @if let Some(r) = &e.health_reason { br; span.reason { (truncate(r, 400)) } }
            }
            td { @if e.data { "yes" } @else { "no" } }
            td { time datetime=(e.at) { (e.when) } }
            td { @if let Some(b) = &e.by { (b.user) "@" (b.host) " via " (b.via) } @else { "—" } }
            td { @if rolled_back { strong { "rolled back" } } @else { (e.result) } }
            td {
                @if e.point != latest && d.failure.is_none() {
                    (action(viewer, &format!("/sites/{}/rollback", d.name), &[("point", e.point.to_string())], &format!("Roll back to point {}", e.point)))
                }
            }
        }
    }
}

fn history(d: &SiteData, viewer: &Viewer) -> Markup {
    html! {
        h2 #history { "History" }
        @match &d.history {
            Err(e) => p.alert { "The history cannot be read: " (e) },
            Ok(entries) if entries.is_empty() => p { "No rollback points: the site is not adopted." },
            Ok(entries) => {
                @let latest = entries.first().map_or(0, |e| e.point);
                table.history {
                    caption { "Rollback points, newest first; a rolled-back change is marked, and each rollback links to the change it undid" }
                    thead { tr {
                        th scope="col" { "Point" } th scope="col" { "Kind" } th scope="col" { "Version" }
                        th scope="col" { "Fixes" } th scope="col" { "Health" } th scope="col" { "Data snapshot" }
                        th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "Result" }
                        th scope="col" { span.sr { "Action" } }
                    } }
                    tbody { @for e in entries { (history_row(d, e, latest, viewer)) } }
                }
            }
        }
    }
}

/// The whole site page.
pub fn render(d: &SiteData, viewer: &Viewer, flash: Option<&str>) -> Markup {
    let v = d.view.as_ref();
    let standing = Standing::of(v);
    layout(
        &d.name,
        viewer,
        html! {
            @if let Some(f) = flash { p.flash role="status" { (f) } }
            div.site data-site=(d.name) {
                h1 { "Site " (d.name) }
                dl.facts {
                    dt { "State" } dd { span class={"state " (standing.class())} { (standing.word()) } }
                    dt { "Version" } dd data-field="version" { (v.and_then(|v| v.status.version.as_deref()).unwrap_or("not adopted")) }
                    dt { "Phase" } dd {
                        progress max="100" value=(d.phase.percent) aria-label="progress of the current change" { (d.phase.percent) "%" }
                        " " span data-field="phase" { (d.phase.phase) } " " span data-field="percent" { (d.phase.percent) "%" }
                        @if d.busy { " " span.busy data-field="busy" { "working" } }
                    }
                    dt { "Layout" } dd { (word(&d.layout)) }
                    dt { "Labels" } dd { @for (k, val) in &d.labels { code { (k) "=" (val) } " " } }
                    dt { "Last look" } dd {
                        (v.and_then(|v| v.last_reconcile.as_deref()).unwrap_or("not yet"))
                        @if let Some(r) = v.and_then(|v| v.reason) { " (" (r.as_str()) ")" }
                        ": " span data-field="outcome" { (v.and_then(|v| v.outcome).unwrap_or("—")) }
                    }
                    @if let Some(e) = v.and_then(|v| v.error.as_deref()) {
                        dt { "Error" } dd.error { (e) }
                    }
                    @if let Some(b) = v.filter(|v| v.backoff_seconds > 0.0) {
                        dt { "Backoff" } dd { "next try in " (format!("{:.0}", b.backoff_seconds)) " s (failures in a row: " (b.failures) ")" }
                    }
                }
            }
            @if viewer.csrf.is_some() {
                section.actions aria-label="Actions" {
                    (action(viewer, &format!("/sites/{}/reconcile", d.name), &[], "Reconcile now"))
                    p.hint { "Reconciling converges the site to what git asks for, now, lifting its backoff. A rollback returns its files to a point; the daemon converges it to git's desired state again at its next look unless git changes (pin the version in the fleet to stay)." }
                }
            } @else if viewer.enabled {
                p { a href="/signin" { "Sign in" } " to reconcile, roll back or lift a quarantine." }
            }
            @if let Some(m) = &d.failure {
                section.alert role="alert" {
                    h2 { "Failure marker" }
                    p { "Nothing changes this site until an operator repairs it and runs " code { "sitekeeper resolve " (d.name) " --by NAME" } "." }
                    p { (m.summary(&d.name)) }
                }
            }
            @if !d.preflight.is_empty() {
                h2 { "Preflight" }
                ul { @for p in &d.preflight { li { code { (p.check) } ": " (p.reason) } } }
            }
            h2 { "Quarantine" }
            @match &d.quarantine {
                Err(e) => p.alert { "The quarantine cannot be read: " (e) },
                Ok(q) if q.releases.is_empty() && q.fixes.is_empty() => p { "Nothing quarantined." },
                Ok(q) => table {
                    thead { tr { th scope="col" { "Item" } th scope="col" { "Since" } th scope="col" { "Why" } th scope="col" { span.sr { "Action" } } } }
                    tbody {
                        @for r in &q.releases {
                            @let item = format!("release {}", r.version);
                            tr { td { (item) } td { (r.at.as_ref().map(|t| t.0.to_string()).unwrap_or_default()) } td { (r.reason.as_deref().unwrap_or("")) }
                                 td { (action(viewer, &format!("/sites/{}/lift", d.name), &[("item", item.clone())], &format!("Lift the quarantine of {item}"))) } }
                        }
                        @for f in &q.fixes {
                            @let item = format!("fix {}", f.id);
                            tr { td { (item) } td { (f.at.0.to_string()) } td { (f.reason) }
                                 td { (action(viewer, &format!("/sites/{}/lift", d.name), &[("item", item.clone())], &format!("Lift the quarantine of {item}"))) } }
                        }
                    }
                },
            }
            h2 { "Plan" }
            @match &d.plan {
                Err(e) => p.alert { "The site cannot be planned now: " (e) },
                Ok(p) => (plan(p)),
            }
            (history(d, viewer))
            @if let Some(dirs) = &d.releases {
                h2 { "Release directories" }
                table {
                    thead { tr { th scope="col" { "Directory" } th scope="col" { "Size" } th scope="col" { "In use" } } }
                    tbody { @for r in dirs { tr {
                        td { code { (r.name) } }
                        td { (r.bytes.map_or_else(|| "too large to count here".to_owned(), bytes)) }
                        td { @if r.current { strong { "current" } } @else { "no" } }
                    } } }
                }
            }
            h2 { "Free space" }
            table.space {
                thead { tr { th scope="col" { "File system of" } th scope="col" { "Path" } th scope="col" { "Free" } th scope="col" { "Size" } } }
                tbody { @for s in &d.space { tr {
                    td { (s.what) } td { code { (s.path.display().to_string()) } }
                    @match s.free {
                        Some((free, size)) => { td data-free=(free) { (bytes(free)) " free" } td { (bytes(size)) } },
                        None => { td { "unknown" } td { "unknown" } },
                    }
                } } }
            }
            h2 { "Ledger (last " (d.ledger.len()) " of " (d.ledger_len) ")" }
            @if d.ledger.is_empty() { p { "Empty." } } @else {
                table.ledger {
                    thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Kind" } th scope="col" { "Item" } th scope="col" { "Result" } th scope="col" { "Point" } th scope="col" { "By" } th scope="col" { "Error" } } }
                    tbody { @for r in &d.ledger { tr {
                        td { (r.seq) } td { (crate::observe::history::human_time(&r.at)) } td { (word(&r.kind)) }
                        td { (r.id.as_deref().unwrap_or("")) } td { (word(&r.result)) } td { (r.point.map(|p| p.to_string()).unwrap_or_default()) }
                        td { (r.by.user) "@" (r.by.host) " via " (r.by.via) }
                        td { (r.error.as_deref().map(|e| truncate(e, 300)).unwrap_or_default()) }
                    } } }
                }
            }
            h2 { "hooks.log (its end)" }
            @match &d.hooks { Some(t) if !t.is_empty() => pre.log { code { (t) } }, _ => p { "Empty." } }
        },
    )
}
