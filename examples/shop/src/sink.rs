//! The SMTP sink: a small real SMTP server standing in for a mail provider.
//!
//! It speaks enough SMTP for any client (EHLO/HELO, MAIL FROM, RCPT TO, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT, with limits on line and message size), waits `--delay`
//! before accepting each message (a provider's latency), writes one JSON line per message to
//! `--log`, and treats a second message with a Message-ID it has already accepted as a
//! duplicate: answered `250` like the first, logged with `"duplicate": true`, not delivered
//! again. A control HTTP API makes it fail on demand:
//!
//! - `POST /fail?seconds=N`: for `N` seconds every new connection and every command is
//!   answered `421` (and the connection closed), as a provider in an outage does;
//! - `POST /recover`: ends the outage now;
//! - `GET /stats`: `{"delivered", "duplicates", "refused", "failing"}`.
//!
//! `shop smtp-sink` runs it on its own ([`run`]); `shop` in dev mode and the tests start it in
//! process with [`Sink::start`].

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest command line accepted (RFC 5321 allows 512 bytes; some slack for extensions).
const MAX_COMMAND_LINE: usize = 2048;
/// The longest line of message text accepted (RFC 5321 allows 1,000; clients folding long
/// headers badly get some slack).
const MAX_TEXT_LINE: usize = 16 * 1024;
/// The most recipients of one message.
const MAX_RECIPIENTS: usize = 100;
/// Bad commands in a row before the connection is closed.
const MAX_ERRORS: u32 = 20;
/// A connection waiting this long for a command is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Deliveries kept in memory for [`Sink::deliveries`].
const RECENT: usize = 10_000;

/// The sink's settings: `shop smtp-sink` flags, also used by [`Sink::start`].
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Where the SMTP server listens (port 0 picks a free one).
    #[arg(long, env = "SHOP_SINK_BIND", default_value = "127.0.0.1:2525")]
    pub bind: String,
    /// Where the control HTTP API listens (`POST /fail?seconds=N`, `POST /recover`,
    /// `GET /stats`).
    #[arg(long, env = "SHOP_SINK_CONTROL", default_value = "127.0.0.1:2526")]
    pub control: String,
    /// Appends one JSON line per accepted message to this file.
    #[arg(long, env = "SHOP_SINK_LOG")]
    pub log: Option<PathBuf>,
    /// How long to wait before answering the end of each message (`200ms`, `1s`).
    #[arg(long, env = "SHOP_SINK_DELAY", default_value = "0ms", value_parser = celeriac::duration::parse)]
    pub delay: Duration,
    /// The largest message accepted, in bytes; larger ones are refused with `552`.
    #[arg(long, env = "SHOP_SINK_MAX_MESSAGE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_message_bytes: usize,
    /// Connections open at once; more are refused with `421`.
    #[arg(long, env = "SHOP_SINK_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,
}

impl SinkArgs {
    /// Settings for a sink on free loopback ports, without a log and without delay (tests).
    pub fn local() -> SinkArgs {
        SinkArgs {
            bind: "127.0.0.1:0".into(),
            control: "127.0.0.1:0".into(),
            log: None,
            delay: Duration::ZERO,
            max_message_bytes: 10 * 1024 * 1024,
            max_connections: 2048,
        }
    }
}

/// One message the sink accepted, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// When it was accepted (Unix ms).
    pub at_ms: i64,
    /// Its `Message-ID` header, if any.
    pub message_id: Option<String>,
    /// Its `X-Shop-Order` header, if any.
    pub order: Option<String>,
    /// The envelope's recipients, comma-separated.
    pub to: String,
    /// Its `Subject` header, if any.
    pub subject: Option<String>,
    /// Its size after dot-unstuffing.
    pub bytes: usize,
    /// A Message-ID accepted before: answered `250`, not delivered again.
    pub duplicate: bool,
}

/// The sink's counters, as `GET /stats` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStats {
    /// Messages delivered (duplicates not counted).
    pub delivered: u64,
    /// Messages answered `250` whose Message-ID was delivered before.
    pub duplicates: u64,
    /// Connections and commands answered `421` (fail mode, too many connections).
    pub refused: u64,
    /// In fail mode now.
    pub failing: bool,
}

/// What the connections, the control API and the handle share.
struct Shared {
    delay: Duration,
    max_message_bytes: usize,
    failing_until: Mutex<Option<Instant>>,
    seen: Mutex<HashSet<String>>,
    recent: Mutex<VecDeque<Delivery>>,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    log: Option<mpsc::Sender<(Delivery, oneshot::Sender<()>)>>,
    connections: Arc<Semaphore>,
    sequence: AtomicU64,
}

