//! The configuration file as written: serde structs that mirror the TOML (`deny_unknown_fields`
//! everywhere), with their defaults. They are only checked ([`super::check`]); nothing outside
//! `src/config/` reads them. Durations are parsed here ([`Dur`]), so that `"10 minutes"` is a
//! problem with its line and column like any other wrong value.

pub use crate::sinks::nftables::NftHook;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::alerts::Language;
use crate::console::AuthMode;
use crate::plan::{Guard, Mode};
use crate::sinks::nft_script::NftNames;
use crate::sinks::plain::WildcardStyle;
use crate::tls::TlsMode;

/// A duration as written (`"90s"`, `"1h 30m"`, `"30d"`), parsed when the file is read. The
/// text is kept beside the value for the messages about its range (`` `0s` is too short ``),
/// which quote what the file says rather than a normalised form of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Dur {
    value: Duration,
    text: String,
}

impl Dur {
    /// The duration.
    pub fn get(&self) -> Duration {
        self.value
    }

    /// The duration as written in the file.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A default written in this file. The defaults are constants, checked by a unit test
    /// (`every_default_duration_parses`); a typo there is a bug, not a configuration problem.
    pub(super) fn default_of(text: &str) -> Dur {
        match duration(text) {
            Ok(value) => Dur { value, text: text.to_owned() },
            Err(e) => panic!("a default duration does not parse: {e}"),
        }
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Dur {
    /// A string that humantime reads; anything else is a problem at the value's place (toml
    /// gives the error the value's span).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(deserializer)?;
        match duration(&text) {
            Ok(value) => Ok(Dur { value, text }),
            Err(e) => Err(serde::de::Error::custom(e)),
        }
    }
}

/// `10m`, `1h 30m`, `30d`…
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. `90s`, `10m`, `2h`, `30d`"))
}

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
    pub rpn: super::rpn::RawRpn,
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
    pub session_idle: Dur,
    pub session_max: Dur,
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
            session_idle: Dur::default_of("30m"),
            session_max: Dur::default_of("12h"),
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
    pub fn read(&self, base: &Path) -> Result<SecretString, String> {
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
                Ok(SecretString::from(secret))
            }
            (None, Some(var)) => {
                std::env::var(var).map(SecretString::from).map_err(|_| format!("environment variable {var} is not set"))
            }
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
    pub poll_interval: Dur,
    pub poll_jitter: Dur,
    pub connect_timeout: Dur,
    pub timeout: Dur,
    pub max_body_bytes: u64,
    pub backoff_max: Dur,
    pub unreachable_alert_after: Dur,
    pub cert_expiry_warning: Dur,
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
            poll_interval: Dur::default_of("10m"),
            poll_jitter: Dur::default_of("1m"),
            connect_timeout: Dur::default_of("10s"),
            timeout: Dur::default_of("60s"),
            max_body_bytes: 8 * 1024 * 1024,
            backoff_max: Dur::default_of("30m"),
            unreachable_alert_after: Dur::default_of("2h"),
            cert_expiry_warning: Dur::default_of("30d"),
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
    pub debounce: Dur,
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
            debounce: Dur::default_of("30s"),
            max_message_bytes: 4 * 1024 * 1024,
            imap: RawImap::default(),
            maildir: RawMaildir::default(),
        }
    }
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
    pub poll_interval: Dur,
    /// CAs for the mail server's certificate; the system's when unset.
    pub ca_bundle: Option<PathBuf>,
    pub timeout: Dur,
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
            poll_interval: Dur::default_of("2m"),
            ca_bundle: None,
            timeout: Dur::default_of("30s"),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMaildir {
    pub path: Option<PathBuf>,
    pub rescan_interval: Option<Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawResolver {
    /// Resolve the hosts in force at each pass (for the nft script's sets, and nftables).
    pub enabled: bool,
    /// `ip` or `ip:port`; empty means the system's resolvers.
    pub servers: Vec<String>,
    pub min_ttl: Dur,
    pub max_ttl: Dur,
    pub grace: Dur,
    pub concurrency: usize,
    pub timeout: Dur,
    /// Internal ranges (CIDR) that AMC hosts may resolve into, allowed knowingly: by default an
    /// answer into private, loopback, link-local, … addresses is refused.
    pub allow_networks: Vec<String>,
}

impl Default for RawResolver {
    fn default() -> Self {
        RawResolver {
            enabled: false,
            servers: Vec::new(),
            min_ttl: Dur::default_of("30s"),
            max_ttl: Dur::default_of("1h"),
            grace: Dur::default_of("1h"),
            concurrency: 32,
            timeout: Dur::default_of("5s"),
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
    /// Log each new connection the managed chain accepts (prefix `rocsync-accept: `): what
    /// `rocsync report openings` counts in managed mode.
    pub log_accepted: bool,
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
            log_accepted: true,
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
    pub post_write_timeout: Dur,
}

fn thirty_seconds() -> Dur {
    Dur::default_of("30s")
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAlerts {
    pub enabled: bool,
    pub language: Language,
    pub from: String,
    pub dedup_window: Dur,
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
            dedup_window: Dur::default_of("1h"),
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
    pub timeout: Dur,
}

impl Default for RawSmtp {
    fn default() -> Self {
        RawSmtp {
            server: String::new(),
            port: 587,
            security: TlsMode::Starttls,
            username: String::new(),
            password: None,
            timeout: Dur::default_of("30s"),
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
    pub remind_after: Dur,
}

impl Default for RawReview {
    fn default() -> Self {
        let guard = Guard::default();
        RawReview {
            mode: Mode::Hybrid,
            max_removal_percent: guard.max_removal_percent,
            max_removal_hosts: guard.max_removal_hosts,
            remind_after: Dur::default_of("24h"),
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

