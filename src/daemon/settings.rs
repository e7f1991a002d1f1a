//! Every setting `rocsync run` reads from the configuration, read in one place: a reload builds
//! a new [`Settings`] with the new configuration, and the next generation runs on it whole.

use std::path::PathBuf;
use std::time::Duration;

use crate::alerts::Language;
use crate::config::Config;
use crate::console::ConsoleSettings;
use crate::sources::imap::ImapSettings;
use crate::sources::schedule::PollSchedule;

/// What the daemon does with one configuration (one generation).
#[derive(Debug, Clone)]
pub struct Settings {
    /// When the annuaire is read (`annuaire.poll_*`, `notifications.debounce`).
    pub schedule: PollSchedule,
    /// `[http]`'s listen address, when the endpoint is on.
    pub http_listen: Option<std::net::SocketAddr>,
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

/// The daemon's settings of `config`: the checked configuration's typed values, nothing parsed
/// again and no default of the daemon's own.
pub fn settings(config: &Config) -> Settings {
    let (a, n) = (&config.annuaire, &config.notifications);
    let schedule = PollSchedule { interval: a.poll_interval, jitter: a.poll_jitter, backoff_max: a.backoff_max, min_gap: n.debounce };
    let base = &config.base_dir;
    let w = &config.watch;
    Settings {
        schedule,
        http_listen: config.http.enabled.then_some(config.http.listen),
        serve_metrics: config.http.metrics,
        alerts: config.alerts.enabled,
        dedup_window: config.alerts.dedup_window,
        language: config.alerts.language.clone(),
        unreachable_alert_after: a.unreachable_alert_after,
        remind_after: config.review.remind_after,
        maildir: config.maildir.clone().map(|root| (root, n.maildir_rescan_interval)),
        imap: config.imap.clone().map(|settings| (settings, n.imap_use_idle, n.imap_poll_interval)),
        refresh_every: config.resolver.enabled.then(|| config.resolver.policy.min_ttl.max(Duration::from_secs(1))),
        console: config.console.clone(),
        logs: Logs {
            squid_access_log: w.squid_access_log.as_ref().map(|p| base.join(p)),
            nft_log: w.nft_log.as_ref().map(|p| base.join(p)),
            journal: w.journal.then(|| w.journal_directory.as_ref().map(|d| base.join(d))),
            nft_prefix: config.nftables.log_prefix.clone(),
        },
    }
}
