//! `rocsync run`: the whole pipeline in one tokio program.
//!
//! One worker thread owns the [`Engine`] and does every piece of work in turn (a pass, applying
//! an approval, refreshing addresses, reading the logs), so that no two touch the sinks at once
//! and a stop lets the job in progress finish; its requests (the annuaire, IMAP, DNS) wait on the
//! daemon's runtime, where the annuaire client's pooled connections live. Around it, tokio tasks
//! decide *when*: the poll schedule (and the Maildir/IMAP watchers that wake it), a one-second
//! control tick that applies what was approved from the command line, the resolver's tick, the
//! log tick, the HTTP endpoint, the console, the mailer (lettre's async SMTP: an SMTP server
//! that hangs delays no pass) and systemd's watchdog.
//!
//! Shutdown is one [`CancellationToken`] tree: the daemon's root token, and under it one token
//! per configuration generation, which a reload cancels (its schedules, watchers, listeners and
//! mailer end; the new generation's start). [`run`] takes the shutdown and the reload requests
//! as values, so that it runs in-process in tests; [`run_with_signals`] maps SIGTERM/SIGINT and
//! SIGHUP onto them for the command line.
//!
//! Control from the command line goes through the store: `rocsync approve` records the decision
//! (the daemon holds `daemon.lock` in the state directory, which tells the command it runs), and
//! the daemon applies approved plans within a second. File permissions on the state directory
//! are the access control. The review console (`[console]`, [`crate::console`]) is a task of
//! its own that records decisions the same way, with the person's account, and wakes the
//! worker to apply them at once.
//!
//! Every time the worker and the mailer decide by (a plan's age for its reminder, how long the
//! annuaire has failed, the alerts' hour and back-offs, a log's retry) is read from
//! [`crate::clock`], which tests move forward while the daemon runs in-process
//! (tests/worker_clock.rs); only the metrics' durations are the system's monotonic time.

pub mod http;
pub mod mailer;
mod reload;
pub mod settings;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alerts::{Alert, AmcName, Closing, RunAt, Withdrawn, reminder_key, review_key, unreachable_key};
use crate::amc::AmcState;
use crate::catalogue::{AmcInfo, Catalogue, Use};
use crate::clock::{Millis, now, now_millis, now_utc};
use crate::config::Config;
use crate::engine::{Engine, EngineError};
use crate::plan::{Plan, Status};
use crate::store::StoreError;
use crate::sinks::plain::WildcardStyle;
use crate::sources::schedule;
use crate::store::LogPosition;
use crate::watch::follow::Follower;
use crate::watch::health::{Health, Tell};
use crate::watch::journal::JournalReader;
use crate::watch::{Correlator, Line};
use http::{Document, Published, Shared};
use settings::Settings;

/// The file the daemon holds locked while it runs, in the state directory.
pub const LOCK_FILE: &str = "daemon.lock";

/// The pid of the daemon that runs on this state directory, if one does.
pub fn running(state_dir: &Path) -> Option<u32> {
    let file = File::open(state_dir.join(LOCK_FILE)).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(_) => std::fs::read_to_string(state_dir.join(LOCK_FILE)).ok()?.trim().parse().ok().or(Some(0)),
    }
}

/// A piece of work for the worker.
enum Job {
    Pass(oneshot::Sender<bool>),
    ApplyApproved,
    Refresh,
    Logs,
    /// A configuration read and checked, with the text of its file (to tell what changed) and
    /// its settings; the answer says whether the worker took it (then the generation is
    /// replaced) or kept the old one (its engine could not open).
    Reload(Box<Config>, String, Box<Settings>, oneshot::Sender<bool>),
    /// A reload found the file broken: the reason, for the audit log.
    ReloadRefused(String),
    Ping(oneshot::Sender<()>),
    /// nftables: someone else changed rocsync's table (seen by the monitor): repair it now.
    #[cfg_attr(not(feature = "netlink"), allow(dead_code))]
    Repair,
}

/// `rocsync run` from the command line: the daemon on a runtime of its own, stopped by SIGTERM
/// or SIGINT, reloaded by SIGHUP.
pub fn run_with_signals(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::from_path(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("rocsync").enable_all().build()?;
    runtime.block_on(signalled(config, config_path.to_owned()))
}

/// [`run`], with SIGTERM and SIGINT as its shutdown and SIGHUP as its reloads.
async fn signalled(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Taken before anything else: a SIGHUP before its handler would end the process.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (reload, reloads) = mpsc::channel::<()>(4);
    let stop = CancellationToken::new();
    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        // SIGHUPs that come while reloads wait are one more reload, not a queue.
                        let _ = reload.try_send(());
                    }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            stop.cancel();
        })
    };
    let result = run(config, config_path, reloads, stop.cancelled_owned()).await;
    signals.abort();
    result
}

