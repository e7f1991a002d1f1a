//! Issue 15: which openings are used, and the move to the national reverse proxy (RPN ROC).
//! `rocsync run` follows a Squid access.log written as Squid writes it (native format, one line
//! per request, rotated by rename); the reports read what it counted. The migration runs end
//! to end on the bundled sample on a simulated clock (`ROCSYNC_TEST_NOW`, read only by
//! `rocsync::usage::now`).

#[path = "util/mod.rs"]
mod util;

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use util::Sandbox;
use util::daemon::Daemon;
use util::smtp::SmtpSink;
use util::wait_until;

const DAY: i64 = 86_400;

/// A line as Squid's native `access.log` format writes it.
fn squid_line(at: i64, client: &str, result: &str, host: &str) -> String {
    format!("{at}.123    187 {client} {result} 5120 CONNECT {host}:443 - HIER_DIRECT/198.18.3.40 -\n")
}

fn append(path: &std::path::Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(lines.concat().as_bytes()).unwrap();
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn opening<'a>(report: &'a Value, host: &str) -> &'a Value {
    report["openings"].as_array().unwrap().iter().find(|o| o["host"] == host).unwrap_or_else(|| panic!("{host} in {report:#}"))
}

fn requests(sb: &Sandbox, host: &str) -> u64 {
    opening(&sb.json(&["report", "openings", "--json"]), host)["requests_30d"].as_u64().unwrap()
}

/// Allowed requests are counted like denied ones, per opening, and a rotation (the log renamed,
/// a new one started) or a restart loses none and counts none twice: the counts are stored in
/// the transaction that moves the log's position.
#[test]
fn allowed_requests_are_counted_once_across_rotation_and_restart() {
    let sb = Sandbox::with_config(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\n[review]\nmode = \"auto\"\n\
         [watch]\nsquid_access_log = \"squid/access.log\"\n",
    );
    sb.set_answer("urls-v1.json");
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    std::fs::write(&log, "").unwrap();
    sb.ok(&["once"]);
    let mut daemon = Daemon::start(&sb);

    let t = unix_now() - 3600;
    let idb = "idb.roc.mutuelle-exemple.test";
    let hit = |i: i64| squid_line(t + i, "198.18.1.20", "TCP_TUNNEL/200", idb);
    append(&log, &[hit(0), hit(1), hit(2), squid_line(t + 3, "198.18.1.21", "TCP_DENIED/403", idb), squid_line(t + 4, "198.18.1.20", "TCP_TUNNEL/200", "www.example-news.test")]);
    assert!(wait_until(Duration::from_secs(20), || requests(&sb, idb) == 3), "{}", daemon.log());

    // Rotation by rename, lines at the end of the old file and in the new one.
    append(&log, &[hit(10), hit(11)]);
    std::fs::rename(&log, sb.path("squid/access.log.1")).unwrap();
    append(&log, &[hit(20), hit(21), hit(22), hit(23)]);
    assert!(wait_until(Duration::from_secs(20), || requests(&sb, idb) == 9), "{}", daemon.log());

    // Stopped, the log grows; started again, it reads on from where it stopped.
    daemon.stop();
    append(&log, &[hit(30), hit(31)]);
    let daemon = Daemon::start(&sb);
    assert!(wait_until(Duration::from_secs(20), || requests(&sb, idb) == 11), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(1500));
    let report = sb.json(&["report", "openings", "--json"]);
    let o = opening(&report, idb);
    assert_eq!((o["requests_30d"].as_u64(), o["blocked_30d"].as_u64()), (Some(11), Some(1)), "neither lost nor doubled: {o:#}");
    assert!(o["last_used"].is_string() && report["since"].is_string(), "{report:#}");
    assert_eq!(o["amcs"], serde_json::json!(["123456789"]));
    let quiet = opening(&report, "clc.roc.mutuelle-exemple.test");
    assert!(quiet["last_used"].is_null());
    assert_eq!(quiet["unused"], false, "rocsync has watched for minutes: nothing is unused for 90 days yet");
    assert!(report["openings"].as_array().unwrap().iter().all(|o| o["host"] != "www.example-news.test"), "the web at large is not counted");
    // The keys the issue names, and nothing else.
    let keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = ["host", "wildcard", "ports", "amcs", "services", "in_force_since", "last_used", "requests_30d", "blocked_30d", "unused"];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected);

    let csv = sb.ok(&["report", "openings", "--csv"]);
    assert!(csv.starts_with("host,wildcard,ports,amcs,services,in_force_since,last_used,requests_30d,blocked_30d,unused\n"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with(idb) && l.contains(",11,1,false")), "{csv}");
}

