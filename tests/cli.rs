//! The `rocsync` command line over the shared fixtures: what an engineer and an RSSI do.

mod util;

use std::fs;

use serde_json::Value;
use util::{Sandbox, fixture, stderr, stdout};

fn hosts_of(plan_part: &Value) -> Vec<String> {
    plan_part.as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap().to_owned()).collect()
}

fn plan_json(sb: &Sandbox, id: i64) -> Value {
    sb.json(&["plan", "show", &id.to_string(), "--format", "json"])
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn inspect_json_and_xml_answers_agree() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let json = sb.json(&["inspect", "annuaire", fixture("annuaire/urls-v1.json").to_str().unwrap(), "--json"]);
    let xml = sb.json(&["inspect", "annuaire", fixture("annuaire/urls-v1.xml").to_str().unwrap(), "--json"]);
    assert_eq!((json["format"].as_str(), xml["format"].as_str()), (Some("json"), Some("xml")));
    assert_eq!(json["serial"], 4182);
    assert_eq!(json["generated_at"], "2026-11-20T08:00:00Z");
    assert_eq!(json["hosts"], xml["hosts"]);
    assert_eq!(json["amcs"], xml["amcs"]);
    assert_eq!(json["rejected"], serde_json::json!([]));
    assert_eq!(json["amcs"][0], serde_json::json!({"number": "123456789", "name": "MUTUELLE EXEMPLE", "state": "cercle_de_confiance"}));
    let hosts = json["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "sorted, each host once");
    let find = |name: &str| hosts.iter().find(|h| h["host"] == name).unwrap_or_else(|| panic!("{name}"));
    assert_eq!(
        find("idb.otp-ouest.test"),
        &serde_json::json!({"host": "idb.otp-ouest.test", "wildcard": false, "ports": [443],
                            "amcs": ["0432109876", "567891234"], "services": ["IDB"]})
    );
    assert_eq!(find("clc.roc.mutuelle-exemple.test")["ports"], serde_json::json!([8443]));
    assert_eq!(find("*.api.mutuelle-exemple.test")["wildcard"], true);
    // The answer as it is, AMCs that left or are under watch included: policy comes later.
    assert!(names.contains(&"idb.ancienne-mutuelle.test") && names.contains(&"idb.mutuelle-miroir.test"));
}

#[test]
fn inspect_every_fixture() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    for entry in fs::read_dir(fixture("annuaire")).unwrap() {
        let path = entry.unwrap().path();
        let out = sb.run(&["inspect", "annuaire", path.to_str().unwrap(), "--json"]);
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "error-503.html" {
            assert_eq!(out.status.code(), Some(2), "{name}");
            assert!(stderr(&out).contains(path.to_str().unwrap()), "the message names the file: {}", stderr(&out));
            assert!(stderr(&out).contains("HTML page"), "{}", stderr(&out));
            assert!(stdout(&out).is_empty());
        } else {
            assert!(out.status.success(), "{name}: {}", stderr(&out));
            let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(doc["hosts"].is_array() && doc["amcs"].is_array(), "{name}");
        }
    }
    // Text output too, grouped by AMC.
    let text = sb.ok(&["inspect", "annuaire", fixture("annuaire/urls-v1.xml").to_str().unwrap()]);
    assert!(text.contains("MUTUELLE DU BOCAGE (0432109876)  cercle_de_confiance"), "{text}");
}

#[test]
fn inspect_refuses_what_is_not_an_answer() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    for (name, body, why) in [
        ("empty.json", "", "empty"),
        ("truncated.json", "{\"organismes\": [{\"numero_amc\": \"1234", "invalid JSON at line 1"),
        ("no-list.json", "{\"serie\": 3}", "no `organismes` list"),
        ("fault.xml", "<Envelope><Body><Fault><faultstring>Acces refuse</faultstring></Fault></Body></Envelope>", "SOAP fault: Acces refuse"),
    ] {
        fs::write(sb.path(name), body).unwrap();
        let out = sb.run(&["inspect", "annuaire", name]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains(name) && stderr(&out).contains(why), "{name}: {}", stderr(&out));
    }
    let out = sb.run(&["inspect", "annuaire", "missing.json"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn inspect_keeps_rejected_values_with_reasons() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    fs::write(
        sb.path("bad.json"),
        r#"{"organismes": [{"numero_amc": "123456789", "libelle": "X", "etat": "cercle_de_confiance",
            "services": [{"code": "IDB", "url": "https://idb.x.test/"}], "domaines": ["*.fr", "a b.test"]}]}"#,
    )
    .unwrap();
    let doc = sb.json(&["inspect", "annuaire", "bad.json", "--json"]);
    assert_eq!(hosts_of(&doc["hosts"]), ["idb.x.test"]);
    let rejected = doc["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["amc"], "123456789");
    assert_eq!(rejected[0]["value"], "*.fr");
    assert!(rejected[0]["reason"].as_str().unwrap().contains("public suffix"));
}

