//! Reading the notifications (the Maildir and the IMAP folder): each message recorded once with
//! its verdict, and the openings that only a notification names added to the desired state.

use std::collections::{BTreeMap, BTreeSet};

use tracing::info;

use crate::catalogue::{AmcUse, DOMAIN_PORT, Entry, Origin, State};
use crate::host::Host;
use crate::sources::maildir::Maildir;
use crate::sources::{imap, mail};
use crate::store::{MailVerdict, NotificationRecord, NotifiedOpening, Settled};

use super::{Engine, EngineError, now};

/// What reading the notifications did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailRun {
    pub used: usize,
    pub rejected: usize,
    pub no_change: usize,
    pub unreadable: usize,
    /// Already recorded (delivered twice, or moved after a crash).
    pub duplicates: usize,
    /// Mailboxes that could not be read (`maildir: …`, `imap: …`): the annuaire was read all the
    /// same, since a notification is only a hint.
    pub errors: Vec<String>,
}

impl MailRun {
    pub(super) fn add(&mut self, other: &MailRun) {
        self.used += other.used;
        self.rejected += other.rejected;
        self.no_change += other.no_change;
        self.unreadable += other.unreadable;
        self.duplicates += other.duplicates;
        self.errors.extend(other.errors.iter().cloned());
    }

    pub fn total(&self) -> usize {
        self.used + self.rejected + self.no_change + self.unreadable + self.duplicates
    }
}

