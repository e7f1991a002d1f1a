//! rocsync's nftables sink against real nftables, through netlink, in network namespaces the
//! test creates: a client, a router where rocsync runs in `managed` forward mode (with a real
//! DNS server, dnsmasq, in the router's namespace), and a server with HTTPS listeners. The
//! proxy-host topology runs rocsync and a real Squid on the client, with the output hook.
//! Built with the `netlink` feature only (CI turns it on).

#![cfg(feature = "netlink")]

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::dnsmasq::Dnsmasq;
use util::lab::{Lab, in_netns};
use util::{Netns, OUTPUTS, Sandbox};

const HOSTS: &str = "198.18.2.11 idb.a.test\n2001:db8:2::11 idb.a.test\n198.18.2.12 idb.b.test\n198.18.2.13 www.other.test\n";

fn answer(amcs: &[(&str, &str)]) -> String {
    util::answer_json(amcs)
}

fn config(dns: &Dnsmasq, mode: &str) -> String {
    config_on(dns, mode, "forward")
}

/// The configuration with `[nftables]` last, so that a test may add keys to it.
fn config_on(dns: &Dnsmasq, mode: &str, hook: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n\
         [review]\nmode = \"auto\"\nmax_removal_percent = 100\n\
         [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\ngrace = \"10m\"\n\
         [nftables]\nenabled = true\nmode = \"{mode}\"\nhook = \"{hook}\"\n",
        dns.server()
    )
}

/// An answer listing one AMC with `services` (code, URL) and extra `domaines`.
fn answer_services(number: &str, services: &[(&str, &str)], domaines: &[&str]) -> String {
    let services: Vec<String> = services.iter().map(|(code, url)| format!(r#"{{"code": "{code}", "url": "{url}"}}"#)).collect();
    let domaines: Vec<String> = domaines.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"format": "annuaire-urls/1", "organismes": [{{"numero_amc": "{number}", "libelle": "AMC {number}",
            "etat": "cercle_de_confiance", "services": [{}], "domaines": [{}]}}]}}"#,
        services.join(", "),
        domaines.join(", ")
    )
}

/// A plain TCP listener on `addr:port` in the server's namespace (an address [`Lab::serve`]
/// added) that writes one line to each connection: the lab's own listeners are on 443 only.
fn listen(lab: &Lab, addr: &str, port: u16) {
    let addr = SocketAddr::new(addr.parse().unwrap(), port);
    let listener = in_netns(&lab.server.0, || TcpListener::bind(addr).expect("bind"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"hello\n");
        }
    });
}

/// Whether a new TCP connection from the client to `addr:port` gets the listener's line.
fn reaches_port(lab: &Lab, addr: &str, port: u16) -> bool {
    let addr = SocketAddr::new(addr.parse().unwrap(), port);
    in_netns(&lab.client.0, || {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(800)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = [0u8; 6];
        stream.read_exact(&mut line).is_ok() && &line == b"hello\n"
    })
}

/// The elements of rocsync's two sets, as `nft` lists them.
fn kernel_elements(ns: &Netns) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for set in ["rocsync_v4", "rocsync_v6"] {
        let json: serde_json::Value = serde_json::from_str(&ns.nft_ok(&["-j", "list", "set", "inet", "rocsync", set])).unwrap();
        for item in json["nftables"].as_array().unwrap() {
            for e in item["set"]["elem"].as_array().into_iter().flatten() {
                let concat = e["concat"].as_array().or_else(|| e["elem"]["val"]["concat"].as_array()).expect("concat element");
                out.insert(format!("{} . {}", concat[0].as_str().unwrap(), concat[1]));
            }
        }
    }
    out
}

/// The elements rocsync says it applied: those of its own nft script export, rendered from the
/// same state and addresses.
fn claimed_elements(sb: &Sandbox) -> BTreeSet<String> {
    let script = sb.read("out/rocsync.nft");
    let mut out = BTreeSet::new();
    for line in script.lines() {
        let line = line.trim().trim_start_matches("elements = {").trim_end_matches(['}', ',']).trim();
        for part in line.split(',') {
            let part = part.trim();
            let is_element = part.split_once(" . ").is_some_and(|(ip, _)| ip.parse::<std::net::IpAddr>().is_ok());
            if is_element {
                out.insert(part.to_owned());
            }
        }
    }
    out
}

