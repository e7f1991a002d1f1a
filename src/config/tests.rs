use super::*;

use secrecy::ExposeSecret as _;

use super::rules::{WEEK, human, is_loopback};
use crate::console::AuthMode;
use crate::sinks::files::Export;

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    Config::load(text, "test.toml", dir)
}

const MINIMAL: &str = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n\
                       [exports.squid]\npath = \"out/squid.acl\"\n";

#[test]
fn the_example_configuration_is_valid() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")).unwrap();
    let config = load(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.mode, Mode::Hybrid);
    assert_eq!(config.guard, Guard::default());
    assert_eq!(config.exports.len(), 3);
}

#[test]
fn every_unknown_key_is_reported_with_place_and_suggestion() {
    let text = format!("{MINIMAL}[review]\nmdoe = \"auto\"\nmax_removal_hots = 3\n[anuaire]\nurl = \"x\"\n");
    let err = load(&text).unwrap_err();
    let shown: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
    assert_eq!(
        shown,
        [
            "line 6, column 1: `review.mdoe`: unknown key; did you mean `mode`?",
            "line 7, column 1: `review.max_removal_hots`: unknown key; did you mean `max_removal_hosts`?",
            "line 8, column 2: `anuaire`: unknown key; did you mean `annuaire`?",
        ]
    );
}

#[test]
fn wrong_types_and_values_are_all_reported() {
    let text = format!(
        "{MINIMAL}[review]\nmode = \"automatic\"\nmax_removal_percent = 120\nremind_after = \"tomorrow\"\n\
         [policy]\nextra_hosts = [\"*.fr\", \"crl.igc-sante.test:80\"]\nmirror_amc = [\"12\"]\n\
         [nftables]\ntable = \"bad name\"\n"
    );
    let err = load(&text).unwrap_err();
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect();
    assert_eq!(
        keys,
        [
            "review.mode",
            "review.max_removal_percent",
            "review.remind_after",
            "policy.extra_hosts[0]",
            "policy.mirror_amc[0]",
            "nftables.table",
        ],
        "{err}"
    );
    let lines: Vec<_> = err.problems.iter().map(|p| p.at.unwrap()).collect();
    // `remind_after` is a parse error now, placed at its value like `mode`.
    assert_eq!(lines, [(6, 8), (7, 1), (8, 16), (10, 16), (11, 15), (13, 1)], "{err}");
    assert!(err.to_string().contains("public suffix"), "{err}");
}

#[test]
fn exports_take_a_post_write_command_and_only_plain_a_wildcard_style() {
    let text = format!(
        "{MINIMAL}[exports.json]\npath = \"out/x.json\"\npost_write_command = [\"true\"]\npost_write_timeout = \"2s\"\n\
         [exports.haproxy]\npath = \"out/h.acl\"\nwildcard_style = \"dot\"\n"
    );
    let err = load(&text).unwrap_err();
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect();
    assert_eq!(keys, ["exports.haproxy.wildcard_style"], "{err}");
    let ok = load(&format!("{MINIMAL}[exports.json]\npath = \"out/x.json\"\npost_write_command = [\"true\"]\n")).unwrap();
    let json = ok.exports.iter().find(|e| e.export == Export::Json).unwrap();
    assert_eq!(json.post_write.as_ref().map(|p| p.argv.clone()), Some(vec!["true".to_owned()]));
}

#[test]
fn secrets_are_never_inline() {
    let text = format!("{MINIMAL}[alerts.smtp]\npassword = \"hunter2\"\n");
    let err = load(&text).unwrap_err();
    assert_eq!(err.problems[0].message, INLINE_SECRET, "{err}");
    let text = format!("{MINIMAL}[alerts.smtp]\npassword = {{ value = \"hunter2\" }}\n");
    let err = load(&text).unwrap_err();
    assert!(err.problems[0].message.contains("valid keys here: file, env"), "{err}");
}

