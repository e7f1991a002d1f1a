//! What the review console keeps in the store (schema version 6): its accounts, its sessions
//! and the login failures that throttle guessing; and what it reads of the alert queue.
//!
//! A session is known by a hash of its id only (see `console::auth::session_key`): whoever
//! reads the database cannot take a session over with what it finds there. Changing a
//! password or removing an account ends that account's sessions in the same transaction.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{QueuedAlert, Store, StoreError, audit_in};

/// A console account, as `rocsync user list` shows it: never its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    pub created: String,
    pub changed: String,
    /// Sessions open now (expired ones count until they are purged).
    pub sessions: i64,
}

/// A session with its account's current role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user: String,
    pub role: String,
    pub csrf: String,
    pub created_ms: u64,
    pub seen_ms: u64,
    pub address: String,
}

impl Store {
    /// Adds an account; `false` when one of that name exists (nothing changed). Audited
    /// `user.added` by `by`.
    pub fn add_user(&mut self, name: &str, role: &str, hash: &str, by: &str, now: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let added = tx.execute(
            "INSERT INTO users (name, role, hash, created, changed) VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (name) DO NOTHING",
            params![name, role, hash, now],
        )?;
        if added == 1 {
            audit_in(&tx, now, by, "user.added", None, &format!("{name}, role {role}"))?;
        }
        tx.commit()?;
        Ok(added == 1)
    }

