//! Hostile configurations and a hostile HTTP client, against the `rocsync` binary: each file of
//! the hardening issue is refused by `check-config` (and by every command) with its key named
//! and nothing panicking; an inline secret is never shown, not even in the daemon's log after
//! SIGHUP; a flood of idle connections to the HTTP endpoint leaves the daemon the descriptors
//! its passes need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::daemon::Daemon;
use crate::util::{OUTPUTS, Sandbox, answer_json, stderr, stdout};
use crate::util::wait_until;

const ANNUAIRE: &str = "[annuaire]\nurl = \"file:annuaire.json\"\n";
const SECRET: &str = "Inline-S3cret-IMAP";

/// Runs `args` on the sandbox's configuration: exit code, stderr, stdout.
fn run(sb: &Sandbox, args: &[&str]) -> (Option<i32>, String, String) {
    let out = sb.run(args);
    (out.status.code(), stderr(&out), stdout(&out))
}

/// Each configuration of the hardening issue that was taken, and what `check-config` now says.
fn hostile_files() -> Vec<(&'static str, String, String)> {
    vec![
        (
            "zero poll interval",
            format!("[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"0s\"\n{OUTPUTS}"),
            "`annuaire.poll_interval`: `0s` is too short: at least 1s".into(),
        ),
        (
            "zero poll interval of the web service",
            format!("[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\npoll_interval = \"0s\"\n{OUTPUTS}"),
            "`annuaire.poll_interval`: `0s` is too short: at least 30s between two calls to the annuaire web service".into(),
        ),
        (
            "post-write timeout that overflows",
            format!(
                "{ANNUAIRE}[exports.squid]\npath = \"out/squid.acl\"\npost_write_command = [\"true\"]\n\
                 post_write_timeout = \"18446744073709551615s\"\n[store]\nstate_dir = \"state\"\n"
            ),
            "`exports.squid.post_write_timeout`: `18446744073709551615s` is too long: at most 1h".into(),
        ),
        (
            "inline IMAP password",
            format!("{ANNUAIRE}[notifications.imap]\npassword = \"{SECRET}\"\n{OUTPUTS}"),
            "`notifications.imap.password`: must be `{ file = \"…\" }` or `{ env = \"…\" }`; an inline secret is refused and not shown"
                .into(),
        ),
        (
            "SMTP in clear to another host",
            format!(
                "{ANNUAIRE}[alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
                 [alerts.smtp]\nserver = \"smtp.hopital.test\"\nsecurity = \"none\"\n\
                 [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\n{OUTPUTS}"
            ),
            "`alerts.smtp.security`: \"none\" sends the alerts and the password in clear: only for a server on loopback".into(),
        ),
        (
            "empty state directory",
            format!("{ANNUAIRE}[exports.squid]\npath = \"out/squid.acl\"\n[store]\nstate_dir = \"\"\n"),
            "`store.state_dir`: is empty".into(),
        ),
        (
            "empty export path",
            format!("{ANNUAIRE}[exports.squid]\npath = \"\"\n[store]\nstate_dir = \"state\"\n"),
            "`exports.squid.path`: is empty".into(),
        ),
        (
            "two exports, one file through a symlinked directory",
            format!(
                "{ANNUAIRE}[exports.squid]\npath = \"out/roc.txt\"\n[exports.plain]\npath = \"link/roc.txt\"\n\
                 [store]\nstate_dir = \"state\"\n"
            ),
            "is the same file as exports.squid.path".into(),
        ),
        // Found by the attacker helper: an export pointed at the store replaced state.db with a
        // host list (a malformed database), one pointed at the source overwrote it.
        (
            "an export over the state store",
            format!("{ANNUAIRE}[exports.plain]\npath = \"state/state.db\"\n[store]\nstate_dir = \"state\"\n"),
            "`exports.plain.path`: `".into(),
        ),
        (
            "an export over the annuaire source",
            format!("{ANNUAIRE}[exports.plain]\npath = \"annuaire.json\"\n[store]\nstate_dir = \"state\"\n"),
            "is the annuaire source (annuaire.url): an export must not overwrite rocsync's own files".into(),
        ),
        // Found by the second attack: an export over the configuration file or a watched log.
        (
            "an export over the configuration file",
            format!("{ANNUAIRE}[exports.plain]\npath = \"rocsync.toml\"\n[store]\nstate_dir = \"state\"\n"),
            "is this configuration file: an export must not overwrite rocsync's own files".into(),
        ),
        (
            "an export over a watched log",
            format!("{ANNUAIRE}[watch]\nsquid_access_log = \"out/access.log\"\n[exports.plain]\npath = \"out/access.log\"\n[store]\nstate_dir = \"state\"\n"),
            "is the file of watch.squid_access_log".into(),
        ),
        (
            "root exempted from the proxy host's filter",
            format!(
                "{ANNUAIRE}[resolver]\nenabled = true\n[nftables]\nenabled = true\nmode = \"managed\"\nhook = \"output\"\n\
                 exempt_users = [\"root\"]\n[exports.plain]\npath = \"out/roc.txt\"\n[store]\nstate_dir = \"state\"\n"
            ),
            "root (uid 0) cannot be exempted".into(),
        ),
        // Found by the attacker helper: a password in the annuaire's URL was shown by
        // check-config and status, and stored.
        (
            "credentials in the annuaire URL",
            format!("[annuaire]\nurl = \"https://user:hunter2@annuaire-amc.test/urls\"\n{OUTPUTS}"),
            "`annuaire.url`: carries credentials (`user:password@`), refused and not shown".into(),
        ),
    ]
}

