//! The application: a backend chosen by URL, the registered tasks, and a client.

use crate::{Client, Clock, Registry, Result, Task, TaskDef, Worker};
use celeriac_core::redact::RedactedUrl;
use celeriac_core::schedule::{self, Schedule};
use celeriac_core::{AsClient, Beat, Bounds};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::any_backend::AnyBackend;

/// The URL used when none is given: a SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://celeriac.db";

/// An application: where jobs are stored and which tasks it knows.
#[derive(Clone)]
pub struct App {
    client: Client<AnyBackend>,
    registry: Arc<Registry>,
    url: String,
    schedules: Arc<[Schedule]>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("url", &RedactedUrl(&self.url))
            .field("tasks", &self.registry.names())
            .field("schedules", &self.schedules.len())
            .finish()
    }
}

impl App {
    /// Starts building an application.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The client that enqueues and reads results.
    pub fn client(&self) -> &Client<AnyBackend> {
        &self.client
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<AnyBackend> {
        self.client.backend()
    }

    /// The registered tasks.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The backend URL, as given: it may hold a password. Show
    /// [`redacted_url`](Self::redacted_url) instead.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend URL with its secrets masked (`redis://user:***@host`), for people and logs.
    pub fn redacted_url(&self) -> String {
        celeriac_core::redact::url(&self.url)
    }

    /// A worker for the registered tasks (configure it with [`Worker::config`]), checking
    /// its queue names and the workflow steps it enqueues against the application's
    /// [`AppBuilder::bounds`].
    pub fn worker(&self) -> Worker<AnyBackend> {
        Worker::new(self.backend().clone(), self.registry.clone())
            .clock(self.client.clock().clone())
            .bounds(*self.client.bounds())
    }

    /// The periodic schedules defined in code and in schedule files.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// A scheduler for the application's schedules (configure it with [`Beat::config`]; run
    /// it with [`Beat::run`]), on the application's clock.
    ///
    /// # Errors
    /// A schedule whose task is not registered.
    pub fn beat(&self) -> Result<Beat<AnyBackend>> {
        Beat::new(self.backend().clone(), self.schedules.to_vec())?
            .registry(self.registry.clone())?
            .clock(self.client.clock().clone())
            .bounds(*self.client.bounds())
    }
}

impl AsClient for App {
    type Backend = AnyBackend;
    fn client(&self) -> &Client<AnyBackend> {
        &self.client
    }
}

/// Builds an [`App`].
pub struct AppBuilder {
    url: Option<String>,
    registry: Registry,
    clock: Option<Arc<dyn Clock>>,
    bounds: Bounds,
    schedules: Vec<Schedule>,
    schedule_files: Vec<PathBuf>,
    shared_breakers: Vec<(
        crate::breaker::CircuitBreaker,
        crate::breaker::SharedOptions,
    )>,
}

impl Default for AppBuilder {
    fn default() -> Self {
        Self {
            url: None,
            registry: Registry::new(),
            clock: None,
            bounds: Bounds::default(),
            schedules: Vec::new(),
            schedule_files: Vec::new(),
            shared_breakers: Vec::new(),
        }
    }
}

impl AppBuilder {
    /// The backend URL: `sqlite://path`, `sqlite::memory:`, `redis://host:port`, `rediss://`,
    /// `redis+cluster://h1:p1,h2:p2`, `redis+sentinel://s1:p1/name` (default: [`DEFAULT_URL`]).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Registers a task.
    pub fn task<T: Task>(mut self) -> Self {
        self.registry.register::<T>();
        self
    }

    /// Registers a task definition.
    pub fn register(mut self, def: TaskDef) -> Self {
        self.registry.insert(def);
        self
    }

    /// Registers a circuit breaker that tasks name with `#[task(breaker = "...")]` (or
    /// [`TaskOptions::breaker`](crate::TaskOptions)): while it is open their jobs wait out
    /// the open period without using an attempt. [`AppBuilder::build`] fails when a task
    /// names a breaker that is not registered.
    pub fn breaker(mut self, breaker: crate::breaker::CircuitBreaker) -> Self {
        self.registry.breaker(breaker);
        self
    }

