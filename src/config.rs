//! The configuration file, read in two stages.
//!
//! [`RawConfig`] mirrors the TOML file (`deny_unknown_fields` everywhere) and is only checked;
//! [`Config`] is what the rest of rocsync uses, with paths resolved and values typed.
//! [`Config::load`] collects every problem before giving up: each unknown key (with its line,
//! column and the closest valid key), each wrong type, each invalid value.
//!
//! Relative paths are resolved against the directory of the configuration file. Secrets are
//! never written in the file itself: a [`SecretRef`] names a file or an environment variable.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use crate::amc::AmcNumber;
use crate::catalogue::{HostPorts, Policy};
use crate::console::{AuthMode, ConsoleSettings, TlsFiles};
use crate::host::Host;
use crate::plan::{Guard, Mode};
use crate::sinks::files::{Export, FileExport, FileSink, PostWrite};
use crate::sinks::nft_script::NftNames;
use crate::sinks::nftables::{Layout, Managed, NftablesSink};
use crate::sinks::plain::WildcardStyle;
use crate::sources::https::{HttpsSettings, TlsSettings};
use crate::sources::imap::ImapSettings;

/// The configuration as written. Field docs are in `config.example.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub annuaire: RawAnnuaire,
    pub notifications: RawNotifications,
    pub resolver: RawResolver,
    pub nftables: RawNftables,
    pub exports: RawExports,
    pub policy: RawPolicy,
    pub watch: RawWatch,
    pub alerts: RawAlerts,
    pub review: RawReview,
    pub store: RawStore,
    pub http: RawHttp,
    pub console: RawConsole,
    pub rpn: rpn::RawRpn,
}

/// The review console served by `rocsync run` (off by default); see [`crate::console`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConsole {
    pub enabled: bool,
    pub listen: String,
    /// PEM certificate chain and key; required unless `listen` is a loopback address.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The console's address as people reach it, for the links in review and reminder mails.
    pub public_url: Option<String>,
    pub session_idle: String,
    pub session_max: String,
    pub auth: AuthMode,
    pub proxy_user_header: String,
    /// Addresses or networks of the reverse proxies whose user header is believed.
    pub trusted_proxies: Vec<String>,
}

impl Default for RawConsole {
    fn default() -> Self {
        RawConsole {
            enabled: false,
            // Not 8443: AMC services use it (CLC), and rocsync's managed chain drops it.
            listen: "127.0.0.1:9443".into(),
            tls_cert: None,
            tls_key: None,
            public_url: None,
            session_idle: "30m".into(),
            session_max: "12h".into(),
            auth: AuthMode::Local,
            proxy_user_header: "X-Remote-User".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The HTTP endpoint of `rocsync run` (off by default): the lists for firewalls that pull
/// them, and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub enabled: bool,
    pub listen: String,
    pub metrics: bool,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp { enabled: false, listen: "127.0.0.1:9780".into(), metrics: true }
    }
}

/// Where a secret is read from: `{ file = "/etc/rocsync/p12.pass" }` or `{ env = "VAR" }`.
///
/// Its `Deserialize` is written by hand: a password written inline (`password = "…"`) must be
/// refused without being repeated, and serde's own message (`invalid type: string "…"`) would
/// copy it into the terminal and, on SIGHUP, into the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretRef {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

/// Why an inline secret is refused; the value itself is never part of a message.
pub const INLINE_SECRET: &str =
    "must be `{ file = \"…\" }` or `{ env = \"…\" }`; an inline secret is refused and not shown";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SecretRef, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// The keys of a [`SecretRef`] table, checked by serde's derive (unknown keys are named, and
/// a key name is never the secret).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFields {
    file: Option<PathBuf>,
    env: Option<String>,
}

/// Takes a table; any other value may be the secret itself, so every other `visit_*` that
/// serde would answer with the value in its message is answered with [`INLINE_SECRET`].
struct SecretVisitor;

impl<'de> serde::de::Visitor<'de> for SecretVisitor {
    type Value = SecretRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`{ file = \"…\" }` or `{ env = \"…\" }`")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SecretRef, A::Error> {
        let SecretFields { file, env } = SecretFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(SecretRef { file, env })
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
        Err(E::custom(INLINE_SECRET))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<SecretRef, A::Error> {
        Err(serde::de::Error::custom(INLINE_SECRET))
    }
}