/// The daemon, in-process: runs with `config` until `shutdown` completes; each message on
/// `reloads` reads `config_path` again and, when it is valid, replaces the whole generation
/// (schedules, watchers, the HTTP endpoint, the console, the mailer). Must be called on a
/// multi-threaded runtime: the engine's requests wait on it from the worker thread.
pub async fn run(config: Config, config_path: PathBuf, mut reloads: mpsc::Receiver<()>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Owner-only before anything is written in it: plans name the hospital's openings.
    crate::store::create_state_dir(&config.state_dir)
        .with_context(|| format!("cannot create the state directory {}", config.state_dir.display()))?;
    let mut lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(config.state_dir.join(LOCK_FILE))
        .with_context(|| format!("cannot open {}", config.state_dir.join(LOCK_FILE).display()))?;
    lock.try_lock().map_err(|_| anyhow::anyhow!("another rocsync run holds {}", config.state_dir.join(LOCK_FILE).display()))?;
    lock.set_len(0)?;
    writeln!(lock, "{}", std::process::id())?;

    let settings = settings::settings(&config);
    let root = CancellationToken::new();
    let shared: Shared = Arc::new(RwLock::new(Published { serve_metrics: settings.serve_metrics, ..Published::default() }));
    let runtime = tokio::runtime::Handle::current();
    let engine = Engine::open(config.clone())?.on_runtime(runtime.clone());
    let (jobs, rx) = mpsc::channel::<Job>(16);
    let worker = {
        let (shared, path, settings) = (shared.clone(), config_path.clone(), settings.clone());
        // The file as loaded, to tell what a reload changes.
        let loaded = Config::read_text(&config_path).unwrap_or_default();
        std::thread::Builder::new()
            .name("rocsync-worker".into())
            .spawn(move || Worker::new(engine, settings, runtime, shared, path, loaded).run(rx))?
    };
    let mut generation = Some(Generation::start(&config, &settings, &jobs, &shared, &root).await?);
    // --- nftables monitor (nftgen): a change someone else makes to rocsync's table is repaired
    // at once, not at the next poll. Subscribed before the first pass; a weak sender, so that it
    // never keeps the worker from stopping.
    #[cfg(feature = "netlink")]
    {
        if let Some(layout) = &config.nftables.layout {
            let worker_jobs = jobs.downgrade();
            let table = layout.names.table.clone();
            let label = table.clone();
            let started = crate::sinks::netlink::spawn_monitor(&table, move |change| {
                info!(change = ?change, "nftables: table inet {label} changed by someone else; repairing it now.");
                let Some(jobs) = worker_jobs.upgrade() else { return false };
                // A full queue already holds work that repairs: nothing is lost by skipping.
                let _ = jobs.try_send(Job::Repair);
                true
            });
            if let Err(e) = started {
                warn!("nftables: cannot listen to nf_tables' notifications; changes by others are repaired at the next poll: {e}");
            }
        }
    }
    // --- end of the nftables monitor.

    // The first pass before READY: the service is ready once what it enforces is in place.
    let (tx, ready) = oneshot::channel();
    jobs.send(Job::Pass(tx)).await.ok();
    let first = ready.await.unwrap_or(false);
    // The pass told its own STATUS= (each pass does, see `Worker::pass`).
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(pid = std::process::id(), first_pass_ok = first, "rocsync run: ready.");

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(period) = sd_notify::watchdog_enabled() {
        tasks.spawn(watchdog(period, jobs.clone(), root.clone()));
    }

    tokio::pin!(shutdown);
    // The configuration in force, to go back to when a new one's services cannot start.
    let mut current = (config.clone(), settings.clone(), Config::read_text(&config_path).unwrap_or_default());
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(()) = reloads.recv() => {
                let text = Config::read_text(&config_path).unwrap_or_default();
                match Config::from_path(&config_path) {
                    Ok(new) => {
                        info!("SIGHUP: configuration {} read.", config_path.display());
                        let settings = settings::settings(&new);
                        if !hand_over(&jobs, &new, &text, &settings).await {
                            continue;
                        }
                        // The old generation's listeners are closed before the new ones bind
                        // (the same address may be kept).
                        if let Some(old) = generation.take() {
                            old.stop().await;
                        }
                        match Generation::start(&new, &settings, &jobs, &shared, &root).await {
                            Ok(g) => {
                                generation = Some(g);
                                current = (new, settings, text);
                                info!("Reload done: the new configuration is in force.");
                            }
                            Err(e) => {
                                // A listen address taken, a console certificate unreadable: the
                                // reload is refused whole and the configuration before it
                                // comes back, schedules, watchers and listeners included.
                                let reason = format!("{}: its services cannot start: {e:#}", config_path.display());
                                error!("SIGHUP: the configuration is refused, the one loaded before stays in force: {reason}");
                                let (old, old_settings, old_text) = &current;
                                hand_over(&jobs, old, old_text, old_settings).await;
                                let _ = jobs.send(Job::ReloadRefused(reason)).await;
                                generation = match Generation::start(old, old_settings, &jobs, &shared, &root).await {
                                    Ok(g) => Some(g),
                                    Err(e) => {
                                        error!("The configuration loaded before cannot start its services again either: {e:#}");
                                        None
                                    }
                                };
                            }
                        }
                    }
                    Err(e) => {
                        // One line: under systemd each line is an entry of its own.
                        let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
                        let reason = format!("{}: {}", e.origin, problems.join("; "));
                        error!("SIGHUP: the configuration is refused, the one loaded stays in force: {reason}");
                        let _ = jobs.send(Job::ReloadRefused(reason)).await;
                    }
                }
            }
        }
    }
    info!("Stopping: finishing the job in progress.");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    root.cancel();
    if let Some(g) = generation.take() {
        g.stop().await;
    }
    while tasks.join_next().await.is_some() {}
    drop(jobs);
    tokio::task::spawn_blocking(move || worker.join()).await.ok();
    info!("Stopped.");
    Ok(())
}

/// Gives the worker a configuration, after the job in progress (an apply finishes under the old
/// one); whether it took it.
async fn hand_over(jobs: &mpsc::Sender<Job>, config: &Config, text: &str, settings: &Settings) -> bool {
    let (tx, taken) = oneshot::channel();
    let job = Job::Reload(Box::new(config.clone()), text.to_owned(), Box::new(settings.clone()), tx);
    jobs.send(job).await.is_ok() && taken.await.unwrap_or(false)
}

