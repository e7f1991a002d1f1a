//! `rocsync run` as a process: review e-mails and approvals while it runs, blocked requests in
//! a followed Squid log becoming one alert per burst, log rotation both ways, an SMTP outage,
//! SIGKILL and restart, SIGHUP with a broken configuration. The SMTP server is a fake on
//! loopback (tests/util/smtp.rs): receiving and failing on demand is its point.

mod util;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::Sandbox;
use util::daemon::Daemon;
use util::smtp::SmtpSink;
use util::{append, blocked_total, free_port, http_get, wait_until};

fn config(smtp: &SmtpSink, mode: &str, http_port: u16) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"{mode}\"\n\
         [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\nmax_per_hour = 20\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
         [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\nhelpdesk = [\"helpdesk@hopital.test\"]\nrssi = [\"rssi@hopital.test\"]\n\
         [watch]\nsquid_access_log = \"squid/access.log\"\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:{http_port}\"\n",
        smtp.addr.port()
    )
}

/// `n` Squid lines denying `host` to `client`, each with a later time than the last.
fn denied(host: &str, client: &str, n: usize) -> String {
    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_763_630_000_000);
    (0..n)
        .map(|_| {
            let ms = CLOCK.fetch_add(37, std::sync::atomic::Ordering::Relaxed);
            format!("{}.{:03}      0 {client} TCP_DENIED/403 3921 CONNECT {host}:443 - HIER_NONE/- text/html\n", ms / 1000, ms % 1000)
        })
        .collect()
}


#[test]
fn review_mail_then_approval_from_the_cli_applies_in_the_running_daemon() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config(&smtp, "review", port));
    sb.set_answer("urls-v1.json");
    let mut daemon = Daemon::start(&sb);
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    let review = mails.iter().find(|m| m.subject() == "[rocsync] Plan 1 à valider").unwrap_or_else(|| panic!("{mails:?}"));
    assert_eq!(review.to, ["rssi@hopital.test"]);
    let body = review.body();
    assert!(body.contains("MUTUELLE EXEMPLE (123456789)"), "{body}");
    // The same lines as `rocsync plan show` prints: host, ports, services.
    let line = body.lines().find(|l| l.trim_start().starts_with("+ idb.roc.mutuelle-exemple.test")).unwrap_or_else(|| panic!("{body}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["+", "idb.roc.mutuelle-exemple.test", "tcp/443", "IDB"], "{body}");
    assert!(body.contains("Approuver : rocsync approve 1 --by NOM"), "{body}");
    assert!(!sb.path("out/hosts.txt").exists(), "nothing applied before approval");

    let started = Instant::now();
    let out = sb.ok(&["approve", "1", "--by", "J. Martin (RSSI)"]);
    assert!(out.contains("The running rocsync (pid"), "{out}");
    assert!(wait_until(Duration::from_secs(5), || sb.path("out/hosts.txt").exists()), "applied within 5 s");
    let took = started.elapsed();
    eprintln!("approval to files in force: {took:?}");
    assert!(sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test"));
    let plan = sb.json(&["plan", "show", "1", "--format", "json"]);
    assert_eq!(plan["status"], "applied", "{plan}");
    // The HTTP endpoint serves the list now in force, with an ETag.
    assert!(http_get(port, "/roc-hosts.txt").contains("idb.roc.mutuelle-exemple.test\n"));
    assert!(daemon.stop().success());
    assert!(daemon.log().contains("Stopped."));
    assert_eq!(smtp.mails().len(), 1, "one review mail, no more: {:?}", smtp.mails());
}

#[test]
fn a_plan_left_waiting_is_reminded_once_per_period() {
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config(&smtp, "review", port).replace("[review]\n", "[review]\nremind_after = \"3s\"\n"));
    sb.set_answer("urls-v1.json");
    let _daemon = Daemon::start(&sb);
    let mails = smtp.wait_for(2, Duration::from_secs(15));
    let subjects: Vec<String> = mails.iter().map(|m| m.subject()).collect();
    assert_eq!(subjects[0], "[rocsync] Plan 1 à valider", "{subjects:?}");
    assert!(subjects.get(1).is_some_and(|s| s.starts_with("[rocsync] Rappel : le plan 1 attend depuis le")), "{subjects:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(smtp.mails().len(), 2, "not before the next period");
}

#[test]
fn a_burst_of_blocked_idb_requests_is_one_alert_and_rotation_loses_nothing() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config(&smtp, "review", port));
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, &denied("old.example.test", "198.18.1.9", 5));
    let _daemon = Daemon::start(&sb);
    smtp.wait_for(1, Duration::from_secs(10)); // the review mail of plan 1
    let started = Instant::now();
    // A patient's IDB call, retried a hundred times by the billing software.
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 100));
    append(&log, &denied("www.example-news.test", "198.18.1.21", 3));
    let mails = smtp.wait_for(2, Duration::from_secs(60));
    eprintln!("first blocked request to alert: {:?}", started.elapsed());
    let blocked: Vec<_> = mails.iter().filter(|m| m.subject().contains("bloqu")).collect();
    assert_eq!(blocked.len(), 1, "{mails:?}");
    let alert = blocked[0];
    assert_eq!(alert.subject(), "[rocsync] Requêtes IDB bloquées vers MUTUELLE EXEMPLE (123456789) (idb.roc.mutuelle-exemple.test)");
    assert_eq!(alert.to, ["dsi@hopital.test", "helpdesk@hopital.test"]);
    let body = alert.body();
    assert!(body.contains("Nombre de requêtes : 100,"), "{body}");
    assert!(body.contains("Poste client : 198.18.1.20"), "{body}");
    assert!(body.contains("rocsync approve 1 --by NOM"), "the plan that would open it: {body}");
    assert!(wait_until(Duration::from_secs(5), || blocked_total(port) == 100), "old lines are not read; {}", blocked_total(port));

    // Rotation by rename while requests keep being blocked, then by copytruncate.
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 30));
    std::fs::rename(&log, sb.path("squid/access.log.1")).unwrap();
    append(&sb.path("squid/access.log.1"), &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 7));
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 30));
    assert!(wait_until(Duration::from_secs(5), || blocked_total(port) == 167), "{}", blocked_total(port));
    std::fs::copy(&log, sb.path("squid/access.log.2")).unwrap();
    std::fs::write(&log, "").unwrap();
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 30));
    assert!(wait_until(Duration::from_secs(5), || blocked_total(port) == 197), "{}", blocked_total(port));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(blocked_total(port), 197, "nothing counted twice");
    assert_eq!(smtp.mails().iter().filter(|m| m.subject().contains("bloqu")).count(), 1, "no flood");
}