/// The migration on the bundled sample: the GAP is re-pointed to the RPN on `switched_on`;
/// day by day traffic moves to the RPN host, except two AMCs still reached directly. On day 20
/// `plan --rpn-migration` proposes closings only for the AMCs gone quiet for 14 days; in auto
/// mode the plan waits; approved, the closings apply and stay closed when the annuaire is read
/// again; a direct request afterwards is blocked and the alert says to re-point the client.
#[test]
fn the_rpn_migration_closes_only_quiet_amcs_and_keeps_them_closed() {
    let smtp = SmtpSink::start();
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"auto\"\nmax_removal_percent = 100\nmax_removal_hosts = 1000\n\
         [rpn]\nenabled = true\nhost = \"rpn.roc.test:443\"\nswitched_on = \"2026-03-02\"\nquiet_period = \"14d\"\n\
         [alerts]\nenabled = true\nlanguage = \"en\"\nfrom = \"rocsync@hopital.test\"\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
         [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\nhelpdesk = [\"helpdesk@hopital.test\"]\nrssi = [\"rssi@hopital.test\"]\n\
         [watch]\nsquid_access_log = \"squid/access.log\"\n",
        smtp.addr.port()
    ));
    std::fs::copy(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/annuaire-urls.json"), sb.path("annuaire.json")).unwrap();
    std::fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    std::fs::write(&log, "").unwrap();
    sb.ok(&["once"]);
    let hosts = sb.read("out/hosts.txt");
    assert!(hosts.contains("rpn.roc.test") && hosts.contains("ws.caisse-solidaire.test"), "{hosts}");

    let switch = 1_772_409_600; // 2026-03-02T00:00:00Z
    let day20 = (switch + 20 * DAY + 12 * 3600).to_string();
    let now = [("ROCSYNC_TEST_NOW", day20.as_str())];
    let daemon = Daemon::start_with_env(&sb, &now);

    // Before the switch everybody goes direct; it does not count.
    let mut lines = vec![squid_line(switch - 3 * DAY, "198.18.1.20", "TCP_TUNNEL/200", "ws.caisse-solidaire.test")];
    for d in 0..=20 {
        let at = switch + d * DAY + 9 * 3600;
        lines.push(squid_line(at, "198.18.1.20", "TCP_TUNNEL/200", "rpn.roc.test"));
        if d <= 2 {
            lines.push(squid_line(at + 60, "198.18.1.30", "TCP_TUNNEL/200", "ws.caisse-solidaire.test"));
        }
        if d <= 17 {
            lines.push(squid_line(at + 120, "198.18.1.40", "TCP_TUNNEL/200", "idb.roc.mutuelle-exemple.test"));
        }
        if d <= 18 {
            lines.push(squid_line(at + 180, "198.18.1.77", "TCP_TUNNEL/200", "roc-idb.prevoyance-artisans.test"));
        }
    }
    append(&log, &lines);
    let rpn_report = || {
        let out = sb.cmd().args(["report", "rpn", "--json"]).env("ROCSYNC_TEST_NOW", &day20).output().unwrap();
        assert!(out.status.success(), "{}", util::stderr(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert!(wait_until(Duration::from_secs(20), || rpn_report()["rpn_requests"] == 21), "{}", daemon.log());
    let report = rpn_report();
    let amc = |n: &str| report["amcs"].as_array().unwrap().iter().find(|a| a["amc"] == n).unwrap_or_else(|| panic!("{n} in {report:#}")).clone();
    assert_eq!(amc("234567891")["closable"], true, "quiet since day 2: {report:#}");
    assert_eq!(amc("234567891")["direct_requests"], 3, "the request before the switch does not count");
    assert_eq!(amc("123456789")["closable"], false, "used directly on day 17");
    let artisans = amc("345678912");
    assert_eq!(artisans["closable"], false);
    assert_eq!(artisans["clients"][0]["client"], "198.18.1.77", "the workstation still going direct is named");

    let out = sb.cmd().args(["plan", "--rpn-migration"]).env("ROCSYNC_TEST_NOW", &day20).output().unwrap();
    assert!(out.status.success(), "{}{}", util::stdout(&out), util::stderr(&out));
    let plans = sb.json(&["plan", "list", "--json"]);
    let open: Vec<&Value> = plans.as_array().unwrap().iter().filter(|p| p["status"] == "pending").collect();
    assert_eq!(open.len(), 1, "one plan waits, in auto mode: {plans:#}");
    let id = open[0]["id"].as_i64().unwrap().to_string();
    let plan = sb.json(&["plan", "show", &id, "--format", "json"]);
    let removed: Vec<&str> = plan["removed"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert!(removed.contains(&"ws.caisse-solidaire.test"), "{plan:#}");
    for kept in ["idb.roc.mutuelle-exemple.test", "roc-idb.prevoyance-artisans.test", "rpn.roc.test"] {
        assert!(!removed.contains(&kept), "{kept} must stay: {plan:#}");
    }
    let reasons = plan["reasons"].to_string();
    assert!(reasons.contains("RPN migration") && reasons.contains("ws.caisse-solidaire.test (last direct use: 2026-03-04T09:01:00Z)"), "{reasons}");

    sb.ok(&["approve", &id, "--by", "J. Martin (RSSI)"]);
    assert!(wait_until(Duration::from_secs(20), || !sb.read("out/hosts.txt").contains("ws.caisse-solidaire.test")), "{}", daemon.log());
    // The annuaire is read again: the migrated AMC stays closed, nothing new waits.
    let out = sb.cmd().args(["once"]).env("ROCSYNC_TEST_NOW", &day20).output().unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let hosts = sb.read("out/hosts.txt");
    assert!(!hosts.contains("ws.caisse-solidaire.test"), "{hosts}");
    assert!(hosts.contains("rpn.roc.test") && hosts.contains("idb.roc.mutuelle-exemple.test"), "{hosts}");
    let plans = sb.json(&["plan", "list", "--json"]);
    assert!(plans.as_array().unwrap().iter().all(|p| p["status"] != "pending"), "{plans:#}");

    // A workstation forgotten: its direct request is blocked, and the alert says what to do.
    append(&log, &[squid_line(switch + 20 * DAY + 10 * 3600, "198.18.1.55", "TCP_DENIED/403", "ws.caisse-solidaire.test")]);
    let found = wait_until(Duration::from_secs(40), || {
        smtp.mails().iter().any(|m| m.body().contains("this client (198.18.1.55) still goes direct; re-point it to the RPN"))
    });
    assert!(found, "mails: {:?}\n{}", smtp.mails().iter().map(|m| m.subject()).collect::<Vec<_>>(), daemon.log());
}
