//! Which openings are used: requests counted per opening, per day, per client address, from the
//! same log lines the watchers read for blocked requests.
//!
//! A Squid line counts when its code is not a denial (`TCP_TUNNEL/200`, `TCP_MISS/200`, …) or
//! is one (`TCP_DENIED/403`); an nftables line counts when it carries the accept prefix
//! (`rocsync-accept: `) or the drop prefix. Only requests to an opening rocsync knows (a host
//! in force, a host the annuaire lists, the RPN host) are kept: a proxy's log also holds the
//! whole web, which is nobody's business here. Each request is counted on the day (UTC) of the
//! line's own time, not of the reading, so that a backlog read after a restart lands on the
//! days it happened.
//!
//! Pure: the daemon gives the lines and what is in force, the store keeps the [`Counts`] in the
//! transaction that moves the log's position, the reports are functions of plain rows.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalogue::State;
use crate::host::Host;

/// How many days of counts the store keeps; older rows are pruned.
pub const HISTORY_DAYS: i64 = 400;

/// The window of `requests_30d` and `blocked_30d`.
pub const WINDOW_DAYS: i64 = 30;

/// The nftables log prefix of the managed chain's accept rule for new connections.
pub const ACCEPT_PREFIX: &str = "rocsync-accept: ";

/// `rocsync report openings` without `--unused-for`: an opening unused for 90 days is flagged.
pub const DEFAULT_UNUSED_FOR: Duration = Duration::from_secs(90 * 86_400);

const DAY_SECS: i64 = 86_400;

/// One request a log line tells of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The line's own time, in Unix seconds.
    pub at: i64,
    pub client: Option<IpAddr>,
    /// The requested name (proxy logs), lower-case, without a final dot.
    pub name: Option<String>,
    /// The destination address (firewall logs).
    pub ip: Option<IpAddr>,
    pub allowed: bool,
}

/// The day (days since 1970-01-01, UTC) of a Unix time.
pub fn day_of(at: i64) -> i64 {
    at.div_euclid(DAY_SECS)
}

/// A day number as `YYYY-MM-DD`.
pub fn day_text(day: i64) -> String {
    OffsetDateTime::from_unix_timestamp(day * DAY_SECS).map(|t| t.date().to_string()).unwrap_or_default()
}

