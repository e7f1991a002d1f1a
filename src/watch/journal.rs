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
        let out = cmd.output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(std::io::Error::other(format!("journalctl: {}", err.trim())));
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
}