/// Refusing `password = "Inline-S3cret-IMAP"` printed `invalid type: string
/// "Inline-S3cret-IMAP"`, and on SIGHUP the journal kept it.
#[test]
fn an_inline_secret_is_refused_without_being_shown() {
    let values = [
        ("\"Inline-S3cret-IMAP\"", "Inline-S3cret-IMAP"),
        ("'Inline-S3cret-IMAP'", "Inline-S3cret-IMAP"),
        ("\"\"\"Inline-S3cret-IMAP\"\"\"", "Inline-S3cret-IMAP"),
        ("987654321987", "987654321987"),
        ("-987654321987", "987654321987"),
        ("98765432109876543210987", "98765432109876543210987"),
        ("3.14159265", "14159265"),
        ("[\"Inline-S3cret-IMAP\"]", "Inline-S3cret-IMAP"),
        ("1979-05-27T07:32:00Z", "1979"),
        ("{ file = \"pass\", value = \"Inline-S3cret-IMAP\" }", "Inline-S3cret-IMAP"),
    ];
    for (section, key) in [("annuaire", "client_password"), ("notifications.imap", "password"), ("alerts.smtp", "password")] {
        for (value, secret) in values {
            let text = match section {
                "annuaire" => format!(
                    "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n{key} = {value}\n[exports.squid]\npath = \"out/squid.acl\"\n"
                ),
                _ => format!("{MINIMAL}[{section}]\n{key} = {value}\n"),
            };
            let err = load(&text).unwrap_err();
            let shown = err.to_string();
            assert!(!shown.contains(secret), "{section}.{key} = {value} shown:\n{shown}");
            for p in &err.problems {
                assert!(!p.message.contains(secret) && !format!("{p:?}").contains(secret), "{p:?}");
            }
            // The key is named (or the key inside its table that is wrong), with its place.
            let named = format!("{section}.{key}");
            let p = err.problems.iter().find(|p| p.key.as_deref().is_some_and(|k| k.starts_with(&named))).unwrap_or_else(|| panic!("{shown}"));
            assert!(p.at.is_some(), "{p:?}");
        }
    }
    let err = load(&format!("{MINIMAL}[notifications.imap]\npassword = \"Inline-S3cret-IMAP\"\n")).unwrap_err();
    assert_eq!(
        err.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["line 6, column 12: `notifications.imap.password`: must be `{ file = \"…\" }` or `{ env = \"…\" }`; an inline secret is refused and not shown"]
    );
}

/// MINIMAL with `key = "value"` under `[section]`.
fn with(section: &str, key: &str, value: &str) -> String {
    let url = "url = \"file:tests/fixtures/annuaire/urls-v1.json\"";
    match section {
        "annuaire" => format!("[annuaire]\n{url}\n{key} = \"{value}\"\n[exports.squid]\npath = \"out/squid.acl\"\n"),
        "exports.squid" => format!("[annuaire]\n{url}\n[exports.squid]\npath = \"out/squid.acl\"\n{key} = \"{value}\"\n"),
        _ => format!("{MINIMAL}[{section}]\n{key} = \"{value}\"\n"),
    }
}

/// The message of the problem with `key`, if there is one.
fn problem(text: &str, key: &str) -> Option<String> {
    let err = load(text).err()?;
    err.problems.iter().find(|p| p.key.as_deref() == Some(key)).map(|p| {
        assert!(p.at.is_some(), "a place for {p:?}");
        p.message.clone()
    })
}

/// Whether `key` is refused for its range (other problems with it do not count: min_ttl
/// longer than max_ttl, say).
fn out_of_range(text: &str, key: &str) -> bool {
    problem(text, key).is_some_and(|m| m.contains("too short") || m.contains("too long"))
}

/// `poll_interval = "0s"` was taken (some 250 polls a second), and
/// `post_write_timeout = "18446744073709551615s"` made `once` panic: every duration has a
/// floor and a ceiling, checked with the key, the place and the reason.
#[test]
fn every_duration_has_a_floor_and_a_ceiling() {
    // (section, key, below the floor, floor, ceiling, above the ceiling), file source.
    let cases = [
        ("annuaire", "poll_interval", Some("999ms"), "1s", "7d", "8d"),
        ("annuaire", "poll_jitter", None, "0s", "1d", "25h"),
        ("annuaire", "connect_timeout", Some("0s"), "1s", "5m", "301s"),
        ("annuaire", "timeout", Some("0s"), "1s", "1h", "61m"),
        ("annuaire", "backoff_max", Some("0s"), "1s", "7d", "8d"),
        ("annuaire", "unreachable_alert_after", Some("59s"), "1m", "30d", "31d"),
        ("annuaire", "cert_expiry_warning", Some("23h"), "1d", "365d", "366d"),
        ("notifications", "debounce", Some("0s"), "1s", "1h", "2h"),
        ("notifications.imap", "poll_interval", Some("9s"), "10s", "1d", "2d"),
        ("notifications.imap", "timeout", Some("0s"), "1s", "1h", "2h"),
        ("notifications.maildir", "rescan_interval", Some("0s"), "1s", "1d", "2d"),
        ("resolver", "min_ttl", Some("0s"), "1s", "1d", "2d"),
        ("resolver", "max_ttl", Some("0s"), "1s", "7d", "8d"),
        ("resolver", "grace", None, "0s", "30d", "31d"),
        ("resolver", "timeout", Some("0s"), "1s", "5m", "6m"),
        ("alerts", "dedup_window", Some("59s"), "1m", "30d", "31d"),
        ("alerts.smtp", "timeout", Some("0s"), "1s", "1h", "2h"),
        ("review", "remind_after", Some("0s"), "1s", "365d", "366d"),
        ("exports.squid", "post_write_timeout", Some("0s"), "1s", "1h", "18446744073709551615s"),
        ("console", "session_idle", Some("4s"), "5s", "1d", "2d"),
        ("console", "session_max", Some("59s"), "1m", "30d", "31d"),
    ];
    for (section, key, below, floor, ceiling, above) in cases {
        let full = format!("{section}.{key}");
        if let Some(below) = below {
            assert_eq!(
                problem(&with(section, key, below), &full),
                Some(format!("`{below}` is too short: at least {floor}")),
                "{full}"
            );
        }
        assert!(!out_of_range(&with(section, key, floor), &full), "{full} = {floor}");
        assert!(!out_of_range(&with(section, key, ceiling), &full), "{full} = {ceiling}");
        assert_eq!(problem(&with(section, key, above), &full), Some(format!("`{above}` is too long: at most {ceiling}")), "{full}");
    }
}