/// A Unix time as RFC 3339 (UTC).
pub fn time_text(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

/// "Now" for the reports and the RPN migration, in Unix seconds: [`crate::clock::unix_seconds`],
/// which `ROCSYNC_TEST_NOW` sets for tests.
pub fn now() -> i64 {
    crate::clock::unix_seconds()
}

/// A Squid access.log line as a request, allowed or denied; `None` for a line that is not one
/// (another log's line, `NONE/400` garbage a client sent, a line without a host).
pub fn squid_hit(line: &str) -> Option<Hit> {
    let mut fields = line.split_ascii_whitespace();
    let time = fields.next()?;
    let _elapsed = fields.next()?;
    let client = fields.next()?;
    let result = fields.next()?;
    let _bytes = fields.next()?;
    let method = fields.next()?;
    let target = fields.next()?;
    let at = time.parse::<f64>().ok().filter(|t| t.is_finite())? as i64;
    let (code, status) = result.split_once('/')?;
    if code.is_empty() || !code.bytes().all(|c| c.is_ascii_uppercase() || c == b'_') {
        return None;
    }
    let denied = code.starts_with("TCP_DENIED") || (code.starts_with("NONE") && status == "403");
    // `NONE_NONE/400` and the like: Squid answered itself, nothing went out.
    if !denied && code.starts_with("NONE") {
        return None;
    }
    let host = if method == "CONNECT" {
        target.rsplit_once(':').map_or(target, |(h, _)| h)
    } else {
        let rest = target.split_once("://").map(|(_, r)| r)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        authority.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(authority, |(h, _)| h)
    };
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    Some(Hit { at, client: client.parse().ok(), name: Some(name), ip: None, allowed: !denied })
}

/// An nftables log line (kernel log, journal, ulogd) as a request: allowed with
/// `accept_prefix`, blocked with `drop_prefix`; `None` for any other line. Syslog's time has no
/// year: it is taken in the year of `now`, or the year before when that would be ahead of `now`
/// by more than a day (a December line read in January). Syslog's time is read as UTC.
pub fn nft_hit(line: &str, accept_prefix: &str, drop_prefix: &str, now: i64) -> Option<Hit> {
    let (at_prefix, allowed) = match line.find(accept_prefix.trim_end()) {
        Some(at) => (at, true),
        None => (line.find(drop_prefix.trim_end())?, false),
    };
    let field = |name: &str| line.split_ascii_whitespace().find_map(|t| t.strip_prefix(name)).filter(|v| !v.is_empty());
    let ip: IpAddr = field("DST=")?.parse().ok()?;
    let client: Option<IpAddr> = field("SRC=").and_then(|s| s.parse().ok());
    let at = line_time(&line[..at_prefix], now).unwrap_or(now);
    Some(Hit { at, client, name: None, ip: Some(ip), allowed })
}

/// The time at the start of a log line: RFC 3339 (rsyslog's high precision) or syslog's
/// `Nov 20 10:15:01`.
fn line_time(head: &str, now: i64) -> Option<i64> {
    let mut tokens = head.split_ascii_whitespace();
    let first = tokens.next()?;
    if let Ok(t) = OffsetDateTime::parse(first, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let month = match first {
        "Jan" => time::Month::January,
        "Feb" => time::Month::February,
        "Mar" => time::Month::March,
        "Apr" => time::Month::April,
        "May" => time::Month::May,
        "Jun" => time::Month::June,
        "Jul" => time::Month::July,
        "Aug" => time::Month::August,
        "Sep" => time::Month::September,
        "Oct" => time::Month::October,
        "Nov" => time::Month::November,
        "Dec" => time::Month::December,
        _ => return None,
    };
    let day: u8 = tokens.next()?.parse().ok()?;
    let mut hms = tokens.next()?.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let clock = time::Time::from_hms(h, m, s).ok()?;
    let year = OffsetDateTime::from_unix_timestamp(now).ok()?.year();
    let at = |year: i32| {
        time::Date::from_calendar_date(year, month, day).ok().map(|d| time::PrimitiveDateTime::new(d, clock).assume_utc().unix_timestamp())
    };
    match at(year) {
        Some(t) if t > now + DAY_SECS => at(year - 1),
        other => other,
    }
}

/// The openings requests are counted against: a requested name is counted on the entry that
/// allows it (the exact host, else the nearest wildcard above it).
#[derive(Debug, Clone, Default)]
pub struct Openings {
    exact: HashMap<String, Host>,
    wildcards: HashMap<String, Host>,
}

impl Openings {
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> Openings {
        let mut o = Openings::default();
        for host in hosts {
            if host.is_wildcard() {
                o.wildcards.insert(host.base().to_owned(), host.clone());
            } else {
                o.exact.insert(host.as_str().to_owned(), host.clone());
            }
        }
        o
    }

    /// The opening a request to `name` is counted on.
    pub fn find(&self, name: &str) -> Option<&Host> {
        let name = name.strip_suffix('.').unwrap_or(name);
        if let Some(h) = self.exact.get(name) {
            return Some(h);
        }
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(h) = self.wildcards.get(parent) {
                return Some(h);
            }
            rest = parent;
        }
        None
    }
}

/// What one opening saw from one client on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Requests let through.
    pub requests: u64,
    /// Requests blocked.
    pub blocked: u64,
    /// The last request's time (Unix seconds), let through or not.
    pub last_seen: i64,
    /// The last request let through, if any.
    pub last_allowed: Option<i64>,
}

impl Tally {
    fn add(&mut self, at: i64, allowed: bool) {
        if allowed {
            self.requests += 1;
            self.last_allowed = Some(self.last_allowed.map_or(at, |l| l.max(at)));
        } else {
            self.blocked += 1;
        }
        self.last_seen = if self.requests + self.blocked == 1 { at } else { self.last_seen.max(at) };
    }

