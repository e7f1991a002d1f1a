//! Every notification e-mail read, once each, with its verdict; and the openings that only a
//! notification names, until the annuaire lists them or a person rejects them.
//!
//! Hosts and AMC numbers go in and come out typed ([`Host`], [`AmcNumber`]) and the verdict is a
//! [`MailVerdict`]: parsed once here, so that no caller parses a column again and skips what
//! does not parse.

use std::fmt;

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use tracing::warn;

use super::applied::audit_in;
use super::{Store, StoreError};
use crate::amc::AmcNumber;
use crate::host::Host;

/// What rocsync did with a notification e-mail, as recorded (`notifications.verdict`); the
/// reason, when there is one, is recorded beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailVerdict {
    /// From an allowed sender, with changes: its openings wait for approval, its closings
    /// withdraw openings only a notification named.
    Used,
    /// From a sender outside the allow-list, or failing DKIM when it is required.
    Rejected,
    /// Readable, but no change in it.
    NoChange,
    /// Not an e-mail rocsync can read (or one over `notifications.max_message_bytes`).
    Unreadable,
}

impl MailVerdict {
    const ALL: [MailVerdict; 4] = [MailVerdict::Used, MailVerdict::Rejected, MailVerdict::NoChange, MailVerdict::Unreadable];

    /// The word stored, shown and used in the audit action (`notification.used`).
    pub fn as_str(self) -> &'static str {
        match self {
            MailVerdict::Used => "used",
            MailVerdict::Rejected => "rejected",
            MailVerdict::NoChange => "no_change",
            MailVerdict::Unreadable => "unreadable",
        }
    }

    pub fn parse(s: &str) -> Option<MailVerdict> {
        MailVerdict::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for MailVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: `rocsync notifications` aligns it in a column.
        f.pad(self.as_str())
    }
}

/// How a notified opening was settled (`notified_hosts.status`; `pending` until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A person rejected the plan that would have opened it: not proposed again.
    Rejected,
    /// The annuaire lists it now: the annuaire decides from here on.
    Listed,
    /// A later notification announced its closing.
    Closed,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Rejected => "rejected",
            Settled::Listed => "listed",
            Settled::Closed => "closed",
        }
    }
}

/// An opening that a notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifiedOpening {
    pub host: Host,
    pub amc: AmcNumber,
    /// The AMC's name, as announced.
    pub name: String,
    /// The date of effect, as announced.
    pub effective: String,
}

/// A notified opening still pending, with the key of the message that announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOpening {
    pub opening: NotifiedOpening,
    pub message_key: String,
}

/// A notification as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// The Message-ID, or where the message came from when it has none.
    pub key: String,
    pub origin: String,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub verdict: MailVerdict,
    pub reason: Option<String>,
    /// JSON of the changes and of the rejected lines.
    pub changes: String,
    pub rejected_lines: String,
    /// Openings to consider (a used notification's).
    pub openings: Vec<NotifiedOpening>,
}

/// A recorded notification, for `rocsync notifications`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRow {
    pub key: String,
    pub received_at: String,
    pub origin: String,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub verdict: MailVerdict,
    pub reason: Option<String>,
    pub changes: serde_json::Value,
    pub rejected_lines: serde_json::Value,
}

impl Store {
    /// Records a notification once: `false` when its key was already recorded (a duplicate
    /// delivery, or a restart between recording and moving the message).
    pub fn record_notification(&mut self, n: &NotificationRecord, now: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO notifications (key, received_at, origin, sender, subject, verdict, reason, changes, rejected_lines)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (key) DO NOTHING",
            params![n.key, now, n.origin, n.sender, n.subject, n.verdict.as_str(), n.reason, n.changes, n.rejected_lines],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        for o in &n.openings {
            tx.execute(
                "INSERT INTO notified_hosts (host, amc, name, effective, message_key) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![o.host.as_str(), o.amc.as_str(), o.name, o.effective, n.key],
            )?;
        }
        let detail = format!("{} from {}: {}", n.verdict, n.sender.as_deref().unwrap_or("-"), n.reason.as_deref().unwrap_or(&n.key));
        audit_in(&tx, now, "rocsync", &format!("notification.{}", n.verdict.as_str()), None, &detail)?;
        tx.commit()?;
        Ok(true)
    }

    /// The verdict a notification was recorded with, if its key was recorded.
    pub fn notification_verdict(&self, key: &str) -> Result<Option<MailVerdict>, StoreError> {
        let word: Option<String> = self.conn.query_row("SELECT verdict FROM notifications WHERE key = ?1", [key], |r| r.get(0)).optional()?;
        word.map(|w| verdict_of(key, &w)).transpose()
    }