/// What runs for one configuration: cancelled as a whole when a reload replaces it, or at the
/// stop (its token is a child of the daemon's).
struct Generation {
    token: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Generation {
    /// Starts the schedules, watchers, listeners and mailer of `settings`. A listener that
    /// cannot bind fails the start (and the tasks started are dropped with their set).
    async fn start(config: &Config, settings: &Settings, jobs: &mpsc::Sender<Job>, shared: &Shared, root: &CancellationToken) -> anyhow::Result<Generation> {
        let token = root.child_token();
        let mut tasks = tokio::task::JoinSet::new();
        spawn_schedules(&mut tasks, settings, jobs, &token);
        if let Some(listen) = &settings.http_listen {
            let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
            info!("HTTP endpoint on http://{listen}/roc-hosts.txt");
            tasks.spawn(http::serve(listener, shared.clone(), token.clone().cancelled_owned()));
        }
        if settings.alerts {
            match mailer::Mailer::new(config) {
                Ok(m) => {
                    tasks.spawn(mail_loop(m, config.state_dir.clone(), shared.clone(), token.clone()));
                }
                Err(e) => error!("Alerts cannot be sent: {e}"),
            }
        }
        if let Some(console) = settings.console.clone() {
            let tls = match &console.tls {
                Some(files) => Some(crate::console::tls_config(files).map_err(|e| anyhow::anyhow!("the review console: {e}"))?),
                None => None,
            };
            let listener =
                tokio::net::TcpListener::bind(console.listen).await.with_context(|| format!("cannot listen on {} (console.listen)", console.listen))?;
            // An approval is applied at once, not at the next tick. A weak handle: the
            // console's last connections must not keep the worker from stopping.
            let worker_jobs = jobs.downgrade();
            let poke = Box::new(move || {
                if let Some(jobs) = worker_jobs.upgrade() {
                    let _ = jobs.try_send(Job::ApplyApproved);
                }
            });
            let scheme = if tls.is_some() { "https" } else { "http" };
            info!("Review console on {scheme}://{}/", console.listen);
            let console = crate::console::Console::open(config.clone(), console, poke)?;
            tasks.spawn(crate::console::serve(listener, tls, console, token.clone().cancelled_owned()));
        }
        Ok(Generation { token, tasks })
    }

    /// Cancels everything of this generation and waits for it to end (its listeners closed).
    async fn stop(mut self) {
        self.token.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Pings the worker for systemd's watchdog until `stop`.
async fn watchdog(period: Duration, jobs: mpsc::Sender<Job>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period / 2);
    loop {
        // Both waits end at once on SIGTERM: a stop never waits for the next ping (half the
        // watchdog period, longer than systemd's stop timeout).
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        // The worker answers between jobs: a worker stuck in one job longer than the watchdog
        // period gets the service restarted.
        let (tx, rx) = oneshot::channel();
        let answered = async { jobs.send(Job::Ping(tx)).await.is_ok() && tokio::time::timeout(period, rx).await.is_ok() };
        tokio::select! {
            ok = answered => if ok {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            },
            () = stop.cancelled() => return,
        }
    }
}

fn spawn_schedules(tasks: &mut tokio::task::JoinSet<()>, settings: &Settings, jobs: &mpsc::Sender<Job>, stop: &CancellationToken) {
    let schedule = settings.schedule;
    let wake = Arc::new(Notify::new());
    {
        let (jobs, wake, stop) = (jobs.clone(), wake.clone(), stop.clone());
        tasks.spawn(async move {
            // The first pass is made before READY (after a reload, the old generation's last
            // pass stands); the schedule starts after it, or at once when a notification wakes it.
            tokio::select! {
                () = tokio::time::sleep(schedule.after_success(schedule::jitter_random())) => {}
                () = wake.notified() => wake.notify_one(),
                () = stop.cancelled() => return,
            }
            schedule::run(
                schedule,
                || {
                    let jobs = jobs.clone();
                    async move {
                        let (tx, rx) = oneshot::channel();
                        jobs.send(Job::Pass(tx)).await.is_ok() && rx.await.unwrap_or(false)
                    }
                },
                &wake,
                stop.cancelled_owned(),
            )
            .await;
        });
    }
    let mut ticks: Vec<(Duration, fn() -> Job)> = vec![(Duration::from_secs(1), || Job::ApplyApproved), (Duration::from_millis(500), || Job::Logs)];
    if let Some(period) = settings.refresh_every {
        ticks.push((period, || Job::Refresh));
    }
    for (period, job) in ticks {
        let (jobs, stop) = (jobs.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.cancelled() => return,
                }
                // A full queue means the worker is busy: this tick is skipped, not stacked.
                if jobs.try_send(job()).is_err() && jobs.is_closed() {
                    return;
                }
            }
        });
    }
    if let Some((root, rescan)) = settings.maildir.clone() {
        let (wake, done) = (wake.clone(), stop.clone().cancelled_owned());
        tasks.spawn(async move {
            match crate::sources::maildir::Maildir::open(&root) {
                Ok(maildir) => {
                    if let Err(e) = crate::sources::maildir::watch(&maildir, rescan, wake, done).await {
                        error!("Cannot watch the Maildir {}: {e}", root.display());
                    }
                }
                Err(e) => error!("Cannot open the Maildir {}: {e}", root.display()),
            }
        });
    }
    if let Some((imap, use_idle, interval)) = settings.imap.clone() {
        let (wake, done) = (wake.clone(), stop.clone().cancelled_owned());
        tasks.spawn(async move { crate::sources::imap::watch(&imap, use_idle, interval, wake, done).await });
    }
}