/// The console listening beyond loopback without TLS would carry passwords in clear; in
/// proxy mode without trusted proxies it would refuse everyone.
#[test]
fn the_console_needs_tls_beyond_loopback_and_its_proxies_named() {
    let console = |lines: &str| format!("{MINIMAL}[console]\nenabled = true\n{lines}");
    let config = load(&console("")).unwrap_or_else(|e| panic!("{e}"));
    let settings = config.console.expect("enabled");
    assert_eq!((settings.listen.to_string().as_str(), settings.auth), ("127.0.0.1:9443", AuthMode::Local));
    assert_eq!((settings.session_idle, settings.session_max), (Duration::from_secs(1800), Duration::from_secs(43_200)));
    assert!(load(MINIMAL).unwrap().console.is_none(), "off by default");
    let open = problem(&console("listen = \"0.0.0.0:9443\"\n"), "console.tls_cert").expect("TLS asked for");
    assert!(open.contains("0.0.0.0:9443") && open.contains("tls_key"), "{open}");
    assert!(problem(&console("listen = \"[::1]:9443\"\n"), "console.tls_cert").is_none(), "loopback may go without");
    assert!(problem(&console("tls_cert = \"missing.pem\"\n"), "console.tls_key").is_some());
    let unreadable = problem(&console("tls_cert = \"missing.pem\"\ntls_key = \"missing.key\"\n"), "console.tls_cert").unwrap();
    assert!(unreadable.contains("missing.pem"), "{unreadable}");
    assert!(problem(&console("auth = \"proxy\"\n"), "console.trusted_proxies").is_some());
    let proxies = load(&console("auth = \"proxy\"\ntrusted_proxies = [\"127.0.0.1\", \"198.18.0.0/24\"]\n")).unwrap();
    assert_eq!(proxies.console.unwrap().trusted_proxies.len(), 2);
    assert!(problem(&console("trusted_proxies = [\"proxy.hopital\"]\n"), "console.trusted_proxies[0]").is_some());
    assert!(problem(&console("proxy_user_header = \"X Remote\"\n"), "console.proxy_user_header").is_some());
    assert!(problem(&console("session_idle = \"2h\"\nsession_max = \"1h\"\n"), "console.session_idle").is_some());
    // Links in mails: the address as the URL parser writes it, without a trailing slash.
    let linked = load(&console("public_url = \"https://rocsync.hopital.test/\"\n")).unwrap();
    assert_eq!(linked.console.unwrap().plan_link(7).as_deref(), Some("https://rocsync.hopital.test/plans/7"));
    for bad in ["ftp://rocsync.hopital.test", "https://user:pw@rocsync.hopital.test", "https://rocsync.hopital.test/?a=b", "not a url"] {
        assert!(problem(&console(&format!("public_url = \"{bad}\"\n")), "console.public_url").is_some(), "{bad}");
    }
}