impl Engine {
    /// Reads every new message of the Maildir, records it once with its verdict, and moves it
    /// to `cur/`.
    pub fn process_maildir(&mut self) -> Result<MailRun, EngineError> {
        let Some(root) = self.config.maildir.clone() else { return Ok(MailRun::default()) };
        let io = |source| EngineError::Maildir { path: root.clone(), source };
        let maildir = Maildir::open(&root).map_err(io)?;
        let limit = self.config.notifications.max_message_bytes;
        let mut run = MailRun::default();
        for path in maildir.pending().map_err(io)? {
            let message = maildir.read(&path, limit).map_err(io)?;
            let origin = format!("maildir:{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
            let (record, closings) = self.notification_record(&message, &origin);
            let used = self.record_message(&record, &closings, &mut run)?;
            maildir.mark(&path, if used { "S" } else { "FS" }).map_err(io)?;
        }
        Ok(run)
    }

    /// Reads every message of the IMAP folder, records it once with its verdict, then moves it
    /// to the processed folder.
    pub fn process_imap(&mut self) -> Result<MailRun, EngineError> {
        let Some(settings) = self.config.imap.clone() else { return Ok(MailRun::default()) };
        let limit = self.config.notifications.max_message_bytes;
        let runtime = self.io()?;
        let (mut session, messages) = runtime.block_on(async {
            let (mut session, _) = imap::connect(&settings).await?;
            let messages = imap::fetch_all(&mut session, limit).await?;
            Ok::<_, imap::ImapError>((session, messages))
        })?;
        let mut run = MailRun::default();
        let mut done = Vec::new();
        for m in &messages {
            let origin = format!("imap:{}/{}", settings.folder, m.uid);
            let (record, closings) = self.notification_record(&m.message, &origin);
            done.push((m.uid, self.record_message(&record, &closings, &mut run)?));
        }
        // Moved only once recorded: a message still in the folder is one still to read.
        runtime.block_on(async {
            for (uid, used) in done {
                imap::move_processed(&mut session, uid, used, &settings.processed_folder).await?;
            }
            let _ = session.logout().await;
            Ok::<_, imap::ImapError>(())
        })?;
        Ok(run)
    }

    /// Records one message unless it was recorded before, settles the closings of a used one,
    /// and says whether it was used. A message recorded before does nothing again, and what
    /// is said is the verdict recorded then, which its flag must show whatever this copy would
    /// be judged now (another body under the same Message-ID, an allow-list changed since).
    fn record_message(&mut self, record: &NotificationRecord, closings: &[Host], run: &mut MailRun) -> Result<bool, EngineError> {
        if !self.store.record_notification(record, &now())? {
            run.duplicates += 1;
            let recorded = self.store.notification_verdict(&record.key)?;
            let verdict = recorded.map_or("unknown", MailVerdict::as_str);
            info!(message = %record.key, verdict = %verdict, "Notification already recorded.");
            return Ok(recorded == Some(MailVerdict::Used));
        }
        if record.verdict == MailVerdict::Used {
            // A closing announced by mail withdraws an opening announced by mail; what the
            // annuaire lists is closed by the annuaire.
            for host in closings {
                self.store.settle_notified_host(host, Settled::Closed)?;
            }
        }
        match record.verdict {
            MailVerdict::Used => run.used += 1,
            MailVerdict::Rejected => run.rejected += 1,
            MailVerdict::NoChange => run.no_change += 1,
            MailVerdict::Unreadable => run.unreadable += 1,
        }
        info!(message = %record.key, verdict = %record.verdict, "Notification {}.", record.reason.as_deref().unwrap_or("read"));
        Ok(record.verdict == MailVerdict::Used)
    }

    /// What to record of one message: its verdict, and for a used one, the openings it
    /// announces; beside it, the hosts whose closing it announces when used. A message over
    /// `notifications.max_message_bytes` was never read: it is recorded by where it lies, as
    /// unreadable.
    fn notification_record(&self, message: &mail::Incoming, origin: &str) -> (NotificationRecord, Vec<Host>) {
        let n = &self.config.notifications;
        let unreadable = |reason: String| {
            let record = NotificationRecord {
                key: origin.to_owned(),
                origin: origin.to_owned(),
                sender: None,
                subject: None,
                verdict: MailVerdict::Unreadable,
                reason: Some(reason),
                changes: "[]".into(),
                rejected_lines: "[]".into(),
                openings: Vec::new(),
            };
            (record, Vec::new())
        };
        let raw = match message {
            mail::Incoming::Bytes(raw) => raw,
            mail::Incoming::TooLarge { size } => return unreadable(mail::too_large(*size, n.max_message_bytes)),
        };
        let notification = match mail::parse(raw, n.trusted_authserv_id.as_deref()) {
            Ok(notification) => notification,
            Err(e) => return unreadable(e.to_string()),
        };
        let verdict = mail::judge(&notification, &n.allowed_senders, n.require_dkim_pass);
        let mut openings = Vec::new();
        let mut closings = Vec::new();
        if verdict == mail::Verdict::Used {
            for c in &notification.changes {
                match c.action {
                    mail::Action::Open => openings.push(NotifiedOpening {
                        host: c.host.clone(),
                        amc: c.amc.clone(),
                        name: c.name.clone(),
                        effective: c.effective.clone(),
                    }),
                    mail::Action::Close => closings.push(c.host.clone()),
                }
            }
        }
        let reason = match &verdict {
            mail::Verdict::Rejected(r) | mail::Verdict::Unreadable(r) => Some(r.clone()),
            mail::Verdict::NoChange if notification.rejected_lines.is_empty() => Some("no change found in the message".into()),
            mail::Verdict::NoChange => {
                Some(format!("no change found in the message, {} line(s) rejected", notification.rejected_lines.len()))
            }
            mail::Verdict::Used => None,
        };
        let record = NotificationRecord {
            key: notification.message_id.clone().unwrap_or_else(|| origin.to_owned()),
            origin: origin.to_owned(),
            sender: notification.from.clone(),
            subject: notification.subject.clone(),
            verdict: match verdict {
                mail::Verdict::Used => MailVerdict::Used,
                mail::Verdict::Rejected(_) => MailVerdict::Rejected,
                mail::Verdict::NoChange => MailVerdict::NoChange,
                mail::Verdict::Unreadable(_) => MailVerdict::Unreadable,
            },
            reason,
            changes: serde_json::to_string(&notification.changes).unwrap_or_else(|_| "[]".into()),
            rejected_lines: serde_json::to_string(&notification.rejected_lines).unwrap_or_else(|_| "[]".into()),
            openings,
        };
        (record, closings)
    }

    /// Adds the openings that only notifications name to the desired state, marked as such
    /// (the guard makes any plan with them wait for approval). One the annuaire now lists is
    /// settled as `listed`.
    pub(super) fn add_notified_hosts(&mut self, desired: &mut State) -> Result<(), EngineError> {
        for pending in self.store.pending_notified_hosts()? {
            let NotifiedOpening { host, amc: number, name, effective: _ } = pending.opening;
            if desired.entries.contains_key(&host) {
                self.store.settle_notified_host(&host, Settled::Listed)?;
                continue;
            }
            if self.config.policy.excludes(&host) {
                continue;
            }
            let entry = desired.entries.entry(host).or_insert_with(|| Entry {
                ports: BTreeSet::from([DOMAIN_PORT]),
                amcs: BTreeMap::new(),
                origins: BTreeSet::from([Origin::Notification]),
                since: None,
            });
            entry.amcs.insert(number, AmcUse { name, services: BTreeSet::new() });
        }
        Ok(())
    }
}
