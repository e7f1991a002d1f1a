//! Measures the time from an e-mail landing in the mailbox to the annuaire re-poll starting,
//! through the real watchers (inotify on a Maildir; IMAP IDLE on a real Dovecot, as root) and
//! the real poll loop. A measurement, not a check:
//!
//!     cargo test --release --test notification_latency -- --ignored --nocapture --test-threads 1

mod util;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocsync::sources::maildir::{self, Maildir};
use rocsync::sources::schedule::{self, PollSchedule};
use tokio::sync::Notify;

/// The poll loop of the daemon with a poll that only records when it starts.
fn recording_poller(wake: Arc<Notify>, stop: Arc<Notify>, polls: Arc<Mutex<Vec<Instant>>>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let schedule = PollSchedule {
            interval: Duration::from_secs(600),
            jitter: Duration::ZERO,
            backoff_max: Duration::from_secs(600),
            min_gap: Duration::from_millis(50),
        };
        let poll = move || {
            let polls = polls.clone();
            async move {
                polls.lock().unwrap().push(Instant::now());
                true
            }
        };
        schedule::run(schedule, poll, &wake, stop.notified()).await
    })
}

/// Delivers `SAMPLES` messages with `deliver(i)` and returns each one's delay until the next
/// poll started.
async fn measure(polls: &Arc<Mutex<Vec<Instant>>>, mut deliver: impl FnMut(usize)) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for i in 0..SAMPLES {
        let before = polls.lock().unwrap().len();
        let landed = Instant::now();
        deliver(i);
        let deadline = Instant::now() + Duration::from_secs(5);
        let started = loop {
            if let Some(t) = polls.lock().unwrap().get(before) {
                break *t;
            }
            assert!(Instant::now() < deadline, "no re-poll within 5 s");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(started.duration_since(landed));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    latencies
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what} → re-poll start over {SAMPLES} deliveries: median {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms(latencies[SAMPLES / 2]),
        ms(latencies[0]),
        ms(latencies[SAMPLES - 1])
    );
}

const SAMPLES: usize = 20;
const MESSAGE: &str = "From: notifications@inter-amc.test\r\nSubject: ouverture\r\n\r\nOUVERTURE | 2026-11-25 | 891234567 | X | a.test\r\n";

#[tokio::test]
#[ignore = "a measurement; run by hand (see the module doc)"]
async fn imap_idle_to_repoll_latency() {
    if !util::have("dovecot", true) {
        return;
    }
    let server = util::dovecot::Dovecot::start();
    let (wake, stop) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let settings = server.settings();
    let watcher = {
        let (wake, stop) = (wake.clone(), stop.clone());
        tokio::spawn(async move { rocsync::sources::imap::watch(&settings, true, Duration::from_secs(600), wake, stop.notified()).await })
    };
    let poller = recording_poller(wake, stop.clone(), polls.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let latencies = measure(&polls, |i| server.deliver(&format!("{i}.M{i}P1.mx"), MESSAGE.as_bytes())).await;
    stop.notify_waiters();
    let _ = (watcher.await, poller.await);
    report("IMAP IDLE (Dovecot)", latencies);
}

#[tokio::test]
#[ignore = "a measurement; run by hand (see the module doc)"]
async fn maildir_to_repoll_latency() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let md = Maildir::open(dir.path()).unwrap();
    let (wake, stop) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let watcher = {
        let (md, wake, stop) = (md.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move { maildir::watch(&md, Duration::from_secs(300), wake, stop.notified()).await })
    };
    let poller = recording_poller(wake, stop.clone(), polls.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let latencies = measure(&polls, |i| {
        let tmp = dir.path().join(format!("tmp/{i}"));
        std::fs::write(&tmp, MESSAGE).unwrap();
        std::fs::rename(&tmp, dir.path().join(format!("new/{i}"))).unwrap();
    })
    .await;
    stop.notify_waiters();
    let _ = (watcher.await, poller.await);
    report("Maildir (inotify)", latencies);
}
