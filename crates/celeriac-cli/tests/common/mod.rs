//! Real `celeriac worker` processes over a shared store, for the multi-process tests of each
//! backend: the same scenarios, one URL per backend.

#![allow(dead_code)]

use celeriac::{App, JobId, JobState, QueueAdmin, ResultStore};
use celeriac_cli::demo::{self, Email, PingPartner, SendEmail};
use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `celeriac --url <url> <args>` to the end, with no `CELERIAC_*` settings from the
/// environment that would change what it does (stdin is not a terminal: a command that asks
/// for confirmation refuses without `--yes`). A worker may run as root: the tests do.
pub fn celeriac(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CELERIAC_URL")
        .env_remove("CELERIAC_SCHEDULES")
        .env_remove("CELERIAC_YES")
        .env_remove("CELERIAC_MAX_PAYLOAD_BYTES")
        .env_remove("CELERIAC_MAX_RESULT_BYTES")
        .env("CELERIAC_ALLOW_ROOT", "true")
        .output()
        .expect("the celeriac binary runs")
}

/// Runs `celeriac --url <url> bench <args>` and asserts it succeeded.
pub fn bench(url: &str, args: &[&str]) -> Output {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let out = celeriac(url, &all);
    assert!(out.status.success(), "bench {args:?}: {}", stderr(&out));
    out
}