#[test]
fn first_run_applies_the_annuaire_and_writes_every_file() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 1  applied"), "{out}");
    assert!(out.contains("MUTUELLE EXEMPLE (123456789)"), "{out}");
    assert!(!out.contains("MUTUELLE MIROIR") && !out.contains("ANCIENNE MUTUELLE"), "{out}");
    assert_eq!(
        lines(&sb.read("out/squid.acl")),
        [
            ".api.mutuelle-exemple.test",
            ".roc.mgt-sante.test",
            "amc.mgt-sante.test",
            "clc.otp-ouest.test",
            "clc.roc.mutuelle-exemple.test",
            "idb.otp-ouest.test",
            "idb.roc.mutuelle-exemple.test",
            "roc-clc.prevoyance-artisans.test",
            "roc-idb.prevoyance-artisans.test",
            "roc.ip-zero.test",
            "roc.mutuelle-exemple.test",
            "ws.caisse-solidaire.test",
        ]
    );
    assert_eq!(sb.read("out/hosts.txt").lines().count(), 12);
    assert!(sb.read("out/rocsync.nft").contains("table inet rocsync {"));
    // A second pass finds nothing to do.
    let again = sb.ok(&["once"]);
    assert!(again.contains("Nothing to change"), "{again}");
}

#[test]
fn v1_to_v2_opens_closes_and_keeps_the_shared_host() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    sb.set_answer("urls-v2.json");
    let out = sb.ok(&["plan"]);
    assert!(out.contains("Plan 2  ready"), "{out}");
    let plan = plan_json(&sb, 2);
    assert_eq!(
        hosts_of(&plan["added"]),
        ["clc.nouvelle-mutuelle-sud.test", "idb.nouvelle-mutuelle-sud.test", "idb2.roc.mutuelle-exemple.test"]
    );
    assert_eq!(hosts_of(&plan["removed"]), ["idb.roc.mutuelle-exemple.test"]);
    assert_eq!(plan["needs_approval"], false);
    // OPERATEUR TIERS PAYANT OUEST left; MUTUELLE DU BOCAGE still uses its hosts.
    let changed = plan["changed"].as_array().unwrap();
    let shared = changed.iter().find(|c| c["host"] == "idb.otp-ouest.test").expect("shared host changed");
    assert_eq!(shared["before"]["amcs"], serde_json::json!(["0432109876", "567891234"]));
    assert_eq!(shared["after"]["amcs"], serde_json::json!(["0432109876"]));
    let text = sb.ok(&["plan", "show", "2"]);
    assert!(text.contains("stays open for MUTUELLE DU BOCAGE (0432109876)"), "{text}");
    let diff = sb.ok(&["plan", "show", "2", "--format", "diff"]);
    assert!(diff.contains("\n-idb.roc.mutuelle-exemple.test:443\n") && diff.contains("\n+idb2.roc.mutuelle-exemple.test:443\n"), "{diff}");
    assert!(!diff.contains("otp-ouest"), "provenance changes do not change enforcement: {diff}");
    // Without the resolver there are no addresses: the nft view says so rather than printing
    // commands that would empty the sets.
    let nft = sb.ok(&["plan", "show", "2", "--format", "nft"]);
    assert!(nft.contains("# idb2.roc.mutuelle-exemple.test: not resolved yet"), "{nft}");
    assert!(nft.contains("# No element changes.") && !nft.contains("delete element"), "{nft}");
    sb.ok(&["apply", "2", "--by", "tester"]);
    let hosts = sb.read("out/hosts.txt");
    assert!(hosts.contains("idb.otp-ouest.test\n") && hosts.contains("idb2.roc.mutuelle-exemple.test\n"));
    assert!(!hosts.contains("idb.roc.mutuelle-exemple.test\n"));
    assert_eq!(hosts.lines().count(), 14);
}

