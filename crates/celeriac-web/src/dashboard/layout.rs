//! The frame of every page (navigation, notices, scripts) and the small pieces pages share:
//! times, durations, state badges, sparklines, charts, action buttons and pagers.

use super::request::{Failure, Req};
use celeriac::clock::UnixMs;
use maud::{html, Markup, DOCTYPE};

/// The navigation: path, label.
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/queues", "Queues"),
    ("/jobs", "Jobs"),
    ("/dead", "Dead letters"),
    ("/schedules", "Schedules"),
    ("/workers", "Workers"),
    ("/cache", "Cache"),
    ("/limits", "Rate limits"),
    ("/breakers", "Breakers"),
    ("/events", "Events"),
    ("/alerts", "Alerts"),
    ("/settings", "Settings"),
];

fn head(base: &str, title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        // htmx may not add inline styles or evaluate code: the content security policy
        // allows neither.
        meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
        title { (title) " · Celeriac" }
        link rel="stylesheet" href={ (base) "/static/uPlot.min.css" };
        link rel="stylesheet" href={ (base) "/static/dashboard.css" };
        script src={ (base) "/static/htmx.min.js" } defer {}
        script src={ (base) "/static/uPlot.iife.min.js" } defer {}
        script src={ (base) "/static/dashboard.js" } defer {}
    }
}

/// A whole page: navigation, the notice an action left, and `body`.
pub(crate) fn page(req: &Req, title: &str, body: Markup) -> Markup {
    let path = req.here.split('?').next().unwrap_or("/");
    let notice = notice_of(&req.here);
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(&req.base, title)) }
            body hx-boost="true" data-base=(req.base) data-csrf=(req.who.csrf) {
                header.top {
                    a.brand href=(req.link("/")) { "Celeriac" }
                    nav {
                        @for (href, label) in NAV {
                            @let current = if *href == "/" { path == "/" } else { path.starts_with(href) };
                            a href=(req.link(href)) class=[current.then_some("current")] { (label) }
                        }
                    }
                    span.who {
                        (req.who.role.as_str())
                        @if req.who.signed_in {
                            form.inline method="post" action=(req.link("/logout")) {
                                input type="hidden" name="csrf" value=(req.who.csrf);
                                button.link type="submit" { "sign out" }
                            }
                        }
                    }
                }
                main {
                    @if let Some(n) = notice {
                        p.notice.(if n.starts_with("failed") { "bad" } else { "good" }) role="status" { (n) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (sign-in, refusals), for a dashboard mounted at `base`.
pub(crate) fn bare(base: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head(base, title)) }
            body.bare { main { (body) } }
        }
    }
}

/// Why the page could not be shown.
pub(crate) fn failure(f: &Failure) -> Markup {
    html! { p.notice.bad role="alert" { (f.message) } }
}

/// The `notice` an action left in the query.
fn notice_of(here: &str) -> Option<String> {
    let query = here.split_once('?')?.1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "notice")
        .map(|(_, v)| v)
}