/// Over https, `poll_interval = "0s"` would flood the national web service.
#[test]
fn the_annuaire_web_service_is_polled_at_most_twice_a_minute() {
    let https = |url: &str, key: &str, value: &str| {
        format!("[annuaire]\nurl = \"{url}\"\n{key} = \"{value}\"\n[exports.squid]\npath = \"out/squid.acl\"\n")
    };
    let national = "https://annuaire-amc.test/urls";
    let why = "between two calls to the annuaire web service, a national service that every hospital polls";
    for key in ["poll_interval", "backoff_max"] {
        assert_eq!(
            problem(&https(national, key, "0s"), &format!("annuaire.{key}")),
            Some(format!("`0s` is too short: at least 30s {why}"))
        );
        assert!(out_of_range(&https(national, key, "29s"), &format!("annuaire.{key}")));
        assert!(!out_of_range(&https(national, key, "30s"), &format!("annuaire.{key}")));
    }
    let debounce = format!("[annuaire]\nurl = \"{national}\"\n[notifications]\ndebounce = \"5s\"\n[exports.squid]\npath = \"x\"\n");
    assert_eq!(problem(&debounce, "notifications.debounce"), Some(format!("`5s` is too short: at least 30s {why}")));
    // A server on this host (a relay, a test) is nobody else's: a file's floor.
    for url in ["https://127.0.0.1:8443/urls", "https://localhost/urls", "https://[::1]:8443/urls"] {
        assert!(!out_of_range(&https(url, "poll_interval", "3s"), "annuaire.poll_interval"), "{url}");
        assert!(out_of_range(&https(url, "poll_interval", "0s"), "annuaire.poll_interval"), "{url}");
    }
}

#[test]
fn loopback_is_localhost_or_a_loopback_address() {
    for yes in ["localhost", "LOCALHOST", "127.0.0.1", "127.0.0.53", "::1", "[::1]"] {
        assert!(is_loopback(yes), "{yes}");
    }
    for no in ["", "mail.hopital.test", "localhost.hopital.test", "10.0.0.1", "::", "0.0.0.0", "[::1"] {
        assert!(!is_loopback(no), "{no}");
    }
    assert_eq!(human(Duration::from_secs(300)), "5m");
    assert_eq!(human(Duration::from_secs(90)), "90s");
    assert_eq!(human(WEEK), "7d");
}

/// SMTP `security = "none"` to another host passed, and lettre sent AUTH PLAIN in clear.
#[test]
fn smtp_without_tls_is_refused_beyond_loopback() {
    let alerts = |server: &str, security: &str| {
        format!(
            "{MINIMAL}[alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
             [alerts.smtp]\nserver = \"{server}\"\nsecurity = \"{security}\"\npassword = {{ env = \"PATH\" }}\n\
             [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\n"
        )
    };
    let refused = problem(&alerts("smtp.hopital.test", "none"), "alerts.smtp.security").expect("refused");
    assert!(refused.contains("in clear") && refused.contains("loopback"), "{refused}");
    for server in ["127.0.0.1", "localhost", "::1"] {
        assert_eq!(problem(&alerts(server, "none"), "alerts.smtp.security"), None, "{server}");
    }
    for security in ["starttls", "tls"] {
        assert_eq!(problem(&alerts("smtp.hopital.test", security), "alerts.smtp.security"), None, "{security}");
    }
}

/// `state_dir = ""` and an export's `path = ""` were taken, and rocsync wrote its files
/// among the configuration's.
#[test]
fn empty_paths_are_refused() {
    assert_eq!(problem(&with("store", "state_dir", ""), "store.state_dir"), Some("is empty: give the directory that holds rocsync's state".into()));
    let empty_export = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n[exports.squid]\npath = \"\"\n";
    assert_eq!(problem(empty_export, "exports.squid.path"), Some("is empty: give the file to write".into()));
    assert!(problem(&format!("{MINIMAL}[exports.plain]\npath = \"/\"\n"), "exports.plain.path").is_some_and(|m| m.contains("names no file")));
    for key in ["squid_access_log", "nft_log", "journal_directory"] {
        assert!(problem(&with("watch", key, ""), &format!("watch.{key}")).is_some_and(|m| m.starts_with("is empty")), "{key}");
    }
    let https = "[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\nclient_cert = \"\"\nclient_key = \"\"\nca_bundle = \"\"\n[exports.squid]\npath = \"x\"\n";
    for key in ["client_cert", "client_key", "ca_bundle"] {
        assert_eq!(problem(https, &format!("annuaire.{key}")), Some("is empty: give a file".into()), "{key}");
    }
    // A directory opens as a file would; it is not one.
    let dir = "[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\nclient_pkcs12 = \"tests\"\nclient_password = { env = \"PATH\" }\nca_bundle = \"tests/fixtures\"\n[exports.squid]\npath = \"x\"\n";
    assert!(problem(dir, "annuaire.client_pkcs12").is_some_and(|m| m.ends_with("is a directory, not a file")));
    assert!(problem(dir, "annuaire.ca_bundle").is_some_and(|m| m.ends_with("is a directory, not a file")));
}

