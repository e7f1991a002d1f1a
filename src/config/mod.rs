//! The configuration file, read in two stages.
//!
//! [`schema::RawConfig`] mirrors the TOML file (`deny_unknown_fields` everywhere) and is only
//! checked; [`Config`] is what the rest of rocsync uses: settings per section, with paths
//! resolved, durations typed and secrets read. [`Config::load`] collects every problem before
//! giving up: each unknown key (with its line, column and the closest valid key), each wrong
//! type or unreadable duration, each invalid value ([`diagnostics`]).
//!
//! The configuration produces settings only: the engine builds the sinks from them (`Outputs`
//! in `src/engine/mod.rs`).
//!
//! Relative paths are resolved against the directory of the configuration file. Secrets are
//! never written in the file itself: a [`SecretRef`] names a file or an environment variable,
//! and what it holds is kept in a [`SecretString`], which never prints.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::de::DeTable;

use crate::catalogue::Policy;
use crate::console::ConsoleSettings;
use crate::plan::{Guard, Mode};
use crate::sinks::files::FileExport;
use crate::sinks::nft_script::NftNames;
use crate::sinks::nftables::Layout;
use crate::sources::https::HttpsSettings;
use crate::sources::imap::ImapSettings;

mod check;
pub mod diagnostics;
mod rules;
pub mod schema;
mod sections;

/// What the configuration asks of the file system and the kernel, checked with the rights of
/// the user running `rocsync check-config` (the service user, in the units' `ExecStartPre=`).
pub mod access;
pub mod rpn;

pub use diagnostics::{ConfigError, Problem};
pub use schema::{INLINE_SECRET, MailSource, NftHook, NftMode, SecretRef, duration};
// Where these types live now; the old paths stay for the code that still names them.
pub use crate::alerts::Language;
pub use crate::tls::TlsMode;

use diagnostics::{deserialize_collecting, key_span, line_col};
use rules::Target;
use schema::RawStore;

/// Where the annuaire answer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnuaireSource {
    /// A saved answer (`file:PATH`): the embedded default, tests, offline use.
    File(PathBuf),
    /// The live web service, over mutual TLS.
    Https(url::Url),
}

impl std::fmt::Display for AnnuaireSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnnuaireSource::File(p) => write!(f, "file:{}", p.display()),
            AnnuaireSource::Https(u) => write!(f, "{u}"),
        }
    }
}

/// When the annuaire is polled (`[annuaire]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSettings {
    pub poll_interval: Duration,
    /// A random delay up to this, added to each interval.
    pub poll_jitter: Duration,
    /// The longest wait between two tries after failures.
    pub backoff_max: Duration,
    /// The annuaire unreachable this long raises an alert.
    pub unreachable_alert_after: Duration,
}

/// `[notifications]`: how the Inter-AMC e-mails are judged and watched. Where they are read
/// from is [`Config::maildir`] or [`Config::imap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationSettings {
    pub enabled: bool,
    pub allowed_senders: Vec<String>,
    pub require_dkim_pass: bool,
    /// The receiving server's name in `Authentication-Results`; others are ignored.
    pub trusted_authserv_id: Option<String>,
    /// The least time between two polls that notifications trigger.
    pub debounce: Duration,
    /// Larger messages are set aside unread.
    pub max_message_bytes: u64,
    /// Whether the IMAP watcher waits with IDLE (else it checks every `imap_poll_interval`).
    pub imap_use_idle: bool,
    pub imap_poll_interval: Duration,
    /// How often the Maildir is scanned whole, beside inotify (`maildir.rescan_interval`).
    pub maildir_rescan_interval: Duration,
}

/// `[resolver]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    pub enabled: bool,
    pub servers: Vec<String>,
    pub policy: crate::resolve::Policy,
    pub timeout: Duration,
    pub concurrency: usize,
}

/// `[nftables]`: the names and the log prefix always (for `plan show --format nft` and the
/// drop log), the table's layout when it is enabled.
#[derive(Debug, Clone)]
pub struct NftSettings {
    pub names: NftNames,
    pub log_prefix: String,
    /// rocsync's nftables table, when `[nftables]` is enabled.
    pub layout: Option<Layout>,
}

