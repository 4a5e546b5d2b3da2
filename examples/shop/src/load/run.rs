//! The load run: for each backend and cache setting, a fixed-rate mix, a listing-only phase at
//! the target rate, and a closed-loop capacity phase.

use super::emails::{self, EmailCheck};
use super::oha::{self, lit, Class, Outcome, Rec};
use super::stats::{self, KeyCheck, RouteStats, Second};
use super::topo::{metric_sum, Backend, Plan, Topology};
use super::{chart, limitprobe, parse_duration, say, Common, Env};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

/// Options of `shop-load run`.
#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Total arrival rate of the mix (requests/s). The listing's target rate (2,000/s) is the
    /// separate listing-only phase (--listing-rate): the full mix at 2,500/s overloads the
    /// shop on a 2-core machine (see the README's results).
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Measured duration of the mix, after the warm-up.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before the measured window (sent, not counted in latency).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    warmup: Duration,
    /// Backends to run: redis, embedded (comma-separated; `none` runs only the rate-limit
    /// layer measurement).
    #[arg(long, value_delimiter = ',', default_value = "redis,embedded")]
    backends: Vec<String>,
    /// Cache settings to run: on, off (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    cache: Vec<String>,
    /// Rate of the listing-only phase (the target: p99 < 2 ms at 2,000/s, cached, on Redis).
    #[arg(long, default_value_t = 2000.0)]
    listing_rate: f64,
    /// Duration of the listing-only phase (0s skips it).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    listing_duration: Duration,
    /// Duration of the closed-loop capacity phase (0s skips it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    capacity_duration: Duration,
    /// Connections per oha process in the capacity phase.
    #[arg(long, default_value_t = 16)]
    capacity_conns: usize,
    /// Duration of each half of the rate-limit overhead measurement (0s skips it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    limit_overhead_duration: Duration,
    /// How long to wait for every order's e-mail after the load.
    #[arg(long, default_value = "90s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

/// The deepest listing page the load reads.
pub(crate) const BROWSE_PAGES: u64 = 10;

/// What the shop's catalog holds (read from its database).
pub(crate) struct Catalog {
    /// (category, pages)
    pub(crate) categories: Vec<(String, u64)>,
    pub(crate) product_ids: Vec<i64>,
}

impl Catalog {
    pub(crate) fn read(db: &Path) -> Result<Catalog> {
        let conn =
            rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
        let mut st = conn.prepare(
            "SELECT category, COUNT(*) FROM products GROUP BY category ORDER BY category",
        )?;
        let cats = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut st = conn.prepare("SELECT id FROM products ORDER BY id")?;
        let ids = st
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if cats.is_empty() || ids.is_empty() {
            bail!("the seeded shop database {} has no products", db.display());
        }
        Ok(Catalog {
            categories: cats
                .into_iter()
                .map(|(c, n)| (c, (u64::try_from(n).unwrap_or(0)).div_ceil(20).max(1)))
                .collect(),
            product_ids: ids,
        })
    }

    /// `category=C&page=N` alternatives: every category equally likely, pages 1 to
    /// [`BROWSE_PAGES`] with page `p` weighted `ceil(10 / p)` (people read the first pages
    /// most: page 1 is 30 % of a category's views, page 10 3 %).
    pub(crate) fn listing_regex(&self) -> String {
        let mut alts = Vec::new();
        for (c, pages) in &self.categories {
            let enc: String = url_encode(c);
            for p in 1..=(*pages).min(BROWSE_PAGES) {
                for _ in 0..BROWSE_PAGES.div_ceil(p) {
                    alts.push(format!("category={}&page={p}", lit(&enc)));
                }
            }
        }
        format!("({})", alts.join("|"))
    }

    /// Up to `n` product ids spread over the catalog.
    pub(crate) fn sample_ids(&self, n: usize) -> Vec<i64> {
        let step = (self.product_ids.len() / n.max(1)).max(1);
        self.product_ids
            .iter()
            .step_by(step)
            .take(n)
            .copied()
            .collect()
    }
}

