//! `rocsync run` as one program (issue 12): a reload replaces the whole configuration
//! generation — each section is tested here against the running daemon (poll timing, `[http]`,
//! `[alerts]`, the Maildir watcher, a watched log added) — sources fail alone against the
//! running daemon, and `rocsync::daemon::run` runs in-process and stops when told.

#[path = "util/mod.rs"]
mod util;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use util::daemon::Daemon;
use util::smtp::SmtpSink;
use util::{OUTPUTS, Sandbox, append, blocked_total, deliver, fixture, free_port, http_get, wait_until};

/// A daemon's configuration (without the outputs): the annuaire read from a file once an hour,
/// alerts to the SMTP sink on `smtp_port` with `helpdesk` as the helpdesk's address, the HTTP
/// endpoint on `http_port`, then `extra` sections.
fn config(mode: &str, poll: &str, smtp_port: u16, helpdesk: &str, http_port: u16, extra: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"{poll}\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"{mode}\"\n\
         [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\nmax_per_hour = 20\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
         [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\nhelpdesk = [\"{helpdesk}\"]\nrssi = [\"rssi@hopital.test\"]\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n{extra}\n"
    )
}

/// Writes `text` (plus the outputs) as the configuration, sends SIGHUP, and waits until the
/// daemon says the new generation is in force.
fn reload(sb: &Sandbox, daemon: &Daemon, text: &str) {
    let done = |d: &Daemon| d.log().matches("Reload done").count();
    let before = done(daemon);
    sb.write_config(&format!("{text}\n{OUTPUTS}"));
    daemon.signal("-HUP");
    assert!(wait_until(Duration::from_secs(10), || done(daemon) > before), "no reload within 10 s: {}", daemon.log());
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).is_ok()
}

/// `n` Squid lines denying `host` to 198.18.1.20.
fn denied(host: &str, n: usize) -> String {
    (0..n).map(|i| format!("1763630{i:03}.000      0 198.18.1.20 TCP_DENIED/403 3921 CONNECT {host}:443 - HIER_NONE/- text/html\n")).collect()
}

fn plans(sb: &Sandbox) -> usize {
    sb.json(&["plan", "list", "--json"]).as_array().map_or(0, Vec::len)
}

const IDB: &str = "idb.roc.mutuelle-exemple.test";
const MAILDIR_NOTIFICATIONS: &str = "[notifications]\nenabled = true\nsource = \"maildir\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n";

/// `[http]` needed a restart: a new listen address serves within seconds of the SIGHUP, and the
/// old one is closed.
#[test]
fn sighup_moves_the_http_endpoint_the_new_address_serves_and_the_old_one_refuses() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let (old, new) = (free_port(), free_port());
    let sb = Sandbox::with_config(&config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", old, ""));
    sb.set_answer("urls-v1.json");
    let daemon = Daemon::start(&sb);
    assert!(http_get(old, "/roc-hosts.txt").contains(IDB), "the first address serves");
    reload(&sb, &daemon, &config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", new, ""));
    assert!(wait_until(Duration::from_secs(5), || http_get(new, "/roc-hosts.txt").contains(IDB)), "the new address serves: {}", daemon.log());
    assert!(wait_until(Duration::from_secs(5), || !accepts(old)), "the old address is closed");
}

/// A reload whose new listen address is taken stopped every service of the daemon (polls,
/// watchers, the endpoint) while its log said "Reload done": now the reload is refused whole,
/// the old address keeps serving, polls go on, and the audit log says why.
#[test]
fn a_reload_whose_listen_address_is_taken_is_refused_and_the_old_generation_keeps_running() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let old = free_port();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let sb = Sandbox::with_config(&config("auto", "2s", smtp.addr.port(), "helpdesk@hopital.test", old, ""));
    sb.set_answer("urls-v1.json");
    let daemon = Daemon::start(&sb);
    assert!(http_get(old, "/roc-hosts.txt").contains(IDB), "the first address serves");
    sb.write_config(&format!("{}\n{OUTPUTS}", config("auto", "2s", smtp.addr.port(), "helpdesk@hopital.test", busy, "")));
    daemon.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(10), || daemon.log().contains("the one loaded before stays in force")),
        "the reload is refused: {}",
        daemon.log()
    );
    assert!(!daemon.log().contains("Reload done"), "{}", daemon.log());
    assert!(wait_until(Duration::from_secs(5), || http_get(old, "/roc-hosts.txt").contains(IDB)), "the old address serves again: {}", daemon.log());
    let audit = sb.json(&["audit", "--json"]).to_string();
    assert!(audit.contains("config.reload_refused") && audit.contains("cannot start"), "{audit}");
    // Polls go on under the old configuration: a changed answer is applied within seconds.
    sb.set_answer("urls-v2.json");
    assert!(
        wait_until(Duration::from_secs(15), || sb.json(&["plan", "list", "--all", "--json"]).to_string().matches("\"applied\"").count() >= 2),
        "the schedule still runs: {}",
        daemon.log()
    );
    drop(taken);
}

