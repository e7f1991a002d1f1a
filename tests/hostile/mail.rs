//! Hostile Inter-AMC notifications delivered to a Maildir, each reproducing one defect of the
//! hardening issue: a DKIM pass for another domain, a forged pass below the receiving server's
//! fail, a duplicate that took the flag of a verdict it never had, a record-like line with an
//! unknown action skipped in silence, and a message far over any notification's size read whole.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::util::{OUTPUTS, Sandbox, stderr};
use crate::util::{deliver, maildir};

const SENDER: &str = "notifications@inter-amc.test";
const TRUSTED: &str = "trusted_authserv_id = \"mx.hopital.test\"\n";
const LIMIT: u64 = 10_000;
/// What the receiving server writes for a message signed by the From domain.
const ALIGNED: &str = "mx.hopital.test; dkim=pass header.d=inter-amc.test; spf=pass smtp.mailfrom=inter-amc.test";

/// The configuration (without the outputs): notifications from a Maildir, only from `allowed`,
/// DKIM required, the receiving server named, and a small size limit.
fn config(allowed: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n\
         [notifications]\nenabled = true\nsource = \"maildir\"\nallowed_senders = [\"{allowed}\"]\n\
         require_dkim_pass = true\n{TRUSTED}max_message_bytes = {LIMIT}\n\
         [notifications.maildir]\npath = \"Maildir\"\n"
    )
}

fn sandbox(config_text: &str) -> (Sandbox, PathBuf) {
    let sb = Sandbox::with_config(config_text);
    sb.set_answer("urls-v1.json");
    let root = maildir(&sb);
    (sb, root)
}

/// A notification from `from` with these `Authentication-Results`, topmost first.
fn message(id: &str, from: &str, results: &[&str], body: &str) -> String {
    let headers: String = results.iter().map(|r| format!("Authentication-Results: {r}\r\n")).collect();
    format!(
        "Return-Path: <{from}>\r\n{headers}From: Inter-AMC <{from}>\r\nTo: dsi-roc@chu-exemple.test\r\n\
         Subject: [ROC] Mise a jour des URL : ouverture\r\nDate: Fri, 20 Nov 2026 09:15:00 +0100\r\n\
         Message-ID: <{id}>\r\nContent-Type: text/plain; charset=\"utf-8\"\r\nMIME-Version: 1.0\r\n\r\n{body}"
    )
}

/// A body announcing the opening of `host`.
fn opening(host: &str) -> String {
    format!("Bonjour,\r\n\r\nOUVERTURE | 2026-11-25 | 891234567 | MUTUELLE HOSTILE | {host}\r\n\r\nCordialement\r\n")
}


fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The recorded notification under `key`.
fn row(sb: &Sandbox, key: &str) -> Value {
    let rows = sb.json(&["notifications", "--json"]);
    rows.as_array().unwrap().iter().find(|r| r["key"] == key).cloned().unwrap_or_else(|| panic!("{key} is not recorded: {rows}"))
}

/// The hosts plan `id` adds.
fn added(sb: &Sandbox, id: &str) -> Vec<String> {
    let plan = sb.json(&["plan", "show", id, "--format", "json"]);
    plan["added"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap().to_owned()).collect()
}

fn plan_count(sb: &Sandbox) -> usize {
    sb.json(&["plan", "list", "--json"]).as_array().unwrap().len()
}

#[test]
fn a_dkim_pass_for_another_domain_is_not_a_pass() {
    let (sb, root) = sandbox(&config(SENDER));
    let misaligned = message("misaligned@inter-amc.test", SENDER, &["mx.hopital.test; dkim=pass header.d=attacker.test"], &opening("idb.attacker-amc.test"));
    deliver(&root, "1763600001.M1P1.mx", &misaligned);
    // The control: the same message, signed by the From domain, is used.
    deliver(&root, "1763600002.M2P1.mx", &message("aligned@inter-amc.test", SENDER, &[ALIGNED], &opening("idb.mutuelle-hostile.test")));
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 1 used, 1 rejected, 0 without change, 0 unreadable, 0 already seen"), "{out}");
    let rejected = row(&sb, "misaligned@inter-amc.test");
    assert_eq!(rejected["verdict"], "rejected", "{rejected}");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(reason.contains("header.d=`attacker.test`, not aligned with the From domain `inter-amc.test`"), "{reason}");
    assert_eq!(row(&sb, "aligned@inter-amc.test")["verdict"], "used");
    assert_eq!(names_in(&root.join("cur")), ["1763600001.M1P1.mx:2,FS", "1763600002.M2P1.mx:2,S"]);
    // Only the aligned message's host waits for approval; the other went nowhere.
    assert_eq!(added(&sb, "2"), ["idb.mutuelle-hostile.test"]);
    assert_eq!(plan_count(&sb), 2);
    assert!(!sb.read("out/hosts.txt").contains("attacker"));
}