impl Shared {
    fn failing(&self) -> bool {
        let mut until = lock(&self.failing_until);
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn fail_for(&self, d: Duration) {
        let until = Instant::now().checked_add(d);
        *lock(&self.failing_until) = until;
        tracing::info!(seconds = d.as_secs_f64(), "smtp sink: failing");
    }

    fn recover(&self) {
        *lock(&self.failing_until) = None;
        tracing::info!("smtp sink: recovered");
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failing: self.failing(),
        }
    }

    /// Records an accepted message: dedupes it by Message-ID, logs it, keeps it in memory.
    /// True for a duplicate.
    async fn accept(&self, mut d: Delivery) -> bool {
        d.duplicate = match &d.message_id {
            Some(id) => !lock(&self.seen).insert(id.clone()),
            None => false,
        };
        if d.duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut recent = lock(&self.recent);
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(d.clone());
        }
        let duplicate = d.duplicate;
        if let Some(log) = &self.log {
            // Logged before the client hears 250: a message it was told is accepted is in
            // the log.
            let (done, written) = oneshot::channel();
            if log.send((d, done)).await.is_ok() {
                let _ = written.await;
            }
        }
        duplicate
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A running sink; dropping it stops it (use [`Sink::shutdown`] to wait for the log).
pub struct Sink {
    smtp: SocketAddr,
    control: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("smtp", &self.smtp)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Binds the SMTP server and the control API and starts serving.
    ///
    /// # Errors
    /// An address that cannot be bound, or a log file that cannot be opened.
    pub async fn start(args: SinkArgs) -> anyhow::Result<Sink> {
        let smtp_listener = TcpListener::bind(&args.bind)
            .await
            .with_context(|| format!("the SMTP sink cannot listen on {}", args.bind))?;
        let control_listener = TcpListener::bind(&args.control).await.with_context(|| {
            format!(
                "the SMTP sink's control API cannot listen on {}",
                args.control
            )
        })?;
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let log = match &args.log {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .with_context(|| format!("cannot open the sink's log {}", path.display()))?;
                let (tx, rx) = mpsc::channel(4096);
                tasks.push(tokio::spawn(write_log(file, rx, path.clone())));
                Some(tx)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            delay: args.delay,
            max_message_bytes: args.max_message_bytes.max(1024),
            failing_until: Mutex::new(None),
            seen: Mutex::new(HashSet::new()),
            recent: Mutex::new(VecDeque::new()),
            delivered: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            log,
            connections: Arc::new(Semaphore::new(args.max_connections.max(1))),
            sequence: AtomicU64::new(0),
        });
        let smtp = smtp_listener.local_addr()?;
        let control = control_listener.local_addr()?;
        tasks.push(tokio::spawn(accept_loop(
            smtp_listener,
            shared.clone(),
            stop.clone(),
        )));
        let router = control_router(shared.clone());
        let until = stop.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(control_listener, router)
                .with_graceful_shutdown(until.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the SMTP sink's control API stopped");
            }
        }));
        tracing::info!(%smtp, %control, "smtp sink listening");
        Ok(Sink {
            smtp,
            control,
            shared,
            stop,
            tasks,
        })
    }

    /// Where the SMTP server listens.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.smtp
    }

    /// Where the control API listens.
    pub fn control_addr(&self) -> SocketAddr {
        self.control
    }

    /// The SMTP server as a URL for the e-mail task: `smtp://127.0.0.1:2525`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.smtp)
    }

    /// The counters now.
    pub fn stats(&self) -> SinkStats {
        self.shared.stats()
    }

    /// The last 10,000 messages accepted, oldest first (duplicates included).
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.recent).iter().cloned().collect()
    }

    /// Fails every connection and command with `421` for `d` (as `POST /fail`).
    pub fn fail_for(&self, d: Duration) {
        self.shared.fail_for(d);
    }

    /// Ends fail mode (as `POST /recover`).
    pub fn recover(&self) {
        self.shared.recover();
    }

    /// Stops accepting, closes the connections and waits for the log to be written.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        // The log writer ends once every sender is gone: the connections' (ended by the
        // token) and ours.
        drop(self);
        for t in tasks {
            // Bounded: a control client holding its connection open does not hold us up.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `shop smtp-sink`: runs the sink until Ctrl-C or SIGTERM.
///
/// # Errors
/// As [`Sink::start`].
pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let log = args.log.clone();
    let delay = args.delay;
    let sink = Sink::start(args).await?;
    println!(
        "SMTP sink on {} (delay {}), control API on http://{}{}",
        sink.url(),
        celeriac::duration::format(delay),
        sink.control_addr(),
        log.map(|p| format!(", log {}", p.display()))
            .unwrap_or_default()
    );
    wait_for_signal().await;
    let stats = sink.stats();
    sink.shutdown().await;
    println!(
        "SMTP sink stopped: {} delivered, {} duplicates, {} refused",
        stats.delivered, stats.duplicates, stats.refused
    );
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Writes log lines in batches, acknowledging each once flushed.
async fn write_log(
    file: tokio::fs::File,
    mut rx: mpsc::Receiver<(Delivery, oneshot::Sender<()>)>,
    path: PathBuf,
) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut waiting = Vec::new();
    let mut failed = false;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        for (d, done) in batch {
            let mut line = serde_json::to_vec(&d).unwrap_or_default();
            line.push(b'\n');
            if let Err(e) = out.write_all(&line).await {
                if !failed {
                    tracing::error!(error = %e, path = %path.display(), "cannot write the sink's log");
                    failed = true;
                }
            }
            waiting.push(done);
        }
        if let Err(e) = out.flush().await {
            if !failed {
                tracing::error!(error = %e, path = %path.display(), "cannot write the sink's log");
                failed = true;
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "smtp sink: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = serve_connection(stream, shared) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "smtp sink: connection ended");
                    }
                }
            }
        });
    }
}

