//! The checks of one section each, beyond what the types say.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::amc::AmcNumber;
use crate::catalogue::{HostPorts, Policy};
use crate::console::{AuthMode, ConsoleSettings, TlsFiles};
use crate::host::Host;
use crate::sources::https::TlsSettings;
use crate::tls::TlsMode;

use super::AnnuaireSource;
use super::rules::{Bounds, DAY, HOUR, MINUTE, SECOND, check_file, check_secret, is_loopback};
use super::schema::{MailSource, NftHook, NftMode, RawAlerts, RawAnnuaire, RawConsole, RawExports, RawNftables, RawNotifications, RawPolicy};

/// Where each check reports a problem: the dotted key and the message.
pub(super) type Bad<'a> = dyn FnMut(&str, String) + 'a;

/// `[nftables] exempt_users` as uids. Only a managed chain on the output hook sees which user
/// sends a packet (`meta skuid`). There, what this host sends to an AMC port without an
/// allowed address is dropped, and a proxy on this host sends exactly that for wildcard hosts
/// (they have no address), as rocsync does for the annuaire: left unset, the key is a problem
/// until its users are named, or `[]` says knowingly that none is.
pub(super) fn check_exempt_users(n: &RawNftables, source: &AnnuaireSource, exports: &RawExports, bad: &mut Bad<'_>) -> BTreeSet<u32> {
    let output = n.mode == NftMode::Managed && n.hook == NftHook::Output;
    let Some(users) = &n.exempt_users else {
        let proxy = exports.squid.as_ref().is_some_and(|x| x.enabled) || exports.haproxy.as_ref().is_some_and(|x| x.enabled);
        let mut who = Vec::new();
        if proxy {
            who.push("the proxy's user (`proxy` for Debian's Squid, `haproxy` for HAProxy): it connects to wildcard hosts, which have no address in the sets");
        }
        if matches!(source, AnnuaireSource::Https(_)) {
            who.push("rocsync's own user (`rocsync` for the package): its calls to the annuaire leave this host too");
        }
        if n.enabled && output && !who.is_empty() {
            bad(
                "nftables.exempt_users",
                format!(
                    "with `hook = \"output\"` the managed chain drops what this host sends to AMC ports without an allowed address; \
                     name {}; or set `exempt_users = []` if none of them runs here",
                    who.join("; and ")
                ),
            );
        }
        return BTreeSet::new();
    };
    if n.enabled && !output && !users.is_empty() {
        bad(
            "nftables.exempt_users",
            "only the managed chain on the output hook sees which user sends a packet: set `mode = \"managed\"` and `hook = \"output\"`, or leave the key out".into(),
        );
    }
    let mut uids = BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
        match crate::accounts::user_id(user) {
            // root's traffic is every daemon's and every administrator's: exempting it would
            // leave the AMC filter with nothing to hold.
            Some(0) => bad(
                &format!("nftables.exempt_users[{i}]"),
                "root (uid 0) cannot be exempted: name the proxy's own user (`proxy`, `haproxy`)".into(),
            ),
            Some(uid) => {
                uids.insert(uid);
            }
            None => bad(
                &format!("nftables.exempt_users[{i}]"),
                format!("no user `{}` in /etc/passwd: give a user name or a numeric uid", crate::text::escape(user)),
            ),
        }
    }
    uids
}


pub(super) fn check_tls_client(a: &RawAnnuaire, base: &Path, bad: &mut Bad<'_>) {
    match (&a.client_pkcs12, &a.client_cert, &a.client_key) {
        (Some(p12), None, None) => {
            check_file(bad, "annuaire.client_pkcs12", base, p12);
            match &a.client_password {
                Some(secret) => check_secret(bad, "annuaire.client_password", base, secret),
                None => bad("annuaire.client_password", "a PKCS#12 identity needs its password (`{ file = … }` or `{ env = … }`)".into()),
            }
        }
        (None, Some(cert), Some(key)) => {
            check_file(bad, "annuaire.client_cert", base, cert);
            check_file(bad, "annuaire.client_key", base, key);
            if a.client_password.is_some() {
                bad(
                    "annuaire.client_password",
                    "a PEM key is read unencrypted (protect it by its file mode); for an encrypted key, give the PKCS#12 file as client_pkcs12".into(),
                );
            }
        }
        _ => bad(
            "annuaire",
            "the web service needs the hospital's certificate: `client_pkcs12`, or `client_cert` with `client_key`".into(),
        ),
    }
    match &a.ca_bundle {
        Some(ca) => check_file(bad, "annuaire.ca_bundle", base, ca),
        None if a.use_system_roots => {}
        None => bad("annuaire.ca_bundle", "is required: the IGC OSI CA bundle that signs the annuaire's certificate".into()),
    }
    check_identity(a, base, bad);
}

