//! rocsync's nftables sink against real nftables, through netlink, in network namespaces the
//! test creates: a client, a router where rocsync runs in `managed` forward mode (with a real
//! DNS server, dnsmasq, in the router's namespace), and a server with HTTPS listeners. Built
//! with the `netlink` feature only (CI turns it on).

#![cfg(feature = "netlink")]

mod util;

use std::collections::BTreeSet;

use util::dnsmasq::Dnsmasq;
use util::lab::Lab;
use util::{Netns, Sandbox};

const HOSTS: &str = "198.18.2.11 idb.a.test\n2001:db8:2::11 idb.a.test\n198.18.2.12 idb.b.test\n198.18.2.13 www.other.test\n";

fn answer(amcs: &[(&str, &str)]) -> String {
    util::answer_json(amcs)
}

fn config(dns: &Dnsmasq, mode: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n\
         [review]\nmode = \"auto\"\nmax_removal_percent = 100\n\
         [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\ngrace = \"10m\"\n\
         [nftables]\nenabled = true\nmode = \"{mode}\"\nhook = \"forward\"\n",
        dns.server()
    )
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
    assert!(ruleset.contains("ip daddr . tcp dport @rocsync_v4 accept"), "{ruleset}");
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
