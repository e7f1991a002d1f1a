//! The mails that the helpdesk and the RSSI read, caught by an SMTP receiver on loopback and
//! checked decoded (issue 11, items 2, 3, 8 and 9): `rocsync run` on a sandbox, with a Maildir
//! for the Inter-AMC notifications and a Squid access log it follows.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::daemon::Daemon;
use crate::util::smtp::{Mail, SmtpSink};
use crate::util::{Sandbox, fixture, stderr};
use crate::util::wait_until;
use crate::util::{deliver, maildir};

/// The configuration (without the outputs): `file:` source, alerts to the three roles through
/// `smtp`, `annuaire` keys ([`SLOW`] or [`FAST`] at least) added to `[annuaire]` and `rest` at
/// the end.
fn config(smtp: &SmtpSink, mode: &str, annuaire: &str, rest: &str) -> String {
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_jitter = \"0s\"\n{annuaire}\
         [review]\nmode = \"{mode}\"\n\
         [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
         [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\nhelpdesk = [\"helpdesk@hopital.test\"]\nrssi = [\"rssi@hopital.test\"]\n\
         {rest}",
        smtp.addr.port()
    )
}

/// Notifications from the sandbox's `Maildir`, from the Inter-AMC list's address.
const NOTIFICATIONS: &str = "[notifications]\nenabled = true\nsource = \"maildir\"\ndebounce = \"1s\"\n\
    allowed_senders = [\"notifications@inter-amc.test\"]\n[notifications.maildir]\npath = \"Maildir\"\n";

/// Polls every second, and retries every second after an error (a `file:` source allows it).
const FAST: &str = "poll_interval = \"1s\"\nbackoff_max = \"1s\"\n";

/// Polls once, at the start.
const SLOW: &str = "poll_interval = \"1h\"\n";



/// Replaces the answer the source reads in one rename, so that no poll reads it half-written.
fn set_answer_text(sb: &Sandbox, text: &str) {
    let tmp = sb.path("annuaire.json.new");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, sb.path("annuaire.json")).unwrap();
}

/// The v1 answer with `hosts` added to MUTUELLE EXEMPLE's `domaines`: openings the annuaire lists.
fn v1_with(hosts: &[&str]) -> String {
    let v1 = fs::read_to_string(fixture("annuaire/urls-v1.json")).unwrap();
    let wildcard = "\"*.api.mutuelle-exemple.test\"";
    assert_eq!(v1.matches(wildcard).count(), 1);
    let added: String = hosts.iter().map(|h| format!(", \"{h}\"")).collect();
    v1.replace(wildcard, &format!("{wildcard}{added}"))
}

/// `n` Squid lines denying `host` to `client`.
fn denied(host: &str, client: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("1763630{:03}.{:03}      0 {client} TCP_DENIED/403 3921 CONNECT {host}:443 - HIER_NONE/- text/html\n", 100 + i, i))
        .collect()
}

fn append(path: &Path, text: &str) {
    fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

fn subjects(mails: &[Mail]) -> Vec<String> {
    mails.iter().map(Mail::subject).collect()
}

/// A mail's text, decoded, with the line ends it was written with (SMTP sends CRLF).
fn text(mail: &Mail) -> String {
    mail.body().replace("\r\n", "\n")
}

/// The first mail caught that `matches`, waiting up to `timeout` for it.
fn wait_mail(smtp: &SmtpSink, timeout: Duration, matches: impl Fn(&Mail) -> bool) -> Mail {
    let start = Instant::now();
    loop {
        let mails = smtp.mails();
        if let Some(m) = mails.iter().find(|m| matches(*m)) {
            return m.clone();
        }
        assert!(start.elapsed() < timeout, "no such mail after {timeout:?}; caught: {:?}", subjects(&mails));
        std::thread::sleep(Duration::from_millis(100));
    }
}


/// The user the state directory belongs to, as the mails name it: its name, or `uid N`.
fn state_owner_names() -> Vec<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("id").args(args).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    [run(&["-un"]), run(&["-u"]).map(|uid| format!("uid {uid}"))].into_iter().flatten().collect()
}