#[test]
fn an_emptied_annuaire_waits_for_approval_in_auto_mode() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    sb.set_answer("empty-organismes.json");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 2  pending"), "{out}");
    let plan = plan_json(&sb, 2);
    assert_eq!(plan["needs_approval"], true);
    assert_eq!(plan["status"], "pending");
    assert_eq!(hosts_of(&plan["removed"]).len(), 12);
    let reasons = plan["reasons"].to_string();
    assert!(reasons.contains("closes 12 of the 12 hosts in force (100%)"), "{reasons}");
    assert!(reasons.contains("review.max_removal_hosts = 10"), "{reasons}");
    assert_eq!(sb.outputs(), before, "nothing closed before approval");
    // A rejection keeps what is in force, and is recorded.
    sb.ok(&["reject", "2", "--by", "rssi", "--comment", "empty answer, not real"]);
    assert_eq!(sb.outputs(), before);
    assert_eq!(plan_json(&sb, 2)["decisions"][0]["comment"], "empty answer, not real");
    let apply = sb.run(&["apply", "2"]);
    assert_eq!(apply.status.code(), Some(1));
    assert!(stderr(&apply).contains("plan 2 is rejected"), "{}", stderr(&apply));
}

#[test]
fn an_outage_page_changes_nothing() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    let plans_before = sb.json(&["plan", "list", "--json"]);
    sb.set_answer("urls-v1.json");
    fs::copy(fixture("annuaire/error-503.html"), sb.path("annuaire.json")).unwrap();
    let out = sb.run(&["once"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("annuaire.json is not an annuaire answer"), "{}", stderr(&out));
    assert!(stderr(&out).contains("what is in force stays in force"), "{}", stderr(&out));
    assert_eq!(sb.outputs(), before);
    assert_eq!(sb.json(&["plan", "list", "--json"]), plans_before, "no plan made");
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["last_source_read"]["ok"], false);
    assert_eq!(status["last_successful_read"]["serial"], 4182);
    assert_eq!(status["in_force"]["hosts"], 12);
    let out = sb.run(&["plan", "--source", fixture("annuaire/error-503.html").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn review_mode_approve_applies_and_audits() {
    let sb = Sandbox::new("review", "urls-v1.json");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 1  pending"), "{out}");
    assert!(out.contains("rocsync approve 1 --by NAME"), "{out}");
    assert!(!sb.path("out/squid.acl").exists(), "nothing enforced before approval");
    let list = sb.ok(&["plan", "list"]);
    assert!(list.contains("pending") && list.contains("+12 -0 ~0"), "{list}");
    let show = sb.ok(&["plan", "show", "1"]);
    assert!(show.contains("review mode: every plan waits for approval"), "{show}");
    let approved = sb.ok(&["approve", "1", "--by", "J. Martin (RSSI)", "--comment", "ticket 42"]);
    assert!(approved.contains("Plan 1 approved by J. Martin (RSSI); it is now applied."), "{approved}");
    assert_eq!(lines(&sb.read("out/squid.acl")).len(), 12);
    let audit = sb.json(&["audit", "--json"]);
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [("plan.created", "rocsync"), ("plan.approved", "J. Martin (RSSI)"), ("plan.applied", "J. Martin (RSSI)")]
    );
    assert_eq!(audit[1]["detail"], "ticket 42");
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["in_force"]["plan"], 1);
    assert_eq!(status["open_plans"], serde_json::json!([]));
}

#[test]
fn hybrid_mode_applies_openings_and_holds_the_rest() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    sb.ok(&["once"]);
    sb.set_answer("urls-v2.json");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 2  applied") && out.contains("Plan 3  pending"), "{out}");
    let hosts = sb.read("out/hosts.txt");
    assert!(hosts.contains("idb2.roc.mutuelle-exemple.test\n"), "the opening is in force");
    assert!(hosts.contains("idb.roc.mutuelle-exemple.test\n"), "the closing waits");
    sb.ok(&["approve", "3", "--by", "rssi"]);
    assert!(!sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test\n"));
}

