//! Following a log file as it grows, across rotation, like `tail -F` but resumable: the
//! position (inode, offset and the file's first line) is kept in the store by the caller, so
//! that a restart neither re-reads old lines nor skips new ones.
//!
//! Rotation is told three ways: by rename (the path names another inode: the rest of the old
//! file is read first, through the handle still open, then the new file from its start), by
//! copytruncate (the file is shorter than the offset), and by a truncate that was written past
//! the offset again before the next read (the first line changed). After a restart, a renamed
//! file is looked for as `PATH.1` (logrotate's name) to read its end.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where a followed log was read up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub inode: u64,
    pub offset: u64,
    /// The file's first line, to recognise a file truncated and written again past `offset`.
    pub first_line: String,
}


/// At most this much is read per call; the rest comes at the next.
const MAX_READ: u64 = 8 * 1024 * 1024;

pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    pos: Option<LogPosition>,
}

/// What one read found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    pub lines: Vec<String>,
    /// How the file was rotated since the last read, if it was.
    pub rotated: Option<&'static str>,
}

impl Follower {
    /// Follows `path` from `saved`, or from its current end when there is no saved position
    /// (a first start does not alert on old lines).
    pub fn new(path: &Path, saved: Option<LogPosition>) -> Follower {
        Follower { path: path.to_owned(), file: None, pos: saved }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next read starts, to save with what the lines produced.
    pub fn position(&self) -> Option<&LogPosition> {
        self.pos.as_ref()
    }

    /// The complete lines added since the last read. A missing file is not an error: it is
    /// waited for.
    pub fn read(&mut self) -> io::Result<Chunk> {
        let mut chunk = Chunk::default();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Renamed away and not created again yet: finish the old file.
                if let (Some(file), Some(pos)) = (self.file.as_mut(), self.pos.as_mut()) {
                    chunk.lines = read_lines(file, pos)?;
                }
                return Ok(chunk);
            }
            Err(e) => return Err(e),
        };
        match (&mut self.file, &mut self.pos) {
            (None, None) => {
                // First start: from the end.
                let mut file = File::open(&self.path)?;
                let first_line = first_line(&mut file)?;
                let offset = complete_end(&mut file, meta.len())?;
                self.pos = Some(LogPosition { inode: meta.ino(), offset, first_line });
                self.file = Some(file);
                return Ok(chunk);
            }
            (None, Some(pos)) => {
                // Restart with a saved position.
                let mut file = File::open(&self.path)?;
                if pos.inode != meta.ino() {
                    chunk.rotated = Some("renamed while rocsync was stopped");
                    let old = self.path.with_extension(format!(
                        "{}1",
                        self.path.extension().map(|e| format!("{}.", e.to_string_lossy())).unwrap_or_default()
                    ));
                    if let Ok(mut old_file) = File::open(&old) {
                        if old_file.metadata()?.ino() == pos.inode {
                            chunk.lines = read_lines(&mut old_file, pos)?;
                        }
                    }
                    *pos = LogPosition { inode: meta.ino(), offset: 0, first_line: String::new() };
                } else if meta.len() < pos.offset || first_line(&mut file)? != pos.first_line {
                    chunk.rotated = Some("truncated while rocsync was stopped");
                    pos.offset = 0;
                }
                self.file = Some(file);
            }
            (Some(file), Some(pos)) => {
                if file.metadata()?.ino() != meta.ino() {
                    // Renamed: the rest of the old file, then the new one from its start.
                    chunk.lines = read_lines(file, pos)?;
                    chunk.rotated = Some("renamed");
                    *file = File::open(&self.path)?;
                    *pos = LogPosition { inode: meta.ino(), offset: 0, first_line: String::new() };
                } else if meta.len() < pos.offset {
                    chunk.rotated = Some("truncated");
                    pos.offset = 0;
                } else if pos.offset > 0 && first_line(file)? != pos.first_line {
                    chunk.rotated = Some("truncated and written again");
                    pos.offset = 0;
                }
            }
            (Some(_), None) => unreachable!("a file is opened with its position"),
        }
        if let (Some(file), Some(pos)) = (self.file.as_mut(), self.pos.as_mut()) {
            if pos.offset == 0 || pos.first_line.is_empty() {
                pos.first_line = first_line(file)?;
            }
            chunk.lines.extend(read_lines(file, pos)?);
        }
        Ok(chunk)
    }
}

