//! What an installation met running rocsync (issue 11, items 5, 6, 7, 17 and 18): a store made
//! by root under the service's user, a broken configuration file on disk, a client identity
//! that does not open, a watcher that cannot read its log, and the daemon under systemd (its
//! journal stream, its STATUS=, its reloads).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::annuaire_server::{Ca, write};
use crate::util::daemon::Daemon;
use crate::util::smtp::SmtpSink;
use crate::util::{Sandbox, stderr, stdout};
use crate::util::wait_until;


/// The audit log's entries as (action, detail).
fn audit(sb: &Sandbox) -> Vec<(String, String)> {
    let log = sb.json(&["audit", "--limit", "500", "--json"]);
    log.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or_default().to_owned(), e["detail"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A daemon configuration: the answer file polled every second (so that a pass follows each
/// step at once), alerts to `smtp` when given.
fn daemon_config(smtp: Option<&SmtpSink>, extra: &str) -> String {
    let alerts = match smtp {
        Some(smtp) => format!(
            "[alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
             [alerts.smtp]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout = \"5s\"\n\
             [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\nhelpdesk = [\"helpdesk@hopital.test\"]\nrssi = [\"rssi@hopital.test\"]\n",
            smtp.addr.port()
        ),
        None => String::new(),
    };
    format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1s\"\npoll_jitter = \"0s\"\nbackoff_max = \"1s\"\n\
         [review]\nmode = \"auto\"\n{alerts}{extra}"
    )
}

// ---- 5. A store created by root breaks the service ----------------------------------------

/// `rocsync poll` run as root before the first start (README's troubleshooting step) left a
/// root-owned `state.db` in the service user's state directory; the service then failed with
/// "attempt to write a readonly database", no path, no hint. Now the service names the file,
/// its owner and the fix, and root refuses to write a state directory that is not its own.
#[test]
fn a_state_db_left_by_root_is_named_with_its_owner_and_root_refuses_the_service_users_state() {
    if !crate::util::have("setpriv", true) {
        return;
    }
    let sb = Sandbox::new("auto", "urls-v1.json");
    let state = sb.path("state");
    // The service user (here `nobody`) must reach the sandbox and run the binary.
    std::fs::set_permissions(sb.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = sb.path("rocsync");
    std::fs::copy(assert_cmd::cargo::cargo_bin("rocsync"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_service = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&bin)
            .arg("--config")
            .arg(sb.path("rocsync.toml"))
            .args(args)
            .current_dir(sb.dir.path())
            .env_remove("ROCSYNC_FAILPOINT")
            .output()
            .unwrap()
    };
    let chown_nobody = |path: &Path| assert!(Command::new("chown").args(["-R", "nobody:"]).arg(path).status().unwrap().success());

    // As it happened: root ran a pass first (the state directory is root's then, which is
    // allowed), and the package gave the directory to the service's user afterwards.
    sb.ok(&["once"]);
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    chown_nobody(sb.path("out").as_path());
    let out = as_service(&["once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{} belongs to root (uid 0)", state.join("state.db").display())), "the file and its owner: {err}");
    assert!(err.contains(&format!("chown -R nobody: {}", state.display())), "the fix: {err}");
    assert!(err.contains("runuser -u nobody -- rocsync"), "and how to run commands from now on: {err}");

    // The fix it gives works.
    chown_nobody(state.as_path());
    let out = as_service(&["once"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // Root now refuses to write there, with the command to run instead, and creates nothing.
    let before: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = sb.run(&["poll"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("the state directory {} belongs to nobody", state.display())), "{err}");
    assert!(err.contains("runuser -u nobody -- rocsync --config"), "{err}");
    let after: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after);
    for entry in std::fs::read_dir(&state).unwrap() {
        assert_eq!(entry.unwrap().metadata().unwrap().uid(), 65534, "nothing of root's in the service's state");
    }
    // Commands that only read still answer for root.
    assert!(sb.ok(&["status"]).contains("In force: plan 1"));
}

/// The package keeps the state directory's ownership right: its tmpfiles.d configuration, as
/// postinst and each boot apply it, gives back to `rocsync` a state.db that root left there.
#[test]
fn the_packages_tmpfiles_give_a_state_db_left_by_root_back_to_the_service_user() {
    if !crate::util::have("systemd-tmpfiles", true) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nrocsync:x:990:990::/var/lib/rocsync:/usr/sbin/nologin\n").unwrap();
    std::fs::write(r.join("etc/group"), "root:x:0:\nrocsync:x:990:\n").unwrap();
    let state = r.join("var/lib/rocsync/state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("state.db"), b"").unwrap();
    std::fs::set_permissions(state.join("state.db"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/tmpfiles.d/rocsync.conf");
    let out = Command::new("systemd-tmpfiles").arg("--create").arg(format!("--root={}", r.display())).arg(&conf).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for path in [state.clone(), state.join("state.db")] {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (990, 990), "{}", path.display());
    }
    assert_eq!(std::fs::metadata(state.join("state.db")).unwrap().permissions().mode() & 0o7777, 0o600, "modes are rocsync's");
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o7777, 0o700);
}

// ---- 6. A broken configuration file locks the RSSI out --------------------------------------

/// While a broken file was on disk, `status`, `plan list` and `approve` all exited 1, so nothing
/// could be approved although the daemon still ran on the last good configuration.
#[test]
fn a_broken_configuration_file_does_not_lock_the_rssi_out() {
    let sb = Sandbox::new("hybrid", "urls-v1.json");
    sb.ok(&["once"]);
    sb.set_answer("urls-v2.json");
    sb.ok(&["once"]);
    let good = sb.read("rocsync.toml");
    let pending = |sb: &Sandbox| -> i64 {
        let plans = sb.json(&["plan", "list", "--json"]);
        plans.as_array().unwrap().iter().find(|p| p["status"] == "pending").and_then(|p| p["id"].as_i64()).expect("a pending plan")
    };
    let id = pending(&sb);

    // An unknown key, then a file that is not even TOML: the store is found all the same.
    for broken in [good.replace("[review]", "[review]\nmood = \"auto\""), good.replace("[exports.plain]", "[exports.plain\n")] {
        sb.write_config(&broken);
        let out = sb.run(&["status"]);
        assert!(out.status.success(), "status: {}", stderr(&out));
        assert!(stdout(&out).contains("In force: plan"), "{}", stdout(&out));
        assert!(stderr(&out).contains("warning: the configuration has problems"), "the warning names the problem: {}", stderr(&out));
        assert_eq!(pending(&sb), id, "plan list");
        assert!(sb.ok(&["plan", "show", &id.to_string()]).contains(&format!("Plan {id}")));
        assert!(sb.json(&["audit", "--json"]).is_array());
        // check-config still refuses it: the problem is told, not hidden.
        assert_eq!(sb.run(&["check-config"]).status.code(), Some(1));
    }
    assert!(stderr(&sb.run(&["status"])).contains("line"), "with its place");

    // The approval is recorded; with no daemon and a broken file it is not applied from here.
    let hosts_before = sb.read("out/hosts.txt");
    let out = sb.run(&["approve", &id.to_string(), "--by", "J. Martin (RSSI)"]);
    assert!(out.status.success(), "approve: {}", stderr(&out));
    assert!(stdout(&out).contains(&format!("Plan {id} approved by J. Martin (RSSI); it is now approved.")), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("Not applied: the configuration has problems (above). Fix it, then `rocsync apply {id}`.")));
    assert_eq!(sb.read("out/hosts.txt"), hosts_before, "a half-read configuration applies nothing");
    // Fixed, the approved plan applies.
    sb.write_config(&good);
    assert!(sb.ok(&["apply", &id.to_string()]).contains(&format!("Plan {id} applied.")));
    assert!(!sb.read("out/hosts.txt").contains("idb.roc.mutuelle-exemple.test"), "the closing is in force");
}

/// A refused reload left no trace but a log line, a valid one none of what it changed; and the
/// service logged at `warn` by default, so the journal showed neither the start, nor the plans
/// applied, nor the alerts sent.
#[test]
fn reloads_are_audited_and_the_service_logs_at_info_by_default() {
    let sb = Sandbox::with_config(&daemon_config(None, ""));
    sb.set_answer("urls-v1.json");
    // Started without RUST_LOG, as the unit starts it.
    let log = sb.path("service.log");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("rocsync"))
        .arg("--config")
        .arg(sb.path("rocsync.toml"))
        .arg("run")
        .current_dir(sb.dir.path())
        .env_remove("RUST_LOG")
        .env_remove("ROCSYNC_FAILPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = wait_until(Duration::from_secs(20), || read_log().contains("rocsync run: ready."));
    let signal = |sig: &str| assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
    if !started {
        signal("-TERM");
        panic!("not ready: {}", read_log());
    }
    assert!(read_log().contains("Applied."), "each plan applied is in the journal: {}", read_log());

    let good = sb.read("rocsync.toml");
    sb.write_config(&good.replace("[review]", "[review]\nmood = \"auto\""));
    signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || audit(&sb).iter().any(|(a, _)| a == "config.reload_refused")), "{}", read_log());
    let refused = audit(&sb).into_iter().find(|(a, _)| a == "config.reload_refused").unwrap().1;
    assert!(refused.contains("review.mood") && refused.contains("unknown key"), "with its reason: {refused}");

    sb.write_config(&good.replace("mode = \"auto\"", "mode = \"review\""));
    signal("-HUP");
    assert!(wait_until(Duration::from_secs(5), || audit(&sb).iter().any(|(a, _)| a == "config.reloaded")), "{}", read_log());
    let reloaded = audit(&sb).into_iter().find(|(a, _)| a == "config.reloaded").unwrap().1;
    assert_eq!(reloaded, "review.mode: \"auto\" → \"review\"", "what changed");
    assert!(read_log().contains("Configuration reloaded: review.mode"), "{}", read_log());

    signal("-TERM");
    assert!(child.wait().unwrap().success());
}

// ---- 7. check-config and the client identity --------------------------------------------

fn https_config(identity: &str) -> String {
    format!("[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\n{identity}ca_bundle = \"igc-osi.pem\"\n[review]\nmode = \"auto\"\n")
}

/// `check-config` said OK with a wrong PKCS#12 password; the error appeared only at the first
/// poll.
#[test]
fn check_config_opens_the_pkcs12_file_with_its_password() {
    let ca = Ca::new("Fake IGC-Sante AC-IDENTIFICATION");
    let client = ca.leaf("CHU EXEMPLE ORG AUTH_CLI", -1, 100);
    let sb = Sandbox::with_config(&https_config("client_pkcs12 = \"hospital.p12\"\nclient_password = { file = \"p12.pass\" }\n"));
    write(sb.dir.path(), "hospital.p12", client.pkcs12(&ca, "s3cret-p12", false));
    write(sb.dir.path(), "igc-osi.pem", &ca.pem);
    write(sb.dir.path(), "p12.pass", "s3cret-p12\n");
    assert!(sb.ok(&["check-config"]).contains("OK"));
    write(sb.dir.path(), "p12.pass", "wrong\n");
    let out = sb.run(&["check-config"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(err.contains("`annuaire.client_password`") && err.contains("hospital.p12") && err.contains("wrong password"), "{err}");
    assert!(err.contains("line 4"), "with its place: {err}");
}

/// A client certificate in X.509 v1 gave "Other(OtherError(UnsupportedCertVersion))".
#[test]
fn an_x509_v1_client_certificate_is_explained_in_words() {
    if !crate::util::have("openssl", false) {
        return;
    }
    let sb = Sandbox::with_config(&https_config("client_cert = \"client.crt\"\nclient_key = \"client.key\"\n"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(sb.dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    openssl(&["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-subj", "/CN=CHU EXEMPLE", "-out", "client.csr"]);
    // `x509 -req` without extensions makes a version 1 certificate.
    openssl(&["x509", "-req", "-in", "client.csr", "-signkey", "client.key", "-days", "30", "-out", "client.crt"]);
    write(sb.dir.path(), "igc-osi.pem", Ca::new("Fake IGC OSI AC-SERVEUR").pem);
    for command in [&["check-config"][..], &["poll"][..]] {
        let out = sb.run(command);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {}", stdout(&out));
        assert!(err.contains("client.crt is an X.509 version 1 certificate; TLS needs version 3"), "{command:?}: {err}");
        assert!(!err.contains("UnsupportedCertVersion") && !err.contains("OtherError"), "{command:?}: {err}");
    }
}

// ---- 17. Watcher errors flood the journal ---------------------------------------------------

/// A `journalctl` that failed without a word was logged every 500 ms ("Cannot read the
/// journal: journalctl:"), 2,987 of 3,125 journal lines in 35 minutes.
#[test]
fn a_failing_journal_read_is_said_once_with_its_reason_then_its_recovery() {
    let sb = Sandbox::with_config(&daemon_config(None, "[watch]\njournal = true\n"));
    sb.set_answer("urls-v1.json");
    // A journalctl that fails and prints nothing, as it does with --quiet for a user who may
    // not read the journal.
    let bin = sb.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = |script: &str| {
        let tmp = bin.join("journalctl.new");
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, bin.join("journalctl")).unwrap();
    };
    fake("#!/bin/sh\nexit 1\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let daemon = Daemon::start_with_env(&sb, &[("PATH", path.as_str())]);
    std::thread::sleep(Duration::from_secs(5));
    let said: Vec<String> = daemon.log().lines().filter(|l| l.contains("Cannot read the journal")).map(str::to_owned).collect();
    assert_eq!(said.len(), 1, "once, not every 500 ms: {said:#?}");
    assert!(said[0].contains("journalctl exited with status 1 and printed nothing"), "a reason: {}", said[0]);
    assert!(said[0].contains("systemd-journal"), "and what to check: {}", said[0]);
    // Readable again (journalctl follows: it keeps running): said once, within the back-off.
    fake("#!/bin/sh\nexec sleep 300\n");
    daemon.wait_log("Reading the journal works again", Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.log().matches("Reading the journal works again").count(), 1, "{}", daemon.log());
    assert_eq!(daemon.log().matches("Cannot read the journal").count(), 1, "{}", daemon.log());
}

// ---- 18. Reload and logs under systemd ------------------------------------------------------

/// Under systemd every line reached the journal at priority 6 (an ERROR invisible to
/// `journalctl -p err`), timestamps were doubled, and a multi-line error became several
/// entries. With stderr on the journal's stream (JOURNAL_STREAM names it), each event is one
/// line with its `<N>` priority and no timestamp.
#[test]
fn under_systemd_each_event_is_one_journal_line_with_its_priority() {
    let sb = Sandbox::with_config(&daemon_config(None, ""));
    sb.set_answer("urls-v1.json");
    // The daemon's stderr is this file; JOURNAL_STREAM names it as systemd names its socket.
    let log = sb.path("daemon.log");
    std::fs::File::create(&log).unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let daemon = Daemon::start_with_env(&sb, &[("JOURNAL_STREAM", stream.as_str())]);
    let good = sb.read("rocsync.toml");
    // Two problems: the reason was written on three lines.
    sb.write_config(&good.replace("[review]", "[review]\nmood = \"auto\"\nmax_removal_hots = 3"));
    daemon.signal("-HUP");
    daemon.wait_log("SIGHUP: the configuration is refused", Duration::from_secs(5));
    let text = daemon.log();
    for line in text.lines() {
        let priority = line.strip_prefix('<').and_then(|l| l.split_once('>')).map(|(p, _)| p);
        assert!(matches!(priority, Some("3" | "4" | "6" | "7")), "every line is an entry with its priority: {line:?}\n{text}");
        assert!(!line[3..].starts_with("20") && !line.contains("Z  INFO"), "no timestamp of our own: {line:?}");
    }
    assert!(text.lines().any(|l| l.starts_with("<6>") && l.contains("rocsync run: ready.")), "{text}");
    let refused: Vec<&str> = text.lines().filter(|l| l.contains("mood") || l.contains("max_removal_hots")).collect();
    assert_eq!(refused.len(), 1, "one entry for the refused reload: {refused:#?}");
    assert!(refused[0].starts_with("<3>SIGHUP: the configuration is refused"), "at priority err: {}", refused[0]);
    assert!(refused[0].contains("review.mood") && refused[0].contains("review.max_removal_hots"), "{}", refused[0]);
}

/// `systemctl reload` answered "Reloaded" for a refused file: the unit checks the file before it
/// signals, so that a broken file makes the reload fail visibly.
#[test]
fn the_units_reload_checks_the_file_before_the_signal() {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/rocsync.service")).unwrap();
    let reload: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("ExecReload=")).collect();
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(reload[0].contains("rocsync check-config"), "first the check: {reload:?}");
    assert!(reload[1].contains("kill -HUP $MAINPID"), "then the signal: {reload:?}");
    // The check fails on a broken file, so systemd stops before the signal.
    let sb = Sandbox::new("auto", "urls-v1.json");
    assert!(sb.run(&["check-config"]).status.success());
    sb.write_config(&sb.read("rocsync.toml").replace("[review]", "[review]\nmood = \"auto\""));
    assert_eq!(sb.run(&["check-config"]).status.code(), Some(1));
}

/// `StatusText` (sd_notify STATUS=) stayed on the first pass's error after later good reads.
#[test]
fn status_text_follows_the_last_pass() {
    let sb = Sandbox::with_config(&daemon_config(None, ""));
    sb.set_answer("error-503.html");
    let socket_path = sb.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let _daemon = Daemon::start_with_env(&sb, &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())]);
    let mut statuses: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut receive_until = |statuses: &mut Vec<String>, want: &dyn Fn(&str) -> bool| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(n) = socket.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    if let Some(status) = line.strip_prefix("STATUS=") {
                        statuses.push(status.to_owned());
                        if want(status) {
                            return true;
                        }
                    }
                }
            }
        }
        false
    };
    assert!(receive_until(&mut statuses, &|s| s.contains("failed")), "the first pass fails: {statuses:#?}");
    sb.set_answer("urls-v1.json");
    assert!(receive_until(&mut statuses, &|s| s.contains(" OK: plan")), "a later good pass is told: {statuses:#?}");
    let last = statuses.last().unwrap();
    assert!(!last.contains("failed") && last.contains("plan 1 in force"), "{last}");
}

