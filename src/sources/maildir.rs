//! A Maildir that the local MTA delivers the Inter-AMC notifications to.
//!
//! A new message is in `new/`; once rocsync has recorded it, it moves to `cur/` with the
//! Maildir info `:2,S` (seen), or `:2,FS` (flagged for a person) when it was rejected, had no
//! change or could not be read. Nothing is ever deleted. rocsync records a message before it
//! moves it, and records each message once (by Message-ID), so a crash in between neither loses
//! nor doubles one.

use std::path::{Path, PathBuf};

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

    /// Moves a message of `new/` to `cur/` with `flags` (sorted letters, `S`, `FS`).
    pub fn mark(&self, path: &Path, flags: &str) -> std::io::Result<PathBuf> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let unique = name.split(":2,").next().unwrap_or(&name);
        let target = self.root.join("cur").join(format!("{unique}:2,{flags}"));
        std::fs::rename(path, &target)?;
        Ok(target)
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
}
