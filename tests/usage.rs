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
    // rocsync has watched the proxy's log since before the switch: an AMC is quiet only for as
    // long as rocsync has counted. Before the switch everybody goes direct; it does not count.
    let before = (switch - 4 * DAY).to_string();
    let mut watching = Daemon::start_with_env(&sb, &[("ROCSYNC_TEST_NOW", before.as_str())]);
    append(&log, &[squid_line(switch - 3 * DAY, "198.18.1.20", "TCP_TUNNEL/200", "ws.caisse-solidaire.test")]);
    assert!(
        wait_until(Duration::from_secs(20), || sb.json(&["report", "openings", "--json"])["since"].is_string()),
        "counting began: {}",
        watching.log()
    );
    watching.stop();

    let day20 = (switch + 20 * DAY + 12 * 3600).to_string();
    let now = [("ROCSYNC_TEST_NOW", day20.as_str())];
    let daemon = Daemon::start_with_env(&sb, &now);
    let mut lines = Vec::new();
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

/// A TCP server on loopback standing for an AMC host behind Squid: reads what the client sends
/// through the tunnel, answers one line and closes (Squid logs a tunnel when it closes).
fn amc_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 256];
                let _ = std::io::Read::read(&mut stream, &mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            });
        }
    });
    port
}

/// Squid as Debian runs it (`cache_effective_user proxy`), on loopback, with its own config,
/// access log and hosts file in `dir`; killed when dropped.
struct RealSquid {
    child: std::process::Child,
    conf: std::path::PathBuf,
    port: u16,
}

