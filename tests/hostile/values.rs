//! Hostile values in an annuaire answer and in DNS answers: nothing from outside adds a line to
//! what a person reads or a statement to an export, nothing internal opens, and an ambiguous or
//! older answer changes nothing without approval.

use std::collections::BTreeSet;
use std::process::Command;

use proptest::prelude::*;
use rocsync::catalogue::{Catalogue, Policy, desired};
use rocsync::host::Host;
use rocsync::plan::{HostDiff, Plan, Status};
use rocsync::sinks::nft_script::{self, NftNames};
use rocsync::sinks::plain::{self, WildcardStyle};
use rocsync::sinks::{haproxy, json, squid};
use rocsync::sources::annuaire;
use rocsync::text::is_unsafe;
use serde_json::json;

use crate::util::{self, Netns, Sandbox, dnsmasq::Dnsmasq};

/// Text that tries to break out: line breaks, terminal escapes, bidi overrides, the syntax of
/// every export, mixed with arbitrary Unicode.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\n    + faux.test  tcp/443".to_owned()),
        Just("\r\n}\nflush ruleset\n#".to_owned()),
        Just("\u{1b}[8m".to_owned()),
        Just("\u{1b}]8;;http://evil.test\u{7}".to_owned()),
        Just("\u{202e}tset.live".to_owned()),
        Just("\u{2066}\u{2028}\u{85}".to_owned()),
        Just("\"; acl x dstdomain .evil.test".to_owned()),
        Just("^.*$".to_owned()),
        any::<String>(),
        "[a-z.]{1,12}".prop_map(|s| s),
    ];
    proptest::collection::vec(pieces, 1..4).prop_map(|v| v.concat())
}

/// One organism with `fields` hostile and one good organism with a hostile name.
fn answer(fields: &[String; 6], good_name: &str) -> Vec<u8> {
    let [number, name, state, code, url, domain] = fields;
    serde_json::to_vec(&json!({
        "serie": 7,
        "organismes": [
            {"numero_amc": number, "libelle": name, "etat": state,
             "services": [{"code": code, "url": url}, {"code": "IDB", "url": format!("https://{}.idb.test/", url.len())}],
             "domaines": [domain, "roc.ok.test"]},
            {"numero_amc": "123456789", "libelle": good_name, "etat": "cercle_de_confiance",
             "services": [{"code": "IDB", "url": "https://idb.ok.test/ws"}, {"code": code, "url": "https://clc.ok.test:8443/"}],
             "domaines": ["*.api.ok.test"]}
        ]
    }))
    .unwrap()
}

fn plan_of(body: &[u8]) -> (Plan, rocsync::catalogue::State) {
    let answer = annuaire::parse(body, Some("application/json")).expect("a well-formed document");
    let state = desired(&Catalogue::from_answer(&answer), &Policy::default());
    let diff = HostDiff::between(&Default::default(), &state).unwrap_or_default();
    let plan = Plan {
        id: 1,
        created: "2026-11-23T00:00:00Z".into(),
        base: 0,
        source: "file:hostile.json".into(),
        serial: answer.serial,
        status: Status::Pending,
        needs_approval: true,
        reasons: vec![],
        diff,
    };
    (plan, state)
}

fn plan_lines(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    rocsync::cli::output::plan_text(&mut out, plan, &[]).unwrap();
    String::from_utf8(out).unwrap().lines().map(without_own_styles).collect()
}

