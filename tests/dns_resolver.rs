//! The resolver against a real DNS server (dnsmasq on loopback) serving `.test` names with a
//! one-second TTL: changes are followed after the TTL, an address that disappears stays for the
//! grace, a dead server keeps the last addresses.

mod util;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use rocsync::host::Host;
use rocsync::clock::now_millis;
use rocsync::resolve::{AddressBook, DnsResolver, Policy};
use util::dnsmasq::Dnsmasq;

fn h(s: &str) -> Host {
    Host::parse(s).unwrap()
}

fn addrs(book: &AddressBook, host: &str) -> BTreeSet<String> {
    book.addresses().get(&h(host)).map(|s| s.iter().map(IpAddr::to_string).collect()).unwrap_or_default()
}

#[test]
fn follows_ttls_keeps_vanished_addresses_for_the_grace_and_survives_a_dead_server() {
    if !util::have("dnsmasq", false) {
        return;
    }
    let mut dns = Dnsmasq::start("198.18.0.10 idb.amc.test\n2001:db8::10 idb.amc.test\n198.18.0.20 clc.amc.test\n", 1);
    let policy = Policy { min_ttl: Duration::from_secs(1), max_ttl: Duration::from_secs(3600), grace: Duration::from_secs(2), allow_networks: vec![] };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let resolver = DnsResolver::new(&[dns.server()], Duration::from_millis(500), 4).unwrap();
        let mut book = AddressBook::default();
        let hosts = [h("idb.amc.test"), h("clc.amc.test"), h("*.api.amc.test"), h("absent.amc.test")];
        book.track(&hosts, now_millis());
        let change = resolver.refresh(&mut book, &policy).await;
        assert_eq!(change.added.len(), 3, "{change:?}");
        assert_eq!(addrs(&book, "idb.amc.test"), BTreeSet::from(["198.18.0.10".into(), "2001:db8::10".into()]));
        assert_eq!(addrs(&book, "clc.amc.test"), BTreeSet::from(["198.18.0.20".into()]));
        assert!(book.failures().is_empty(), "a name without an address is not a failure: {:?}", book.failures());
        assert_eq!(book.hosts_of("198.18.0.20".parse().unwrap()), [&h("clc.amc.test")]);

        // The AMC moves its IDB front end.
        dns.set_hosts("198.18.0.11 idb.amc.test\n198.18.0.20 clc.amc.test\n");
        assert!(book.due(now_millis()).is_empty(), "not before the TTL runs out");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let change = resolver.refresh(&mut book, &policy).await;
        assert_eq!(change.added, [(h("idb.amc.test"), "198.18.0.11".parse().unwrap())]);
        assert_eq!(addrs(&book, "idb.amc.test").len(), 3, "the old addresses stay for the grace");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let change = resolver.refresh(&mut book, &policy).await;
        let removed: BTreeSet<String> = change.removed.iter().map(|(_, ip)| ip.to_string()).collect();
        assert_eq!(removed, BTreeSet::from(["198.18.0.10".into(), "2001:db8::10".into()]));
        assert_eq!(addrs(&book, "idb.amc.test"), BTreeSet::from(["198.18.0.11".into()]));

        // The DNS server dies: the last addresses stay, the failure is reported.
        dns.stop();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let change = resolver.refresh(&mut book, &policy).await;
        assert!(change.removed.is_empty(), "{change:?}");
        assert_eq!(addrs(&book, "idb.amc.test"), BTreeSet::from(["198.18.0.11".into()]));
        assert_eq!(book.failures().len(), 3, "{:?}", book.failures());
        tokio::time::sleep(Duration::from_millis(2200)).await;
        resolver.refresh(&mut book, &policy).await;
        assert_eq!(addrs(&book, "clc.amc.test"), BTreeSet::from(["198.18.0.20".into()]), "still there past the grace");
    });
}

#[test]
fn rocsync_resolve_shows_what_the_sets_would_hold() {
    if !util::have("dnsmasq", false) {
        return;
    }
    let dns = Dnsmasq::start("198.18.2.11 idb.roc.mutuelle-exemple.test\n2001:db8:2::11 idb.roc.mutuelle-exemple.test\n", 60);
    let sb = util::Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n[resolver]\nservers = [\"{}\"]\ntimeout = \"1s\"\n",
        dns.server()
    ));
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    let doc = sb.json(&["resolve", "--json"]);
    let hosts = doc["hosts"].as_array().unwrap();
    let idb = hosts.iter().find(|h| h["host"] == "idb.roc.mutuelle-exemple.test").unwrap();
    assert_eq!(idb["addresses"], serde_json::json!(["198.18.2.11", "2001:db8:2::11"]));
    let wildcard = hosts.iter().find(|h| h["host"] == "*.api.mutuelle-exemple.test").unwrap();
    assert_eq!(wildcard["addresses"], serde_json::json!([]));
    let text = sb.ok(&["resolve"]);
    assert!(text.contains("a wildcard has no address") && text.contains("198.18.2.11, 2001:db8:2::11"), "{text}");
}