/// Item 2: a blocked request to a host that only an Inter-AMC e-mail names was counted as
/// "other denied" and nobody was told. It is an AMC's host: the helpdesk gets the alert, with
/// the plan to approve.
#[test]
fn a_host_named_only_by_an_inter_amc_mail_is_alerted_when_blocked() {
    let smtp = SmtpSink::start();
    let watch = "[watch]\nsquid_access_log = \"squid/access.log\"\n";
    let sb = Sandbox::with_config(&config(&smtp, "hybrid", SLOW, &format!("{NOTIFICATIONS}{watch}")));
    sb.set_answer("urls-v1.json");
    let root = maildir(&sb);
    deliver(&root, "1763630000.M1P1.mx.chu.test", &fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    fs::create_dir_all(sb.path("squid")).unwrap();
    let log = sb.path("squid/access.log");
    append(&log, "");
    let _daemon = Daemon::start(&sb);
    // Plan 1, the annuaire's hosts, is applied; plan 2, the e-mail's, waits.
    wait_mail(&smtp, Duration::from_secs(10), |m| m.subject() == "[rocsync] Plan 2 à valider");
    append(&log, &denied("idb.nouvelle-mutuelle-sud.test", "198.18.1.30", 4));
    let alert = wait_mail(&smtp, Duration::from_secs(40), |m| m.subject().contains("bloquées"));
    let subject = alert.subject();
    assert!(subject.starts_with("[rocsync] Requêtes bloquées vers NOUVELLE MUTUELLE DU SUD (891234567)"), "{subject}");
    assert!(subject.ends_with("(idb.nouvelle-mutuelle-sud.test)"), "{subject}");
    assert_eq!(alert.to, ["dsi@hopital.test", "helpdesk@hopital.test"]);
    let body = text(&alert);
    assert!(body.contains("Nombre de requêtes : 4,"), "{body}");
    assert!(body.contains("seulement par une notification Inter-AMC"), "{body}");
    assert!(body.contains("Le plan 2 ouvrirait cet hôte") && body.contains("rocsync approve 2 --by NOM"), "{body}");
}

/// Item 3: every annuaire change rebuilt the notification-only plan under a new number and
/// mailed the RSSI again. It keeps its number and its one mail while its content holds; when a
/// new e-mail changes it, the RSSI is told which plan replaces it, and approving the old one
/// says so too.
#[test]
fn annuaire_changes_keep_the_notification_only_plan_and_its_one_mail() {
    let smtp = SmtpSink::start();
    let sb = Sandbox::with_config(&config(&smtp, "hybrid", FAST, NOTIFICATIONS));
    sb.set_answer("urls-v1.json");
    let root = maildir(&sb);
    deliver(&root, "1763630000.M1P1.mx.chu.test", &fs::read(fixture("mail/ouverture-texte.eml")).unwrap());
    let _daemon = Daemon::start(&sb);
    wait_mail(&smtp, Duration::from_secs(10), |m| m.subject() == "[rocsync] Plan 2 à valider");

    // Two annuaire changes, each an opening that hybrid mode applies (plans 3 and 4).
    let changes: [&[&str]; 2] = [&["extra1.mutuelle-exemple.test"], &["extra1.mutuelle-exemple.test", "extra2.mutuelle-exemple.test"]];
    for added in changes {
        set_answer_text(&sb, &v1_with(added));
        let host = format!("{}\n", added.last().unwrap());
        assert!(wait_until(Duration::from_secs(10), || sb.read("out/hosts.txt").contains(&host)), "{host} applied");
    }
    std::thread::sleep(Duration::from_secs(3));
    let reviews: Vec<String> = subjects(&smtp.mails()).into_iter().filter(|s| s.contains("valider")).collect();
    assert_eq!(reviews, ["[rocsync] Plan 2 à valider"], "one mail for the one waiting plan");
    let plan = sb.json(&["plan", "show", "2", "--format", "json"]);
    assert_eq!((plan["status"].clone(), plan["base"].clone()), (json!("pending"), json!(4)), "kept, on top of plan 4: {plan}");
    let statuses: Vec<(i64, String)> = sb
        .json(&["plan", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_i64().unwrap(), p["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(statuses, [(4, "applied".to_owned()), (3, "applied".to_owned()), (2, "pending".to_owned()), (1, "applied".to_owned())]);

    // A second e-mail names one more host: plan 5 replaces plan 2.
    let more = "From: Inter-AMC <notifications@inter-amc.test>\r\nTo: dsi-roc@chu-exemple.test\r\n\
        Subject: [ROC] Ouverture de domaines\r\nDate: Fri, 20 Nov 2026 10:15:00 +0100\r\n\
        Message-ID: <ouverture-sim@inter-amc.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n\
        OUVERTURE | 2026-11-26 | 891234567 | NOUVELLE MUTUELLE DU SUD | sim.nouvelle-mutuelle-sud.test\r\n";
    deliver(&root, "1763631000.M2P1.mx.chu.test", more.as_bytes());
    let told = wait_mail(&smtp, Duration::from_secs(15), |m| m.subject().starts_with("[rocsync] Le plan 2 "));
    assert_eq!(told.subject(), "[rocsync] Le plan 2 est remplacé par le plan 5");
    assert_eq!(told.to, ["rssi@hopital.test"]);
    let body = text(&told);
    assert!(body.contains("N'approuvez pas le plan 2") && body.contains("rocsync plan show 5"), "{body}");
    wait_mail(&smtp, Duration::from_secs(10), |m| m.subject() == "[rocsync] Plan 5 à valider");
    let out = sb.run(&["approve", "2", "--by", "J. Martin (RSSI)"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("plan 2 is superseded; replaced by plan 5"), "{}", stderr(&out));
}

/// Item 8: the RSSI's mail was French with English reasons, closings without port or service,
/// configuration hosts under a bare "—", an emptied annuaire's plan like any other with
/// "Approuver" first, no word of where or as whom to run the command, and no mail when a plan
/// it was asked about went away.
#[test]
fn the_rssis_mails_are_french_say_what_closes_and_where_to_run_the_command() {
    let smtp = SmtpSink::start();
    let policy = "[policy]\nextra_hosts = [\"crl.igc-sante.test:80\"]\n";
    let sb = Sandbox::with_config(&config(&smtp, "review", FAST, policy));
    sb.set_answer("urls-v1.json");
    let _daemon = Daemon::start(&sb);
    let first = wait_mail(&smtp, Duration::from_secs(10), |m| m.subject() == "[rocsync] Plan 1 à valider");
    let body = text(&first);
    let config_group = body.split("Configuration (policy.extra_hosts)\n").nth(1).unwrap_or_else(|| panic!("{body}"));
    let crl: Vec<&str> = config_group.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(crl, ["+", "crl.igc-sante.test", "tcp/80"], "{body}");
    assert!(!body.contains('—'), "{body}");
    assert!(body.contains("- mode revue : chaque plan attend une approbation"), "{body}");
    assert!(body.contains("13 à ouvrir, 0 à fermer, 0 modifié(s)."), "{body}");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_owned();
    let config_path = sb.path("rocsync.toml").display().to_string();
    assert!(
        state_owner_names().iter().any(|user| body.contains(&format!("Sur {host}, en tant que {user} :\n"))),
        "where and as whom: {body}"
    );
    assert!(body.contains(&format!("Approuver : rocsync approve 1 --by NOM --config {config_path}\n")), "{body}");
    sb.ok(&["approve", "1", "--by", "J. Martin (RSSI)"]);
    assert!(wait_until(Duration::from_secs(5), || sb.path("out/hosts.txt").exists()));

    // An emptied annuaire: the plan closes 12 of the 13 hosts in force.
    set_answer_text(&sb, &fs::read_to_string(fixture("annuaire/empty-organismes.json")).unwrap());
    let danger = wait_mail(&smtp, Duration::from_secs(15), |m| m.subject().contains("plan 2"));
    assert_eq!(danger.subject(), "[rocsync] ATTENTION : le plan 2 ferme 12 des 13 hôtes en vigueur (92 %) — à valider");
    let body = text(&danger);
    assert!(body.starts_with("ATTENTION : ce plan ferme 12 des 13 hôtes en vigueur (92 %)."), "{body}");
    assert!(body.contains("- ferme 12 des 13 hôtes en vigueur (92 %), plus que review.max_removal_percent = 20 %"), "{body}");
    let closing = body.lines().find(|l| l.trim_start().starts_with("- idb.roc.mutuelle-exemple.test")).unwrap_or_else(|| panic!("{body}"));
    assert_eq!(closing.split_whitespace().collect::<Vec<_>>(), ["-", "idb.roc.mutuelle-exemple.test", "tcp/443", "IDB"]);
    let clc = body.lines().find(|l| l.trim_start().starts_with("- clc.roc.mutuelle-exemple.test")).unwrap_or_else(|| panic!("{body}"));
    assert_eq!(clc.split_whitespace().collect::<Vec<_>>(), ["-", "clc.roc.mutuelle-exemple.test", "tcp/8443", "CLC"]);
    let (reject, approve) = (body.find("Rejeter :").unwrap(), body.find("Approuver, seulement après vérification :").unwrap());
    assert!(reject < approve, "{body}");
    for english in ["closes", "review mode", "to close", "Approve"] {
        assert!(!body.contains(english), "`{english}` in a French mail: {body}");
    }

    // The annuaire lists its hosts again: plan 2 is no longer asked for, and the RSSI is told.
    set_answer_text(&sb, &fs::read_to_string(fixture("annuaire/urls-v1.json")).unwrap());
    let gone = wait_mail(&smtp, Duration::from_secs(15), |m| m.subject().starts_with("[rocsync] Le plan 2 "));
    assert_eq!(gone.subject(), "[rocsync] Le plan 2 n'est plus à valider");
    assert_eq!(gone.to, ["rssi@hopital.test"]);
    assert_eq!(sb.json(&["plan", "show", "2", "--format", "json"])["status"], "superseded");
}

/// Item 8: after an "annuaire unreachable" alert, no mail said that it answered again. One
/// "back to normal" mail, once, even across a restart.
#[test]
fn a_back_to_normal_mail_follows_an_unreachable_alert_once() {
    let smtp = SmtpSink::start();
    let sb = Sandbox::with_config(&config(&smtp, "auto", &format!("{FAST}unreachable_alert_after = \"1m\"\n"), ""));
    sb.set_answer("urls-v1.json");
    let mut daemon = Daemon::start(&sb);
    // An outage page where the answer was.
    set_answer_text(&sb, &fs::read_to_string(fixture("annuaire/error-503.html")).unwrap());
    let down = wait_mail(&smtp, Duration::from_secs(100), |m| m.subject().contains("injoignable"));
    assert_eq!(down.to, ["dsi@hopital.test", "rssi@hopital.test"]);
    assert!(!subjects(&smtp.mails()).iter().any(|s| s.contains("de nouveau")), "not before it answers");
    set_answer_text(&sb, &fs::read_to_string(fixture("annuaire/urls-v1.json")).unwrap());
    let back = wait_mail(&smtp, Duration::from_secs(15), |m| m.subject() == "[rocsync] Annuaire AMC de nouveau joignable");
    assert_eq!(back.to, ["dsi@hopital.test", "rssi@hopital.test"]);
    let body = text(&back);
    assert!(body.contains("répond de nouveau correctement ; il ne répondait plus depuis le "), "{body}");
    assert!(daemon.stop().success());
    let _again = Daemon::start(&sb);
    std::thread::sleep(Duration::from_secs(4));
    let backs = subjects(&smtp.mails()).into_iter().filter(|s| s.contains("de nouveau")).count();
    assert_eq!(backs, 1, "{:?}", subjects(&smtp.mails()));
}

/// Item 9: in hybrid mode the engineer's own `policy.extra_hosts` waited for approval, so every
/// first start ended with a pending plan and a mail to the RSSI. They apply like the annuaire's
/// openings, and the audit log says they came from the configuration.
#[test]
fn extra_hosts_apply_at_the_first_start_in_hybrid_mode_without_a_mail() {
    let smtp = SmtpSink::start();
    let policy = "[policy]\nextra_hosts = [\"crl.igc-sante.test:80\", \"ocsp.igc-sante.test\"]\n";
    let sb = Sandbox::with_config(&config(&smtp, "hybrid", SLOW, policy));
    sb.set_answer("urls-v1.json");
    let mut daemon = Daemon::start(&sb);
    // READY comes after the first pass: what it applied is in force.
    let hosts = sb.read("out/hosts.txt");
    assert!(hosts.contains("crl.igc-sante.test\n") && hosts.contains("ocsp.igc-sante.test\n"), "{hosts}");
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["open_plans"], json!([]), "{status}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(smtp.mails().is_empty(), "{:?}", subjects(&smtp.mails()));
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("from the configuration (policy.extra_hosts): crl.igc-sante.test, ocsp.igc-sante.test"), "{audit}");
    assert!(daemon.stop().success());
}