    /// Registers a circuit breaker shared through the application's backend (see
    /// [`SharedBreaker`](crate::breaker::SharedBreaker)): while the store holds it open every
    /// worker of the fleet defers its tasks' jobs, and in half-open only the breaker's
    /// `half_open_probes` jobs run across the fleet. [`AppBuilder::build`] starts its sync
    /// (every `options.sync_interval`, for as long as the application lives); the breaker is
    /// then [`Registry::get_guard`]. Call it after [`AppBuilder::registry`], which replaces
    /// the registered breakers.
    pub fn shared_breaker(
        mut self,
        breaker: crate::breaker::CircuitBreaker,
        options: crate::breaker::SharedOptions,
    ) -> Self {
        self.shared_breakers.push((breaker, options));
        self
    }

    /// Uses these registered tasks.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Registers a cache warmer (see [`crate::cache::CacheWarmer`]) for its namespace in this
    /// process, and the built-in task `celeriac.cache.warm` that runs it: warm with
    /// `celeriac cache warm <namespace>`, or by a job (on a schedule, say) that a worker runs.
    /// Call it after [`AppBuilder::registry`], which replaces the registered tasks.
    pub fn cache_warmer(mut self, warmer: impl crate::cache::Warmer<AnyBackend>) -> Self {
        crate::register_cache_warmer(warmer);
        self.registry.register::<crate::WarmCache>();
        self
    }

    /// Adds a periodic schedule (see [`Schedule::builder`]); `celeriac beat` fires it.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// Adds the schedules of a TOML file (`[[schedule]]` tables, see
    /// [`celeriac_core::schedule::parse_toml`]), read by [`AppBuilder::build`].
    pub fn schedules_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.schedule_files.push(path.into());
        self
    }

    /// Uses an injected clock (tests) in place of the store's fleet clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The largest job the application enqueues (default [`Bounds::default`]: 1 MiB of
    /// payload, 64 headers in 16 KiB, unique keys of 512 bytes, queue and task names of 200
    /// bytes): a job over any bound is refused with an error naming it, before it reaches the
    /// store. Its workers and beat check against the same bounds, and its workers store no
    /// result over `max_result_bytes` (16 MiB): such a job fails, saying so.
    ///
    /// ```
    /// # use celeriac::{App, bounds::Bounds};
    /// let builder = App::builder().bounds(Bounds {
    ///     max_payload_bytes: 4 << 20,
    ///     ..Bounds::default()
    /// });
    /// # let _ = builder;
    /// ```
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// Connects to the backend.
    ///
    /// # Errors
    /// An unknown URL scheme, or a store that cannot be opened, with a message naming it; a
    /// schedule file that cannot be read or parsed (naming the file and line), two schedules
    /// with one name, a schedule whose task is not registered (naming the schedule), a task
    /// whose breaker is not registered, bad [`SharedOptions`](crate::breaker::SharedOptions),
    /// or a bound of zero.
    pub async fn build(mut self) -> Result<App> {
        self.bounds.validate()?;
        let mut schedules = self.schedules;
        for file in &self.schedule_files {
            let loaded = schedule::load_file(file)?;
            // Name the file too: the schedule is defined there.
            schedule::check_tasks(&loaded, &self.registry).map_err(|e| match e {
                crate::Error::Config { setting, message } => {
                    crate::Error::config(format!("{}: {setting}", file.display()), message)
                }
                other => other,
            })?;
            schedules.extend(loaded);
        }
        schedule::check_unique_names(&schedules)?;
        schedule::check_tasks(&schedules, &self.registry)?;
        // Checked before connecting, with the shared breakers' names as they will be.
        let mut checked = self.registry.clone();
        for (b, _) in &self.shared_breakers {
            checked.breaker(b.clone());
        }
        checked.check_breakers()?;
        let url = self.url.unwrap_or_else(|| DEFAULT_URL.to_string());
        let backend = Arc::new(connect(&url).await?);
        for (local, options) in self.shared_breakers {
            let shared = crate::breaker::SharedBreaker::new(local, backend.clone(), options)?;
            // The sync task holds a weak reference: it ends with the application.
            shared.spawn_sync();
            self.registry.shared_breaker(shared);
        }
        crate::install_cache_store(backend.clone());
        let clock = match self.clock {
            Some(clock) => clock,
            None => celeriac_core::StoreClock::fleet_clock(backend.as_ref()),
        };
        Ok(App {
            client: Client::with_clock(backend, clock).with_bounds(self.bounds)?,
            registry: Arc::new(self.registry),
            url,
            schedules: schedules.into(),
        })
    }
}

/// Opens the backend a URL names.
pub async fn connect(url: &str) -> Result<AnyBackend> {
    AnyBackend::connect(url).await
}
