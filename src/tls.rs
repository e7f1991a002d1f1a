//! How a client reaches a server that may speak TLS: shared by the IMAP watcher
//! (`[notifications.imap] security`) and the alert mailer (`[alerts.smtp] security`). The
//! annuaire is always mutual TLS and has no mode.

use serde::Deserialize;

/// `security = "tls" | "starttls" | "none"`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    #[default]
    Tls,
    /// Plain connection upgraded with STARTTLS.
    Starttls,
    /// No TLS: only for a server on loopback.
    None,
}