#[test]
fn managed_forward_chain_opens_and_closes_amc_hosts_and_repairs_itself() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let lab = Lab::new("nl", &["idb.a.test", "idb.b.test", "www.other.test"]);
    for addr in ["198.18.2.11", "2001:db8:2::11", "198.18.2.12", "198.18.2.13"] {
        lab.serve(addr.parse().unwrap());
    }
    // Before rocsync: the router forwards everything.
    assert!(lab.reaches("198.18.2.13", "www.other.test"));
    assert!(lab.reaches("2001:db8:2::11", "idb.a.test"));
    let dns = Dnsmasq::start_in(Some(&lab.router.0), HOSTS, 1);
    let sb = Sandbox::with_config(&config(&dns, "managed"));
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test")])).unwrap();

    sb.ok_in(&lab.router, &["once"]);
    assert!(lab.reaches("198.18.2.11", "idb.a.test"), "an approved AMC host is reachable");
    assert!(lab.reaches("2001:db8:2::11", "idb.a.test"), "over IPv6 too");
    assert!(!lab.reaches("198.18.2.12", "idb.b.test"), "an AMC not in the annuaire yet is not");
    assert!(!lab.reaches("198.18.2.13", "www.other.test"), "other HTTPS is dropped");
    assert_eq!(kernel_elements(&lab.router), claimed_elements(&sb));
    assert_eq!(kernel_elements(&lab.router), BTreeSet::from(["198.18.2.11 . 443".into(), "2001:db8:2::11 . 443".into()]));
    let ruleset = lab.router.nft_ok(&["list", "chain", "inet", "rocsync", "forward"]);
    // Each new connection accepted is logged for `rocsync report openings` (issue 15).
    assert!(ruleset.contains("ip daddr . tcp dport @rocsync_v4 log prefix \"rocsync-accept: \" accept"), "{ruleset}");
    assert!(ruleset.contains("tcp dport 443 log prefix \"rocsync-drop: \" drop"), "{ruleset}");

    // A new AMC: it opens, and the connection already open to the first one stays up.
    let mut held = lab.connect("198.18.2.11".parse().unwrap(), "idb.a.test").expect("connection to A");
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test"), ("222222222", "idb.b.test")])).unwrap();
    sb.ok_in(&lab.router, &["once"]);
    assert!(lab.reaches("198.18.2.12", "idb.b.test"));
    assert!(held.ping(), "an open connection survives the change");
    let review = sb.ok_in(&lab.router, &["plan", "show", "2", "--format", "nft"]);
    assert_eq!(review.matches("element").count(), 1, "{review}");
    assert!(review.contains("add element inet rocsync rocsync_v4 { 198.18.2.12 . 443 }"), "{review}");
    assert_eq!(kernel_elements(&lab.router), claimed_elements(&sb));
    assert_eq!(kernel_elements(&lab.router).len(), 3);

    // The first AMC leaves: new connections to it are dropped (the one open stays, as
    // established traffic).
    std::fs::write(sb.path("annuaire.json"), answer(&[("222222222", "idb.b.test")])).unwrap();
    sb.ok_in(&lab.router, &["once"]);
    assert!(!lab.reaches("198.18.2.11", "idb.a.test"), "a closed host takes no new connection");
    assert!(lab.reaches("198.18.2.12", "idb.b.test"));
    assert!(held.ping(), "established connections are not cut");
    assert_eq!(kernel_elements(&lab.router), BTreeSet::from(["198.18.2.12 . 443".into()]));
    assert_eq!(kernel_elements(&lab.router), claimed_elements(&sb));

    // Someone deletes the table: status reports it, the next pass puts it back.
    lab.router.nft_ok(&["delete", "table", "inet", "rocsync"]);
    assert!(lab.reaches("198.18.2.13", "www.other.test"), "without the table the router forwards everything");
    let status = sb.ok_in(&lab.router, &["status", "--json"]);
    assert!(status.contains("table inet rocsync is missing"), "{status}");
    sb.ok_in(&lab.router, &["once"]);
    assert!(!lab.reaches("198.18.2.13", "www.other.test"));
    assert!(lab.reaches("198.18.2.12", "idb.b.test"));
    assert_eq!(kernel_elements(&lab.router), claimed_elements(&sb));
    assert!(sb.ok_in(&lab.router, &["audit"]).contains("sink.repaired"));

    // Someone slips an accept-all rule into rocsync's chain and drops an element: repaired too.
    lab.router.nft_ok(&["insert", "rule", "inet", "rocsync", "forward", "accept"]);
    lab.router.nft_ok(&["delete", "element", "inet", "rocsync", "rocsync_v4", "{ 198.18.2.12 . 443 }"]);
    assert!(lab.reaches("198.18.2.13", "www.other.test"));
    sb.ok_in(&lab.router, &["once"]);
    assert!(!lab.reaches("198.18.2.13", "www.other.test"));
    assert!(lab.reaches("198.18.2.12", "idb.b.test"));
    let chain = lab.router.nft_ok(&["list", "chain", "inet", "rocsync", "forward"]);
    let rules: Vec<&str> = chain.lines().map(str::trim).filter(|l| l.contains("accept") || l.contains("drop")).collect();
    assert_eq!(rules.len(), 5, "the policy and rocsync's four rules, the stray rule gone: {chain}");
    assert!(rules.iter().skip(1).all(|r| r.contains("comment \"rocsync: ")), "{chain}");
    assert_eq!(sb.ok_in(&lab.router, &["status", "--json"]).matches("nftables:").count(), 0);
}