#[test]
fn approving_a_stale_plan_is_refused() {
    let sb = Sandbox::new("review", "urls-v1.json");
    sb.ok(&["once"]);
    sb.set_answer("urls-v2.json");
    sb.ok(&["plan"]);
    // Plan 2 superseded plan 1, computed from an older read.
    assert_eq!(plan_json(&sb, 1)["status"], "superseded");
    let out = sb.run(&["approve", "1", "--by", "rssi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("plan 1 is superseded"), "{}", stderr(&out));
}

#[test]
fn dry_run_stores_and_writes_nothing() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let out = sb.ok(&["once", "--dry-run"]);
    assert!(out.contains("would be applied") && out.contains("Dry run: nothing was stored or written."), "{out}");
    assert!(!sb.path("out").exists());
    assert_eq!(sb.json(&["plan", "list", "--json"]), serde_json::json!([]));
}

#[test]
fn a_killed_apply_leaves_the_old_files() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    sb.set_answer("urls-v2.json");
    // Dies after writing every temporary file, before the first rename.
    let out = sb.cmd().arg("once").env("ROCSYNC_FAILPOINT", "files-before-rename").output().unwrap();
    assert!(!out.status.success() && out.status.code().is_none(), "killed by a signal: {:?}", out.status);
    assert_eq!(sb.outputs(), before, "the old files are intact");
    assert_eq!(sb.json(&["status", "--json"])["in_force"]["plan"], 1, "the store says the old state too");
    // Dies after the files, before the store commit: the next pass brings them back in line.
    let out = sb.cmd().arg("once").env("ROCSYNC_FAILPOINT", "apply-before-commit").output().unwrap();
    assert!(out.status.code().is_none());
    assert_eq!(sb.json(&["status", "--json"])["in_force"]["plan"], 1);
    let out = sb.ok(&["once"]);
    assert!(out.contains("applied"), "{out}");
    assert_eq!(sb.read("out/hosts.txt").lines().count(), 14);
    let leftovers: Vec<_> = fs::read_dir(sb.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rocsync-tmp"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

#[test]
fn an_output_edited_by_hand_is_repaired_and_reported() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let before = sb.outputs();
    fs::write(sb.path("out/squid.acl"), ".evil.test\n").unwrap();
    let status = sb.ok(&["status"]);
    assert!(status.contains("squid.acl differs from what rocsync wrote"), "{status}");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Repaired"), "{out}");
    assert_eq!(sb.outputs(), before);
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("sink.repaired"), "{audit}");
}

#[test]
fn check_config_reports_every_problem() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    assert!(sb.ok(&["check-config"]).contains("OK"));
    sb.write_config(
        "[annuaire]\nurl = \"file:missing.json\"\npoll_intervall = \"10m\"\n\
         [review]\nmode = \"automatic\"\n[exports.squid]\npath = \"out/s.acl\"\n[stor]\nstate_dir = \"x\"\n",
    );
    let out = sb.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("rocsync.toml: 4 problem(s)"), "{err}");
    assert!(err.contains("line 3, column 1: `annuaire.poll_intervall`: unknown key; did you mean `poll_interval`?"), "{err}");
    assert!(err.contains("line 5, column 8: `review.mode`: unknown variant `automatic`"), "{err}");
    assert!(err.contains("line 8, column 2: `stor`: unknown key; did you mean `store`?"), "{err}");
    assert!(err.contains("missing.json is not a readable file"), "{err}");
    // Every command refuses to run on it.
    assert_eq!(sb.run(&["once"]).status.code(), Some(1));
}

#[test]
fn the_readme_first_command_works_on_a_fresh_copy() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::copy(root.join("config.example.toml"), dir.path().join("config.example.toml")).unwrap();
    fs::create_dir(dir.path().join("samples")).unwrap();
    fs::copy(root.join("samples/annuaire-urls.json"), dir.path().join("samples/annuaire-urls.json")).unwrap();
    let out = assert_cmd::Command::cargo_bin("rocsync")
        .unwrap()
        .current_dir(dir.path())
        .args(["once", "--config", "config.example.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["rocsync-out/squid-roc.acl", "rocsync-out/roc-hosts.txt", "rocsync-out/rocsync.nft", "rocsync-state/state.db"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
}

#[test]
fn help_has_examples() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let help = sb.ok(&["--help"]);
    assert!(help.contains("Examples:") && help.contains("rocsync approve 4 --by"), "{help}");
    let help = sb.ok(&["approve", "--help"]);
    assert!(help.contains("Example:"), "{help}");
}