fn url_encode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Digits of the browse users' ids: at least 10,000 users, and enough that each sends under a
/// quarter of its per-minute limit on average (so none comes near it).
pub(crate) fn user_digits(rate: f64, per_minute: u32) -> usize {
    let users = (rate * 60.0 / (f64::from(per_minute.max(4)) / 4.0)).max(10_000.0);
    (users.log10().ceil() as usize).clamp(4, 9)
}

/// The over-limit clients.
pub(crate) const GREEDY: &[&str] = &["greedy-1", "greedy-2", "greedy-3", "greedy-4"];

/// The premium keys the runner gives the instances (`--premium-keys`): updates and probes.
pub(crate) fn premium_keys() -> Vec<String> {
    (0..500)
        .map(|i| format!("admin-{i:03}"))
        .chain((0..20).map(|i| format!("probe-{i:02}")))
        .collect()
}

/// The mix's classes for one instance at `rate` (that instance's share).
pub(crate) fn mix_classes(
    topo: &Topology,
    cat: &Catalog,
    rate: f64,
    work: &Path,
    user_digits: usize,
) -> Result<Vec<Class>> {
    let orders = work.join("order-bodies.txt");
    let ids = cat.sample_ids(500);
    let bodies: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                r#"{{"email":"buyer{i}@example.com","items":[{{"product_id":{id},"quantity":{}}}]}}"#,
                1 + i % 3
            )
        })
        .collect();
    oha::write_bodies(&orders, &bodies)?;
    let updates = work.join("update-bodies.txt");
    let prices: Vec<String> = (0..500)
        .map(|i| format!(r#"{{"price_cents":{}}}"#, 199 + i * 37))
        .collect();
    oha::write_bodies(&updates, &prices)?;
    let update_ids = cat.sample_ids(200);
    let update_alt = update_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join("|");
    let listing = cat.listing_regex();
    let n = topo.instances.len() as f64;
    let mut v = Vec::new();
    for inst in &topo.instances {
        let host = format!(r"http://127.0.0.1:{}", inst.port);
        let share = rate / n;
        v.push(Class {
            route: "browse",
            instance: inst.name.clone(),
            rate: Some(share * 0.80),
            url_regex: format!(r"{host}/products\?{listing}&api_key=user-[0-9]{{{user_digits}}}"),
            method: "GET",
            bodies: None,
            conns: 64,
        });
        v.push(Class {
            route: "order",
            instance: inst.name.clone(),
            rate: Some(share * 0.10),
            url_regex: format!(r"{host}/orders\?api_key=buyer-[0-9]{{{user_digits}}}"),
            method: "POST",
            bodies: Some(orders.clone()),
            conns: 32,
        });
        v.push(Class {
            route: "update",
            instance: inst.name.clone(),
            rate: Some(share * 0.02),
            url_regex: format!(r"{host}/products/({update_alt})\?api_key=admin-[0-4][0-9][0-9]"),
            method: "PUT",
            bodies: Some(updates.clone()),
            conns: 8,
        });
        v.push(Class {
            route: "overlimit",
            instance: inst.name.clone(),
            rate: Some(share * 0.08),
            url_regex: format!(r"{host}/products\?{listing}&api_key=greedy-[1-4]"),
            method: "GET",
            bodies: None,
            conns: 16,
        });
    }
    Ok(v)
}

/// Runs classes for `secs`, printing progress, and collects what they recorded.
pub(crate) async fn drive(
    env: &Env,
    topo: &mut Topology,
    classes: Vec<Class>,
    secs: f64,
    tag: &str,
    label: &str,
) -> Result<(f64, Vec<Outcome>)> {
    let dir = topo.dir.clone();
    let mut running = Vec::new();
    let t0 = oha::now_ms();
    for c in classes {
        running.push(oha::spawn(&env.oha, c, secs, &dir, tag)?);
    }
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        tokio::time::sleep(Duration::from_secs(5).min(Duration::from_secs_f64(
            (secs - start.elapsed().as_secs_f64()).max(0.05),
        )))
        .await;
        topo.check_alive()?;
        let sent = topo
            .sink_stats()
            .await
            .ok()
            .and_then(|v| v.get("delivered").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        say(format!(
            "{label}: {:.0}/{secs:.0} s, {:.0} s left; e-mails delivered so far {sent}",
            start.elapsed().as_secs_f64().min(secs),
            (secs - start.elapsed().as_secs_f64()).max(0.0)
        ));
    }
    let mut out = Vec::new();
    for r in running {
        out.push(r.finish().await?);
    }
    Ok((t0, out))
}

/// Rate-limit decisions replayed for every key of `recs`.
#[derive(Clone, Debug, Serialize, Default)]
pub(crate) struct LimitSummary {
    /// Each over-limit client.
    pub(crate) overlimit: Vec<KeyCheck>,
    /// Browse users: 429s seen and expected by the replay (close pairs of one user).
    pub(crate) browse_keys: u64,
    pub(crate) browse_429: u64,
    pub(crate) browse_expected_429: u64,
    pub(crate) browse_ambiguous: u64,
    /// Keys (any class) whose allowed count is outside the replay's tolerance or above the
    /// hard bound.
    pub(crate) keys_off: u64,
    pub(crate) keys_checked: u64,
}

pub(crate) fn limit_summary(
    recs: &[&Rec],
    common: &Common,
    slack_ms: f64,
    fallback: impl Fn(&str) -> u64,
) -> LimitSummary {
    let mut s = LimitSummary::default();
    for (key, rs) in stats::by_key(recs.iter().copied()) {
        if key.is_empty() {
            continue;
        }
        let q = common.quota_of(&key);
        let c = stats::gcra_check(
            &key,
            &rs,
            q.limit(),
            q.window_ms() as f64,
            q.burst_size(),
            slack_ms,
            fallback(&key),
        );
        s.keys_checked += 1;
        if !c.ok {
            s.keys_off += 1;
        }
        if key.starts_with("user-") {
            s.browse_keys += 1;
            s.browse_429 += c.limited_429;
            s.browse_expected_429 += c.requests - c.expected_allowed;
            s.browse_ambiguous += c.ambiguous;
        }
        if GREEDY.contains(&key.as_str()) {
            s.overlimit.push(c);
        }
    }
    s
}

/// Cache counters of one namespace over a window (deltas of `/admin/metrics`, summed over
/// the instances).
#[derive(Clone, Debug, Serialize, Default)]
pub(crate) struct CacheFigures {
    pub(crate) namespace: String,
    pub(crate) l1_hits: f64,
    pub(crate) l2_hits: f64,
    pub(crate) misses: f64,
    pub(crate) stale_served: f64,
    pub(crate) loads: f64,
    pub(crate) hit_ratio: Option<f64>,
}

pub(crate) async fn cache_snapshot(topo: &Topology) -> Vec<Vec<(String, f64)>> {
    let mut v = Vec::new();
    for i in &topo.instances {
        v.push(
            topo.metrics(&format!("{}/admin/metrics", i.base()))
                .await
                .unwrap_or_default(),
        );
    }
    v
}

/// The growth of a counter over a window, summed over the instances.
pub(crate) fn metric_delta(
    before: &[Vec<(String, f64)>],
    after: &[Vec<(String, f64)>],
    name: &str,
) -> f64 {
    let a: f64 = after.iter().map(|m| metric_sum(m, name, "")).sum();
    let b: f64 = before.iter().map(|m| metric_sum(m, name, "")).sum();
    (a - b).max(0.0)
}

pub(crate) fn cache_delta(
    before: &[Vec<(String, f64)>],
    after: &[Vec<(String, f64)>],
    ns: &str,
) -> CacheFigures {
    let label = format!("namespace=\"{ns}\"");
    let sum = |name: &str| -> f64 {
        let a: f64 = after.iter().map(|m| metric_sum(m, name, &label)).sum();
        let b: f64 = before.iter().map(|m| metric_sum(m, name, &label)).sum();
        (a - b).max(0.0)
    };
    let mut f = CacheFigures {
        namespace: ns.to_string(),
        l1_hits: sum("celeriac_cache_l1_hits_total"),
        l2_hits: sum("celeriac_cache_l2_hits_total"),
        misses: sum("celeriac_cache_misses_total"),
        stale_served: sum("celeriac_cache_stale_served_total"),
        loads: sum("celeriac_cache_loads_total"),
        hit_ratio: None,
    };
    let all = f.l1_hits + f.l2_hits + f.misses;
    f.hit_ratio = (all > 0.0).then(|| (f.l1_hits + f.l2_hits) / all);
    f
}

/// One scenario's figures.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Scenario {
    pub(crate) backend: Backend,
    pub(crate) cache: bool,
    pub(crate) instances: usize,
    pub(crate) workers: usize,
    pub(crate) rate: f64,
    pub(crate) measured_s: f64,
    pub(crate) routes: Vec<RouteStats>,
    pub(crate) listing_only: Option<RouteStats>,
    pub(crate) capacity_ok_rps: Option<f64>,
    pub(crate) capacity_p99_ms: Option<f64>,
    pub(crate) emails: EmailCheck,
    pub(crate) drain_s: f64,
    pub(crate) limits: LimitSummary,
    /// The limiter's store calls that failed or timed out during the mix (decided by the
    /// local fallback instead).
    pub(crate) limiter_store_errors: f64,
    pub(crate) cache_listing: CacheFigures,
    pub(crate) oha_errors: Vec<(String, u64)>,
    #[serde(skip)]
    pub(crate) series: Vec<(String, Vec<Second>)>,
}