#[test]
fn sets_only_mode_leaves_the_administrators_chain_alone() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let router = Netns::new("nlso");
    let out = std::process::Command::new("ip").args(["netns", "exec", &router.0, "ip", "link", "set", "lo", "up"]).status().unwrap();
    assert!(out.success());
    let dns = Dnsmasq::start_in(Some(&router.0), HOSTS, 1);
    let sb = Sandbox::with_config(&config(&dns, "sets-only"));
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test")])).unwrap();
    sb.ok_in(&router, &["once"]);
    assert!(!router.nft(&["list", "chain", "inet", "rocsync", "forward"]).status.success(), "no chain in sets-only mode");
    // The administrator's own chain uses the sets.
    router.nft_ok(&["add", "chain", "inet", "rocsync", "admin", "{ type filter hook output priority 0 ; }"]);
    router.nft_ok(&["add", "rule", "inet", "rocsync", "admin", "ip", "daddr", ".", "tcp", "dport", "@rocsync_v4", "accept"]);
    // A change and an element removed by hand: both handled, the admin's chain untouched.
    router.nft_ok(&["delete", "element", "inet", "rocsync", "rocsync_v4", "{ 198.18.2.11 . 443 }"]);
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test"), ("222222222", "idb.b.test")])).unwrap();
    sb.ok_in(&router, &["once"]);
    assert_eq!(
        kernel_elements(&router),
        BTreeSet::from(["198.18.2.11 . 443".into(), "198.18.2.12 . 443".into(), "2001:db8:2::11 . 443".into()])
    );
    let admin = router.nft_ok(&["list", "chain", "inet", "rocsync", "admin"]);
    assert!(admin.contains("@rocsync_v4 accept"), "{admin}");

    // The IDB front end moves: the old address stays for the grace as an element that times
    // out by itself (even if rocsync is stopped), the new one is permanent.
    dns.set_hosts("198.18.2.21 idb.a.test\n198.18.2.12 idb.b.test\n");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sb.ok_in(&router, &["once"]);
    let set = router.nft_ok(&["list", "set", "inet", "rocsync", "rocsync_v4"]);
    assert!(set.contains("198.18.2.21 . 443,") || set.contains("198.18.2.21 . 443 }"), "permanent: {set}");
    assert!(set.contains("198.18.2.11 . 443 timeout 9m5") && set.contains(" expires 9m5"), "{set}");
    assert!(!set.contains("198.18.2.12 . 443 timeout"), "{set}");
    // A pass with nothing new leaves the timed element alone (no drift, no re-add).
    let status = sb.ok_in(&router, &["status", "--json"]);
    assert!(!status.contains("nftables:"), "{status}");
}

