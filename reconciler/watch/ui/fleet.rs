//! `GET /`: the fleet at a glance. Everything comes from memory (the
//! loaded fleet and the daemon's [`SiteView`]s); only the page's own rows
//! ask for their phase, one `stat` each ([`super::live`]). Filtering
//! (`?q=` text, `?label=k=v`, repeatable), the problem-first order and
//! paging (`?page=`, `?per=` up to [`MAX_PER`]) happen on the server, so
//! a page costs the same at 10 sites or 10,000.

use std::sync::{Arc, PoisonError};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::live::Phase;
use crate::watch::controller::{Shared, SiteView};

/// Rows per page unless `?per=` says otherwise.
pub const PER: usize = 50;
/// The most rows a page holds.
pub const MAX_PER: usize = 200;
/// The longest text filter kept, and the most label filters.
const MAX_Q: usize = 200;
const MAX_LABELS: usize = 16;

/// Where a site stands, worst first: the order of the fleet page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// A failure marker: nothing changes the site until an operator acts.
    FailureMarker,
    /// Its last reconcile failed.
    Failing,
    /// Its last change was rolled back.
    RolledBack,
    /// A preflight check holds its plan.
    Preflight,
    /// Something is quarantined on it.
    Quarantined,
    /// The daemon has not looked at it yet.
    NotLooked,
    /// Its plan has actions, or held items, waiting.
    Pending,
    /// Nothing to do.
    Healthy,
}

impl Standing {
    /// Of a site with `view` (none yet: not looked at).
    pub fn of(view: Option<&SiteView>) -> Self {
        let Some(v) = view else {
            return Standing::NotLooked;
        };
        if v.status.failure.is_some() {
            Standing::FailureMarker
        } else if v.error_kind == Some("rolled_back")
            || (v.error.is_none() && v.status.last_result.as_deref() == Some("rolled_back"))
        {
            Standing::RolledBack
        } else if v.error_kind == Some("preflight") || !v.status.preflight.is_empty() {
            Standing::Preflight
        } else if v.error.is_some() && v.outcome != Some("refused") {
            Standing::Failing
        } else if !v.status.quarantined.is_empty() {
            Standing::Quarantined
        } else if v.last_reconcile.is_none() {
            Standing::NotLooked
        } else if v.status.pending > 0 || !v.held.is_empty() || v.error.is_some() {
            Standing::Pending
        } else {
            Standing::Healthy
        }
    }

    /// The word the page shows (never only a colour).
    pub fn word(self) -> &'static str {
        match self {
            Standing::FailureMarker => "failure marker",
            Standing::Failing => "failing",
            Standing::RolledBack => "rolled back",
            Standing::Preflight => "preflight",
            Standing::Quarantined => "quarantined",
            Standing::NotLooked => "not looked at yet",
            Standing::Pending => "pending",
            Standing::Healthy => "healthy",
        }
    }

    /// Its CSS class.
    pub fn class(self) -> &'static str {
        match self {
            Standing::FailureMarker | Standing::Failing | Standing::RolledBack => "bad",
            Standing::Preflight | Standing::Quarantined => "warn",
            Standing::NotLooked | Standing::Pending => "wait",
            Standing::Healthy => "ok",
        }
    }

    /// Every standing, in order.
    pub const ALL: [Standing; 8] = [
        Standing::FailureMarker,
        Standing::Failing,
        Standing::RolledBack,
        Standing::Preflight,
        Standing::Quarantined,
        Standing::NotLooked,
        Standing::Pending,
        Standing::Healthy,
    ];
}

/// What the query string asks for, bounded whatever it says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// 1-based.
    pub page: usize,
    /// Rows per page.
    pub per: usize,
    /// Text to find in a site's name, version, labels or standing.
    pub q: String,
    /// `key=value` pairs every shown site must have.
    pub labels: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string; anything unknown or malformed is
    /// ignored, numbers are clamped.
    pub fn parse(raw: Option<&str>) -> Self {
        let mut q = Query {
            page: 1,
            per: PER,
            ..Query::default()
        };
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "page" => q.page = v.trim().parse().unwrap_or(1).max(1),
                "per" => q.per = v.trim().parse().unwrap_or(PER).clamp(1, MAX_PER),
                "q" => q.q = v.trim().chars().take(MAX_Q).collect(),
                "label" if q.labels.len() < MAX_LABELS => {
                    if let Some((k, v)) = v.split_once('=')
                        && !k.trim().is_empty()
                    {
                        q.labels.push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                _ => {}
            }
        }
        q
    }

    /// The query string of page `page` with the same filters.
    pub fn href(&self, page: usize) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        for (k, v) in &self.labels {
            s.append_pair("label", &format!("{k}={v}"));
        }
        if self.per != PER {
            s.append_pair("per", &self.per.to_string());
        }
        s.append_pair("page", &page.to_string());
        format!("/?{}", s.finish())
    }
}

/// One row of the fleet page.
#[derive(Debug, Clone)]
pub struct Row {
    /// The site.
    pub site: String,
    /// Where it stands.
    pub standing: Standing,
    /// Its view, if the daemon has looked.
    pub view: Option<SiteView>,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its phase and percent now.
    pub phase: Phase,
    /// Whether the daemon works on it now.
    pub busy: bool,
}

