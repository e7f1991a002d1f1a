//! A Maildir that the local MTA delivers the Inter-AMC notifications to.
//!
//! A new message is in `new/`; once rocsync has recorded it, it moves to `cur/` with the
//! Maildir info `:2,S` (seen), or `:2,FS` (flagged for a person) when it was rejected, had no
//! change or could not be read. Nothing is ever deleted. rocsync records a message before it
//! moves it, and records each message once (by Message-ID), so a crash in between neither loses
//! nor doubles one. A message larger than the limit is not read at all: it is recorded as
//! unreadable and flagged, by its size on disk.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::sources::mail::Incoming;

/// A Maildir: a directory with `new/`, `cur/` and `tmp/`.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Opens `root`, which must hold `new/` and `cur/`.
    pub fn open(root: &Path) -> std::io::Result<Maildir> {
        for sub in ["new", "cur"] {
            let dir = root.join(sub);
            if !dir.is_dir() {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} is not a Maildir directory", dir.display())));
            }
        }
        Ok(Maildir { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Messages waiting in `new/`, oldest name first (Maildir names start with the time).
    pub fn pending(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.root.join("new"))?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        Ok(files)
    }

    /// A message's bytes, or only its size when it is larger than `limit`: the size on disk is
    /// looked at first, and a message that grows meanwhile is still read no further than the
    /// limit.
    pub fn read(&self, path: &Path, limit: u64) -> std::io::Result<Incoming> {
        let file = std::fs::File::open(path)?;
        let size = file.metadata()?.len();
        if size > limit {
            return Ok(Incoming::TooLarge { size });
        }
        let mut raw = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // One byte past the limit tells "exactly the limit" from "more".
        let mut reader = file.take(limit.saturating_add(1));
        reader.read_to_end(&mut raw)?;
        if raw.len() as u64 > limit {
            let size = reader.get_ref().metadata().map_or(0, |m| m.len()).max(raw.len() as u64);
            return Ok(Incoming::TooLarge { size });
        }
        Ok(Incoming::Bytes(raw))
    }

    /// Moves a message of `new/` to `cur/` with `flags` (sorted letters, `S`, `FS`).
    pub fn mark(&self, path: &Path, flags: &str) -> std::io::Result<PathBuf> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let unique = name.split(":2,").next().unwrap_or(&name);
        let target = self.root.join("cur").join(format!("{unique}:2,{flags}"));
        std::fs::rename(path, &target)?;
        Ok(target)
    }
}

/// Wakes `wake` as soon as a message lands in `new/` (inotify, through `notify`), and every
/// `rescan` anyway, for file systems that do not report changes (NFS). Returns when `shutdown`
/// completes, or at once if the directory cannot be watched.
pub async fn watch(
    maildir: &Maildir,
    rescan: Duration,
    wake: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) -> notify::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Delivery ends with a rename into new/ (or a create): either is a new message.
        if event.is_ok_and(|e| e.kind.is_create() || e.kind.is_modify()) {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&maildir.root.join("new"), RecursiveMode::NonRecursive)?;
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(rescan);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {
                tracing::debug!(maildir = %maildir.root.display(), "A message arrived.");
                wake.notify_one();
            }
            _ = tick.tick() => {
                if maildir.pending().is_ok_and(|p| !p.is_empty()) {
                    wake.notify_one();
                }
            }
            () = &mut shutdown => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_to_cur_with_flags() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        std::fs::write(dir.path().join("new/1700000002.M1.host"), "b").unwrap();
        std::fs::write(dir.path().join("new/1700000001.M1.host"), "a").unwrap();
        std::fs::write(dir.path().join("new/.hidden"), "x").unwrap();
        let md = Maildir::open(dir.path()).unwrap();
        let pending = md.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending[0].ends_with("1700000001.M1.host"));
        let moved = md.mark(&pending[0], "FS").unwrap();
        assert!(moved.ends_with("cur/1700000001.M1.host:2,FS"));
        assert_eq!(md.pending().unwrap().len(), 1);
        assert!(Maildir::open(&dir.path().join("cur")).is_err());
    }

    #[test]
    fn a_message_over_the_limit_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let md = Maildir::open(dir.path()).unwrap();
        let path = dir.path().join("new/1700000001.M1.host");
        std::fs::write(&path, vec![b'x'; 50_000]).unwrap();
        assert_eq!(md.read(&path, 10_000).unwrap(), Incoming::TooLarge { size: 50_000 });
        assert_eq!(md.read(&path, 50_000).unwrap(), Incoming::Bytes(vec![b'x'; 50_000]));
        assert!(md.read(&dir.path().join("new/gone"), 10).is_err());
    }

    #[tokio::test]
    async fn a_delivery_wakes_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let md = Maildir::open(dir.path()).unwrap();
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let task = {
            let (md, wake, stop) = (md.clone(), wake.clone(), stop.clone());
            tokio::spawn(async move { watch(&md, Duration::from_secs(3600), wake, stop.notified()).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(dir.path().join("tmp/m1"), "x").unwrap();
        std::fs::rename(dir.path().join("tmp/m1"), dir.path().join("new/m1")).unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        assert!(woke.is_ok(), "no wake-up within 5 s of a delivery");
        stop.notify_one();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_rescan_finds_what_no_event_reported() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let md = Maildir::open(dir.path()).unwrap();
        let wake = Arc::new(Notify::new());
        let task = {
            let (md, wake) = (md.clone(), wake.clone());
            tokio::spawn(async move { watch(&md, Duration::from_secs(300), wake, tokio::time::sleep(Duration::from_secs(1000))).await })
        };
        // Present before the watch began: no event will ever report it.
        std::fs::write(dir.path().join("new/old"), "x").unwrap();
        let started = tokio::time::Instant::now();
        wake.notified().await;
        assert_eq!(started.elapsed().as_secs(), 300);
        task.await.unwrap().unwrap();
    }
}