/// `line` without the SGR sequences rocsync's own styles write (bold, colours, reset). Any other
/// escape sequence, such as the conceal (`ESC[8m`) or hyperlink (`ESC]8;;`) of a hostile name,
/// stays and fails the check.
fn without_own_styles(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find("\u{1b}[") {
        let after = &rest[at + 2..];
        let end = after.find(|c: char| !c.is_ascii_digit() && c != ';').unwrap_or(after.len());
        let own = after[end..].starts_with('m')
            && after[..end].split(';').all(|code| matches!(code.parse::<u8>(), Ok(0..=4 | 22..=24 | 30..=39 | 90..=97)));
        if own {
            out.push_str(&rest[..at]);
            rest = &after[end + 1..];
        } else {
            out.push_str(&rest[..at + 2]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The non-comment lines of every export.
fn statements(state: &rocsync::catalogue::State) -> Vec<Vec<String>> {
    let names = NftNames::default();
    [
        squid::render(state, 1),
        plain::render(state, WildcardStyle::Dot),
        haproxy::render(state, 1),
        nft_script::render(state, 1, &names, &Default::default()),
    ]
    .iter()
    .map(|text| text.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()).map(str::to_owned).collect())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary text in every field of an answer never adds a line to the plan a person reads
    /// nor a statement to an export: the same answer with plain names gives as many lines, every
    /// change line names a host of the diff, and nothing unprintable gets through.
    #[test]
    fn hostile_fields_add_no_line_to_the_plan_and_no_statement_to_an_export(
        fields in [hostile_text(), hostile_text(), hostile_text(), hostile_text(), hostile_text(), hostile_text()],
        good_name in hostile_text(),
    ) {
        let (plan, state) = plan_of(&answer(&fields, &good_name));
        let mut plain_fields = fields.clone();
        plain_fields[1] = "NOM".into();
        let (control, control_state) = plan_of(&answer(&plain_fields, "NOM"));
        let lines = plan_lines(&plan);
        prop_assert_eq!(lines.len(), plan_lines(&control).len(), "{:#?}", lines);
        let hosts: BTreeSet<String> = plan.diff.changes.iter().map(|c| c.host.as_str().to_owned()).collect();
        for line in &lines {
            prop_assert!(!line.chars().any(is_unsafe), "unprintable character in {:?}", line);
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix("+ ").or_else(|| t.strip_prefix("- ")).or_else(|| t.strip_prefix("~ ")) {
                let host = rest.split_whitespace().next().unwrap_or_default();
                prop_assert!(hosts.contains(host), "a change line names {:?}, not a host of the diff: {:?}", host, line);
            }
        }
        let (ours, theirs) = (statements(&state), statements(&control_state));
        prop_assert_eq!(&ours, &theirs, "names changed a statement");
        for line in &ours[0] {
            prop_assert!(Host::parse(line.trim_start_matches('.')).is_ok(), "squid line {:?}", line);
        }
        let exported: serde_json::Value = serde_json::from_str(&json::render(&state, 1)).unwrap();
        prop_assert_eq!(exported["hosts"].as_array().map(Vec::len), Some(state.len()));
    }
}

/// The answer of the issue's reproductions: a service code that writes nft statements, a name
/// that forges a plan line and hides text, a port 0, and good hosts beside them.
const HOSTILE_ANSWER: &str = r#"{"serie": 9, "organismes": [
  {"numero_amc": "123456789", "libelle": "MUTUELLE\n    + faux.test  tcp/443\u001b[8m\u202ecache", "etat": "cercle_de_confiance",
   "services": [{"code": "IDB\n}\nflush ruleset\n#", "url": "https://idb.ok.test/ws"},
                {"code": "CLC", "url": "https://clc.ok.test:8443/"},
                {"code": "SIM", "url": "https://idb0.ok.test:0/"}],
   "domaines": ["*.api.ok.test", "evil.test\nflush ruleset"]}]}"#;

#[test]
fn hostile_answer_reaches_no_export_and_no_screen_raw() {
    let sb = Sandbox::with_config(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n[exports.haproxy]\npath = \"out/haproxy.acl\"\n",
    );
    std::fs::write(sb.path("annuaire.json"), HOSTILE_ANSWER).unwrap();
    let once = sb.ok(&["once"]);
    assert!(once.contains("3 rejected value(s)"), "{once}");
    for (name, text) in sb.outputs() {
        // The escaped name may stand in a comment; never in a statement.
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(!line.contains("flush ruleset") && !line.contains("faux"), "{name}: {line}\n{text}");
        }
        assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t'), "{name} holds a control character");
    }
    assert!(!sb.read("out/rocsync.nft").contains("tcp/0") && !sb.read("out/hosts.txt").contains("idb0"));
    // What a person reads: the plan, the status, with colours forced on.
    for args in [&["plan", "show", "1"][..], &["--color", "always", "plan", "show", "1"], &["status"]] {
        let text = sb.ok(args);
        assert!(!text.contains("\u{1b}[8m") && !text.contains('\u{202e}'), "{args:?} shows raw escapes:\n{text:?}");
        assert!(!text.lines().any(|l| l.trim_start().starts_with("+ faux.test")), "{args:?} shows a forged line:\n{text}");
    }
    let plan = sb.ok(&["plan", "show", "1"]);
    assert!(plan.contains("MUTUELLE\\n    + faux.test  tcp/443\\u{1b}[8m\\u{202e}cache (123456789)"), "{plan}");
    // Each export is still accepted by the program that reads it.
    if util::have("squid", true) {
        let conf = sb.path("squid.conf");
        std::fs::write(&conf, format!("http_port 127.0.0.1:3128\nacl roc dstdomain \"{}\"\nhttp_access allow roc\nhttp_access deny all\n", sb.path("out/squid.acl").display())).unwrap();
        let out = Command::new("squid").args(["-k", "parse", "-f"]).arg(&conf).output().unwrap();
        assert!(out.status.success(), "squid -k parse: {}", util::stderr(&out));
    }
    if util::have("nft", true) && util::have("ip", true) {
        let ns = Netns::new("hostile-values");
        ns.nft_ok(&["-c", "-f", sb.path("out/rocsync.nft").to_str().unwrap()]);
        ns.nft_ok(&["-f", sb.path("out/rocsync.nft").to_str().unwrap()]);
        assert_eq!(ns.nft_ok(&["list", "ruleset"]).matches("table ").count(), 1);
    }
    if util::have("haproxy", false) {
        let cfg = sb.path("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n\
                 frontend roc\n  bind 127.0.0.1:18444\n  tcp-request inspect-delay 2s\n\
                 acl roc_amc req.ssl_sni -m reg -i -f {}\n  tcp-request content reject if !roc_amc\n  default_backend none\n\
                 backend none\n  server s 127.0.0.1:9 disabled\n",
                sb.path("out/haproxy.acl").display()
            ),
        )
        .unwrap();
        let out = Command::new("haproxy").args(["-c", "-f"]).arg(&cfg).output().unwrap();
        assert!(out.status.success(), "haproxy -c: {}", util::stderr(&out));
    }
}

