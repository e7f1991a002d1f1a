//! Measures the time from an e-mail landing in the Maildir to the annuaire re-poll starting,
//! through the real watcher (inotify) and the real poll loop. A measurement, not a check:
//!
//!     cargo test --release --test notification_latency -- --ignored --nocapture

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocsync::sources::maildir::{self, Maildir};
use rocsync::sources::schedule::{self, PollSchedule};
use tokio::sync::Notify;

#[tokio::test]
#[ignore = "a measurement; run by hand (see the module doc)"]
async fn maildir_to_repoll_latency() {
    const SAMPLES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let md = Maildir::open(dir.path()).unwrap();
    let wake = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let polls: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let watcher = {
        let (md, wake, stop) = (md.clone(), wake.clone(), stop.clone());
        tokio::spawn(async move { maildir::watch(&md, Duration::from_secs(300), wake, stop.notified()).await })
    };
    let poller = {
        let (wake, stop, polls) = (wake.clone(), stop.clone(), polls.clone());
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
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    for i in 0..SAMPLES {
        let before = polls.lock().unwrap().len();
        let tmp = dir.path().join(format!("tmp/{i}"));
        std::fs::write(&tmp, "From: notifications@inter-amc.test\r\n\r\nOUVERTURE | 2026-11-25 | 891234567 | X | a.test\r\n").unwrap();
        let landed = Instant::now();
        std::fs::rename(&tmp, dir.path().join(format!("new/{i}"))).unwrap();
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
    stop.notify_waiters();
    let _ = (watcher.await, poller.await);
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "Maildir → re-poll start over {SAMPLES} deliveries: median {:.2} ms, min {:.2} ms, max {:.2} ms",
        ms(latencies[SAMPLES / 2]),
        ms(latencies[0]),
        ms(latencies[SAMPLES - 1])
    );
}