/// One line read from the client.
enum Line {
    /// The connection closed (a partial last line is dropped).
    Eof,
    /// A line, its ending included.
    Read,
    /// A line over the limit, skipped up to its end.
    TooLong,
}

/// Reads one line of at most `limit` bytes into `buf`.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, end) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if buf.len() + take > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&available[..take]);
            }
        }
        r.consume(take);
        if end {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, text: &str) -> std::io::Result<()> {
    w.write_all(text.as_bytes()).await?;
    w.flush().await
}

/// The transaction in progress on a connection.
#[derive(Default)]
struct Transaction {
    from: Option<String>,
    to: Vec<String>,
}

const REFUSE: &str = "421 4.3.2 shop-sink: service unavailable, try again later\r\n";

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    if shared.failing() {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return reply(&mut write, REFUSE).await;
    }
    let Ok(_permit) = shared.connections.clone().try_acquire_owned() else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return reply(&mut write, "421 4.7.0 shop-sink: too many connections\r\n").await;
    };
    reply(&mut write, "220 shop-sink ESMTP ready\r\n").await?;
    let mut greeted = false;
    let mut tx = Transaction::default();
    let mut errors = 0u32;
    let mut line = Vec::with_capacity(256);
    loop {
        let read_one = read_line(&mut read, &mut line, MAX_COMMAND_LINE);
        let got = match tokio::time::timeout(IDLE_TIMEOUT, read_one).await {
            Ok(got) => got?,
            Err(_) => {
                return reply(
                    &mut write,
                    "421 4.4.2 shop-sink: idle too long, closing\r\n",
                )
                .await;
            }
        };
        match got {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                errors += 1;
                reply(&mut write, "500 5.5.2 line too long\r\n").await?;
            }
            Line::Read => {
                if shared.failing() {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                    return reply(&mut write, REFUSE).await;
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\r', '\n']);
                let (verb, rest) = match text.split_once(' ') {
                    Some((v, r)) => (v, r.trim()),
                    None => (text, ""),
                };
                let verb = verb.to_ascii_uppercase();
                match verb.as_str() {
                    "EHLO" | "HELO" => {
                        if rest.is_empty() {
                            errors += 1;
                            reply(&mut write, "501 5.5.4 a domain or address is required\r\n")
                                .await?;
                            continue;
                        }
                        greeted = true;
                        tx = Transaction::default();
                        let answer = if verb == "EHLO" {
                            format!(
                                "250-shop-sink greets {rest}\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
                                 250-SMTPUTF8\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                                shared.max_message_bytes
                            )
                        } else {
                            format!("250 shop-sink greets {rest}\r\n")
                        };
                        reply(&mut write, &answer).await?;
                    }
                    "MAIL" => {
                        let answer = mail_from(&mut tx, greeted, rest, shared.max_message_bytes);
                        if !answer.starts_with('2') {
                            errors += 1;
                        }
                        reply(&mut write, answer).await?;
                    }
                    "RCPT" => {
                        let answer = rcpt_to(&mut tx, rest);
                        if !answer.starts_with('2') {
                            errors += 1;
                        }
                        reply(&mut write, answer).await?;
                    }
                    "DATA" => {
                        if tx.from.is_none() {
                            errors += 1;
                            reply(&mut write, "503 5.5.1 MAIL FROM first\r\n").await?;
                            continue;
                        }
                        if tx.to.is_empty() {
                            errors += 1;
                            reply(&mut write, "554 5.5.1 no valid recipients\r\n").await?;
                            continue;
                        }
                        reply(&mut write, "354 end data with <CR><LF>.<CR><LF>\r\n").await?;
                        let taken = std::mem::take(&mut tx);
                        match read_message(&mut read, shared.max_message_bytes).await? {
                            Message::Eof => return Ok(()),
                            Message::TooBig => {
                                reply(&mut write, "552 5.3.4 message too big\r\n").await?;
                            }
                            Message::LineTooLong => {
                                reply(&mut write, "500 5.5.2 line too long\r\n").await?;
                            }
                            Message::Body(body) => {
                                if !shared.delay.is_zero() {
                                    tokio::time::sleep(shared.delay).await;
                                }
                                // An outage that began meanwhile refuses the message too.
                                if shared.failing() {
                                    shared.refused.fetch_add(1, Ordering::Relaxed);
                                    return reply(&mut write, REFUSE).await;
                                }
                                let seq = shared.sequence.fetch_add(1, Ordering::Relaxed);
                                let delivery = describe(&body, &taken.to);
                                let answer = if shared.accept(delivery).await {
                                    format!("250 2.0.0 OK already delivered, not sent again ({seq})\r\n")
                                } else {
                                    format!("250 2.0.0 OK queued as {seq}\r\n")
                                };
                                reply(&mut write, &answer).await?;
                            }
                        }
                        errors = 0;
                        continue;
                    }
                    "RSET" => {
                        tx = Transaction::default();
                        reply(&mut write, "250 2.0.0 OK\r\n").await?;
                    }
                    "NOOP" => reply(&mut write, "250 2.0.0 OK\r\n").await?,
                    "QUIT" => {
                        return reply(&mut write, "221 2.0.0 shop-sink closing\r\n").await;
                    }
                    "VRFY" => {
                        reply(&mut write, "252 2.1.5 cannot verify, will try delivery\r\n").await?
                    }
                    "HELP" => {
                        reply(
                            &mut write,
                            "214 2.0.0 EHLO HELO MAIL RCPT DATA RSET NOOP QUIT\r\n",
                        )
                        .await?
                    }
                    "" => {
                        errors += 1;
                        reply(&mut write, "500 5.5.2 empty command\r\n").await?;
                    }
                    _ => {
                        errors += 1;
                        reply(&mut write, "502 5.5.1 command not implemented\r\n").await?;
                    }
                }
            }
        }
        if errors >= MAX_ERRORS {
            return reply(
                &mut write,
                "421 4.7.0 shop-sink: too many errors, closing\r\n",
            )
            .await;
        }
    }
}

