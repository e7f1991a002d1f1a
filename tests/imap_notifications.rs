//! Inter-AMC notifications read from a real IMAP server (Dovecot, started by the test on
//! loopback with TLS): every fixture e-mail is processed once, across restarts of rocsync; the
//! spoofed sender is rejected; the message without a change is reported, not lost.

mod util;

use util::dovecot::Dovecot;
use util::{Sandbox, fixture, stderr};

fn sandbox(server: &Dovecot) -> Sandbox {
    let sb = Sandbox::with_config("[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n");
    let config = std::fs::read_to_string(sb.path("rocsync.toml")).unwrap() + &server.config(sb.dir.path());
    sb.write_config(&config);
    sb.set_answer("urls-v1.json");
    sb
}

const FIXTURES: [&str; 5] =
    ["ouverture-texte.eml", "ouverture-html-latin1.eml", "fermeture-csv.eml", "expediteur-inconnu.eml", "sans-changement.eml"];

#[test]
fn every_fixture_is_processed_once_across_restarts() {
    if !util::have("dovecot", true) {
        return;
    }
    let server = Dovecot::start();
    let sb = sandbox(&server);
    assert!(sb.ok(&["check-config"]).contains("OK"));
    for (i, name) in FIXTURES.iter().enumerate() {
        server.deliver(&format!("1763600{i}.M{i}P1.mx"), &std::fs::read(fixture(&format!("mail/{name}"))).unwrap());
    }
    let out = sb.run(&["once"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), server.log());
    let text = util::stdout(&out);
    assert!(text.contains("Notifications: 3 used, 1 rejected, 1 without change, 0 unreadable, 0 already seen"), "{text}");
    assert!(text.contains("Plan 2  pending") && text.contains("named only by an Inter-AMC notification"), "{text}");
    // The INBOX holds what is still to read: nothing. Everything is in the processed folder.
    assert_eq!(server.folder_files("INBOX"), Vec::<String>::new());
    let processed = server.folder_files("rocsync-traites");
    assert_eq!(processed.len(), 5, "{processed:?}");
    assert_eq!(processed.iter().filter(|n| n.contains('F')).count(), 2, "rejected and no-change are flagged: {processed:?}");
    let rows = sb.json(&["notifications", "--json"]);
    let rejected: Vec<&str> = rows.as_array().unwrap().iter().filter(|r| r["verdict"] == "rejected").map(|r| r["key"].as_str().unwrap()).collect();
    assert_eq!(rejected, ["expediteur-inconnu@inter-amc.test"]);
    assert!(rows.as_array().unwrap().iter().any(|r| r["verdict"] == "no_change" && r["origin"].as_str().unwrap().starts_with("imap:INBOX/")));

    // rocsync restarts: nothing is processed again.
    let again = sb.ok(&["once"]);
    assert!(!again.contains("Notifications:"), "{again}");
    // A message arriving while rocsync is stopped, and the same one again, count once.
    server.deliver("1763609.M9P1.mx", &std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    let raw = std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap();
    let other = String::from_utf8_lossy(&raw).replace("<ouverture-texte@inter-amc.test>", "<autre@inter-amc.test>");
    server.deliver("1763610.M10P1.mx", other.as_bytes());
    let out = sb.ok(&["once"]);
    assert!(out.contains("Notifications: 1 used, 0 rejected, 0 without change, 0 unreadable, 1 already seen"), "{out}");
    assert_eq!(sb.json(&["notifications", "--json"]).as_array().unwrap().len(), 6);
    assert_eq!(server.folder_files("INBOX"), Vec::<String>::new());
}

#[test]
fn a_wrong_password_is_reported_and_loses_nothing() {
    if !util::have("dovecot", true) {
        return;
    }
    let server = Dovecot::start();
    let sb = sandbox(&server);
    std::fs::write(sb.path("imap.pass"), "wrong\n").unwrap();
    server.deliver("1.M1P1.mx", &std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    let out = sb.run(&["once"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("refused the login of `dsi`"), "{}", stderr(&out));
    assert_eq!(server.folder_files("INBOX").len(), 1, "the message is still there");
}

#[test]
fn idle_wakes_the_poller_when_a_message_arrives() {
    if !util::have("dovecot", true) {
        return;
    }
    let server = Dovecot::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let settings = server.settings();
        let task = {
            let (wake, stop) = (wake.clone(), stop.clone());
            tokio::spawn(async move {
                rocsync::sources::imap::watch(&settings, true, std::time::Duration::from_secs(3600), wake, stop.notified()).await
            })
        };
        // Let the watcher log in and enter IDLE.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        server.deliver("1.M1P1.mx", &std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
        let woke = tokio::time::timeout(std::time::Duration::from_secs(10), wake.notified()).await;
        assert!(woke.is_ok(), "IDLE did not report the message: {}", server.log());
        stop.notify_one();
        task.await.unwrap();
    });
}

/// A mailbox outage stopped the authoritative source: `once` read the mailbox first and gave
/// up with its error, so the annuaire was not read. Now the annuaire's change is applied, and
/// the command still fails, naming the mailbox.
#[test]
fn an_imap_outage_never_keeps_the_annuaire_from_being_read() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(); // closed once dropped
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\n[review]\nmode = \"auto\"\n\
         [notifications]\nenabled = true\nsource = \"imap\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n\
         [notifications.imap]\nserver = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nusername = \"rocsync\"\n\
         password = {{ file = \"imap.pass\" }}\ntimeout = \"2s\"\n"
    ));
    std::fs::write(sb.path("imap.pass"), "secret\n").unwrap();
    sb.set_answer("urls-v1.json");
    let out = sb.run(&["once"]);
    assert!(!out.status.success(), "the mailbox failed: the command says so");
    let err = stderr(&out);
    assert!(err.contains("imap:") && err.contains("the annuaire was read all the same"), "{err}");
    assert!(sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test"), "the annuaire's hosts are applied");
    // Each source has its own health: the mailbox failing, the annuaire read well.
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["last_source_read"]["ok"], true, "{status:#}");
    let mailbox = &status["mailboxes"][0];
    assert_eq!((mailbox["ok"].as_bool(), mailbox["last_ok"].is_null()), (Some(false), true), "{status:#}");
    assert!(mailbox["source"].as_str().is_some_and(|s| s.starts_with("imap:127.0.0.1:")), "{status:#}");
    assert!(sb.ok(&["status"]).contains("the annuaire is read all the same"));
}

