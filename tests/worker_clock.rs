//! The daemon's worker logic on a simulated clock (issue 12): `rocsync::daemon::run` in-process,
//! a real SMTP receiver on loopback, and hours that pass in seconds through
//! [`rocsync::clock::advance`]. Review reminders, the "annuaire unreachable" delay and the
//! hourly digest of held alerts are each checked before and after their time.
//!
//! The clock's offset is process-wide: this binary holds only these tests, and they run one
//! after the other (`serial`). The daemon's ticks stay in real time (a poll a second here), so
//! every wait is bounded and short; the offset only moves what the worker and the mailer read.

#[path = "util/mod.rs"]
mod util;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use util::smtp::{Mail, SmtpSink};
use util::{Sandbox, append, free_port, wait_until};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// After a pass at the new time: long enough for the rest of that pass (its review and alert
/// work), the one-second review tick and a mailer round (every two seconds).
const SETTLE: Duration = Duration::from_millis(2500);

/// How long a mail may take once it is due: the next mailer round, and the pass before it.
const MAIL_WAIT: Duration = Duration::from_secs(15);

const IDB: &str = "idb.roc.mutuelle-exemple.test";

/// One test at a time moves the clock; also starts the daemon's log on the test's output.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("info")).with_test_writer().try_init();
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A daemon's configuration (without the outputs): the annuaire read from a file every second
/// (and retried every second when it fails), "unreachable" after 2 h, reminders after 1 h, one
/// blocked-request alert an hour, alerts to `smtp`; then `extra` sections.
fn config(mode: &str, smtp: &SmtpSink, extra: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1s\"\npoll_jitter = \"0s\"\nbackoff_max = \"1s\"\n\
         unreachable_alert_after = \"2h\"\n\
         [review]\nmode = \"{mode}\"\nremind_after = \"1h\"\n\
         [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\nmax_per_hour = 1\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
         [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\nhelpdesk = [\"helpdesk@hopital.test\"]\nrssi = [\"rssi@hopital.test\"]\n\
         {extra}",
        smtp.addr.port()
    )
}

/// `rocsync::daemon::run` on a runtime of its own, in a thread of this process; stopped when
/// dropped.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// Kept open: a closed reload channel is not what the daemon runs with.
    _reload: tokio::sync::mpsc::Sender<()>,
}

impl InProcess {
    fn start(sb: &Sandbox) -> InProcess {
        let path = sb.path("rocsync.toml");
        let config = rocsync::config::Config::from_path(&path).expect("a valid configuration");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (reload, reloads) = tokio::sync::mpsc::channel::<()>(1);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
            let shutdown = async move {
                let _ = stopped.await;
            };
            runtime.block_on(rocsync::daemon::run(config, path, reloads, shutdown)).map_err(|e| format!("{e:#}"))
        });
        InProcess { stop: Some(stop), thread: Some(thread), _reload: reload }
    }

    /// Stops the daemon; `run` must return, and return well.
    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let thread = self.thread.take().expect("running");
        assert!(wait_until(Duration::from_secs(10), || thread.is_finished()), "run did not return after its shutdown");
        thread.join().expect("run did not panic").expect("run ends well");
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if wait_until(Duration::from_secs(10), || thread.is_finished()) {
                let _ = thread.join();
            }
        }
    }
}

fn subjects(mails: &[Mail]) -> Vec<String> {
    mails.iter().map(Mail::subject).collect()
}