impl RealSquid {
    fn start(dir: &std::path::Path, acl: &std::path::Path, hosts: &str) -> RealSquid {
        std::fs::write(dir.join("hosts"), hosts).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("squid.conf");
        std::fs::write(
            &conf,
            format!(
                "http_port 127.0.0.1:{port}\npid_filename {p}/squid.pid\ncache_log {p}/cache.log\naccess_log stdio:{p}/access.log\n\
                 logfile_rotate 1\ncache deny all\ncache_mem 8 MB\nhosts_file {p}/hosts\ndns_nameservers 127.0.0.1\n\
                 shutdown_lifetime 0 seconds\npinger_enable off\ncache_effective_user proxy\ncoredump_dir {p}\n\
                 acl roc_amc dstdomain \"{acl}\"\nhttp_access allow roc_amc\nhttp_access deny all\n",
                p = dir.display(),
                acl = acl.display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod").args(["777", dir.to_str().unwrap()]).status().unwrap();
        let child = std::process::Command::new("squid")
            .args(["-N", "-f"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let squid = RealSquid { child, conf, port };
        let up = wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "squid did not start: {}", std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default());
        squid
    }

    /// `CONNECT host:port` through Squid: its status code (0 for none); on 200, one request
    /// through the tunnel, read to its end, so that the tunnel closes and Squid logs it.
    fn connect(&self, host: &str, port: u16) -> u16 {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return 0 };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        if write!(s, "CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").is_err() {
            return 0;
        }
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            match std::io::Read::read(&mut s, &mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let code = String::from_utf8_lossy(&head).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code == 200 {
            let _ = write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut s, &mut rest);
        }
        code
    }

    /// `squid -k ACTION` (`rotate`: access.log becomes access.log.0, a new one starts;
    /// `reconfigure`: the ACL file read again); the signal it sends, to the child, if `-k`
    /// finds no pid file.
    fn k(&self, action: &str, signal: &str) {
        let out = std::process::Command::new("squid").args(["-k", action, "-f"]).arg(&self.conf).output().unwrap();
        if !out.status.success() {
            let sent = std::process::Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
            assert!(sent.success(), "squid -k {action}: {}", util::stderr(&out));
        }
    }
}

impl Drop for RealSquid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 15, with a real Squid instead of lines written by the test: its real access.log lines
/// for CONNECTs to an opened AMC host (let through) and to a host not opened (denied) are
/// counted on the opening, the web at large is not; after `squid -k rotate` (a real rotation)
/// the next requests are counted once, the earlier ones not again.
#[test]
fn real_squid_requests_are_counted_once_across_squid_k_rotate() {
    if !util::have("squid", true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\n[review]\nmode = \"auto\"\n\
         [watch]\nsquid_access_log = \"{}\"\n",
        d.join("access.log").display()
    ));
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    let idb = "idb.roc.mutuelle-exemple.test";
    // The proxy's ACL before it takes rocsync's export: the AMC host is still denied there.
    let acl = d.join("roc_amc.acl");
    std::fs::write(&acl, ".nothing-yet.test\n").unwrap();
    let squid = RealSquid::start(d, &acl, &format!("127.0.0.1 {idb} www.example-news.test\n"));
    let amc = amc_server();
    let daemon = Daemon::start(&sb);
    let counted = |requests: u64, blocked: u64| {
        let report = sb.json(&["report", "openings", "--json"]);
        let o = opening(&report, idb);
        o["requests_30d"].as_u64() == Some(requests) && o["blocked_30d"].as_u64() == Some(blocked)
    };

    assert_eq!(squid.connect(idb, amc), 403, "the proxy has not taken the export yet");
    assert_eq!(squid.connect("www.example-news.test", amc), 403, "a host not opened");
    // The proxy takes rocsync's export (as its post_write command would have it do).
    std::fs::copy(sb.path("out/squid.acl"), &acl).unwrap();
    squid.k("reconfigure", "HUP");
    let mut blocked = 1;
    let started = std::time::Instant::now();
    loop {
        match squid.connect(idb, amc) {
            200 => break,
            // Denied while Squid still holds the old ACL; a connection refused during the
            // reconfiguration is no request at all.
            403 => blocked += 1,
            _ => {}
        }
        assert!(started.elapsed() < Duration::from_secs(20) && blocked < 100, "Squid did not take the ACL");
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..2 {
        assert_eq!(squid.connect(idb, amc), 200, "the opened AMC host");
    }
    let access = || std::fs::read_to_string(d.join("access.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || counted(3, blocked)),
        "want 3 requests, {blocked} blocked: {}\n{}\n{}",
        opening(&sb.json(&["report", "openings", "--json"]), idb),
        access(),
        daemon.log()
    );
    let log = access();
    assert!(log.contains("TCP_TUNNEL/200") && log.contains("TCP_DENIED/403"), "Squid's own lines: {log}");

    squid.k("rotate", "USR1");
    assert!(wait_until(Duration::from_secs(10), || d.join("access.log.0").exists()), "squid rotated: {:?}", std::fs::read_dir(d).unwrap().count());
    for _ in 0..2 {
        assert_eq!(squid.connect(idb, amc), 200);
    }
    assert!(wait_until(Duration::from_secs(20), || counted(5, blocked)), "{}\n{}", access(), daemon.log());
    std::thread::sleep(Duration::from_millis(1500));
    let report = sb.json(&["report", "openings", "--json"]);
    let o = opening(&report, idb);
    assert_eq!((o["requests_30d"].as_u64(), o["blocked_30d"].as_u64()), (Some(5), Some(blocked)), "counted once across the rotation: {o:#}");
    assert!(o["last_used"].is_string(), "{o:#}");
    assert!(report["openings"].as_array().unwrap().iter().all(|o| o["host"] != "www.example-news.test"), "not an opening: {report:#}");
}

/// Issue 15 in managed nftables mode: the counting side read `rocsync-accept: ` lines that no
/// rule wrote. In a network namespace the test creates (client, router, server; real nftables):
/// rocsync's chain accepts the opened host with the accept log, after the established rule (so
/// one line per new connection), and a real connection through the router is accepted by it.
/// The kernel log of a namespace other than the host's is not written unless the host sets
/// `net.netfilter.nf_log_all_netns` (it is 0, and a test must not change the host), so the line
/// the kernel writes for that connection is appended to the watched nft log by the test; the
/// daemon counts it on the opening (through the resolver's address of the host).
#[cfg(feature = "netlink")]
#[test]
fn the_managed_chain_logs_accepted_connections_and_the_daemon_counts_them() {
    use util::dnsmasq::Dnsmasq;
    use util::lab::Lab;
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let lab = Lab::new("nu", &["idb.a.test", "www.other.test"]);
    lab.serve("198.18.2.11".parse().unwrap());
    lab.serve("198.18.2.13".parse().unwrap());
    let dns = Dnsmasq::start_in(Some(&lab.router.0), "198.18.2.11 idb.a.test\n198.18.2.13 www.other.test\n", 1);
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"auto\"\nmax_removal_percent = 100\n\
         [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\ngrace = \"10m\"\n\
         [watch]\nnft_log = \"kern.log\"\n\
         [nftables]\nenabled = true\nmode = \"managed\"\nhook = \"forward\"\n",
        dns.server()
    ));
    std::fs::write(sb.path("annuaire.json"), util::answer_json(&[("111111111", "idb.a.test")])).unwrap();
    std::fs::write(sb.path("kern.log"), "").unwrap();
    sb.ok_in(&lab.router, &["once"]);

    let chain = lab.router.nft_ok(&["list", "chain", "inet", "rocsync", "forward"]);
    let rules: Vec<&str> = chain.lines().map(str::trim).filter(|l| l.contains("comment \"rocsync: ")).collect();
    assert!(rules.len() >= 4, "{chain}");
    assert!(rules[0].starts_with("ct state established,related accept"), "established first: {chain}");
    assert!(rules[1].starts_with("ip daddr . tcp dport @rocsync_v4 log prefix \"rocsync-accept: \" accept"), "{chain}");
    assert!(rules[2].starts_with("ip6 daddr . tcp dport @rocsync_v6 log prefix \"rocsync-accept: \" accept"), "{chain}");
    assert!(lab.reaches("198.18.2.11", "idb.a.test"), "the opened host is accepted by the logged rule");
    assert!(!lab.reaches("198.18.2.13", "www.other.test"), "another host is not");
    // The chain with its log is rocsync's and in step: no drift, nothing repaired again.
    let status = sb.ok_in(&lab.router, &["status", "--json"]);
    assert!(!status.contains("nftables:"), "{status}");

    let daemon = Daemon::start_in(&sb, Some(lab.router.0.as_str()));
    let now = rocsync::usage::time_text(unix_now());
    let line = format!(
        "{now} router kernel: rocsync-accept: IN=r0 OUT=r1 MAC=02:00:00:00:00:01:02:00:00:00:00:02:08:00 SRC=198.18.1.2 DST=198.18.2.11 \
         LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=4242 DF PROTO=TCP SPT=40000 DPT=443 WINDOW=64240 RES=0x00 SYN URGP=0\n"
    );
    append(&sb.path("kern.log"), &[line]);
    let used = || {
        let report = sb.json(&["report", "openings", "--json"]);
        let o = opening(&report, "idb.a.test").clone();
        o["requests_30d"].as_u64().is_some_and(|n| n >= 1) && o["last_used"].is_string()
    };
    assert!(wait_until(Duration::from_secs(20), used), "{}", daemon.log());
    let report = sb.json(&["report", "openings", "--json"]);
    assert_eq!(opening(&report, "idb.a.test")["requests_30d"], 1, "{report:#}");
    assert_eq!(opening(&report, "idb.a.test")["blocked_30d"], 0, "{report:#}");
}