    /// Recorded notifications, newest first.
    pub fn notifications(&self, limit: usize) -> Result<Vec<NotificationRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, received_at, origin, sender, subject, verdict, reason, changes, rejected_lines
             FROM notifications ORDER BY received_at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let row = NotificationRow {
                    key: r.get(0)?,
                    received_at: r.get(1)?,
                    origin: r.get(2)?,
                    sender: r.get(3)?,
                    subject: r.get(4)?,
                    // Set from the word below, once the row is out of SQLite's hands.
                    verdict: MailVerdict::Unreadable,
                    reason: r.get(6)?,
                    changes: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or(serde_json::Value::Null),
                    rejected_lines: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or(serde_json::Value::Null),
                };
                Ok((row, r.get::<_, String>(5)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut read = Vec::with_capacity(rows.len());
        for (row, word) in rows {
            let verdict = verdict_of(&row.key, &word)?;
            read.push(NotificationRow { verdict, ..row });
        }
        Ok(read)
    }

    /// Openings named by notifications and still pending, by host and date. A row whose host
    /// or AMC number no longer parses is left out with a warning that names it: these are
    /// hints read at every pass, and failing the read would keep the annuaire's changes from
    /// applying too.
    pub fn pending_notified_hosts(&self) -> Result<Vec<PendingOpening>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT rowid, host, amc, name, effective, message_key FROM notified_hosts WHERE status = 'pending' ORDER BY host, effective",
        )?;
        let rows = stmt
            .query_map([], raw_notified_host)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut pending = Vec::with_capacity(rows.len());
        for raw in rows {
            match raw.decode() {
                Ok(p) => pending.push(p),
                Err(e) => warn!(error = %crate::error_chain(&e), "A notified opening is left out."),
            }
        }
        Ok(pending)
    }

    /// Settles every pending notified opening of `host`.
    pub fn settle_notified_host(&mut self, host: &Host, status: Settled) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE notified_hosts SET status = ?1 WHERE host = ?2 AND status = 'pending'",
            params![status.as_str(), host.as_str()],
        )?)
    }
}

/// The verdict stored for notification `key`.
fn verdict_of(key: &str, word: &str) -> Result<MailVerdict, StoreError> {
    MailVerdict::parse(word).ok_or_else(|| {
        StoreError::corrupt(format!("verdict of notification {key:?} (table notifications)"), format!("unknown verdict {word:?}"))
    })
}

/// A `notified_hosts` row as SQLite holds it.
struct RawNotifiedHost {
    rowid: i64,
    host: String,
    amc: String,
    name: String,
    effective: String,
    message_key: String,
}

