//! The sources' side: each read of the annuaire or of a mailbox, successful or not (the
//! sources' health), and the last good answer of each, for `If-None-Match` and for a 304.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::applied::audit_in;
use super::{Store, StoreError};

/// The prefix of a mailbox's reads in `source_reads` (`mailbox:maildir:/var/…`), which keeps
/// them apart from the annuaire's.
pub const MAILBOX: &str = "mailbox:";

/// One read of a source, successful or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRead {
    pub at: String,
    pub source: String,
    pub ok: bool,
    pub serial: Option<u64>,
    pub hosts: Option<usize>,
    pub rejected: Option<usize>,
    pub error: Option<String>,
}

/// The last good answer of a source, with its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub fetched_at: String,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Store {
    /// Records one read of a source; a failed one is also audited (`source.error`).
    pub fn record_source_read(&mut self, read: &SourceRead) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO source_reads (at, source, ok, serial, hosts, rejected, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                read.at,
                read.source,
                read.ok,
                read.serial.map(|s| s as i64),
                read.hosts.map(|h| h as i64),
                read.rejected.map(|r| r as i64),
                read.error
            ],
        )?;
        if let Some(error) = &read.error {
            audit_in(&tx, &read.at, "rocsync", "source.error", None, error)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps the last good answer of `source`.
    /// An answer identical to the one kept is not written again (a few hundred kilobytes at
    /// every poll for nothing); the kept one keeps its fetch time.
    pub fn cache_answer(&mut self, source: &str, answer: &CachedAnswer) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO source_cache (source, fetched_at, etag, content_type, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (source) DO UPDATE SET fetched_at = ?2, etag = ?3, content_type = ?4, body = ?5
             WHERE body IS NOT excluded.body OR etag IS NOT excluded.etag OR content_type IS NOT excluded.content_type",
            params![source, answer.fetched_at, answer.etag, answer.content_type, answer.body],
        )?;
        Ok(())
    }

    /// The last good answer of `source`, if any.
    pub fn cached_answer(&self, source: &str) -> Result<Option<CachedAnswer>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT fetched_at, etag, content_type, body FROM source_cache WHERE source = ?1",
                [source],
                cached_row,
            )
            .optional()?)
    }

    /// The newest good answer of any source.
    pub fn latest_cached_answer(&self) -> Result<Option<CachedAnswer>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT fetched_at, etag, content_type, body FROM source_cache ORDER BY fetched_at DESC LIMIT 1",
                [],
                cached_row,
            )
            .optional()?)
    }

    /// Each mailbox's last read, with when it was last read well: the notifications' health,
    /// apart from the annuaire's (a mailbox down is not the annuaire down).
    pub fn mailbox_reads(&self) -> Result<Vec<(SourceRead, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT at, source, ok, error, (SELECT MAX(g.at) FROM source_reads g WHERE g.source = r.source AND g.ok = 1)
             FROM source_reads r WHERE r.id IN (SELECT MAX(id) FROM source_reads WHERE source LIKE '{MAILBOX}%' GROUP BY source)
             ORDER BY r.source"
        ))?;
        let rows = stmt.query_map([], |r| {
            let source: String = r.get(1)?;
            let read = SourceRead {
                at: r.get(0)?,
                source: source.strip_prefix(MAILBOX).unwrap_or(&source).to_owned(),
                ok: r.get(2)?,
                serial: None,
                hosts: None,
                rejected: None,
                error: r.get(3)?,
            };
            Ok((read, r.get::<_, Option<String>>(4)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The annuaire's newest read, and its newest successful one.
    pub fn last_source_reads(&self) -> Result<(Option<SourceRead>, Option<SourceRead>), StoreError> {
        let query = |filter: &str| -> Result<Option<SourceRead>, StoreError> {
            let sql = format!(
                "SELECT at, source, ok, serial, hosts, rejected, error FROM source_reads {filter} ORDER BY id DESC LIMIT 1"
            );
            Ok(self
                .conn
                .query_row(&sql, [], |r| {
                    Ok(SourceRead {
                        at: r.get(0)?,
                        source: r.get(1)?,
                        ok: r.get(2)?,
                        serial: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                        hosts: r.get::<_, Option<i64>>(4)?.map(|h| h as usize),
                        rejected: r.get::<_, Option<i64>>(5)?.map(|h| h as usize),
                        error: r.get(6)?,
                    })
                })
                .optional()?)
        };
        Ok((query(&format!("WHERE source NOT LIKE '{MAILBOX}%'"))?, query(&format!("WHERE ok = 1 AND source NOT LIKE '{MAILBOX}%'"))?))
    }
}

/// A `source_cache` row selected as `fetched_at, etag, content_type, body`.
fn cached_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedAnswer> {
    Ok(CachedAnswer { fetched_at: r.get(0)?, etag: r.get(1)?, content_type: r.get(2)?, body: r.get(3)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same answer at every poll was written again whole each time.
    #[test]
    fn an_unchanged_answer_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let first = CachedAnswer { fetched_at: "t1".into(), etag: Some("\"x\"".into()), content_type: None, body: b"{}".to_vec() };
        store.cache_answer("https://a.test/", &first).unwrap();
        store.cache_answer("https://a.test/", &CachedAnswer { fetched_at: "t2".into(), ..first.clone() }).unwrap();
        assert_eq!(store.cached_answer("https://a.test/").unwrap().unwrap().fetched_at, "t1", "kept as it was");
        let changed = CachedAnswer { fetched_at: "t3".into(), body: b"{\"a\":1}".to_vec(), ..first.clone() };
        store.cache_answer("https://a.test/", &changed).unwrap();
        assert_eq!(store.cached_answer("https://a.test/").unwrap(), Some(changed));
    }
}
