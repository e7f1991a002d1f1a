//! Who may use the console and how they prove it: the roles and what each may do, account
//! names and the password rule, Argon2id password hashes, random session ids and CSRF tokens,
//! how long a session lives, and login throttling.
//!
//! The decisions (a role's rights, a session's age, whether a login must wait) are pure
//! functions of their inputs, tested here; the console applies them to what the store holds.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

use crate::alerts::Language;

/// What an account may do. Everyone reads everything; `rssi` and `engineer` also approve,
/// reject and propose rollbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Rssi,
    Engineer,
    Helpdesk,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "rssi" => Some(Role::Rssi),
            "engineer" => Some(Role::Engineer),
            "helpdesk" => Some(Role::Helpdesk),
            _ => None,
        }
    }

    /// As stored and as the command line writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Rssi => "rssi",
            Role::Engineer => "engineer",
            Role::Helpdesk => "helpdesk",
        }
    }

    /// Whether the role approves and rejects plans and proposes rollbacks.
    pub fn may_decide(self) -> bool {
        matches!(self, Role::Rssi | Role::Engineer)
    }

    /// The role as the pages name it.
    pub fn label(self, lang: &Language) -> &'static str {
        match (self, lang) {
            (Role::Rssi, _) => "RSSI",
            (Role::Engineer, Language::Fr) => "ingénieur réseau",
            (Role::Engineer, Language::En) => "network engineer",
            (Role::Helpdesk, Language::Fr) => "assistance",
            (Role::Helpdesk, Language::En) => "helpdesk",
        }
    }
}

/// The fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The most bytes of a password: a login form carrying megabytes is not a password.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Whether `password` may be an account's password: 12 characters at least (a passphrase is
/// welcome), 1024 bytes at most. The message never repeats it.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.trim().is_empty() {
        return Err("the password is only blanks".into());
    }
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("the password has {chars} character(s); it needs at least {MIN_PASSWORD_CHARS}"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("the password is longer than {MAX_PASSWORD_BYTES} bytes"));
    }
    Ok(())
}

/// An account name as it is kept and compared: lower-case, 1 to 64 of `a-z 0-9 . _ @ -`
/// (a login name, or the e-mail address an SSO proxy passes). It is written into the audit log
/// as it is, so nothing else gets through.
pub fn account_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_lowercase();
    // At least one letter or digit: `-`, `.` or `..` alone are no one's name.
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
        && name.chars().any(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(name)
    } else {
        Err(format!("`{}` is not an account name: 1 to 64 letters, digits, `.`, `_`, `@` or `-`", crate::text::excerpt(raw, 64)))
    }
}

/// Why a secret could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The system's random source failed.
    #[error("the system's random source failed: {0}")]
    Random(String),
    /// Argon2 refused its input or its parameters.
    #[error("cannot hash: {0}")]
    Hash(String),
}

