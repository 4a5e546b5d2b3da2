//! A shop deployment for one run: the store (a private Redis, or the embedded SQLite file),
//! the SMTP sink with its 200 ms delay, `shop serve` instances and `shop worker` processes.

use super::procs::{free_port, wait_http, Proc, Redis};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which store the shop runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Backend {
    Redis,
    Embedded,
}

impl Backend {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Embedded => "embedded",
        }
    }
}

/// What to start.
pub(crate) struct Plan {
    pub(crate) backend: Backend,
    pub(crate) cache: bool,
    pub(crate) instances: usize,
    pub(crate) workers: usize,
    pub(crate) smtp_delay: String,
    pub(crate) premium_keys: Vec<String>,
}

/// A `shop serve` instance.
pub(crate) struct Instance {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) proc: Proc,
}

impl Instance {
    pub(crate) fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A `shop worker` process with its `/metrics` port.
pub(crate) struct WorkerProc {
    pub(crate) http_port: u16,
    pub(crate) proc: Proc,
}

/// Everything running for one scenario. Dropping it kills every process.
pub(crate) struct Topology {
    pub(crate) dir: PathBuf,
    pub(crate) url: String,
    pub(crate) shop_db: PathBuf,
    pub(crate) mail_log: PathBuf,
    pub(crate) sink_control: u16,
    pub(crate) redis: Option<Redis>,
    pub(crate) sink: Proc,
    pub(crate) instances: Vec<Instance>,
    pub(crate) workers: Vec<WorkerProc>,
    pub(crate) http: reqwest::Client,
}

/// Seeds a shop database once (`shop seed`), to be copied into each scenario.
pub(crate) fn seed_template(shop: &Path, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let db = dir.join("shop.db");
    if db.exists() {
        return Ok(db);
    }
    let out = std::process::Command::new(shop)
        .arg("seed")
        .env("SHOP_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("SHOP_DATA_DIR", dir)
        .env(
            "CELERIAC_URL",
            format!("sqlite://{}", dir.join("celeriac.db").display()),
        )
        .output()
        .with_context(|| format!("running {} seed", shop.display()))?;
    if !out.status.success() {
        bail!(
            "`shop seed` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The seed's own Celeriac file is not needed.
    let _ = std::fs::remove_file(dir.join("celeriac.db"));
    Ok(db)
}

fn copy_db(from: &Path, to: &Path) -> Result<()> {
    // Checkpointed by `shop seed`'s exit; copy the WAL too in case it was not.
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    for ext in ["-wal", "-shm"] {
        let f = PathBuf::from(format!("{}{ext}", from.display()));
        if f.exists() {
            std::fs::copy(&f, PathBuf::from(format!("{}{ext}", to.display())))?;
        }
    }
    Ok(())
}

impl Topology {
    /// Starts the store, the sink, the workers and the instances, and waits until each answers.
    pub(crate) async fn start(
        shop: &Path,
        template: &Path,
        dir: &Path,
        plan: &Plan,
    ) -> Result<Topology> {
        std::fs::create_dir_all(dir)?;
        let shop_db = dir.join("shop.db");
        copy_db(template, &shop_db)?;
        let mail_log = dir.join("mail.jsonl");
        let redis = match plan.backend {
            Backend::Redis => Some(Redis::start(dir).await?),
            Backend::Embedded => None,
        };
        let url = match &redis {
            Some(r) => r.url(),
            None => format!("sqlite://{}", dir.join("celeriac.db").display()),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let smtp = free_port()?;
        let control = free_port()?;
        let mut sink = Proc::new(
            "sink",
            shop,
            vec![
                "smtp-sink".into(),
                "--bind".into(),
                format!("127.0.0.1:{smtp}"),
                "--control".into(),
                format!("127.0.0.1:{control}"),
                "--log".into(),
                mail_log.display().to_string(),
                "--delay".into(),
                plan.smtp_delay.clone(),
            ],
            vec![],
            dir,
        );
        sink.start()?;
        wait_http(
            &http,
            &format!("http://127.0.0.1:{control}/stats"),
            Duration::from_secs(20),
            &mut sink,
        )
        .await?;
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let env = vec![
            ("CELERIAC_URL".to_string(), url.clone()),
            (
                "SHOP_DATABASE_URL".to_string(),
                format!("sqlite://{}", shop_db.display()),
            ),
            ("SHOP_SMTP".to_string(), format!("smtp://127.0.0.1:{smtp}")),
            ("SHOP_DATA_DIR".to_string(), data_dir.display().to_string()),
            ("CELERIAC_ALLOW_ROOT".to_string(), "true".to_string()),
            ("RUST_LOG".to_string(), "warn".to_string()),
        ];
        let mut workers = Vec::new();
        for i in 0..plan.workers {
            let port = free_port()?;
            let mut args = vec![
                "worker".to_string(),
                "--http".into(),
                format!("127.0.0.1:{port}"),
                "--concurrency".into(),
                "64".into(),
            ];
            if i == 0 {
                args.push("--beat".into());
            }
            let mut proc = Proc::new(&format!("worker-{}", i + 1), shop, args, env.clone(), dir);
            proc.start()?;
            workers.push(WorkerProc {
                http_port: port,
                proc,
            });
        }
        let mut instances = Vec::new();
        for i in 0..plan.instances {
            let port = free_port()?;
            let name = format!("shop-{}", (b'a' + i as u8) as char);
            let mut args = vec![
                "serve".to_string(),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
                "--instance".into(),
                name.clone(),
            ];
            if !plan.cache {
                args.push("--no-cache".into());
            }
            if !plan.premium_keys.is_empty() {
                args.push("--premium-keys".into());
                args.push(plan.premium_keys.join(","));
            }
            let mut proc = Proc::new(&name, shop, args, env.clone(), dir);
            proc.start()?;
            instances.push(Instance { name, port, proc });
        }
        let mut topo = Topology {
            dir: dir.to_path_buf(),
            url,
            shop_db,
            mail_log,
            sink_control: control,
            redis,
            sink,
            instances,
            workers,
            http,
        };
        for i in 0..topo.instances.len() {
            let u = format!("{}/healthz", topo.instances[i].base());
            wait_http(
                &topo.http,
                &u,
                Duration::from_secs(60),
                &mut topo.instances[i].proc,
            )
            .await?;
        }
        for i in 0..topo.workers.len() {
            topo.wait_worker(i).await?;
        }
        Ok(topo)
    }

    pub(crate) async fn wait_worker(&mut self, i: usize) -> Result<()> {
        let u = format!("http://127.0.0.1:{}/livez", self.workers[i].http_port);
        let http = self.http.clone();
        wait_http(
            &http,
            &u,
            Duration::from_secs(60),
            &mut self.workers[i].proc,
        )
        .await
    }

    /// `POST` to the sink's control API.
    pub(crate) async fn sink_control(&self, path: &str) -> Result<()> {
        let u = format!("http://127.0.0.1:{}{path}", self.sink_control);
        let r = self.http.post(&u).send().await?;
        if !r.status().is_success() {
            bail!("sink control {path}: {}", r.status());
        }
        Ok(())
    }

    /// The sink's `/stats`.
    pub(crate) async fn sink_stats(&self) -> Result<serde_json::Value> {
        let u = format!("http://127.0.0.1:{}/stats", self.sink_control);
        Ok(self.http.get(&u).send().await?.json().await?)
    }

    /// A Prometheus text page, summed by metric name and label set.
    pub(crate) async fn metrics(&self, url: &str) -> Result<Vec<(String, f64)>> {
        let text = self.http.get(url).send().await?.text().await?;
        Ok(parse_prometheus(&text))
    }

    /// Every process still running? Names the first that is not.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if !self.sink.running() {
            bail!("the SMTP sink exited:\n{}", self.sink.tail(20));
        }
        for i in &mut self.instances {
            if !i.proc.running() {
                bail!("{} exited:\n{}", i.name, i.proc.tail(30));
            }
        }
        Ok(())
    }

    /// Stops everything (SIGTERM, then SIGKILL).
    pub(crate) fn stop(&mut self) {
        for i in &mut self.instances {
            i.proc.stop(Duration::from_secs(5));
        }
        for w in &mut self.workers {
            w.proc.stop(Duration::from_secs(5));
        }
        self.sink.stop(Duration::from_secs(3));
        if let Some(r) = &mut self.redis {
            r.proc.stop(Duration::from_secs(5));
        }
    }
}

/// `name{labels} value` lines of a Prometheus text page.
pub(crate) fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The sum of the series of `name` whose labels contain `label` (e.g. `namespace="listing"`).
pub(crate) fn metric_sum(m: &[(String, f64)], name: &str, label: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            (k == name || k.starts_with(&format!("{name}{{")))
                && (label.is_empty() || k.contains(label))
        })
        .map(|(_, v)| v)
        .sum()
}