/// Two exports reaching one file through a symlinked directory passed check-config, and the
/// Squid ACL then held the plain list.
#[test]
fn two_exports_writing_one_file_are_refused_whatever_the_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    std::os::unix::fs::symlink("out", dir.path().join("link")).unwrap();
    let answer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/annuaire/urls-v1.json");
    let text = |squid: &str, plain: &str| {
        format!(
            "[annuaire]\nurl = \"file:{}\"\n[exports.squid]\npath = \"{squid}\"\n[exports.plain]\npath = \"{plain}\"\n",
            answer.display()
        )
    };
    let shared = |squid: &str, plain: &str| -> Option<String> {
        let err = Config::load(&text(squid, plain), "test.toml", dir.path()).err()?;
        err.problems.iter().find(|p| p.key.as_deref() == Some("exports.plain.path")).map(|p| p.message.clone())
    };
    let through_link = shared("out/roc.txt", "link/roc.txt").expect("refused");
    assert!(through_link.contains("is the same file as exports.squid.path"), "{through_link}");
    assert!(through_link.contains("link/roc.txt") && through_link.contains("out/roc.txt"), "the pair: {through_link}");
    assert!(shared("out/roc.txt", "out/../out/roc.txt").is_some());
    assert!(shared("out/roc.txt", "out/roc.txt").is_some());
    // Directories that do not exist yet: compared by their canonical path.
    assert!(shared("link/new/roc.txt", "out/new/roc.txt").is_some());
    assert!(shared("out/new/roc.txt", "out/new/other.txt").is_none());
    assert!(shared("out/squid.acl", "link/roc.txt").is_none());
}

#[test]
fn secret_from_file_and_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "s3cret\n").unwrap();
    let by_file = SecretRef { file: Some("pass".into()), env: None };
    assert_eq!(by_file.read(dir.path()).unwrap().expose_secret(), "s3cret");
    let by_env = SecretRef { file: None, env: Some("ROCSYNC_TEST_SURELY_UNSET".into()) };
    assert!(by_env.read(dir.path()).unwrap_err().contains("not set"));
    let both = SecretRef { file: Some("pass".into()), env: Some("X".into()) };
    assert!(both.read(dir.path()).is_err());
}

#[test]
fn https_source_needs_identity_and_ca() {
    let err = load("[annuaire]\nurl = \"https://annuaire.test/urls\"\n[exports.squid]\npath = \"x\"\n").unwrap_err();
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.clone().unwrap_or_default()).collect();
    assert_eq!(keys, ["annuaire", "annuaire.ca_bundle"], "{err}");
}

#[test]
fn syntax_errors_name_the_place() {
    let err = load("[annuaire]\nurl = \"unterminated\n").unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].at.map(|(l, _)| l), Some(2), "{err}");
}

/// A broken file on disk locked the RSSI out: `status`, `plan list` and `approve` need only
/// the store, and must still find it.
#[test]
fn a_broken_file_still_names_its_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rocsync.toml");
    let answer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/annuaire/urls-v1.json");
    let good = format!("[annuaire]\nurl = \"file:{}\"\n[exports.squid]\npath = \"out/squid.acl\"\n[store]\nstate_dir = \"st\"\n", answer.display());
    std::fs::write(&path, &good).unwrap();
    let (config, problems) = Config::from_path_lenient(&path).unwrap();
    assert!(problems.is_none());
    assert_eq!(config.state_dir, dir.path().join("st"));
    // An unknown key: the rest of the file still counts.
    std::fs::write(&path, good.replace("[store]", "[review]\nmood = \"auto\"\n[store]")).unwrap();
    let (config, problems) = Config::from_path_lenient(&path).unwrap();
    assert_eq!(config.state_dir, dir.path().join("st"));
    assert!(problems.unwrap().to_string().contains("review.mood"));
    // Not TOML at all: `[store]` is read alone.
    std::fs::write(&path, good.replace("[exports.squid]", "[exports.squid\n")).unwrap();
    let (config, problems) = Config::from_path_lenient(&path).unwrap();
    assert_eq!(config.state_dir, dir.path().join("st"));
    assert!(problems.is_some());
    // A state directory that cannot be told is an error.
    std::fs::write(&path, good.replace("state_dir = \"st\"", "state_dir = 5")).unwrap();
    assert!(Config::from_path_lenient(&path).is_err());
    std::fs::write(&path, good.replace("state_dir = \"st\"", "state_dir = \"\"\nx = [")).unwrap();
    assert!(Config::from_path_lenient(&path).is_err());
}

