//! When to poll the annuaire: every `poll_interval` plus a random share of `poll_jitter` (so
//! that hospitals do not all call at the same second), sooner after an error but backing off
//! exponentially up to `backoff_max`, and at once when a notification asks for it.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::sync::Notify;

/// The first retry after an error comes this soon, then twice as late each time.
const FIRST_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSchedule {
    pub interval: Duration,
    pub jitter: Duration,
    pub backoff_max: Duration,
    /// Wake-ups closer than this to the last poll wait for the rest of it
    /// (`notifications.debounce`): a burst of e-mails makes two polls, not twenty.
    pub min_gap: Duration,
}

impl PollSchedule {
    /// The delay after a good poll; `random` is in [0, 1). The configuration bounds both
    /// terms; the sum saturates anyway, so that no schedule can panic.
    pub fn after_success(&self, random: f64) -> Duration {
        self.interval.saturating_add(self.jitter.mul_f64(random.clamp(0.0, 1.0)))
    }

    /// The delay after `failures` (≥ 1) polls in a row failed: 30 s, 1 min, 2 min … capped at
    /// `backoff_max`, never later than a normal poll would come, and spread by up to 10 %.
    pub fn after_failure(&self, failures: u32, random: f64) -> Duration {
        let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let base = doubled.min(self.backoff_max).min(self.interval.max(FIRST_RETRY));
        base.saturating_add(base.mul_f64(0.1 * random.clamp(0.0, 1.0)))
    }
}

/// A number in [0, 1) that differs from call to call, for jitter (not for secrets).
pub fn jitter_random() -> f64 {
    let bits = std::hash::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Polls with `poll` (which says whether it worked) on `schedule` until `shutdown` completes.
/// `wake` makes the next poll happen at once (a notification arrived). Returns how many polls
/// were made.
pub async fn run<P, F>(schedule: PollSchedule, poll: P, wake: &Notify, shutdown: impl Future<Output = ()>) -> u64
where
    P: FnMut() -> F,
    F: Future<Output = bool>,
{
    run_with(schedule, poll, wake, shutdown, jitter_random).await
}

/// [`run`] with the source of randomness given, so that tests can fix it.
pub async fn run_with<P, F>(
    schedule: PollSchedule,
    mut poll: P,
    wake: &Notify,
    shutdown: impl Future<Output = ()>,
    mut random: impl FnMut() -> f64,
) -> u64
where
    P: FnMut() -> F,
    F: Future<Output = bool>,
{
    tokio::pin!(shutdown);
    let mut failures = 0u32;
    let mut polls = 0u64;
    loop {
        // Wake-ups that came before this poll starts are answered by it; only those that come
        // during or after it ask for another. A zero timeout polls `notified` once: it takes a
        // stored wake-up if there is one.
        let _ = tokio::time::timeout(Duration::ZERO, wake.notified()).await;
        let started = tokio::time::Instant::now();
        let ok = tokio::select! {
            ok = poll() => ok,
            () = &mut shutdown => return polls,
        };
        polls += 1;
        failures = if ok { 0 } else { failures.saturating_add(1) };
        let delay = if ok { schedule.after_success(random()) } else { schedule.after_failure(failures, random()) };
        tracing::debug!(?delay, failures, "Next annuaire poll.");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {
                tracing::info!("A notification arrived: polling the annuaire.");
                // What is left of the gap, rather than `started + min_gap`: an `Instant` plus a
                // duration can overflow, and tokio's `sleep` caps what it is given.
                tokio::select! {
                    () = tokio::time::sleep(schedule.min_gap.saturating_sub(started.elapsed())) => {}
                    () = &mut shutdown => return polls,
                }
            }
            () = &mut shutdown => return polls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    const MIN: Duration = Duration::from_secs(60);

    fn schedule() -> PollSchedule {
        PollSchedule { interval: 10 * MIN, jitter: MIN, backoff_max: 30 * MIN, min_gap: Duration::from_secs(30) }
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let s = schedule();
        assert_eq!(s.after_success(0.0), 10 * MIN);
        assert_eq!(s.after_success(0.5), 10 * MIN + MIN / 2);
        for _ in 0..100 {
            let r = jitter_random();
            assert!((0.0..1.0).contains(&r));
            let d = s.after_success(r);
            assert!(d >= 10 * MIN && d < 11 * MIN);
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = PollSchedule { interval: 60 * MIN, jitter: MIN, backoff_max: 5 * MIN, min_gap: Duration::ZERO };
        let delays: Vec<u64> = (1..=6).map(|n| s.after_failure(n, 0.0).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 300, 300]);
        // Never later than the normal interval.
        let short = PollSchedule { interval: 2 * MIN, jitter: MIN, backoff_max: 30 * MIN, min_gap: Duration::ZERO };
        assert_eq!(short.after_failure(10, 0.0), 2 * MIN);
        assert_eq!(s.after_failure(u32::MAX, 0.0), 5 * MIN);
        assert_eq!(s.after_failure(1, 1.0).as_secs(), 33);
    }

    #[test]
    fn no_schedule_overflows() {
        let huge = PollSchedule { interval: Duration::MAX, jitter: Duration::MAX, backoff_max: Duration::MAX, min_gap: Duration::MAX };
        assert_eq!(huge.after_success(0.99), Duration::MAX);
        assert!(huge.after_failure(u32::MAX, 0.99) >= FIRST_RETRY);
    }

    /// Records when each poll happened, on tokio's paused clock.
    async fn timeline(outcomes: Vec<bool>, total: Duration, wake_at: Option<Duration>) -> Vec<u64> {
        timeline_woken(outcomes, total, wake_at.into_iter().collect()).await
    }

    async fn timeline_woken(outcomes: Vec<bool>, total: Duration, wakes: Vec<Duration>) -> Vec<u64> {
        let start = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let outcomes = Arc::new(Mutex::new(outcomes.into_iter()));
        let wake = Arc::new(Notify::new());
        for at in wakes {
            let wake = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(at).await;
                wake.notify_one();
            });
        }
        let t = times.clone();
        let poll = move || {
            let (t, outcomes) = (t.clone(), outcomes.clone());
            async move {
                t.lock().unwrap().push(start.elapsed().as_secs());
                outcomes.lock().unwrap().next().unwrap_or(true)
            }
        };
        run_with(schedule(), poll, &wake, tokio::time::sleep(total), || 0.0).await;
        times.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn polls_on_the_interval() {
        assert_eq!(timeline(vec![], 35 * MIN, None).await, [0, 600, 1200, 1800]);
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_after_errors_then_returns_to_the_interval() {
        let times = timeline(vec![false, false, false, true], 30 * MIN, None).await;
        // Errors at 0, 30, 90; retries 30 s, 60 s, 120 s later; then every 10 minutes again.
        assert_eq!(times, [0, 30, 90, 210, 810, 1410]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_notifications_makes_two_polls_not_ten() {
        let burst: Vec<Duration> = (0..10).map(|i| Duration::from_secs(200 + i)).collect();
        let times = timeline_woken(vec![], 5 * MIN, burst).await;
        // The first at once, the others folded into one, 30 s (min_gap) after it.
        assert_eq!(times, [0, 200, 230]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_notification_polls_at_once() {
        let times = timeline(vec![], 13 * MIN, Some(Duration::from_secs(125))).await;
        assert_eq!(times, [0, 125, 725]);
    }
}