/// Opens the client identity with its secret, as the first poll will: a wrong PKCS#12 password,
/// an X.509 v1 certificate, a key of another pair are told by `check-config` (and refuse a
/// reload), not at the first poll. Only when its files and its secret can be read: otherwise
/// that problem is reported already.
fn check_identity(a: &RawAnnuaire, base: &Path, bad: &mut Bad<'_>) {
    let readable = |p: &PathBuf| !p.as_os_str().is_empty() && base.join(p).is_file();
    let mut tls = TlsSettings::default();
    let key = match (&a.client_pkcs12, &a.client_cert, &a.client_key) {
        (Some(p12), None, None) if readable(p12) => {
            let Some(Ok(password)) = a.client_password.as_ref().map(|s| s.read(base)) else { return };
            tls.client_pkcs12 = Some(base.join(p12));
            tls.password = Some(password);
            "annuaire.client_pkcs12"
        }
        (None, Some(cert), Some(key)) if readable(cert) && readable(key) => {
            tls.client_cert = Some(base.join(cert));
            tls.client_key = Some(base.join(key));
            "annuaire.client_cert"
        }
        _ => return,
    };
    match crate::sources::https::check_identity(&tls) {
        Ok(_) => {}
        // A PKCS#12 file that does not open: its password is the first thing to check.
        Err(e @ crate::sources::https::TlsSetupError::Pkcs12 { .. }) => bad("annuaire.client_password", crate::error_chain(&e)),
        Err(e) => bad(key, crate::error_chain(&e)),
    }
}

pub(super) fn check_notifications(n: &RawNotifications, base: &Path, bad: &mut Bad<'_>) {
    if n.max_message_bytes == 0 {
        bad("notifications.max_message_bytes", "must be more than 0".into());
    }
    if !n.enabled {
        return;
    }
    match n.source {
        MailSource::Imap => {
            if n.imap.server.is_empty() {
                bad("notifications.imap.server", "is required when notifications come by IMAP".into());
            }
            if n.imap.username.is_empty() {
                bad("notifications.imap.username", "is required".into());
            }
            match &n.imap.password {
                Some(secret) => check_secret(bad, "notifications.imap.password", base, secret),
                None => bad("notifications.imap.password", "is required (`{ file = … }` or `{ env = … }`)".into()),
            }
            if let Some(ca) = &n.imap.ca_bundle {
                check_file(bad, "notifications.imap.ca_bundle", base, ca);
            }
            if n.imap.security == TlsMode::None && !is_loopback(&n.imap.server) {
                bad("notifications.imap.security", "\"none\" sends the password in clear: only for a server on loopback".into());
            }
            if n.imap.folder == n.imap.processed_folder {
                bad("notifications.imap.processed_folder", "must differ from the watched folder".into());
            }
        }
        MailSource::Maildir => match &n.maildir.path {
            Some(path) if !base.join(path).join("new").is_dir() || !base.join(path).join("cur").is_dir() => {
                bad("notifications.maildir.path", format!("{} is not a Maildir (no new/ and cur/)", base.join(path).display()))
            }
            Some(_) => {}
            None => bad("notifications.maildir.path", "is required when notifications come from a Maildir".into()),
        },
    }
    if n.allowed_senders.is_empty() {
        bad("notifications.allowed_senders", "is empty: every notification would be rejected".into());
    }
    for (i, sender) in n.allowed_senders.iter().enumerate() {
        if !sender.contains('@') {
            bad(&format!("notifications.allowed_senders[{i}]"), format!("`{sender}` is neither an address nor `@domain`"));
        }
    }
}

pub(super) fn check_policy(p: &RawPolicy, bad: &mut Bad<'_>) -> Policy {
    let mut policy = Policy::default();
    for (i, text) in p.extra_hosts.iter().enumerate() {
        match text.parse::<HostPorts>() {
            Ok(hp) => policy.extra_hosts.push(hp),
            Err(e) => bad(&format!("policy.extra_hosts[{i}]"), e),
        }
    }
    for (i, text) in p.exclude_hosts.iter().enumerate() {
        match Host::parse(text) {
            Ok(h) => policy.exclude_hosts.push(h),
            Err(e) => bad(&format!("policy.exclude_hosts[{i}]"), format!("`{text}`: {e}")),
        }
    }
    for (i, text) in p.mirror_amc.iter().enumerate() {
        match AmcNumber::parse(text) {
            Ok(n) => {
                policy.mirror_amc.insert(n);
            }
            Err(e) => bad(&format!("policy.mirror_amc[{i}]"), format!("`{text}`: {e}")),
        }
    }
    policy
}