#[test]
fn the_store_table_is_found_in_a_file_that_is_not_toml() {
    let text = "store.keep_applied_states = 3\n[annuaire\nurl = 1\n[store] # here\nstate_dir = \"/x\"\n[review]\nmode = 1\n";
    assert_eq!(store_section(text), "store.keep_applied_states = 3\n[store] # here\nstate_dir = \"/x\"\n");
}

/// `check-config` said OK with a wrong PKCS#12 password; the error came at the first poll.
#[test]
fn a_pkcs12_file_that_does_not_open_with_its_password_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.p12"), b"not a PKCS#12 file").unwrap();
    std::fs::write(dir.path().join("p12.pass"), "secret\n").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "").unwrap();
    let text = "[annuaire]\nurl = \"https://annuaire-amc.test/urls\"\nclient_pkcs12 = \"client.p12\"\n\
                client_password = { file = \"p12.pass\" }\nca_bundle = \"ca.pem\"\n[exports.squid]\npath = \"out/squid.acl\"\n";
    let err = Config::load(text, "test.toml", dir.path()).unwrap_err();
    let p = err.problems.iter().find(|p| p.key.as_deref() == Some("annuaire.client_password")).unwrap_or_else(|| panic!("{err}"));
    assert!(p.message.contains("client.p12") && p.message.contains("wrong password"), "{p}");
    assert_eq!(p.at.map(|(line, _)| line), Some(4), "{p}");
}

/// A build without the `netlink` feature (the default, which needs only the Rust toolchain)
/// refuses `[nftables] enabled = true` with what to do instead; a build with it takes it.
#[test]
fn nftables_without_the_netlink_feature_says_what_to_do() {
    let text = "[annuaire]\nurl = \"file:a.json\"\n[resolver]\nenabled = true\n[nftables]\nenabled = true\n";
    let refused = problem(text, "nftables.enabled").is_some_and(|p| p.contains("built without the `netlink` feature") && p.contains("exports.nft_script"));
    assert_eq!(refused, !cfg!(feature = "netlink"), "{:?}", problem(text, "nftables.enabled"));
}

/// `hook = "output"` on the proxy host dropped the proxy's own connections to wildcard
/// hosts: such a configuration names the users to exempt (or, knowingly, none), and only
/// the output hook takes them.
#[test]
fn the_output_hook_asks_which_users_to_exempt() {
    let base = "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\n[resolver]\nenabled = true\n\
                [exports.squid]\npath = \"out/squid.acl\"\n[nftables]\nenabled = true\nmode = \"managed\"\n";
    let exempt = |text: &str| -> Option<String> {
        let err = load(text).err()?;
        let found = err.problems.iter().find(|p| p.key.as_deref().is_some_and(|k| k.starts_with("nftables.exempt_users")));
        found.map(|p| p.message.clone())
    };
    let unset = exempt(&format!("{base}hook = \"output\"\n")).expect("refused");
    assert!(unset.contains("`proxy` for Debian's Squid") && unset.contains("exempt_users = []"), "{unset}");
    assert_eq!(exempt(&format!("{base}hook = \"output\"\nexempt_users = []\n")), None);
    assert_eq!(exempt(&format!("{base}hook = \"output\"\nexempt_users = [\"13\"]\n")), None);
    assert_eq!(exempt(&format!("{base}hook = \"forward\"\n")), None);
    let forward = exempt(&format!("{base}hook = \"forward\"\nexempt_users = [\"13\"]\n")).expect("refused");
    assert!(forward.contains("only the managed chain on the output hook"), "{forward}");
    let unknown = exempt(&format!("{base}hook = \"output\"\nexempt_users = [\"no-such-user-here\"]\n")).expect("refused");
    assert!(unknown.contains("no user `no-such-user-here`"), "{unknown}");
}

#[test]
fn exempt_users_by_name_or_uid() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\nproxy:x:13:13:proxy:/bin:/usr/sbin/nologin\n";
    assert_eq!(crate::accounts::id_in(passwd, "proxy"), Some(13));
    assert_eq!(crate::accounts::id_in(passwd, "root"), Some(0));
    assert_eq!(crate::accounts::id_in(passwd, "65534"), Some(65534));
    assert_eq!(crate::accounts::id_in(passwd, "prox"), None);
    assert_eq!(crate::accounts::id_in(passwd, "x"), None);
}