#[test]
fn check_config_refuses_each_hostile_file_naming_the_key() {
    for (what, text, expected) in hostile_files() {
        let sb = Sandbox::new("auto", "urls-v1.json");
        std::fs::create_dir_all(sb.path("out")).unwrap();
        std::os::unix::fs::symlink("out", sb.path("link")).unwrap();
        sb.write_config(&text);
        let (code, err, out) = run(&sb, &["check-config"]);
        assert_eq!(code, Some(1), "{what}: check-config must refuse it\n{err}{out}");
        assert!(err.contains(&expected), "{what}: no `{expected}` in:\n{err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!err.contains("hunter2") && !out.contains("hunter2"), "{what}: a secret shown\n{err}{out}");
        if what == "an export over the state store" {
            assert!(err.contains("is the state store's state.db"), "{err}");
        }
        // Every command refuses it the same way, and writes nothing among the configuration.
        let (code, err, _) = run(&sb, &["once"]);
        assert_eq!(code, Some(1), "{what}: once\n{err}");
        assert!(err.contains(&expected) && !err.contains("panicked"), "{what}: {err}");
        for stray in ["state.db", "squid.acl", "roc.txt"] {
            assert!(!sb.path(stray).exists(), "{what}: {stray} written beside the configuration");
        }
        assert!(!sb.path("out/roc.txt").exists() && !sb.path("out/squid.acl").exists(), "{what}: an output written");
    }
}

/// `post_write_timeout = "18446744073709551615s"` passed check-config, then `once` panicked
/// ("overflow when adding duration to instant").
#[test]
fn once_with_an_overflowing_post_write_timeout_does_not_panic() {
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.write_config(&format!(
        "{ANNUAIRE}[review]\nmode = \"auto\"\n[exports.squid]\npath = \"out/squid.acl\"\npost_write_command = [\"true\"]\n\
         post_write_timeout = \"18446744073709551615s\"\n[store]\nstate_dir = \"state\"\n"
    ));
    let (code, err, _) = run(&sb, &["once"]);
    assert_ne!(code, Some(101), "a panic: {err}");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("`exports.squid.post_write_timeout`") && !err.contains("panicked"), "{err}");
    // The largest timeout taken runs as it should.
    sb.write_config(&format!(
        "{ANNUAIRE}[review]\nmode = \"auto\"\n[exports.squid]\npath = \"out/squid.acl\"\npost_write_command = [\"true\"]\n\
         post_write_timeout = \"1h\"\n[store]\nstate_dir = \"state\"\n"
    ));
    sb.ok(&["once"]);
    assert!(sb.read("out/squid.acl").contains("mutuelle-exemple.test"));
}