/// A `wildcard_style` change applied by reload was reported as tampering ("Filtrage modifié hors
/// rocsync, rétabli" mailed to the DSI and the RSSI). Outputs rewritten because the
/// configuration changed are not drift.
#[test]
fn a_wildcard_style_change_by_reload_is_not_reported_as_tampering() {
    let smtp = SmtpSink::start();
    let sb = Sandbox::with_config(&daemon_config(Some(&smtp), ""));
    sb.set_answer("urls-v1.json");
    let daemon = Daemon::start(&sb);
    assert!(sb.read("out/hosts.txt").lines().any(|l| l == ".api.mutuelle-exemple.test"), "{}", sb.read("out/hosts.txt"));
    let good = sb.read("rocsync.toml");
    sb.write_config(&good.replace("wildcard_style = \"dot\"", "wildcard_style = \"star\""));
    daemon.signal("-HUP");
    daemon.wait_log("Configuration reloaded", Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(5), || sb.read("out/hosts.txt").lines().any(|l| l == "*.api.mutuelle-exemple.test")));
    // Passes come every second: several look at the outputs meanwhile.
    std::thread::sleep(Duration::from_secs(4));
    let log = audit(&sb);
    let reloaded = log.iter().find(|(a, _)| a == "config.reloaded").map(|(_, d)| d.as_str()).unwrap_or_default();
    assert!(reloaded.contains("exports.plain.wildcard_style: \"dot\" → \"star\""), "{log:#?}");
    assert!(log.iter().any(|(a, d)| a == "config.outputs_rewritten" && d.contains("hosts.txt")), "{log:#?}");
    assert!(!log.iter().any(|(a, _)| a == "sink.repaired"), "not drift: {log:#?}");
    let alerts = sb.json(&["alerts", "--json"]);
    assert!(!alerts.as_array().unwrap().iter().any(|a| a["kind"] == "drift_repaired"), "{alerts}");
    std::thread::sleep(Duration::from_secs(3));
    let mails = smtp.mails();
    assert!(!mails.iter().any(|m| m.subject().contains("hors rocsync") || m.body().contains("rétabli")), "no tampering mail: {:#?}", mails.iter().map(|m| m.subject()).collect::<Vec<_>>());
    // Tampering is still tampering.
    std::fs::write(sb.path("out/hosts.txt"), "evil.test\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || audit(&sb).iter().any(|(a, _)| a == "sink.repaired")));
}