/// `remind_after = "tomorrow"` was read by the daemon with its own fallback (24 h), and a
/// wrong unit went unseen until a reminder came at the wrong time: a duration is parsed with
/// the file, and one that does not parse is a problem at its value's line and column.
#[test]
fn a_bad_duration_is_a_parse_error_with_line_and_column() {
    let err = load(&format!("{MINIMAL}[review]\nremind_after = \"tomorrow\"\n")).unwrap_err();
    let p = err.problems.iter().find(|p| p.key.as_deref() == Some("review.remind_after")).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(p.at, Some((6, 16)), "{p}");
    assert!(p.message.contains("`tomorrow` is not a duration"), "{p}");
    // Not a string at all: the same place, serde's type message.
    let err = load(&format!("{MINIMAL}[alerts]\ndedup_window = 3600\n")).unwrap_err();
    let p = err.problems.iter().find(|p| p.key.as_deref() == Some("alerts.dedup_window")).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(p.at, Some((6, 16)), "{p}");
    assert!(p.message.contains("expected a string"), "{p}");
    // Inside a table that is an export: the key is named with its place too.
    let err = load(&format!("{MINIMAL}[exports.json]\npath = \"out/x.json\"\npost_write_timeout = \"2 fortnights\"\n")).unwrap_err();
    let p = err.problems.iter().find(|p| p.key.as_deref() == Some("exports.json.post_write_timeout")).unwrap_or_else(|| panic!("{err}"));
    assert_eq!(p.at, Some((7, 22)), "{p}");
}

/// The daemon re-parsed `[annuaire] poll_interval` and friends with fallbacks of its own, so a
/// value could differ from what check-config had taken: the typed settings are the file's.
#[test]
fn the_typed_durations_are_the_files_values() {
    let text = format!(
        "[annuaire]\nurl = \"file:tests/fixtures/annuaire/urls-v1.json\"\npoll_interval = \"15m\"\npoll_jitter = \"90s\"\n\
         backoff_max = \"45m\"\nunreachable_alert_after = \"3h\"\ncert_expiry_warning = \"20d\"\n\
         [exports.squid]\npath = \"out/squid.acl\"\npost_write_command = [\"true\"]\npost_write_timeout = \"1m 30s\"\n\
         [notifications]\ndebounce = \"45s\"\n[notifications.imap]\npoll_interval = \"5m\"\nuse_idle = false\ntimeout = \"20s\"\n\
         [notifications.maildir]\nrescan_interval = \"10m\"\n\
         [resolver]\nmin_ttl = \"1m\"\nmax_ttl = \"2h\"\ngrace = \"3h\"\ntimeout = \"7s\"\n\
         [alerts]\ndedup_window = \"2h\"\n[alerts.smtp]\ntimeout = \"40s\"\n[review]\nremind_after = \"36h\"\n"
    );
    let config = load(&text).unwrap_or_else(|e| panic!("{e}"));
    let (s, m, h, d) = (|n: u64| Duration::from_secs(n), |n: u64| Duration::from_secs(60 * n), |n: u64| Duration::from_secs(3600 * n), |n: u64| Duration::from_secs(86_400 * n));
    assert_eq!(
        config.annuaire,
        PollSettings { poll_interval: m(15), poll_jitter: s(90), backoff_max: m(45), unreachable_alert_after: h(3) }
    );
    assert_eq!(config.cert_expiry_warning, d(20));
    assert_eq!(config.exports[0].post_write.as_ref().map(|p| p.timeout), Some(s(90)));
    let n = &config.notifications;
    assert_eq!((n.debounce, n.imap_poll_interval, n.imap_use_idle, n.maildir_rescan_interval), (s(45), m(5), false, m(10)));
    let r = &config.resolver;
    assert_eq!((r.policy.min_ttl, r.policy.max_ttl, r.policy.grace, r.timeout), (m(1), h(2), h(3), s(7)));
    assert_eq!((config.alerts.dedup_window, config.alerts.smtp.timeout), (h(2), s(40)));
    assert_eq!(config.review.remind_after, h(36));
}