#[test]
fn a_forged_pass_below_the_receiving_servers_fail_does_not_count() {
    // The receiving server's own header is on top; the pass below came with the message.
    let forged = message(
        "forged@inter-amc.test",
        SENDER,
        &["mx.hopital.test; dkim=fail header.d=inter-amc.test", "mx.hopital.test; dkim=pass header.d=inter-amc.test"],
        &opening("idb.forged-amc.test"),
    );
    let (sb, root) = sandbox(&config(SENDER));
    deliver(&root, "1763600001.M1P1.mx", &forged);
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 0 used, 1 rejected"), "{out}");
    let rejected = row(&sb, "forged@inter-amc.test");
    assert_eq!(rejected["verdict"], "rejected", "{rejected}");
    let reason = rejected["reason"].as_str().unwrap();
    assert!(reason.contains("dkim fail") && reason.contains("topmost Authentication-Results header of mx.hopital.test"), "{reason}");
    assert_eq!(names_in(&root.join("cur")), ["1763600001.M1P1.mx:2,FS"]);
    assert_eq!(plan_count(&sb), 1, "the forged opening is proposed nowhere");

    // Without a trusted server, the same: only the topmost header counts, and the reason says so.
    let (sb, root) = sandbox(&config(SENDER).replace(TRUSTED, ""));
    deliver(&root, "1763600001.M1P1.mx", &forged);
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 0 used, 1 rejected"), "{out}");
    let reason = row(&sb, "forged@inter-amc.test")["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("only the topmost header counts") && reason.contains("trusted_authserv_id is not set"), "{reason}");
    assert_eq!(plan_count(&sb), 1);
}

#[test]
fn a_duplicate_is_flagged_by_its_recorded_verdict() {
    // First pass: only autre@ is allowed, so the message from notifications@ is rejected.
    let (sb, root) = sandbox(&config("autre@inter-amc.test"));
    let from_sender = message("premier@inter-amc.test", SENDER, &[ALIGNED], &opening("idb.rejetee-amc.test"));
    let from_other = message("second@inter-amc.test", "autre@inter-amc.test", &[ALIGNED], &opening("idb.mutuelle-hostile.test"));
    deliver(&root, "1763600001.M1P1.mx", &from_sender);
    deliver(&root, "1763600002.M2P1.mx", &from_other);
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 1 used, 1 rejected"), "{out}");
    // The allow-list changes the other way round, and both messages are delivered again: each
    // copy would now be judged the other way, but each was recorded already.
    sb.write_config(&format!("{}\n{OUTPUTS}", config(SENDER)));
    deliver(&root, "1763600003.M3P1.mx", &from_sender);
    deliver(&root, "1763600004.M4P1.mx", &from_other);
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 0 used, 0 rejected, 0 without change, 0 unreadable, 2 already seen"), "{out}");
    assert_eq!(
        names_in(&root.join("cur")),
        ["1763600001.M1P1.mx:2,FS", "1763600002.M2P1.mx:2,S", "1763600003.M3P1.mx:2,FS", "1763600004.M4P1.mx:2,S"]
    );
    assert_eq!(row(&sb, "premier@inter-amc.test")["verdict"], "rejected");
    assert_eq!(row(&sb, "second@inter-amc.test")["verdict"], "used");
    assert_eq!(added(&sb, "2"), ["idb.mutuelle-hostile.test"]);
    assert_eq!(plan_count(&sb), 2);
}

#[test]
fn a_five_field_line_with_an_unknown_action_is_a_rejected_line() {
    let (sb, root) = sandbox(&config(SENDER));
    let body = "Ouverture prévue :\r\n\
                MODIFICATION | 2026-11-25 | 891234567 | MUTUELLE HOSTILE | idb.modif-amc.test\r\n\
                OUVERTURE | 2026-11-25 | 891234567 | MUTUELLE HOSTILE | idb.mutuelle-hostile.test\r\n";
    deliver(&root, "1763600001.M1P1.mx", &message("modification@inter-amc.test", SENDER, &[ALIGNED], body));
    // A message whose only change-like line has an unknown action: no change, and says why.
    let alone = "Modification prévue :\r\nMISE A JOUR ; 2026-11-25 ; 891234567 ; MUTUELLE HOSTILE ; idb.maj-amc.test\r\n";
    deliver(&root, "1763600002.M2P1.mx", &message("maj@inter-amc.test", SENDER, &[ALIGNED], alone));
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 1 used, 0 rejected, 1 without change"), "{out}");
    let used = row(&sb, "modification@inter-amc.test");
    assert_eq!(used["verdict"], "used");
    // The prose line is not a rejected line; the MODIFICATION line is, with its place and reason.
    assert_eq!(
        used["rejected_lines"],
        json!([{"part": "body", "line": 2, "text": "MODIFICATION | 2026-11-25 | 891234567 | MUTUELLE HOSTILE | idb.modif-amc.test",
                "reason": "`MODIFICATION` is neither OUVERTURE nor FERMETURE"}])
    );
    let no_change = row(&sb, "maj@inter-amc.test");
    assert_eq!(no_change["verdict"], "no_change");
    assert_eq!(no_change["reason"], "no change found in the message, 1 line(s) rejected");
    assert_eq!(no_change["rejected_lines"][0]["reason"], "`MISE A JOUR` is neither OUVERTURE nor FERMETURE");
    assert_eq!(names_in(&root.join("cur")), ["1763600001.M1P1.mx:2,S", "1763600002.M2P1.mx:2,FS"]);
    assert_eq!(added(&sb, "2"), ["idb.mutuelle-hostile.test"]);
}

#[test]
fn a_message_over_the_size_limit_is_set_aside_unread() {
    let (sb, root) = sandbox(&config(SENDER));
    // A real notification, padded to about 50 KB: five times the limit.
    let padding = "Ligne de remplissage sans importance pour la notification.\r\n".repeat(850);
    let large = message("grand@inter-amc.test", SENDER, &[ALIGNED], &format!("{}{padding}", opening("idb.grand-amc.test")));
    assert!(large.len() > 45_000 && large.len() as u64 > 4 * LIMIT, "{}", large.len());
    deliver(&root, "1763600001.M1P1.mx", &large);
    // The control: a message within the limit is read as usual.
    deliver(&root, "1763600002.M2P1.mx", &message("petit@inter-amc.test", SENDER, &[ALIGNED], &opening("idb.mutuelle-hostile.test")));
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 1 used, 0 rejected, 0 without change, 1 unreadable, 0 already seen"), "{out}");
    // Never read: recorded by where it lay, not by its Message-ID, with its size and the limit.
    let set_aside = row(&sb, "maildir:1763600001.M1P1.mx");
    assert_eq!(set_aside["verdict"], "unreadable", "{set_aside}");
    let reason = set_aside["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("{} bytes", large.len())) && reason.contains(&format!("max_message_bytes = {LIMIT}")), "{reason}");
    assert_eq!(set_aside["sender"], Value::Null);
    assert_eq!(names_in(&root.join("cur")), ["1763600001.M1P1.mx:2,FS", "1763600002.M2P1.mx:2,S"]);
    assert_eq!(added(&sb, "2"), ["idb.mutuelle-hostile.test"], "the large message's opening is proposed nowhere");
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("notification.unreadable"), "{audit}");
}

#[test]
fn a_size_limit_of_zero_is_a_config_error() {
    let (sb, _root) = sandbox(&config(SENDER).replace(&format!("max_message_bytes = {LIMIT}"), "max_message_bytes = 0"));
    let out = sb.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("notifications.max_message_bytes") && err.contains("must be more than 0"), "{err}");
}