/// Refusing an inline secret printed it (`invalid type: string "Inline-S3cret-IMAP"`), and on
/// SIGHUP the journal kept it.
#[test]
fn an_inline_secret_is_shown_neither_by_check_config_nor_after_sighup() {
    let sb = Sandbox::with_config(&format!("{ANNUAIRE}[review]\nmode = \"auto\"\n"));
    sb.set_answer("urls-v1.json");
    for (key, section) in [("password", "notifications.imap"), ("password", "alerts.smtp"), ("client_password", "annuaire")] {
        let text = match section {
            "annuaire" => format!("[annuaire]\nurl = \"file:annuaire.json\"\n{key} = \"{SECRET}\"\n{OUTPUTS}"),
            _ => format!("{ANNUAIRE}[{section}]\n{key} = \"{SECRET}\"\n{OUTPUTS}"),
        };
        sb.write_config(&text);
        let (code, err, out) = run(&sb, &["check-config"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(&format!("`{section}.{key}`: must be")), "{err}");
        assert!(!err.contains(SECRET) && !out.contains(SECRET), "{section}.{key} shown:\n{err}{out}");
    }

    sb.write_config(&format!("{ANNUAIRE}[review]\nmode = \"auto\"\n{OUTPUTS}"));
    let mut daemon = Daemon::start(&sb);
    sb.write_config(&format!("{ANNUAIRE}[review]\nmode = \"auto\"\n[notifications.imap]\npassword = \"{SECRET}\"\n{OUTPUTS}"));
    daemon.signal("-HUP");
    daemon.wait_log("the configuration is refused", Duration::from_secs(10));
    let log = daemon.log();
    assert!(log.contains("`notifications.imap.password`"), "{log}");
    assert!(!log.contains(SECRET), "the secret reached the log:\n{log}");
    assert!(daemon.stop().success());
}

/// 10,000 connections to the HTTP endpoint with the unit's descriptor limit: the daemon ran out
/// of descriptors, its accept loop wrote "HTTP endpoint: Too many open files" some 21 million
/// times, and passes failed.
#[test]
fn a_connection_flood_leaves_the_daemon_its_descriptors() {
    // The daemon needs some 20 descriptors and its 64 connections; what a flood opens beyond
    // them waits in the listen backlog (128) or is refused by the kernel.
    const NOFILE: u32 = 160;
    const CONNECTIONS: usize = 1000;
    raise_own_nofile(CONNECTIONS as u64 + 512);
    let port = free_port();
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"file:annuaire.json\"\npoll_interval = \"1s\"\npoll_jitter = \"0s\"\n\
         [review]\nmode = \"auto\"\n[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    std::fs::write(sb.path("annuaire.json"), answer_json(&[("111111111", "idb.a.test")])).unwrap();
    let mut daemon = Daemon::start_with_nofile(&sb, NOFILE);
    assert!(sb.read("out/hosts.txt").contains("idb.a.test"));

    // Idle connections, as many as the kernel lets through (up to CONNECTIONS, within 20 s):
    // more than the daemon has descriptors. Without a cap it accepted them all and ran out.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut refused_in_a_row = 0;
    while idle.len() < CONNECTIONS && refused_in_a_row < 3 && started.elapsed() < Duration::from_secs(20) {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(stream) => {
                idle.push(stream);
                refused_in_a_row = 0;
            }
            Err(_) => refused_in_a_row += 1,
        }
    }
    assert!(idle.len() > NOFILE as usize, "only {} connections opened: no flood", idle.len());

    // While they hold on, a pass still reads, plans and writes its outputs.
    std::fs::write(sb.path("annuaire.json"), answer_json(&[("111111111", "idb.a.test"), ("222222222", "idb.b.test")])).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(sb.path("out/hosts.txt")).is_ok_and(|t| t.contains("idb.b.test"))),
        "no pass under the flood:\n{}",
        daemon.log()
    );
    assert!(daemon.alive(), "{}", daemon.log());

    // Once they close, the endpoint answers a normal request.
    drop(idle);
    let mut answer = String::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            answer = http_get(port, "/roc-hosts.txt").unwrap_or_default();
            answer.starts_with("HTTP/1.1 200")
        }),
        "no answer after the flood: {answer:?}\n{}",
        daemon.log()
    );
    assert!(answer.contains("idb.b.test"), "{answer}");

    let log = daemon.log();
    let accept_lines = log.lines().filter(|l| l.contains("cannot accept") || l.contains("Too many open files")).count();
    assert!(accept_lines < 50, "{accept_lines} lines about accept errors");
    assert!(daemon.stop().success(), "{log}");
}



fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 request on a fresh connection; the whole answer, headers included.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Lets this test process hold the flood's connections (the soft limit is often 1024).
fn raise_own_nofile(want: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a valid struct; only the soft limit is raised, up
    // to the hard one.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