/// The page: its rows and what the whole fleet looks like.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The rows of this page.
    pub rows: Vec<Row>,
    /// Sites in the fleet.
    pub total: usize,
    /// Sites the filters keep.
    pub matched: usize,
    /// Sites of each standing, over the whole fleet.
    pub counts: Vec<(Standing, usize)>,
    /// The page shown (clamped to the last).
    pub page: usize,
    /// Pages.
    pub pages: usize,
    /// The query.
    pub query: Query,
    /// The fleet's load error, when an older fleet is in use.
    pub fleet_error: Option<String>,
}

/// Whether `site` passes the text filter `needle` (lower case).
fn matches_text(
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
    view: Option<&SiteView>,
    standing: Standing,
    needle: &str,
) -> bool {
    needle.is_empty()
        || name.to_lowercase().contains(needle)
        || standing.word().contains(needle)
        || view
            .and_then(|v| v.status.version.as_deref())
            .is_some_and(|v| v.to_lowercase().contains(needle))
        || labels
            .iter()
            .any(|(k, v)| format!("{k}={v}").to_lowercase().contains(needle))
}

/// The page `query` asks for.
pub fn list(shared: &Shared, query: Query) -> Listing {
    let fleet = shared.fleet();
    let needle = query.q.to_lowercase();
    let mut counts = [0usize; Standing::ALL.len()];
    // Keys only, under the lock: the page's own views are cloned after
    // sorting, so the lock is held for a pass over the fleet, not a copy.
    let (matched, chosen, page, pages) = {
        let views = shared.views.lock().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<(Standing, usize)> = Vec::new();
        for (i, s) in fleet.sites.iter().enumerate() {
            let view = views.get(s.site.as_str());
            let standing = Standing::of(view);
            counts[standing as usize] += 1;
            let labelled = query
                .labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|have| have == v));
            if labelled && matches_text(s.site.as_str(), &s.labels, view, standing, &needle) {
                keys.push((standing, i));
            }
        }
        keys.sort_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                fleet.sites[a.1]
                    .site
                    .as_str()
                    .cmp(fleet.sites[b.1].site.as_str())
            })
        });
        let matched = keys.len();
        let pages = matched.div_ceil(query.per).max(1);
        let page = query.page.min(pages);
        let start = (page - 1) * query.per;
        let chosen: Vec<(Standing, usize, Option<SiteView>)> = keys
            .iter()
            .skip(start)
            .take(query.per)
            .map(|&(st, i)| (st, i, views.get(fleet.sites[i].site.as_str()).cloned()))
            .collect();
        (matched, chosen, page, pages)
    };
    let rows = chosen
        .into_iter()
        .map(|(standing, i, view)| {
            let s = &fleet.sites[i];
            let name = s.site.as_str();
            Row {
                site: name.to_owned(),
                standing,
                view,
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                phase: shared.ui.live.phase(&shared.state_dir, name),
                busy: shared.ui.live.is_busy(name),
            }
        })
        .collect();
    let fleet_error = shared
        .load_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    Listing {
        rows,
        total: fleet.sites.len(),
        matched,
        counts: Standing::ALL
            .iter()
            .map(|&s| (s, counts[s as usize]))
            .collect(),
        page,
        pages,
        query,
        fleet_error,
    }
}

/// `GET /`.
pub async fn page(
    State(shared): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = Query::parse(raw.as_deref());
    let session = shared.ui.auth.session(super::cookie_header(&headers));
    let s = Arc::clone(&shared);
    // The phases are `stat`s: off the async workers.
    let listing = tokio::task::spawn_blocking(move || list(&s, query)).await;
    match listing {
        Ok(listing) => super::html(
            StatusCode::OK,
            super::pages::fleet(
                &listing,
                &super::pages::Viewer {
                    enabled: shared.ui.auth.enabled(),
                    csrf: session.map(|s| s.csrf),
                },
            ),
        ),
        Err(e) => super::html(
            StatusCode::INTERNAL_SERVER_ERROR,
            super::pages::message("The fleet could not be listed", &e.to_string(), None),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_whatever_they_say() {
        let q = Query::parse(Some(
            "page=0&per=100000&q=%20shop%20&label=env%3Dprod&label=bad&label=%3Dx&zzz=1",
        ));
        assert_eq!(q.page, 1);
        assert_eq!(q.per, MAX_PER);
        assert_eq!(q.q, "shop");
        assert_eq!(q.labels, [("env".to_owned(), "prod".to_owned())]);
        let q = Query::parse(Some("page=-3&per=abc&%ff%fe=%00"));
        assert_eq!((q.page, q.per), (1, PER));
        let long = format!("q={}", "a".repeat(10_000));
        assert_eq!(Query::parse(Some(&long)).q.len(), MAX_Q);
        assert_eq!(
            Query::parse(None),
            Query {
                page: 1,
                per: PER,
                ..Query::default()
            }
        );
        let q = Query::parse(Some("q=a%26b&label=k%3Dv&page=2"));
        assert_eq!(q.href(3), "/?q=a%26b&label=k%3Dv&page=3");
    }

    #[test]
    fn problems_sort_first() {
        let mut all = Standing::ALL.to_vec();
        all.reverse();
        all.sort();
        assert_eq!(all, Standing::ALL);
        assert_eq!(Standing::of(None), Standing::NotLooked);
    }
}