/// Text escaped for a query string.
pub(crate) fn query_escape(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// Text escaped for a path segment.
pub(crate) fn path_escape(text: &str) -> String {
    query_escape(text).replace('+', "%20")
}

/// A moment as `2026-12-06 14:03:07 UTC`.
pub(crate) fn time(ms: UnixMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// A moment, shown relative to `now` with the exact time on hover.
pub(crate) fn when(ms: UnixMs, now: UnixMs) -> Markup {
    let d = now - ms;
    let rel = if d >= 0 {
        format!("{} ago", span(d))
    } else {
        format!("in {}", span(-d))
    };
    html! { time datetime=(time(ms)) title=(time(ms)) { (rel) } }
}

/// A span of milliseconds for people: `850ms`, `4.2s`, `3m 10s`, `2h 5m`, `3d 4h`.
pub(crate) fn span(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{:.1}s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{}m {}s", m / 60_000, m % 60_000 / 1000),
        m if m < 86_400_000 => format!("{}h {}m", m / 3_600_000, m % 3_600_000 / 60_000),
        m => format!("{}d {}h", m / 86_400_000, m % 86_400_000 / 3_600_000),
    }
}

/// A rate per minute: `0`, `0.4`, `12`, `1.2k`.
pub(crate) fn rate(per_min: f64) -> String {
    match per_min {
        0.0 => "0".to_string(),
        r if r < 10.0 => format!("{r:.1}"),
        r if r < 1000.0 => format!("{r:.0}"),
        r => format!("{:.1}k", r / 1000.0),
    }
}

/// A coloured word for a state or verdict.
pub(crate) fn badge(word: &str) -> Markup {
    html! { span class={ "badge " (word) } { (word) } }
}

/// A sparkline of `values` as inline SVG (no script needed).
pub(crate) fn sparkline(values: &[f64], class: &str) -> Markup {
    let (w, h) = (120.0_f64, 24.0_f64);
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let n = values.len().max(2) - 1;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = w * i as f64 / n as f64;
            let y = if max > 0.0 { h - h * v / max } else { h };
            format!("{x:.1},{y:.1}")
        })
        .collect();
    html! {
        svg class={ "spark " (class) } viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h) role="img"
            aria-label={ "max " (max) } {
            polyline points=(points.join(" ")) fill="none" stroke="currentColor" stroke-width="1.5" {}
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Line {
    pub(crate) label: String,
    pub(crate) values: Vec<f64>,
}

/// A time chart: uPlot draws it from the data in the element; without script, a sparkline
/// per line stands in. `x` are bucket starts (ms), `markers` moments to mark (deploys).
pub(crate) fn chart(title: &str, x: &[UnixMs], lines: &[Line], markers: &[UnixMs]) -> Markup {
    let data = serde_json::json!({
        "title": title,
        "x": x.iter().map(|t| *t as f64 / 1000.0).collect::<Vec<_>>(),
        "lines": lines,
        "markers": markers.iter().map(|t| *t as f64 / 1000.0).collect::<Vec<_>>(),
    });
    html! {
        figure.chart data-chart=(data.to_string()) {
            figcaption { (title) }
            div.fallback {
                @for l in lines {
                    span.line { (l.label) " " (sparkline(&l.values, &l.label)) }
                }
            }
        }
    }
}

/// Where an action posted from this page comes back to: the page, without its notice.
pub(crate) fn back_of(req: &Req) -> String {
    let back = req.here.split("notice=").next().unwrap_or("/");
    back.trim_end_matches(['?', '&']).to_string()
}

/// A button that POSTs an action, with the page's token, coming back to this page;
/// `confirm` asks first (with script; without, the action runs). Disabled for viewers.
pub(crate) fn action(
    req: &Req,
    path: &str,
    label: &str,
    confirm: Option<&str>,
    fields: &[(&str, &str)],
) -> Markup {
    action_to(req, path, label, confirm, fields, &back_of(req))
}

/// [`action`], coming back to `back` (a path within the dashboard).
pub(crate) fn action_to(
    req: &Req,
    path: &str,
    label: &str,
    confirm: Option<&str>,
    fields: &[(&str, &str)],
    back: &str,
) -> Markup {
    html! {
        form.action method="post" action=(req.link(path)) hx-confirm=[confirm] {
            input type="hidden" name="csrf" value=(req.who.csrf);
            input type="hidden" name="back" value=(back);
            @for (k, v) in fields {
                input type="hidden" name=(k) value=(v);
            }
            button type="submit" disabled[req.who.role < super::Role::Operator] { (label) }
        }
    }
}

/// The live part of a page: refreshed from `source` (server-sent events) while the tab is
/// visible; `initial` is what the page was served with.
pub(crate) fn live(req: &Req, source: &str, initial: Markup) -> Markup {
    html! {
        div.live data-live=(req.link(source)) { (initial) }
    }
}

/// A link to the next page of a listing, when there is one.
pub(crate) fn pager(req: &Req, next: Option<&str>) -> Markup {
    let Some(cursor) = next else {
        return html! {};
    };
    let here = req.here.split("notice=").next().unwrap_or("/");
    let path = here.split('?').next().unwrap_or("/");
    let mut pairs: Vec<(String, String)> = here
        .split_once('?')
        .and_then(|(_, q)| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    pairs.retain(|(k, _)| k != "cursor" && k != "notice");
    pairs.push(("cursor".to_string(), cursor.to_string()));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    html! { nav.pager { a rel="next" href=(req.link(&format!("{path}?{query}"))) { "Next page →" } } }
}

/// JSON shown as text, pretty, cut at `max` characters.
pub(crate) fn json_block(value: &serde_json::Value, max: usize) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    let cut = text.chars().count() > max;
    let shown: String = text.chars().take(max).collect();
    html! {
        pre.json { (shown) @if cut { "\n… (cut at " (max) " characters)" } }
    }
}