/// Sends the alert queue every two seconds until `stop`, on the daemon's runtime: an SMTP server
/// that hangs holds this task only (lettre's timeout ends the attempt), never a pass.
async fn mail_loop(mailer: mailer::Mailer, state_dir: PathBuf, shared: Shared, stop: CancellationToken) {
    let mut store = match crate::store::Store::open(&state_dir) {
        Ok(s) => s,
        Err(e) => {
            error!("Alerts cannot be sent: {}", crate::error_chain(&e));
            return;
        }
    };
    loop {
        let round = tokio::select! {
            round = mailer.deliver(&mut store) => round,
            () = stop.cancelled() => return,
        };
        match round {
            Ok(round) => {
                if let Ok(mut p) = shared.write() {
                    p.metrics.alerts_sent += round.sent as u64;
                    p.metrics.alerts_failed += round.failed as u64;
                }
            }
            Err(e) => warn!("Alert queue: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The worker: owns the engine, does one job at a time.
struct Worker {
    engine: Engine,
    /// The daemon's settings of the engine's configuration.
    settings: Settings,
    /// The daemon's runtime, which every engine of this worker waits on for its requests.
    runtime: tokio::runtime::Handle,
    shared: Shared,
    /// The configuration file, for the commands the e-mails give.
    config_path: PathBuf,
    followers: Vec<(Follower, LogKind)>,
    journal: Option<JournalReader>,
    /// The catalogue of the last good answer, with that answer's fetch time.
    catalogue: Option<(String, Catalogue)>,
    /// Since when the annuaire has failed, with the last error.
    failing_since: Option<(String, u64, String)>,
    /// Approved plans that could not be applied, with why, already said in the log.
    apply_failures: std::collections::BTreeSet<(i64, String)>,
    published_plan: Option<i64>,
    /// The configuration file's text as loaded, to tell what a reload changes.
    loaded: String,
    /// How reading each followed log goes (by its key), to say a failure once, not every tick.
    health: BTreeMap<String, Health>,
}

#[derive(Clone, Copy)]
enum LogKind {
    Squid,
    Nft,
}

impl Worker {
    fn new(engine: Engine, settings: Settings, runtime: tokio::runtime::Handle, shared: Shared, config_path: PathBuf, loaded: String) -> Worker {
        let mut w = Worker {
            engine,
            settings,
            runtime,
            shared,
            config_path,
            followers: Vec::new(),
            journal: None,
            catalogue: None,
            failing_since: None,
            apply_failures: Default::default(),
            published_plan: None,
            loaded,
            health: BTreeMap::new(),
        };
        w.open_followers();
        w
    }

    fn open_followers(&mut self) {
        let logs = self.settings.logs.clone();
        self.followers.clear();
        for (path, kind) in [(logs.squid_access_log, LogKind::Squid), (logs.nft_log, LogKind::Nft)] {
            let Some(path) = path else { continue };
            let saved = self.engine.store.log_position(&path.to_string_lossy()).unwrap_or_else(|e| {
                warn!("Cannot read the saved position of {}: {}", path.display(), crate::error_chain(&e));
                None
            });
            info!("Following {} from {}.", path.display(), if saved.is_some() { "where it stopped" } else { "its end" });
            self.followers.push((Follower::new(&path, saved), kind));
        }
        self.journal = logs.journal.map(|directory| {
            let mut reader = JournalReader::new(directory, None);
            reader.cursor = self.engine.store.log_position(&reader.key()).ok().flatten().map(|p| p.first_line);
            // One journalctl child, on the daemon's runtime, until this reader is dropped.
            reader.follow_on(self.runtime.clone());
            info!("Following the journal ({}).", reader.key());
            reader
        });
    }

    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        self.publish();
        while let Some(job) = rx.blocking_recv() {
            match job {
                Job::Pass(reply) => {
                    let ok = self.pass();
                    let _ = reply.send(ok);
                }
                Job::ApplyApproved => self.apply_approved(),
                Job::Refresh => {
                    match self.engine.refresh_addresses() {
                        Ok(Some(change)) => self.raise_refused(&change),
                        Ok(None) => {}
                        Err(e) => warn!("Resolving the hosts in force: {}", crate::error_chain(&e)),
                    }
                    self.publish();
                }
                Job::Logs => self.logs(),
                Job::Reload(config, text, settings, taken) => {
                    let ok = self.reload(*config, text, *settings);
                    let _ = taken.send(ok);
                }
                Job::ReloadRefused(reason) => self.audit("config.reload_refused", &reason),
                Job::Ping(reply) => {
                    let _ = reply.send(());
                }
                Job::Repair => self.repair(),
            }
            // What the job allocated (a pass, the published lists, a log's lines) goes back to
            // the system now, not at the next pass.
            crate::memory::release_freed();
        }
        info!("Worker stopped.");
    }

    /// Takes a configuration read on SIGHUP, audited with what changed (`config.reloaded`), or
    /// refused with why (`config.reload_refused`). Outputs that the new configuration writes
    /// differently (a `wildcard_style`, an export added) are rewritten at once, audited as
    /// `config.outputs_rewritten`: nobody tampered with them, and nobody is told so.
    fn reload(&mut self, config: Config, text: String, settings: Settings) -> bool {
        // Outputs that differed already before are drift: the next pass repairs and reports
        // them (with what the new configuration changes in them).
        let drifted_before = self.engine.drift().map_or(true, |d| !d.is_empty());
        match Engine::open(config) {
            Ok(engine) => {
                // A new client with the new settings: the old one's connections go with it.
                self.engine = engine.on_runtime(self.runtime.clone());
                self.settings = settings;
                self.catalogue = None;
                self.open_followers();
                let changes = reload::changes(&self.loaded, &text);
                self.loaded = text;
                info!("Configuration reloaded: {changes}.");
                self.audit("config.reloaded", &changes);
                if !drifted_before {
                    if let Err(e) = self.engine.rewrite_for_configuration() {
                        warn!("The outputs could not be rewritten for the new configuration (the next pass tries again): {}", crate::error_chain(&e));
                    }
                }
                self.publish();
                true
            }
            Err(e) => {
                let reason = crate::error_chain(&e);
                error!("The new configuration cannot be used, the old one stays: {reason}");
                self.audit("config.reload_refused", &reason);
                false
            }
        }
    }

    fn audit(&mut self, action: &str, detail: &str) {
        if let Err(e) = self.engine.store.audit("rocsync", action, None, detail, &now()) {
            error!("Cannot write the audit log ({action}): {}", crate::error_chain(&e));
        }
    }

    fn raise(&mut self, alert: Alert) {
        if !self.settings.alerts {
            return;
        }
        let window = self.settings.dedup_window;
        if let Err(e) = self.engine.store.raise(&alert, &now(), window.as_millis() as u64, now_millis()) {
            error!("Cannot queue an alert: {}", crate::error_chain(&e));
        }
    }

    /// One alert per host whose DNS answer pointed inside.
    fn raise_refused(&mut self, change: &crate::resolve::BookChange) {
        let mut by_host: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> = Default::default();
        for (host, ip, why) in &change.refused {
            let (addresses, reasons) = by_host.entry(host.to_string()).or_default();
            addresses.push(ip.to_string());
            reasons.push((*why).to_owned());
        }
        for (host, (addresses, reasons)) in by_host {
            self.raise(Alert::DnsRefused { host, addresses, reasons });
        }
    }

    /// A change someone else made to rocsync's nftables table, seen by the monitor: repaired
    /// now and audited as a pass would (`sink.repaired`), with the same alert.
    fn repair(&mut self) {
        match self.engine.repair_drift() {
            Ok(repaired) if !repaired.is_empty() => {
                self.raise(Alert::DriftRepaired { details: repaired });
                self.publish();
            }
            Ok(_) => {}
            Err(e) => warn!("nftables: the repair after a change by someone else failed (the next poll tries again): {}", crate::error_chain(&e)),
        }
    }

    /// One reconcile pass, then what it means for people: plans to review, failures to tell.
    fn pass(&mut self) -> bool {
        // How long the work takes, for the metrics: the system's monotonic time, not the clock.
        let started = Instant::now();
        let result = self.engine.once(false);
        let mut failure = None;
        let ok = match result {
            Ok(run) => {
                self.failing_since = None;
                self.back_to_normal();
                self.tell_superseded(&run.superseded);
                if let Ok(mut p) = self.shared.write() {
                    let at = now_utc().unix_timestamp();
                    p.metrics.last_good_poll.insert(run.read.source.clone(), at);
                    if run.plans.iter().any(|plan| plan.status == Status::Applied) {
                        p.metrics.applies += 1;
                        p.metrics.last_apply_seconds = started.elapsed().as_secs_f64();
                        p.metrics.apply_seconds_total += p.metrics.last_apply_seconds;
                    }
                }
                if !run.repaired.is_empty() {
                    self.raise(Alert::DriftRepaired { details: run.repaired.clone() });
                }
                if let Some(change) = &run.addresses {
                    self.raise_refused(change);
                }
                true
            }
            Err(e) => {
                let text = crate::error_chain(&e);
                failure = Some(text.clone());
                warn!("Pass failed; what is in force stays: {text}");
                if let EngineError::Sink { plan, .. } = &e {
                    self.raise(Alert::ApplyFailed { plan: *plan, error: text.clone() });
                } else if matches!(e, EngineError::StoreLost { .. } | EngineError::LockTimeout { .. }) {
                    // rocsync's own state, not the annuaire: the error says what to do, and an
                    // "annuaire unreachable" alert would send the DSI the wrong way.
                    error!("{text}");
                } else {
                    if let Ok(mut p) = self.shared.write() {
                        p.metrics.polls_failed += 1;
                    }
                    self.note_unreachable(text);
                }
                false
            }
        };
        if let Ok(open) = self.engine.store.open_plans() {
            self.review_alerts(&open);
        }
        self.certificate_alert();
        self.catalogue = None;
        self.publish();
        self.tell_status(failure.as_deref());
        ok
    }

    /// After an "annuaire unreachable" alert, one "back to normal" alert when it answers well
    /// again. The store tells whether one is owed, so that a restart in between loses nothing.
    fn back_to_normal(&mut self) {
        let source = self.engine.config.source.to_string();
        let window = self.settings.dedup_window;
        let Ok(Some((down_ms, Alert::Unreachable { since, .. }))) = self.engine.store.last_raised(&unreachable_key(&source)) else { return };
        // An unreachable alert is raised again every pass while the outage lasts, so an older
        // one belongs to an outage told about before this version (none is owed for it).
        let recent = now_millis().saturating_sub(down_ms) <= window.as_millis() as u64 + 86_400_000;
        let alert = Alert::BackToNormal { source: source.clone(), since, down_ms };
        if recent && !self.engine.store.alert_raised_since(&alert.key(), 0).unwrap_or(true) {
            info!(source = %source, "The annuaire answers well again.");
            self.raise(alert);
        }
    }

    /// Tells the RSSI that plans it was asked to review were superseded, and by what.
    fn tell_superseded(&mut self, superseded: &[(i64, Vec<i64>)]) {
        for (plan, by) in superseded {
            // Only a plan the RSSI was told about: a plan that never waited is news to nobody.
            if !self.engine.store.alert_raised_since(&review_key(*plan), 0).unwrap_or(false) {
                continue;
            }
            let why = if by.is_empty() { Withdrawn::NoLongerAsked } else { Withdrawn::Replaced { by: by.clone() } };
            let at = self.run_at();
            self.raise(Alert::Superseded { plan: *plan, why, at });
        }
    }

    /// Where, and as whom, the commands of an e-mail are to be run: this host, the owner of the
    /// state directory (the service user: a command run as another user cannot write the
    /// store), and this configuration when it is not the default one.
    fn run_at(&self) -> RunAt {
        use std::os::unix::fs::MetadataExt as _;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let user = std::fs::metadata(&self.engine.config.state_dir).ok().map(|m| {
            let uid = m.uid();
            crate::accounts::user_name(uid).unwrap_or_else(|| format!("uid {uid}"))
        });
        let path = std::path::absolute(&self.config_path).unwrap_or_else(|_| self.config_path.clone());
        let config = (path != Path::new(DEFAULT_CONFIG)).then(|| path.display().to_string());
        let console = self.engine.config.console.as_ref().and_then(|c| c.public_url.as_deref()).map(crate::text::escaped);
        RunAt { host: crate::text::escaped(&host), user: user.map(|u| crate::text::escaped(&u)), config, console }
    }

    /// Tells systemd how the last pass went (`STATUS=`, in `systemctl status`), after every
    /// pass: an old error must not stay there after later good reads.
    fn tell_status(&self, failure: Option<&str>) {
        let text = match failure {
            None => {
                let in_force = self.engine.store.applied_plan_id().unwrap_or(0);
                let waiting = self.engine.store.open_plans().map(|p| p.iter().filter(|p| p.status == Status::Pending).count()).unwrap_or(0);
                format!("running; last pass {} OK: plan {in_force} in force, {waiting} plan(s) waiting for approval", now())
            }
            Some(error) => format!("running; last pass {} failed, what is in force stays: {error}", now()),
        };
        // One line of a datagram: newlines would end the field.
        let line: String = text.replace(['\n', '\r'], " ").chars().take(400).collect();
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&line)]);
    }

    fn note_unreachable(&mut self, error: String) {
        let source = self.engine.config.source.to_string();
        let since = self.failing_since.get_or_insert_with(|| (now(), now_millis(), error.clone()));
        since.2 = error;
        let after = self.settings.unreachable_alert_after;
        if now_millis().saturating_sub(since.1) >= after.as_millis() as u64 {
            let alert = Alert::Unreachable { source, since: since.0.clone(), error: since.2.clone() };
            self.raise(alert);
        }
    }

    /// A review e-mail for each plan that waits and was not told yet; a reminder for those
    /// waiting longer than `review.remind_after`. Both in the mails' language, saying first
    /// when the plan closes much.
    fn review_alerts(&mut self, open: &[Plan]) {
        let remind = self.settings.remind_after;
        let lang = self.settings.language.clone();
        for plan in open.iter().filter(|p| p.status == Status::Pending) {
            // The mail is composed only when it is to be sent: this runs every second.
            if !self.engine.store.alert_raised_since(&review_key(plan.id), 0).unwrap_or(true) {
                let (closing, at) = (self.closing(plan), self.run_at());
                let diff = crate::plan::render::text(&plan.diff, &lang);
                self.raise(Alert::Review { plan: plan.id, diff, reasons: plan.reasons.clone(), closing, at });
                continue;
            }
            let age = OffsetDateTime::parse(&plan.created, &Rfc3339).map(|c| now_utc() - c).unwrap_or_default();
            let since = now_millis().saturating_sub(remind.as_millis() as u64);
            if age >= remind && !self.engine.store.alert_raised_since(&reminder_key(plan.id), since).unwrap_or(true) {
                let (closing, at) = (self.closing(plan), self.run_at());
                let diff = crate::plan::render::text(&plan.diff, &lang);
                self.raise(Alert::Reminder { plan: plan.id, created: plan.created.clone(), diff, closing, at });
            }
        }
    }

    /// How much `plan` closes of what is in force, when the mass-removal guard speaks against
    /// it (more than `review.max_removal_percent` or `review.max_removal_hosts`).
    fn closing(&self, plan: &Plan) -> Option<Closing> {
        let in_force = self.engine.store.applied_summary().map(|(_, hosts)| hosts).unwrap_or(0);
        let fired = !self.engine.config.guard.check(in_force, &plan.diff).is_empty();
        fired.then(|| Closing { hosts: plan.diff.closings(), in_force })
    }

    fn certificate_alert(&mut self) {
        let Some(Ok(cert)) = self.engine.client_certificate() else { return };
        let left = cert.not_after - now_utc();
        if left > time::Duration::try_from(self.engine.config.cert_expiry_warning).unwrap_or(time::Duration::days(30)) {
            return;
        }
        let alert = Alert::Certificate {
            subject: cert.subject.clone(),
            not_after: cert.not_after.format(&Rfc3339).unwrap_or_default(),
            days_left: left.whole_days(),
        };
        // Once a day.
        if !self.engine.store.alert_raised_since(&alert.key(), now_millis().saturating_sub(86_400_000)).unwrap_or(true) {
            self.raise(alert);
        }
    }

    /// Applies the plans approved from the command line since the last tick (every second).
    fn apply_approved(&mut self) {
        let open = match self.engine.store.open_plans() {
            Ok(plans) => plans,
            Err(e) => {
                warn!("Cannot read the plans: {}", crate::error_chain(&e));
                return;
            }
        };
        // Plans made from the command line (`rocsync plan`) and reminders are seen here too.
        self.review_alerts(&open);
        let approved: Vec<Plan> = open.into_iter().filter(|p| p.status == Status::Approved).collect();
        if approved.is_empty() {
            return;
        }
        for plan in approved {
            let started = Instant::now();
            match self.engine.apply(plan.id, "rocsync") {
                Ok(done) => {
                    info!(plan = plan.id, "Approved plan applied ({} plan(s)).", done.len());
                    if let Ok(mut p) = self.shared.write() {
                        p.metrics.applies += 1;
                        p.metrics.last_apply_seconds = started.elapsed().as_secs_f64();
                        p.metrics.apply_seconds_total += p.metrics.last_apply_seconds;
                    }
                }
                Err(e) => {
                    let text = crate::error_chain(&e);
                    // Tried again every second: said once until the reason changes.
                    if self.apply_failures.insert((plan.id, text.clone())) {
                        warn!(plan = plan.id, "Approved plan not applied: {text}");
                    }
                    match e {
                        EngineError::Sink { .. } => self.raise(Alert::ApplyFailed { plan: plan.id, error: text }),
                        // Superseded by the store on the way: whoever approved it waits for it.
                        EngineError::Store(StoreError::Stale { current, .. }) => {
                            let at = self.run_at();
                            self.raise(Alert::Superseded { plan: plan.id, why: Withdrawn::Stale { current }, at });
                        }
                        _ => {}
                    }
                }
            }
        }
        self.publish();
    }

    /// The catalogue of the last good answer, parsed again only when a newer one is stored.
    fn catalogue(&mut self) -> Option<&Catalogue> {
        let cached = self.engine.store.latest_cached_answer().ok()??;
        // A `rocsync once` run beside the daemon may have stored a newer answer.
        if self.catalogue.as_ref().is_none_or(|(at, _)| *at != cached.fetched_at) {
            let answer = crate::sources::annuaire::parse(&cached.body, cached.content_type.as_deref()).ok()?;
            self.catalogue = Some((cached.fetched_at, Catalogue::from_answer(&answer)));
        }
        self.catalogue.as_ref().map(|(_, c)| c)
    }

    /// Reads what the followed logs added, and queues an alert per blocked AMC request (counted
    /// and deduplicated), together with the new position of each log.
    fn logs(&mut self) {
        let prefix = self.settings.logs.nft_prefix.clone();
        let now_t = now_millis();
        if let Some(mut journal) = self.journal.take() {
            let key = journal.key();
            if self.due(&key, now_t) {
                match journal.read() {
                    Ok(chunk) => {
                        self.read_ok(&key, "the journal");
                        let raised = if chunk.lines.is_empty() { Vec::new() } else { self.correlate(&chunk.lines, LogKind::Nft, &prefix) };
                        let counts = self.usage(&chunk.lines, LogKind::Nft, &prefix);
                        let position = LogPosition { inode: 0, offset: 0, first_line: journal.cursor.clone().unwrap_or_default() };
                        self.record(&key, &position, raised, &counts);
                    }
                    Err(e) => self.read_failed(&key, "the journal", e.to_string(), now_t),
                }
            }
            self.journal = Some(journal);
        }
        let mut followers = std::mem::take(&mut self.followers);
        for (follower, kind) in &mut followers {
            let key = follower.path().to_string_lossy().into_owned();
            if !self.due(&key, now_t) {
                continue;
            }
            let chunk = match follower.read() {
                Ok(c) => c,
                Err(e) => {
                    self.read_failed(&key, &key, e.to_string(), now_t);
                    continue;
                }
            };
            self.read_ok(&key, &key);
            if let Some(how) = chunk.rotated {
                info!("{} was rotated ({how}); reading the new file from its start.", follower.path().display());
            }
            let Some(position) = follower.position().cloned() else { continue };
            let mut raised = Vec::new();
            if !chunk.lines.is_empty() {
                raised = self.correlate(&chunk.lines, *kind, &prefix);
            }
            let counts = self.usage(&chunk.lines, *kind, &prefix);
            self.record(&key, &position, raised, &counts);
        }
        self.followers = followers;
    }

    /// Whether the log `key` is to be read at `now`: a failing one waits for its back-off.
    fn due(&self, key: &str, now: Millis) -> bool {
        self.health.get(key).is_none_or(|h| h.due(now))
    }

    /// A read of `what` failed: said once per reason (a log read every half second filled
    /// the journal), then retried less and less often, up to once a minute.
    fn read_failed(&mut self, key: &str, what: &str, reason: String, now: Millis) {
        if let Tell::Failed { reason, retry_in } = self.health.entry(key.to_owned()).or_default().failed(reason, now) {
            warn!(
                watched = %key,
                "Cannot read {what}: {reason}. Trying again in {} s, then less and less often (at least once a minute); said again only if the reason changes.",
                retry_in.as_secs()
            );
        }
    }

    /// A read of `what` worked: said once after failures.
    fn read_ok(&mut self, key: &str, what: &str) {
        if let Some(Tell::Recovered { attempts, reason }) = self.health.get_mut(key).map(Health::succeeded) {
            info!(watched = %key, "Reading {what} works again, after {attempts} failed attempt(s) ({reason}).");
        }
    }

    /// The requests `lines` tell of, let through or blocked, counted per opening (issue 15,
    /// [`crate::usage`]): the hosts in force (the RPN host among them) and the annuaire's (a
    /// migrated AMC's host is closed, and a direct request to it still counts).
    fn usage(&mut self, lines: &[String], kind: LogKind, prefix: &str) -> crate::usage::Counts {
        if lines.is_empty() {
            return crate::usage::Counts::default();
        }
        let in_force = self.engine.store.applied().map(|a| a.state).unwrap_or_default();
        let reverse = self.engine.store.address_book().map(|b| b.reverse()).unwrap_or_default();
        let mut hosts: Vec<crate::host::Host> = in_force.entries.keys().cloned().collect();
        if let Some(catalogue) = self.catalogue() {
            hosts.extend(catalogue.hosts.keys().cloned());
        }
        let openings = crate::usage::Openings::new(&hosts);
        let source = match kind {
            LogKind::Squid => crate::usage::Source::Squid,
            LogKind::Nft => crate::usage::Source::Nft { accept_prefix: crate::usage::ACCEPT_PREFIX, drop_prefix: prefix },
        };
        crate::usage::count(lines, source, &openings, &reverse, crate::usage::now())
    }

    /// Counts what a log raised, and stores its alerts and its requests with the log's new
    /// position, at once.
    fn record(&mut self, key: &str, position: &LogPosition, raised: Vec<(Alert, String)>, counts: &crate::usage::Counts) {
        if let Ok(mut p) = self.shared.write() {
            for (alert, _) in &raised {
                if let Alert::Blocked { amcs, services, .. } = alert {
                    for amc in amcs {
                        for service in services {
                            *p.metrics.blocked.entry((amc.number.clone(), service.clone())).or_default() += 1;
                        }
                    }
                }
            }
        }
        let window = self.settings.dedup_window.as_millis() as u64;
        let to_store = if self.settings.alerts { raised } else { Vec::new() };
        if let Err(e) = self.engine.store.record_log_with_usage(key, position, &to_store, window, now_millis(), counts, crate::usage::now()) {
            error!("Cannot record what {key} said: {}", crate::error_chain(&e));
        }
    }

    fn correlate(&mut self, lines: &[String], kind: LogKind, prefix: &str) -> Vec<(Alert, String)> {
        let in_force = self.engine.store.applied().map(|a| a.state).unwrap_or_default();
        let reverse = self.engine.store.address_book().map(|b| b.reverse()).unwrap_or_default();
        let pending: Vec<Plan> = self.engine.store.open_plans().unwrap_or_default();
        let run_at = self.run_at();
        let Some(annuaire) = self.catalogue().cloned() else { return Vec::new() };
        let catalogue = with_notified(&annuaire, &pending);
        let correlator = Correlator::new(&catalogue, &in_force, reverse);
        // The RPN host and the migrated AMCs' hosts (issue 15).
        let rpn = self.engine.config.rpn.clone();
        let migrated = if rpn.is_some() { self.engine.store.rpn_migrated().unwrap_or_default() } else { Default::default() };
        let mut out = Vec::new();
        for line in lines {
            let parsed = match kind {
                LogKind::Squid => crate::watch::squid::parse_line(line),
                LogKind::Nft => crate::watch::nftlog::parse_line(line, prefix),
            };
            let Some(Line::Blocked(blocked)) = parsed else { continue };
            let Some(event) = correlator.event(&blocked).or_else(|| crate::rpn::event(&blocked, rpn.as_ref(), &in_force)) else { continue };
            let amcs = event
                .amcs
                .iter()
                .map(|n| AmcName {
                    number: n.clone(),
                    name: catalogue.amcs.iter().find(|(k, _)| k.as_str() == n).map(|(_, i)| i.name.clone()).unwrap_or_default(),
                })
                .collect();
            let pending_plan = event.host.as_deref().and_then(|h| {
                pending.iter().find(|p| p.diff.changes.iter().any(|c| c.after.is_some() && c.host.matches(h))).map(|p| p.id)
            });
            let notified = event.host.as_deref().is_some_and(|h| !annuaire.hosts.keys().any(|k| k.matches(h)));
            let at = log_time(&event.time);
            out.push((
                Alert::Blocked {
                    host: event.host.clone(),
                    ip: event.ip.map(|i| i.to_string()),
                    port: event.port,
                    client: event.client.map(|c| c.to_string()),
                    amcs,
                    services: event.services.clone(),
                    idb: event.idb,
                    in_force: event.in_force,
                    pending_plan,
                    notified,
                    at: run_at.clone(),
                    rpn: crate::rpn::note(&event, &migrated),
                },
                at,
            ));
        }
        out
    }

    /// Refreshes what the HTTP endpoint serves and the gauges.
    fn publish(&mut self) {
        // The state is decoded only when another plan came into force: decoding it at every pass
        // to count its hosts was most of the daemon's memory in a steady state.
        let Ok((plan_id, hosts)) = self.engine.store.applied_summary() else { return };
        let pending = self.engine.store.pending_count().unwrap_or(0);
        let (addresses, dns_refused) = match self.engine.config.resolver.enabled.then(|| self.engine.store.address_book()) {
            Some(Ok(b)) => (
                b.addresses().values().map(|a| a.len()).sum(),
                b.refused().iter().map(|(_, a)| a.len()).sum(),
            ),
            _ => (0, 0),
        };
        let documents = match self.published_plan != Some(plan_id) {
            true => match self.engine.store.applied() {
                Ok(applied) => Some((
                    Document::new(crate::sinks::plain::render(&applied.state, WildcardStyle::Star)),
                    Document::new(crate::sinks::json::render(&applied.state, applied.plan_id)),
                    applied.plan_id,
                )),
                Err(_) => return,
            },
            false => None,
        };
        let Ok(mut p) = self.shared.write() else { return };
        p.metrics.hosts_in_force = hosts;
        p.metrics.pending_plans = pending;
        p.metrics.addresses = addresses;
        p.metrics.dns_refused = dns_refused;
        p.serve_metrics = self.settings.serve_metrics;
        if let Some((plain, json, plan_id)) = documents {
            p.plain = plain;
            p.json = json;
            self.published_plan = Some(plan_id);
        }
    }
}