/// `MAIL FROM:<addr> [params]`.
fn mail_from(tx: &mut Transaction, greeted: bool, rest: &str, max: usize) -> &'static str {
    if !greeted {
        return "503 5.5.1 say EHLO or HELO first\r\n";
    }
    if tx.from.is_some() {
        return "503 5.5.1 a transaction is already in progress\r\n";
    }
    let Some((addr, params)) = path_argument(rest, "FROM:") else {
        return "501 5.5.4 syntax: MAIL FROM:<address>\r\n";
    };
    for p in params.split_ascii_whitespace() {
        if let Some(size) = p
            .split_once('=')
            .filter(|(k, _)| k.eq_ignore_ascii_case("SIZE"))
            .map(|(_, v)| v)
        {
            match size.parse::<usize>() {
                Ok(n) if n > max => return "552 5.3.4 message too big\r\n",
                Ok(_) => {}
                Err(_) => return "501 5.5.4 bad SIZE parameter\r\n",
            }
        }
    }
    tx.from = Some(addr);
    "250 2.1.0 OK\r\n"
}

/// `RCPT TO:<addr> [params]`.
fn rcpt_to(tx: &mut Transaction, rest: &str) -> &'static str {
    if tx.from.is_none() {
        return "503 5.5.1 MAIL FROM first\r\n";
    }
    let Some((addr, _)) = path_argument(rest, "TO:") else {
        return "501 5.5.4 syntax: RCPT TO:<address>\r\n";
    };
    if addr.is_empty() {
        return "501 5.1.3 a recipient is required\r\n";
    }
    if tx.to.len() >= MAX_RECIPIENTS {
        return "452 4.5.3 too many recipients\r\n";
    }
    tx.to.push(addr);
    "250 2.1.5 OK\r\n"
}