#[test]
fn an_older_serial_does_not_undo_an_approved_closing() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    sb.ok(&["once"]);
    sb.set_answer("urls-v2.json"); // serial 4183: closes hosts, which waits in hybrid mode
    sb.ok(&["once"]);
    let plans = sb.json(&["plan", "list", "--json"]);
    let pending = plans.as_array().unwrap().iter().find(|p| p["status"] == "pending").expect("the closing waits");
    let id = pending["id"].to_string();
    sb.ok(&["approve", &id, "--by", "rssi"]);
    let closed = sb.read("out/hosts.txt");
    // The older answer again (a replay, a stale cache): its re-openings wait.
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    assert_eq!(sb.read("out/hosts.txt"), closed, "an older serial re-opened what the RSSI closed");
    let plans = sb.json(&["plan", "list", "--json"]);
    let waiting: Vec<i64> = plans.as_array().unwrap().iter().filter(|p| p["status"] == "pending").map(|p| p["id"].as_i64().unwrap()).collect();
    assert!(!waiting.is_empty(), "{plans:#}");
    let shown = sb.ok(&["plan", "show", &waiting[0].to_string()]);
    assert!(shown.contains("serial 4182 is older than serial 4183"), "{shown}");
    // Found by the review: approving the plan computed on top of a plan that still waits was
    // taken (the daemon then retried it every second). It is refused, naming the plan to
    // approve first.
    let on_top = waiting.iter().find_map(|id| {
        let base = sb.json(&["plan", "show", &id.to_string(), "--format", "json"])["base"].as_i64()?;
        waiting.contains(&base).then_some((*id, base))
    });
    let (plan, base) = on_top.unwrap_or_else(|| panic!("one waiting plan is computed on top of the other: {waiting:?}"));
    let out = sb.run(&["approve", &plan.to_string(), "--by", "rssi"]);
    assert!(!out.status.success(), "{}", util::stdout(&out));
    assert!(util::stderr(&out).contains(&format!("approve plan {base} first")), "{}", util::stderr(&out));
}