/// Runs `celeriac --url <url> enqueue <args>`, asserts it succeeded, and returns the id it
/// printed.
pub fn enqueue(url: &str, args: &[&str]) -> String {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    let out = celeriac(url, &all);
    assert!(out.status.success(), "enqueue {args:?}: {}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(!id.is_empty(), "enqueue {args:?} printed no id");
    id
}

/// A command's standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// libfaketime's library for threaded programs (Debian's `libfaketime` package, which
/// `scripts/test` installs). Preloaded directly rather than through the `faketime` program,
/// which would stand between a test and the process it signals.
pub fn libfaketime() -> std::path::PathBuf {
    let mut dirs = vec![std::path::PathBuf::from("/usr/lib/faketime")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|d| d.join("libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is installed (apt-get install libfaketime; scripts/test does)")
}

/// Runs `cmd` with its wall clock off by `offset` (`-30s`, `+90s`); its monotonic clock stays
/// real, as on a host whose wall clock is off.
pub fn with_wall_clock_off(cmd: &mut Command, offset: &str) {
    cmd.env("LD_PRELOAD", libfaketime())
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
}

/// The URL of a SQLite file in `dir`.
pub fn url_in(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("jobs.db").display())
}

/// A worker process, killed if the test ends without stopping it.
pub struct WorkerProc(Option<Child>);

impl WorkerProc {
    /// A worker for the `emails` queue.
    pub fn spawn(url: &str, id: &str, extra: &[&str]) -> Self {
        Self::spawn_on(url, id, "emails", extra)
    }

    /// A worker for one queue (16 slots unless `extra` says `--concurrency`), allowed to run
    /// as root (the tests do).
    pub fn spawn_on(url: &str, id: &str, queue: &str, extra: &[&str]) -> Self {
        Self::spawn_with(
            Command::new(env!("CARGO_BIN_EXE_celeriac")),
            url,
            id,
            queue,
            extra,
        )
    }

    /// [`Self::spawn_on`] at the lowest CPU priority (`nice -n 19`): a worker whose jobs keep
    /// every core busy leaves the test process the CPU to watch it.
    pub fn spawn_niced(url: &str, id: &str, queue: &str, extra: &[&str]) -> Self {
        let mut nice = Command::new("nice");
        nice.args(["-n", "19", env!("CARGO_BIN_EXE_celeriac")]);
        Self::spawn_with(nice, url, id, queue, extra)
    }

    fn spawn_with(mut command: Command, url: &str, id: &str, queue: &str, extra: &[&str]) -> Self {
        let concurrency: &[&str] = if extra.contains(&"--concurrency") {
            &[]
        } else {
            &["--concurrency", "16"]
        };
        let child = command
            .args(["--url", url, "--log", "error", "worker", "--queues", queue])
            .args(["--worker-id", id, "--poll-interval", "20ms"])
            .args(concurrency)
            .args(extra)
            .env_remove("CELERIAC_URL")
            .env("CELERIAC_ALLOW_ROOT", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("worker process starts");
        WorkerProc(Some(child))
    }

    /// Stops the worker with SIGTERM and returns `(started, stale)` from its summary line.
    pub fn stop(mut self) -> (u64, u64) {
        let child = self.0.take().expect("running");
        sigterm(child.id());
        let out = child.wait_with_output().expect("worker exits");
        assert!(out.status.success(), "worker exit status {:?}", out.status);
        worker_summary(&out)
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Waits for the worker to exit by itself (at most `within`) and returns its output.
    pub fn wait_exit(mut self, within: Duration) -> Output {
        let deadline = Instant::now() + within;
        let child = self.0.as_mut().expect("running");
        while child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("worker output")
    }

    /// How the worker exited, if it already has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0
            .as_mut()
            .and_then(|child| child.try_wait().expect("try_wait"))
    }

    /// `kill -9`.
    pub fn kill_dash_nine(mut self) {
        let mut child = self.0.take().expect("running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `(started, stale)` from the summary line a stopped worker prints.
pub fn worker_summary(out: &Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("worker stopped:"))
        .unwrap_or_else(|| panic!("no summary line in {text:?}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    (field("started"), field("stale"))
}

/// The ticks of `schedule` a beat's log says it fired: each `fired` line lists the ticks of
/// one pass, logged once the pass's cursor was recorded under the leader's token.
pub fn beat_fires_logged(log: &Path, schedule: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(" fired ") && l.contains(&format!("schedule=\"{schedule}\"")))
        .map(|l| {
            let list = l
                .split("ticks=[")
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .unwrap_or_else(|| panic!("a fired line lists its ticks: {l}"));
            list.split(',').filter(|t| !t.trim().is_empty()).count() as u64
        })
        .sum()
}

pub async fn demo_app(url: &str) -> App {
    App::builder()
        .url(url)
        .registry(demo::registry())
        .build()
        .await
        .expect("app")
}

pub async fn enqueue_emails(app: &App, n: usize) -> Vec<JobId> {
    let emails: Vec<Email> = (0..n)
        .map(|i| Email {
            to: format!("u{i}@example.com"),
            subject: "hello".into(),
            fail_times: 0,
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in emails.chunks(500) {
        let handles = app
            .client()
            .enqueue_many::<SendEmail>(chunk.to_vec())
            .await
            .expect("enqueue");
        ids.extend(handles.iter().map(|h| h.id()));
    }
    ids
}

pub async fn count(app: &App, state: JobState) -> u64 {
    app.backend()
        .stats()
        .await
        .expect("stats")
        .iter()
        .map(|q| q.count(state))
        .sum()
}

pub async fn wait_until_succeeded(app: &App, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done = count(app, JobState::Succeeded).await;
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} jobs succeeded in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three worker processes on one store never run the same job twice: the attempts started
/// across them add up to the jobs, no completion is refused, and every job ran once.
pub async fn no_job_runs_twice(url: &str) {
    let url = url.to_string();
    let app = demo_app(&url).await;
    const N: usize = 1500;
    let ids = enqueue_emails(&app, N).await;

    let workers: Vec<WorkerProc> = (0..3)
        .map(|i| WorkerProc::spawn(&url, &format!("proc-{i}"), &[]))
        .collect();
    wait_until_succeeded(&app, N as u64, Duration::from_secs(180)).await;
    let results: Vec<(u64, u64)> = workers.into_iter().map(WorkerProc::stop).collect();

    let started: u64 = results.iter().map(|r| r.0).sum();
    let stale: u64 = results.iter().map(|r| r.1).sum();
    assert_eq!(
        started, N as u64,
        "attempts started across processes: {results:?}"
    );
    assert_eq!(stale, 0, "no completion may be refused: {results:?}");
    assert!(
        results.iter().filter(|r| r.0 > 0).count() >= 2,
        "the work was shared between processes: {results:?}"
    );
    for id in ids {
        let info = app.backend().get(id).await.expect("get").expect("job kept");
        assert_eq!(info.state, JobState::Succeeded);
        assert_eq!(info.job.attempts, 1, "job {id} ran more than once");
    }
}

/// `kill -9` of a worker mid-run: every job still completes, and exactly the jobs it held at
/// the kill run a second time.
pub async fn kill_dash_nine_reruns_only_jobs_in_flight(url: &str) {
    let url = url.to_string();
    let app = demo_app(&url).await;
    const N: usize = 800;
    let ids = enqueue_emails(&app, N).await;
    let lease = ["--lease", "2s", "--heartbeat", "500ms"];

    let victim = WorkerProc::spawn(&url, "victim", &lease);
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&app, JobState::Succeeded).await < 100 {
        assert!(
            Instant::now() < deadline,
            "the first worker made no progress"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    victim.kill_dash_nine();

    // What the dead worker held at the moment of death (nothing reaps until the rescuer
    // starts: this process runs no worker).
    let mut in_flight = HashSet::new();
    for id in &ids {
        let info = app.backend().get(*id).await.expect("get").expect("job");
        if info.state == JobState::Active {
            assert_eq!(info.worker.as_deref(), Some("victim"));
            in_flight.insert(*id);
        }
    }
    assert!(!in_flight.is_empty(), "the kill should land while jobs run");

    let rescuer = WorkerProc::spawn(&url, "rescuer", &lease);
    wait_until_succeeded(&app, N as u64, Duration::from_secs(180)).await;
    let (_, stale) = rescuer.stop();
    assert_eq!(stale, 0);

    let mut ran_twice = HashSet::new();
    for id in &ids {
        let info = app.backend().get(*id).await.expect("get").expect("job");
        assert_eq!(info.state, JobState::Succeeded, "job {id} was lost");
        match info.job.attempts {
            1 => {}
            2 => {
                ran_twice.insert(*id);
            }
            n => panic!("job {id} ran {n} times"),
        }
    }
    assert_eq!(
        ran_twice, in_flight,
        "exactly the jobs in flight at the kill ran again"
    );
}

pub fn sigterm(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let pid = i32::try_from(pid).expect("pid fits");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM delivered");
}

/// Four worker processes share one rate limit (10 a second): sorted by when they were
/// claimed, no eleven starts fall within one second, whichever process claimed them.
pub async fn rate_limit_holds_across_processes(url: &str) {
    let app = demo_app(url).await;
    const N: u32 = 30;
    let handles = app
        .client()
        .enqueue_many::<PingPartner>(0..N)
        .await
        .expect("enqueue");
    let workers: Vec<WorkerProc> = (0..4)
        .map(|i| WorkerProc::spawn_on(url, &format!("limited-{i}"), "partner", &[]))
        .collect();
    wait_until_succeeded(&app, u64::from(N), Duration::from_secs(120)).await;
    let results: Vec<(u64, u64)> = workers.into_iter().map(WorkerProc::stop).collect();
    assert!(
        results.iter().filter(|r| r.0 > 0).count() >= 2,
        "several processes took part: {results:?}"
    );
    let mut starts = Vec::new();
    for h in &handles {
        let info = app.backend().get(h.id()).await.expect("get").expect("kept");
        assert_eq!(info.state, JobState::Succeeded);
        assert_eq!(info.job.attempts, 1, "held-back claims use no attempt");
        starts.push(info.job.started_at.expect("started"));
    }
    starts.sort_unstable();
    for w in starts.windows(11) {
        assert!(
            w[10] - w[0] >= 1_000,
            "11 starts within one second ({} ms): {starts:?}",
            w[10] - w[0]
        );
    }
}

/// A chord of 1,000 thumbnails over three worker processes, one of them killed with
/// `kill -9` mid-run so the jobs it held are delivered again, and then every member delivered
/// once more on purpose: the callback runs exactly once, with every result in order.
pub async fn chord_callback_runs_once_across_processes(url: &str) {
    use celeriac::workflow::{end_step, StepEnd};
    use celeriac::{chord, Step};
    use celeriac_cli::demo::{album_checksum, Album, AlbumSummary, ResizeImage, Thumbnail};
    const N: usize = 1000;
    let app = demo_app(url).await;
    let members = (0..N).map(|i| {
        Step::of::<ResizeImage>(Thumbnail {
            // Big enough that a member takes a few milliseconds: the kill lands mid-run.
            width: 800 + (i % 50) as u32,
            height: 800,
        })
        .into()
    });
    let handle = chord(members, Step::piped::<AlbumSummary>())
        .start(&app)
        .await
        .expect("the chord starts");
    let member_id = |i: usize| handle.member_id(i);
    let callback_id = handle.callback_id();

    // Long enough that reading what the victim held ends before its leases run out.
    let lease = ["--lease", "5s", "--heartbeat", "1s"];
    // A victim claims at most SHARE members (--max-jobs), many at a time, and is killed once
    // it has finished 50 of them: acknowledgements arrive in batches of up to its 64 slots,
    // so the 150 it has left keep it busy for a few more batches after the test sees 50, and
    // the kill finds some running; at least 200 members are left for the others (started
    // after the kill). One that the test could not watch closely
    // enough (a busy machine) runs its whole share and exits by itself: a kill would find
    // nothing, so a new victim takes its place; so does one killed between claims.
    // A slow machine is slow, a stuck victim is stuck: fail only when nothing moved for a
    // minute, saying how far the victim got.
    const SHARE: u64 = 200;
    const KILL_AT: u64 = 50;
    let share = SHARE.to_string();
    let victim_args = [
        &lease[..],
        &["--concurrency", "64", "--max-jobs", share.as_str()],
    ]
    .concat();
    let mut in_flight = HashSet::new();
    // The victim runs niced: its 64 CPU-bound resizes would otherwise starve this process's
    // watch.
    for attempt in 1.. {
        let start = count(&app, JobState::Succeeded).await;
        assert!(
            attempt <= 4 && start + SHARE <= N as u64,
            "{} victims in a row were not caught running a member ({start} of {N} done)",
            attempt - 1
        );
        let mut victim = WorkerProc::spawn_niced(url, "victim", "images", &victim_args);
        let (mut seen, mut moved) = (start, Instant::now());
        let mut ran_its_share = false;
        while seen < start + KILL_AT {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = count(&app, JobState::Succeeded).await;
            if now > seen {
                (seen, moved) = (now, Instant::now());
            }
            if let Some(status) = victim.exited() {
                assert!(
                    status.success(),
                    "victim {attempt} failed ({status}) after {} of its members",
                    seen - start
                );
                ran_its_share = true;
                break;
            }
            assert!(
                moved.elapsed() < Duration::from_secs(60),
                "victim {attempt} made no progress for 60 s: {} of its members done, \
                 {seen} of {N} in all",
                seen - start
            );
        }
        if ran_its_share {
            let done = count(&app, JobState::Succeeded).await;
            assert_eq!(
                done,
                start + SHARE,
                "victim {attempt} ran exactly its --max-jobs share before exiting"
            );
            continue;
        }
        victim.kill_dash_nine();
        // What the victim held at its death, read at once (all reads in flight together),
        // well within the lease after which the others take its jobs over.
        let mut reads = tokio::task::JoinSet::new();
        for i in 0..N {
            let backend = app.backend().clone();
            let id = member_id(i);
            reads.spawn(async move { backend.get(id).await.expect("get") });
        }
        while let Some(read) = reads.join_next().await {
            let info = read.expect("read task");
            if let Some(i) = info
                .filter(|i| i.state == JobState::Active && i.worker.as_deref() == Some("victim"))
            {
                in_flight.insert(i.job.id);
            }
        }
        if !in_flight.is_empty() {
            break;
        }
    }
    let others: Vec<WorkerProc> = (0..2)
        .map(|i| WorkerProc::spawn_on(url, &format!("chord-{i}"), "images", &lease))
        .collect();

    let rec = handle
        .wait(Duration::from_secs(180))
        .await
        .expect("the chord ends");
    let album: Album = celeriac::workflow::record_result(&rec).expect("the chord succeeded");
    let mut sums = Vec::with_capacity(N);
    let mut redelivered = HashSet::new();
    // A member arrives at the join before its job is acknowledged (a crash in between runs it
    // again). One the victim had arrived with but not acknowledged stays active under its
    // dead lease until that runs out, so it may end after the chord does, but it must end.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..N {
        let info = loop {
            let info = app
                .backend()
                .get(member_id(i))
                .await
                .expect("get")
                .expect("member kept");
            if info.state != JobState::Active || Instant::now() > deadline {
                break info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(info.state, JobState::Succeeded, "member {i}");
        if info.job.attempts > 1 {
            redelivered.insert(info.job.id);
        }
        sums.push(info.result_as::<u64>().expect("decodes").expect("a result"));
    }
    assert_eq!(
        album,
        Album {
            thumbnails: N as u64,
            checksum: album_checksum(&sums),
        },
        "the callback saw every member's result, in order"
    );
    // Exactly the members the victim held at its death ran again: no other member was
    // delivered twice.
    assert_eq!(
        redelivered, in_flight,
        "the members run again are those in flight at the kill"
    );

    // Every member arrives once more, from four tasks at once, as if each were delivered
    // twice: nothing new may be enqueued.
    let mut tasks = Vec::new();
    for part in 0..4 {
        let backend = app.backend().clone();
        let ids: Vec<JobId> = (part * N / 4..(part + 1) * N / 4).map(member_id).collect();
        tasks.push(tokio::spawn(async move {
            for id in ids {
                let info = backend.get(id).await.expect("get").expect("member");
                let out = info.result_as::<serde_json::Value>().expect("decodes");
                let clock = celeriac::clock::StoreClock::fleet_clock(&*backend);
                let now = celeriac::Clock::now_ms(&*clock);
                end_step(
                    &*backend,
                    &info.job,
                    StepEnd::Output(out.unwrap_or_default()),
                    now,
                )
                .await
                .expect("continuing again succeeds");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let callback = app
        .backend()
        .get(callback_id)
        .await
        .expect("get")
        .expect("the callback is kept");
    assert_eq!(callback.state, JobState::Succeeded);
    assert_eq!(callback.job.attempts, 1, "the callback ran exactly once");
    let stats = app.backend().stats().await.expect("stats");
    let images = stats
        .iter()
        .find(|q| q.queue == "images")
        .expect("images queue");
    let total: u64 = images.counts.values().sum();
    assert_eq!(
        (total, images.count(JobState::Succeeded)),
        (N as u64 + 1, N as u64 + 1),
        "1,000 members and one callback, nothing else: {images:?}"
    );
    for w in others {
        w.stop();
    }
}

/// The live processes as `celeriac workers --json` lists them.
pub fn listed_processes(url: &str) -> Vec<celeriac::ProcessInfo> {
    let out = celeriac(url, &["workers", "--json"]);
    assert!(out.status.success(), "workers --json: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("workers --json prints the entries")
}

/// Polls `celeriac workers --json` until `check` holds (at most 20 s).
pub fn wait_for_listing(url: &str, what: &str, check: impl Fn(&[celeriac::ProcessInfo]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = listed_processes(url);
        if check(&all) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; listed: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two worker processes register themselves; `celeriac workers quiet` makes one claim nothing
/// while the other runs every job, and `celeriac workers stop` shuts each down cleanly and
/// takes it off the list; a command for an unknown process fails and says which are live.
pub async fn remote_control_quiets_and_stops_worker_processes(url: &str) {
    use celeriac::backend::{ProcessKind, ProcessState};
    let refresh = ["--registry-refresh", "200ms", "--concurrency", "4"];
    let quiet = WorkerProc::spawn(url, "remote-quiet", &refresh);
    let busy = WorkerProc::spawn(url, "remote-busy", &refresh);
    let (quiet_pid, busy_pid) = (quiet.pid(), busy.pid());
    wait_for_listing(url, "both workers to register", |all| {
        let find = |id: &str, pid: u32| {
            all.iter().any(|p| {
                p.id == id
                    && p.pid == pid
                    && p.kind == ProcessKind::Worker
                    && p.state == ProcessState::Running
                    && p.concurrency == 4
                    && p.queue_names().eq(["emails"])
            })
        };
        find("remote-quiet", quiet_pid) && find("remote-busy", busy_pid)
    });

    let out = celeriac(url, &["workers", "quiet", "remote-quiet"]);
    assert!(out.status.success(), "workers quiet: {}", stderr(&out));
    wait_for_listing(url, "the quiet worker to report it", |all| {
        all.iter()
            .any(|p| p.id == "remote-quiet" && p.state == ProcessState::Quiet)
    });

    let app = demo_app(url).await;
    let ids = enqueue_emails(&app, 40).await;
    wait_until_succeeded(&app, 40, Duration::from_secs(60)).await;
    for id in &ids {
        let info = app.backend().get(*id).await.expect("get").expect("the job");
        assert_eq!(
            info.worker.as_deref(),
            Some("remote-busy"),
            "job {id} ran on the quiet worker"
        );
    }
    assert!(
        listed_processes(url).iter().any(|p| p.id == "remote-quiet"),
        "the quiet worker was up all along"
    );

    let out = celeriac(url, &["workers", "stop", "nobody"]);
    assert!(!out.status.success(), "stopping an unknown process fails");
    let err = stderr(&out);
    assert!(
        err.contains("no live process `nobody`") && err.contains("remote-busy"),
        "{err}"
    );

    for (name, worker) in [("remote-busy", busy), ("remote-quiet", quiet)] {
        let out = celeriac(url, &["workers", "stop", name]);
        assert!(
            out.status.success(),
            "workers stop {name}: {}",
            stderr(&out)
        );
        let exited = worker.wait_exit(Duration::from_secs(30));
        assert!(
            exited.status.success(),
            "{name} exit status {:?}",
            exited.status
        );
        assert!(
            stdout(&exited).contains("worker stopped:"),
            "{name} shut down through its normal path"
        );
        assert!(
            !listed_processes(url).iter().any(|p| p.id == name),
            "{name} left the registry"
        );
    }
}