    /// Both together, as the store adds a batch to what it holds.
    pub fn merge(&mut self, other: &Tally) {
        let empty = self.requests + self.blocked == 0;
        self.requests += other.requests;
        self.blocked += other.blocked;
        self.last_seen = if empty { other.last_seen } else { self.last_seen.max(other.last_seen) };
        self.last_allowed = match (self.last_allowed, other.last_allowed) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A row's key: the opening (as [`Host::as_str`] writes it), the day, the client address
/// (empty when the line has none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub host: String,
    pub day: i64,
    pub client: String,
}

/// Counts of a batch of lines, or of the store's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: BTreeMap<Key, Tally>,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Counts `hit` on `opening`.
    pub fn add(&mut self, opening: &Host, hit: &Hit) {
        let key = Key {
            host: opening.as_str().to_owned(),
            day: day_of(hit.at),
            client: hit.client.map(|c| c.to_string()).unwrap_or_default(),
        };
        self.rows.entry(key).or_default().add(hit.at, hit.allowed);
    }

    /// The rows as a list, for the reports.
    pub fn to_rows(&self) -> Vec<Row> {
        self.rows.iter().map(|(k, t)| Row { host: k.host.clone(), day: k.day, client: k.client.clone(), tally: *t }).collect()
    }
}

/// The kind of log a batch of lines comes from.
/// How far ahead of now a log line's time may be and still count.
const FUTURE_SLACK: i64 = 86_400;

#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Squid,
    Nft { accept_prefix: &'a str, drop_prefix: &'a str },
}

/// Counts the requests of `lines` against `openings`; an address-only line (nftables) finds its
/// host through `reverse` (the resolver's address → hosts). `now` places syslog's year.
pub fn count(lines: &[String], source: Source<'_>, openings: &Openings, reverse: &BTreeMap<IpAddr, Vec<Host>>, now: i64) -> Counts {
    let mut counts = Counts::default();
    for line in lines {
        let hit = match source {
            Source::Squid => squid_hit(line),
            Source::Nft { accept_prefix, drop_prefix } => nft_hit(line, accept_prefix, drop_prefix, now),
        };
        let Some(hit) = hit else { continue };
        // A line dated ahead of now (a forged line, a client's clock written by a relay) would
        // stand as the last use for good, and keep its opening from ever being called unused:
        // it is not counted. A day of slack for clocks and time zones.
        if hit.at > now.saturating_add(FUTURE_SLACK) {
            continue;
        }
        // Older than the history kept: it would be pruned at once (and an absurd time, say
        // -9e18, has no day to count on).
        if hit.at < now.saturating_sub(HISTORY_DAYS * DAY_SECS) {
            continue;
        }
        match (&hit.name, hit.ip) {
            (Some(name), _) => {
                if let Some(opening) = openings.find(name) {
                    counts.add(opening, &hit);
                }
            }
            // An address several openings share (two AMCs on one hosting platform): the line
            // cannot tell which was asked for, so each is counted as used. Counting only the
            // first had the other one flagged unused, and closed, while in use.
            (None, Some(ip)) => {
                let mut found: Vec<&Host> = reverse.get(&ip).into_iter().flatten().filter_map(|h| openings.find(h.as_str())).collect();
                found.sort();
                found.dedup();
                for opening in found {
                    counts.add(opening, &hit);
                }
            }
            (None, None) => {}
        }
    }
    counts
}

/// One row of the store's history, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub host: String,
    pub day: i64,
    pub client: String,
    pub tally: Tally,
}

/// One line of `rocsync report openings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opening {
    pub host: String,
    pub wildcard: bool,
    pub ports: Vec<u16>,
    pub amcs: Vec<String>,
    pub services: Vec<String>,
    pub in_force_since: Option<String>,
    pub last_used: Option<String>,
    pub requests_30d: u64,
    pub blocked_30d: u64,
    pub unused: bool,
}

/// `rocsync report openings`: every host in force, and since when requests are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpeningsReport {
    pub openings: Vec<Opening>,
    /// When counting began (RFC 3339), `None` before the first counted log read.
    pub since: Option<String>,
}