/// Review mails counted against `alerts.max_per_hour` held an IDB "Filtrage cassé" alert back
/// for the hourly digest. The limit counts blocked-request alerts only, and an AMC not yet
/// alerted this hour is never held behind alerts about others.
#[test]
fn review_mails_and_other_amcs_never_hold_back_a_blocked_alert() {
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config(&smtp, "review", port).replace("max_per_hour = 20", "max_per_hour = 1"));
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, "");
    let _daemon = Daemon::start(&sb);
    smtp.wait_for(1, Duration::from_secs(10)); // the review mail of plan 1: not a blocked alert
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 3));
    append(&log, &denied("ws.caisse-solidaire.test", "198.18.1.21", 2));
    let mails = smtp.wait_for(3, Duration::from_secs(40));
    let blocked: Vec<String> = mails.iter().map(|m| m.subject()).filter(|s| s.contains("bloqu")).collect();
    assert_eq!(blocked.len(), 2, "both AMCs alerted although the limit is 1: {blocked:?}");
    assert!(blocked.iter().any(|s| s.contains("MUTUELLE EXEMPLE")) && blocked.iter().any(|s| s.contains("CAISSE SOLIDAIRE")), "{blocked:?}");
    // The same AMC again within the hour, over the limit: held for the digest, not mailed.
    append(&log, &denied("clc.roc.mutuelle-exemple.test", "198.18.1.20", 1));
    assert!(wait_until(Duration::from_secs(30), || sb.ok(&["alerts", "--json"]).contains("\"held\"")), "{}", sb.ok(&["alerts"]));
    assert_eq!(smtp.mails().len(), 3, "{:?}", smtp.mails().iter().map(|m| m.subject()).collect::<Vec<_>>());
}