/// Splits `FROM:<addr> params` into the address (without brackets) and the parameters.
fn path_argument<'a>(rest: &'a str, keyword: &str) -> Option<(String, &'a str)> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest[keyword.len()..].trim_start();
    let inner = after.strip_prefix('<')?;
    let close = inner.find('>')?;
    let addr = &inner[..close];
    if addr.len() > 320 || addr.contains(['\r', '\n']) {
        return None;
    }
    Some((addr.to_string(), inner[close + 1..].trim()))
}

/// The text after `DATA`.
enum Message {
    Eof,
    TooBig,
    LineTooLong,
    Body(Vec<u8>),
}

/// Reads message text up to the lone dot, unstuffing dots; over-long messages and lines are
/// read to their end and refused.
async fn read_message<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Message> {
    let mut body = Vec::new();
    let mut line = Vec::with_capacity(256);
    let mut too_big = false;
    let mut too_long = false;
    loop {
        let read_one = read_line(r, &mut line, MAX_TEXT_LINE);
        let got = match tokio::time::timeout(IDLE_TIMEOUT, read_one).await {
            Ok(got) => got?,
            Err(_) => return Ok(Message::Eof),
        };
        match got {
            Line::Eof => return Ok(Message::Eof),
            Line::TooLong => too_long = true,
            Line::Read => {
                if line == b".\r\n" || line == b".\n" {
                    break;
                }
                let text = line.strip_prefix(b".").unwrap_or(&line);
                if body.len() + text.len() > max {
                    too_big = true;
                    body = Vec::new();
                }
                if !too_big {
                    body.extend_from_slice(text);
                }
            }
        }
    }
    Ok(if too_long {
        Message::LineTooLong
    } else if too_big {
        Message::TooBig
    } else {
        Message::Body(body)
    })
}

/// The delivery record of a message: its headers of interest, unfolded.
fn describe(body: &[u8], to: &[String]) -> Delivery {
    let text = String::from_utf8_lossy(body);
    let mut headers: Vec<(String, String)> = Vec::new();
    for raw in text.split('\n') {
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if l.is_empty() {
            break;
        }
        if l.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(l.trim());
            }
            continue;
        }
        if let Some((name, value)) = l.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    Delivery {
        at_ms: now_ms(),
        message_id: header("message-id"),
        order: header("x-shop-order"),
        to: to.join(","),
        subject: header("subject"),
        bytes: body.len(),
        duplicate: false,
    }
}

#[derive(Deserialize)]
struct FailParams {
    seconds: f64,
}

fn control_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/fail", post(fail))
        .route("/recover", post(recover))
        .route("/stats", get(stats))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn fail(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<FailParams>,
) -> Result<Json<SinkStats>, (StatusCode, String)> {
    if !p.seconds.is_finite() || p.seconds <= 0.0 || p.seconds > 86_400.0 {
        return Err((
            StatusCode::BAD_REQUEST,
            "seconds must be above 0 and at most 86400\n".into(),
        ));
    }
    shared.fail_for(Duration::from_secs_f64(p.seconds));
    Ok(Json(shared.stats()))
}

async fn recover(State(shared): State<Arc<Shared>>) -> Json<SinkStats> {
    shared.recover();
    Json(shared.stats())
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<SinkStats> {
    Json(shared.stats())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_parsed_with_their_parameters() {
        let (a, p) =
            path_argument("FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "FROM:").expect("valid");
        assert_eq!(a, "a@b.example");
        assert_eq!(p, "SIZE=10 BODY=8BITMIME");
        let (a, _) = path_argument("from: <>", "FROM:").expect("null sender");
        assert_eq!(a, "");
        assert!(path_argument("FROM a@b", "FROM:").is_none());
        assert!(path_argument("TO:<a@b", "TO:").is_none());
    }

    #[test]
    fn headers_are_read_unfolded_and_case_insensitively() {
        let body =
            b"Subject: Your order\r\n is confirmed\r\nmessage-id: <order-1@shop.example>\r\n\
                     X-Shop-Order: 1\r\n\r\nMessage-ID: <not-a-header>\r\n";
        let d = describe(body, &["a@x.example".into()]);
        assert_eq!(d.subject.as_deref(), Some("Your order is confirmed"));
        assert_eq!(d.message_id.as_deref(), Some("<order-1@shop.example>"));
        assert_eq!(d.order.as_deref(), Some("1"));
        assert_eq!(d.bytes, body.len());
    }
}
