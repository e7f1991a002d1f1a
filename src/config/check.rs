//! The second stage: the values that the types alone cannot check, and the [`Config`] built
//! from the raw schema. Each problem is reported with its key; the caller gives it its place.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::plan::Guard;
use crate::sinks::files::{Export, FileExport, PostWrite};
use crate::sinks::nftables::{Layout, Managed};
use crate::sources::https::{HttpsSettings, TlsSettings};
use crate::sources::imap::ImapSettings;

use super::diagnostics::Problem;
use super::rules::{Bounds, DAY, HOUR, MINUTE, SECOND, Target, WEEK, is_nft_identifier, poll_floor};
use super::schema::{MailSource, NftMode, RawConfig};
use super::sections::{check_alerts, check_console, check_exempt_users, check_notifications, check_policy, check_tls_client};
use super::{
    AlertSettings, AnnuaireSource, Config, HttpSettings, NftSettings, NotificationSettings, PollSettings, Recipients, ResolverSettings,
    ReviewSettings, SmtpSettings, WatchSettings,
};

/// Checks values that the types alone cannot, and builds the runtime configuration.
pub(super) fn check(raw: RawConfig, base: &Path, problems: &mut Vec<Problem>) -> Config {
    let mut bad = |key: &str, message: String| {
        problems.push(Problem { at: None, key: Some(key.to_owned()), message });
    };
    let resolve = |p: &Path| if p.is_absolute() || base == Path::new(".") { p.to_owned() } else { base.join(p) };

    let a = &raw.annuaire;
    let mut https = None;
    let source = if a.url.is_empty() {
        bad("annuaire.url", "is required (`https://…` for the web service, `file:PATH` for a saved answer)".into());
        AnnuaireSource::File(PathBuf::new())
    } else if let Some(path) = a.url.strip_prefix("file:") {
        let path = resolve(Path::new(path.strip_prefix("//").unwrap_or(path)));
        if !path.is_file() {
            bad("annuaire.url", format!("{} is not a readable file", path.display()));
        }
        AnnuaireSource::File(path)
    } else {
        match url::Url::parse(&a.url) {
            Ok(mut u) if u.scheme() == "https" => {
                if !u.username().is_empty() || u.password().is_some() {
                    // Never shown: the URL is printed by check-config and status, and stored.
                    bad("annuaire.url", "carries credentials (`user:password@`), refused and not shown: the annuaire knows the hospital by its certificate".into());
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                }
                check_tls_client(a, base, &mut bad);
                let password = a.client_password.as_ref().and_then(|s| s.read(base).ok());
                https = Some(HttpsSettings {
                    url: u.clone(),
                    tls: TlsSettings {
                        client_pkcs12: a.client_pkcs12.as_deref().map(resolve),
                        client_cert: a.client_cert.as_deref().map(resolve),
                        client_key: a.client_key.as_deref().map(resolve),
                        password,
                        ca_bundle: a.ca_bundle.as_deref().map(resolve),
                        use_system_roots: a.use_system_roots,
                    },
                    connect_timeout: a.connect_timeout.get(),
                    timeout: a.timeout.get(),
                    max_body_bytes: a.max_body_bytes,
                });
                AnnuaireSource::Https(u)
            }
            Ok(u) => {
                bad("annuaire.url", format!("scheme `{}` is neither https nor file", u.scheme()));
                AnnuaireSource::File(PathBuf::new())
            }
            Err(e) => {
                bad("annuaire.url", format!("not a URL: {e}"));
                AnnuaireSource::File(PathBuf::new())
            }
        }
    };
    let (floor, why) = poll_floor(&source);
    let between_polls = Bounds { min: floor, max: WEEK, why };
    let timeout_bounds = Bounds::new(SECOND, HOUR);
    for (key, value, bounds) in [
        ("annuaire.poll_interval", &a.poll_interval, between_polls),
        ("annuaire.poll_jitter", &a.poll_jitter, Bounds::new(Duration::ZERO, DAY)),
        ("annuaire.connect_timeout", &a.connect_timeout, Bounds::new(SECOND, 5 * MINUTE)),
        ("annuaire.timeout", &a.timeout, timeout_bounds),
        ("annuaire.backoff_max", &a.backoff_max, between_polls),
        ("annuaire.unreachable_alert_after", &a.unreachable_alert_after, Bounds::new(MINUTE, 30 * DAY)),
        ("annuaire.cert_expiry_warning", &a.cert_expiry_warning, Bounds::new(DAY, 365 * DAY)),
        ("notifications.debounce", &raw.notifications.debounce, Bounds { max: HOUR, ..between_polls }),
        ("notifications.imap.poll_interval", &raw.notifications.imap.poll_interval, Bounds::new(10 * SECOND, DAY)),
        ("notifications.imap.timeout", &raw.notifications.imap.timeout, timeout_bounds),
        ("resolver.min_ttl", &raw.resolver.min_ttl, Bounds::new(SECOND, DAY)),
        ("resolver.max_ttl", &raw.resolver.max_ttl, Bounds::new(SECOND, WEEK)),
        ("resolver.grace", &raw.resolver.grace, Bounds::new(Duration::ZERO, 30 * DAY)),
        ("resolver.timeout", &raw.resolver.timeout, Bounds::new(SECOND, 5 * MINUTE)),
        ("alerts.dedup_window", &raw.alerts.dedup_window, Bounds::new(MINUTE, 30 * DAY)),
        ("alerts.smtp.timeout", &raw.alerts.smtp.timeout, timeout_bounds),
        ("review.remind_after", &raw.review.remind_after, Bounds::new(SECOND, 365 * DAY)),
    ] {
        if let Err(e) = bounds.check(value) {
            bad(key, e);
        }
    }
    if let Some(rescan) = &raw.notifications.maildir.rescan_interval {
        if let Err(e) = Bounds::new(SECOND, DAY).check(rescan) {
            bad("notifications.maildir.rescan_interval", e);
        }
    }
    if a.max_body_bytes == 0 {
        bad("annuaire.max_body_bytes", "must be more than 0".into());
    }

    check_notifications(&raw.notifications, base, &mut bad);
    if raw.resolver.min_ttl.get() > raw.resolver.max_ttl.get() {
        bad("resolver.min_ttl", "is longer than resolver.max_ttl".into());
    }
    for (i, server) in raw.resolver.servers.iter().enumerate() {
        let ok = server.parse::<std::net::IpAddr>().is_ok() || server.parse::<std::net::SocketAddr>().is_ok();
        if !ok {
            bad(&format!("resolver.servers[{i}]"), format!("`{server}` is not an IP address or IP:port"));
        }
    }
    for (i, net) in raw.resolver.allow_networks.iter().enumerate() {
        if net.parse::<ipnet::IpNet>().is_err() {
            bad(&format!("resolver.allow_networks[{i}]"), format!("`{}` is not a network in CIDR form (`10.20.0.0/16`, `fd00::/8`)", crate::text::escape(net)));
        }
    }
    if raw.resolver.concurrency == 0 {
        bad("resolver.concurrency", "must be at least 1".into());
    }
    let n = &raw.nftables;
    for (key, value) in [("nftables.table", &n.table), ("nftables.set_v4", &n.set_v4), ("nftables.set_v6", &n.set_v6)] {
        if !is_nft_identifier(value) {
            bad(key, format!("`{value}` is not an nftables name (a letter, then letters, digits or `_`, at most 32)"));
        }
    }
    if n.log_prefix.len() > 127 || n.log_prefix.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        bad("nftables.log_prefix", "must be printable, without quotes or backslashes, at most 127 bytes".into());
    }
    // The usage counter tells an accepted line from a dropped one by their prefixes: one found
    // inside the other would count drops as requests, or requests as drops.
    let (drop, accept) = (n.log_prefix.trim_end(), crate::usage::ACCEPT_PREFIX.trim_end());
    if drop.is_empty() || drop.contains(accept) || accept.contains(drop) {
        bad("nftables.log_prefix", format!("must not be empty, nor contain or be part of `{accept}` (the prefix of accepted connections)"));
    }

    let mut policy = check_policy(&raw.policy, &mut bad);
    let rpn = super::rpn::check(&raw.rpn, &mut bad);
    policy.extra_hosts.extend(rpn.iter().map(|r| r.host.clone()));

    let r = &raw.review;
    if r.max_removal_percent > 100 {
        bad("review.max_removal_percent", format!("{} is more than 100", r.max_removal_percent));
    }
    check_alerts(&raw.alerts, base, &mut bad);
    let console = check_console(&raw.console, base, &mut bad);
    if raw.http.enabled && raw.http.listen.parse::<std::net::SocketAddr>().is_err() {
        bad("http.listen", format!("`{}` is not an address:port", raw.http.listen));
    }

    if raw.store.keep_applied_states == 0 {
        bad("store.keep_applied_states", "must be at least 1 (the state in force)".into());
    }
    // An empty path is the configuration's own directory once resolved: rocsync's files would
    // land among the configuration's.
    if raw.store.state_dir.as_os_str().is_empty() {
        bad("store.state_dir", "is empty: give the directory that holds rocsync's state".into());
    }
    for (key, path) in [
        ("notifications.maildir.path", &raw.notifications.maildir.path),
        ("watch.squid_access_log", &raw.watch.squid_access_log),
        ("watch.nft_log", &raw.watch.nft_log),
        ("watch.journal_directory", &raw.watch.journal_directory),
    ] {
        if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            bad(key, "is empty: give a path, or leave the key out".into());
        }
    }
    // The kernel's messages reach both on a usual host (rsyslog writes the journal's kernel
    // entries to kern.log): every drop and every accepted connection would count twice.
    if raw.watch.journal && raw.watch.nft_log.is_some() {
        bad(
            "watch.nft_log",
            "is set together with watch.journal = true: both carry the kernel's nftables messages, so every blocked or allowed \
             request would be counted twice; keep one (the journal, or the file that ulogd or rsyslog writes)"
                .into(),
        );
    }

    let names = n.names();
    let mut exports = Vec::new();
    // Each export's file as the file system knows it, to find two that write one file.
    let mut targets: Vec<(&str, PathBuf, Target)> = Vec::new();
    let e = &raw.exports;
    // rocsync's own files, which no export may overwrite: the store and its locks, and a
    // `file:` source.
    let state_dir = resolve(&raw.store.state_dir);
    let mut own: Vec<(String, Target)> = ["state.db", "state.db-wal", "state.db-shm", "state.db-journal", "apply.lock", "daemon.lock"]
        .iter()
        .filter_map(|f| Target::of(&state_dir.join(f)).map(|t| (format!("the state store's {f}"), t)))
        .collect();
    if let AnnuaireSource::File(p) = &source {
        own.extend(Target::of(p).map(|t| ("the annuaire source (annuaire.url)".to_owned(), t)));
    }
    // …and the files it reads: certificates, keys, secrets, the logs it watches.
    let (an, imap) = (&raw.annuaire, &raw.notifications.imap);
    let read: [(&str, Option<&PathBuf>); 10] = [
        ("annuaire.client_pkcs12", an.client_pkcs12.as_ref()),
        ("annuaire.client_cert", an.client_cert.as_ref()),
        ("annuaire.client_key", an.client_key.as_ref()),
        ("annuaire.client_password", an.client_password.as_ref().and_then(|s| s.file.as_ref())),
        ("annuaire.ca_bundle", an.ca_bundle.as_ref()),
        ("notifications.imap.password", imap.password.as_ref().and_then(|s| s.file.as_ref())),
        ("notifications.imap.ca_bundle", imap.ca_bundle.as_ref()),
        ("alerts.smtp.password", raw.alerts.smtp.password.as_ref().and_then(|s| s.file.as_ref())),
        ("watch.squid_access_log", raw.watch.squid_access_log.as_ref()),
        ("watch.nft_log", raw.watch.nft_log.as_ref()),
    ];
    for (key, path) in read {
        if let Some(target) = path.filter(|p| !p.as_os_str().is_empty()).and_then(|p| Target::of(&resolve(p))) {
            own.push((format!("the file of {key}"), target));
        }
    }
    for (name, raw_export, export) in [
        ("squid", &e.squid, Export::Squid),
        ("plain", &e.plain, Export::Plain(e.plain.as_ref().and_then(|p| p.wildcard_style).unwrap_or_default())),
        ("nft_script", &e.nft_script, Export::NftScript(names.clone())),
        ("haproxy", &e.haproxy, Export::Haproxy),
        ("json", &e.json, Export::Json),
        ("stormshield", &e.stormshield, Export::Stormshield),
    ] {
        let Some(x) = raw_export.as_ref().filter(|x| x.enabled) else { continue };
        if x.wildcard_style.is_some() && name != "plain" {
            bad(&format!("exports.{name}.wildcard_style"), "only [exports.plain] takes a wildcard style".into());
        }
        let timeout = timeout_bounds.check(&x.post_write_timeout).unwrap_or_else(|err| {
            bad(&format!("exports.{name}.post_write_timeout"), err);
            Duration::from_secs(30)
        });
        let post_write = (!x.post_write_command.is_empty()).then(|| PostWrite { argv: x.post_write_command.clone(), timeout });
        let key = format!("exports.{name}.path");
        let path = resolve(&x.path);
        if x.path.as_os_str().is_empty() {
            bad(&key, "is empty: give the file to write".into());
        } else if let Some(target) = Target::of(&path) {
            if let Some((other, other_path, _)) = targets.iter().find(|(_, _, t)| *t == target) {
                bad(&key, format!("`{}` is the same file as exports.{other}.path (`{}`)", path.display(), other_path.display()));
            }
            if let Some((what, _)) = own.iter().find(|(_, t)| *t == target) {
                bad(&key, format!("`{}` is {what}: an export must not overwrite rocsync's own files", path.display()));
            }
            targets.push((name, path.clone(), target));
        } else {
            bad(&key, format!("`{}` names no file", x.path.display()));
        }
        exports.push(FileExport { export, path, post_write });
    }
    if exports.iter().any(|e| e.export == Export::Stormshield) && !raw.resolver.enabled {
        bad("exports.stormshield", "host objects need addresses: enable [resolver]".into());
    }
    if n.enabled && !cfg!(feature = "netlink") {
        bad("nftables.enabled", crate::sinks::nftables::NO_NETLINK.into());
    }
    if n.enabled && !raw.resolver.enabled {
        bad("nftables.enabled", "the sets hold addresses: enable [resolver] too".into());
    }
    let exempt_uids = check_exempt_users(n, &source, e, &mut bad);
    let layout = n.enabled.then(|| Layout {
        names: names.clone(),
        managed: (n.mode == NftMode::Managed).then(|| Managed {
            hook: n.hook.clone(),
            log_drops: n.log_drops,
            log_prefix: n.log_prefix.clone(),
            log_accepted: n.log_accepted,
            exempt_uids,
            // Every port of the state in force, added when a state is enforced.
            drop_ports: BTreeSet::new(),
        }),
    });
    if exports.is_empty() && !n.enabled {
        bad("exports", "nothing enforces the allow-list: configure an export or enable [nftables]".into());
    }

    Config {
        base_dir: base.to_owned(),
        source,
        https,
        max_body_bytes: a.max_body_bytes,
        cert_expiry_warning: a.cert_expiry_warning.get(),
        annuaire: PollSettings {
            poll_interval: a.poll_interval.get(),
            poll_jitter: a.poll_jitter.get(),
            backoff_max: a.backoff_max.get(),
            unreachable_alert_after: a.unreachable_alert_after.get(),
        },
        resolver: {
            let r = &raw.resolver;
            ResolverSettings {
                enabled: r.enabled,
                servers: r.servers.clone(),
                policy: crate::resolve::Policy {
                    min_ttl: r.min_ttl.get(),
                    max_ttl: r.max_ttl.get(),
                    grace: r.grace.get(),
                    allow_networks: r.allow_networks.iter().filter_map(|n| n.parse().ok()).collect(),
                },
                timeout: r.timeout.get(),
                concurrency: r.concurrency.max(1),
            }
        },
        imap: {
            let (n, i) = (&raw.notifications, &raw.notifications.imap);
            (n.enabled && n.source == MailSource::Imap).then(|| ImapSettings {
                server: i.server.clone(),
                port: i.port,
                security: i.security.clone(),
                username: i.username.clone(),
                password: i.password.as_ref().and_then(|p| p.read(base).ok()).unwrap_or_default(),
                folder: i.folder.clone(),
                processed_folder: i.processed_folder.clone(),
                ca_bundle: i.ca_bundle.as_deref().map(resolve),
                timeout: i.timeout.get(),
            })
        },
        notifications: {
            let n = &raw.notifications;
            NotificationSettings {
                enabled: n.enabled,
                allowed_senders: n.allowed_senders.clone(),
                require_dkim_pass: n.require_dkim_pass,
                trusted_authserv_id: n.trusted_authserv_id.clone(),
                debounce: n.debounce.get(),
                max_message_bytes: n.max_message_bytes,
                imap_use_idle: n.imap.use_idle,
                imap_poll_interval: n.imap.poll_interval.get(),
                maildir_rescan_interval: n.maildir.rescan_interval.as_ref().map_or(MAILDIR_RESCAN, |d| d.get()),
            }
        },
        maildir: match (&raw.notifications, &raw.notifications.maildir.path) {
            (n, Some(path)) if n.enabled && n.source == MailSource::Maildir => Some(resolve(path)),
            _ => None,
        },
        policy,
        mode: r.mode,
        guard: Guard { max_removal_percent: r.max_removal_percent, max_removal_hosts: r.max_removal_hosts },
        review: ReviewSettings { remind_after: r.remind_after.get() },
        exports,
        nftables: NftSettings { names, log_prefix: n.log_prefix.clone(), layout },
        watch: {
            let w = &raw.watch;
            WatchSettings {
                squid_access_log: w.squid_access_log.clone(),
                nft_log: w.nft_log.clone(),
                journal: w.journal,
                journal_directory: w.journal_directory.clone(),
            }
        },
        alerts: {
            let (al, s) = (&raw.alerts, &raw.alerts.smtp);
            AlertSettings {
                enabled: al.enabled,
                language: al.language.clone(),
                from: al.from.clone(),
                dedup_window: al.dedup_window.get(),
                max_per_hour: al.max_per_hour,
                smtp: SmtpSettings {
                    server: s.server.clone(),
                    port: s.port,
                    security: s.security.clone(),
                    username: s.username.clone(),
                    // Read only for alerts that are sent: a disabled section's secret may be gone.
                    password: s.password.as_ref().filter(|_| al.enabled).and_then(|p| p.read(base).ok()),
                    timeout: s.timeout.get(),
                },
                recipients: Recipients {
                    dsi: al.recipients.dsi.clone(),
                    helpdesk: al.recipients.helpdesk.clone(),
                    rssi: al.recipients.rssi.clone(),
                },
            }
        },
        http: HttpSettings {
            enabled: raw.http.enabled,
            listen: raw.http.listen.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9780))),
            metrics: raw.http.metrics,
        },
        console,
        rpn,
        state_dir: resolve(&raw.store.state_dir),
        keep_applied_states: raw.store.keep_applied_states,
    }
}

/// How often the Maildir is scanned whole when `notifications.maildir.rescan_interval` is not
/// given (inotify tells of new messages in between).
const MAILDIR_RESCAN: Duration = Duration::from_secs(300);

