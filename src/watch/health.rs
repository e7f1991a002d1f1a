//! How reading one watched log goes, so that a log that cannot be read fills no journal: the
//! daemon reads its logs every half second, and a failing read (a log the service user may not
//! read, `journalctl` refusing) was logged each time, 2,987 of 3,125 journal lines in 35
//! minutes. Here a failure is said once, and again only when its reason changes; reads are
//! retried after a pause that doubles up to a minute; recovery is said once. Pure: the caller
//! gives the time ([`crate::clock`]'s, so that a test moving the clock moves the retries).

use std::time::Duration;

use crate::clock::Millis;

/// The first retry after a failed read comes this soon, then twice as late each time.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Retries never come further apart than this: a log made readable is read within a minute.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// The state of one log's reading.
#[derive(Debug, Default)]
pub struct Health {
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    reason: String,
    attempts: u32,
    next_try: Millis,
}

/// What there is to tell after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Tell {
    /// Nothing new: it works as before, or fails as before.
    Nothing,
    /// It failed, for the first time or for another reason than the last time.
    Failed { reason: String, retry_in: Duration },
    /// It works again, after `attempts` failed reads; the last one's reason.
    Recovered { attempts: u32, reason: String },
}

impl Health {
    /// Whether to try a read at `now`: always while reads work, else once the pause is over.
    pub fn due(&self, now: Millis) -> bool {
        self.failing.as_ref().is_none_or(|f| now >= f.next_try)
    }

    /// A read failed at `now` for `reason`.
    pub fn failed(&mut self, reason: String, now: Millis) -> Tell {
        let (attempts, same) = match &self.failing {
            Some(f) => (f.attempts.saturating_add(1), f.reason == reason),
            None => (1, false),
        };
        let retry_in = FIRST_RETRY.saturating_mul(1u32 << (attempts - 1).min(6)).min(MAX_RETRY);
        let next_try = now.saturating_add(retry_in.as_millis() as Millis);
        self.failing = Some(Failing { reason: reason.clone(), attempts, next_try });
        if same { Tell::Nothing } else { Tell::Failed { reason, retry_in } }
    }

    /// A read worked.
    pub fn succeeded(&mut self) -> Tell {
        match self.failing.take() {
            Some(f) => Tell::Recovered { attempts: f.attempts, reason: f.reason },
            None => Tell::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// `n` seconds as [`Millis`].
    fn ms(n: u64) -> Millis {
        n * 1000
    }

    #[test]
    fn a_failure_is_said_once_and_retried_less_and_less_often() {
        let t0: Millis = 1_763_630_101_000;
        let mut h = Health::default();
        assert!(h.due(t0));
        assert_eq!(h.failed("Permission denied".into(), t0), Tell::Failed { reason: "Permission denied".into(), retry_in: secs(1) });
        assert!(!h.due(t0 + 500), "not at the next half-second tick");
        assert!(h.due(t0 + ms(1)));
        // The same reason again and again: nothing more to say, and the pause doubles.
        let mut at = t0;
        let mut pauses = Vec::new();
        for _ in 0..9 {
            at += ms(1);
            while !h.due(at) {
                at += ms(1);
            }
            assert_eq!(h.failed("Permission denied".into(), at), Tell::Nothing);
            pauses.push(h.failing.as_ref().unwrap().next_try - at);
        }
        assert_eq!(pauses, [2, 4, 8, 16, 32, 60, 60, 60, 60].map(ms));
        // Another reason is news, said once.
        assert!(matches!(h.failed("No such file or directory".into(), at), Tell::Failed { .. }));
        assert_eq!(h.failed("No such file or directory".into(), at), Tell::Nothing);
        // Recovery is said once, then reads are due every time.
        assert_eq!(h.succeeded(), Tell::Recovered { attempts: 12, reason: "No such file or directory".into() });
        assert_eq!(h.succeeded(), Tell::Nothing);
        assert!(h.due(at));
    }
}