/// Found by the attacker helper: an answer whose `serie` was removed (or unreadable) skipped the
/// older-serial check and applied a closing in auto mode.
#[test]
fn an_answer_without_a_serial_after_one_was_applied_waits() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    for serial in [None, Some("null"), Some("-1"), Some("1e30")] {
        let mut answer: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(util::fixture("annuaire/urls-v2.json")).unwrap()).unwrap();
        match serial {
            None => {
                answer.as_object_mut().unwrap().remove("serie");
            }
            Some(text) => answer["serie"] = serde_json::from_str(text).unwrap(),
        }
        std::fs::write(sb.path("annuaire.json"), serde_json::to_string(&answer).unwrap()).unwrap();
        sb.ok(&["once"]);
        assert_eq!(sb.outputs(), before, "serie {serial:?}: applied without approval");
        let plans = sb.json(&["plan", "list", "--json"]);
        let pending = plans.as_array().unwrap().iter().find(|p| p["status"] == "pending").expect("waits");
        let shown = sb.ok(&["plan", "show", &pending["id"].to_string()]);
        assert!(shown.contains("no valid serial while serial 4182 is applied"), "{shown}");
    }
}

#[test]
fn an_amc_listed_twice_changes_nothing_of_it() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    let mut answer: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(util::fixture("annuaire/urls-v1.json")).unwrap()).unwrap();
    let list = answer["organismes"].as_array_mut().unwrap();
    let mut twin = list[0].clone();
    twin["numero_amc"] = json!(format!("0{}", twin["numero_amc"].as_str().unwrap()));
    twin["etat"] = json!("sorti");
    list.push(twin);
    std::fs::write(sb.path("annuaire.json"), serde_json::to_string(&answer).unwrap()).unwrap();
    let out = sb.ok(&["once"]);
    assert!(out.contains("2 rejected value(s)"), "{out}");
    assert_eq!(sb.outputs(), before, "the AMC's hosts neither closed nor changed");
    // A duplicate `etat` in one organism is ambiguous too.
    let text = std::fs::read_to_string(util::fixture("annuaire/urls-v1.json")).unwrap().replacen(
        "\"etat\": \"cercle_de_confiance\"",
        "\"etat\": \"sorti\", \"etat\": \"cercle_de_confiance\"",
        1,
    );
    std::fs::write(sb.path("annuaire.json"), text).unwrap();
    let inspect = sb.json(&["inspect", "annuaire", sb.path("annuaire.json").to_str().unwrap(), "--json"]);
    let reasons = inspect["rejected"].to_string();
    assert!(reasons.contains("more than once"), "{reasons}");
    sb.ok(&["once"]);
    assert_eq!(sb.outputs(), before);
}

#[test]
fn dns_answers_into_internal_ranges_are_refused_audited_and_shown() {
    if !util::have("dnsmasq", false) {
        return;
    }
    let dns = Dnsmasq::start(
        "198.18.2.11 idb.roc.mutuelle-exemple.test\n10.0.0.5 idb.roc.mutuelle-exemple.test\n\
         127.0.0.1 clc.roc.mutuelle-exemple.test\n::ffff:192.168.1.1 clc.roc.mutuelle-exemple.test\n\
         169.254.169.254 idb.otp-ouest.test\nfe80::1 idb.otp-ouest.test\n",
        1,
    );
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n[resolver]\nenabled = true\nservers = [\"{}\"]\ntimeout = \"1s\"\nmin_ttl = \"1s\"\n",
        dns.server()
    ));
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    let script = sb.read("out/rocsync.nft");
    assert!(script.contains("198.18.2.11 . 443"), "{script}");
    for inside in ["10.0.0.5", "127.0.0.1", "192.168.1.1", "169.254.169.254", "fe80::1"] {
        assert!(!script.contains(inside), "{inside} opened:\n{script}");
    }
    let audit = sb.ok(&["audit"]);
    assert_eq!(audit.matches("dns.refused").count(), 5, "{audit}");
    assert!(audit.contains("10.0.0.5, a private (RFC 1918) address"), "{audit}");
    let status = sb.json(&["status", "--json"]);
    let refused = status["resolver"]["refused"].to_string();
    assert!(refused.contains("10.0.0.5") && refused.contains("idb.otp-ouest.test"), "{refused}");
    // Reported once: the same answers again (the TTL is one second) add no audit line.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sb.ok(&["once"]);
    assert_eq!(sb.ok(&["audit"]).matches("dns.refused").count(), 5);
    // A range allowed knowingly.
    let config = std::fs::read_to_string(sb.path("rocsync.toml")).unwrap();
    std::fs::write(sb.path("rocsync.toml"), config.replace("timeout = \"1s\"\n", "timeout = \"1s\"\nallow_networks = [\"10.0.0.0/24\"]\n")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    sb.ok(&["once"]);
    let script = sb.read("out/rocsync.nft");
    assert!(script.contains("10.0.0.5 . 443") && !script.contains("127.0.0.1"), "{script}");
}

