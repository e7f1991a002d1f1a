//! The daemon's alert queue (nothing lost across an SMTP outage or a restart; the same alert
//! counted, not sent again, within its window) and where it stopped in each log it follows.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{LogPosition, Store, StoreError};
use crate::alerts::Alert;

/// One alert of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAlert {
    pub id: i64,
    pub alert: Alert,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub attempts: u32,
    pub status: String,
    /// Occurrences after it was sent, within the deduplication window.
    pub after_sent: u64,
}

/// What [`Store::raise`] did with an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// A new alert was queued.
    Queued(i64),
    /// It was added to the count of an alert not sent yet.
    Counted(i64),
    /// The same alert was sent within the window: only counted.
    Deduplicated(i64),
}

impl Store {
    pub fn log_position(&self, path: &str) -> Result<Option<LogPosition>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT inode, offset, first_line FROM log_positions WHERE path = ?1", [path], |r| {
                Ok(LogPosition { inode: r.get::<_, i64>(0)? as u64, offset: r.get::<_, i64>(1)? as u64, first_line: r.get(2)? })
            })
            .optional()?)
    }

    /// Queues an alert, or counts it against the same one within `window_ms`.
    pub fn raise(&mut self, alert: &Alert, at: &str, window_ms: u64, now_ms: u64) -> Result<Raised, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = raise_in(&tx, alert, at, window_ms, now_ms)?;
        tx.commit()?;
        Ok(r)
    }

    /// Alerts whose time has come, oldest first.
    pub fn due_alerts(&self, now_ms: u64) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("status = 'queued' AND send_after_ms <= ?1 ORDER BY id", now_ms as i64)
    }

    /// Alerts held back by the hourly limit.
    pub fn held_alerts(&self) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("status = 'held' AND ?1 = ?1 ORDER BY id", 0)
    }

    /// The newest alerts, newest first.
    pub fn recent_alerts(&self, limit: usize) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("?1 = ?1 ORDER BY id DESC LIMIT ?1", limit as i64)
    }

    pub(super) fn alerts_where(&self, clause: &str, arg: i64) -> Result<Vec<QueuedAlert>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, detail, count, first_seen, last_seen, attempts, status, after_sent FROM alerts WHERE {clause}"
        ))?;
        let rows = stmt
            .query_map([arg], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, detail, count, first_seen, last_seen, attempts, status, after_sent)| {
                let alert = serde_json::from_str(&detail).map_err(|source| StoreError::corrupt(format!("alert {id} (table alerts)"), source))?;
                Ok(QueuedAlert {
                    id,
                    alert,
                    count: count as u64,
                    first_seen,
                    last_seen,
                    attempts: attempts as u32,
                    status,
                    after_sent: after_sent as u64,
                })
            })
            .collect()
    }

    pub fn alert_sent(&mut self, id: i64, at: &str) -> Result<(), StoreError> {
        self.conn.execute("UPDATE alerts SET status = 'sent', sent_at = ?2, last_error = NULL WHERE id = ?1", params![id, at])?;
        Ok(())
    }

    /// A failed attempt: the alert stays queued and is tried again at `retry_ms`.
    pub fn alert_failed(&mut self, id: i64, error: &str, retry_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE alerts SET attempts = attempts + 1, last_error = ?2, send_after_ms = ?3 WHERE id = ?1",
            params![id, error, retry_ms as i64],
        )?;
        Ok(())
    }

    /// Sets the status of an alert (`held`, `digested`, `dropped`).
    pub fn alert_status(&mut self, id: i64, status: &str) -> Result<(), StoreError> {
        self.conn.execute("UPDATE alerts SET status = ?2 WHERE id = ?1", params![id, status])?;
        Ok(())
    }

    /// The blocked-request alerts sent since `since` (RFC 3339): what `alerts.max_per_hour`
    /// counts (review mails, failures and digests never hold back the helpdesk's alert).
    pub fn blocked_alerts_sent_since(&self, since: &str) -> Result<Vec<Alert>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, detail FROM alerts WHERE kind = 'blocked' AND status = 'sent' AND sent_at >= ?1")?;
        let rows = stmt.query_map([since], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut alerts = Vec::new();
        for row in rows {
            let (id, detail) = row?;
            alerts.push(serde_json::from_str(&detail).map_err(|source| StoreError::corrupt(format!("alert {id} (table alerts)"), source))?);
        }
        Ok(alerts)
    }

    /// The newest alert raised with this key that was not dropped, with when it was raised
    /// (milliseconds since the epoch).
    pub fn last_raised(&self, key: &str) -> Result<Option<(u64, Alert)>, StoreError> {
        let row: Option<(i64, i64, String)> = self
            .conn
            .query_row(
                "SELECT id, created_ms, detail FROM alerts WHERE key = ?1 AND status != 'dropped' ORDER BY id DESC LIMIT 1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, created_ms, detail)) = row else { return Ok(None) };
        let alert = serde_json::from_str(&detail).map_err(|source| StoreError::corrupt(format!("alert {id} (table alerts)"), source))?;
        Ok(Some((created_ms as u64, alert)))
    }

    /// Whether an alert with this key was raised since `since_ms` (to raise some alerts once).
    pub fn alert_raised_since(&self, key: &str, since_ms: u64) -> Result<bool, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM alerts WHERE key = ?1 AND created_ms >= ?2",
            params![key, since_ms as i64],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

/// Queues `alert`, or counts it against the same one within `window_ms`, in `tx`.
pub(super) fn raise_in(tx: &rusqlite::Transaction<'_>, alert: &Alert, at: &str, window_ms: u64, now_ms: u64) -> Result<Raised, StoreError> {
    let key = alert.key();
    let since = now_ms.saturating_sub(window_ms) as i64;
    let same: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, status FROM alerts WHERE key = ?1 AND created_ms >= ?2 AND status != 'dropped' ORDER BY id DESC LIMIT 1",
            params![key, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match same {
        Some((id, status)) if status == "queued" || status == "held" => {
            tx.execute("UPDATE alerts SET count = count + 1, last_seen = ?2 WHERE id = ?1", params![id, at])?;
            Ok(Raised::Counted(id))
        }
        Some((id, _)) => {
            tx.execute("UPDATE alerts SET after_sent = after_sent + 1, last_seen = ?2 WHERE id = ?1", params![id, at])?;
            Ok(Raised::Deduplicated(id))
        }
        None => {
            let detail = serde_json::to_string(alert).map_err(|source| StoreError::corrupt("alert", source))?;
            let roles = serde_json::to_string(&alert.roles()).map_err(|source| StoreError::corrupt("alert", source))?;
            tx.execute(
                "INSERT INTO alerts (kind, key, roles, detail, created_ms, send_after_ms, count, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7)",
                params![alert.kind(), key, roles, detail, now_ms as i64, (now_ms + alert.gather_ms()) as i64, at],
            )?;
            Ok(Raised::Queued(tx.last_insert_rowid()))
        }
    }
}