/// The managed chain logged and dropped tcp/443 only: an AMC's CLC on 8443 (the sample
/// annuaire has one) was neither dropped nor logged, so its blocked requests were never seen.
/// The chain now logs and drops every port of the state in force, and follows it.
#[test]
fn the_managed_chain_drops_and_logs_every_service_port_not_only_443() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let lab = Lab::new("np", &["idb.a.test", "clc.a.test", "clc.b.test"]);
    for addr in ["198.18.2.11", "198.18.2.12"] {
        lab.serve(addr.parse().unwrap());
        listen(&lab, addr, 8443);
    }
    assert!(reaches_port(&lab, "198.18.2.12", 8443), "before rocsync the router forwards 8443");
    let dns = Dnsmasq::start_in(Some(&lab.router.0), "198.18.2.11 idb.a.test\n198.18.2.11 clc.a.test\n198.18.2.12 clc.b.test\n", 1);
    let sb = Sandbox::with_config(&config(&dns, "managed"));
    let idb = ("IDB", "https://idb.a.test/idb");
    std::fs::write(sb.path("annuaire.json"), answer_services("111111111", &[idb, ("CLC", "https://clc.a.test:8443/clc")], &[])).unwrap();

    sb.ok_in(&lab.router, &["once"]);
    assert!(reaches_port(&lab, "198.18.2.11", 8443), "the AMC's CLC on 8443 is allowed");
    assert!(lab.reaches("198.18.2.11", "idb.a.test"));
    assert!(!reaches_port(&lab, "198.18.2.12", 8443), "8443 to a host no AMC lists is dropped");
    assert!(!lab.reaches("198.18.2.12", "clc.b.test"), "and 443 still is");
    let chain = lab.router.nft_ok(&["list", "chain", "inet", "rocsync", "forward"]);
    assert!(chain.contains("tcp dport 8443 log prefix \"rocsync-drop: \" drop"), "logged before it is dropped: {chain}");
    assert!(chain.contains("tcp dport 443 log prefix \"rocsync-drop: \" drop"), "{chain}");
    assert_eq!(kernel_elements(&lab.router), claimed_elements(&sb));

    // The CLC leaves the annuaire: 8443 is no longer a port of the state, and the chain follows
    // (no drift left behind, nothing dropped on a port no AMC uses).
    std::fs::write(sb.path("annuaire.json"), answer_services("111111111", &[idb], &[])).unwrap();
    sb.ok_in(&lab.router, &["once"]);
    let chain = lab.router.nft_ok(&["list", "chain", "inet", "rocsync", "forward"]);
    assert!(!chain.contains("8443"), "{chain}");
    assert!(reaches_port(&lab, "198.18.2.12", 8443));
    assert!(!lab.reaches("198.18.2.12", "clc.b.test"));
    let status = sb.ok_in(&lab.router, &["status", "--json"]);
    assert!(!status.contains("nftables:"), "{status}");
}

