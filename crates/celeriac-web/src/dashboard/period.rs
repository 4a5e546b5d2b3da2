//! The period a page's charts cover, from one hour to 90 days, and the series they draw
//! from the stored history.

use super::layout::Line;
use celeriac::backend::{History, HistoryQuery, KvStore, Resolution};
use celeriac::clock::UnixMs;
use celeriac::deploys::{Deploy, Deploys};
use maud::{html, Markup};
use serde::Serialize;

/// The periods offered: name, length in ms, bucket size.
pub(crate) const PERIODS: &[(&str, i64, Resolution)] = &[
    ("1h", 3_600_000, Resolution::Minute),
    ("6h", 6 * 3_600_000, Resolution::Minute),
    ("24h", 24 * 3_600_000, Resolution::Minute),
    ("7d", 7 * 86_400_000, Resolution::Hour),
    ("30d", 30 * 86_400_000, Resolution::Hour),
    ("90d", 90 * 86_400_000, Resolution::Hour),
];

/// A chart's period.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Period {
    pub(crate) name: &'static str,
    pub(crate) span_ms: i64,
    pub(crate) resolution: Resolution,
}

impl Period {
    /// The period named `name` (one hour when unknown or absent).
    pub(crate) fn parse(name: Option<&str>) -> Self {
        let (name, span_ms, resolution) = PERIODS
            .iter()
            .find(|(n, _, _)| Some(*n) == name)
            .copied()
            .unwrap_or(PERIODS[0]);
        Period {
            name,
            span_ms,
            resolution,
        }
    }

    /// The history query of this period up to `now` (the current bucket included).
    pub(crate) fn query(&self, now: UnixMs) -> HistoryQuery {
        let end = self.resolution.start_of(now) + self.resolution.span_ms();
        HistoryQuery::new(self.resolution, end - self.span_ms, end)
    }
}

/// Successes and failures per bucket over a period.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Throughput {
    /// The period's name.
    pub(crate) period: String,
    /// Bucket starts (ms).
    pub(crate) x: Vec<UnixMs>,
    /// Attempts that succeeded per bucket.
    pub(crate) succeeded: Vec<u64>,
    /// Attempts that failed per bucket (retried, failed or dead).
    pub(crate) failed: Vec<u64>,
    /// Jobs enqueued per bucket.
    pub(crate) enqueued: Vec<u64>,
    /// New versions first seen in the period (deploys), which the chart marks.
    pub(crate) deploys: Vec<Deploy>,
}

impl Throughput {
    /// The throughput of `queue` (every queue when `None`) over `period`.
    pub(crate) async fn read<B: History + KvStore>(
        store: &B,
        period: Period,
        queue: Option<&str>,
        now: UnixMs,
    ) -> celeriac::Result<Self> {
        let mut q = period.query(now);
        q.queue = queue.map(str::to_string);
        let (from, to) = (q.from, q.to);
        let starts = q.starts()?;
        let entries = store.history(q).await?;
        let deploys = Deploys::load(store, now)
            .await?
            .seen
            .into_iter()
            .filter(|d| d.at >= from && d.at < to)
            .collect();
        let series = celeriac::history::series(&entries, &starts);
        let mut t = Throughput {
            period: period.name.to_string(),
            deploys,
            ..Throughput::default()
        };
        for (start, c) in series {
            t.x.push(start);
            t.succeeded.push(c.succeeded);
            t.failed.push(c.retried + c.failed + c.dead);
            t.enqueued.push(c.enqueued);
        }
        Ok(t)
    }

    /// The moments the chart marks.
    pub(crate) fn markers(&self) -> Vec<UnixMs> {
        self.deploys.iter().map(|d| d.at).collect()
    }

    /// The chart's lines.
    pub(crate) fn lines(&self) -> Vec<Line> {
        let f = |v: &[u64]| v.iter().map(|n| *n as f64).collect();
        vec![
            Line {
                label: "succeeded".to_string(),
                values: f(&self.succeeded),
            },
            Line {
                label: "failed".to_string(),
                values: f(&self.failed),
            },
            Line {
                label: "enqueued".to_string(),
                values: f(&self.enqueued),
            },
        ]
    }
}

/// Links to the other periods, keeping the rest of the query.
pub(crate) fn picker(req: &super::request::Req, current: &str) -> Markup {
    let path = req.here.split('?').next().unwrap_or("/");
    let mut pairs: Vec<(String, String)> = req
        .here
        .split_once('?')
        .and_then(|(_, q)| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    pairs.retain(|(k, _)| k != "period" && k != "notice" && k != "cursor");
    let links: Vec<(&str, String)> = PERIODS
        .iter()
        .map(|(name, _, _)| {
            let mut q = pairs.clone();
            q.push(("period".to_string(), (*name).to_string()));
            let query = serde_urlencoded::to_string(&q).unwrap_or_default();
            (*name, req.link(&format!("{path}?{query}")))
        })
        .collect();
    html! {
        nav.periods aria-label="period" {
            @for (name, href) in &links {
                a href=(href) class=[(*name == current).then_some("current")] { (name) }
            }
        }
    }
}