    /// Every account, by name.
    pub fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, role, created, changed, (SELECT count(*) FROM sessions s WHERE s.user = u.name)
             FROM users u ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(UserRow { name: r.get(0)?, role: r.get(1)?, created: r.get(2)?, changed: r.get(3)?, sessions: r.get(4)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The role and the password hash of account `name`, if it exists.
    pub fn user_credentials(&self, name: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT role, hash FROM users WHERE name = ?1", [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    /// The role of account `name`, if it exists.
    pub fn user_role(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row("SELECT role FROM users WHERE name = ?1", [name], |r| r.get(0)).optional()?)
    }

    /// Replaces the password hash of `name` and ends its sessions; `false` when there is no such
    /// account. Audited `user.password_changed`.
    pub fn set_password(&mut self, name: &str, hash: &str, by: &str, now: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute("UPDATE users SET hash = ?2, changed = ?3 WHERE name = ?1", params![name, hash, now])?;
        if changed == 1 {
            let ended = tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
            audit_in(&tx, now, by, "user.password_changed", None, &format!("{name}; {ended} session(s) ended"))?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Removes account `name` and ends its sessions; `false` when there is no such account.
    /// Audited `user.removed`.
    pub fn remove_user(&mut self, name: &str, by: &str, now: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ended = tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        let removed = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
        if removed == 1 {
            audit_in(&tx, now, by, "user.removed", None, &format!("{name}; {ended} session(s) ended"))?;
        }
        tx.commit()?;
        Ok(removed == 1)
    }

    /// Opens a session for `user`, known by `id_hash`.
    pub fn create_session(&mut self, id_hash: &str, user: &str, csrf: &str, now_ms: u64, address: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sessions (id_hash, user, csrf, created_ms, seen_ms, address) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![id_hash, user, csrf, now_ms as i64, address],
        )?;
        Ok(())
    }

    /// The session known by `id_hash`, with its account's role; `None` when it was ended, or
    /// its account removed.
    pub fn session(&self, id_hash: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT s.user, u.role, s.csrf, s.created_ms, s.seen_ms, s.address
                 FROM sessions s JOIN users u ON u.name = s.user WHERE s.id_hash = ?1",
                [id_hash],
                |r| {
                    Ok(SessionRow {
                        user: r.get(0)?,
                        role: r.get(1)?,
                        csrf: r.get(2)?,
                        created_ms: r.get::<_, i64>(3)? as u64,
                        seen_ms: r.get::<_, i64>(4)? as u64,
                        address: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// The newest session of `user` from `address` used since `seen_after_ms` and opened since
    /// `created_after_ms`: its key and CSRF token. Behind an SSO proxy a client that keeps no
    /// cookie (a health check, curl) goes on in it instead of opening one per request.
    pub fn recent_session(
        &self,
        user: &str,
        address: &str,
        seen_after_ms: u64,
        created_after_ms: u64,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id_hash, csrf FROM sessions WHERE user = ?1 AND address = ?2 AND seen_ms >= ?3 AND created_ms >= ?4
                 ORDER BY seen_ms DESC LIMIT 1",
                params![user, address, seen_after_ms as i64, created_after_ms as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records that the session was used at `now_ms` (its idle time starts again).
    pub fn touch_session(&mut self, id_hash: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn.execute("UPDATE sessions SET seen_ms = ?2 WHERE id_hash = ?1", params![id_hash, now_ms as i64])?;
        Ok(())
    }

    /// Ends one session; `false` when it did not exist.
    pub fn end_session(&mut self, id_hash: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])? == 1)
    }

    /// Ends the sessions idle since before `idle_before_ms` or opened before
    /// `created_before_ms`; how many.
    pub fn end_expired_sessions(&mut self, idle_before_ms: u64, created_before_ms: u64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM sessions WHERE seen_ms < ?1 OR created_ms < ?2",
            params![idle_before_ms as i64, created_before_ms as i64],
        )?)
    }

    /// Records a failed login at `now_ms` under each of `keys` (the account, the address).
    pub fn record_login_failure(&mut self, keys: &[&str], now_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for key in keys {
            tx.execute("INSERT INTO login_failures (key, at_ms) VALUES (?1, ?2)", params![key, now_ms as i64])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets one attempt recorded under `key` at `at_ms`: a login counted as failed before its
    /// password was checked, which then turned out good.
    pub fn forget_login_attempt(&mut self, key: &str, at_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM login_failures WHERE rowid = (SELECT rowid FROM login_failures WHERE key = ?1 AND at_ms = ?2 LIMIT 1)",
            params![key, at_ms as i64],
        )?;
        Ok(())
    }

    /// When logins under `key` failed since `since_ms`, oldest first.
    pub fn login_failures(&self, key: &str, since_ms: u64) -> Result<Vec<u64>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT at_ms FROM login_failures WHERE key = ?1 AND at_ms >= ?2 ORDER BY at_ms")?;
        let rows = stmt.query_map(params![key, since_ms as i64], |r| r.get::<_, i64>(0))?;
        Ok(rows.map(|r| r.map(|ms| ms as u64)).collect::<Result<_, _>>()?)
    }

    /// Forgets the failures under `keys` (after a good login), and every one older than
    /// `before_ms`.
    pub fn clear_login_failures(&mut self, keys: &[&str], before_ms: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for key in keys {
            tx.execute("DELETE FROM login_failures WHERE key = ?1", [key])?;
        }
        tx.execute("DELETE FROM login_failures WHERE at_ms < ?1", [before_ms as i64])?;
        tx.commit()?;
        Ok(())
    }

    /// The blocked-request alerts raised since `since_ms`, newest first (whatever became of
    /// their mail).
    pub fn blocked_alerts_since(&self, since_ms: u64) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("kind = 'blocked' AND created_ms >= ?1 ORDER BY id DESC LIMIT 1000", since_ms as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_password_or_a_removal_ends_the_accounts_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(store.add_user("marie", "rssi", "h1", "root", "t1").unwrap());
        assert!(!store.add_user("marie", "helpdesk", "h2", "root", "t1").unwrap(), "one account per name");
        assert!(store.add_user("paul", "helpdesk", "h3", "root", "t1").unwrap());
        store.create_session("s1", "marie", "c1", 1000, "127.0.0.1").unwrap();
        store.create_session("s2", "paul", "c2", 1000, "127.0.0.1").unwrap();
        let s1 = store.session("s1").unwrap().unwrap();
        assert_eq!((s1.user.as_str(), s1.role.as_str(), s1.csrf.as_str()), ("marie", "rssi", "c1"));
        assert!(store.set_password("marie", "h4", "root", "t2").unwrap());
        assert_eq!(store.session("s1").unwrap(), None, "a new password ends the session");
        assert_eq!(store.user_credentials("marie").unwrap(), Some(("rssi".into(), "h4".into())));
        assert!(store.remove_user("paul", "root", "t3").unwrap());
        assert_eq!(store.session("s2").unwrap(), None, "a removal ends the session");
        assert!(!store.remove_user("paul", "root", "t3").unwrap());
        let actions: Vec<String> = store.audit_log(10).unwrap().into_iter().map(|a| a.action).collect();
        assert_eq!(actions, ["user.added", "user.added", "user.password_changed", "user.removed"]);
        let users = store.users().unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].name, "marie");
    }

    #[test]
    fn login_failures_are_counted_per_key_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.record_login_failure(&["account:marie", "address:127.0.0.1"], 10).unwrap();
        store.record_login_failure(&["account:marie", "address:127.0.0.1"], 20).unwrap();
        assert_eq!(store.login_failures("account:marie", 0).unwrap(), [10, 20]);
        assert_eq!(store.login_failures("account:marie", 15).unwrap(), [20]);
        store.clear_login_failures(&["account:marie"], 0).unwrap();
        assert!(store.login_failures("account:marie", 0).unwrap().is_empty());
        assert_eq!(store.login_failures("address:127.0.0.1", 0).unwrap().len(), 2);
        store.clear_login_failures(&[], 25).unwrap();
        assert!(store.login_failures("address:127.0.0.1", 0).unwrap().is_empty(), "old ones are forgotten");
    }
}