/// `[watch]`: the logs followed, as written (relative to [`Config::base_dir`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSettings {
    pub squid_access_log: Option<PathBuf>,
    pub nft_log: Option<PathBuf>,
    pub journal: bool,
    /// A journal directory to read instead of the system's.
    pub journal_directory: Option<PathBuf>,
}

/// `[alerts]`, typed. No `PartialEq`: it holds a secret.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub enabled: bool,
    pub language: Language,
    pub from: String,
    /// The same alert is not sent again within this window.
    pub dedup_window: Duration,
    pub max_per_hour: u32,
    pub smtp: SmtpSettings,
    pub recipients: Recipients,
}

/// `[alerts.smtp]`. Its `Debug` shows the password as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub server: String,
    pub port: u16,
    pub security: TlsMode,
    pub username: String,
    /// Read from its file or variable when the configuration is loaded.
    pub password: Option<SecretString>,
    pub timeout: Duration,
}

/// `[alerts.recipients]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    pub dsi: Vec<String>,
    pub helpdesk: Vec<String>,
    pub rssi: Vec<String>,
}

/// `[review]`, beside [`Config::mode`] and [`Config::guard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSettings {
    /// A plan waiting this long is reminded to the RSSI.
    pub remind_after: Duration,
}

/// `[http]`: the endpoint of `rocsync run` for firewalls that pull the lists, and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub metrics: bool,
}

/// The configuration rocsync runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory relative paths were resolved against.
    pub base_dir: PathBuf,
    pub source: AnnuaireSource,
    /// The web service client's settings, when the source is `https://`.
    pub https: Option<HttpsSettings>,
    pub max_body_bytes: u64,
    /// Warn this long before the client certificate expires.
    pub cert_expiry_warning: Duration,
    /// When the annuaire is polled.
    pub annuaire: PollSettings,
    /// The Maildir notifications are delivered to, when they come that way.
    pub maildir: Option<PathBuf>,
    /// The IMAP mailbox notifications are read from, when they come that way.
    pub imap: Option<ImapSettings>,
    pub notifications: NotificationSettings,
    /// How hosts are resolved to addresses (`[resolver]`).
    pub resolver: ResolverSettings,
    pub policy: Policy,
    pub mode: Mode,
    pub guard: Guard,
    pub review: ReviewSettings,
    /// The files written (`[exports.*]`), enabled ones only.
    pub exports: Vec<FileExport>,
    pub nftables: NftSettings,
    pub watch: WatchSettings,
    pub alerts: AlertSettings,
    pub http: HttpSettings,
    /// The review console, when `[console]` is enabled.
    pub console: Option<ConsoleSettings>,
    /// The national reverse proxy, when `[rpn]` is enabled (its host is in `policy.extra_hosts`).
    pub rpn: Option<rpn::Rpn>,
    pub state_dir: PathBuf,
    /// Applied states kept in the store (`[store] keep_applied_states`).
    pub keep_applied_states: usize,
}

