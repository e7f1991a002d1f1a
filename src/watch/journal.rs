//! The kernel's messages in the systemd journal, read with `journalctl` from a cursor: each read
//! asks for what came after the last cursor and gets the new one, which the caller keeps in the
//! store with what the lines produced (as for a followed file). A first start begins at the end.

use std::path::PathBuf;
use std::process::Command;

/// Where the journal is read from, and where the last read stopped.
pub struct JournalReader {
    pub directory: Option<PathBuf>,
    pub cursor: Option<String>,
    /// The first read found the journal empty: later reads without a cursor read everything.
    empty_at_start: bool,
}

/// What one read found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JournalChunk {
    /// Messages as `journalctl -o short` writes them (`Nov 20 10:15:01 fw1 kernel: …`).
    pub lines: Vec<String>,
}

impl JournalReader {
    pub fn new(directory: Option<PathBuf>, cursor: Option<String>) -> JournalReader {
        JournalReader { directory, cursor, empty_at_start: false }
    }

    /// A name for the store's position table and the logs.
    pub fn key(&self) -> String {
        match &self.directory {
            Some(d) => format!("journal:{}", d.display()),
            None => "journal:system".into(),
        }
    }

    pub fn read(&mut self) -> std::io::Result<JournalChunk> {
        let mut cmd = Command::new("journalctl");
        cmd.args(["--no-pager", "--quiet", "--output=short", "--show-cursor"]);
        if let Some(d) = &self.directory {
            cmd.arg(format!("--directory={}", d.display()));
        }
        let first = self.cursor.is_none() && !self.empty_at_start;
        match (&self.cursor, first) {
            (Some(c), _) => {
                cmd.arg(format!("--after-cursor={c}"));
            }
            (None, true) => {
                cmd.args(["--lines=1"]);
            }
            (None, false) => {}
        }
        cmd.arg("_TRANSPORT=kernel");
        let out = cmd.output().map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound { " (is systemd's journalctl installed, and in PATH?)" } else { "" };
            std::io::Error::new(e.kind(), format!("cannot run journalctl: {e}{hint}"))
        })?;
        if !out.status.success() {
            return Err(std::io::Error::other(failure(&out.status, &out.stderr)));
        }
        let (lines, cursor) = parse(&String::from_utf8_lossy(&out.stdout));
        if first {
            self.empty_at_start = cursor.is_none();
            self.cursor = cursor;
            return Ok(JournalChunk::default());
        }
        if cursor.is_some() {
            self.cursor = cursor;
        }
        Ok(JournalChunk { lines })
    }
}

/// Why journalctl failed, in words, on one line. It may print nothing (as with `--quiet` when
/// the user may not read the system's journal): then its exit status and the likely causes,
/// never an empty reason.
fn failure(status: &std::process::ExitStatus, stderr: &[u8]) -> String {
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("ended: {status}"),
    };
    let said: Vec<String> = String::from_utf8_lossy(stderr).lines().map(str::trim).filter(|l| !l.is_empty()).map(crate::text::escaped).collect();
    if said.is_empty() {
        format!(
            "journalctl {how} and printed nothing: may this user read the journal (the systemd-journal group; in the unit, \
             SupplementaryGroups=systemd-journal), and does watch.journal_directory hold a journal?"
        )
    } else {
        format!("journalctl {how}: {}", said.join(" / "))
    }
}

/// The message lines and the cursor line (`-- cursor: …`) of journalctl's output.
fn parse(text: &str) -> (Vec<String>, Option<String>) {
    let mut lines = Vec::new();
    let mut cursor = None;
    for line in text.lines() {
        match line.strip_prefix("-- cursor: ") {
            Some(c) => cursor = Some(c.trim().to_owned()),
            None if !line.is_empty() => lines.push(line.to_owned()),
            None => {}
        }
    }
    (lines, cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_cursor_are_told_apart() {
        let (lines, cursor) = parse("Nov 20 10:15:01 fw1 kernel: rocsync-drop: SRC=a\n-- cursor: s=1;i=2\n");
        assert_eq!(lines, ["Nov 20 10:15:01 fw1 kernel: rocsync-drop: SRC=a"]);
        assert_eq!(cursor.as_deref(), Some("s=1;i=2"));
        assert_eq!(parse(""), (vec![], None));
    }

    /// "Cannot read the journal: journalctl:" was logged with nothing after the colon.
    #[test]
    fn a_silent_journalctl_failure_still_has_a_reason() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let silent = failure(&status, b"");
        assert!(silent.starts_with("journalctl exited with status 1 and printed nothing"), "{silent}");
        assert!(silent.contains("systemd-journal"), "{silent}");
        let said = failure(&status, b"Failed to open files: Permission denied\n\nHint: more\n");
        assert_eq!(said, "journalctl exited with status 1: Failed to open files: Permission denied / Hint: more");
    }
}