pub(super) fn check_alerts(a: &RawAlerts, base: &Path, bad: &mut Bad<'_>) {
    if !a.enabled {
        return;
    }
    if a.smtp.server.is_empty() {
        bad("alerts.smtp.server", "is required when alerts are enabled".into());
    }
    if !a.from.contains('@') {
        bad("alerts.from", "must be an e-mail address".into());
    }
    if let Some(secret) = &a.smtp.password {
        check_secret(bad, "alerts.smtp.password", base, secret);
    }
    // As for IMAP: lettre would send AUTH PLAIN, and the alerts, in clear across the network.
    if a.smtp.security == TlsMode::None && !a.smtp.server.is_empty() && !is_loopback(&a.smtp.server) {
        bad("alerts.smtp.security", "\"none\" sends the alerts and the password in clear: only for a server on loopback; use \"starttls\" or \"tls\"".into());
    }
    let r = &a.recipients;
    if r.dsi.is_empty() && r.helpdesk.is_empty() && r.rssi.is_empty() {
        bad("alerts.recipients", "no recipient at all".into());
    }
    for (kind, list) in [("dsi", &r.dsi), ("helpdesk", &r.helpdesk), ("rssi", &r.rssi)] {
        for (i, addr) in list.iter().enumerate() {
            if !addr.contains('@') || addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bad(&format!("alerts.recipients.{kind}[{i}]"), format!("`{addr}` is not an e-mail address"));
            }
        }
    }
}

/// `[console]`: its durations, address and proxy settings are checked always; what serving it
/// needs (TLS beyond loopback, the certificate itself, trusted proxies in proxy mode) when it is
/// enabled. `None` when it is not.
pub(super) fn check_console(c: &RawConsole, base: &Path, bad: &mut Bad<'_>) -> Option<ConsoleSettings> {
    // A shorter session is only stricter; the floors catch a unit typed wrong.
    let session_idle = match Bounds::new(5 * SECOND, DAY).check(&c.session_idle) {
        Ok(d) => d,
        Err(e) => {
            bad("console.session_idle", e);
            30 * MINUTE
        }
    };
    let session_max = match Bounds::new(MINUTE, 30 * DAY).check(&c.session_max) {
        Ok(d) => d,
        Err(e) => {
            bad("console.session_max", e);
            12 * HOUR
        }
    };
    if session_idle > session_max {
        bad("console.session_idle", "is longer than console.session_max".into());
    }
    let proxy_user_header = match axum::http::HeaderName::from_bytes(c.proxy_user_header.as_bytes()) {
        Ok(name) => name,
        Err(_) => {
            bad("console.proxy_user_header", format!("`{}` is not an HTTP header name", crate::text::escape(&c.proxy_user_header)));
            axum::http::HeaderName::from_static("x-remote-user")
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, proxy) in c.trusted_proxies.iter().enumerate() {
        match proxy.parse::<ipnet::IpNet>().or_else(|_| proxy.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)) {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => bad(
                &format!("console.trusted_proxies[{i}]"),
                format!("`{}` is not an address or a network (`10.20.0.5`, `10.20.0.0/24`)", crate::text::escape(proxy)),
            ),
        }
    }
    // The text as the URL parser normalised it: it drops tabs and line breaks, which would
    // otherwise reach the mails.
    let public_url = match c.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(text) => match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "https" | "http")
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && u.fragment().is_none() =>
            {
                Some(u.as_str().trim_end_matches('/').to_owned())
            }
            Ok(_) => {
                bad(
                    "console.public_url",
                    "must be an http(s) address without credentials, query or fragment, such as `https://rocsync.hopital.example:9443`".into(),
                );
                None
            }
            Err(e) => {
                bad("console.public_url", format!("not a URL: {e}"));
                None
            }
        },
    };
    if !c.enabled {
        return None;
    }
    let Ok(listen) = c.listen.parse::<std::net::SocketAddr>() else {
        bad("console.listen", format!("`{}` is not an address:port", crate::text::escape(&c.listen)));
        return None;
    };
    let tls = match (&c.tls_cert, &c.tls_key) {
        (Some(cert), Some(key)) => {
            check_file(bad, "console.tls_cert", base, cert);
            check_file(bad, "console.tls_key", base, key);
            let files = TlsFiles { cert: base.join(cert), key: base.join(key) };
            if files.cert.is_file() && files.key.is_file() {
                if let Err(e) = crate::console::tls_config(&files) {
                    bad("console.tls_cert", e);
                }
            }
            Some(files)
        }
        (None, None) => None,
        (Some(_), None) => {
            bad("console.tls_key", "is required with console.tls_cert".into());
            None
        }
        (None, Some(_)) => {
            bad("console.tls_cert", "is required with console.tls_key".into());
            None
        }
    };
    if tls.is_none() && c.tls_cert.is_none() && c.tls_key.is_none() && !listen.ip().is_loopback() {
        bad(
            "console.tls_cert",
            format!(
                "the console listens on {listen}, beyond this host: give tls_cert and tls_key (PEM), so that passwords and sessions do \
                 not cross the network in clear; or listen on 127.0.0.1 behind a reverse proxy that does TLS"
            ),
        );
    }
    if c.auth == AuthMode::Proxy && trusted_proxies.is_empty() {
        bad(
            "console.trusted_proxies",
            "is empty: with auth = \"proxy\" every request would be refused; give the address of the reverse proxy that authenticates people".into(),
        );
    }
    Some(ConsoleSettings { listen, tls, public_url, session_idle, session_max, auth: c.auth, proxy_user_header, trusted_proxies })
}