#[test]
fn inspect_every_mail_fixture() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let read = |name: &str| sb.json(&["inspect", "mail", fixture(&format!("mail/{name}")).to_str().unwrap(), "--json"]);
    let hosts = |doc: &Value| -> Vec<(String, String)> {
        doc["changes"].as_array().unwrap().iter().map(|c| (c["action"].as_str().unwrap().to_owned(), c["host"].as_str().unwrap().to_owned())).collect()
    };
    let text = read("ouverture-texte.eml");
    assert_eq!(text["message_id"], "ouverture-texte@inter-amc.test");
    assert_eq!(text["from"], "notifications@inter-amc.test");
    assert_eq!(text["dkim"], "pass");
    assert_eq!(
        text["changes"][1],
        serde_json::json!({"action": "open", "effective": "2026-11-25", "amc": "891234567", "name": "NOUVELLE MUTUELLE DU SUD",
                           "host": "idb.nouvelle-mutuelle-sud.test", "wildcard": false})
    );
    let html = read("ouverture-html-latin1.eml");
    assert_eq!(hosts(&html), [("open".to_owned(), "*.roc.mgt-sante.test".to_owned())]);
    assert_eq!(html["changes"][0]["wildcard"], true);
    assert_eq!(html["changes"][0]["name"], "MUTUELLE GÉNÉRALE DES TERRITOIRES");
    let csv = read("fermeture-csv.eml");
    assert_eq!(hosts(&csv), [("close".to_owned(), "clc.otp-ouest.test".to_owned()), ("close".to_owned(), "idb.otp-ouest.test".to_owned())]);
    let spoofed = read("expediteur-inconnu.eml");
    assert_eq!((spoofed["from"].as_str(), spoofed["dkim"].as_str()), (Some("support@inter-amc-securite.test"), Some("fail")));
    let none = read("sans-changement.eml");
    assert_eq!(none["changes"], serde_json::json!([]));
    assert_eq!(none["rejected_lines"], serde_json::json!([]));
    // Every fixture reads; something that is not a message exits 2.
    for entry in fs::read_dir(fixture("mail")).unwrap() {
        let path = entry.unwrap().path();
        assert!(sb.run(&["inspect", "mail", path.to_str().unwrap()]).status.success(), "{}", path.display());
    }
    fs::write(sb.path("empty.eml"), "").unwrap();
    let out = sb.run(&["inspect", "mail", "empty.eml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("empty.eml: not an e-mail message"), "{}", stderr(&out));
}

#[test]
fn post_write_commands_run_after_a_change_and_their_failure_is_audited() {
    let sb = Sandbox::with_config(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n\
         [exports.json]\npath = \"out/hosts.json\"\npost_write_command = [\"sh\", \"-c\", \"echo reloaded >> reload.log\"]\n\
         [exports.haproxy]\npath = \"out/haproxy.acl\"\npost_write_command = [\"sh\", \"-c\", \"echo no haproxy here >&2; exit 1\"]\n",
    );
    sb.set_answer("urls-v1.json");
    sb.ok(&["once"]);
    assert_eq!(sb.read("reload.log"), "reloaded\n");
    let doc: Value = serde_json::from_str(&sb.read("out/hosts.json")).unwrap();
    assert_eq!(doc["hosts"].as_array().unwrap().len(), 12);
    assert!(sb.read("out/haproxy.acl").contains("^idb\\.roc\\.mutuelle-exemple\\.test$"));
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("export.post_write_failed") && audit.contains("no haproxy here"), "{audit}");
    // Nothing changed: nothing is reloaded.
    sb.ok(&["once"]);
    assert_eq!(sb.read("reload.log"), "reloaded\n");
    sb.set_answer("urls-v2.json");
    sb.ok(&["once"]);
    assert_eq!(sb.read("reload.log"), "reloaded\nreloaded\n");
}