/// The file's first line (without its end of line), empty while it has none complete.
fn first_line(file: &mut File) -> io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    BufReader::new(file.take(4096)).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Ok(String::new());
    }
    line.pop();
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The end of the last complete line at or before `len`.
fn complete_end(file: &mut File, len: u64) -> io::Result<u64> {
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    Ok(match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None => start,
    })
}

/// The complete lines from `pos.offset`, moving it past them; a partial last line waits.
fn read_lines(file: &mut File, pos: &mut LogPosition) -> io::Result<Vec<String>> {
    file.seek(SeekFrom::Start(pos.offset))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    let Some(end) = bytes.iter().rposition(|b| *b == b'\n') else {
        // A line longer than a whole read would hold the follower here for ever: its bytes so
        // far are passed over (the rest of it, when its end comes, is no line of the log).
        if bytes.len() as u64 == MAX_READ {
            pos.offset += MAX_READ;
        }
        return Ok(Vec::new());
    };
    pos.offset += end as u64 + 1;
    Ok(bytes[..end].split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn starts_at_the_end_then_reads_complete_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "old 1\nold 2\n");
        let mut f = Follower::new(&log, None);
        assert!(f.read().unwrap().lines.is_empty(), "a first start does not read old lines");
        append(&log, "new 1\nnew 2\npart");
        assert_eq!(f.read().unwrap().lines, ["new 1", "new 2"]);
        append(&log, "ial\n");
        assert_eq!(f.read().unwrap().lines, ["partial"]);
        assert!(f.read().unwrap().lines.is_empty());
    }

    /// Regression: a line longer than one read (8 MiB) without its newline kept every later
    /// read at the same offset, and the lines after it were never seen.
    #[test]
    fn a_line_longer_than_a_read_does_not_stop_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "a\n");
        let mut f = Follower::new(&log, None);
        f.read().unwrap();
        append(&log, &"x".repeat(MAX_READ as usize + 10));
        append(&log, "\nnext\n");
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.extend(f.read().unwrap().lines);
        }
        assert_eq!(seen.last().map(String::as_str), Some("next"), "{} lines read", seen.len());
    }

    #[test]
    fn rename_rotation_reads_the_old_end_then_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "a\n");
        let mut f = Follower::new(&log, None);
        f.read().unwrap();
        append(&log, "b\n");
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        append(&dir.path().join("access.log.1"), "c\n");
        assert_eq!(f.read().unwrap().lines, ["b", "c"], "the old file's end, the new one not there yet");
        append(&log, "d\n");
        let chunk = f.read().unwrap();
        assert_eq!(chunk.lines, ["d"]);
        assert_eq!(chunk.rotated, Some("renamed"));
    }

    #[test]
    fn copytruncate_and_a_refilled_truncate_start_again_from_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "first line\n");
        let mut f = Follower::new(&log, None);
        f.read().unwrap();
        append(&log, "x\n");
        assert_eq!(f.read().unwrap().lines, ["x"]);
        std::fs::write(&log, "").unwrap();
        append(&log, "y\n");
        let chunk = f.read().unwrap();
        assert_eq!((chunk.lines, chunk.rotated), (vec!["y".to_owned()], Some("truncated")));
        // Truncated, then written past where rocsync was before it looked again.
        std::fs::write(&log, "another first line, longer than before\nz\n").unwrap();
        let chunk = f.read().unwrap();
        assert_eq!(chunk.lines, ["another first line, longer than before", "z"]);
        assert_eq!(chunk.rotated, Some("truncated and written again"));
    }

    #[test]
    fn a_saved_position_resumes_without_rereading_and_finds_a_renamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        append(&log, "a\n");
        let mut f = Follower::new(&log, None);
        f.read().unwrap();
        append(&log, "b\n");
        f.read().unwrap();
        let saved = f.position().cloned();
        append(&log, "c\n");
        let mut again = Follower::new(&log, saved.clone());
        assert_eq!(again.read().unwrap().lines, ["c"], "after a restart: only what was not read");
        // Stopped, then rotated by rename with lines written before the rename.
        append(&log, "d\n");
        let saved = again.position().cloned();
        append(&log, "e\n");
        std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
        append(&log, "f\n");
        let mut third = Follower::new(&log, saved);
        let chunk = third.read().unwrap();
        assert_eq!(chunk.lines, ["d", "e", "f"], "{chunk:?}");
    }
}