/// A target of the issue, checked.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) measured: String,
    pub(crate) met: Option<bool>,
}

#[derive(Serialize)]
struct Report {
    scenarios: Vec<Scenario>,
    limit_overhead: Option<limitprobe::Overhead>,
    targets: Vec<Target>,
    chart_svg: Option<String>,
    chart_png: Option<String>,
}

pub(crate) fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

async fn scenario(
    env: &Env,
    a: &RunArgs,
    template: &Path,
    backend: Backend,
    cache: bool,
) -> Result<Scenario> {
    let label = format!(
        "{} cache {}",
        backend.as_str(),
        if cache { "on" } else { "off" }
    );
    let (instances, workers) = match backend {
        Backend::Redis => (2, 2),
        Backend::Embedded => (1, 1),
    };
    let dir = env.work.join(format!(
        "{}-cache-{}",
        backend.as_str(),
        if cache { "on" } else { "off" }
    ));
    say(format!(
        "{label}: starting {instances} instance(s), {workers} worker(s), the SMTP sink (200 ms)"
    ));
    let plan = Plan {
        backend,
        cache,
        instances,
        workers,
        smtp_delay: "200ms".into(),
        premium_keys: premium_keys(),
    };
    let mut topo = Topology::start(&env.shop, template, &dir, &plan).await?;
    let cat = Catalog::read(&topo.shop_db)?;
    let per_minute = env.common.limit_per_minute;
    let digits = user_digits(a.rate * 0.8, per_minute);

    // The listing alone at the target rate.
    let mut listing_only = None;
    if a.listing_duration > Duration::ZERO && backend == Backend::Redis && cache {
        let per = a.listing_rate / topo.instances.len() as f64;
        let classes: Vec<Class> = topo
            .instances
            .iter()
            .map(|i| Class {
                route: "listing",
                instance: i.name.clone(),
                rate: Some(per),
                url_regex: format!(
                    r"http://127.0.0.1:{}/products\?{}&api_key=solo-[0-9]{{{}}}",
                    i.port,
                    cat.listing_regex(),
                    user_digits(a.listing_rate, per_minute)
                ),
                method: "GET",
                bodies: None,
                conns: 64,
            })
            .collect();
        let secs = a.listing_duration.as_secs_f64() + 3.0;
        let (t0, out) = drive(
            env,
            &mut topo,
            classes,
            secs,
            "listing",
            &format!("{label}: listing only at {:.0}/s", a.listing_rate),
        )
        .await?;
        let recs: Vec<&Rec> = out.iter().flat_map(|o| o.recs.iter()).collect();
        let errs = out.iter().flat_map(|o| o.errors.iter()).map(|e| e.1).sum();
        listing_only = Some(stats::route_stats(
            "listing",
            &recs,
            t0 + 3000.0,
            t0 + secs * 1000.0,
            errs,
        ));
    }

    // The mix.
    let before = cache_snapshot(&topo).await;
    let classes = mix_classes(&topo, &cat, a.rate, &dir, digits)?;
    let warm = a.warmup.as_secs_f64();
    let secs = warm + a.duration.as_secs_f64();
    let (t0, out) = drive(
        env,
        &mut topo,
        classes,
        secs,
        "mix",
        &format!("{label}: mix at {:.0}/s", a.rate),
    )
    .await?;
    let load_end = Instant::now();
    say(format!(
        "{label}: waiting for every order's e-mail (at most {:?})",
        a.drain_timeout
    ));
    let drain_s = emails::drain(&topo.shop_db, a.drain_timeout, |all, left| {
        say(format!(
            "{label}: {left} of {all} orders still without their e-mail"
        ));
    })
    .await?;
    // Cache counters reach /metrics every 10 s.
    let since = load_end.elapsed();
    if since < Duration::from_secs(11) {
        tokio::time::sleep(Duration::from_secs(11) - since).await;
    }
    let after = cache_snapshot(&topo).await;
    let cache_listing = cache_delta(&before, &after, "listing");
    let email_check = emails::check(&topo.shop_db, &topo.mail_log)?;

    let from = t0 + warm * 1000.0;
    let to = t0 + secs * 1000.0;
    let mut routes = Vec::new();
    let mut oha_errors: Vec<(String, u64)> = Vec::new();
    for route in ["browse", "order", "update", "overlimit"] {
        let recs: Vec<&Rec> = out
            .iter()
            .filter(|o| o.class.route == route)
            .flat_map(|o| o.recs.iter())
            .collect();
        let errs: u64 = out
            .iter()
            .filter(|o| o.class.route == route)
            .flat_map(|o| o.errors.iter())
            .map(|e| e.1)
            .sum();
        routes.push(stats::route_stats(route, &recs, from, to, errs));
    }
    for o in &out {
        for (e, n) in &o.errors {
            oha_errors.push((format!("{} {}: {e}", o.class.route, o.class.instance), *n));
        }
    }
    let all: Vec<&Rec> = out.iter().flat_map(|o| o.recs.iter()).collect();
    // Store calls of the limiter that failed or timed out (50 ms): those decisions were made
    // by each instance's local fallback (fail-open), which allows up to a whole quota per
    // instance on top of the store's.
    let store_errors = metric_delta(&before, &after, "celeriac_rate_limit_store_errors_total");
    let n_inst = topo.instances.len() as u64;
    let common = &env.common;
    let limits = limit_summary(&all, common, 3.0, |key| {
        if store_errors > 0.0 {
            let q = common.quota_of(key);
            let t = q.window_ms() as f64 / f64::from(q.limit().max(1));
            n_inst * (1 + u64::from(q.burst_size()) + ((secs * 1000.0) / t).ceil() as u64)
        } else {
            0
        }
    });
    let series = ["browse", "order"]
        .iter()
        .map(|r| {
            let recs: Vec<&Rec> = all.iter().copied().filter(|x| x.route == *r).collect();
            (r.to_string(), stats::per_second(&recs, t0))
        })
        .collect();

    // Closed-loop capacity of the listing.
    let (mut capacity_ok_rps, mut capacity_p99_ms) = (None, None);
    if a.capacity_duration > Duration::ZERO {
        let classes: Vec<Class> = topo
            .instances
            .iter()
            .map(|i| Class {
                route: "capacity",
                instance: i.name.clone(),
                rate: None,
                url_regex: format!(
                    r"http://127.0.0.1:{}/products\?{}&api_key=cap-[0-9]{{5}}",
                    i.port,
                    cat.listing_regex()
                ),
                method: "GET",
                bodies: None,
                conns: a.capacity_conns,
            })
            .collect();
        let secs = a.capacity_duration.as_secs_f64() + 2.0;
        let (c0, out) = drive(
            env,
            &mut topo,
            classes,
            secs,
            "capacity",
            &format!("{label}: listing capacity (closed loop)"),
        )
        .await?;
        let recs: Vec<&Rec> = out.iter().flat_map(|o| o.recs.iter()).collect();
        let s = stats::route_stats("capacity", &recs, c0 + 2000.0, c0 + secs * 1000.0, 0);
        capacity_ok_rps = Some(s.ok_rps);
        capacity_p99_ms = s.p99_ms;
    }
    topo.stop();
    Ok(Scenario {
        backend,
        cache,
        instances,
        workers,
        rate: a.rate,
        measured_s: a.duration.as_secs_f64(),
        routes,
        listing_only,
        capacity_ok_rps,
        capacity_p99_ms,
        emails: email_check,
        drain_s,
        limits,
        limiter_store_errors: store_errors,
        cache_listing,
        oha_errors,
        series,
    })
}

