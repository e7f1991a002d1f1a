//! `[rpn]`: the national reverse proxy (RPN ROC, part of PiANO) the hospital moves to.
//!
//! ```toml
//! [rpn]
//! enabled = true
//! host = "rpn.roc.test:443"     # the address the hospital received, validated like any host
//! switched_on = "2026-03-02"    # the day the GAP was re-pointed to the RPN
//! quiet_period = "14d"          # no direct request to an AMC for this long: its openings may close
//! ```
//!
//! When enabled, the RPN host is kept open like an `extra_hosts` entry (the configuration
//! adds it there) and `rocsync plan --rpn-migration` may close the direct openings.

use std::time::Duration;

use serde::Deserialize;
use time::Date;

use super::schema::Dur;
use crate::catalogue::HostPorts;

/// The default of `rpn.quiet_period`.
pub const QUIET_PERIOD: &str = "14d";

/// `[rpn]` as written.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RawRpn {
    pub enabled: bool,
    /// `host:port` (or `host`, on 443).
    pub host: Option<String>,
    /// `YYYY-MM-DD`.
    pub switched_on: Option<String>,
    /// Parsed with the file, like every duration: a bad value is a problem at its place.
    pub quiet_period: Dur,
}

impl Default for RawRpn {
    fn default() -> Self {
        RawRpn { enabled: false, host: None, switched_on: None, quiet_period: Dur::default_of(QUIET_PERIOD) }
    }
}

/// `[rpn]` checked, when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rpn {
    pub host: HostPorts,
    pub switched_on: Date,
    pub quiet_period: Duration,
}

impl Rpn {
    /// `switched_on` at midnight UTC, in Unix seconds.
    pub fn switched_on_secs(&self) -> i64 {
        self.switched_on.midnight().assume_utc().unix_timestamp()
    }
}

/// Checks `[rpn]`; `None` when it is off or has a problem (each one told through `bad`).
pub fn check(raw: &RawRpn, bad: &mut dyn FnMut(&str, String)) -> Option<Rpn> {
    let quiet_period = match raw.quiet_period.get() {
        d if d < Duration::from_secs(86_400) => {
            bad("rpn.quiet_period", format!("`{}` is too short: at least 1d (a workstation used once a week must show)", raw.quiet_period.text()));
            None
        }
        d if d > Duration::from_secs(crate::usage::HISTORY_DAYS as u64 * 86_400) => {
            bad("rpn.quiet_period", format!("`{}` is longer than the {} days of history rocsync keeps", raw.quiet_period.text(), crate::usage::HISTORY_DAYS));
            None
        }
        d => Some(d),
    };
    if !raw.enabled {
        return None;
    }
    let host = match raw.host.as_deref().map(str::trim) {
        None | Some("") => {
            bad("rpn.host", "is required when [rpn] is enabled: the RPN address the hospital received, `host:port`".into());
            None
        }
        Some(text) => match text.parse::<HostPorts>() {
            Ok(hp) if hp.host.is_wildcard() => {
                bad("rpn.host", format!("`{text}`: the RPN is one host, not a wildcard"));
                None
            }
            Ok(hp) => Some(hp),
            Err(e) => {
                bad("rpn.host", e);
                None
            }
        },
    };
    let switched_on = match raw.switched_on.as_deref().map(str::trim) {
        None | Some("") => {
            bad("rpn.switched_on", "is required when [rpn] is enabled: the day the GAP was re-pointed to the RPN, `YYYY-MM-DD`".into());
            None
        }
        Some(text) => match Date::parse(text, time::macros::format_description!("[year]-[month]-[day]")) {
            Ok(d) => Some(d),
            Err(_) => {
                bad("rpn.switched_on", format!("`{}` is not a date `YYYY-MM-DD`", crate::text::excerpt(text, 40)));
                None
            }
        },
    };
    Some(Rpn { host: host?, switched_on: switched_on?, quiet_period: quiet_period? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(raw: &RawRpn) -> (Option<Rpn>, Vec<(String, String)>) {
        let mut found = Vec::new();
        let rpn = check(raw, &mut |k: &str, m: String| found.push((k.to_owned(), m)));
        (rpn, found)
    }

    #[test]
    fn an_enabled_rpn_needs_a_valid_host_and_date() {
        let (rpn, found) = problems(&RawRpn::default());
        assert_eq!((rpn, found.len()), (None, 0), "off by default, and quiet about it");
        let raw = RawRpn { enabled: true, host: Some("rpn.roc.test:8443".into()), switched_on: Some("2026-03-02".into()), ..RawRpn::default() };
        let (rpn, found) = problems(&raw);
        let rpn = rpn.expect("valid");
        assert!(found.is_empty());
        assert_eq!((rpn.host.host.as_str(), rpn.host.ports.iter().copied().collect::<Vec<_>>()), ("rpn.roc.test", vec![8443]));
        assert_eq!(rpn.quiet_period, Duration::from_secs(14 * 86_400));
        assert_eq!(rpn.switched_on_secs() % 86_400, 0);
        for (host, date, key) in [
            (Some("*.roc.test"), Some("2026-03-02"), "rpn.host"),
            (Some("rpn roc.test; drop"), Some("2026-03-02"), "rpn.host"),
            (None, Some("2026-03-02"), "rpn.host"),
            (Some("rpn.roc.test"), Some("02/03/2026"), "rpn.switched_on"),
            (Some("rpn.roc.test"), None, "rpn.switched_on"),
        ] {
            let raw = RawRpn { enabled: true, host: host.map(String::from), switched_on: date.map(String::from), ..RawRpn::default() };
            let (rpn, found) = problems(&raw);
            assert_eq!(rpn, None);
            assert_eq!(found.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), [key], "{host:?} {date:?}");
        }
    }

    /// `quiet_period = "two weeks"` was a String parsed by the check: its problem had no line
    /// and column. It is a typed duration now, parsed with the file like the others.
    #[test]
    fn a_bad_quiet_period_is_a_parse_error_with_line_and_column() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let head = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n[exports.squid]\npath = \"out/squid.acl\"\n";
        let err = crate::config::Config::load(&format!("{head}[rpn]\nquiet_period = \"two weeks\"\n"), "test.toml", dir).unwrap_err();
        let p = err.problems.iter().find(|p| p.key.as_deref() == Some("rpn.quiet_period")).unwrap_or_else(|| panic!("{err}"));
        assert_eq!(p.at, Some((6, 16)), "{p}");
        assert!(p.message.contains("`two weeks` is not a duration"), "{p}");
        // A good one out of range is still refused by the check, quoting the file.
        let raw: RawRpn = toml::from_str("quiet_period = \"2h\"").unwrap();
        let (_, found) = problems(&raw);
        assert!(found.iter().any(|(k, m)| k == "rpn.quiet_period" && m.contains("`2h` is too short")), "{found:?}");
        assert_eq!(RawRpn::default().quiet_period.get(), Duration::from_secs(14 * 86_400));
    }
}