/// A log's time as people read it: Squid's epoch seconds become RFC 3339 (UTC); syslog's
/// stamps stay as written; none, now.
fn log_time(time: &str) -> String {
    if time.is_empty() {
        return now();
    }
    match time.parse::<f64>() {
        Ok(secs) => OffsetDateTime::from_unix_timestamp(secs as i64)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| time.to_owned()),
        Err(_) => time.to_owned(),
    }
}

/// Where `rocsync` reads its configuration when not told otherwise (the command line's default).
const DEFAULT_CONFIG: &str = "/etc/rocsync/config.toml";

/// The catalogue the log watchers correlate with: the annuaire's, plus the hosts that an open
/// notification-only plan would open. A host named only by an Inter-AMC e-mail is an AMC's
/// host too: blocked, the helpdesk is told which plan opens it rather than nothing.
fn with_notified(annuaire: &Catalogue, plans: &[Plan]) -> Catalogue {
    let mut catalogue = annuaire.clone();
    for change in plans.iter().flat_map(|p| &p.diff.changes).filter(|c| c.is_notification_only()) {
        let entry = change.entry();
        for (number, u) in &entry.amcs {
            catalogue.amcs.entry(number.clone()).or_insert_with(|| AmcInfo {
                number: number.clone(),
                name: u.name.clone(),
                state: AmcState::CircleOfTrust,
            });
            let uses = catalogue.hosts.entry(change.host.clone()).or_default();
            uses.entry(number.clone()).or_insert_with(|| Use { ports: entry.ports.clone(), services: u.services.clone() });
        }
    }
    catalogue
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_read_as_dates() {
        assert_eq!(log_time("1763630101.202"), "2025-11-20T09:15:01Z");
        assert_eq!(log_time("Nov 20 09:15:01"), "Nov 20 09:15:01");
        assert!(log_time("").starts_with("20"));
    }

    #[test]
    fn no_daemon_runs_on_a_fresh_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running(dir.path()), None);
        let lock = dir.path().join(LOCK_FILE);
        std::fs::write(&lock, "4242\n").unwrap();
        assert_eq!(running(dir.path()), None, "a lock file nobody holds is not a daemon");
        let held = File::options().write(true).open(&lock).unwrap();
        held.lock().unwrap();
        assert_eq!(running(dir.path()), Some(4242));
    }


    /// Issue 11, item 2: a blocked request to a host named only by an Inter-AMC e-mail was
    /// counted as "other denied". The watchers' catalogue has the hosts that an open
    /// notification-only plan opens, under the AMC the e-mail names.
    #[test]
    fn hosts_a_notification_only_plan_opens_are_recognised_in_the_logs() {
        use std::collections::{BTreeMap, BTreeSet};

        use crate::catalogue::{AmcUse, Entry, Origin, State};
        use crate::plan::{Change, HostDiff};
        use crate::watch::Blocked;

        let entry = Entry {
            ports: BTreeSet::from([443]),
            amcs: BTreeMap::from([(
                crate::amc::AmcNumber::parse("891234567").unwrap(),
                AmcUse { name: "NOUVELLE MUTUELLE DU SUD".into(), services: BTreeSet::new() },
            )]),
            origins: BTreeSet::from([Origin::Notification]),
            since: None,
        };
        let change = Change { host: crate::host::Host::parse("idb.nouvelle-mutuelle-sud.test").unwrap(), before: None, after: Some(entry) };
        let plan = Plan {
            id: 2,
            created: String::new(),
            base: 1,
            source: "file:annuaire.json".into(),
            serial: None,
            status: Status::Pending,
            needs_approval: true,
            reasons: vec![],
            diff: HostDiff { changes: vec![change] },
        };
        let (annuaire, in_force) = (Catalogue::default(), State::default());
        let blocked = Blocked { time: String::new(), client: None, host: Some("idb.nouvelle-mutuelle-sud.test".into()), ip: None, port: Some(443) };
        assert_eq!(Correlator::new(&annuaire, &in_force, Default::default()).event(&blocked), None, "the annuaire alone does not know it");
        let catalogue = with_notified(&annuaire, &[plan]);
        let event = Correlator::new(&catalogue, &in_force, Default::default()).event(&blocked).expect("an AMC's request");
        assert_eq!(event.amcs, ["891234567"]);
        assert!(!event.in_force && !event.idb);
        assert_eq!(catalogue.amcs.values().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["NOUVELLE MUTUELLE DU SUD"]);
    }
}
