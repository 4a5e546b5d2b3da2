//! Latency over time as an SVG written by hand (log scale, p50 and p99 per second for the
//! listing and for orders, faults shaded or marked), turned into a PNG by headless Chromium.

use super::say;
use super::stats::Second;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fault on the chart: a span (`to` > `from`) or an instant, in seconds from the start.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Marker {
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) label: String,
}

const W: f64 = 1100.0;
const H: f64 = 520.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `<dir>/<name>.svg` and, when Chromium is found, `<dir>/<name>.png`.
pub(crate) fn render(
    dir: &Path,
    name: &str,
    title: &str,
    series: &[(String, Vec<Second>)],
    markers: &[Marker],
) -> Result<(PathBuf, Option<PathBuf>)> {
    let svg = svg(title, series, markers);
    let svg_path = dir.join(format!("{name}.svg"));
    std::fs::write(&svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;
    let png = dir.join(format!("{name}.png"));
    let png = match to_png(&svg_path, &png) {
        Ok(()) => Some(png),
        Err(e) => {
            say(format!(
                "chart: no PNG ({e:#}); the SVG is {}",
                svg_path.display()
            ));
            None
        }
    };
    Ok((svg_path, png))
}

fn svg(title: &str, series: &[(String, Vec<Second>)], markers: &[Marker]) -> String {
    let t_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|s| s.t as f64 + 1.0))
        .chain(markers.iter().map(|m| m.to))
        .fold(1.0f64, f64::max);
    let vals = series
        .iter()
        .flat_map(|(_, v)| v.iter().flat_map(|s| [s.p50_ms, s.p99_ms]))
        .flatten();
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in vals {
        if v > 0.0 {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        lo = 0.1;
        hi = 10.0;
    }
    let y_lo = 10f64.powf(lo.log10().floor()).max(0.01);
    let y_hi = 10f64.powf(hi.log10().ceil()).max(y_lo * 10.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / t_max * pw;
    let y = |v: f64| {
        let v = v.clamp(y_lo, y_hi);
        TOP + ph - (v.log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10()) * ph
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Liberation Sans, Arial, sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>
"#,
        esc(title)
    );
    // Faults.
    for (i, m) in markers.iter().enumerate() {
        let ly = TOP + 12.0 + (i % 4) as f64 * 13.0;
        let (fill, ink) = if m.label.contains("breaker") {
            ("#6c8ebf", "#2c4f80")
        } else if m.label.contains("Redis") {
            ("#c0392b", "#8e1f14")
        } else {
            ("#f4a261", "#9c4a00")
        };
        if m.to > m.from + 0.5 {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="{fill}" fill-opacity="0.16"/><text x="{:.1}" y="{ly:.1}" fill="{ink}">{}</text>"##,
                x(m.from),
                (x(m.to) - x(m.from)).max(1.0),
                x(m.from) + 3.0,
                esc(&m.label)
            );
        } else {
            let _ = writeln!(
                s,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1:.1}" stroke="#c0392b" stroke-dasharray="3,3"/><text x="{2:.1}" y="{3:.1}" fill="#c0392b" font-size="10">{4}</text>"##,
                x(m.from),
                TOP + ph,
                x(m.from) + 2.0,
                TOP + ph - 4.0 - (i % 3) as f64 * 11.0,
                esc(&m.label)
            );
        }
    }
    // Axes and grid.
    let mut d = y_lo;
    while d <= y_hi * 1.0001 {
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            LEFT + pw,
            y(d),
            LEFT - 6.0,
            y(d) + 4.0,
            if d < 1.0 {
                format!("{d} ms")
            } else {
                format!("{d:.0} ms")
            }
        );
        d *= 10.0;
    }
    let step = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0]
        .into_iter()
        .find(|st| t_max / st <= 12.0)
        .unwrap_or(300.0);
    let mut t = 0.0;
    while t <= t_max {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#999"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4:.0} s</text>"##,
            x(t),
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 18.0,
            t
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    // Lines.
    let colours = [
        ("#1f77b4", "#1f77b4"),
        ("#2ca02c", "#2ca02c"),
        ("#9467bd", "#9467bd"),
    ];
    let mut legend_x = LEFT;
    for (i, (name, secs)) in series.iter().enumerate() {
        let (c, _) = colours[i % colours.len()];
        for (q, dash, get) in [
            (
                "p50",
                "",
                (|s: &Second| s.p50_ms) as fn(&Second) -> Option<f64>,
            ),
            ("p99", "5,3", |s: &Second| s.p99_ms),
        ] {
            let pts: Vec<String> = secs
                .iter()
                .filter_map(|sec| {
                    get(sec).map(|v| format!("{:.1},{:.1}", x(sec.t as f64 + 0.5), y(v)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{c}" stroke-width="1.5" stroke-dasharray="{dash}" points="{}"/>"#,
                pts.join(" ")
            );
            let ly = H - 22.0;
            let _ = writeln!(
                s,
                r#"<line x1="{legend_x:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{} {q}</text>"#,
                legend_x + 24.0,
                legend_x + 28.0,
                ly + 4.0,
                esc(name)
            );
            legend_x += 150.0;
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">latency per second of sending (2xx answers, log scale)</text>"##,
        W - RIGHT,
        H - 18.0
    );
    s.push_str("</svg>\n");
    s
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn to_png(svg: &Path, png: &Path) -> Result<()> {
    let bin = chromium().context("chromium not found on PATH (apt-get install chromium)")?;
    let profile = std::env::temp_dir().join(format!("shop-load-chromium-{}", std::process::id()));
    let mut child = std::process::Command::new(bin)
        .arg("--headless")
        .arg("--no-sandbox")
        .arg("--disable-gpu")
        .arg("--hide-scrollbars")
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={},{}", W as u32, H as u32))
        .arg(format!("file://{}", svg.canonicalize()?.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let until = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::fs::remove_dir_all(&profile);
    if !status.success() || !png.exists() {
        anyhow::bail!("chromium failed ({status})");
    }
    Ok(())
}