#[test]
fn an_smtp_outage_and_a_sigkill_lose_no_alert_and_send_none_twice() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    smtp.set_down(true);
    let port = free_port();
    let sb = Sandbox::with_config(&config(&smtp, "review", port));
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, "");
    let mut daemon = Daemon::start(&sb);
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 10));
    daemon.wait_log("Alert not sent, kept for later", Duration::from_secs(10));
    // Killed without warning while two alerts wait in the queue.
    assert!(wait_until(Duration::from_secs(15), || daemon.log().matches("Alert not sent").count() >= 2), "{}", daemon.log());
    daemon.kill9();
    append(&log, &denied("idb.roc.mutuelle-exemple.test", "198.18.1.20", 5));
    smtp.set_down(false);
    let _again = Daemon::start(&sb);
    let mails = smtp.wait_for(2, Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(3));
    let mails_after = smtp.mails();
    assert_eq!(mails_after.len(), 2, "the review and the blocked alert, once each: {mails:?}");
    let ids: BTreeSet<String> = mails_after.iter().filter_map(|m| m.header("Message-ID")).collect();
    assert_eq!(ids.len(), 2);
    let blocked = mails_after.iter().find(|m| m.subject().contains("bloqu")).expect("blocked alert");
    assert!(blocked.body().contains("Nombre de requêtes : "), "{}", blocked.body());
    // The lines written while rocsync was dead are read after the restart, not lost: counted in
    // the alert if it had not gone yet, or after it.
    let queue = sb.json(&["alerts", "--json"]);
    let row = queue.as_array().unwrap().iter().find(|a| a["kind"] == "blocked").expect("blocked alert in the queue");
    assert_eq!(row["status"], "sent", "{queue}");
    assert_eq!(row["count"].as_u64().unwrap() + row["after_sent"].as_u64().unwrap(), 15, "{queue}");
    assert!(sb.ok(&["alerts"]).contains("sent"));
}

#[test]
fn sighup_with_a_broken_configuration_keeps_the_old_one() {
    if !util::have("curl", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let port = free_port();
    let sb = Sandbox::with_config(&config(&smtp, "auto", port));
    sb.set_answer("urls-v1.json");
    let mut daemon = Daemon::start(&sb);
    let good = std::fs::read_to_string(sb.path("rocsync.toml")).unwrap();
    std::fs::write(sb.path("rocsync.toml"), good.replace("[review]", "[review]\nmood = \"auto\"")).unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("SIGHUP: the configuration is refused", Duration::from_secs(5));
    assert!(daemon.log().contains("mood"), "the reason is logged: {}", daemon.log());
    assert!(daemon.alive());
    assert!(http_get(port, "/metrics").contains("rocsync_hosts_in_force 12"), "still serving on the old configuration");
    // A good file is taken.
    std::fs::write(sb.path("rocsync.toml"), good.replace("metrics = true", "").replace("[http]\n", "[http]\nmetrics = false\n")).unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("reloaded", Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(3), || http_get(port, "/metrics").contains("not found")));
    assert!(daemon.stop().success());
}

/// The annuaire answer listing `amcs` (number, IDB host).
#[cfg(feature = "netlink")]
fn answer_for(amcs: &[(&str, &str)]) -> util::annuaire_server::Reply {
    let body = util::answer_json(amcs);
    util::annuaire_server::Reply::Answer { body: body.into_bytes(), content_type: "application/json".into(), etag: format!("\"{}\"", amcs.len()) }
}