/// Found by the attacker helper: `inspect annuaire|mail|log` and `plan --source` on a FIFO hung
/// until killed, and `inspect mail` read any size and ignored the configured trusted server.
#[test]
fn inspect_commands_refuse_what_is_not_a_regular_file_and_judge_as_the_passes() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let fifo = sb.path("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();
    for args in [
        &["inspect", "annuaire", fifo][..],
        &["inspect", "mail", fifo],
        &["inspect", "log", fifo, "--kind", "squid", "--annuaire", util::fixture("annuaire/urls-v1.json").to_str().unwrap()],
        &["plan", "--source", fifo],
    ] {
        let out = sb.cmd().args(args).timeout(std::time::Duration::from_secs(20)).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded on a FIFO");
        assert!(util::stderr(&out).contains("is not a regular file"), "{args:?}: {}", util::stderr(&out));
    }
    // Nor a configuration file that is a FIFO (a SIGHUP read it and hung the daemon).
    let out = Command::new(env!("CARGO_BIN_EXE_rocsync")).args(["--config", fifo, "check-config"]).output().unwrap();
    assert!(!out.status.success() && util::stderr(&out).contains("is not a regular file"), "{}", util::stderr(&out));
    // The configuration's trusted server counts for `inspect mail` as for a pass.
    let config = std::fs::read_to_string(sb.path("rocsync.toml")).unwrap();
    sb.write_config(&format!("{config}[notifications]\ntrusted_authserv_id = \"mx.hopital.test\"\n"));
    let forged = "Authentication-Results: mx.hopital.test.evil; dkim=pass header.d=inter-amc.test\r\n\
        From: <notifications@inter-amc.test>\r\nSubject: ouverture\r\nMessage-ID: <x@test>\r\n\r\n\
        OUVERTURE | 2026-11-25 | 123456789 | MUTUELLE | a.roc.test\r\n";
    std::fs::write(sb.path("forged.eml"), forged).unwrap();
    let shown = sb.json(&["inspect", "mail", sb.path("forged.eml").to_str().unwrap(), "--json"]);
    assert_ne!(shown["dkim"], "pass", "{shown:#}");
}

/// Found by the second attack: `--by` and `--comment` were stored and shown raw, so a decision
/// could forge an audit line or clear the reviewer's screen.
#[test]
fn who_decides_and_why_are_escaped_like_every_outside_text() {
    let sb = Sandbox::new("review", "urls-v1.json");
    sb.ok(&["once"]);
    sb.ok(&["reject", "1", "--by", "Eve\r\nBcc: x\n2026-01-01T00:00:00Z  admin  plan.approved", "--comment", "ok\u{1b}[2J\nforged"]);
    for args in [&["audit"][..], &["plan", "show", "1"]] {
        let text = sb.ok(args);
        assert!(!text.contains('\u{1b}'), "{args:?}: a raw escape\n{text}");
        for forged in ["forged", "Bcc:", "2026-01-01T00:00:00Z"] {
            assert!(!text.lines().any(|l| l.trim_start().starts_with(forged)), "{args:?}: a forged line `{forged}`\n{text}");
        }
    }
}

