//! rocsync's files checked by the real programs that will read them: Squid parses the ACL
//! without a warning, nft loads the script into a network namespace the test creates, systemd
//! accepts the units. They need root and the Debian packages that `.ci/run` installs; outside
//! CI they are skipped when missing.

mod util;

use std::process::Command;

use util::{Netns, Sandbox};

#[test]
fn squid_parses_the_acl_without_warnings() {
    if !util::have("squid", true) {
        return;
    }
    let sb = Sandbox::new("auto", "urls-v1.json");
    // Wildcards over exact hosts: the export must leave out what Squid would warn about.
    sb.write_config(&format!(
        "{}\n[policy]\nextra_hosts = [\"x.api.mutuelle-exemple.test\", \"api.mutuelle-exemple.test\", \"*.deep.api.mutuelle-exemple.test\"]\n",
        std::fs::read_to_string(sb.path("rocsync.toml")).unwrap()
    ));
    sb.ok(&["once"]);
    let acl = sb.path("out/squid.acl");
    let conf = sb.path("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:3128\nacl roc_amc dstdomain \"{}\"\nhttp_access allow roc_amc\nhttp_access deny all\n",
            acl.display()
        ),
    )
    .unwrap();
    let out = Command::new("squid").args(["-k", "parse", "-f"]).arg(&conf).output().expect("squid");
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "squid -k parse failed:\n{log}");
    assert!(log.contains("Processing: acl roc_amc dstdomain"), "squid read the ACL:\n{log}");
    let complaints: Vec<&str> = log.lines().filter(|l| l.contains("WARNING") || l.contains("ERROR")).collect();
    assert_eq!(complaints, Vec::<&str>::new(), "\n{log}");
    // The control: the same hosts, overlaps left in, do make Squid complain.
    std::fs::write(&acl, ".api.mutuelle-exemple.test\nx.api.mutuelle-exemple.test\n").unwrap();
    let out = Command::new("squid").args(["-k", "parse", "-f"]).arg(&conf).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a subdomain of"));
}

#[test]
fn nft_loads_the_script_in_a_namespace() {
    if !util::have("nft", true) || !util::have("ip", true) {
        return;
    }
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let script = sb.path("out/rocsync.nft");
    let ns = Netns::new("script");
    // Loading twice: the script replaces the table whether or not it exists.
    for round in 0..2 {
        let out = ns.nft(&["-f", script.to_str().unwrap()]);
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = ns.nft(&["list", "ruleset"]);
    let ruleset = String::from_utf8_lossy(&out.stdout);
    assert!(ruleset.contains("table inet rocsync"), "{ruleset}");
    assert!(ruleset.contains("set rocsync_v4 {\n\t\ttype ipv4_addr . inet_service\n\t\tflags timeout"), "{ruleset}");
    assert!(ruleset.contains("set rocsync_v6"), "{ruleset}");
    assert_eq!(ruleset.matches("table ").count(), 1, "nothing but rocsync's table: {ruleset}");
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    if !util::have("systemd-analyze", false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    // `verify` checks that ExecStart exists: point the units at the binary just built.
    for unit in ["rocsync.service", "rocsync-once.service", "rocsync-once.timer", "rocsync-mail.path"] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap().replace("/usr/bin/rocsync", env!("CARGO_BIN_EXE_rocsync"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .current_dir(dir.path())
        .args(["verify", "rocsync.service", "rocsync-once.service", "rocsync-once.timer", "rocsync-mail.path"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && log.trim().is_empty(), "systemd-analyze verify:\n{log}");
    for unit in ["rocsync.service", "rocsync-once.service"] {
        let out = Command::new("systemd-analyze")
            .current_dir(dir.path())
            .args(["security", "--offline=true", unit])
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let verdict = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{report}"));
        assert!(verdict.contains(" OK") || verdict.contains(" SAFE"), "{unit}: {verdict}");
    }
    // The daemon's unit: notify protocol with a watchdog, and CAP_NET_ADMIN as its only privilege.
    let unit = std::fs::read_to_string(root.join("rocsync.service")).unwrap();
    for line in ["Type=notify", "WatchdogSec=", "AmbientCapabilities=CAP_NET_ADMIN\n", "CapabilityBoundingSet=CAP_NET_ADMIN\n", "User=rocsync"] {
        assert!(unit.contains(line), "rocsync.service lacks {line}");
    }
}

#[test]
fn haproxy_accepts_the_acl() {
    if !util::have("haproxy", false) {
        return;
    }
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n[exports.haproxy]\npath = \"out/haproxy.acl\"\n");
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    let cfg = sb.path("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n\
             frontend roc\n  bind 127.0.0.1:18443\n  tcp-request inspect-delay 2s\n\
             acl roc_amc req.ssl_sni -m reg -i -f {}\n  tcp-request content reject if !roc_amc\n  default_backend none\n\
             backend none\n  server s 127.0.0.1:9 disabled\n",
            sb.path("out/haproxy.acl").display()
        ),
    )
    .unwrap();
    let out = Command::new("haproxy").args(["-c", "-f"]).arg(&cfg).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "haproxy -c:\n{log}");
    assert!(!log.to_lowercase().contains("warning"), "{log}");
    // The control: a broken regex is refused.
    std::fs::write(sb.path("out/haproxy.acl"), "^(unclosed\n").unwrap();
    assert!(!Command::new("haproxy").args(["-c", "-f"]).arg(&cfg).output().unwrap().status.success());
}
