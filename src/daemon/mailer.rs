//! Sends the alert queue by SMTP (lettre's async transport, in a task of the daemon's runtime):
//! each alert goes to the addresses of its roles, with its counts as of sending; a failure
//! leaves it queued and it is tried again later, backing off;
//! blocked-request alerts beyond `alerts.max_per_hour` are held and go out as one digest when
//! the hour allows. The queue is in the store, so an SMTP outage or a restart loses nothing.
//! The hour, the back-offs and the dates sent are [`crate::clock`]'s.
//!
//! Each alert's Message-ID is derived from its id in the store: if rocsync is killed between the
//! server's acceptance and the store's record of it, the copy sent again after the restart has
//! the same Message-ID, which mail systems recognise as the same message.


use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use crate::alerts::{Alert, Role};
use crate::clock::{now_millis, now_utc};
use crate::config::{AlertSettings, Config};
use crate::store::{QueuedAlert, Store, StoreError};
use crate::tls::TlsMode;

/// What one delivery round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    pub failed: usize,
    pub held: usize,
}

/// Why the mailer cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("alerts.smtp: {0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    settings: AlertSettings,
    from: Mailbox,
    hostname: String,
}

impl Mailer {
    pub fn new(config: &Config) -> Result<Mailer, MailerError> {
        let a = config.alerts.clone();
        let s = &a.smtp;
        let setup = |e: &dyn std::fmt::Display| MailerError::Setup(e.to_string());
        type Smtp = AsyncSmtpTransport<Tokio1Executor>;
        let builder = match s.security {
            TlsMode::None => Smtp::builder_dangerous(&s.server),
            TlsMode::Starttls => Smtp::starttls_relay(&s.server).map_err(|e| setup(&e))?,
            TlsMode::Tls => Smtp::relay(&s.server).map_err(|e| setup(&e))?,
        };
        let mut builder = builder.port(s.port).timeout(Some(s.timeout));
        if let Some(password) = &s.password {
            builder = builder.credentials(Credentials::new(s.username.clone(), password.expose_secret().to_owned()));
        }
        let from: Mailbox = a.from.parse().map_err(|e| setup(&format!("from `{}`: {e}", a.from)))?;
        let hostname = from.email.domain().to_owned();
        Ok(Mailer { transport: builder.build::<Tokio1Executor>(), settings: a, from, hostname })
    }

    fn recipients(&self, roles: &[Role]) -> Vec<String> {
        let r = &self.settings.recipients;
        let mut out: Vec<String> = Vec::new();
        for role in roles {
            let list = match role {
                Role::Dsi => &r.dsi,
                Role::Helpdesk => &r.helpdesk,
                Role::Rssi => &r.rssi,
            };
            for address in list {
                if !out.contains(address) {
                    out.push(address.clone());
                }
            }
        }
        out
    }

    /// Sends what is due: holds what is over the hourly limit, digests what was held once the
    /// hour allows, and leaves what failed for later.
    pub async fn deliver(&self, store: &mut Store) -> Result<Round, MailerError> {
        let mut round = Round::default();
        let now = now_utc();
        let hour_ago = (now - time::Duration::hours(1)).format(&Rfc3339).unwrap_or_default();
        let limit = self.settings.max_per_hour as usize;
        let sent = store.blocked_alerts_sent_since(&hour_ago)?;
        let mut sent_this_hour = sent.len();
        let mut alerted: std::collections::BTreeSet<String> = sent.iter().flat_map(Alert::subjects).collect();
        let held = store.held_alerts()?;
        if !held.is_empty() && sent_this_hour < limit {
            let lines: Vec<String> = held
                .iter()
                .map(|h| {
                    let (subject, _) = h.alert.compose(&self.settings.language, h.count, &h.first_seen, &h.last_seen);
                    format!("{subject} ({}×, {} → {})", h.count, h.first_seen, h.last_seen)
                })
                .collect();
            let at = now.format(&Rfc3339).unwrap_or_default();
            store.raise(&Alert::Digest { held: lines }, &at, 0, now_millis())?;
            for h in &held {
                store.alert_status(h.id, "digested")?;
            }
        }
        for queued in store.due_alerts(now_millis())? {
            let limited = matches!(queued.alert, Alert::Blocked { .. });
            // Over the limit, an alert waits for the digest only when everyone it is about was
            // alerted this hour already: a new AMC's blocked IDB is never held behind others.
            let news = queued.alert.subjects().iter().any(|s| !alerted.contains(s));
            if limited && sent_this_hour >= limit && !news {
                store.alert_status(queued.id, "held")?;
                round.held += 1;
                continue;
            }
            let to = self.recipients(&queued.alert.roles());
            if to.is_empty() {
                warn!(alert = queued.id, kind = queued.alert.kind(), "No recipient for this alert; dropped.");
                store.alert_status(queued.id, "dropped")?;
                continue;
            }
            match self.send(&queued, &to).await {
                Ok(()) => {
                    store.alert_sent(queued.id, &now_utc().format(&Rfc3339).unwrap_or_default())?;
                    info!(alert = queued.id, kind = queued.alert.kind(), "Alert sent to {}.", to.join(", "));
                    round.sent += 1;
                    if limited {
                        sent_this_hour += 1;
                        alerted.extend(queued.alert.subjects());
                    }
                }
                Err(e) => {
                    let retry = now_millis() + backoff_ms(queued.attempts);
                    warn!(alert = queued.id, "Alert not sent, kept for later: {e}");
                    store.alert_failed(queued.id, &e, retry)?;
                    round.failed += 1;
                }
            }
        }
        Ok(round)
    }

    async fn send(&self, queued: &QueuedAlert, to: &[String]) -> Result<(), String> {
        let (subject, body) = queued.alert.compose(&self.settings.language, queued.count, &queued.first_seen, &queued.last_seen);
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!("<rocsync-alert-{}@{}>", queued.id, self.hostname)))
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            let mailbox: Mailbox = address.parse().map_err(|e| format!("recipient `{address}`: {e}"))?;
            message = message.to(mailbox);
        }
        let message = message.body(body).map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| crate::error_chain(&e))
    }
}

/// 10 s after the first failure, doubling, at most 30 min.
fn backoff_ms(attempts: u32) -> u64 {
    (10_000u64 << attempts.min(8)).min(30 * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_half_an_hour() {
        assert_eq!(backoff_ms(0), 10_000);
        assert_eq!(backoff_ms(1), 20_000);
        assert_eq!(backoff_ms(7), 1_280_000);
        assert_eq!(backoff_ms(8), 1_800_000);
        assert_eq!(backoff_ms(40), 1_800_000);
    }
}