/// Switching `mode` from managed to sets-only left rocsync's chain in the kernel, still
/// dropping, and `status` did not mention it. Now `status` names it, the next pass removes it
/// and audits it; an administrator's chain in the table, and an administrator's rule slipped
/// into rocsync's old chain, stay.
#[test]
fn switching_mode_or_hook_removes_the_chain_rocsync_made_before_and_audits_it() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let router = Netns::new("nlsw");
    let out = Command::new("ip").args(["netns", "exec", &router.0, "ip", "link", "set", "lo", "up"]).status().unwrap();
    assert!(out.success());
    let dns = Dnsmasq::start_in(Some(&router.0), HOSTS, 1);
    let sb = Sandbox::with_config(&config(&dns, "managed"));
    let reconfigure = |mode: &str, hook: &str, extra: &str| sb.write_config(&format!("{}{extra}\n{OUTPUTS}", config_on(&dns, mode, hook)));
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test")])).unwrap();
    sb.ok_in(&router, &["once"]);
    assert!(router.nft(&["list", "chain", "inet", "rocsync", "forward"]).status.success());
    // The administrator's own chain in the table, as README's sets-only recipe says.
    router.nft_ok(&["add", "chain", "inet", "rocsync", "admin", "{ type filter hook output priority 0 ; }"]);
    router.nft_ok(&["add", "rule", "inet", "rocsync", "admin", "ip", "daddr", ".", "tcp", "dport", "@rocsync_v4", "accept"]);

    // managed → sets-only: status says so before anything is touched, the next pass removes it.
    reconfigure("sets-only", "forward", "");
    let status = sb.ok_in(&router, &["status", "--json"]);
    assert!(status.contains("rocsync's chain forward"), "{status}");
    assert!(router.nft(&["list", "chain", "inet", "rocsync", "forward"]).status.success(), "status changes nothing");
    sb.ok_in(&router, &["once"]);
    assert!(!router.nft(&["list", "chain", "inet", "rocsync", "forward"]).status.success(), "the old chain is gone");
    let admin = router.nft_ok(&["list", "chain", "inet", "rocsync", "admin"]);
    assert!(admin.contains("@rocsync_v4 accept"), "{admin}");
    let audit = sb.ok_in(&router, &["audit"]);
    assert!(audit.lines().any(|l| l.contains("sink.repaired") && l.contains("rocsync's chain forward")), "{audit}");
    assert!(!sb.ok_in(&router, &["status", "--json"]).contains("nftables:"));
    assert_eq!(kernel_elements(&router), BTreeSet::from(["198.18.2.11 . 443".into(), "2001:db8:2::11 . 443".into()]));

    // managed on the output hook, then back to sets-only after the administrator put a rule of
    // their own in that chain: only rocsync's rules go.
    reconfigure("managed", "output", "exempt_users = []");
    sb.ok_in(&router, &["once"]);
    assert!(router.nft_ok(&["list", "chain", "inet", "rocsync", "output"]).contains("rocsync: allow v4"));
    reconfigure("sets-only", "forward", "");
    router.nft_ok(&["add", "rule", "inet", "rocsync", "output", "meta", "mark", "7", "counter", "comment", "\"admin\""]);
    sb.ok_in(&router, &["once"]);
    let output = router.nft_ok(&["list", "chain", "inet", "rocsync", "output"]);
    assert!(output.contains("comment \"admin\"") && !output.contains("rocsync: "), "{output}");
    assert!(sb.ok_in(&router, &["audit"]).contains("rule(s) of chain output"));
    assert!(!sb.ok_in(&router, &["status", "--json"]).contains("nftables:"));
}

/// A real Squid in network namespace `ns`, as Debian runs it (`cache_effective_user proxy`),
/// on 127.0.0.1:3128 there: it allows what rocsync's Squid export `acl` lists and takes its
/// names from `hosts` only. Stopped when dropped.
struct Squid {
    child: Child,
    ns: String,
    dir: tempfile::TempDir,
}

