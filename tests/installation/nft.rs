//! nftables as an installation met it (issue 11): the nft script loaded next to the
//! administrator's chains, and the proxy-host topology that `check-config` now asks about. The
//! tests of the netlink sink itself (every service port dropped and logged, the chain of an
//! earlier mode removed, a real Squid on the output hook) are in `tests/nftables_netlink.rs`.

use crate::util::dnsmasq::Dnsmasq;
use crate::util::{self, Netns, OUTPUTS, Sandbox, stderr, stdout};

/// The configuration of README's recipe without the netlink sink: the nft script, loaded by
/// `nft -f` (here into the test's namespace `ns`) each time it changed.
fn script_config(dns: &Dnsmasq, ns: &Netns, script: &std::path::Path) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n\
         [review]\nmode = \"auto\"\nmax_removal_percent = 100\n\
         [resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\n\
         [exports.nft_script]\npath = \"out/rocsync.nft\"\n\
         post_write_command = [\"ip\", \"netns\", \"exec\", \"{}\", \"nft\", \"-f\", \"{}\"]\n\
         [store]\nstate_dir = \"state\"\n",
        dns.server(),
        ns.0,
        script.display()
    )
}

/// README gave two recipes that conflict: put your own chains in `table inet rocsync`, and
/// load `rocsync.nft` with `nft -f`, whose first line was `delete table inet rocsync`: it wiped
/// an administrator's chain. Loading the script now replaces the elements of rocsync's sets
/// and nothing else, however often it is loaded.
#[test]
fn loading_the_nft_script_keeps_the_administrators_chain_in_rocsyncs_table() {
    if !util::have("nft", true) || !util::have("ip", true) || !util::have("dnsmasq", true) {
        return;
    }
    let dns = Dnsmasq::start("198.18.2.11 idb.a.test\n198.18.2.12 idb.b.test\n", 1);
    let ns = Netns::new("i11script");
    let sb = Sandbox::with_config("");
    sb.write_config(&script_config(&dns, &ns, &sb.path("out/rocsync.nft")));
    std::fs::write(sb.path("annuaire.json"), util::answer_json(&[("111111111", "idb.a.test")])).unwrap();
    // The first load, by the post-write command, on a machine without the table.
    sb.ok(&["once"]);
    let set = ns.nft_ok(&["list", "set", "inet", "rocsync", "rocsync_v4"]);
    assert!(set.contains("198.18.2.11 . 443"), "{set}");

    // The administrator's chain uses the sets, in rocsync's table as nftables requires; and an
    // element added by hand, which is not rocsync's to keep.
    ns.nft_ok(&["add", "chain", "inet", "rocsync", "admin_out", "{ type filter hook output priority 0 ; }"]);
    ns.nft_ok(&["add", "rule", "inet", "rocsync", "admin_out", "ip", "daddr", ".", "tcp", "dport", "@rocsync_v4", "accept", "comment", "\"admin\""]);
    ns.nft_ok(&["add", "element", "inet", "rocsync", "rocsync_v4", "{ 198.18.9.9 . 443 }"]);

    // A new AMC: the script changes and is loaded again by the post-write command, then twice
    // more by hand, checked first.
    std::fs::write(sb.path("annuaire.json"), util::answer_json(&[("111111111", "idb.a.test"), ("222222222", "idb.b.test")])).unwrap();
    sb.ok(&["once"]);
    let script = sb.path("out/rocsync.nft");
    let script = script.to_str().unwrap();
    ns.nft_ok(&["-c", "-f", script]);
    for _ in 0..2 {
        ns.nft_ok(&["-f", script]);
    }
    let admin = ns.nft_ok(&["list", "chain", "inet", "rocsync", "admin_out"]);
    assert!(admin.contains("ip daddr . tcp dport @rocsync_v4 accept comment \"admin\""), "the administrator's chain survives: {admin}");
    let set = ns.nft_ok(&["list", "set", "inet", "rocsync", "rocsync_v4"]);
    assert!(set.contains("198.18.2.11 . 443") && set.contains("198.18.2.12 . 443"), "{set}");
    assert!(!set.contains("198.18.9.9"), "rocsync's sets hold what the script says, nothing else: {set}");
    let audit = sb.ok(&["audit"]);
    assert!(!audit.contains("export.post_write_failed"), "{audit}");
}

/// `mode = "managed"`, `hook = "output"` on the proxy host (README: "the GAP's own host")
/// dropped the proxy's own connections to wildcard hosts, which have no address in the sets:
/// a CONNECT hung 59.5 s and nothing said why. `check-config` now asks which users the chain
/// leaves to the proxy (or, knowingly, none), and takes them only on the output hook.
#[test]
fn check_config_asks_whom_the_output_hook_exempts_on_the_proxy_host() {
    let nftables = "[annuaire]\nurl = \"file:annuaire.json\"\n[resolver]\nenabled = true\n\
                    [nftables]\nenabled = true\nmode = \"managed\"\n";
    let sb = Sandbox::new("auto", "urls-v1.json");
    // The sandbox exports a Squid ACL: a proxy that may run on this host.
    sb.write_config(&format!("{nftables}hook = \"output\"\n{OUTPUTS}"));
    let out = sb.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("nftables.exempt_users") && err.contains("`proxy` for Debian's Squid"), "{err}");
    assert!(err.contains("exempt_users = []"), "the knowing way out is named: {err}");

    // Named: that problem is gone (a build without the netlink feature still refuses
    // `[nftables]` itself, for its own reason).
    sb.write_config(&format!("{nftables}hook = \"output\"\nexempt_users = [\"proxy\"]\n{OUTPUTS}"));
    let err = stderr(&sb.run(&["check-config"]));
    assert!(!err.contains("exempt_users"), "{err}");
    if cfg!(feature = "netlink") {
        assert!(sb.ok(&["check-config"]).contains("OK"));
    }

    // Only the output hook knows which user sends a packet.
    sb.write_config(&format!("{nftables}hook = \"forward\"\nexempt_users = [\"proxy\"]\n{OUTPUTS}"));
    let err = stderr(&sb.run(&["check-config"]));
    assert!(err.contains("only the managed chain on the output hook"), "{err}");
    sb.write_config(&format!("{nftables}hook = \"output\"\nexempt_users = [\"no-such-user-here\"]\n{OUTPUTS}"));
    let err = stderr(&sb.run(&["check-config"]));
    assert!(err.contains("no user `no-such-user-here`"), "{err}");
}
