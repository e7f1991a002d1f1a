//! Small rules the checks share: files that must be readable regular files, the file an export
//! writes, the range of each duration, what counts as this host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{Dur, SecretRef};
use super::sections::Bad;
use super::AnnuaireSource;

pub(super) fn check_file(bad: &mut Bad<'_>, key: &str, base: &Path, path: &Path) {
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
pub(super) enum Target {
    Entry { dev: u64, ino: u64, name: std::ffi::OsString },
    Path(PathBuf),
}

impl Target {
    /// `None` when `path` names no file (`/`, `..`).
    pub(super) fn of(path: &Path) -> Option<Target> {
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

pub(super) fn check_secret(bad: &mut Bad<'_>, key: &str, base: &Path, secret: &SecretRef) {
    if let Err(e) = secret.read(base) {
        bad(key, e);
    }
}

pub(super) fn is_nft_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) const SECOND: Duration = Duration::from_secs(1);
pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);
pub(super) const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// The range a configured duration must fall in. The floors keep rocsync from flooding what it
/// calls (`poll_interval = "0s"` made some 250 polls a second); the ceilings catch a unit typed
/// wrong and keep every deadline computed from a duration far from overflowing
/// (`Instant::now() + 18446744073709551615s` panics).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) min: Duration,
    pub(super) max: Duration,
    /// Why nothing shorter is taken, when the floor needs saying.
    pub(super) why: &'static str,
}

impl Bounds {
    pub(super) const fn new(min: Duration, max: Duration) -> Bounds {
        Bounds { min, max, why: "" }
    }

    /// Checks a duration of the file against the range; the message quotes it as written.
    pub(super) fn check(&self, written: &Dur) -> Result<Duration, String> {
        let (d, text) = (written.get(), written.text());
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
pub(super) fn poll_floor(source: &AnnuaireSource) -> (Duration, &'static str) {
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
pub(super) fn is_loopback(server: &str) -> bool {
    let bare = server.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(server);
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A bound as it would be written in the file: `30s`, `5m`, `1h`, `7d`.
pub(super) fn human(d: Duration) -> String {
    match d.as_secs() {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