/// The defaults that the daemon used to repeat beside its parsing live in the schema alone.
#[test]
fn the_defaults_are_typed_once() {
    let config = load(MINIMAL).unwrap_or_else(|e| panic!("{e}"));
    let (s, m, h, d) = (|n: u64| Duration::from_secs(n), |n: u64| Duration::from_secs(60 * n), |n: u64| Duration::from_secs(3600 * n), |n: u64| Duration::from_secs(86_400 * n));
    assert_eq!(
        config.annuaire,
        PollSettings { poll_interval: m(10), poll_jitter: m(1), backoff_max: m(30), unreachable_alert_after: h(2) }
    );
    assert_eq!(config.cert_expiry_warning, d(30));
    let n = &config.notifications;
    assert_eq!((n.debounce, n.imap_poll_interval, n.imap_use_idle, n.maildir_rescan_interval), (s(30), m(2), true, m(5)));
    assert_eq!(n.max_message_bytes, 4 * 1024 * 1024);
    let r = &config.resolver;
    assert_eq!((r.policy.min_ttl, r.policy.max_ttl, r.policy.grace, r.timeout, r.enabled), (s(30), h(1), h(1), s(5), false));
    assert_eq!((config.alerts.dedup_window, config.alerts.smtp.timeout, config.alerts.max_per_hour), (h(1), s(30), 20));
    assert_eq!((config.alerts.smtp.port, &config.alerts.smtp.security), (587, &TlsMode::Starttls));
    assert_eq!(config.alerts.language, Language::Fr);
    assert_eq!(config.review.remind_after, h(24));
    assert_eq!(config.http, HttpSettings { enabled: false, listen: "127.0.0.1:9780".parse().unwrap(), metrics: true });
    assert_eq!(config.keep_applied_states, crate::store::KEEP_APPLIED_STATES);
    assert_eq!((config.nftables.log_prefix.as_str(), config.nftables.layout.is_none()), ("rocsync-drop: ", true));
    assert_eq!(config.exports[0].post_write, None);
    assert_eq!(config.watch, WatchSettings::default());
}

/// `ImapSettings` and `TlsSettings` derived `Debug` over a `String` password: a `{:?}` of the
/// configuration (a debug log, a panic message) printed the IMAP, SMTP and PKCS#12 passwords.
#[test]
fn the_configurations_debug_never_shows_a_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("imap.pass"), "Imap-S3cret-Pa55\n").unwrap();
    std::fs::write(dir.path().join("smtp.pass"), "Smtp-S3cret-Pa55\n").unwrap();
    let answer = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/annuaire/urls-v1.json");
    let text = format!(
        "[annuaire]\nurl = \"file:{}\"\n[exports.squid]\npath = \"out/squid.acl\"\n\
         [notifications]\nenabled = true\nsource = \"imap\"\nallowed_senders = [\"@amc.test\"]\n\
         [notifications.imap]\nserver = \"127.0.0.1\"\nusername = \"roc\"\npassword = {{ file = \"imap.pass\" }}\n\
         [alerts]\nenabled = true\nfrom = \"rocsync@hopital.test\"\n\
         [alerts.smtp]\nserver = \"127.0.0.1\"\nusername = \"roc\"\npassword = {{ file = \"smtp.pass\" }}\n\
         [alerts.recipients]\ndsi = [\"dsi@hopital.test\"]\n",
        answer.display()
    );
    let config = Config::load(&text, "test.toml", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    // Read, and used where they are exposed…
    assert_eq!(config.imap.as_ref().map(|i| i.password.expose_secret().to_owned()).as_deref(), Some("Imap-S3cret-Pa55"));
    assert_eq!(config.alerts.smtp.password.as_ref().map(|p| p.expose_secret().to_owned()).as_deref(), Some("Smtp-S3cret-Pa55"));
    // …never printed.
    let shown = format!("{config:?} {config:#?}");
    for secret in ["Imap-S3cret-Pa55", "Smtp-S3cret-Pa55"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("REDACTED"), "{shown}");
    let tls = crate::sources::https::TlsSettings { password: Some("P12-S3cret-Pa55".to_owned().into()), ..Default::default() };
    assert!(!format!("{tls:?}").contains("P12-S3cret-Pa55"), "{tls:?}");
}

/// Each default written in the schema parses (`Dur::default_of` would panic otherwise).
#[test]
fn every_default_duration_parses() {
    let raw = schema::RawConfig::default();
    assert_eq!(raw.annuaire.poll_interval.get(), Duration::from_secs(600));
    assert_eq!(raw.annuaire.poll_interval.text(), "10m");
    assert_eq!(format!("{:?}", raw.review.remind_after), "24h");
    let export: schema::RawFileExport = toml::from_str("path = \"x\"").unwrap();
    assert_eq!(export.post_write_timeout.get(), Duration::from_secs(30));
}

/// The journal and a kernel log file carry the same nftables messages: watching both counted
/// every blocked or allowed request twice.
#[test]
fn the_journal_and_an_nft_log_are_not_watched_together() {
    let both = format!("{MINIMAL}[watch]\njournal = true\nnft_log = \"/var/log/kern.log\"\n");
    let said = problem(&both, "watch.nft_log").expect("refused");
    assert!(said.contains("counted twice"), "{said}");
    assert!(load(&format!("{MINIMAL}[watch]\njournal = true\n")).is_ok());
    assert!(load(&format!("{MINIMAL}[watch]\nnft_log = \"/var/log/kern.log\"\n")).is_ok());
}
