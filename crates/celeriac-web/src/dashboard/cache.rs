//! The caches: per namespace, the figures the cache instances of an application publish to
//! the store (summed over the live instances, as `celeriac cache stats` shows them), the
//! L1's departures by cause and its weight against its byte bound, the L2's memory (used out
//! of its bound, its policy when full, the keys it evicted: [`KvStore::kv_memory`]), the
//! store's own figures, and the operator's actions: invalidate a key or a tag in every
//! instance, and warm a namespace with its registered warmer (a `celeriac.cache.warm` job that
//! a worker of the application runs).
//!
//! Caches publish only their current counters (one snapshot per live instance): there is no
//! history of them in the store, so the page shows no hit ratio over time.

use super::layout;
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use axum::extract::Query;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::backend::{KvMemory, KvStore, StoreFigures, StoreHealth};
use celeriac::cache::stats::{self, NamespaceStats};
use celeriac::cache::{Cache, CacheStats, DEFAULT_STATS_INTERVAL};
use celeriac::clock::UnixMs;
use celeriac::Task;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The application name in cache keys when a cache is built without `CacheBuilder::app`,
/// and the default of `celeriac cache stats --app`.
pub(crate) const DEFAULT_APP: &str = "celeriac";

/// How long a tag barrier written from here is kept in the store: longer than the entries it
/// bars should live (their freshness and stale window).
const BARRIER_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);

/// The timeout of each store call of the dashboard's invalidating instance.
const ACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The routes of the cache page, its twin and its actions.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/cache", get(page))
        .route("/api/v1/cache", get(api))
        .route("/api/v1/cache/invalidate-key", post(invalidate_key))
        .route("/api/v1/cache/invalidate-tag", post(invalidate_tag))
        .route("/api/v1/cache/warm", post(warm))
}

/// The page's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {
    /// The application name the caches were built with (`CacheBuilder::app`).
    name: Option<String>,
}

/// One namespace's figures, summed over its live instances.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NamespaceRow {
    /// The namespace.
    pub(crate) namespace: String,
    /// Instances whose snapshot is live.
    pub(crate) instances: u32,
    /// Their counters, summed (`l1_entries` is the L1 size).
    #[serde(flatten)]
    pub(crate) stats: CacheStats,
    /// Hits (L1 and L2) out of all reads, when there were reads.
    pub(crate) hit_ratio: Option<f64>,
    /// Mean loader time, when anything was loaded.
    pub(crate) mean_load_ms: Option<f64>,
    /// The L1's weighted size out of its byte bound, when it is bounded in bytes.
    pub(crate) l1_bytes_ratio: Option<f64>,
    /// Whether this application registered a warmer for the namespace.
    pub(crate) warmer: bool,
}

impl NamespaceRow {
    fn of(n: NamespaceStats, warmers: &[String]) -> Self {
        NamespaceRow {
            hit_ratio: n.hit_ratio(),
            mean_load_ms: n.mean_load_ms(),
            l1_bytes_ratio: (n.stats.l1_max_bytes > 0)
                .then(|| n.stats.l1_weighted_bytes as f64 / n.stats.l1_max_bytes as f64),
            warmer: warmers.contains(&n.namespace),
            namespace: n.namespace,
            instances: n.instances,
            stats: n.stats,
        }
    }
}

/// What is known of the hit ratio over time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HitRatioHistory {
    /// Whether a series exists (never, today).
    pub(crate) available: bool,
    /// Why not, in words.
    pub(crate) reason: &'static str,
}

const NO_HISTORY: &str = "each cache instance publishes only its current \
     counters (a snapshot that lives three publication intervals) and nothing keeps past \
     values, so the figures here run from each live instance's start. The counters are also \
     exported as the Prometheus metrics celeriac_cache_*_total{namespace}, which a metrics \
     system can chart over time.";