/// `shop-load run`.
pub(crate) async fn run(env: &Env, a: &RunArgs) -> Result<bool> {
    let template = super::topo::seed_template(&env.shop, &env.work.join("template"))?;
    let mut scenarios = Vec::new();
    for b in &a.backends {
        let backend = match b.as_str() {
            "none" => continue,
            "redis" => Backend::Redis,
            "embedded" | "sqlite" => Backend::Embedded,
            other => bail!("unknown backend `{other}` (redis, embedded)"),
        };
        for c in &a.cache {
            let cache = match c.as_str() {
                "on" => true,
                "off" => false,
                other => bail!("unknown cache setting `{other}` (on, off)"),
            };
            scenarios.push(scenario(env, a, &template, backend, cache).await?);
        }
    }
    let mut overhead = None;
    if a.limit_overhead_duration > Duration::ZERO {
        overhead = Some(limitprobe::measure(env, a.limit_overhead_duration, a.listing_rate).await?);
    }
    let targets = targets(&scenarios, overhead.as_ref());
    let (svg, png) = match scenarios
        .iter()
        .find(|s| s.backend == Backend::Redis && s.cache)
    {
        Some(s) => {
            let (svg, png) = chart::render(
                &env.docs,
                "shop-load",
                &format!(
                    "Load run: Redis, 2 instances, cache on, {:.0} req/s",
                    s.rate
                ),
                &s.series,
                &[],
            )?;
            (Some(svg), png)
        }
        None => (None, None),
    };
    let report = Report {
        scenarios,
        limit_overhead: overhead,
        targets,
        chart_svg: svg.map(|p| p.display().to_string()),
        chart_png: png.map(|p| p.display().to_string()),
    };
    if env.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(true)
}