#[test]
fn inspect_log_reports_blocked_amc_requests() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    let squid = fixture("logs/squid-access.log");
    let v2 = fixture("annuaire/urls-v2.json");
    let doc = sb.json(&["inspect", "log", squid.to_str().unwrap(), "--kind", "squid", "--annuaire", v2.to_str().unwrap(), "--json"]);
    assert_eq!(doc["other_denied"], 1);
    assert_eq!(doc["skipped_lines"], 1);
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0],
        serde_json::json!({"time": "1763630101.202", "client": "198.18.1.20", "host": "idb.nouvelle-mutuelle-sud.test",
                           "ip": null, "port": 443, "amcs": ["891234567"], "services": ["IDB"],
                           "idb": true, "in_force": false})
    );
    // From the store: the catalogue of the last answer read, and what is in force.
    sb.ok(&["once"]);
    let doc = sb.json(&["inspect", "log", squid.to_str().unwrap(), "--kind", "squid", "--json"]);
    let hosts: Vec<(&str, bool)> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["host"].as_str().unwrap(), e["in_force"].as_bool().unwrap()))
        .collect();
    // v1 does not list the new AMC: only the wildcard host is an AMC host, and it is in force.
    assert_eq!(hosts, [("x.api.mutuelle-exemple.test", true)]);
    assert_eq!(doc["other_denied"], 4);
    let text = sb.ok(&["inspect", "log", squid.to_str().unwrap(), "--kind", "squid"]);
    assert!(text.contains("yet blocked: the enforcement is broken"), "{text}");
    // nftables: addresses with no known host are reported with a null host.
    let nft = fixture("logs/nft-drop.log");
    let doc = sb.json(&["inspect", "log", nft.to_str().unwrap(), "--kind", "nft", "--json"]);
    assert_eq!(doc["events"].as_array().unwrap().len(), 3);
    assert_eq!(doc["events"][0]["host"], Value::Null);
    assert_eq!(doc["events"][2]["ip"], "2001:db8:3::40");
    assert_eq!(doc["skipped_lines"], 0);
}

/// Regression: a plan left waiting when the source went back to what is in force could still be
/// approved, and would have re-applied the older read.
#[test]
fn a_waiting_plan_is_superseded_when_the_source_returns_to_what_is_in_force() {
    let sb = Sandbox::new("review", "urls-v1.json");
    sb.ok(&["once"]);
    sb.ok(&["approve", "1", "--by", "rssi"]);
    sb.set_answer("urls-v2.json");
    assert!(sb.ok(&["once"]).contains("Plan 2  pending"));
    sb.set_answer("urls-v1.json");
    assert!(sb.ok(&["once"]).contains("Nothing to change"));
    assert_eq!(plan_json(&sb, 2)["status"], "superseded");
    let out = sb.run(&["approve", "2", "--by", "rssi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(sb.ok(&["audit"]).contains("the source now matches what is in force"));
}

#[test]
fn rollback_restores_an_earlier_state_through_an_approved_plan() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let v1 = sb.outputs();
    sb.set_answer("urls-v2.json");
    sb.ok(&["once"]);
    assert_ne!(sb.outputs(), v1);
    let out = sb.ok(&["rollback", "--by", "J. Martin (RSSI)"]);
    assert!(out.contains("Plan 3  pending") && out.contains("rollback to the state of plan 1, asked by J. Martin (RSSI)"), "{out}");
    assert!(out.contains("+ idb.roc.mutuelle-exemple.test") && out.contains("- idb2.roc.mutuelle-exemple.test"), "{out}");
    sb.ok(&["approve", "3", "--by", "J. Martin (RSSI)", "--comment", "IDB2 broken at the AMC"]);
    // The same hosts as after plan 1 (the files name the plan that wrote them).
    let hosts = |outputs: &[(String, String)]| outputs[1].1.clone();
    assert_eq!(hosts(&sb.outputs()), hosts(&v1));
    assert!(sb.ok(&["audit"]).contains("plan.rollback_requested"));
    // Nothing earlier to go back to than what is asked, and no plan that was never applied.
    let out = sb.run(&["rollback", "--to", "99", "--by", "x"]);
    assert!(stderr(&out).contains("plan 99 was never applied"), "{}", stderr(&out));
    let out = sb.run(&["rollback", "--to", "3", "--by", "x"]);
    assert!(stderr(&out).contains("already the state of plan 3"), "{}", stderr(&out));
}

#[test]
fn man_page_and_completions_cover_every_command() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    let man = sb.ok(&["man"]);
    assert!(man.starts_with(".ie") && man.contains(".TH rocsync 1"), "{}", &man[..200.min(man.len())]);
    let commands = ["once", "poll", "plan", "approve", "reject", "apply", "rollback", "status", "resolve", "notifications", "audit", "inspect", "check\\-config"];
    for c in commands {
        assert!(man.contains(c), "the man page lacks {c}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let text = sb.ok(&["completions", shell]);
        for c in ["approve", "check-config", "rollback", "inspect"] {
            assert!(text.contains(c), "{shell} completions lack {c}");
        }
    }
    assert!(!sb.ok(&["--help"]).contains("completions"), "hidden from --help");
}