/// End to end, as root, in namespaces the test creates: the daemon in a router namespace, with
/// a real annuaire over mutual TLS, real nftables (managed forward chain), a real DNS server
/// and an SMTP receiver there; a client and a server namespace on either side.
#[test]
#[cfg(feature = "netlink")]
fn end_to_end_in_namespaces_auto_then_review() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    use util::annuaire_server::{AnnuaireServer, Ca, write};
    use util::lab::{Lab, in_netns};
    let lab = Lab::new("e2e", &["idb.a.test", "idb.b.test", "idb.c.test"]);
    for addr in ["198.18.2.11", "198.18.2.12", "198.18.2.13"] {
        lab.serve(addr.parse().unwrap());
    }
    let router = lab.router.0.clone();
    let dns = util::dnsmasq::Dnsmasq::start_in(Some(&router), "198.18.2.11 idb.a.test\n198.18.2.12 idb.b.test\n198.18.2.13 idb.c.test\n", 1);
    let (igc_sante, igc_osi) = (Ca::new("Fake IGC-Sante"), Ca::new("Fake IGC OSI"));
    let server_leaf = igc_osi.leaf("annuaire-amc.test", -1, 365);
    let client = igc_sante.leaf("CHU EXEMPLE ORG AUTH_CLI", -10, 1000);
    let annuaire = in_netns(&router, || AnnuaireServer::start(&server_leaf, &igc_sante, answer_for(&[("111111111", "idb.a.test")])));
    let smtp = in_netns(&router, SmtpSink::start);
    let text = |mode: &str| {
        format!(
            "[annuaire]\nurl = \"{}\"\nclient_pkcs12 = \"hospital.p12\"\nclient_password = {{ file = \"p12.pass\" }}\n\
             ca_bundle = \"igc-osi.pem\"\npoll_interval = \"3s\"\npoll_jitter = \"0s\"\n\
             [review]\nmode = \"{mode}\"\nmax_removal_percent = 100\n\
             [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\n\
             [nftables]\nenabled = true\nmode = \"managed\"\nhook = \"forward\"\n\
             [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
             [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
             [alerts.recipients]\nrssi = [\"rssi@hopital.test\"]\ndsi = [\"dsi@hopital.test\"]\n",
            annuaire.url(),
            dns.server(),
            smtp.addr.port()
        )
    };
    let sb = Sandbox::with_config(&text("auto"));
    write(sb.dir.path(), "hospital.p12", client.pkcs12(&igc_sante, "pw", false));
    write(sb.dir.path(), "p12.pass", "pw\n");
    write(sb.dir.path(), "igc-osi.pem", &igc_osi.pem);
    let mut daemon = Daemon::start_in(&sb, Some(&router));
    assert!(lab.reaches("198.18.2.11", "idb.a.test"), "in force once READY");
    assert!(!lab.reaches("198.18.2.12", "idb.b.test"));

    // auto: a new AMC in the annuaire is reachable within one poll interval plus 2 s.
    annuaire.set(answer_for(&[("111111111", "idb.a.test"), ("222222222", "idb.b.test")]));
    let changed = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || lab.reaches("198.18.2.12", "idb.b.test")), "{}", daemon.log());
    eprintln!("annuaire change to rule in force (auto, 3 s poll): {:?}", changed.elapsed());

    // review, by SIGHUP: the plan e-mail arrives, and an approval opens the host within 5 s.
    std::fs::write(sb.path("rocsync.toml"), format!("{}\n{}", text("review"), util::OUTPUTS)).unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("reloaded", Duration::from_secs(5));
    annuaire.set(answer_for(&[("111111111", "idb.a.test"), ("222222222", "idb.b.test"), ("333333333", "idb.c.test")]));
    let mails = smtp.wait_for(1, Duration::from_secs(15));
    let review = mails.iter().find(|m| m.subject().contains("à valider")).unwrap_or_else(|| panic!("{mails:?}\n{}", daemon.log()));
    let plan = review.subject().split_whitespace().nth(2).unwrap().to_owned();
    assert!(!lab.reaches("198.18.2.13", "idb.c.test"), "waits for approval");
    sb.ok(&["approve", &plan, "--by", "J. Martin (RSSI)"]);
    let approved = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || lab.reaches("198.18.2.13", "idb.c.test")), "{}", daemon.log());
    eprintln!("approval to rule in force: {:?}", approved.elapsed());
    assert!(lab.reaches("198.18.2.11", "idb.a.test") && lab.reaches("198.18.2.12", "idb.b.test"));
    assert!(daemon.stop().success());
    // Stopped: what was in force stays in force.
    assert!(lab.reaches("198.18.2.13", "idb.c.test"));
    let ruleset = lab.router.nft_ok(&["list", "table", "inet", "rocsync"]);
    assert!(ruleset.contains("198.18.2.13 . 443"), "{ruleset}");
}