fn targets(sc: &[Scenario], overhead: Option<&limitprobe::Overhead>) -> Vec<Target> {
    let mut t = Vec::new();
    let rc = sc.iter().find(|s| s.backend == Backend::Redis && s.cache);
    let ru = sc.iter().find(|s| s.backend == Backend::Redis && !s.cache);
    if let Some(l) = rc.and_then(|s| s.listing_only.as_ref()) {
        t.push(Target {
            name: "cached listing p99 < 2 ms at 2,000 req/s (Redis, listing only)".into(),
            measured: format!(
                "p99 {} ms at {:.0} req/s answered ({} errors)",
                fmt_ms(l.p99_ms),
                l.rps,
                l.errors
            ),
            met: l.p99_ms.map(|p| p < 2.0),
        });
    }
    if let Some(b) = rc.and_then(|s| s.routes.iter().find(|r| r.route == "browse")) {
        t.push(Target {
            name: "cached listing p99 in the full mix (Redis; each update invalidates one page)"
                .into(),
            measured: format!("p99 {} ms at {:.0} req/s", fmt_ms(b.p99_ms), b.rps),
            met: b.p99_ms.map(|p| p < 2.0),
        });
    }
    if let (Some(c), Some(u)) = (
        rc.and_then(|s| s.capacity_ok_rps),
        ru.and_then(|s| s.capacity_ok_rps),
    ) {
        t.push(Target {
            name: "cached listing ≥ 20× the uncached requests/s (Redis, closed loop)".into(),
            measured: format!("{c:.0} vs {u:.0} req/s: {:.1}×", c / u.max(1e-9)),
            met: Some(c >= 20.0 * u),
        });
    }
    if let Some(o) = rc.and_then(|s| s.routes.iter().find(|r| r.route == "order")) {
        t.push(Target {
            name: "POST /orders p99 < 5 ms with SMTP at 200 ms (Redis, mix)".into(),
            measured: format!("p99 {} ms", fmt_ms(o.p99_ms)),
            met: o.p99_ms.map(|p| p < 5.0),
        });
    }
    if let Some(o) = overhead {
        t.push(Target {
            name: "rate limiting adds < 100 µs at p99 (same route with and without RateLimitLayer, Redis)".into(),
            measured: format!(
                "p99 {:.3} ms with, {:.3} ms without: {:+.0} µs; p50 {:+.0} µs",
                o.limited.p99_ms.unwrap_or(f64::NAN),
                o.plain.p99_ms.unwrap_or(f64::NAN),
                o.p99_added_us,
                o.p50_added_us
            ),
            met: Some(o.p99_added_us < 100.0),
        });
        t.push(Target {
            name: "the layer alone, over an in-process limiter (no store round trip)".into(),
            measured: format!(
                "p99 {:.3} ms with, {:.3} ms without: {:+.0} µs",
                o.local.p99_ms.unwrap_or(f64::NAN),
                o.plain.p99_ms.unwrap_or(f64::NAN),
                o.local_p99_added_us
            ),
            met: Some(o.local_p99_added_us < 100.0),
        });
    }
    t
}