/// A `notified_hosts` row selected as `rowid, host, amc, name, effective, message_key`.
fn raw_notified_host(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawNotifiedHost> {
    Ok(RawNotifiedHost { rowid: r.get(0)?, host: r.get(1)?, amc: r.get(2)?, name: r.get(3)?, effective: r.get(4)?, message_key: r.get(5)? })
}

impl RawNotifiedHost {
    /// The row with its host and AMC number parsed; one that does not parse is named by its
    /// table and row.
    fn decode(self) -> Result<PendingOpening, StoreError> {
        let what = |column: &str, value: &str| format!("{column} {value:?} of row {} (table notified_hosts)", self.rowid);
        let host = Host::parse(&self.host).map_err(|source| StoreError::corrupt(what("host", &self.host), source))?;
        let amc = AmcNumber::parse(&self.amc).map_err(|source| StoreError::corrupt(what("AMC number", &self.amc), source))?;
        Ok(PendingOpening {
            opening: NotifiedOpening { host, amc, name: self.name, effective: self.effective },
            message_key: self.message_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening(host: &str, amc: &str) -> NotifiedOpening {
        NotifiedOpening {
            host: Host::parse(host).unwrap(),
            amc: AmcNumber::parse(amc).unwrap(),
            name: "Mutuelle Test".into(),
            effective: "2025-11-20".into(),
        }
    }

    fn record(key: &str, verdict: MailVerdict, openings: Vec<NotifiedOpening>) -> NotificationRecord {
        NotificationRecord {
            key: key.into(),
            origin: format!("maildir:/var/mail/new/{key}"),
            sender: Some("notifications@inter-amc.test".into()),
            subject: Some("ouverture".into()),
            verdict,
            reason: None,
            changes: "[]".into(),
            rejected_lines: "[]".into(),
            openings,
        }
    }

    #[test]
    fn every_verdict_reads_back_as_it_was_written() {
        for v in MailVerdict::ALL {
            assert_eq!(MailVerdict::parse(v.as_str()), Some(v));
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::Value::String(v.as_str().into()), "the JSON of `notifications --json` is unchanged");
        }
        assert_eq!(MailVerdict::parse("Used"), None);
        assert_eq!(format!("{:<10}|", MailVerdict::Used), "used      |", "padded in a column");
    }

    /// Issue 12: the openings went in and came out as tuples of strings, parsed again by the
    /// engine with a silent `continue`; and the verdict was matched as a string.
    #[test]
    fn notified_openings_and_verdicts_come_back_typed() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (a, b) = (opening("idb.a.test", "123456789"), opening("*.api.b.test", "987654321"));
        assert!(store.record_notification(&record("<1@a.test>", MailVerdict::Used, vec![a.clone(), b.clone()]), "t1").unwrap());
        assert!(!store.record_notification(&record("<1@a.test>", MailVerdict::Rejected, vec![]), "t2").unwrap(), "recorded once");
        assert_eq!(store.notification_verdict("<1@a.test>").unwrap(), Some(MailVerdict::Used));
        assert_eq!(store.notification_verdict("<2@a.test>").unwrap(), None);
        let pending: Vec<NotifiedOpening> = store.pending_notified_hosts().unwrap().into_iter().map(|p| p.opening).collect();
        assert_eq!(pending, [b.clone(), a.clone()], "by host");
        assert_eq!(store.settle_notified_host(&a.host, Settled::Listed).unwrap(), 1);
        let left = store.pending_notified_hosts().unwrap();
        assert_eq!((left.len(), left[0].message_key.as_str()), (1, "<1@a.test>"));
        assert_eq!(store.notifications(10).unwrap()[0].verdict, MailVerdict::Used);
        let actions: Vec<String> = store.audit_log(5).unwrap().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["notification.used"]);
    }

    /// A row that no longer parses was skipped without a word; it is named by its table and
    /// row (and, read at every pass, left out with a warning rather than stopping the pass).
    #[test]
    fn a_corrupt_notified_opening_is_named_by_its_table_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let good = opening("idb.a.test", "123456789");
        let openings = vec![good.clone(), opening("pro.c.test", "111111111"), opening("www.d.test", "222222222")];
        store.record_notification(&record("<1@a.test>", MailVerdict::Used, openings), "t1").unwrap();
        store.conn.execute("UPDATE notified_hosts SET host = 'bad host..test' WHERE host = 'pro.c.test'", []).unwrap();
        store.conn.execute("UPDATE notified_hosts SET amc = '12x' WHERE host = 'www.d.test'", []).unwrap();
        let rowid = |host: &str| -> i64 {
            store.conn.query_row("SELECT rowid FROM notified_hosts WHERE host = ?1", [host], |r| r.get(0)).unwrap()
        };
        let (bad_host, bad_amc) = (rowid("bad host..test"), rowid("www.d.test"));
        let raw = |id: i64| {
            store
                .conn
                .query_row("SELECT rowid, host, amc, name, effective, message_key FROM notified_hosts WHERE rowid = ?1", [id], raw_notified_host)
                .unwrap()
        };
        let err = raw(bad_host).decode().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("table notified_hosts") && text.contains(&format!("row {bad_host}")), "{text}");
        assert!(text.contains("\"bad host..test\""), "{text}");
        let text = raw(bad_amc).decode().unwrap_err().to_string();
        assert!(text.contains("AMC number \"12x\"") && text.contains(&format!("row {bad_amc} (table notified_hosts)")), "{text}");
        let pending: Vec<NotifiedOpening> = store.pending_notified_hosts().unwrap().into_iter().map(|p| p.opening).collect();
        assert_eq!(pending, [good], "the rows that read are still read");
    }

    #[test]
    fn an_unknown_verdict_is_named_by_its_notification() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.record_notification(&record("<1@a.test>", MailVerdict::NoChange, vec![]), "t1").unwrap();
        store.conn.execute("UPDATE notifications SET verdict = 'maybe'", []).unwrap();
        let err = store.notification_verdict("<1@a.test>").unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("verdict of notification \"<1@a.test>\" (table notifications)"), "{text}");
        assert!(text.contains("unknown verdict \"maybe\""), "{text}");
        assert!(matches!(store.notifications(10), Err(StoreError::Corrupt { .. })));
    }
}
