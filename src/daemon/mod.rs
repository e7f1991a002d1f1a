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
mod worker;

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
use worker::Worker;

/// A repair of the nftables table is asked of the worker and not yet begun.
static REPAIR_PENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
        // The nftables monitor, started last (a generation that fails to start leaves none behind): a change someone else makes to rocsync's table is repaired at once,
        // not at the next poll. One per configuration generation (a reload may
        // rename the table or turn [nftables] on); a weak sender, so that it
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
                    // One repair asked at a time, and never dropped: the monitor runs on a thread of
                    // its own and may wait for room in the queue (a full queue holds log and approval
                    // ticks, which repair nothing).
                    if !REPAIR_PENDING.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let _ = jobs.blocking_send(Job::Repair);
                    }
                    true
                });
                if let Err(e) = started {
                    warn!("nftables: cannot listen to nf_tables' notifications; changes by others are repaired at the next poll: {e}");
                }
            }
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