#[test]
fn each_pass_puts_the_resolved_addresses_in_the_nft_sets() {
    if !util::have("dnsmasq", false) || !util::have("nft", true) {
        return;
    }
    let dns = Dnsmasq::start("198.18.2.11 idb.roc.mutuelle-exemple.test\n2001:db8:2::11 idb.roc.mutuelle-exemple.test\n198.18.2.12 clc.roc.mutuelle-exemple.test\n", 1);
    let sb = util::Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n\
         [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\ngrace = \"2s\"\n\
         [exports.stormshield]\npath = \"out/sns.csv\"\n",
        dns.server()
    ));
    sb.set_answer("urls-v1.json");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Addresses: 3 added"), "{out}");
    let script = sb.read("out/rocsync.nft");
    // clc is on 8443 in the annuaire: the element carries the port.
    assert!(script.contains("198.18.2.11 . 443") && script.contains("198.18.2.12 . 8443"), "{script}");
    assert!(script.contains("2001:db8:2::11 . 443"), "{script}");
    assert_eq!(
        sb.read("out/sns.csv"),
        "host,clc.roc.mutuelle-exemple.test,198.18.2.12,,dynamic,,\"rocsync ROC tcp/8443: MUTUELLE EXEMPLE 123456789\"\n\
         host,idb.roc.mutuelle-exemple.test,198.18.2.11,2001:db8:2::11,dynamic,,\"rocsync ROC tcp/443: MUTUELLE EXEMPLE 123456789\"\n"
    );
    let ns = util::Netns::new("dns");
    ns.nft_ok(&["-f", sb.path("out/rocsync.nft").to_str().unwrap()]);
    let set = ns.nft_ok(&["list", "set", "inet", "rocsync", "rocsync_v4"]);
    assert!(set.contains("198.18.2.11 . 443") && set.contains("198.18.2.12 . 8443"), "{set}");

    // The IDB front end moves; after the TTL the next pass adds the new address and keeps the
    // old one for the grace, then drops it. Each pass is a new process: the book is stored.
    dns.set_hosts("198.18.2.21 idb.roc.mutuelle-exemple.test\n198.18.2.12 clc.roc.mutuelle-exemple.test\n");
    std::thread::sleep(Duration::from_millis(1100));
    let out = sb.ok(&["once"]);
    assert!(out.contains("Addresses: 1 added, 0 dropped"), "{out}");
    let script = sb.read("out/rocsync.nft");
    assert!(script.contains("198.18.2.21 . 443") && script.contains("198.18.2.11 . 443"), "{script}");
    std::thread::sleep(Duration::from_millis(2200));
    let out = sb.ok(&["once"]);
    assert!(out.contains("0 added, 2 dropped"), "{out}");
    ns.nft_ok(&["-f", sb.path("out/rocsync.nft").to_str().unwrap()]);
    let set = ns.nft_ok(&["list", "set", "inet", "rocsync", "rocsync_v4"]);
    assert!(set.contains("198.18.2.21 . 443") && !set.contains("198.18.2.11 . 443"), "{set}");
    assert!(sb.ok(&["audit"]).contains("addresses.changed"));
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["resolver"]["hosts_resolved"], 2, "{status}");
    assert!(sb.ok(&["status"]).contains("Addresses: 2 host(s) resolved, 2 address(es)"));
    // Nothing moved: the script is not rewritten, and status sees no drift.
    let before = sb.read("out/rocsync.nft");
    std::thread::sleep(Duration::from_millis(1100));
    sb.ok(&["once"]);
    assert_eq!(sb.read("out/rocsync.nft"), before);
    assert_eq!(sb.json(&["status", "--json"])["drift"], serde_json::json!([]));
}

#[test]
fn the_stored_addresses_tie_nft_drops_to_amc_hosts() {
    if !util::have("dnsmasq", false) {
        return;
    }
    let dns = Dnsmasq::start("198.18.3.40 roc-idb.prevoyance-artisans.test\n", 60);
    let sb = util::Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n[resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\n",
        dns.server()
    ));
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    let log = util::fixture("logs/nft-drop.log");
    let doc = sb.json(&["inspect", "log", log.to_str().unwrap(), "--kind", "nft", "--json"]);
    let first = &doc["events"][0];
    assert_eq!(first["host"], "roc-idb.prevoyance-artisans.test", "{doc}");
    assert_eq!(first["amcs"], serde_json::json!(["345678912"]));
    assert_eq!(first["idb"], true);
    assert_eq!(first["in_force"], true, "in force and dropped: enforcement is broken");
    assert_eq!(doc["events"][1]["host"], serde_json::Value::Null);
}

/// Measurement, not a check: resolving 2,000 hosts (A and AAAA each) against dnsmasq on
/// loopback. Run with
/// `cargo test --release --test dns_resolver -- --ignored --nocapture resolve_2000`.
#[test]
#[ignore]
fn resolve_2000_hosts_measurement() {
    if !util::have("dnsmasq", false) {
        return;
    }
    let mut hosts_file = String::new();
    let mut hosts = Vec::new();
    for i in 0..2000u32 {
        let name = format!("idb.amc{i}.test");
        hosts_file.push_str(&format!("198.18.{}.{} {name}\n2001:db8::{:x} {name}\n", i / 256, i % 256, i + 1));
        hosts.push(h(&name));
    }
    let dns = Dnsmasq::start(&hosts_file, 300);
    let policy = Policy { min_ttl: Duration::from_secs(30), max_ttl: Duration::from_secs(3600), grace: Duration::from_secs(3600), allow_networks: vec![] };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(0)
    };
    for concurrency in [8, 32, 128] {
        let before = rss();
        let (took, book) = runtime.block_on(async {
            let resolver = DnsResolver::new(&[dns.server()], Duration::from_secs(2), concurrency).unwrap();
            let mut book = AddressBook::default();
            book.track(&hosts, now_millis());
            let start = std::time::Instant::now();
            resolver.refresh(&mut book, &policy).await;
            (start.elapsed(), book)
        });
        let resolved = book.addresses().values().map(BTreeSet::len).sum::<usize>();
        assert_eq!(resolved, 4000, "every A and AAAA answered");
        println!(
            "resolve 2,000 hosts (A+AAAA), concurrency {concurrency}: {:.0} ms, RSS +{} KiB, {} failures",
            took.as_secs_f64() * 1000.0,
            rss().saturating_sub(before),
            book.failures().len()
        );
    }
}