/// `N` random bytes from the system.
fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The PHC string of `password` hashed with Argon2id (the crate's defaults: 19 MiB, 2 passes)
/// and a random 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| AuthError::Hash(e.to_string()))?;
    let hash = Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash`. A hash that does not parse matches nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash no password is known to match, checked for an unknown account so that answering
/// takes as long as for a known one.
static DECOY: LazyLock<String> = LazyLock::new(|| hash_password("rocsync console decoy password").unwrap_or_default());

/// [`verify_password`] against `hash`, or against a decoy when there is no such account: an
/// unknown name and a wrong password take the same time and get the same answer.
pub fn verify_or_decoy(password: &str, hash: Option<&str>) -> bool {
    match hash {
        Some(hash) => verify_password(password, hash),
        None => {
            let _ = verify_password(password, &DECOY);
            false
        }
    }
}

/// A session id or a CSRF token: 32 random bytes, in hex.
pub fn random_token() -> Result<String, AuthError> {
    Ok(hex(&random_bytes::<32>()?))
}

/// Whether `value` can be a token [`random_token`] made: anything else is not looked up.
pub fn is_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the store keeps of a session id: its Argon2id digest with the smallest costs. The id
/// is 256 random bits, so a slow hash would add nothing; a one-way one means that a copy of the
/// database opens no session.
pub fn session_key(id: &str) -> Result<String, AuthError> {
    let params = argon2::Params::new(8, 1, 1, Some(32)).map_err(|e| AuthError::Hash(e.to_string()))?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon.hash_password_into(id.as_bytes(), b"rocsync-console-session", &mut out).map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(hex(&out))
}

/// Whether two tokens are the same, in a time that does not depend on where they differ. An
/// empty token matches nothing.
pub fn same_token(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && !a.is_empty() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAge {
    /// In use.
    Fresh,
    /// Unused for `session_idle`: ended.
    Idle,
    /// Opened more than `session_max` ago: ended, however busy.
    TooOld,
}

/// Where a session opened at `created_ms` and last used at `seen_ms` stands at `now_ms`.
pub fn session_age(created_ms: u64, seen_ms: u64, now_ms: u64, idle: Duration, max: Duration) -> SessionAge {
    if now_ms.saturating_sub(created_ms) >= max.as_millis() as u64 {
        SessionAge::TooOld
    } else if now_ms.saturating_sub(seen_ms) >= idle.as_millis() as u64 {
        SessionAge::Idle
    } else {
        SessionAge::Fresh
    }
}

/// Login throttling under one key (an account, an address): after `max_failures` failures
/// within `window`, a login waits until `lockout` after the last one. A try while waiting is
/// refused without checking the password and is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub max_failures: usize,
    pub window: Duration,
    pub lockout: Duration,
}

/// Five failures, then a minute between tries, counted over a quarter of an hour.
pub const THROTTLE: Throttle = Throttle { max_failures: 5, window: Duration::from_secs(15 * 60), lockout: Duration::from_secs(60) };

impl Throttle {
    /// How long a login under a key that failed at `failures` (milliseconds) must still wait
    /// at `now_ms`; `None` when it may be tried.
    pub fn wait(&self, failures: &[u64], now_ms: u64) -> Option<Duration> {
        let since = now_ms.saturating_sub(self.window.as_millis() as u64);
        let recent: Vec<u64> = failures.iter().copied().filter(|at| *at >= since).collect();
        if recent.len() < self.max_failures {
            return None;
        }
        let free_at = recent.iter().max()?.saturating_add(self.lockout.as_millis() as u64);
        (free_at > now_ms).then(|| Duration::from_millis(free_at - now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rssi_and_engineers_decide() {
        for (text, decides) in [("rssi", true), ("engineer", true), ("helpdesk", false)] {
            let role = Role::parse(text).unwrap();
            assert_eq!(role.as_str(), text);
            assert_eq!(role.may_decide(), decides, "{text}");
        }
        assert_eq!(Role::parse("admin"), None);
        assert_eq!(Role::parse("RSSI"), None, "stored lower-case");
        assert_eq!(Role::Helpdesk.label(&Language::Fr), "assistance");
    }

    #[test]
    fn passwords_have_twelve_characters_and_are_never_repeated() {
        assert!(check_password("correct horse").is_ok());
        assert!(check_password("ééééééééééé€").is_ok(), "characters, not bytes");
        let err = check_password("s3cret!").unwrap_err();
        assert!(err.contains("7 character(s)") && err.contains("12"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(check_password(&"x".repeat(2000)).is_err());
    }

    #[test]
    fn account_names_are_lower_case_and_plain() {
        assert_eq!(account_name(" J.Martin@Hopital.test ").unwrap(), "j.martin@hopital.test");
        for bad in ["", "marie martin", "marie\n(rssi)", "<script>", &"a".repeat(65)] {
            assert!(account_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn argon2id_hashes_verify_only_their_password() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "a new salt each time");
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_or_decoy("rocsync console decoy password", None), "an unknown account never logs in");
    }

    #[test]
    fn tokens_are_random_hex_and_sessions_are_kept_by_digest() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert!(is_token(&a) && is_token(&b) && a != b);
        assert!(!is_token("abc") && !is_token(&"g".repeat(64)));
        let key = session_key(&a).unwrap();
        assert_eq!(key, session_key(&a).unwrap(), "the same id, the same key");
        assert_ne!(key, session_key(&b).unwrap());
        assert_ne!(key, a, "the id itself is not what is kept");
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b) && !same_token("", "") && !same_token(&a[..10], &a));
    }

    #[test]
    fn a_session_ends_when_idle_or_too_old() {
        let (idle, max) = (Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600));
        let min = 60_000;
        assert_eq!(session_age(0, 0, 29 * min, idle, max), SessionAge::Fresh);
        assert_eq!(session_age(0, 0, 30 * min, idle, max), SessionAge::Idle);
        // Busy all day: ended at twelve hours all the same.
        assert_eq!(session_age(0, 719 * min, 720 * min, idle, max), SessionAge::TooOld);
        assert_eq!(session_age(0, 718 * min, 719 * min, idle, max), SessionAge::Fresh);
        // A clock that went back does not end it.
        assert_eq!(session_age(10 * min, 10 * min, 5 * min, idle, max), SessionAge::Fresh);
    }

    #[test]
    fn five_failures_then_a_minute() {
        let t = THROTTLE;
        let s = 1000;
        let four = [s, 2 * s, 3 * s, 4 * s];
        assert_eq!(t.wait(&four, 5 * s), None, "four failures: try again");
        let five = [s, 2 * s, 3 * s, 4 * s, 5 * s];
        assert_eq!(t.wait(&five, 6 * s), Some(Duration::from_secs(59)));
        assert_eq!(t.wait(&five, 65 * s), None, "a minute after the last one");
        // Failures older than the window do not count.
        let old = [s, 2 * s, 3 * s, 4 * s, 5 * s];
        assert_eq!(t.wait(&old, 16 * 60 * s), None);
        // After the minute, one more failure waits a minute again.
        let six = [s, 2 * s, 3 * s, 4 * s, 5 * s, 70 * s];
        assert_eq!(t.wait(&six, 71 * s), Some(Duration::from_secs(59)));
    }
}