/// `[alerts]` needed a restart: after a SIGHUP the next alert goes to the new SMTP server and
/// the new recipients, and none to the old server.
#[test]
fn sighup_sends_the_next_alert_to_the_new_smtp_server_and_recipients() {
    if !util::have("curl", false) {
        return;
    }
    let (first, second) = (SmtpSink::start(), SmtpSink::start());
    let port = free_port();
    let watch = "[watch]\nsquid_access_log = \"squid/access.log\"\n";
    let sb = Sandbox::with_config(&config("review", "1h", first.addr.port(), "helpdesk@hopital.test", port, watch));
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, &denied("old.example.test", 1));
    let daemon = Daemon::start(&sb);
    let mails = first.wait_for(1, Duration::from_secs(10));
    assert!(mails.iter().any(|m| m.subject() == "[rocsync] Plan 1 à valider"), "the review mail, by the first server: {mails:?}");
    reload(&sb, &daemon, &config("review", "1h", second.addr.port(), "helpdesk-nuit@hopital.test", port, watch));
    append(&log, &denied(IDB, 5));
    let mails = second.wait_for(1, Duration::from_secs(20));
    let blocked = mails.iter().find(|m| m.subject().contains("bloqu")).unwrap_or_else(|| panic!("no blocked alert by the new server: {mails:?}\n{}", daemon.log()));
    assert_eq!(blocked.to, ["dsi@hopital.test", "helpdesk-nuit@hopital.test"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(first.mails().len(), 1, "nothing more by the old server: {:?}", first.mails());
}

/// Poll timing needed a restart: the schedule of the old configuration (one poll an hour) kept
/// running. After a SIGHUP to 2 s, a changed answer is planned within seconds, unasked.
#[test]
fn sighup_changes_the_poll_timing() {
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, ""));
    sb.set_answer("urls-v1.json");
    let daemon = Daemon::start(&sb);
    assert_eq!(plans(&sb), 1);
    reload(&sb, &daemon, &config("auto", "2s", smtp.addr.port(), "helpdesk@hopital.test", port, ""));
    sb.set_answer("urls-v2.json");
    assert!(wait_until(Duration::from_secs(15), || plans(&sb) >= 2), "no poll within 15 s of a 2 s schedule: {}", daemon.log());
}

/// The Maildir watcher kept the old path after a SIGHUP: a message delivered to the new
/// Maildir woke nothing (with an hourly poll, it waited an hour).
#[test]
fn sighup_moves_the_maildir_watcher_to_its_new_path() {
    let smtp = SmtpSink::start();
    let port = free_port();
    let with_maildir = |path: &str| {
        config("review", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, &format!("{MAILDIR_NOTIFICATIONS}[notifications.maildir]\npath = \"{path}\"\n"))
    };
    let sb = Sandbox::with_config(&with_maildir("Maildir-a"));
    sb.set_answer("urls-v1.json");
    for dir in ["Maildir-a", "Maildir-b"] {
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(sb.path(dir).join(sub)).unwrap();
        }
    }
    let daemon = Daemon::start(&sb);
    reload(&sb, &daemon, &with_maildir("Maildir-b"));
    deliver(&sb.path("Maildir-b"), "1763630000.M1P1.mx.chu.test", std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    let recorded = || sb.json(&["notifications", "--json"]).as_array().map_or(0, Vec::len);
    assert!(wait_until(Duration::from_secs(15), || recorded() == 1), "the message in the new Maildir is not read: {}", daemon.log());
}

/// The watched logs were opened once: a Squid log added at a SIGHUP is followed from then on.
#[test]
fn sighup_adds_a_watched_log() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config("review", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, ""));
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, &denied(IDB, 2));
    let daemon = Daemon::start(&sb);
    reload(&sb, &daemon, &config("review", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, "[watch]\nsquid_access_log = \"squid/access.log\"\n"));
    append(&log, &denied(IDB, 4));
    assert!(wait_until(Duration::from_secs(10), || blocked_total(port) == 4), "the new log's lines are not read ({}): {}", blocked_total(port), daemon.log());
}