impl SecretRef {
    /// Reads the secret; a trailing line break in a file is not part of it.
    pub fn read(&self, base: &Path) -> Result<String, String> {
        match (&self.file, &self.env) {
            (Some(file), None) => {
                let path = base.join(file);
                let text = crate::sources::read_small(&path)
                    .and_then(|bytes| String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text")))
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let secret = text.trim_end_matches(['\r', '\n']).to_owned();
                if secret.is_empty() {
                    return Err(format!("{} is empty", path.display()));
                }
                Ok(secret)
            }
            (None, Some(var)) => std::env::var(var).map_err(|_| format!("environment variable {var} is not set")),
            _ => Err("give exactly one of `file` or `env`".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAnnuaire {
    pub url: String,
    pub client_pkcs12: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub client_password: Option<SecretRef>,
    pub ca_bundle: Option<PathBuf>,
    pub use_system_roots: bool,
    pub poll_interval: String,
    pub poll_jitter: String,
    pub connect_timeout: String,
    pub timeout: String,
    pub max_body_bytes: u64,
    pub backoff_max: String,
    pub unreachable_alert_after: String,
    pub cert_expiry_warning: String,
}

impl Default for RawAnnuaire {
    fn default() -> Self {
        RawAnnuaire {
            url: String::new(),
            client_pkcs12: None,
            client_cert: None,
            client_key: None,
            client_password: None,
            ca_bundle: None,
            use_system_roots: false,
            poll_interval: "10m".into(),
            poll_jitter: "1m".into(),
            connect_timeout: "10s".into(),
            timeout: "60s".into(),
            max_body_bytes: 8 * 1024 * 1024,
            backoff_max: "30m".into(),
            unreachable_alert_after: "2h".into(),
            cert_expiry_warning: "30d".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailSource {
    #[default]
    Imap,
    Maildir,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNotifications {
    pub enabled: bool,
    pub source: MailSource,
    pub allowed_senders: Vec<String>,
    pub require_dkim_pass: bool,
    /// The receiving server's name in `Authentication-Results`; others are ignored.
    pub trusted_authserv_id: Option<String>,
    pub debounce: String,
    /// Larger messages are set aside unread (a notification is a few kilobytes).
    pub max_message_bytes: u64,
    pub imap: RawImap,
    pub maildir: RawMaildir,
}

impl Default for RawNotifications {
    fn default() -> Self {
        RawNotifications {
            enabled: false,
            source: MailSource::Imap,
            allowed_senders: Vec::new(),
            require_dkim_pass: false,
            trusted_authserv_id: None,
            debounce: "30s".into(),
            max_message_bytes: 4 * 1024 * 1024,
            imap: RawImap::default(),
            maildir: RawMaildir::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    #[default]
    Tls,
    /// Plain connection upgraded with STARTTLS.
    Starttls,
    /// No TLS: only for a server on loopback.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawImap {
    pub server: String,
    pub port: u16,
    pub security: TlsMode,
    pub username: String,
    pub password: Option<SecretRef>,
    pub folder: String,
    pub processed_folder: String,
    pub use_idle: bool,
    pub poll_interval: String,
    /// CAs for the mail server's certificate; the system's when unset.
    pub ca_bundle: Option<PathBuf>,
    pub timeout: String,
}

impl Default for RawImap {
    fn default() -> Self {
        RawImap {
            server: String::new(),
            port: 993,
            security: TlsMode::Tls,
            username: String::new(),
            password: None,
            folder: "INBOX".into(),
            processed_folder: "rocsync-traites".into(),
            use_idle: true,
            poll_interval: "2m".into(),
            ca_bundle: None,
            timeout: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMaildir {
    pub path: Option<PathBuf>,
    pub rescan_interval: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawResolver {
    /// Resolve the hosts in force at each pass (for the nft script's sets, and nftables).
    pub enabled: bool,
    /// `ip` or `ip:port`; empty means the system's resolvers.
    pub servers: Vec<String>,
    pub min_ttl: String,
    pub max_ttl: String,
    pub grace: String,
    pub concurrency: usize,
    pub timeout: String,
    /// Internal ranges (CIDR) that AMC hosts may resolve into, allowed knowingly: by default an
    /// answer into private, loopback, link-local, … addresses is refused.
    pub allow_networks: Vec<String>,
}

impl Default for RawResolver {
    fn default() -> Self {
        RawResolver {
            enabled: false,
            servers: Vec::new(),
            min_ttl: "30s".into(),
            max_ttl: "1h".into(),
            grace: "1h".into(),
            concurrency: 32,
            timeout: "5s".into(),
            allow_networks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NftMode {
    /// rocsync keeps its sets; the administrator's ruleset refers to them.
    #[default]
    SetsOnly,
    /// rocsync also installs a chain that accepts the sets.
    Managed,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NftHook {
    #[default]
    Forward,
    Output,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNftables {
    pub enabled: bool,
    pub table: String,
    pub set_v4: String,
    pub set_v6: String,
    pub mode: NftMode,
    pub hook: NftHook,
    pub log_drops: bool,
    pub log_prefix: String,
    /// Users (names or uids) whose connections the managed chain on the output hook accepts:
    /// the proxy on this host. Unset is not the same as empty: see `check_exempt_users`.
    pub exempt_users: Option<Vec<String>>,
}

impl RawNftables {
    /// The names of rocsync's table and sets, as configured.
    pub fn names(&self) -> NftNames {
        NftNames { table: self.table.clone(), set_v4: self.set_v4.clone(), set_v6: self.set_v6.clone() }
    }
}

impl Default for RawNftables {
    fn default() -> Self {
        let names = NftNames::default();
        RawNftables {
            enabled: false,
            table: names.table,
            set_v4: names.set_v4,
            set_v6: names.set_v6,
            mode: NftMode::SetsOnly,
            hook: NftHook::Forward,
            log_drops: true,
            log_prefix: "rocsync-drop: ".into(),
            exempt_users: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawExports {
    pub squid: Option<RawFileExport>,
    pub plain: Option<RawFileExport>,
    pub nft_script: Option<RawFileExport>,
    pub haproxy: Option<RawFileExport>,
    pub json: Option<RawFileExport>,
    pub stormshield: Option<RawFileExport>,
}

/// One output file. `wildcard_style` is for `[exports.plain]` only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileExport {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub path: PathBuf,
    pub wildcard_style: Option<WildcardStyle>,
    /// Run after the file changed, as an argument list without a shell.
    #[serde(default)]
    pub post_write_command: Vec<String>,
    #[serde(default = "thirty_seconds")]
    pub post_write_timeout: String,
}

fn thirty_seconds() -> String {
    "30s".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicy {
    pub extra_hosts: Vec<String>,
    pub exclude_hosts: Vec<String>,
    pub mirror_amc: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWatch {
    pub squid_access_log: Option<PathBuf>,
    pub nft_log: Option<PathBuf>,
    pub journal: bool,
    /// A journal directory to read instead of the system's (a remote or exported journal).
    pub journal_directory: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Fr,
    En,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    pub enabled: bool,
    pub language: Language,
    pub from: String,
    pub dedup_window: String,
    pub max_per_hour: u32,
    pub smtp: RawSmtp,
    pub recipients: RawRecipients,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            enabled: false,
            language: Language::Fr,
            from: String::new(),
            dedup_window: "1h".into(),
            max_per_hour: 20,
            smtp: RawSmtp::default(),
            recipients: RawRecipients::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSmtp {
    pub server: String,
    pub port: u16,
    pub security: TlsMode,
    pub username: String,
    pub password: Option<SecretRef>,
    pub timeout: String,
}

impl Default for RawSmtp {
    fn default() -> Self {
        RawSmtp {
            server: String::new(),
            port: 587,
            security: TlsMode::Starttls,
            username: String::new(),
            password: None,
            timeout: "30s".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRecipients {
    pub dsi: Vec<String>,
    pub helpdesk: Vec<String>,
    pub rssi: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReview {
    pub mode: Mode,
    pub max_removal_percent: u32,
    pub max_removal_hosts: usize,
    pub remind_after: String,
}

impl Default for RawReview {
    fn default() -> Self {
        let guard = Guard::default();
        RawReview {
            mode: Mode::Hybrid,
            max_removal_percent: guard.max_removal_percent,
            max_removal_hosts: guard.max_removal_hosts,
            remind_after: "24h".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub state_dir: PathBuf,
    pub keep_applied_states: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { state_dir: PathBuf::from("/var/lib/rocsync"), keep_applied_states: crate::store::KEEP_APPLIED_STATES }
    }
}

/// One problem with the configuration, with where it is when that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    /// The dotted key (`annuaire.url`).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.at {
            write!(f, "line {line}, column {col}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<embedded>`.
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.origin, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.origin)?;
        }
        Ok(())
    }
}

/// Where the annuaire answer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnuaireSource {
    /// A saved answer (`file:PATH`): the embedded default, tests, offline use.
    File(PathBuf),
    /// The live web service, over mutual TLS.
    Https(url::Url),
}

impl fmt::Display for AnnuaireSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnnuaireSource::File(p) => write!(f, "file:{}", p.display()),
            AnnuaireSource::Https(u) => write!(f, "{u}"),
        }
    }
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
    /// The Maildir notifications are delivered to, when they come that way.
    pub maildir: Option<PathBuf>,
    /// The IMAP mailbox notifications are read from, when they come that way.
    pub imap: Option<ImapSettings>,
    /// How hosts are resolved to addresses (`[resolver]`).
    pub resolver: ResolverSettings,
    pub policy: Policy,
    pub mode: Mode,
    pub guard: Guard,
    pub files: FileSink,
    /// rocsync's nftables table, when `[nftables]` is enabled.
    pub nftables: Option<NftablesSink>,
    /// The review console, when `[console]` is enabled.
    pub console: Option<ConsoleSettings>,
    /// The national reverse proxy, when `[rpn]` is enabled (its host is in `policy.extra_hosts`).
    pub rpn: Option<rpn::Rpn>,
    pub state_dir: PathBuf,
    /// Every section as written and checked, for the parts of rocsync that read them.
    pub raw: RawConfig,
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
        config.state_dir = if state_dir.is_absolute() || base == Path::new(".") { state_dir.clone() } else { base.join(&state_dir) };
        config.raw.store.state_dir = state_dir;
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
        let config = check(raw, base_dir, &mut problems);
        // An export must not overwrite the configuration itself.
        let file = Path::new(origin);
        if let Some(me) = file.is_file().then(|| Target::of(file)).flatten() {
            for x in config.files.exports.iter().filter(|x| Target::of(&x.path).as_ref() == Some(&me)) {
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

/// Deserialises, and on each error records it, removes the offending key and tries again, so
/// that one run reports every unknown key and every wrong type.
fn deserialize_collecting(
    text: &str,
    mut table: toml::Spanned<DeTable<'_>>,
) -> (Option<RawConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    // Each round removes one key, so the number of keys bounds the loop; this bounds it again.
    for _ in 0..256 {
        match RawConfig::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => {
                let removed = e.span().and_then(|span| remove_at(table.get_mut(), &span, ""));
                let at = e.span().map(|s| line_col(text, s.start));
                let message = match &removed {
                    Some((key, _)) if e.message().starts_with("unknown field") => unknown_key_message(e.message(), key),
                    _ => e.message().to_owned(),
                };
                problems.push(Problem { at, key: removed.as_ref().map(|(path, _)| path.clone()), message });
                if removed.is_none() {
                    return (None, problems);
                }
            }
        }
    }
    (None, problems)
}

/// "unknown field `urll`, expected one of `url`, `format`" → "unknown key; did you mean `url`?"
fn unknown_key_message(serde_message: &str, path: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let expected = serde_message.split_once("expected").map(|(_, rest)| rest).unwrap_or("");
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(key, v), *v))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, v)) => format!("unknown key; did you mean `{v}`?"),
        None if valid.is_empty() => "unknown key; this table takes no keys".to_owned(),
        None => format!("unknown key; valid keys here: {}", valid.join(", ")),
    }
}

/// Removes the key whose name or value spans `span`; returns its dotted path.
fn remove_at(table: &mut DeTable<'_>, span: &std::ops::Range<usize>, prefix: &str) -> Option<(String, ())> {
    let hit = table.iter().find(|(k, v)| k.span() == *span || v.span() == *span).map(|(k, _)| k.clone());
    if let Some(key) = hit {
        table.remove(&key);
        return Some((join(prefix, key.get_ref()), ()));
    }
    for (k, v) in table.iter_mut() {
        let path = join(prefix, k.get_ref());
        match v.get_mut() {
            DeValue::Table(t) => {
                if let Some(found) = remove_at(t, span, &path) {
                    return Some(found);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let DeValue::Table(t) = item.get_mut() {
                        if let Some(found) = remove_at(t, span, &format!("{path}[{i}]")) {
                            return Some(found);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// The byte offset of the key `dotted` (`a.b.c`, `a.list[2]`) in the document, if it is there.
fn key_span(table: &DeTable<'_>, dotted: &str) -> Option<usize> {
    let (head, rest) = match dotted.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (dotted, None),
    };
    let (name, index) = match head.strip_suffix(']').and_then(|h| h.split_once('[')) {
        Some((name, i)) => (name, i.parse::<usize>().ok()),
        None => (head, None),
    };
    let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
    let value = match (index, value.get_ref()) {
        (Some(i), DeValue::Array(items)) => items.get(i)?,
        _ => value,
    };
    match (rest, value.get_ref()) {
        (None, _) if index.is_some() => Some(value.span().start),
        (None, _) => Some(key.span().start),
        (Some(rest), DeValue::Table(t)) => key_span(t, rest).or(Some(key.span().start)),
        (Some(_), _) => Some(value.span().start),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Checks values that the types alone cannot, and builds the runtime configuration.
fn check(raw: RawConfig, base: &Path, problems: &mut Vec<Problem>) -> Config {
    let mut bad = |key: &str, message: String| {
        problems.push(Problem { at: None, key: Some(key.to_owned()), message });
    };
    let resolve = |p: &Path| if p.is_absolute() || base == Path::new(".") { p.to_owned() } else { base.join(p) };

    let a = &raw.annuaire;
    let mut https = None;
    let source = if a.url.is_empty() {
        bad("annuaire.url", "is required (`https://…` for the web service, `file:PATH` for a saved answer)".into());
        AnnuaireSource::File(PathBuf::new())
    } else if let Some(path) = a.url.strip_prefix("file:") {
        let path = resolve(Path::new(path.strip_prefix("//").unwrap_or(path)));
        if !path.is_file() {
            bad("annuaire.url", format!("{} is not a readable file", path.display()));
        }
        AnnuaireSource::File(path)
    } else {
        match url::Url::parse(&a.url) {
            Ok(mut u) if u.scheme() == "https" => {
                if !u.username().is_empty() || u.password().is_some() {
                    // Never shown: the URL is printed by check-config and status, and stored.
                    bad("annuaire.url", "carries credentials (`user:password@`), refused and not shown: the annuaire knows the hospital by its certificate".into());
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                }
                check_tls_client(a, base, &mut bad);
                let password = a.client_password.as_ref().and_then(|s| s.read(base).ok());
                https = Some(HttpsSettings {
                    url: u.clone(),
                    tls: TlsSettings {
                        client_pkcs12: a.client_pkcs12.as_deref().map(resolve),
                        client_cert: a.client_cert.as_deref().map(resolve),
                        client_key: a.client_key.as_deref().map(resolve),
                        password,
                        ca_bundle: a.ca_bundle.as_deref().map(resolve),
                        use_system_roots: a.use_system_roots,
                    },
                    connect_timeout: duration(&a.connect_timeout).unwrap_or(Duration::from_secs(10)),
                    timeout: duration(&a.timeout).unwrap_or(Duration::from_secs(60)),
                    max_body_bytes: a.max_body_bytes,
                });
                AnnuaireSource::Https(u)
            }
            Ok(u) => {
                bad("annuaire.url", format!("scheme `{}` is neither https nor file", u.scheme()));
                AnnuaireSource::File(PathBuf::new())
            }
            Err(e) => {
                bad("annuaire.url", format!("not a URL: {e}"));
                AnnuaireSource::File(PathBuf::new())
            }
        }
    };
    let (floor, why) = poll_floor(&source);
    let between_polls = Bounds { min: floor, max: WEEK, why };
    let timeout_bounds = Bounds::new(SECOND, HOUR);
    for (key, value, bounds) in [
        ("annuaire.poll_interval", &a.poll_interval, between_polls),
        ("annuaire.poll_jitter", &a.poll_jitter, Bounds::new(Duration::ZERO, DAY)),
        ("annuaire.connect_timeout", &a.connect_timeout, Bounds::new(SECOND, 5 * MINUTE)),
        ("annuaire.timeout", &a.timeout, timeout_bounds),
        ("annuaire.backoff_max", &a.backoff_max, between_polls),
        ("annuaire.unreachable_alert_after", &a.unreachable_alert_after, Bounds::new(MINUTE, 30 * DAY)),
        ("annuaire.cert_expiry_warning", &a.cert_expiry_warning, Bounds::new(DAY, 365 * DAY)),
        ("notifications.debounce", &raw.notifications.debounce, Bounds { max: HOUR, ..between_polls }),
        ("notifications.imap.poll_interval", &raw.notifications.imap.poll_interval, Bounds::new(10 * SECOND, DAY)),
        ("notifications.imap.timeout", &raw.notifications.imap.timeout, timeout_bounds),
        ("resolver.min_ttl", &raw.resolver.min_ttl, Bounds::new(SECOND, DAY)),
        ("resolver.max_ttl", &raw.resolver.max_ttl, Bounds::new(SECOND, WEEK)),
        ("resolver.grace", &raw.resolver.grace, Bounds::new(Duration::ZERO, 30 * DAY)),
        ("resolver.timeout", &raw.resolver.timeout, Bounds::new(SECOND, 5 * MINUTE)),
        ("alerts.dedup_window", &raw.alerts.dedup_window, Bounds::new(MINUTE, 30 * DAY)),
        ("alerts.smtp.timeout", &raw.alerts.smtp.timeout, timeout_bounds),
        ("review.remind_after", &raw.review.remind_after, Bounds::new(SECOND, 365 * DAY)),
    ] {
        if let Err(e) = bounds.check(value) {
            bad(key, e);
        }
    }
    if let Some(rescan) = &raw.notifications.maildir.rescan_interval {
        if let Err(e) = Bounds::new(SECOND, DAY).check(rescan) {
            bad("notifications.maildir.rescan_interval", e);
        }
    }
    if a.max_body_bytes == 0 {
        bad("annuaire.max_body_bytes", "must be more than 0".into());
    }

    check_notifications(&raw.notifications, base, &mut bad);
    if let (Ok(min), Ok(max)) = (duration(&raw.resolver.min_ttl), duration(&raw.resolver.max_ttl)) {
        if min > max {
            bad("resolver.min_ttl", "is longer than resolver.max_ttl".into());
        }
    }
    for (i, server) in raw.resolver.servers.iter().enumerate() {
        let ok = server.parse::<std::net::IpAddr>().is_ok() || server.parse::<std::net::SocketAddr>().is_ok();
        if !ok {
            bad(&format!("resolver.servers[{i}]"), format!("`{server}` is not an IP address or IP:port"));
        }
    }
    for (i, net) in raw.resolver.allow_networks.iter().enumerate() {
        if net.parse::<ipnet::IpNet>().is_err() {
            bad(&format!("resolver.allow_networks[{i}]"), format!("`{}` is not a network in CIDR form (`10.20.0.0/16`, `fd00::/8`)", crate::text::escape(net)));
        }
    }
    if raw.resolver.concurrency == 0 {
        bad("resolver.concurrency", "must be at least 1".into());
    }
    let n = &raw.nftables;
    for (key, value) in [("nftables.table", &n.table), ("nftables.set_v4", &n.set_v4), ("nftables.set_v6", &n.set_v6)] {
        if !is_nft_identifier(value) {
            bad(key, format!("`{value}` is not an nftables name (a letter, then letters, digits or `_`, at most 32)"));
        }
    }
    if n.log_prefix.len() > 127 || n.log_prefix.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        bad("nftables.log_prefix", "must be printable, without quotes or backslashes, at most 127 bytes".into());
    }

    let mut policy = check_policy(&raw.policy, &mut bad);
    let rpn = rpn::check(&raw.rpn, &mut bad);
    policy.extra_hosts.extend(rpn.iter().map(|r| r.host.clone()));

    let r = &raw.review;
    if r.max_removal_percent > 100 {
        bad("review.max_removal_percent", format!("{} is more than 100", r.max_removal_percent));
    }
    check_alerts(&raw.alerts, base, &mut bad);
    let console = check_console(&raw.console, base, &mut bad);
    if raw.http.enabled && raw.http.listen.parse::<std::net::SocketAddr>().is_err() {
        bad("http.listen", format!("`{}` is not an address:port", raw.http.listen));
    }

    if raw.store.keep_applied_states == 0 {
        bad("store.keep_applied_states", "must be at least 1 (the state in force)".into());
    }
    // An empty path is the configuration's own directory once resolved: rocsync's files would
    // land among the configuration's.
    if raw.store.state_dir.as_os_str().is_empty() {
        bad("store.state_dir", "is empty: give the directory that holds rocsync's state".into());
    }
    for (key, path) in [
        ("notifications.maildir.path", &raw.notifications.maildir.path),
        ("watch.squid_access_log", &raw.watch.squid_access_log),
        ("watch.nft_log", &raw.watch.nft_log),
        ("watch.journal_directory", &raw.watch.journal_directory),
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            bad(key, "is empty: give a path, or leave the key out".into());
        }
    }

    let names = n.names();
    let mut exports = Vec::new();
    // Each export's file as the file system knows it, to find two that write one file.
    let mut targets: Vec<(&str, PathBuf, Target)> = Vec::new();
    let e = &raw.exports;
    // rocsync's own files, which no export may overwrite: the store and its locks, and a
    // `file:` source.
    let state_dir = resolve(&raw.store.state_dir);
    let mut own: Vec<(String, Target)> = ["state.db", "state.db-wal", "state.db-shm", "state.db-journal", "apply.lock", "daemon.lock"]
        .iter()
        .filter_map(|f| Target::of(&state_dir.join(f)).map(|t| (format!("the state store's {f}"), t)))
        .collect();
    if let AnnuaireSource::File(p) = &source {
        own.extend(Target::of(p).map(|t| ("the annuaire source (annuaire.url)".to_owned(), t)));
    }
    // …and the files it reads: certificates, keys, secrets, the logs it watches.
    let (an, imap) = (&raw.annuaire, &raw.notifications.imap);
    let read: [(&str, Option<&PathBuf>); 10] = [
        ("annuaire.client_pkcs12", an.client_pkcs12.as_ref()),
        ("annuaire.client_cert", an.client_cert.as_ref()),
        ("annuaire.client_key", an.client_key.as_ref()),
        ("annuaire.client_password", an.client_password.as_ref().and_then(|s| s.file.as_ref())),
        ("annuaire.ca_bundle", an.ca_bundle.as_ref()),
        ("notifications.imap.password", imap.password.as_ref().and_then(|s| s.file.as_ref())),
        ("notifications.imap.ca_bundle", imap.ca_bundle.as_ref()),
        ("alerts.smtp.password", raw.alerts.smtp.password.as_ref().and_then(|s| s.file.as_ref())),
        ("watch.squid_access_log", raw.watch.squid_access_log.as_ref()),
        ("watch.nft_log", raw.watch.nft_log.as_ref()),
    ];
    for (key, path) in read {
        if let Some(target) = path.filter(|p| !p.as_os_str().is_empty()).and_then(|p| Target::of(&resolve(p))) {
            own.push((format!("the file of {key}"), target));
        }
    }
    for (name, raw_export, export) in [
        ("squid", &e.squid, Export::Squid),
        ("plain", &e.plain, Export::Plain(e.plain.as_ref().and_then(|p| p.wildcard_style).unwrap_or_default())),
        ("nft_script", &e.nft_script, Export::NftScript(names.clone())),
        ("haproxy", &e.haproxy, Export::Haproxy),
        ("json", &e.json, Export::Json),
        ("stormshield", &e.stormshield, Export::Stormshield),
    ] {
        let Some(x) = raw_export.as_ref().filter(|x| x.enabled) else { continue };
        if x.wildcard_style.is_some() && name != "plain" {
            bad(&format!("exports.{name}.wildcard_style"), "only [exports.plain] takes a wildcard style".into());
        }
        let timeout = timeout_bounds.check(&x.post_write_timeout).unwrap_or_else(|err| {
            bad(&format!("exports.{name}.post_write_timeout"), err);
            Duration::from_secs(30)
        });
        let post_write = (!x.post_write_command.is_empty()).then(|| PostWrite { argv: x.post_write_command.clone(), timeout });
        let key = format!("exports.{name}.path");
        let path = resolve(&x.path);
        if x.path.as_os_str().is_empty() {
            bad(&key, "is empty: give the file to write".into());
        } else if let Some(target) = Target::of(&path) {
            if let Some((other, other_path, _)) = targets.iter().find(|(_, _, t)| *t == target) {
                bad(&key, format!("`{}` is the same file as exports.{other}.path (`{}`)", path.display(), other_path.display()));
            }
            if let Some((what, _)) = own.iter().find(|(_, t)| *t == target) {
                bad(&key, format!("`{}` is {what}: an export must not overwrite rocsync's own files", path.display()));
            }
            targets.push((name, path.clone(), target));
        } else {
            bad(&key, format!("`{}` names no file", x.path.display()));
        }
        exports.push(FileExport { export, path, post_write });
    }
    if exports.iter().any(|e| e.export == Export::Stormshield) && !raw.resolver.enabled {
        bad("exports.stormshield", "host objects need addresses: enable [resolver]".into());
    }
    if n.enabled && !cfg!(feature = "netlink") {
        bad("nftables.enabled", crate::sinks::nftables::NO_NETLINK.into());
    }
    if n.enabled && !raw.resolver.enabled {
        bad("nftables.enabled", "the sets hold addresses: enable [resolver] too".into());
    }
    let exempt_uids = check_exempt_users(n, &source, e, &mut bad);
    let nftables = n.enabled.then(|| NftablesSink {
        layout: Layout {
            names: names.clone(),
            managed: (n.mode == NftMode::Managed).then(|| Managed {
                hook: n.hook.clone(),
                log_drops: n.log_drops,
                log_prefix: n.log_prefix.clone(),
                exempt_uids,
                // Every port of the state in force, added when a state is enforced.
                drop_ports: BTreeSet::new(),
            }),
        },
    });
    if exports.is_empty() && !n.enabled {
        bad("exports", "nothing enforces the allow-list: configure an export or enable [nftables]".into());
    }

    Config {
        base_dir: base.to_owned(),
        source,
        https,
        max_body_bytes: a.max_body_bytes,
        cert_expiry_warning: duration(&a.cert_expiry_warning).unwrap_or(Duration::from_secs(30 * 86400)),
        resolver: {
            let r = &raw.resolver;
            let d = |text: &str, default: u64| duration(text).unwrap_or(Duration::from_secs(default));
            ResolverSettings {
                enabled: r.enabled,
                servers: r.servers.clone(),
                policy: crate::resolve::Policy {
                    min_ttl: d(&r.min_ttl, 30),
                    max_ttl: d(&r.max_ttl, 3600),
                    grace: d(&r.grace, 3600),
                    allow_networks: r.allow_networks.iter().filter_map(|n| n.parse().ok()).collect(),
                },
                timeout: d(&r.timeout, 5),
                concurrency: r.concurrency.max(1),
            }
        },
        imap: {
            let (n, i) = (&raw.notifications, &raw.notifications.imap);
            (n.enabled && n.source == MailSource::Imap).then(|| ImapSettings {
                server: i.server.clone(),
                port: i.port,
                security: i.security.clone(),
                username: i.username.clone(),
                password: i.password.as_ref().and_then(|p| p.read(base).ok()).unwrap_or_default(),
                folder: i.folder.clone(),
                processed_folder: i.processed_folder.clone(),
                ca_bundle: i.ca_bundle.as_deref().map(resolve),
                timeout: duration(&i.timeout).unwrap_or(Duration::from_secs(30)),
            })
        },
        maildir: match (&raw.notifications, &raw.notifications.maildir.path) {
            (n, Some(path)) if n.enabled && n.source == MailSource::Maildir => Some(resolve(path)),
            _ => None,
        },
        policy,
        mode: r.mode,
        guard: Guard { max_removal_percent: r.max_removal_percent, max_removal_hosts: r.max_removal_hosts },
        files: FileSink { exports },
        nftables,
        console,
        rpn,
        state_dir: resolve(&raw.store.state_dir),
        raw,
    }
}

type Bad<'a> = dyn FnMut(&str, String) + 'a;

/// `[nftables] exempt_users` as uids. Only a managed chain on the output hook sees which user
/// sends a packet (`meta skuid`). There, what this host sends to an AMC port without an
/// allowed address is dropped, and a proxy on this host sends exactly that for wildcard hosts
/// (they have no address), as rocsync does for the annuaire: left unset, the key is a problem
/// until its users are named, or `[]` says knowingly that none is.
fn check_exempt_users(n: &RawNftables, source: &AnnuaireSource, exports: &RawExports, bad: &mut Bad<'_>) -> BTreeSet<u32> {
    let output = n.mode == NftMode::Managed && n.hook == NftHook::Output;
    let Some(users) = &n.exempt_users else {
        let proxy = exports.squid.as_ref().is_some_and(|x| x.enabled) || exports.haproxy.as_ref().is_some_and(|x| x.enabled);
        let mut who = Vec::new();
        if proxy {
            who.push("the proxy's user (`proxy` for Debian's Squid, `haproxy` for HAProxy): it connects to wildcard hosts, which have no address in the sets");
        }
        if matches!(source, AnnuaireSource::Https(_)) {
            who.push("rocsync's own user (`rocsync` for the package): its calls to the annuaire leave this host too");
        }
        if n.enabled && output && !who.is_empty() {
            bad(
                "nftables.exempt_users",
                format!(
                    "with `hook = \"output\"` the managed chain drops what this host sends to AMC ports without an allowed address; \
                     name {}; or set `exempt_users = []` if none of them runs here",
                    who.join("; and ")
                ),
            );
        }
        return BTreeSet::new();
    };
    if n.enabled && !output && !users.is_empty() {
        bad(
            "nftables.exempt_users",
            "only the managed chain on the output hook sees which user sends a packet: set `mode = \"managed\"` and `hook = \"output\"`, or leave the key out".into(),
        );
    }
    let mut uids = BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
        match crate::accounts::user_id(user) {
            // root's traffic is every daemon's and every administrator's: exempting it would
            // leave the AMC filter with nothing to hold.
            Some(0) => bad(
                &format!("nftables.exempt_users[{i}]"),
                "root (uid 0) cannot be exempted: name the proxy's own user (`proxy`, `haproxy`)".into(),
            ),
            Some(uid) => {
                uids.insert(uid);
            }
            None => bad(
                &format!("nftables.exempt_users[{i}]"),
                format!("no user `{}` in /etc/passwd: give a user name or a numeric uid", crate::text::escape(user)),
            ),
        }
    }
    uids
}


fn check_tls_client(a: &RawAnnuaire, base: &Path, bad: &mut Bad<'_>) {
    match (&a.client_pkcs12, &a.client_cert, &a.client_key) {
        (Some(p12), None, None) => {
            check_file(bad, "annuaire.client_pkcs12", base, p12);
            match &a.client_password {
                Some(secret) => check_secret(bad, "annuaire.client_password", base, secret),
                None => bad("annuaire.client_password", "a PKCS#12 identity needs its password (`{ file = … }` or `{ env = … }`)".into()),
            }
        }
        (None, Some(cert), Some(key)) => {
            check_file(bad, "annuaire.client_cert", base, cert);
            check_file(bad, "annuaire.client_key", base, key);
            if a.client_password.is_some() {
                bad(
                    "annuaire.client_password",
                    "a PEM key is read unencrypted (protect it by its file mode); for an encrypted key, give the PKCS#12 file as client_pkcs12".into(),
                );
            }
        }
        _ => bad(
            "annuaire",
            "the web service needs the hospital's certificate: `client_pkcs12`, or `client_cert` with `client_key`".into(),
        ),
    }
    match &a.ca_bundle {
        Some(ca) => check_file(bad, "annuaire.ca_bundle", base, ca),
        None if a.use_system_roots => {}
        None => bad("annuaire.ca_bundle", "is required: the IGC OSI CA bundle that signs the annuaire's certificate".into()),
    }
    check_identity(a, base, bad);
}

/// Opens the client identity with its secret, as the first poll will: a wrong PKCS#12 password,
/// an X.509 v1 certificate, a key of another pair are told by `check-config` (and refuse a
/// reload), not at the first poll. Only when its files and its secret can be read: otherwise
/// that problem is reported already.
fn check_identity(a: &RawAnnuaire, base: &Path, bad: &mut Bad<'_>) {
    let readable = |p: &PathBuf| !p.as_os_str().is_empty() && base.join(p).is_file();
    let mut tls = TlsSettings::default();
    let key = match (&a.client_pkcs12, &a.client_cert, &a.client_key) {
        (Some(p12), None, None) if readable(p12) => {
            let Some(Ok(password)) = a.client_password.as_ref().map(|s| s.read(base)) else { return };
            tls.client_pkcs12 = Some(base.join(p12));
            tls.password = Some(password);
            "annuaire.client_pkcs12"
        }
        (None, Some(cert), Some(key)) if readable(cert) && readable(key) => {
            tls.client_cert = Some(base.join(cert));
            tls.client_key = Some(base.join(key));
            "annuaire.client_cert"
        }
        _ => return,
    };
    match crate::sources::https::check_identity(&tls) {
        Ok(_) => {}
        // A PKCS#12 file that does not open: its password is the first thing to check.
        Err(e @ crate::sources::https::TlsSetupError::Pkcs12 { .. }) => bad("annuaire.client_password", crate::error_chain(&e)),
        Err(e) => bad(key, crate::error_chain(&e)),
    }
}

fn check_notifications(n: &RawNotifications, base: &Path, bad: &mut Bad<'_>) {
    if n.max_message_bytes == 0 {
        bad("notifications.max_message_bytes", "must be more than 0".into());
    }
    if !n.enabled {
        return;
    }
    match n.source {
        MailSource::Imap => {
            if n.imap.server.is_empty() {
                bad("notifications.imap.server", "is required when notifications come by IMAP".into());
            }
            if n.imap.username.is_empty() {
                bad("notifications.imap.username", "is required".into());
            }
            match &n.imap.password {
                Some(secret) => check_secret(bad, "notifications.imap.password", base, secret),
                None => bad("notifications.imap.password", "is required (`{ file = … }` or `{ env = … }`)".into()),
            }
            if let Some(ca) = &n.imap.ca_bundle {
                check_file(bad, "notifications.imap.ca_bundle", base, ca);
            }
            if n.imap.security == TlsMode::None && !is_loopback(&n.imap.server) {
                bad("notifications.imap.security", "\"none\" sends the password in clear: only for a server on loopback".into());
            }
            if n.imap.folder == n.imap.processed_folder {
                bad("notifications.imap.processed_folder", "must differ from the watched folder".into());
            }
        }
        MailSource::Maildir => match &n.maildir.path {
            Some(path) if !base.join(path).join("new").is_dir() || !base.join(path).join("cur").is_dir() => {
                bad("notifications.maildir.path", format!("{} is not a Maildir (no new/ and cur/)", base.join(path).display()))
            }
            Some(_) => {}
            None => bad("notifications.maildir.path", "is required when notifications come from a Maildir".into()),
        },
    }
    if n.allowed_senders.is_empty() {
        bad("notifications.allowed_senders", "is empty: every notification would be rejected".into());
    }
    for (i, sender) in n.allowed_senders.iter().enumerate() {
        if !sender.contains('@') {
            bad(&format!("notifications.allowed_senders[{i}]"), format!("`{sender}` is neither an address nor `@domain`"));
        }
    }
}

fn check_policy(p: &RawPolicy, bad: &mut Bad<'_>) -> Policy {
    let mut policy = Policy::default();
    for (i, text) in p.extra_hosts.iter().enumerate() {
        match text.parse::<HostPorts>() {
            Ok(hp) => policy.extra_hosts.push(hp),
            Err(e) => bad(&format!("policy.extra_hosts[{i}]"), e),
        }
    }
    for (i, text) in p.exclude_hosts.iter().enumerate() {
        match Host::parse(text) {
            Ok(h) => policy.exclude_hosts.push(h),
            Err(e) => bad(&format!("policy.exclude_hosts[{i}]"), format!("`{text}`: {e}")),
        }
    }
    for (i, text) in p.mirror_amc.iter().enumerate() {
        match AmcNumber::parse(text) {
            Ok(n) => {
                policy.mirror_amc.insert(n);
            }
            Err(e) => bad(&format!("policy.mirror_amc[{i}]"), format!("`{text}`: {e}")),
        }
    }
    policy
}

fn check_alerts(a: &RawAlerts, base: &Path, bad: &mut Bad<'_>) {
    if !a.enabled {
        return;
    }
    if a.smtp.server.is_empty() {
        bad("alerts.smtp.server", "is required when alerts are enabled".into());
    }
    if !a.from.contains('@') {
        bad("alerts.from", "must be an e-mail address".into());
    }
    if let Some(secret) = &a.smtp.password {
        check_secret(bad, "alerts.smtp.password", base, secret);
    }
    // As for IMAP: lettre would send AUTH PLAIN, and the alerts, in clear across the network.
    if a.smtp.security == TlsMode::None && !a.smtp.server.is_empty() && !is_loopback(&a.smtp.server) {
        bad("alerts.smtp.security", "\"none\" sends the alerts and the password in clear: only for a server on loopback; use \"starttls\" or \"tls\"".into());
    }
    let r = &a.recipients;
    if r.dsi.is_empty() && r.helpdesk.is_empty() && r.rssi.is_empty() {
        bad("alerts.recipients", "no recipient at all".into());
    }
    for (kind, list) in [("dsi", &r.dsi), ("helpdesk", &r.helpdesk), ("rssi", &r.rssi)] {
        for (i, addr) in list.iter().enumerate() {
            if !addr.contains('@') || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bad(&format!("alerts.recipients.{kind}[{i}]"), format!("`{addr}` is not an e-mail address"));
            }
        }
    }
}

/// `[console]`: its durations, address and proxy settings are checked always; what serving it
/// needs (TLS beyond loopback, the certificate itself, trusted proxies in proxy mode) when it is
/// enabled. `None` when it is not.
fn check_console(c: &RawConsole, base: &Path, bad: &mut Bad<'_>) -> Option<ConsoleSettings> {
    // A shorter session is only stricter; the floors catch a unit typed wrong.
    let session_idle = match Bounds::new(5 * SECOND, DAY).check(&c.session_idle) {
        Ok(d) => d,
        Err(e) => {
            bad("console.session_idle", e);
            30 * MINUTE
        }
    };
    let session_max = match Bounds::new(MINUTE, 30 * DAY).check(&c.session_max) {
        Ok(d) => d,
        Err(e) => {
            bad("console.session_max", e);
            12 * HOUR
        }
    };
    if session_idle > session_max {
        bad("console.session_idle", "is longer than console.session_max".into());
    }
    let proxy_user_header = match axum::http::HeaderName::from_bytes(c.proxy_user_header.as_bytes()) {
        Ok(name) => name,
        Err(_) => {
            bad("console.proxy_user_header", format!("`{}` is not an HTTP header name", crate::text::escape(&c.proxy_user_header)));
            axum::http::HeaderName::from_static("x-remote-user")
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, proxy) in c.trusted_proxies.iter().enumerate() {
        match proxy.parse::<ipnet::IpNet>().or_else(|_| proxy.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => bad(
                &format!("console.trusted_proxies[{i}]"),
                format!("`{}` is not an address or a network (`10.20.0.5`, `10.20.0.0/24`)", crate::text::escape(proxy)),
            ),
        }
    }
    // The text as the URL parser normalised it: it drops tabs and line breaks, which would
    // otherwise reach the mails.
    let public_url = match c.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(text) => match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "https" | "http")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none() =>
            {
                Some(u.as_str().trim_end_matches('/').to_owned())
            }
            Ok(_) => {
                bad(
                    "console.public_url",
                    "must be an http(s) address without credentials, query or fragment, such as `https://rocsync.hopital.example:9443`".into(),
                );
                None
            }
            Err(e) => {
                bad("console.public_url", format!("not a URL: {e}"));
                None
            }
        },
    };
    if !c.enabled {
        return None;
    }
    let Ok(listen) = c.listen.parse::<std::net::SocketAddr>() else {
        bad("console.listen", format!("`{}` is not an address:port", crate::text::escape(&c.listen)));
        return None;
    };
    let tls = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => {
            check_file(bad, "console.tls_cert", base, cert);
            check_file(bad, "console.tls_key", base, key);
            let files = TlsFiles { cert: base.join(cert), key: base.join(key) };
            if files.cert.is_file() && files.key.is_file() {
                if let Err(e) = crate::console::tls_config(&files) {
                    bad("console.tls_cert", e);
                }
            }
            Some(files)
        }
        (None, None) => None,
        (Some(_), None) => {
            bad("console.tls_key", "is required with console.tls_cert".into());
            None
        }
        (None, Some(_)) => {
            bad("console.tls_cert", "is required with console.tls_key".into());
            None
        }
    };
    if tls.is_none() && c.tls_cert.is_none() && c.tls_key.is_none() && !listen.ip().is_loopback() {
        bad(
            "console.tls_cert",
            format!(
                "the console listens on {listen}, beyond this host: give tls_cert and tls_key (PEM), so that passwords and sessions do \
                 not cross the network in clear; or listen on 127.0.0.1 behind a reverse proxy that does TLS"
            ),
        );
    }
    if c.auth == AuthMode::Proxy && trusted_proxies.is_empty() {
        bad(
            "console.trusted_proxies",
            "is empty: with auth = \"proxy\" every request would be refused; give the address of the reverse proxy that authenticates people".into(),
        );
    }
    Some(ConsoleSettings { listen, tls, public_url, session_idle, session_max, auth: c.auth, proxy_user_header, trusted_proxies })
}

fn check_file(bad: &mut Bad<'_>, key: &str, base: &Path, path: &Path) {
    if path.as_os_str().is_empty() {
        bad(key, "is empty: give a file".into());
        return;
    }
    let full = base.join(path);
    // The type first: opening a FIFO would block the check (and the unit's ExecStartPre=).
    match std::fs::metadata(&full) {
        Err(e) => bad(key, format!("cannot read {}: {e}", full.display())),
        Ok(m) if m.is_dir() => bad(key, format!("{} is a directory, not a file", full.display())),
        Ok(m) if !m.is_file() => bad(key, format!("{} is not a regular file", full.display())),
        Ok(_) => {
            if let Err(e) = std::fs::File::open(&full) {
                bad(key, format!("cannot read {}: {e}", full.display()));
            }
        }
    }
}

/// The directory entry an export's file is. rocsync replaces the file by a rename in its
/// directory, so two paths write one file when their directories are one (device and inode,
/// whatever symlinks lead there) and their names are equal. A directory that does not exist
/// yet is known by its canonical path, through its nearest ancestor that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Entry { dev: u64, ino: u64, name: std::ffi::OsString },
    Path(PathBuf),
}

impl Target {
    /// `None` when `path` names no file (`/`, `..`).
    fn of(path: &Path) -> Option<Target> {
        use std::os::unix::fs::MetadataExt as _;
        let name = path.file_name()?.to_owned();
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Some(match std::fs::metadata(dir) {
            Ok(m) => Target::Entry { dev: m.dev(), ino: m.ino(), name },
            Err(_) => Target::Path(canonical_through_ancestors(dir).join(name)),
        })
    }
}

/// `dir` made canonical through its nearest ancestor that exists, the missing rest as written.
fn canonical_through_ancestors(dir: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = dir;
    loop {
        if let Ok(real) = at.canonicalize() {
            return missing.iter().rev().fold(real, |path: PathBuf, part| path.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name);
                at = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            }
            _ => return dir.to_owned(),
        }
    }
}

fn check_secret(bad: &mut Bad<'_>, key: &str, base: &Path, secret: &SecretRef) {
    if let Err(e) = secret.read(base) {
        bad(key, e);
    }
}

fn is_nft_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `10m`, `1h 30m`, `30d`…
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. `90s`, `10m`, `2h`, `30d`"))
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// The range a configured duration must fall in. The floors keep rocsync from flooding what it
/// calls (`poll_interval = "0s"` made some 250 polls a second); the ceilings catch a unit typed
/// wrong and keep every deadline computed from a duration far from overflowing
/// (`Instant::now() + 18446744073709551615s` panics).
#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: Duration,
    max: Duration,
    /// Why nothing shorter is taken, when the floor needs saying.
    why: &'static str,
}

impl Bounds {
    const fn new(min: Duration, max: Duration) -> Bounds {
        Bounds { min, max, why: "" }
    }

    /// Parses `text` and checks it against the range.
    fn check(&self, text: &str) -> Result<Duration, String> {
        let d = duration(text)?;
        if d < self.min {
            let why = if self.why.is_empty() { String::new() } else { format!(" {}", self.why) };
            return Err(format!("`{text}` is too short: at least {}{why}", human(self.min)));
        }
        if d > self.max {
            return Err(format!("`{text}` is too long: at most {}", human(self.max)));
        }
        Ok(d)
    }
}

/// The least time between two polls of the annuaire (`poll_interval`, `backoff_max`, and
/// `notifications.debounce` for the polls that notifications trigger): 30 s for the web
/// service, which is a national one; 1 s for a saved file or a server on this host (a relay,
/// a test), which nobody else shares.
fn poll_floor(source: &AnnuaireSource) -> (Duration, &'static str) {
    match source {
        AnnuaireSource::Https(url) if !url_on_loopback(url) => {
            (30 * SECOND, "between two calls to the annuaire web service, a national service that every hospital polls")
        }
        _ => (SECOND, ""),
    }
}

/// Whether `url` names this host: `localhost`, 127.0.0.0/8 or `::1`.
fn url_on_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => is_loopback(name),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether a server name is this host: `localhost`, or a loopback address (127.0.0.0/8, `::1`,
/// with or without brackets). What goes there in clear does not leave the machine.
fn is_loopback(server: &str) -> bool {
    let bare = server.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(server);
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A bound as it would be written in the file: `30s`, `5m`, `1h`, `7d`.
fn human(d: Duration) -> String {
    match d.as_secs() {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What the configuration asks of the file system and the kernel, checked with the rights of
/// the user running `rocsync check-config` (the service user, in the units' `ExecStartPre=`).
pub mod access;
pub mod rpn;

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        Config::load(text, "test.toml", dir)
    }

    const MINIMAL: &str = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n\
                           [exports.squid]\npath = \"out/squid.acl\"\n";

    #[test]
    fn the_example_configuration_is_valid() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")).unwrap();
        let config = load(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.mode, Mode::Hybrid);
        assert_eq!(config.guard, Guard::default());
        assert_eq!(config.files.exports.len(), 3);
    }

    #[test]
    fn every_unknown_key_is_reported_with_place_and_suggestion() {
        let text = format!("{MINIMAL}[review]\nmdoe = \"auto\"\nmax_removal_hots = 3\n[anuaire]\nurl = \"x\"\n");
        let err = load(&text).unwrap_err();
        let shown: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            [
                "line 6, column 1: `review.mdoe`: unknown key; did you mean `mode`?",
                "line 7, column 1: `review.max_removal_hots`: unknown key; did you mean `max_removal_hosts`?",
                "line 8, column 2: `anuaire`: unknown key; did you mean `annuaire`?",
            ]
        );
    }

    #[test]
    fn wrong_types_and_values_are_all_reported() {
        let text = format!(
            "{MINIMAL}[review]\nmode = \"automatic\"\nmax_removal_percent = 120\nremind_after = \"tomorrow\"\n\
             [policy]\nextra_hosts = [\"*.fr\", \"crl.igc-sante.test:80\"]\nmirror_amc = [\"12\"]\n\
             [nftables]\ntable = \"bad name\"\n"
        );
        let err = load(&text).unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect();
        assert_eq!(
            keys,
            [
                "review.mode",
                "review.max_removal_percent",
                "review.remind_after",
                "policy.extra_hosts[0]",
                "policy.mirror_amc[0]",
                "nftables.table",
            ],
            "{err}"
        );
        let lines: Vec<_> = err.problems.iter().map(|p| p.at.unwrap()).collect();
        assert_eq!(lines, [(6, 8), (7, 1), (8, 1), (10, 16), (11, 15), (13, 1)], "{err}");
        assert!(err.to_string().contains("public suffix"), "{err}");
    }

    #[test]
    fn exports_take_a_post_write_command_and_only_plain_a_wildcard_style() {
        let text = format!(
            "{MINIMAL}[exports.json]\npath = \"out/x.json\"\npost_write_command = [\"true\"]\npost_write_timeout = \"2s\"\n\
             [exports.haproxy]\npath = \"out/h.acl\"\nwildcard_style = \"dot\"\n"
        );
        let err = load(&text).unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect();
        assert_eq!(keys, ["exports.haproxy.wildcard_style"], "{err}");
        let ok = load(&format!("{MINIMAL}[exports.json]\npath = \"out/x.json\"\npost_write_command = [\"true\"]\n")).unwrap();
        let json = ok.files.exports.iter().find(|e| e.export == Export::Json).unwrap();
        assert_eq!(json.post_write.as_ref().map(|p| p.argv.clone()), Some(vec!["true".to_owned()]));
    }

    #[test]
    fn secrets_are_never_inline() {
        let text = format!("{MINIMAL}[alerts.smtp]\npassword = \"hunter2\"\n");
        let err = load(&text).unwrap_err();
        assert_eq!(err.problems[0].message, INLINE_SECRET, "{err}");
        let text = format!("{MINIMAL}[alerts.smtp]\npassword = {{ value = \"hunter2\" }}\n");
        let err = load(&text).unwrap_err();
        assert!(err.problems[0].message.contains("valid keys here: file, env"), "{err}");
    }

    /// Refusing `password = "Inline-S3cret-IMAP"` printed `invalid type: string
    /// "Inline-S3cret-IMAP"`, and on SIGHUP the journal kept it.
    #[test]
    fn an_inline_secret_is_refused_without_being_shown() {
        let values = [
            ("\"Inline-S3cret-IMAP\"", "Inline-S3cret-IMAP"),
            ("'Inline-S3cret-IMAP'", "Inline-S3cret-IMAP"),
            ("\"\"\"Inline-S3cret-IMAP\"\"\"", "Inline-S3cret-IMAP"),
            ("987654321987", "987654321987"),
            ("-987654321987", "987654321987"),
            ("98765432109876543210987", "98765432109876543210987"),
            ("3.14159265", "14159265"),
            ("[\"Inline-S3cret-IMAP\"]", "Inline-S3cret-IMAP"),
            ("1979-05-27T07:32:00Z", "1979"),
            ("{ file = \"pass\", value = \"Inline-S3cret-IMAP\" }", "Inline-S3cret-IMAP"),
        ];
        for (section, key) in [("annuaire", "client_password"), ("notifications.imap", "password"), ("alerts.smtp", "password")] {
            for (value, secret) in values {
                let text = match section {
                    "annuaire" => format!(
                        "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n{key} = {value}\n[exports.squid]\npath = \"out/squid.acl\"\n"
                    ),
                    _ => format!("{MINIMAL}[{section}]\n{key} = {value}\n"),
                };
                let err = load(&text).unwrap_err();
                let shown = err.to_string();
                assert!(!shown.contains(secret), "{section}.{key} = {value} shown:\n{shown}");
                for p in &err.problems {
                    assert!(!p.message.contains(secret) && !format!("{p:?}").contains(secret), "{p:?}");
                }
                // The key is named (or the key inside its table that is wrong), with its place.
                let named = format!("{section}.{key}");
                let p = err.problems.iter().find(|p| p.key.as_deref().is_some_and(|k| k.starts_with(&named))).unwrap_or_else(|| panic!("{shown}"));
                assert!(p.at.is_some(), "{p:?}");
            }
        }
        let err = load(&format!("{MINIMAL}[notifications.imap]\npassword = \"Inline-S3cret-IMAP\"\n")).unwrap_err();
        assert_eq!(
            err.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["line 6, column 12: `notifications.imap.password`: must be `{ file = \"…\" }` or `{ env = \"…\" }`; an inline secret is refused and not shown"]
        );
    }

    /// MINIMAL with `key = "value"` under `[section]`.
    fn with(section: &str, key: &str, value: &str) -> String {
        let url = "url = \"file:tests/fixtures/annuaire/urls-v1.json\"";
        match section {
            "annuaire" => format!("[annuaire]\n{url}\n{key} = \"{value}\"\n[exports.squid]\npath = \"out/squid.acl\"\n"),
            "exports.squid" => format!("[annuaire]\n{url}\n[exports.squid]\npath = \"out/squid.acl\"\n{key} = \"{value}\"\n"),
            _ => format!("{MINIMAL}[{section}]\n{key} = \"{value}\"\n"),
        }
    }

    /// The message of the problem with `key`, if there is one.
    fn problem(text: &str, key: &str) -> Option<String> {
        let err = load(text).err()?;
        err.problems.iter().find(|p| p.key.as_deref() == Some(key)).map(|p| {
            assert!(p.at.is_some(), "a place for {p:?}");
            p.message.clone()
        })
    }

    /// Whether `key` is refused for its range (other problems with it do not count: min_ttl
    /// longer than max_ttl, say).
    fn out_of_range(text: &str, key: &str) -> bool {
        problem(text, key).is_some_and(|m| m.contains("too short") || m.contains("too long"))
    }

    /// `poll_interval = "0s"` was taken (some 250 polls a second), and
    /// `post_write_timeout = "18446744073709551615s"` made `once` panic: every duration has a
    /// floor and a ceiling, checked with the key, the place and the reason.
    #[test]
    fn every_duration_has_a_floor_and_a_ceiling() {
        // (section, key, below the floor, floor, ceiling, above the ceiling), file source.
        let cases = [
            ("annuaire", "poll_interval", Some("999ms"), "1s", "7d", "8d"),
            ("annuaire", "poll_jitter", None, "0s", "1d", "25h"),
            ("annuaire", "connect_timeout", Some("0s"), "1s", "5m", "301s"),
            ("annuaire", "timeout", Some("0s"), "1s", "1h", "61m"),
            ("annuaire", "backoff_max", Some("0s"), "1s", "7d", "8d"),
            ("annuaire", "unreachable_alert_after", Some("59s"), "1m", "30d", "31d"),
            ("annuaire", "cert_expiry_warning", Some("23h"), "1d", "365d", "366d"),
            ("notifications", "debounce", Some("0s"), "1s", "1h", "2h"),
            ("notifications.imap", "poll_interval", Some("9s"), "10s", "1d", "2d"),
            ("notifications.imap", "timeout", Some("0s"), "1s", "1h", "2h"),
            ("notifications.maildir", "rescan_interval", Some("0s"), "1s", "1d", "2d"),
            ("resolver", "min_ttl", Some("0s"), "1s", "1d", "2d"),
            ("resolver", "max_ttl", Some("0s"), "1s", "7d", "8d"),
            ("resolver", "grace", None, "0s", "30d", "31d"),
            ("resolver", "timeout", Some("0s"), "1s", "5m", "6m"),
            ("alerts", "dedup_window", Some("59s"), "1m", "30d", "31d"),
            ("alerts.smtp", "timeout", Some("0s"), "1s", "1h", "2h"),
            ("review", "remind_after", Some("0s"), "1s", "365d", "366d"),
            ("exports.squid", "post_write_timeout", Some("0s"), "1s", "1h", "18446744073709551615s"),
            ("console", "session_idle", Some("4s"), "5s", "1d", "2d"),
            ("console", "session_max", Some("59s"), "1m", "30d", "31d"),
        ];
        for (section, key, below, floor, ceiling, above) in cases {
            let full = format!("{section}.{key}");
            if let Some(below) = below {
                assert_eq!(
                    problem(&with(section, key, below), &full),
                    Some(format!("`{below}` is too short: at least {floor}")),
                    "{full}"
                );
            }
            assert!(!out_of_range(&with(section, key, floor), &full), "{full} = {floor}");
            assert!(!out_of_range(&with(section, key, ceiling), &full), "{full} = {ceiling}");
            assert_eq!(problem(&with(section, key, above), &full), Some(format!("`{above}` is too long: at most {ceiling}")), "{full}");
        }
    }

    /// The console listening beyond loopback without TLS would carry passwords in clear; in
    /// proxy mode without trusted proxies it would refuse everyone.
    #[test]
    fn the_console_needs_tls_beyond_loopback_and_its_proxies_named() {
        let console = |lines: &str| format!("{MINIMAL}[console]\nenabled = true\n{lines}");
        let config = load(&console("")).unwrap_or_else(|e| panic!("{e}"));
        let settings = config.console.expect("enabled");
        assert_eq!((settings.listen.to_string().as_str(), settings.auth), ("127.0.0.1:9443", AuthMode::Local));
        assert_eq!((settings.session_idle, settings.session_max), (Duration::from_secs(1800), Duration::from_secs(43_200)));
        assert!(load(MINIMAL).unwrap().console.is_none(), "off by default");
        let open = problem(&console("listen = \"0.0.0.0:9443\"\n"), "console.tls_cert").expect("TLS asked for");
        assert!(open.contains("0.0.0.0:9443") && open.contains("tls_key"), "{open}");
        assert!(problem(&console("listen = \"[::1]:9443\"\n"), "console.tls_cert").is_none(), "loopback may go without");
        assert!(problem(&console("tls_cert = \"missing.pem\"\n"), "console.tls_key").is_some());
        let unreadable = problem(&console("tls_cert = \"missing.pem\"\ntls_key = \"missing.key\"\n"), "console.tls_cert").unwrap();
        assert!(unreadable.contains("missing.pem"), "{unreadable}");
        assert!(problem(&console("auth = \"proxy\"\n"), "console.trusted_proxies").is_some());
        let proxies = load(&console("auth = \"proxy\"\ntrusted_proxies = [\"127.0.0.1\", \"198.18.0.0/24\"]\n")).unwrap();
        assert_eq!(proxies.console.unwrap().trusted_proxies.len(), 2);
        assert!(problem(&console("trusted_proxies = [\"proxy.hopital\"]\n"), "console.trusted_proxies[0]").is_some());
        assert!(problem(&console("proxy_user_header = \"X Remote\"\n"), "console.proxy_user_header").is_some());
        assert!(problem(&console("session_idle = \"2h\"\nsession_max = \"1h\"\n"), "console.session_idle").is_some());
        // Links in mails: the address as the URL parser writes it, without a trailing slash.
        let linked = load(&console("public_url = \"https://rocsync.hopital.test/\"\n")).unwrap();
        assert_eq!(linked.console.unwrap().plan_link(7).as_deref(), Some("https://rocsync.hopital.test/plans/7"));
        for bad in ["ftp://rocsync.hopital.test", "https://user:pw@rocsync.hopital.test", "https://rocsync.hopital.test/?a=b", "not a url"] {
            assert!(problem(&console(&format!("public_url = \"{bad}\"\n")), "console.public_url").is_some(), "{bad}");
        }
    }

    /// Over https, `poll_interval = "0s"` would flood the national web service.
    #[test]
    fn the_annuaire_web_service_is_polled_at_most_twice_a_minute() {
        let https = |url: &str, key: &str, value: &str| {
            format!("[annuaire]\nurl = \"{url}\"\n{key} = \"{value}\"\n[exports.squid]\npath = \"out/squid.acl\"\n")
        };
        let national = "https://annuaire-amc.test/urls";
        let why = "between two calls to the annuaire web service, a national service that every hospital polls";
        for key in ["poll_interval", "backoff_max"] {
            assert_eq!(
                problem(&https(national, key, "0s"), &format!("annuaire.{key}")),
                Some(format!("`0s` is too short: at least 30s {why}"))
            );
            assert!(out_of_range(&https(national, key, "29s"), &format!("annuaire.{key}")));
            assert!(!out_of_range(&https(national, key, "30s"), &format!("annuaire.{key}")));
        }
        let debounce = format!("[annuaire]\nurl = \"{national}\"\n[notifications]\ndebounce = \"5s\"\n[exports.squid]\npath = \"x\"\n");
        assert_eq!(problem(&debounce, "notifications.debounce"), Some(format!("`5s` is too short: at least 30s {why}")));
        // A server on this host (a relay, a test) is nobody else's: a file's floor.
        for url in ["https://127.0.0.1:8443/urls", "https://localhost/urls", "https://[::1]:8443/urls"] {
            assert!(!out_of_range(&https(url, "poll_interval", "3s"), "annuaire.poll_interval"), "{url}");
            assert!(out_of_range(&https(url, "poll_interval", "0s"), "annuaire.poll_interval"), "{url}");
        }
    }

    #[test]
    fn loopback_is_localhost_or_a_loopback_address() {
        for yes in ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["", "mail.hopital.test", "localhost.hopital.test", "10.0.0.1", "::", "0.0.0.0", "[::1"] {
            assert!(!is_loopback(no), "{no}");
        }
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(WEEK), "7d");
    }

    /// SMTP `security = "none"` to another host passed, and lettre sent AUTH PLAIN in clear.
    #[test]
    fn smtp_without_tls_is_refused_beyond_loopback() {
        let alerts = |server: &str, security: &str| {
            format!(
                "{MINIMAL}[alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
                 [alerts.smtp]\nserver = \"{server}\"\nsecurity = \"{security}\"\npassword = {{ env = \"PATH\" }}\n\
                 [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\n"
            )
        };
        let refused = problem(&alerts("smtp.hopital.test", "none"), "alerts.smtp.security").expect("refused");
        assert!(refused.contains("in clear") && refused.contains("loopback"), "{refused}");
        for server in ["127.0.0.1", "localhost", "::1"] {
            assert_eq!(problem(&alerts(server, "none"), "alerts.smtp.security"), None, "{server}");
        }
        for security in ["starttls", "tls"] {
            assert_eq!(problem(&alerts("smtp.hopital.test", security), "alerts.smtp.security"), None, "{security}");
        }
    }

    /// `state_dir = ""` and an export's `path = ""` were taken, and rocsync wrote its files
    /// among the configuration's.
    #[test]
    fn empty_paths_are_refused() {
        assert_eq!(problem(&with("store", "state_dir", ""), "store.state_dir"), Some("is empty: give the directory that holds rocsync's state".into()));
        let empty_export = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n[exports.squid]\npath = \"\"\n";
        assert_eq!(problem(empty_export, "exports.squid.path"), Some("is empty: give the file to write".into()));
        assert!(problem(&format!("{MINIMAL}[exports.plain]\npath = \"/\"\n"), "exports.plain.path").is_some_and(|m| m.contains("names no file")));
        for key in ["squid_access_log", "nft_log", "journal_directory"] {
            assert!(problem(&with("watch", key, ""), &format!("watch.{key}")).is_some_and(|m| m.starts_with("is empty")), "{key}");
        }
        let https = "[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\nclient_cert = \"\"\nclient_key = \"\"\nca_bundle = \"\"\n[exports.squid]\npath = \"x\"\n";
        for key in ["client_cert", "client_key", "ca_bundle"] {
            assert_eq!(problem(https, &format!("annuaire.{key}")), Some("is empty: give a file".into()), "{key}");
        }
        // A directory opens as a file would; it is not one.
        let dir = "[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\nclient_pkcs12 = \"tests\"\nclient_password = { env = \"PATH\" }\nca_bundle = \"tests/fixtures\"\n[exports.squid]\npath = \"x\"\n";
        assert!(problem(dir, "annuaire.client_pkcs12").is_some_and(|m| m.ends_with("is a directory, not a file")));
        assert!(problem(dir, "annuaire.ca_bundle").is_some_and(|m| m.ends_with("is a directory, not a file")));
    }

    /// Two exports reaching one file through a symlinked directory passed check-config, and the
    /// Squid ACL then held the plain list.
    #[test]
    fn two_exports_writing_one_file_are_refused_whatever_the_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink("out", dir.path().join("link")).unwrap();
        let answer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/annuaire/urls-v1.json");
        let text = |squid: &str, plain: &str| {
            format!(
                "[annuaire]\nurl = \"file:{}\"\n[exports.squid]\npath = \"{squid}\"\n[exports.plain]\npath = \"{plain}\"\n",
                answer.display()
            )
        };
        let shared = |squid: &str, plain: &str| -> Option<String> {
            let err = Config::load(&text(squid, plain), "test.toml", dir.path()).err()?;
            err.problems.iter().find(|p| p.key.as_deref() == Some("exports.plain.path")).map(|p| p.message.clone())
        };
        let through_link = shared("out/roc.txt", "link/roc.txt").expect("refused");
        assert!(through_link.contains("is the same file as exports.squid.path"), "{through_link}");
        assert!(through_link.contains("link/roc.txt") && through_link.contains("out/roc.txt"), "the pair: {through_link}");
        assert!(shared("out/roc.txt", "out/../out/roc.txt").is_some());
        assert!(shared("out/roc.txt", "out/roc.txt").is_some());
        // Directories that do not exist yet: compared by their canonical path.
        assert!(shared("link/new/roc.txt", "out/new/roc.txt").is_some());
        assert!(shared("out/new/roc.txt", "out/new/other.txt").is_none());
        assert!(shared("out/squid.acl", "link/roc.txt").is_none());
    }

    #[test]
    fn secret_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
        let by_file = SecretRef { file: Some("pass".into()), env: None };
        assert_eq!(by_file.read(dir.path()).unwrap(), "s3cret");
        let by_env = SecretRef { file: None, env: Some("ROCSYNC_TEST_SURELY_UNSET".into()) };
        assert!(by_env.read(dir.path()).unwrap_err().contains("not set"));
        let both = SecretRef { file: Some("pass".into()), env: Some("X".into()) };
        assert!(both.read(dir.path()).is_err());
    }

    #[test]
    fn https_source_needs_identity_and_ca() {
        let err = load("[annuaire]\nurl = \"https://annuaire.test/urls\"\n[exports.squid]\npath = \"x\"\n").unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect();
        assert_eq!(keys, ["annuaire", "annuaire.ca_bundle"], "{err}");
    }

    #[test]
    fn syntax_errors_name_the_place() {
        let err = load("[annuaire]\nurl = \"unterminated\n").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].at.map(|(l, _)| l), Some(2), "{err}");
    }

    /// A broken file on disk locked the RSSI out: `status`, `plan list` and `approve` need only
    /// the store, and must still find it.
    #[test]
    fn a_broken_file_still_names_its_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rocsync.toml");
        let answer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/annuaire/urls-v1.json");
        let good = format!("[annuaire]\nurl = \"file:{}\"\n[exports.squid]\npath = \"out/squid.acl\"\n[store]\nstate_dir = \"st\"\n", answer.display());
        std::fs::write(&path, &good).unwrap();
        let (config, problems) = Config::from_path_lenient(&path).unwrap();
        assert!(problems.is_none());
        assert_eq!(config.state_dir, dir.path().join("st"));
        // An unknown key: the rest of the file still counts.
        std::fs::write(&path, good.replace("[store]", "[review]\nmood = \"auto\"\n[store]")).unwrap();
        let (config, problems) = Config::from_path_lenient(&path).unwrap();
        assert_eq!(config.state_dir, dir.path().join("st"));
        assert!(problems.unwrap().to_string().contains("review.mood"));
        // Not TOML at all: `[store]` is read alone.
        std::fs::write(&path, good.replace("[exports.squid]", "[exports.squid\n")).unwrap();
        let (config, problems) = Config::from_path_lenient(&path).unwrap();
        assert_eq!(config.state_dir, dir.path().join("st"));
        assert!(problems.is_some());
        // A state directory that cannot be told is an error.
        std::fs::write(&path, good.replace("state_dir = \"st\"", "state_dir = 5")).unwrap();
        assert!(Config::from_path_lenient(&path).is_err());
        std::fs::write(&path, good.replace("state_dir = \"st\"", "state_dir = \"\"\nx = [")).unwrap();
        assert!(Config::from_path_lenient(&path).is_err());
    }

    #[test]
    fn the_store_table_is_found_in_a_file_that_is_not_toml() {
        let text = "store.keep_applied_states = 3\n[annuaire\nurl = 1\n[store] # here\nstate_dir = \"/x\"\n[review]\nmode = 1\n";
        assert_eq!(store_section(text), "store.keep_applied_states = 3\n[store] # here\nstate_dir = \"/x\"\n");
    }

    /// `check-config` said OK with a wrong PKCS#12 password; the error came at the first poll.
    #[test]
    fn a_pkcs12_file_that_does_not_open_with_its_password_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.p12"), b"not a PKCS#12 file").unwrap();
        std::fs::write(dir.path().join("p12.pass"), "secret\n").unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let text = "[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\nclient_pkcs12 = \"client.p12\"\n\
                    client_password = { file = \"p12.pass\" }\nca_bundle = \"ca.pem\"\n[exports.squid]\npath = \"out/squid.acl\"\n";
        let err = Config::load(text, "test.toml", dir.path()).unwrap_err();
        let p = err.problems.iter().find(|p| p.key.as_deref() == Some("annuaire.client_password")).unwrap_or_else(|| panic!("{err}"));
        assert!(p.message.contains("client.p12") && p.message.contains("wrong password"), "{p}");
        assert_eq!(p.at.map(|(line, _)| line), Some(4), "{p}");
    }

    /// A build without the `netlink` feature (the default, which needs only the Rust toolchain)
    /// refuses `[nftables] enabled = true` with what to do instead; a build with it takes it.
    #[test]
    fn nftables_without_the_netlink_feature_says_what_to_do() {
        let text = "[annuaire]\nurl = \"file:a.json\"\n[resolver]\nenabled = true\n[nftables]\nenabled = true\n";
        let refused = problem(text, "nftables.enabled").is_some_and(|p| p.contains("built without the `netlink` feature") && p.contains("exports.nft_script"));
        assert_eq!(refused, !cfg!(feature = "netlink"), "{:?}", problem(text, "nftables.enabled"));
    }

    /// `hook = "output"` on the proxy host dropped the proxy's own connections to wildcard
    /// hosts: such a configuration names the users to exempt (or, knowingly, none), and only
    /// the output hook takes them.
    #[test]
    fn the_output_hook_asks_which_users_to_exempt() {
        let base = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n[resolver]\nenabled = true\n\
                    [exports.squid]\npath = \"out/squid.acl\"\n[nftables]\nenabled = true\nmode = \"managed\"\n";
        let exempt = |text: &str| -> Option<String> {
            let err = load(text).err()?;
            let found = err.problems.iter().find(|p| p.key.as_deref().is_some_and(|k| k.starts_with("nftables.exempt_users")));
            found.map(|p| p.message.clone())
        };
        let unset = exempt(&format!("{base}hook = \"output\"\n")).expect("refused");
        assert!(unset.contains("`proxy` for Debian's Squid") && unset.contains("exempt_users = []"), "{unset}");
        assert_eq!(exempt(&format!("{base}hook = \"output\"\nexempt_users = []\n")), None);
        assert_eq!(exempt(&format!("{base}hook = \"output\"\nexempt_users = [\"13\"]\n")), None);
        assert_eq!(exempt(&format!("{base}hook = \"forward\"\n")), None);
        let forward = exempt(&format!("{base}hook = \"forward\"\nexempt_users = [\"13\"]\n")).expect("refused");
        assert!(forward.contains("only the managed chain on the output hook"), "{forward}");
        let unknown = exempt(&format!("{base}hook = \"output\"\nexempt_users = [\"no-such-user-here\"]\n")).expect("refused");
        assert!(unknown.contains("no user `no-such-user-here`"), "{unknown}");
    }

    #[test]
    fn exempt_users_by_name_or_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nproxy:x:13:13:proxy:/bin:/usr/sbin/nologin\n";
        assert_eq!(crate::accounts::id_in(passwd, "proxy"), Some(13));
        assert_eq!(crate::accounts::id_in(passwd, "root"), Some(0));
        assert_eq!(crate::accounts::id_in(passwd, "65534"), Some(65534));
        assert_eq!(crate::accounts::id_in(passwd, "prox"), None);
        assert_eq!(crate::accounts::id_in(passwd, "x"), None);
    }
}