/// The openings report of what is in force, from the store's `rows`. An opening is unused when
/// nothing went through it for `unused_for` — and rocsync has counted for at least that long:
/// an opening is never called unused for longer than rocsync has watched.
pub fn openings(in_force: &State, rows: &[Row], since: Option<i64>, now: i64, unused_for: Duration) -> OpeningsReport {
    let window_start = day_of(now) - (WINDOW_DAYS - 1);
    let unused_for = i64::try_from(unused_for.as_secs()).unwrap_or(i64::MAX);
    // What the store can tell: from when counting began, and no further back than the history
    // it keeps. `--unused-for 500d` flagged openings used 450 days ago, whose rows were pruned.
    let known_from = since.map(|s| s.max(now.saturating_sub(HISTORY_DAYS * DAY_SECS)));
    let watched_long_enough = known_from.is_some_and(|s| s <= now.saturating_sub(unused_for));
    let mut by_host: BTreeMap<&str, (Option<i64>, u64, u64)> = BTreeMap::new();
    for row in rows {
        let (last, requests, blocked) = by_host.entry(row.host.as_str()).or_default();
        if let Some(l) = row.tally.last_allowed {
            *last = Some(last.map_or(l, |x| x.max(l)));
        }
        if row.day >= window_start && row.day <= day_of(now) {
            *requests += row.tally.requests;
            *blocked += row.tally.blocked;
        }
    }
    let openings = in_force
        .entries
        .iter()
        .map(|(host, entry)| {
            let (last, requests_30d, blocked_30d) = by_host.get(host.as_str()).copied().unwrap_or_default();
            let recent = last.is_some_and(|l| l > now.saturating_sub(unused_for));
            Opening {
                host: host.as_str().to_owned(),
                wildcard: host.is_wildcard(),
                ports: entry.ports.iter().copied().collect(),
                amcs: entry.amcs.keys().map(|n| n.as_str().to_owned()).collect(),
                services: entry.services().into_iter().map(str::to_owned).collect(),
                in_force_since: entry.since.clone(),
                last_used: last.map(time_text),
                requests_30d,
                blocked_30d,
                unused: watched_long_enough && !recent,
            }
        })
        .collect();
    OpeningsReport { openings, since: since.map(time_text) }
}