/// The first mail whose subject `wanted` accepts, within [`MAIL_WAIT`].
fn wait_for_mail(smtp: &SmtpSink, what: &str, wanted: impl Fn(&str) -> bool) -> Mail {
    let mut found = None;
    wait_until(MAIL_WAIT, || {
        found = smtp.mails().into_iter().find(|m| wanted(m.subject().as_str()));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {what} within {MAIL_WAIT:?}: {:?}", subjects(&smtp.mails())))
}

/// The alert queue (`rocsync alerts --json`), newest first.
fn alerts(sb: &Sandbox) -> Vec<Value> {
    sb.json(&["alerts", "--json"]).as_array().cloned().unwrap_or_default()
}

/// The queued, sent or held alerts of `kind`.
fn raised(sb: &Sandbox, kind: &str) -> Vec<Value> {
    alerts(sb).into_iter().filter(|a| a["kind"] == kind).collect()
}

/// `status --json`'s last read of the annuaire.
fn last_read(sb: &Sandbox) -> Value {
    sb.json(&["status", "--json"])["last_source_read"].clone()
}

/// Moves the clock forward by `by`, waits for a pass that read the annuaire at the new time,
/// then [`SETTLE`]s: what that time makes due has been raised (and mailed) when this returns.
fn advance_and_settle(sb: &Sandbox, by: Duration) {
    rocsync::clock::advance(by);
    let mark = rocsync::clock::now();
    let read_since_mark = || last_read(sb)["at"].as_str().is_some_and(|at| at >= mark.as_str());
    assert!(wait_until(Duration::from_secs(15), read_since_mark), "no pass read the annuaire after the clock moved to {mark}");
    std::thread::sleep(SETTLE);
}

/// `n` Squid lines denying `host` to 198.18.1.20.
fn denied(host: &str, n: usize) -> String {
    (0..n).map(|i| format!("1763630{i:03}.000      0 198.18.1.20 TCP_DENIED/403 3921 CONNECT {host}:443 - HIER_NONE/- text/html\n")).collect()
}

/// The worker read the system's time while tests could not move it, so reminders were tested
/// only with `remind_after = "3s"` in a subprocess. With the clock: the review mail at once, no
/// reminder 59 minutes later, one past the hour, and the next one an hour after that.
#[test]
fn a_waiting_plan_is_reminded_once_remind_after_has_passed_on_the_clock_and_not_before() {
    let _serial = serial();
    let smtp = SmtpSink::start();
    let sb = Sandbox::with_config(&config("review", &smtp, ""));
    sb.set_answer("urls-v1.json");
    let daemon = InProcess::start(&sb);
    let review = wait_for_mail(&smtp, "review mail", |s| s == "[rocsync] Plan 1 à valider");
    assert_eq!(review.to, ["rssi@hopital.test"]);

    advance_and_settle(&sb, 59 * MINUTE);
    assert_eq!(raised(&sb, "reminder"), Vec::<Value>::new(), "no reminder before remind_after");
    assert_eq!(subjects(&smtp.mails()), ["[rocsync] Plan 1 à valider"]);

    rocsync::clock::advance(2 * MINUTE);
    let reminder = wait_for_mail(&smtp, "reminder", |s| s.starts_with("[rocsync] Rappel : le plan 1 attend depuis le"));
    assert_eq!(reminder.to, ["rssi@hopital.test"]);
    assert!(reminder.body().contains("rocsync approve 1"), "{}", reminder.body());

    // Once per period: a minute later, no second reminder; an hour later, the next one.
    advance_and_settle(&sb, MINUTE);
    assert_eq!(raised(&sb, "reminder").len(), 1, "{:?}", alerts(&sb));
    rocsync::clock::advance(HOUR);
    let again = || raised(&sb, "reminder").len() == 2;
    assert!(wait_until(MAIL_WAIT, again), "no second reminder an hour after the first: {:?}", alerts(&sb));
    let reminders = || subjects(&smtp.mails()).iter().filter(|s| s.starts_with("[rocsync] Rappel")).count();
    assert!(wait_until(MAIL_WAIT, || reminders() == 2), "{:?}", subjects(&smtp.mails()));
    daemon.stop();
}

/// Issue 12: the "annuaire unreachable" alert came after `unreachable_alert_after` of the
/// system's time only, and a mailbox outage once failed the whole pass (the alert then carried
/// the IMAP error). With the clock: IMAP down for longer than the delay raises nothing about the
/// annuaire; the annuaire gone raises nothing within the delay, and the alert once it is past.
#[test]
fn the_annuaire_unreachable_alert_waits_for_its_delay_and_a_mailbox_error_never_raises_it() {
    let _serial = serial();
    let smtp = SmtpSink::start();
    let closed = free_port();
    let imap = format!(
        "[notifications]\nenabled = true\nsource = \"imap\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n\
         [notifications.imap]\nserver = \"127.0.0.1\"\nport = {closed}\nsecurity = \"tls\"\nusername = \"rocsync\"\n\
         password = {{ file = \"imap.pass\" }}\ntimeout = \"2s\"\n"
    );
    let sb = Sandbox::with_config(&config("auto", &smtp, &imap));
    std::fs::write(sb.path("imap.pass"), "secret\n").unwrap();
    sb.set_answer("urls-v1.json");
    let daemon = InProcess::start(&sb);
    let mailbox_down = || {
        let status = sb.json(&["status", "--json"]);
        status["mailboxes"].as_array().is_some_and(|m| m.iter().any(|m| m["ok"] == false))
    };
    assert!(wait_until(Duration::from_secs(15), mailbox_down), "the IMAP server on a closed port is not seen failing");

    // The mailbox fails for three hours: the annuaire answers, and nobody is told otherwise.
    advance_and_settle(&sb, 3 * HOUR);
    assert_eq!(last_read(&sb)["ok"], true, "{}", last_read(&sb));
    assert!(mailbox_down(), "still failing");
    assert_eq!(raised(&sb, "unreachable"), Vec::<Value>::new(), "a mailbox error is not the annuaire's");

    // The annuaire goes; within `unreachable_alert_after` (2 h) nothing is said.
    std::fs::remove_file(sb.path("annuaire.json")).unwrap();
    assert!(wait_until(Duration::from_secs(15), || last_read(&sb)["ok"] == false), "the annuaire's read does not fail");
    advance_and_settle(&sb, 115 * MINUTE);
    assert_eq!(last_read(&sb)["ok"], false);
    assert_eq!(raised(&sb, "unreachable"), Vec::<Value>::new(), "not before unreachable_alert_after");

    // Past it: the alert, to the DSI and the RSSI.
    rocsync::clock::advance(10 * MINUTE);
    let down = wait_for_mail(&smtp, "unreachable alert", |s| s == "[rocsync] Annuaire AMC injoignable");
    assert_eq!(down.to, ["dsi@hopital.test", "rssi@hopital.test"]);
    let body = down.body();
    assert!(body.contains("annuaire.json"), "the error names the missing answer: {body}");
    assert!(!body.to_lowercase().contains("imap"), "the mailbox's error is not the annuaire's: {body}");
    daemon.stop();
}

/// Blocked-request alerts beyond `alerts.max_per_hour` are held, and the digest goes out only
/// when the hour has passed on the clock: a second alert about the same AMC within the hour is
/// held (not mailed), nothing goes half an hour later, one digest naming it after the hour.
#[test]
fn blocked_alerts_over_the_hourly_limit_are_held_and_go_out_as_one_digest_after_the_hour() {
    let _serial = serial();
    let smtp = SmtpSink::start();
    let watch = "[watch]\nsquid_access_log = \"squid/access.log\"\n";
    // No reminder of plan 1 while the hour passes: the mails here are the alerts'.
    let text = config("review", &smtp, watch).replace("remind_after = \"1h\"", "remind_after = \"30d\"");
    let sb = Sandbox::with_config(&text);
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, "");
    let daemon = InProcess::start(&sb);
    wait_for_mail(&smtp, "review mail", |s| s == "[rocsync] Plan 1 à valider");

    // A blocked IDB: queued, gathered for 10 s of the clock, then mailed.
    append(&log, &denied(IDB, 3));
    assert!(wait_until(Duration::from_secs(10), || raised(&sb, "blocked").len() == 1), "the blocked request is not queued: {:?}", alerts(&sb));
    rocsync::clock::advance(Duration::from_secs(11));
    let first = wait_for_mail(&smtp, "blocked alert", |s| s.contains("bloqu"));
    assert!(first.subject().contains(IDB), "{}", first.subject());

    // The same AMC within the hour, over the limit of one: held, not mailed.
    append(&log, &denied("clc.roc.mutuelle-exemple.test", 1));
    assert!(wait_until(Duration::from_secs(10), || raised(&sb, "blocked").len() == 2), "the second request is not queued: {:?}", alerts(&sb));
    rocsync::clock::advance(Duration::from_secs(11));
    let held = || raised(&sb, "blocked").iter().any(|a| a["status"] == "held");
    assert!(wait_until(Duration::from_secs(10), held), "not held over the limit: {:?}", alerts(&sb));

    // Half an hour later: still within the hour, no digest.
    advance_and_settle(&sb, 30 * MINUTE);
    assert!(held(), "{:?}", alerts(&sb));
    assert_eq!(raised(&sb, "digest"), Vec::<Value>::new(), "no digest within the hour");
    assert_eq!(subjects(&smtp.mails()).iter().filter(|s| s.contains("bloqu") || s.contains("retenues")).count(), 1, "{:?}", subjects(&smtp.mails()));

    // Past the hour: one digest, to everyone, naming what was held.
    rocsync::clock::advance(31 * MINUTE);
    let digest = wait_for_mail(&smtp, "digest", |s| s == "[rocsync] 1 alertes retenues par la limite horaire");
    assert_eq!(digest.to, ["dsi@hopital.test", "helpdesk@hopital.test", "rssi@hopital.test"]);
    assert!(digest.body().contains("clc.roc.mutuelle-exemple.test"), "{}", digest.body());
    assert!(raised(&sb, "blocked").iter().any(|a| a["status"] == "digested"), "{:?}", alerts(&sb));
    assert_eq!(raised(&sb, "digest").len(), 1, "one digest: {:?}", alerts(&sb));
    daemon.stop();
}
