//! Inter-AMC notifications delivered to a Maildir: each message is read once, across runs and
//! duplicate deliveries; the spoofed sender is rejected; a message without a change is kept and
//! reported; openings only a notification names wait for approval in their own plan.

mod util;

use std::fs;
use std::path::Path;

use serde_json::Value;
use util::{Sandbox, fixture};
use util::{deliver, maildir};



fn deliver_fixture(root: &Path, n: u32, fixture_name: &str) {
    deliver(root, &format!("17636{n:05}.M{n}P1.mx.chu.test"), &fs::read(fixture(&format!("mail/{fixture_name}"))).unwrap());
}

fn sandbox(mode: &str) -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"{mode}\"\n\
         [notifications]\nenabled = true\nsource = \"maildir\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n\
         [notifications.maildir]\npath = \"Maildir\"\n"
    ));
    sb.set_answer("urls-v1.json");
    let root = maildir(&sb);
    (sb, root)
}

fn verdicts(sb: &Sandbox) -> Vec<(String, String)> {
    let rows = sb.json(&["notifications", "--json"]);
    let mut v: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap().to_owned(), r["verdict"].as_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn every_fixture_is_read_once_and_judged() {
    let (sb, root) = sandbox("auto");
    for (i, name) in ["ouverture-texte.eml", "ouverture-html-latin1.eml", "fermeture-csv.eml", "expediteur-inconnu.eml", "sans-changement.eml"]
        .iter()
        .enumerate()
    {
        deliver_fixture(&root, i as u32, name);
    }
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 3 used, 1 rejected, 1 without change, 0 unreadable, 0 already seen"), "{out}");
    assert_eq!(
        verdicts(&sb),
        [
            ("expediteur-inconnu@inter-amc.test".to_owned(), "rejected".to_owned()),
            ("fermeture-csv@inter-amc.test".to_owned(), "used".to_owned()),
            ("ouverture-html-latin1@inter-amc.test".to_owned(), "used".to_owned()),
            ("ouverture-texte@inter-amc.test".to_owned(), "used".to_owned()),
            ("sans-changement@inter-amc.test".to_owned(), "no_change".to_owned()),
        ]
    );
    let rows = sb.json(&["notifications", "--json"]);
    let spoofed = rows.as_array().unwrap().iter().find(|r| r["key"] == "expediteur-inconnu@inter-amc.test").unwrap();
    assert!(spoofed["reason"].as_str().unwrap().contains("support@inter-amc-securite.test"), "{spoofed}");
    // Nothing lost: every message moved to cur/, flagged for a person unless used.
    assert_eq!(names_in(&root.join("new")), Vec::<String>::new());
    let cur = names_in(&root.join("cur"));
    assert_eq!(cur.len(), 5);
    assert_eq!(cur.iter().filter(|n| n.ends_with(":2,FS")).count(), 2, "{cur:?}");
    // The annuaire's hosts applied at once; the hosts only the mail names wait in their own plan.
    assert!(out.contains("Plan 1  applied") && out.contains("Plan 2  pending"), "{out}");
    assert!(out.contains("[named only by an Inter-AMC notification]"), "{out}");
    let plan: Value = sb.json(&["plan", "show", "2", "--format", "json"]);
    let added: Vec<&str> = plan["added"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(added, ["clc.nouvelle-mutuelle-sud.test", "idb.nouvelle-mutuelle-sud.test"]);
    assert_eq!(plan["added"][0]["origins"], serde_json::json!(["notification"]));
    assert!(plan["reasons"][0].as_str().unwrap().contains("named only by an Inter-AMC notification"));
    // The spoofed sender's host went nowhere.
    assert!(!sb.read("out/hosts.txt").contains("exfil"));
    assert!(!serde_json::to_string(&plan).unwrap().contains("exfil"));
    // A second pass: nothing new to read, and the waiting plan keeps its id.
    let again = sb.ok(&["once"]);
    assert!(!again.contains("Notifications:"), "{again}");
    assert!(again.contains("Plan 2  pending"), "{again}");
    assert_eq!(sb.json(&["plan", "list", "--json"]).as_array().unwrap().len(), 2);
}

#[test]
fn approved_hint_is_applied_then_taken_over_by_the_annuaire() {
    let (sb, root) = sandbox("auto");
    deliver_fixture(&root, 1, "ouverture-texte.eml");
    sb.ok(&["once"]);
    sb.ok(&["approve", "2", "--by", "rssi", "--comment", "called the AMC"]);
    assert!(sb.read("out/hosts.txt").contains("idb.nouvelle-mutuelle-sud.test\n"));
    // The annuaire now lists the new AMC: its hosts become annuaire hosts.
    sb.set_answer("urls-v2.json");
    let out = sb.ok(&["once"]);
    assert!(out.contains("applied"), "{out}");
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["open_plans"], serde_json::json!([]), "{status}");
    let plan = sb.json(&["plan", "show", "3", "--format", "json"]);
    let changed = plan["changed"].as_array().unwrap();
    let idb = changed.iter().find(|c| c["host"] == "idb.nouvelle-mutuelle-sud.test").expect("provenance changed");
    assert_eq!(idb["after"]["origins"], serde_json::json!(["annuaire"]));
}

#[test]
fn a_rejected_hint_is_not_proposed_again() {
    let (sb, root) = sandbox("hybrid");
    deliver_fixture(&root, 1, "ouverture-texte.eml");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 2  pending"), "{out}");
    sb.ok(&["reject", "2", "--by", "rssi", "--comment", "not confirmed"]);
    let again = sb.ok(&["once"]);
    assert!(again.contains("Nothing to change"), "{again}");
}

#[test]
fn messages_arriving_while_stopped_and_duplicates_are_read_once() {
    let (sb, root) = sandbox("auto");
    deliver_fixture(&root, 1, "ouverture-texte.eml");
    sb.ok(&["once"]);
    // While rocsync is not running: a new message, and the same message delivered again.
    deliver_fixture(&root, 2, "fermeture-csv.eml");
    deliver_fixture(&root, 3, "ouverture-texte.eml");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 1 used, 0 rejected, 0 without change, 0 unreadable, 1 already seen"), "{out}");
    assert_eq!(verdicts(&sb).len(), 2);
    assert_eq!(names_in(&root.join("cur")).len(), 3);
    // Garbage is kept, flagged, and reported, never dropped.
    deliver(&root, "1763699999.M9P1.mx.chu.test", b"");
    let out = sb.ok(&["once"]);
    assert!(out.contains("1 unreadable"), "{out}");
    let rows = sb.json(&["notifications", "--json"]);
    assert!(rows.as_array().unwrap().iter().any(|r| r["verdict"] == "unreadable" && r["key"] == "maildir:1763699999.M9P1.mx.chu.test"));
    assert!(names_in(&root.join("cur")).contains(&"1763699999.M9P1.mx.chu.test:2,FS".to_owned()));
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("notification.unreadable") && audit.contains("notification.used"), "{audit}");
}

#[test]
fn a_maildir_that_is_not_one_is_a_config_error() {
    let sb = Sandbox::with_config(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[notifications]\nenabled = true\nsource = \"maildir\"\n\
         allowed_senders = [\"inter-amc.test\"]\n[notifications.maildir]\npath = \"nowhere\"\n",
    );
    sb.set_answer("urls-v1.json");
    let out = sb.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = util::stderr(&out);
    assert!(err.contains("nowhere is not a Maildir"), "{err}");
    assert!(err.contains("`inter-amc.test` is neither an address nor `@domain`"), "{err}");
}