/// The clients of `rows`, most requests first: who still uses an opening.
pub fn clients(rows: &[&Row]) -> Vec<(String, u64, i64)> {
    let mut by: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for r in rows {
        let (n, last) = by.entry(r.client.as_str()).or_insert((0, r.tally.last_seen));
        *n += r.tally.requests + r.tally.blocked;
        *last = (*last).max(r.tally.last_seen);
    }
    let mut list: Vec<(String, u64, i64)> = by.into_iter().map(|(c, (n, l))| (c.to_owned(), n, l)).collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Entry, Origin};

    fn host(h: &str) -> Host {
        Host::parse(h).unwrap()
    }

    #[test]
    fn squid_allowed_and_denied_requests_are_hits() {
        let tunnel = "1763630100.101    120 198.18.1.20 TCP_TUNNEL/200 5120 CONNECT IDB.A.test:443 - HIER_DIRECT/198.18.3.40 -";
        let hit = squid_hit(tunnel).unwrap();
        assert_eq!((hit.at, hit.name.as_deref(), hit.allowed), (1763630100, Some("idb.a.test"), true));
        assert_eq!(hit.client, Some("198.18.1.20".parse().unwrap()));
        let miss = "1763630101.000 5 198.18.1.21 TCP_MISS/200 10 GET http://crl.a.test:8080/x.crl - HIER_DIRECT/198.18.3.41 -";
        assert_eq!(squid_hit(miss).unwrap().name.as_deref(), Some("crl.a.test"));
        let denied = "1763630102.202 0 198.18.1.20 TCP_DENIED/403 3921 CONNECT idb.a.test:443 - HIER_NONE/- text/html";
        assert!(!squid_hit(denied).unwrap().allowed);
        assert_eq!(squid_hit("1763630102.202 0 198.18.1.20 NONE_NONE/400 0 NONE error:invalid-request - HIER_NONE/- -"), None);
        assert_eq!(squid_hit("garbage line that is not squid"), None);
        assert_eq!(squid_hit(""), None);
    }

    #[test]
    fn nft_accept_and_drop_lines_are_hits_on_their_own_day() {
        let now = 1763630100; // 2025-11-20
        let l = "Nov 20 10:15:01 fw1 kernel: rocsync-accept: IN= OUT=eth1 SRC=198.18.1.20 DST=198.18.3.40 LEN=60 PROTO=TCP SPT=51234 DPT=443 SYN";
        let hit = nft_hit(l, ACCEPT_PREFIX, "rocsync-drop: ", now).unwrap();
        assert!(hit.allowed);
        assert_eq!(time_text(hit.at), "2025-11-20T10:15:01Z");
        let d = "Nov 19 23:59:59 fw1 kernel: rocsync-drop: IN= OUT=eth1 SRC=198.18.1.20 DST=198.18.3.40 LEN=60 PROTO=TCP DPT=443";
        let hit = nft_hit(d, ACCEPT_PREFIX, "rocsync-drop: ", now).unwrap();
        assert!(!hit.allowed);
        assert_eq!(day_text(day_of(hit.at)), "2025-11-19");
        let december = "Dec 31 23:00:00 fw1 kernel: rocsync-drop: SRC=198.18.1.20 DST=198.18.3.40 DPT=443";
        let jan = OffsetDateTime::parse("2026-01-01T08:00:00Z", &Rfc3339).unwrap().unix_timestamp();
        assert_eq!(time_text(nft_hit(december, ACCEPT_PREFIX, "rocsync-drop: ", jan).unwrap().at), "2025-12-31T23:00:00Z");
        assert_eq!(nft_hit("Nov 20 10:15:03 fw1 kernel: other: SRC=198.18.9.9 DST=198.18.1.20", ACCEPT_PREFIX, "rocsync-drop: ", now), None);
    }

    #[test]
    fn requests_are_counted_on_the_opening_that_allows_them() {
        let hosts = [host("*.api.a.test"), host("idb.a.test"), host("x.api.a.test")];
        let openings = Openings::new(&hosts);
        assert_eq!(openings.find("idb.a.test").map(Host::as_str), Some("idb.a.test"));
        assert_eq!(openings.find("y.api.a.test").map(Host::as_str), Some("*.api.a.test"));
        assert_eq!(openings.find("x.api.a.test").map(Host::as_str), Some("x.api.a.test"));
        assert_eq!(openings.find("www.example.test"), None);
        let lines: Vec<String> = [
            "1763630100.1 1 198.18.1.20 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -",
            "1763630160.1 1 198.18.1.20 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -",
            "1763630170.1 1 198.18.1.21 TCP_DENIED/403 1 CONNECT z.api.a.test:443 - HIER_NONE/- -",
            "1763630180.1 1 198.18.1.21 TCP_TUNNEL/200 1 CONNECT www.example.test:443 - HIER_DIRECT/- -",
        ]
        .map(String::from)
        .to_vec();
        let counts = count(&lines, Source::Squid, &openings, &BTreeMap::new(), 1763630200);
        let rows = counts.to_rows();
        assert_eq!(rows.len(), 2, "the web at large is not counted: {rows:?}");
        let idb = rows.iter().find(|r| r.host == "idb.a.test").unwrap();
        assert_eq!((idb.tally.requests, idb.tally.blocked, idb.tally.last_allowed), (2, 0, Some(1763630160)));
        let api = rows.iter().find(|r| r.host == "*.api.a.test").unwrap();
        assert_eq!((api.tally.requests, api.tally.blocked, api.client.as_str()), (0, 1, "198.18.1.21"));
    }

    fn in_force() -> State {
        let entry = Entry { ports: [443].into(), amcs: BTreeMap::new(), origins: [Origin::Config].into(), since: Some("2025-01-01T00:00:00Z".into()) };
        State { entries: BTreeMap::from([(host("idb.a.test"), entry.clone()), (host("clc.a.test"), entry)]) }
    }

    fn row(host: &str, day: i64, requests: u64, last_allowed: Option<i64>) -> Row {
        Row { host: host.into(), day, client: "198.18.1.20".into(), tally: Tally { requests, blocked: 1, last_seen: day * DAY_SECS, last_allowed } }
    }

    #[test]
    fn an_opening_is_never_unused_for_longer_than_rocsync_has_watched() {
        let now = 400 * DAY_SECS;
        let rows = [row("idb.a.test", 399, 5, Some(399 * DAY_SECS)), row("idb.a.test", 300, 7, Some(300 * DAY_SECS))];
        let ninety = Duration::from_secs(90 * 86_400);
        let young = openings(&in_force(), &rows, Some(now - 10 * DAY_SECS), now, ninety);
        assert!(young.openings.iter().all(|o| !o.unused), "watched 10 days: nothing is unused for 90");
        let old = openings(&in_force(), &rows, Some(now - 200 * DAY_SECS), now, ninety);
        let clc = old.openings.iter().find(|o| o.host == "clc.a.test").unwrap();
        assert!(clc.unused && clc.last_used.is_none());
        let idb = old.openings.iter().find(|o| o.host == "idb.a.test").unwrap();
        assert!(!idb.unused);
        assert_eq!((idb.requests_30d, idb.blocked_30d), (5, 1), "only the last 30 days");
        assert_eq!(idb.last_used.as_deref(), Some(time_text(399 * DAY_SECS).as_str()));
    }

    /// `--unused-for` longer than the 400 days of history: an opening used 450 days ago (its
    /// rows pruned) was flagged unused for 500 days. Nothing is flagged beyond the history.
    #[test]
    fn an_opening_is_never_unused_for_longer_than_the_history_kept() {
        let now = 1000 * DAY_SECS;
        let long_ago = Some(now - 900 * DAY_SECS);
        let rows = [row("idb.a.test", day_of(now) - 100, 1, Some(now - 100 * DAY_SECS))];
        let report = openings(&in_force(), &rows, long_ago, now, Duration::from_secs(500 * 86_400));
        assert!(report.openings.iter().all(|o| !o.unused), "{report:?}");
        // Within the history, as before.
        let report = openings(&in_force(), &rows, long_ago, now, Duration::from_secs(200 * 86_400));
        let clc = report.openings.iter().find(|o| o.host == "clc.a.test").unwrap();
        assert!(clc.unused);
        assert!(!report.openings.iter().find(|o| o.host == "idb.a.test").unwrap().unused);
    }

    /// On an empty store (nothing in force, nothing counted) the report is empty and says that
    /// counting has not begun; an opening in force but never counted is not called unused.
    #[test]
    fn the_report_of_an_empty_store_is_empty_and_flags_nothing() {
        let report = openings(&State::default(), &[], None, 1000 * DAY_SECS, DEFAULT_UNUSED_FOR);
        assert_eq!((report.openings.len(), report.since), (0, None));
        let report = openings(&in_force(), &[], None, 1000 * DAY_SECS, DEFAULT_UNUSED_FOR);
        assert!(report.openings.iter().all(|o| !o.unused && o.last_used.is_none() && o.requests_30d == 0));
    }

    /// Two openings on one address (two AMCs on a hosting platform): a firewall line names the
    /// address only, and was counted on the first host alone, leaving the other unused.
    #[test]
    fn a_firewall_line_to_a_shared_address_counts_on_every_opening_there() {
        let hosts = [host("idb.a.test"), host("idb.b.test"), host("other.c.test")];
        let openings = Openings::new(&hosts[..2]);
        let ip: IpAddr = "198.18.3.40".parse().unwrap();
        let reverse = BTreeMap::from([(ip, hosts.to_vec())]);
        let line = "2025-11-20T10:15:01+00:00 fw1 kernel: rocsync-accept: IN=eth0 OUT=eth1 SRC=198.18.1.20 DST=198.18.3.40 PROTO=TCP DPT=443 SYN".to_owned();
        let counts = count(&[line], Source::Nft { accept_prefix: ACCEPT_PREFIX, drop_prefix: "rocsync-drop: " }, &openings, &reverse, 1763630100);
        let hosts: Vec<&str> = counts.rows.keys().map(|k| k.host.as_str()).collect();
        assert_eq!(hosts, ["idb.a.test", "idb.b.test"]);
        assert!(counts.rows.values().all(|t| t.requests == 1 && t.last_allowed == Some(1763633701)), "{counts:?}");
    }

    /// A wildcard opening: its sub-domains count on it, its bare base name does not (the
    /// wildcard does not allow it), and the report says it is a wildcard.
    #[test]
    fn a_wildcard_opening_counts_its_subdomains() {
        let hosts = [host("*.api.a.test")];
        let index = Openings::new(&hosts);
        assert_eq!(index.find("x.y.api.a.test").map(Host::as_str), Some("*.api.a.test"));
        assert_eq!(index.find("api.a.test"), None);
        let entry = Entry { ports: [443].into(), amcs: BTreeMap::new(), origins: [Origin::Annuaire].into(), since: None };
        let state = State { entries: BTreeMap::from([(host("*.api.a.test"), entry)]) };
        let rows = [row("*.api.a.test", 10, 2, Some(10 * DAY_SECS))];
        let report = openings(&state, &rows, Some(0), 11 * DAY_SECS, DEFAULT_UNUSED_FOR);
        assert_eq!((report.openings[0].wildcard, report.openings[0].requests_30d), (true, 2));
    }

    /// What counting costs per million Squid lines, next to what the watchers already do with
    /// them (parse each for a denial). Run with
    /// `cargo test --release --lib usage::tests::cost_per_million_lines -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: prints the figures"]
    fn cost_per_million_lines() {
        let hosts: Vec<Host> = (0..300).map(|i| host(&format!("idb.amc{i}.test"))).collect();
        let openings = Openings::new(&hosts);
        let lines: Vec<String> = (0..1_000_000u64)
            .map(|i| {
                let result = if i % 7 == 0 { "TCP_DENIED/403" } else { "TCP_TUNNEL/200" };
                let target = if i % 3 == 0 { format!("www.site{}.test:443", i % 1000) } else { format!("idb.amc{}.test:443", i % 300) };
                format!("{}.123    187 198.18.1.{} {result} 5120 CONNECT {target} - HIER_DIRECT/198.18.3.40 -", 1_763_630_000 + i / 10, i % 250)
            })
            .collect();
        let started = std::time::Instant::now();
        let denied = lines.iter().filter(|l| matches!(crate::watch::squid::parse_line(l), Some(crate::watch::Line::Blocked(_)))).count();
        let without = started.elapsed();
        let started = std::time::Instant::now();
        let counts = count(&lines, Source::Squid, &openings, &BTreeMap::new(), 1_763_800_000);
        let with = started.elapsed();
        println!(
            "1,000,000 Squid lines: read for denials {without:?} ({denied} denied); counted per opening {with:?} ({} rows, {} requests)",
            counts.rows.len(),
            counts.rows.values().map(|t| t.requests + t.blocked).sum::<u64>()
        );
    }

    proptest::proptest! {
        /// Counting a batch in pieces and merging the pieces gives the counts of the whole
        /// batch: a log read in chunks (every half second, or after a restart) counts the same.
        #[test]
        fn counting_in_chunks_is_counting_at_once(
            lines in proptest::collection::vec((0i64..5 * 86_400, 0u8..3, 0u8..3, proptest::bool::ANY), 0..60),
            cut in 0usize..60,
        ) {
            let hosts = [host("a.test"), host("b.test"), host("c.test")];
            let openings = Openings::new(&hosts);
            let text: Vec<String> = lines.iter().map(|(t, h, c, ok)| format!(
                "{}.5 1 198.18.1.{c} {} 1 CONNECT {}.test:443 - - -",
                1_700_000_000 + t, if *ok { "TCP_TUNNEL/200" } else { "TCP_DENIED/403" }, ["a", "b", "c"][*h as usize]
            )).collect();
            let whole = count(&text, Source::Squid, &openings, &BTreeMap::new(), 1_700_500_000);
            let cut = cut.min(text.len());
            let (a, b) = text.split_at(cut);
            let mut merged = count(a, Source::Squid, &openings, &BTreeMap::new(), 1_700_500_000);
            for (k, t) in count(b, Source::Squid, &openings, &BTreeMap::new(), 1_700_500_000).rows {
                merged.rows.entry(k).or_default().merge(&t);
            }
            proptest::prop_assert_eq!(&merged, &whole);
            let total: u64 = whole.rows.values().map(|t| t.requests + t.blocked).sum();
            proptest::prop_assert_eq!(total as usize, lines.len());
        }
    }

    /// A line dated years ahead (forged, or a broken clock) is not counted: it would stand as
    /// the last use for good.
    #[test]
    fn a_line_dated_in_the_future_is_not_counted() {
        let hosts = [host("idb.a.test")];
        let index = Openings::new(&hosts);
        let now = 1_763_630_102;
        let lines: Vec<String> = [
            "4102444800.0 1 198.18.1.21 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -".to_owned(),
            "1e300 1 198.18.1.22 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -".to_owned(),
            format!("{now}.5 1 198.18.1.23 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -"),
        ]
        .into();
        let counts = count(&lines, Source::Squid, &index, &BTreeMap::new(), now);
        let total: u64 = counts.rows.values().map(|t| t.requests).sum();
        assert_eq!(total, 1, "only the line of today counts");
        assert!(counts.rows.values().all(|t| t.last_seen <= now + 1));
    }
}