impl Squid {
    fn start_in(ns: &Netns, acl: &std::path::Path, hosts: &str) -> Squid {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("hosts"), hosts).unwrap();
        std::fs::write(
            d.join("squid.conf"),
            format!(
                "http_port 127.0.0.1:3128\npid_filename {p}/squid.pid\ncache_log {p}/cache.log\naccess_log stdio:{p}/access.log\n\
                 cache deny all\ncache_mem 8 MB\nhosts_file {p}/hosts\ndns_nameservers 127.0.0.1\nshutdown_lifetime 0 seconds\n\
                 pinger_enable off\nconnect_timeout 5 seconds\ncache_effective_user proxy\ncoredump_dir {p}\n\
                 acl roc_amc dstdomain \"{acl}\"\nhttp_access allow roc_amc\nhttp_access deny all\n",
                p = d.display(),
                acl = acl.display()
            ),
        )
        .unwrap();
        Command::new("chmod").args(["777", d.to_str().unwrap()]).status().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "squid", "-N", "-f"])
            .arg(d.join("squid.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let squid = Squid { child, ns: ns.0.clone(), dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while in_netns(&squid.ns, || TcpStream::connect(("127.0.0.1", 3128))).is_err() {
            assert!(Instant::now() < deadline, "squid did not start: {}", squid.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        squid
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
    }

    /// The status code of Squid's answer to `CONNECT host:443` (0 for none).
    fn connect(&self, host: &str) -> u16 {
        in_netns(&self.ns, || {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", 3128)) else { return 0 };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
            if write!(stream, "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").is_err() {
                return 0;
            }
            let mut answer = [0u8; 64];
            let n = stream.read(&mut answer).unwrap_or(0);
            String::from_utf8_lossy(&answer[..n]).split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
        })
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mode = "managed"`, `hook = "output"` on the proxy host dropped the proxy's own connections
/// to wildcard hosts, which have no address in the sets: a CONNECT to `x.api.….test` hung and
/// nothing said why. With the proxy's user in `exempt_users`, a real Squid running as `proxy`
/// on the host reaches the wildcard host its ACL allows, while the host's other users stay held
/// to the sets.
#[test]
fn the_output_hook_on_the_proxy_host_lets_the_proxy_reach_wildcard_hosts() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) || !util::have("squid", true) {
        return;
    }
    let lab = Lab::new("nx", &["idb.a.test", "x.api.a.test", "www.other.test"]);
    for addr in ["198.18.2.11", "198.18.2.13", "198.18.2.14"] {
        lab.serve(addr.parse::<IpAddr>().unwrap());
    }
    // The client is the proxy host: rocsync, its DNS server and Squid run there.
    let dns = Dnsmasq::start_in(Some(&lab.client.0), "198.18.2.11 idb.a.test\n", 1);
    let sb = Sandbox::with_config(&format!("{}exempt_users = [\"proxy\"]\n", config_on(&dns, "managed", "output")));
    let answer = answer_services("111111111", &[("IDB", "https://idb.a.test/idb")], &["*.api.a.test"]);
    std::fs::write(sb.path("annuaire.json"), answer).unwrap();
    sb.ok_in(&lab.client, &["once"]);
    let chain = lab.client.nft_ok(&["list", "chain", "inet", "rocsync", "output"]);
    assert!(chain.contains("meta skuid") && chain.contains("comment \"rocsync: exempt uid "), "{chain}");

    // The host's other users (here root) are held to the sets: a wildcard host has no address.
    assert!(lab.reaches("198.18.2.11", "idb.a.test"));
    assert!(!lab.reaches("198.18.2.14", "x.api.a.test"), "the chain drops what the sets do not allow");
    // The proxy reaches the wildcard host, and still refuses what its ACL does not list.
    let squid = Squid::start_in(&lab.client, &sb.path("out/squid.acl"), "198.18.2.14 x.api.a.test\n198.18.2.13 www.other.test\n");
    assert_eq!(squid.connect("x.api.a.test"), 200, "{}", squid.log());
    assert_eq!(squid.connect("www.other.test"), 403);
    assert!(!sb.ok_in(&lab.client, &["status", "--json"]).contains("nftables:"));
}

/// The daemon's configuration for the generation and monitor tests: polls every `poll`.
fn daemon_config(dns: &Dnsmasq, poll: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"{poll}\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"auto\"\nmax_removal_percent = 100\n\
         [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\ngrace = \"10m\"\n\
         [nftables]\nenabled = true\nmode = \"sets-only\"\n",
        dns.server()
    )
}

fn router_with_dns(tag: &str) -> (Netns, Dnsmasq) {
    let router = Netns::new(tag);
    let up = Command::new("ip").args(["netns", "exec", &router.0, "ip", "link", "set", "lo", "up"]).status().unwrap();
    assert!(up.success());
    let dns = Dnsmasq::start_in(Some(&router.0), HOSTS, 1);
    (router, dns)
}

/// Before the monitor, an element deleted by hand stayed deleted until the next poll (ten
/// minutes by default): the running daemon now sees the change in nf_tables' notifications and
/// repairs it within seconds, audited as drift, with no poll in between.
#[test]
fn a_hand_deleted_element_is_repaired_by_the_running_daemon_without_waiting_for_a_poll() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let (router, dns) = router_with_dns("nlmon");
    let sb = Sandbox::with_config(&daemon_config(&dns, "1h"));
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test")])).unwrap();
    let daemon = util::daemon::Daemon::start_in(&sb, Some(router.0.as_str()));
    let element = "198.18.2.11 . 443".to_owned();
    assert!(util::wait_until(Duration::from_secs(10), || kernel_elements(&router).contains(&element)), "{}", daemon.log());
    let passes = daemon.log().matches("Read the annuaire.").count();

    router.nft_ok(&["delete", "element", "inet", "rocsync", "rocsync_v4", "{ 198.18.2.11 . 443 }"]);
    let started = Instant::now();
    assert!(util::wait_until(Duration::from_secs(5), || kernel_elements(&router).contains(&element)), "not repaired: {}", daemon.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    daemon.wait_log("Repaired drift", Duration::from_secs(5));
    let log = daemon.log();
    assert_eq!(log.matches("Read the annuaire.").count(), passes, "no poll in between: {log}");
    assert!(log.contains("changed by someone else"), "{log}");
    // rocsync's own repair is not taken for someone else's change: one repair, not a loop.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.log().matches("changed by someone else").count(), 1, "{}", daemon.log());
    assert!(sb.ok_in(&router, &["audit"]).contains("sink.repaired"));
}

/// Every pass read the whole table back from the kernel (half a second for 100,000 elements):
/// a pass now reads back only when the ruleset's generation moved. Passes with nobody else
/// committing read nothing back; a change to another table moves the generation, so the next
/// pass reads back — and finds nothing to repair.
#[test]
fn a_pass_reads_the_kernel_back_only_when_the_generation_moved() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let (router, dns) = router_with_dns("nlgen");
    let sb = Sandbox::with_config(&daemon_config(&dns, "1s"));
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test")])).unwrap();
    let daemon = util::daemon::Daemon::start_in(&sb, Some(router.0.as_str()));
    let readbacks = |log: &str| log.matches("back from the kernel").count();
    let passes = |log: &str| log.matches("Read the annuaire.").count();
    // The first pass: nothing known yet, one read-back.
    assert_eq!(readbacks(&daemon.log()), 1, "{}", daemon.log());
    assert!(util::wait_until(Duration::from_secs(10), || passes(&daemon.log()) >= 5), "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(readbacks(&log), 1, "passes with an unchanged generation read nothing back: {log}");
    assert!(!log.contains("generation moved"), "{log}");

    // Another table: the generation moves, the next pass reads back and finds nothing to do.
    router.nft_ok(&["add", "table", "ip", "someone_else"]);
    daemon.wait_log("generation moved", Duration::from_secs(5));
    let log = daemon.log();
    assert!(!log.contains("Repaired drift") && !log.contains("changed by someone else"), "{log}");
    assert_eq!(kernel_elements(&router), BTreeSet::from(["198.18.2.11 . 443".into(), "2001:db8:2::11 . 443".into()]));
    assert!(!sb.ok_in(&router, &["audit"]).contains("sink.repaired"));
}

/// Found by an attack: a chain whose rules kept their comments passed for rocsync's whatever
/// else changed. Its policy turned to drop (every other forwarded flow cut) or its priority
/// moved is drift: status says so, and the next pass makes the chain again, audited.
#[test]
fn a_managed_chain_whose_policy_or_priority_was_changed_by_hand_is_made_again() {
    if !util::have("dnsmasq", true) || !util::have("nft", true) {
        return;
    }
    let router = Netns::new("nlpol");
    let out = Command::new("ip").args(["netns", "exec", &router.0, "ip", "link", "set", "lo", "up"]).status().unwrap();
    assert!(out.success());
    let dns = Dnsmasq::start_in(Some(&router.0), HOSTS, 1);
    let sb = Sandbox::with_config(&config(&dns, "managed"));
    std::fs::write(sb.path("annuaire.json"), answer(&[("111111111", "idb.a.test")])).unwrap();
    sb.ok_in(&router, &["once"]);
    let chain = || router.nft_ok(&["list", "chain", "inet", "rocsync", "forward"]);
    assert!(chain().contains("policy accept"), "{}", chain());

    router.nft_ok(&["add", "chain", "inet", "rocsync", "forward", "{ policy drop ; }"]);
    assert!(chain().contains("policy drop"), "{}", chain());
    let status = sb.ok_in(&router, &["status", "--json"]);
    assert!(status.contains("policy drop"), "status names it: {status}");
    sb.ok_in(&router, &["once"]);
    assert!(chain().contains("policy accept"), "made again: {}", chain());
    let audit = sb.ok_in(&router, &["audit"]);
    assert!(audit.lines().any(|l| l.contains("sink.repaired") && l.contains("policy drop")), "{audit}");

    // The same rules, hooked at another priority.
    router.nft_ok(&["delete", "chain", "inet", "rocsync", "forward"]);
    router.nft_ok(&["add", "chain", "inet", "rocsync", "forward", "{ type filter hook forward priority 10 ; policy accept ; }"]);
    sb.ok_in(&router, &["once"]);
    let repaired = chain();
    assert!(repaired.contains("priority filter") && repaired.contains("rocsync: allow v4"), "{repaired}");
}