impl Config {
    /// The text of a configuration file: a regular file of a sensible size only. A FIFO at the
    /// path would block (a SIGHUP would then hang the daemon's signal handling), /dev/zero
    /// would never end.
    pub fn read_text(path: &Path) -> Result<String, String> {
        crate::sources::read_limited(path, 4 * 1024 * 1024)
            .map_err(|e| crate::error_chain(&e))
            .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned()))
    }

    /// Reads and checks a configuration file.
    pub fn from_path(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = Config::read_text(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            problems: vec![Problem { at: None, key: None, message: format!("cannot read: {e}") }],
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::load(&text, &origin, base)
    }

    /// Checks `text` (read from `origin`), resolving relative paths against `base_dir`.
    pub fn load(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = Config::load_with_problems(text, origin, base_dir)?;
        if problems.is_empty() { Ok(config) } else { Err(ConfigError { origin: origin.to_owned(), problems }) }
    }

    /// For the commands that need only the store (`status`, `plan list`, `approve`, …), which
    /// must keep working while a broken file is on disk: the configuration that the file's
    /// valid parts make, with its problems (`None` when it has none). Its state directory is
    /// the one the file names, read alone from `[store]` when the file is not even TOML; `Err`
    /// when the file cannot be read or that state directory cannot be told.
    pub fn from_path_lenient(path: &Path) -> Result<(Config, Option<ConfigError>), ConfigError> {
        let origin = path.display().to_string();
        let fail = |message: String| ConfigError { origin: origin.clone(), problems: vec![Problem { at: None, key: None, message }] };
        let text = Config::read_text(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let (mut config, problems) = match Config::load_with_problems(&text, &origin, base) {
            Ok((config, problems)) if problems.is_empty() => return Ok((config, None)),
            Ok(found) => found,
            // Not TOML: the defaults, for what follows; the state directory is read below.
            Err(not_toml) => (Config::load_with_problems("", &origin, base)?.0, not_toml.problems),
        };
        let error = ConfigError { origin: origin.clone(), problems };
        if let Some(p) = error.problems.iter().find(|p| p.key.as_deref() == Some("store.state_dir")) {
            return Err(ConfigError { origin: origin.clone(), problems: vec![p.clone()] });
        }
        let section = match toml::from_str::<StoreOnly>(&text) {
            Ok(whole) => whole,
            Err(_) => toml::from_str::<StoreOnly>(&store_section(&text))
                .map_err(|e| fail(format!("the state directory (`[store] state_dir`) cannot be read: {}", e.message())))?,
        };
        let state_dir = section.store.state_dir.unwrap_or_else(|| RawStore::default().state_dir);
        if state_dir.as_os_str().is_empty() {
            return Err(fail("`store.state_dir` is empty: give the directory that holds rocsync's state".into()));
        }
        config.state_dir = if state_dir.is_absolute() || base == Path::new(".") { state_dir } else { base.join(&state_dir) };
        Ok((config, Some(error)))
    }

    /// [`Config::load`], giving the configuration that the valid parts of `text` make with its
    /// problems; `Err` only when `text` is not TOML.
    fn load_with_problems(text: &str, origin: &str, base_dir: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
        let fail = |problems| ConfigError { origin: origin.to_owned(), problems };
        let root = DeTable::parse(text).map_err(|e| {
            fail(vec![Problem { at: e.span().map(|s| line_col(text, s.start)), key: None, message: e.message().to_owned() }])
        })?;
        let (raw, mut problems) = deserialize_collecting(text, root.clone());
        let raw = raw.unwrap_or_default();
        let config = check::check(raw, base_dir, &mut problems);
        // An export must not overwrite the configuration itself.
        let file = Path::new(origin);
        if let Some(me) = file.is_file().then(|| Target::of(file)).flatten() {
            for x in config.exports.iter().filter(|x| Target::of(&x.path).as_ref() == Some(&me)) {
                problems.push(Problem {
                    at: None,
                    key: Some(format!("exports.{}.path", x.export.key())),
                    message: format!("`{}` is this configuration file: an export must not overwrite rocsync's own files", x.path.display()),
                });
            }
        }
        for p in &mut problems {
            if p.at.is_none() {
                p.at = p.key.as_deref().and_then(|k| key_span(root.get_ref(), k)).map(|s| line_col(text, s));
            }
        }
        // In file order, as a person fixes them; problems with no place last.
        problems.sort_by_key(|p| p.at.unwrap_or((usize::MAX, 0)));
        Ok((config, problems))
    }
}

/// `[store] state_dir` alone, from a file that may have other problems: other keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoreOnly {
    store: StoreDirOnly,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StoreDirOnly {
    state_dir: Option<PathBuf>,
}

/// The `[store]` table of a file that is not TOML as a whole (and a top-level `store.…` key
/// written before the first table), to read it alone.
fn store_section(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut before_tables = true;
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or("").trim();
        if code.starts_with('[') {
            before_tables = false;
            inside = code == "[store]";
        }
        if inside || (before_tables && code.starts_with("store.")) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests;