/// The L2's memory, as the store tells it ([`KvStore::kv_memory`]).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct L2Memory {
    /// Whether the store told it (`false`: a store that cannot, and every figure `null`).
    pub(crate) reported: bool,
    /// Bytes in use (Redis: everything the server holds; SQLite: the cache's keys and values).
    pub(crate) used_bytes: Option<u64>,
    /// The bound (0: unbounded).
    pub(crate) max_bytes: Option<u64>,
    /// `used_bytes` out of `max_bytes`, when bounded.
    pub(crate) used_ratio: Option<f64>,
    /// What the store does when full (`allkeys-lfu`, `noeviction`, `oldest-written`, `none`).
    pub(crate) policy: Option<String>,
    /// Keys evicted to make room since the store started.
    pub(crate) evicted_keys: Option<u64>,
    /// Whether writes fail, rather than evict, once the bound is reached.
    pub(crate) refuses_when_full: bool,
    /// Why the figures could not be read, when the store failed to answer.
    pub(crate) error: Option<String>,
}

impl L2Memory {
    fn of(read: celeriac::Result<Option<KvMemory>>) -> Self {
        let none = L2Memory {
            reported: false,
            used_bytes: None,
            max_bytes: None,
            used_ratio: None,
            policy: None,
            evicted_keys: None,
            refuses_when_full: false,
            error: None,
        };
        match read {
            Ok(Some(m)) => L2Memory {
                reported: true,
                used_bytes: Some(m.used_bytes),
                max_bytes: Some(m.max_bytes),
                used_ratio: (m.max_bytes > 0).then(|| m.used_bytes as f64 / m.max_bytes as f64),
                refuses_when_full: m.refuses_when_full(),
                evicted_keys: Some(m.evicted_keys),
                policy: Some(m.policy),
                error: None,
            },
            Ok(None) => none,
            Err(e) => L2Memory {
                error: Some(e.to_string()),
                ..none
            },
        }
    }
}

/// The cache page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct CachePage {
    /// The application name asked for.
    pub(crate) app: String,
    pub(crate) now: UnixMs,
    /// Every namespace that published figures, sorted.
    pub(crate) namespaces: Vec<NamespaceRow>,
    /// Hits out of all reads over every namespace.
    pub(crate) hit_ratio: Option<f64>,
    /// The L2's memory: used, bound, policy and evictions.
    pub(crate) l2: L2Memory,
    /// The store's figures about itself (`null` where it does not tell).
    pub(crate) store: StoreFigures,
    /// The namespaces with a warmer registered in this application.
    pub(crate) warmers: Vec<String>,
    /// Whether the warm task (`celeriac.cache.warm`) is registered in this application.
    pub(crate) warm_task: bool,
    /// How often caches publish by default (ms).
    pub(crate) publish_every_ms: u64,
    pub(crate) hit_ratio_history: HitRatioHistory,
}

/// Whether `s` may name a cache application or namespace (the cache builder's rule).
fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && !s.contains([':', '{', '}'])
}

/// The application name asked for, checked; the default when none is given.
fn app_name(asked: Option<&str>) -> Outcome<String> {
    let name = asked
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_APP);
    if !name_ok(name) {
        return Err(Failure::bad_request(format!(
            "`{name}` is not a cache application name: 1 to 100 bytes without `:`, `{{` or `}}`"
        )));
    }
    Ok(name.to_string())
}

fn namespace_of(form: &Form) -> Outcome<String> {
    let ns = form.get("namespace").map(str::trim).unwrap_or("");
    if !name_ok(ns) {
        return Err(Failure::bad_request(
            "give the cache's namespace (1 to 100 bytes without `:`, `{` or `}`)",
        ));
    }
    Ok(ns.to_string())
}

/// The figures of every namespace of application `app`.
async fn read_all(req: &Req, app: &str) -> Outcome<Vec<NamespaceStats>> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let names = req.timed(stats::namespaces(store, app, now)).await?;
    let mut all = Vec::with_capacity(names.len());
    for ns in &names {
        all.push(req.timed(stats::read_stats(store, app, ns, now)).await?);
    }
    Ok(all)
}

/// Hits out of all reads, summed over namespaces.
fn ratio_of<'a>(all: impl IntoIterator<Item = &'a CacheStats>) -> Option<f64> {
    let (mut hits, mut reads) = (0u64, 0u64);
    for s in all {
        let h = s.l1_hits + s.l2_hits;
        hits += h;
        reads += h + s.misses;
    }
    (reads > 0).then(|| hits as f64 / reads as f64)
}