/// One kernel message in journal export format, for systemd-journal-remote.
fn journal_entry(seq: u64, dst: &str) -> String {
    format!(
        "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_TRANSPORT=kernel\n\
         _HOSTNAME=fw1\nSYSLOG_IDENTIFIER=kernel\n\
         MESSAGE=rocsync-drop: IN= OUT=eth1 SRC=198.18.1.20 DST={dst} LEN=60 PROTO=TCP SPT={} DPT=443 SYN\n\n",
        1_763_630_101_000_000u64 + seq * 1_000_000,
        1000 + seq * 1000,
        50_000 + seq
    )
}

/// Writes entries into a real journal file (systemd-journal-remote appends to it).
fn journal_write(dir: &std::path::Path, entries: &str) {
    let mut child = Command::new("/lib/systemd/systemd-journal-remote")
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote");
    child.stdin.take().unwrap().write_all(entries.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn nftables_drops_in_the_journal_raise_an_alert_from_where_it_stopped() {
    if !util::have("journalctl", false) || !util::have("/lib/systemd/systemd-journal-remote", false) {
        return;
    }
    let smtp = SmtpSink::start();
    let port = free_port();
    let text = config(&smtp, "auto", port).replace("squid_access_log = \"squid/access.log\"", "journal = true\njournal_directory = \"journal\"");
    let sb = Sandbox::with_config(&text);
    sb.set_answer("urls-v1.json");
    let dir = sb.path("journal");
    std::fs::create_dir_all(&dir).unwrap();
    journal_write(&dir, &journal_entry(0, "198.18.3.40"));
    let mut daemon = Daemon::start(&sb);
    daemon.wait_log("Following the journal", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    journal_write(&dir, &(journal_entry(1, "198.18.3.40") + &journal_entry(2, "198.18.3.40")));
    let mails = smtp.wait_for(1, Duration::from_secs(30));
    let alert = mails.iter().find(|m| m.subject().contains("bloqu")).unwrap_or_else(|| panic!("{mails:?}\n{}", daemon.log()));
    let body = alert.body();
    assert!(body.contains("198.18.3.40") && body.contains("aucun hôte connu"), "{body}");
    assert!(body.contains("Nombre de requêtes : 2,"), "the entry older than the start is not read: {body}");
    assert!(daemon.stop().success());
    // The cursor is in the store: a restart reads what came since, not the start again.
    journal_write(&dir, &journal_entry(3, "198.18.3.41"));
    let _again = Daemon::start(&sb);
    let mails = smtp.wait_for(2, Duration::from_secs(30));
    let second = mails.iter().filter(|m| m.subject().contains("bloqu")).nth(1).unwrap_or_else(|| panic!("{mails:?}"));
    assert!(second.body().contains("198.18.3.41") && second.body().contains("Nombre de requêtes : 1,"), "{}", second.body());
}

/// Under systemd, a stop waited for the next watchdog ping (half of `WatchdogSec=5min`), longer
/// than `TimeoutStopSec`, and ended in SIGKILL. Started as systemd starts it (a notify socket and
/// a watchdog period), SIGTERM must end the run within seconds.
#[test]
fn sigterm_ends_the_run_within_seconds_whatever_the_watchdog_timer() {
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\n[review]\nmode = \"auto\"\n");
    sb.set_answer("urls-v1.json");
    let socket_path = sb.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut daemon = Daemon::start_with_env(&sb, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "300000000")]);
    let mut buf = [0u8; 512];
    let mut said = String::new();
    while !said.contains("READY=1") {
        let n = socket.recv(&mut buf).expect("the daemon tells systemd it is ready");
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = daemon.stop();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    while let Ok(n) = socket.recv(&mut buf) {
        said.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(said.contains("WATCHDOG=1") && said.contains("STOPPING=1"), "{said}");
}