/// IMAP without IDLE ran a whole annuaire pass at every `imap.poll_interval` whether or not
/// mail came. The folder is checked on its interval; the annuaire is read again only when a
/// message is there.
#[test]
fn without_idle_the_annuaire_is_read_again_only_when_a_message_came() {
    if !util::have("dovecot", true) {
        return;
    }
    let server = Dovecot::start();
    let sb = sandbox(&server);
    let config = std::fs::read_to_string(sb.path("rocsync.toml")).unwrap()
        .replace("[annuaire]\nurl = \"file:annuaire.json\"\n", "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1h\"\npoll_jitter = \"0s\"\n")
        .replace("[notifications.imap]\n", "[notifications.imap]\nuse_idle = false\npoll_interval = \"10s\"\n");
    sb.write_config(&config);
    let daemon = util::daemon::Daemon::start(&sb);
    let reads = || daemon.log().matches("Read the annuaire.").count();
    std::thread::sleep(std::time::Duration::from_secs(23));
    assert!(daemon.log().contains("Checking the mailbox every 10s (no IDLE)"), "{}", daemon.log());
    assert_eq!(reads(), 1, "two mailbox checks and no mail: no annuaire pass but the first\n{}", daemon.log());
    server.deliver("1763609999.M1P1.mx", &std::fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    assert!(util::wait_until(std::time::Duration::from_secs(25), || reads() >= 2), "a message came: the annuaire is read again\n{}", daemon.log());
}