pub(crate) async fn load(req: &Req, q: &Q) -> Outcome<CachePage> {
    let app = app_name(q.name.as_deref())?;
    let all = read_all(req, &app).await?;
    let store = req
        .timed(StoreHealth::store_figures(req.ctx.store()))
        .await?;
    // A store that fails to tell its memory leaves the rest of the page as it is.
    let l2 = L2Memory::of(req.timed(KvStore::kv_memory(req.ctx.store())).await);
    let warmers = celeriac::cache_warmer_namespaces();
    let hit_ratio = ratio_of(all.iter().map(|n| &n.stats));
    Ok(CachePage {
        app,
        now: req.ctx.now(),
        namespaces: all
            .into_iter()
            .map(|n| NamespaceRow::of(n, &warmers))
            .collect(),
        hit_ratio,
        l2,
        store,
        warm_task: req
            .ctx
            .app
            .registry()
            .get(celeriac::WarmCache::NAME)
            .is_some(),
        warmers,
        publish_every_ms: DEFAULT_STATS_INTERVAL.as_millis() as u64,
        hit_ratio_history: HitRatioHistory {
            available: false,
            reason: NO_HISTORY,
        },
    })
}

/// The hit ratio over every namespace of the application's caches: those of the application
/// name in the query's `name`, else of the default name.
pub(crate) async fn overall_hit_ratio(req: &Req) -> Outcome<Option<f64>> {
    let asked = req
        .here
        .split_once('?')
        .and_then(|(_, q)| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "name").map(|(_, v)| v));
    // A malformed name in the overview's query is not the overview's failure.
    let app = app_name(asked.as_deref()).unwrap_or_else(|_| DEFAULT_APP.to_string());
    let all = read_all(req, &app).await?;
    Ok(ratio_of(all.iter().map(|n| &n.stats)))
}

async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Cache", data, body)
}

async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{:.1} %", r * 100.0))
}

fn bytes(n: Option<u64>) -> String {
    let Some(n) = n else {
        return "–".to_string();
    };
    let f = n as f64;
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", f / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", f / f64::from(1u32 << 20)),
        _ => format!("{:.2} GiB", f / f64::from(1u32 << 30)),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_string(), |v| v.to_string())
}

/// A form that POSTs an action with fields the operator fills in (text inputs in `inputs`),
/// carrying the page's token and the way back like [`layout::action`]; disabled for viewers.
fn input_form(
    req: &Req,
    path: &str,
    label: &str,
    confirm: Option<&str>,
    hidden: &[(&str, &str)],
    inputs: Markup,
) -> Markup {
    let back = req.here.split("notice=").next().unwrap_or("/");
    let back = back.trim_end_matches(['?', '&']);
    let viewer = req.who.role < super::Role::Operator;
    html! {
        form.action.fill method="post" action=(req.link(path)) hx-confirm=[confirm] {
            input type="hidden" name="csrf" value=(req.who.csrf);
            input type="hidden" name="back" value=(back);
            @for (k, v) in hidden {
                input type="hidden" name=(k) value=(v);
            }
            fieldset disabled[viewer] { (inputs) }
            button type="submit" disabled[viewer] { (label) }
        }
    }
}