/// Found by the attacker helper: a Maildir file name holding a newline (chosen by whoever
/// delivers) added a forged line to `rocsync notifications`.
#[test]
fn a_maildir_file_name_with_a_newline_forges_no_line() {
    let (sb, root) = sandbox(&config(SENDER));
    let name = "m3\u{1b}[31m\nforged.h:2,";
    deliver(&root, name, &message("forged-name@inter-amc.test", SENDER, &[ALIGNED], &opening("neuf.hostile.test")));
    sb.ok(&["once"]);
    let shown = sb.ok(&["notifications"]);
    assert!(!shown.lines().any(|l| l.trim_start().starts_with("forged.h")), "{shown}");
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    assert!(shown.contains("m3\\u{1b}[31m\\nforged.h:2,"), "{shown}");
}

/// Found by the attacker helper: `From:` with two addresses counted as the first one.
#[test]
fn a_message_from_several_senders_has_no_sender() {
    let (sb, root) = sandbox(&config(SENDER));
    let text = message("two-senders@inter-amc.test", SENDER, &[ALIGNED], &opening("deux.hostile.test"))
        .replacen(&format!("From: Inter-AMC <{SENDER}>"), &format!("From: <{SENDER}>, <evil@attacker.test>"), 1);
    assert!(text.contains("evil@attacker.test"), "the test message has two senders");
    deliver(&root, "two-senders", &text);
    sb.ok(&["once"]);
    let list = sb.json(&["notifications", "--json"]);
    assert!(list.to_string().contains("\"rejected\""), "{list:#}");
}

