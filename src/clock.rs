//! The time as rocsync reads it: every "now" of the daemon's decisions (review reminders, the
//! "annuaire unreachable" delay, the alert queue's hourly limit and back-offs, the log
//! watchers' retries) and every date the store and the outputs write comes from here.
//!
//! Tests move it with [`advance`], a process-wide offset added to the system clock. Not tokio's
//! paused clock, for two reasons a reader could not guess: tokio pauses only a
//! `current_thread` runtime, and `rocsync run` needs a multi-threaded one (its worker thread
//! waits on the runtime for the annuaire's requests); and a paused runtime that idles on real
//! I/O (the SMTP receiver, the annuaire server of a test) jumps to its next timer at once, so
//! simulated hours would pass while one mail is on the wire. The offset moves only what
//! rocsync *reads*, never a timer: the daemon's ticks keep running in real time (a second for
//! the review and approval tick, the poll schedule as configured), and at its next tick the
//! worker sees the hours a test added. Being process-wide, it must not be moved while other
//! tests of the same binary run: the tests that move it live in a binary of their own and run
//! one after the other (tests/worker_clock.rs).
//!
//! `ROCSYNC_TEST_NOW` (Unix seconds or RFC 3339) pins [`unix_seconds`], the day reckoning of
//! the usage and RPN reports, for a `rocsync` run as a subprocess; the rest of the clock stays
//! on the system's time there, since a frozen clock would make nothing ever due.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time: milliseconds since the Unix epoch, so that it can be stored and outlive the
/// process.
pub type Millis = u64;

/// How far [`advance`] has moved the clock, in milliseconds.
static OFFSET: Offset = Offset::new();

/// The current time as [`Millis`].
pub fn now_millis() -> Millis {
    millis(system_now())
}

/// The current time, UTC.
pub fn now_utc() -> OffsetDateTime {
    OffsetDateTime::from(system_now())
}

/// The current time as the store and the outputs write it: RFC 3339, UTC, whole seconds
/// (`2026-11-23T09:28:38Z`).
pub fn now() -> String {
    rfc3339_seconds(now_utc())
}

/// "Now" in Unix seconds, for the usage and RPN reports; `ROCSYNC_TEST_NOW` (Unix seconds or
/// RFC 3339) sets it, for tests only: the end-to-end migration runs on a simulated day.
pub fn unix_seconds() -> i64 {
    match std::env::var("ROCSYNC_TEST_NOW") {
        Ok(text) => pinned(&text).unwrap_or_else(|| now_utc().unix_timestamp()),
        Err(_) => now_utc().unix_timestamp(),
    }
}

/// Moves the clock forward by `by`, for the whole process. For tests only (see the module's
/// doc): nothing in rocsync calls it.
pub fn advance(by: Duration) {
    OFFSET.add(by);
}

/// The system's time plus the offset.
fn system_now() -> SystemTime {
    shifted(SystemTime::now(), OFFSET.get())
}

/// `now` moved forward by `offset`; `now` itself if that is past what the system can tell.
fn shifted(now: SystemTime, offset: Duration) -> SystemTime {
    now.checked_add(offset).unwrap_or(now)
}

/// `at` as [`Millis`]; 0 before the epoch.
fn millis(at: SystemTime) -> Millis {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// `at` as RFC 3339 in whole seconds.
fn rfc3339_seconds(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0).unwrap_or(OffsetDateTime::UNIX_EPOCH).format(&Rfc3339).unwrap_or_default()
}

/// The time `ROCSYNC_TEST_NOW` gives, if it reads as one.
fn pinned(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    OffsetDateTime::parse(text, &Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// A duration that only grows, shared by every thread.
struct Offset(AtomicU64);

impl Offset {
    const fn new() -> Offset {
        Offset(AtomicU64::new(0))
    }

    fn add(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // Saturating: a test that adds too much gets the far future, not a wrapped clock.
        let _ = self.0.update(Ordering::SeqCst, Ordering::SeqCst, |old| old.saturating_add(ms));
    }

    fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The process-wide offset is never moved here: the library's other tests read the clock
    // in parallel. A local `Offset` stands for it.

    #[test]
    fn an_offset_moves_every_reading_by_the_same_amount() {
        let offset = Offset::new();
        assert_eq!(offset.get(), Duration::ZERO);
        offset.add(Duration::from_secs(3600));
        offset.add(Duration::from_millis(1500));
        assert_eq!(offset.get(), Duration::from_millis(3_601_500));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_763_630_101);
        let later = shifted(t0, offset.get());
        assert_eq!(millis(later) - millis(t0), 3_601_500);
        assert_eq!(rfc3339_seconds(OffsetDateTime::from(t0)), "2025-11-20T09:15:01Z");
        assert_eq!(rfc3339_seconds(OffsetDateTime::from(later)), "2025-11-20T10:15:02Z", "whole seconds, fraction dropped");
    }

    #[test]
    fn the_offset_saturates_instead_of_wrapping() {
        let offset = Offset::new();
        offset.add(Duration::from_secs(10));
        offset.add(Duration::MAX);
        assert_eq!(offset.get(), Duration::from_millis(u64::MAX));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_763_630_101);
        assert_eq!(shifted(t0, Duration::MAX), t0, "a clock past what the system can tell stays where it is");
    }

    #[test]
    fn the_pinned_time_reads_seconds_or_rfc3339() {
        assert_eq!(pinned(" 1763630101\n"), Some(1_763_630_101));
        assert_eq!(pinned("2025-11-20T09:15:01Z"), Some(1_763_630_101));
        assert_eq!(pinned("tomorrow"), None);
    }

    #[test]
    fn now_is_whole_seconds_in_utc() {
        let text = now();
        assert_eq!(text.len(), "2026-11-23T09:28:38Z".len(), "{text}");
        assert!(text.ends_with('Z') && !text.contains('.'), "{text}");
        assert!(now_millis() >= millis(SystemTime::now()) - 1_000);
    }
}