fn body(req: &Req, d: &CachePage) -> Markup {
    let app = d.app.as_str();
    let app_field = [("name", app)];
    let mut names: Vec<&str> = d
        .namespaces
        .iter()
        .map(|n| n.namespace.as_str())
        .chain(d.warmers.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    html! {
        form.filters method="get" action=(req.link("/cache")) {
            label for="cache-app" { "Application name " }
            input #cache-app type="text" name="name" value=(app);
            " "
            button type="submit" { "Show" }
            span.reason { " The name caches are built with (" code { "CacheBuilder::app" } ", default "
                code { (DEFAULT_APP) } "), as in " code { "celeriac cache stats --app" } "." }
        }
        section {
            h2 { "Namespaces" }
            p.reason {
                "Summed over the live instances: each cache publishes its counters every "
                (layout::span(d.publish_every_ms as i64)) " by default, and an instance counts while its last snapshot is younger than three intervals. Counts run from each instance's start. Overall hit ratio: "
                strong #cache-hit-ratio { (percent(d.hit_ratio)) } "."
            }
            @if d.namespaces.is_empty() {
                p.empty { "No cache of application " code { (app) } " has published figures yet." }
            } @else {
                table #cache-namespaces {
                    thead { tr {
                        th { "Namespace" } th.num { "Instances" } th.num { "L1 hits" } th.num { "L2 hits" }
                        th.num { "Misses" } th.num { "Hit ratio" } th.num { "Loads" } th.num { "Mean load" }
                        th.num { "Load errors" } th.num { "Waiters" }
                        th.num title="Loads under way when the figures were published" { "Loading" }
                        th.num { "Stale served" }
                        th.num title="L1 entries evicted for space or expired" { "Evictions" }
                        th.num title="Entries that entered the L1" { "L1 added" }
                        th.num title="L1 entries evicted for space (the entry or byte bound), values too heavy for the L1 included" { "Evicted (size)" }
                        th.num title="L1 entries that expired" { "Expired" }
                        th.num title="L1 entries the cache took out itself: removal, invalidation, a new version" { "Removed" }
                        th.num { "L1 size" }
                        th.num title="The L1's weighted size out of its byte bound (l1_max_bytes), summed over instances" { "L1 bytes" }
                        th.num { "L2 errors" } th.num { "Decode errors" }
                        th.num title="Values over the namespace's max_value_bytes: returned and kept in L1, not stored in L2" { "Too large" }
                    } }
                    tbody {
                        @for n in &d.namespaces {
                            @let s = &n.stats;
                            tr data-namespace=(n.namespace) {
                                td { (n.namespace) }
                                td.num { (n.instances) }
                                td.num { (s.l1_hits) }
                                td.num { (s.l2_hits) }
                                td.num { (s.misses) }
                                td.num.ratio { (percent(n.hit_ratio)) }
                                td.num { (s.loads) }
                                td.num { (n.mean_load_ms.map_or_else(|| "–".to_string(), |m| format!("{m:.1} ms"))) }
                                td.num { (s.load_errors) }
                                td.num { (s.waiters) }
                                td.num.loading { (s.loading) }
                                td.num { (s.stale_served) }
                                td.num { (s.evictions) }
                                td.num.l1-added { (s.l1_added) }
                                td.num.l1-evicted-size { (s.l1_evicted_size) }
                                td.num.l1-expired { (s.l1_expired) }
                                td.num.l1-removed { (s.l1_removed) }
                                td.num { (s.l1_entries) }
                                td.num.l1-bytes {
                                    @if s.l1_max_bytes > 0 {
                                        (bytes(Some(s.l1_weighted_bytes))) " / " (bytes(Some(s.l1_max_bytes)))
                                        " (" (percent(n.l1_bytes_ratio)) ")"
                                    } @else {
                                        span title="bounded in entries only" { "–" }
                                    }
                                }
                                td.num { (s.l2_errors) }
                                td.num { (s.decode_errors) }
                                td.num.too-large { (s.too_large) }
                            }
                        }
                    }
                }
            }
        }
        section #cache-history {
            h2 { "Hit ratio over time" }
            p.empty { "No series: " (d.hit_ratio_history.reason) }
        }
        section #cache-l2 {
            h2 { "L2 memory" }
            @let m = &d.l2;
            @if let Some(e) = &m.error {
                p.notice.bad { "The store did not tell its memory: " (e) }
            } @else if !m.reported {
                p.empty { "The store does not report its memory." }
            } @else {
                table.figures {
                    tbody {
                        tr { th { "Used" } td #cache-l2-used {
                            (bytes(m.used_bytes))
                            @match m.max_bytes {
                                Some(0) | None => " (unbounded)",
                                max => { " of " (bytes(max)) " (" (percent(m.used_ratio)) ")" },
                            }
                        } }
                        @if let Some(r) = m.used_ratio {
                            tr { th { "Use" } td { meter min="0" max="1" low="0.75" high="0.9" optimum="0" value=(r.min(1.0)) { (percent(Some(r))) } } }
                        }
                        tr { th { "Bound" } td #cache-l2-max {
                            @match m.max_bytes {
                                Some(0) | None => "unbounded",
                                max => (bytes(max)),
                            }
                        } }
                        tr { th { "When full" } td #cache-l2-policy { (opt(m.policy.as_deref())) } }
                        tr { th { "Keys evicted" } td #cache-l2-evicted { (opt(m.evicted_keys)) } }
                    }
                }
                @if m.refuses_when_full {
                    p.notice.bad #cache-l2-refuses { "Policy " code { "noeviction" } " with a bound: writes fail when the store is full, so the caches' L2 writes (and any other) fail rather than evict." }
                }
                p.reason { "Redis: the server's whole memory (" code { "used_memory" } ", " code { "maxmemory" } ", " code { "maxmemory-policy" } ", " code { "evicted_keys" } "), not only the caches' keys. SQLite: the bytes of the cache's keys and values." }
            }
        }
        section #cache-store {
            h2 { "Store" }
            table.figures {
                tbody {
                    tr { th { "Memory used" } td { (bytes(d.store.memory_used_bytes)) } }
                    tr { th { "Memory limit" } td {
                        @match d.store.memory_max_bytes {
                            Some(0) => "none",
                            other => (bytes(other)),
                        }
                    } }
                    tr { th { "Eviction policy" } td { (opt(d.store.eviction_policy.as_deref())) } }
                    tr { th { "Keys evicted" } td { (opt(d.store.evicted_keys)) } }
                    tr { th { "Database file" } td { (bytes(d.store.file_bytes)) } }
                    tr { th { "Write-ahead log" } td { (bytes(d.store.wal_bytes)) } }
                }
            }
            p.reason { "– where the store has no such figure (memory and evictions are Redis's, file sizes SQLite's)." }
        }
        datalist #cache-namespace-list {
            @for n in &names { option value=(n) {} }
        }
        section #cache-invalidate {
            h2 { "Invalidate" }
            p.reason { "In the store and in every instance's L1 (each drops its copy when the namespace's message reaches it). Application " code { (app) } "." }
            div.actions {
                (input_form(req, "/api/v1/cache/invalidate-key", "Invalidate key", None, &app_field, html! {
                    input type="text" name="namespace" list="cache-namespace-list" placeholder="namespace" required;
                    " "
                    input type="text" name="key" placeholder="key" required;
                    " "
                    label title="the cache's key version (CacheBuilder::version) when the namespace was never bumped" {
                        "version " input.narrow type="text" name="version" value="1" inputmode="numeric";
                    }
                    " "
                }))
            }
            div.actions {
                (input_form(req, "/api/v1/cache/invalidate-tag", "Invalidate tag", Some("Every entry with this tag is dropped in every instance and reloaded on its next read."), &app_field, html! {
                    input type="text" name="namespace" list="cache-namespace-list" placeholder="namespace" required;
                    " "
                    input type="text" name="tag" placeholder="tag" required;
                    " "
                    label { input type="checkbox" name="confirm" value="yes" required; " every entry with this tag is reloaded on its next read" }
                    " "
                }))
            }
        }
        section #cache-warm {
            h2 { "Warm" }
            p.reason { "A warm is a " code { "celeriac.cache.warm" } " job: a worker of this application that registered the namespace's warmer ("
                code { "AppBuilder::cache_warmer" } ") loads the keys that are not fresh. Follow it on the job's page." }
            @if names.is_empty() {
                p.empty { "No namespace to warm: no cache published figures and this application registers no warmer." }
            } @else {
                table #cache-warmers {
                    tbody {
                        @for ns in &names {
                            @let has = d.warm_task && d.warmers.iter().any(|w| w == ns);
                            tr data-namespace=(ns) {
                                td { (ns) }
                                td {
                                    @if has {
                                        (input_form(req, "/api/v1/cache/warm", "Warm", None, &[("namespace", ns)], html! {
                                            input type="text" name="keys" placeholder="keys a,b,c (empty: all)";
                                            " "
                                        }))
                                    } @else {
                                        button type="button" disabled title="no warmer registered" { "Warm" }
                                        " " span.reason { "No warmer for this namespace is registered in this application (" code { "AppBuilder::cache_warmer" } "): its workers could not run the warm." }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if !d.warmers.is_empty() {
                p.reason {
                    "Warmers registered in this process: " (d.warmers.join(", ")) "."
                    @if !d.warm_task {
                        " The task " code { "celeriac.cache.warm" } " is not registered in this application ("
                        code { "AppBuilder::cache_warmer" } " registers it): no warm can be enqueued."
                    }
                }
            }
        }
    }
}

/// The dashboard's own instance of a namespace, to invalidate through the cache's API: it
/// publishes no figures and goes away after the action.
async fn invalidator(
    req: &Req,
    app: &str,
    namespace: &str,
    version: u32,
) -> Outcome<Cache<str, serde_json::Value, celeriac::AnyBackend>> {
    let built = Cache::<str, serde_json::Value, ()>::builder(namespace)
        .app(app)
        .version(version)
        .ttl(BARRIER_KEEP)
        .early_refresh(0.0)
        .stats_interval(None)
        .l2_timeout(ACTION_TIMEOUT)
        .build(req.ctx.app.backend().clone());
    req.timed(built).await.map_err(|e| match e {
        celeriac::Error::Config { .. } => Failure::bad_request(e.to_string()),
        other => other.into(),
    })
}

async fn invalidate_key(req: Req, form: Form) -> Response {
    let outcome = async {
        let app = app_name(form.get("name"))?;
        let namespace = namespace_of(&form)?;
        let key = form.get("key").unwrap_or("");
        if key.is_empty() {
            return Err(Failure::bad_request("give the key to invalidate"));
        }
        let version = match form.get("version").map(str::trim).filter(|v| !v.is_empty()) {
            None => 1,
            Some(v) => v.parse::<u32>().ok().filter(|v| *v >= 1).ok_or_else(|| {
                Failure::bad_request(format!("version `{v}` is not a key version (1 or more)"))
            })?,
        };
        let cache = invalidator(&req, &app, &namespace, version).await?;
        req.timed(cache.remove(key)).await?;
        let message = format!(
            "cache {app}:{namespace}: key `{key}` removed from the store and from every instance"
        );
        req.audit("cache_invalidate_key", None, message.clone())
            .await;
        Ok(Done::new(message))
    }
    .await;
    req.done(&form, outcome)
}

async fn invalidate_tag(req: Req, form: Form) -> Response {
    let outcome = async {
        let app = app_name(form.get("name"))?;
        let namespace = namespace_of(&form)?;
        let tag = form.get("tag").unwrap_or("");
        if tag.is_empty() {
            return Err(Failure::bad_request("give the tag to invalidate"));
        }
        if !form.flag("confirm") {
            return Err(Failure::bad_request(format!(
                "every entry tagged `{tag}` in {app}:{namespace} would be dropped in every \
                 instance: confirm with confirm=yes"
            )));
        }
        let cache = invalidator(&req, &app, &namespace, 1).await?;
        req.timed(cache.invalidate_tag(tag)).await?;
        let message = format!(
            "cache {app}:{namespace}: every entry tagged `{tag}` invalidated in every instance"
        );
        req.audit("cache_invalidate_tag", None, message.clone())
            .await;
        Ok(Done::new(message))
    }
    .await;
    req.done(&form, outcome)
}

async fn warm(req: Req, form: Form) -> Response {
    let outcome = async {
        let namespace = namespace_of(&form)?;
        let registry = req.ctx.app.registry();
        if registry.get(celeriac::WarmCache::NAME).is_none()
            || celeriac::cache_warmer(&namespace).is_none()
        {
            return Err(Failure::bad_request(format!(
                "no warmer for namespace `{namespace}` is registered in this application \
                 (AppBuilder::cache_warmer); registered: {}",
                celeriac::cache_warmer_namespaces().join(", ")
            )));
        }
        let keys: Vec<String> = form
            .all("keys")
            .into_iter()
            .flat_map(|k| k.split(','))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
        let args = celeriac::WarmArgs {
            namespace: namespace.clone(),
            keys: (!keys.is_empty()).then_some(keys.clone()),
            concurrency: None,
        };
        let args = serde_json::to_value(&args)
            .map_err(|e| Failure::bad_request(format!("the warm's arguments: {e}")))?;
        let handle = req
            .timed(req.ctx.app.client().enqueue_json(
                Some(registry),
                celeriac::WarmCache::NAME,
                &args,
                celeriac::JobOptions::default(),
            ))
            .await?;
        let queue = registry
            .get(celeriac::WarmCache::NAME)
            .map_or_else(String::new, |t| t.options().queue.clone());
        let what = if keys.is_empty() {
            "every key".to_string()
        } else {
            format!("{} keys", keys.len())
        };
        let message = format!(
            "warm of `{namespace}` ({what}) enqueued as job {} on queue {queue}",
            handle.id()
        );
        req.audit("cache_warm", Some(&queue), message.clone()).await;
        Ok(Done::new(message))
    }
    .await;
    req.done(&form, outcome)
}