fn print_report(r: &Report) {
    println!();
    println!("== Latency per route (2xx answers, ms) and requests/s, measured window");
    println!(
        "{:<9} {:<5} {:<10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6}",
        "BACKEND",
        "CACHE",
        "ROUTE",
        "REQ/S",
        "OK/S",
        "P50",
        "P99",
        "P99.9",
        "MAX",
        "429",
        "OTHER",
        "ERR"
    );
    for s in &r.scenarios {
        for x in s.routes.iter().chain(s.listing_only.iter()) {
            println!(
                "{:<9} {:<5} {:<10} {:>9.1} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6}",
                s.backend.as_str(),
                if s.cache { "on" } else { "off" },
                x.route,
                x.rps,
                x.ok_rps,
                fmt_ms(x.p50_ms),
                fmt_ms(x.p99_ms),
                fmt_ms(x.p999_ms),
                fmt_ms(x.max_ms),
                x.limited_429,
                x.other,
                x.errors
            );
        }
    }
    println!();
    println!("== Listing capacity (closed loop), e-mails, cache");
    println!(
        "{:<9} {:<5} {:>12} {:>9} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9}",
        "BACKEND",
        "CACHE",
        "CAPACITY/S",
        "CAP P99",
        "ORDERS",
        "1 E-MAIL",
        "MISSING",
        "TWICE",
        "RESENDS",
        "HIT %"
    );
    for s in &r.scenarios {
        println!(
            "{:<9} {:<5} {:>12} {:>9} {:>8} {:>10} {:>8} {:>8} {:>8} {:>9}",
            s.backend.as_str(),
            if s.cache { "on" } else { "off" },
            s.capacity_ok_rps.map_or("-".into(), |v| format!("{v:.0}")),
            fmt_ms(s.capacity_p99_ms),
            s.emails.orders,
            s.emails.exactly_one,
            s.emails.missing,
            s.emails.delivered_twice,
            s.emails.smtp_resends_caught,
            s.cache_listing
                .hit_ratio
                .map_or("-".into(), |h| format!("{:.1}", h * 100.0))
        );
    }
    println!();
    println!("== Over-limit clients (the shop's GCRA quota replayed over the send times; ± = min(decisions near a boundary, 2): a saturated key is allowed on a fixed grid)");
    println!(
        "{:<9} {:<5} {:<10} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9} {:>4}",
        "BACKEND", "CACHE", "KEY", "SENT", "ALLOWED", "429", "EXPECTED", "±", "HARD MAX", "OK"
    );
    for s in &r.scenarios {
        for k in &s.limits.overlimit {
            println!(
                "{:<9} {:<5} {:<10} {:>8} {:>8} {:>8} {:>9} {:>6} {:>9} {:>4}",
                s.backend.as_str(),
                if s.cache { "on" } else { "off" },
                k.key,
                k.requests,
                k.allowed,
                k.limited_429,
                k.expected_allowed,
                k.tolerance,
                k.hard_max,
                if k.ok { "yes" } else { "NO" }
            );
        }
        println!(
            "{:<9} {:<5} browse users: {} keys, {} 429s, replay expects {} (±{}); keys outside tolerance: {} of {}; limiter store errors (local fallback decided) {:.0}",
            s.backend.as_str(),
            if s.cache { "on" } else { "off" },
            s.limits.browse_keys,
            s.limits.browse_429,
            s.limits.browse_expected_429,
            s.limits.browse_ambiguous,
            s.limits.keys_off,
            s.limits.keys_checked,
            s.limiter_store_errors
        );
    }
    if let Some(o) = &r.limit_overhead {
        println!();
        println!(
            "== Rate-limit layer: the same trivial route with and without RateLimitLayer (Redis store), {:.0} req/s each",
            o.rate
        );
        println!(
            "without: p50 {} p99 {} p99.9 {} ms; with (Redis): p50 {} p99 {} p99.9 {} ms; added p50 {:+.0} µs, p99 {:+.0} µs",
            fmt_ms(o.plain.p50_ms),
            fmt_ms(o.plain.p99_ms),
            fmt_ms(o.plain.p999_ms),
            fmt_ms(o.limited.p50_ms),
            fmt_ms(o.limited.p99_ms),
            fmt_ms(o.limited.p999_ms),
            o.p50_added_us,
            o.p99_added_us
        );
        println!(
            "with the layer over an in-process limiter: p50 {} p99 {} p99.9 {} ms; added p99 {:+.0} µs",
            fmt_ms(o.local.p50_ms),
            fmt_ms(o.local.p99_ms),
            fmt_ms(o.local.p999_ms),
            o.local_p99_added_us
        );
    }
    println!();
    println!("== Targets");
    for t in &r.targets {
        let v = match t.met {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        println!("{v:<8} {}: {}", t.name, t.measured);
    }
    if let Some(p) = &r.chart_png {
        println!("\nchart: {p}");
    } else if let Some(p) = &r.chart_svg {
        println!("\nchart: {p} (no PNG: chromium not found)");
    }
}
