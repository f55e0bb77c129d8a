//! The dashboard's HTML, rendered by maud: every value is escaped, so a
//! site name, label, reason or diff from the fleet or a catalog shows as
//! text and never as markup. The page frame, the fleet page, sign-in and
//! plain messages; the site page is `site_page`. Markup only: what a page
//! shows is decided by its handler.

use maud::{DOCTYPE, Markup, html};

use super::fleet::{Listing, Row};

/// What a page needs to know of the reader's session.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// Actions are enabled (`--ui-token-file`).
    pub enabled: bool,
    /// The session's CSRF token, when signed in.
    pub csrf: Option<String>,
}

/// The frame of every page: the skip link, the navigation, the sign-in
/// state, and the reminder that the desired state lives in git.
pub fn layout(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sitekeeper" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "sitekeeper" }
                        " "
                        a href="/" { "Fleet" }
                    }
                    div.who {
                        @if !viewer.enabled {
                            span.badge { "Read-only" }
                        } @else if let Some(csrf) = &viewer.csrf {
                            form method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out" }
                            }
                        } @else {
                            a href="/signin" { "Sign in to act" }
                        }
                    }
                }
                p.git {
                    "The desired state of every site lives in git (the fleet and catalog repositories). "
                    "This dashboard shows it and what the daemon did; nothing here can change it."
                }
                main #main { (body) }
                p #live role="status" aria-live="polite" class="live" {}
            }
        }
    }
}

/// A plain page with a title, a message and a link back.
pub fn message(title: &str, text: &str, back: Option<&str>) -> Markup {
    layout(
        title,
        // Not "read-only": a message page does not know the session.
        &Viewer {
            enabled: true,
            csrf: None,
        },
        html! {
            h1 { (title) }
            p { (text) }
            p { a href=(back.unwrap_or("/")) { "Back" } }
        },
    )
}

fn row(r: &Row) -> Markup {
    let v = r.view.as_ref();
    let href = format!("/sites/{}", r.site);
    html! {
        tr data-site=(r.site) {
            th scope="row" { a href=(href) { (r.site) } }
            td { span class={"state " (r.standing.class())} { (r.standing.word()) } }
            td data-field="version" { (v.and_then(|v| v.status.version.as_deref()).unwrap_or("not adopted")) }
            td.phase {
                progress max="100" value=(r.phase.percent) aria-label={ "progress of " (r.site) } { (r.phase.percent) "%" }
                " "
                span data-field="phase" { (r.phase.phase) } " "
                span data-field="percent" { (r.phase.percent) "%" }
                @if r.busy { " " span.busy data-field="busy" { "working" } }
            }
            td.num { (v.map_or(0, |v| v.status.pending)) }
            td.num { (v.map_or(0, |v| v.held.len())) }
            td.num { (v.map_or(0, |v| v.status.drift.len())) }
            td data-field="outcome" {
                (v.and_then(|v| v.outcome).unwrap_or("—"))
                @if let Some(e) = v.and_then(|v| v.error.as_deref()) {
                    br; small.error { (truncate(e, 160)) }
                }
            }
            td { (v.and_then(|v| v.last_reconcile.as_deref()).unwrap_or("—")) }
            td.labels {
                @for (k, val) in &r.labels { code { (k) "=" (val) } " " }
            }
        }
    }
}

/// At most `n` characters of `s`, with "…" when cut.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `GET /`.
pub fn fleet(l: &Listing, viewer: &Viewer) -> Markup {
    let q = &l.query;
    let first = if l.matched == 0 {
        0
    } else {
        (l.page - 1) * q.per + 1
    };
    let last = ((l.page - 1) * q.per + l.rows.len()).min(l.matched);
    let labels = q
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    layout(
        "Fleet",
        viewer,
        html! {
            h1 { "Fleet" }
            @if let Some(e) = &l.fleet_error {
                div.alert role="alert" {
                    p { strong { "The fleet no longer loads; the last good one stays in use." } }
                    pre { (truncate(e, 2000)) }
                }
            }
            ul.counts aria-label="Sites by state" {
                @for (standing, n) in &l.counts {
                    @if *n > 0 {
                        li { span class={"state " (standing.class())} { (standing.word()) } ": " (n) }
                    }
                }
            }
            form.filter method="get" action="/" role="search" {
                label for="q" { "Find" }
                input #q type="search" name="q" value=(q.q) placeholder="name, version, label or state";
                label for="label" { "Label" }
                input #label type="text" name="label" value=(labels) placeholder="key=value";
                label for="per" { "Per page" }
                select #per name="per" {
                    @for n in [50usize, 100, 200] {
                        option value=(n) selected[n == q.per] { (n) }
                    }
                }
                button type="submit" { "Filter" }
            }
            p.summary { "Sites " (first) "–" (last) " of " (l.matched) " matching (" (l.total) " in the fleet), problems first." }
            table.fleet {
                caption { "Every site with its version, state and the phase of its change" }
                thead { tr {
                    th scope="col" { "Site" } th scope="col" { "State" } th scope="col" { "Version" }
                    th scope="col" { "Phase" } th scope="col" { "Pending" } th scope="col" { "Held" }
                    th scope="col" { "Drift" } th scope="col" { "Last result" } th scope="col" { "Last look" }
                    th scope="col" { "Labels" }
                } }
                tbody { @for r in &l.rows { (row(r)) } }
            }
            nav.pages aria-label="Pages" {
                @if l.page > 1 { a rel="prev" href=(q.href(l.page - 1)) { "← Previous" } " " }
                span { "Page " (l.page) " of " (l.pages) }
                @if l.page < l.pages { " " a rel="next" href=(q.href(l.page + 1)) { "Next →" } }
            }
        },
    )
}

/// `GET /signin`.
pub fn sign_in(viewer: &Viewer, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        viewer,
        html! {
            h1 { "Sign in" }
            @if !viewer.enabled {
                p { "This dashboard is read-only: the daemon runs without " code { "--ui-token-file" } ", so nothing can be changed from here." }
            } @else if viewer.csrf.is_some() {
                p { "You are signed in. " a href="/" { "Back to the fleet" } }
            } @else {
                @if let Some(e) = error { p.alert role="alert" { (e) } }
                p { "Signing in lets you reconcile a site now, roll it back to a point, or lift a quarantine. It cannot change the desired state, which lives in git." }
                form method="post" action="/signin" {
                    label for="token" { "Dashboard token" }
                    input #token type="password" name="token" autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}
