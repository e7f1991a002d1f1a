//! Every setting `rocsync run` reads from the configuration, read in one place: a reload builds
//! a new [`Settings`] with the new configuration, and the next generation runs on it whole.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, Language, duration};
use crate::console::ConsoleSettings;
use crate::sources::imap::ImapSettings;
use crate::sources::schedule::PollSchedule;

/// What the daemon does with one configuration (one generation).
#[derive(Debug, Clone)]
pub struct Settings {
    /// When the annuaire is read (`annuaire.poll_*`, `notifications.debounce`).
    pub schedule: PollSchedule,
    /// `[http]`'s listen address, when the endpoint is on.
    pub http_listen: Option<String>,
    /// `http.metrics`.
    pub serve_metrics: bool,
    /// `alerts.enabled`: alerts are queued and a mailer sends them.
    pub alerts: bool,
    /// `alerts.dedup_window`.
    pub dedup_window: Duration,
    /// `alerts.language`.
    pub language: Language,
    /// `annuaire.unreachable_alert_after`.
    pub unreachable_alert_after: Duration,
    /// `review.remind_after`.
    pub remind_after: Duration,
    /// The Maildir watched, with its rescan interval.
    pub maildir: Option<(PathBuf, Duration)>,
    /// The IMAP mailbox watched, whether with IDLE, and its check interval.
    pub imap: Option<(ImapSettings, bool, Duration)>,
    /// The resolver's tick, when `[resolver]` is on.
    pub refresh_every: Option<Duration>,
    /// `[console]`, when on.
    pub console: Option<ConsoleSettings>,
    /// The logs watched for blocked requests.
    pub logs: Logs,
}

/// `[watch]`, with paths resolved against the configuration's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    pub squid_access_log: Option<PathBuf>,
    pub nft_log: Option<PathBuf>,
    /// The journal is followed; from this directory, or the system's when `None`.
    pub journal: Option<Option<PathBuf>>,
    /// `nftables.log_prefix`: how rocsync's drop lines are told apart.
    pub nft_prefix: String,
}

/// The daemon's settings of `config`.
pub fn settings(config: &Config) -> Settings {
    let raw = &config.raw;
    let d = |text: &str, default: u64| duration(text).unwrap_or(Duration::from_secs(default));
    let a = &raw.annuaire;
    let schedule = PollSchedule {
        interval: d(&a.poll_interval, 600),
        jitter: d(&a.poll_jitter, 60),
        backoff_max: d(&a.backoff_max, 1800),
        min_gap: d(&raw.notifications.debounce, 30),
    };
    let rescan = raw.notifications.maildir.rescan_interval.as_deref().and_then(|r| duration(r).ok()).unwrap_or(Duration::from_secs(300));
    let imap = &raw.notifications.imap;
    let base = &config.base_dir;
    let w = &raw.watch;
    Settings {
        schedule,
        http_listen: raw.http.enabled.then(|| raw.http.listen.clone()),
        serve_metrics: raw.http.metrics,
        alerts: raw.alerts.enabled,
        dedup_window: d(&raw.alerts.dedup_window, 3600),
        language: raw.alerts.language.clone(),
        unreachable_alert_after: d(&a.unreachable_alert_after, 7200),
        remind_after: d(&raw.review.remind_after, 86400),
        maildir: config.maildir.clone().map(|root| (root, rescan)),
        imap: config.imap.clone().map(|settings| (settings, imap.use_idle, d(&imap.poll_interval, 120))),
        refresh_every: config.resolver.enabled.then(|| config.resolver.policy.min_ttl.max(Duration::from_secs(1))),
        console: config.console.clone(),
        logs: Logs {
            squid_access_log: w.squid_access_log.as_ref().map(|p| base.join(p)),
            nft_log: w.nft_log.as_ref().map(|p| base.join(p)),
            journal: w.journal.then(|| w.journal_directory.as_ref().map(|d| base.join(d))),
            nft_prefix: raw.nftables.log_prefix.clone(),
        },
    }
}