/// A broken file at a SIGHUP is refused with its reason, and the old generation (its HTTP
/// endpoint here) still serves.
#[test]
fn sighup_with_a_broken_file_is_refused_and_the_old_generation_still_serves() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, ""));
    sb.set_answer("urls-v1.json");
    let mut daemon = Daemon::start(&sb);
    sb.write_config(&format!("{}\n{OUTPUTS}", config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", free_port(), "[http]\nlistne = 1\n")));
    daemon.signal("-HUP");
    daemon.wait_log("SIGHUP: the configuration is refused", Duration::from_secs(5));
    assert!(!daemon.log().contains("Reload done"), "{}", daemon.log());
    assert!(daemon.alive());
    assert!(http_get(port, "/roc-hosts.txt").contains(IDB), "the old generation still serves");
}

/// Sources fail alone: with the IMAP server down, a changed annuaire is still read and applied,
/// and `status --json` puts the error on the mailbox, not on the annuaire.
#[test]
fn the_annuaire_change_is_applied_while_the_imap_server_is_down() {
    let smtp = SmtpSink::start();
    let (port, closed) = (free_port(), free_port());
    let imap = format!(
        "[notifications]\nenabled = true\nsource = \"imap\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n\
         [notifications.imap]\nserver = \"127.0.0.1\"\nport = {closed}\nsecurity = \"tls\"\nusername = \"rocsync\"\n\
         password = {{ file = \"imap.pass\" }}\ntimeout = \"2s\"\n"
    );
    let sb = Sandbox::with_config(&config("auto", "2s", smtp.addr.port(), "helpdesk@hopital.test", port, &imap));
    std::fs::write(sb.path("imap.pass"), "secret\n").unwrap();
    sb.set_answer("urls-v1.json");
    let daemon = Daemon::start(&sb);
    sb.set_answer("urls-v2.json");
    assert!(wait_until(Duration::from_secs(20), || plans(&sb) >= 2), "the annuaire's change is not planned with IMAP down: {}", daemon.log());
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["last_source_read"]["ok"], true, "{status}");
    let mailboxes = status["mailboxes"].as_array().cloned().unwrap_or_default();
    assert!(mailboxes.iter().any(|m| m["ok"] == false && m["error"].as_str().is_some_and(|e| !e.is_empty())), "the mailbox's error: {status}");
}

/// Sources fail alone: with the annuaire unreadable, a message delivered to the Maildir is
/// still read and recorded.
#[test]
fn mail_is_recorded_while_the_annuaire_is_down() {
    let smtp = SmtpSink::start();
    let port = free_port();
    let extra = format!("{MAILDIR_NOTIFICATIONS}[notifications.maildir]\npath = \"Maildir\"\n");
    let sb = Sandbox::with_config(&config("review", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, &extra));
    sb.set_answer("urls-v1.json");
    let root = util::maildir(&sb);
    let daemon = Daemon::start(&sb);
    std::fs::write(sb.path("annuaire.json"), "{ not an answer").unwrap();
    deliver(&root, "1763630001.M1P1.mx.chu.test", std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    let recorded = || sb.json(&["notifications", "--json"]).as_array().map_or(0, Vec::len);
    assert!(wait_until(Duration::from_secs(15), || recorded() == 1), "the message is not recorded with the annuaire down: {}", daemon.log());
    assert!(wait_until(Duration::from_secs(5), || sb.json(&["status", "--json"])["last_source_read"]["ok"] == false), "the annuaire's read failed");
}

/// `daemon::run` runs in-process (it owned the signals and could only be tested as a process):
/// it makes its first pass, and returns once its shutdown future completes.
#[test]
fn daemon_run_in_process_applies_and_stops_when_told() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let config = rocsync::config::Config::from_path(&sb.path("rocsync.toml")).expect("a valid configuration");
    let path = sb.path("rocsync.toml");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_reload, reloads) = tokio::sync::mpsc::channel::<()>(1);
    let daemon = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(rocsync::daemon::run(config, path, reloads, async move {
            let _ = stopped.await;
        }))
    });
    assert!(wait_until(Duration::from_secs(10), || sb.path("out/hosts.txt").exists()), "the first pass applied");
    assert!(sb.read("out/hosts.txt").contains(IDB));
    stop.send(()).unwrap();
    assert!(wait_until(Duration::from_secs(5), || daemon.is_finished()), "run did not return after its shutdown");
    daemon.join().unwrap().expect("run ends well");
}

/// Turning `[resolver]` on at a SIGHUP started no refresh tick: the hosts in force were
/// resolved only at the next pass (an hour later here). Against dnsmasq on loopback.
#[test]
fn sighup_turning_the_resolver_on_starts_its_refresh() {
    if !util::have("dnsmasq", false) {
        return;
    }
    let dns = util::dnsmasq::Dnsmasq::start(&format!("198.18.0.10 {IDB}\n"), 1);
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, ""));
    sb.set_answer("urls-v1.json");
    let daemon = Daemon::start(&sb);
    let resolver = format!("[resolver]\nenabled = true\nservers = [\"{}\"]\nmin_ttl = \"1s\"\ntimeout = \"2s\"\n", dns.server());
    reload(&sb, &daemon, &config("auto", "1h", smtp.addr.port(), "helpdesk@hopital.test", port, &resolver));
    let resolved = || sb.json(&["status", "--json"])["resolver"]["hosts_resolved"].as_u64().unwrap_or(0);
    assert!(wait_until(Duration::from_secs(15), || resolved() >= 1), "no address resolved after the resolver was turned on: {}", daemon.log());
}
