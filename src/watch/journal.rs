//! The kernel's messages in the systemd journal, followed by ONE long-running
//! `journalctl --follow --output=json` child (it was a new `journalctl` every half second): its
//! lines are read as they come by a task on the daemon's runtime, and handed to the worker with
//! the cursor of each entry, which the caller keeps in the store with what the lines produced
//! (as for a followed file). A child that dies is started again from the last cursor, after 1 s,
//! then longer and longer (at most a minute). A first start begins at the end.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::sync::mpsc;

/// Where the journal is read from, and where the last read stopped.
pub struct JournalReader {
    pub directory: Option<PathBuf>,
    /// The cursor of the last entry handed out; where a restart begins.
    pub cursor: Option<String>,
    /// The runtime the follower runs on ([`JournalReader::follow_on`]).
    runtime: Option<tokio::runtime::Handle>,
    /// What the follower sends, once started. Dropping it ends the follower and its child.
    events: Option<mpsc::Receiver<Event>>,
}

/// What the follower tells the reader.
enum Event {
    /// An entry: its text as `journalctl -o short` writes it, and its cursor.
    Entry(String, String),
    /// journalctl could not start or ended, and why.
    Failed(String),
}

/// What one read found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JournalChunk {
    /// Messages as `journalctl -o short` writes them (`Nov 20 10:15:01 fw1 kernel: …`).
    pub lines: Vec<String>,
}

/// Entries waiting for the worker at most; the follower waits when they are not taken.
const QUEUE: usize = 4096;
/// The longest wait before journalctl is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl JournalReader {
    pub fn new(directory: Option<PathBuf>, cursor: Option<String>) -> JournalReader {
        JournalReader { directory, cursor, runtime: None, events: None }
    }

    /// Starts following the journal on `runtime` (the daemon's), from [`JournalReader::cursor`]
    /// (or the end), at once: what comes from now on is kept for the next read.
    pub fn follow_on(&mut self, runtime: tokio::runtime::Handle) {
        self.runtime = Some(runtime);
        self.events = None;
        self.start();
    }

    fn start(&mut self) {
        if self.events.is_some() {
            return;
        }
        let Some(runtime) = self.runtime.clone() else { return };
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(follow(self.directory.clone(), self.cursor.clone(), tx));
        self.events = Some(rx);
    }

    /// A name for the store's position table and the logs.
    pub fn key(&self) -> String {
        match &self.directory {
            Some(d) => format!("journal:{}", d.display()),
            None => "journal:system".into(),
        }
    }

    /// What the journal said since the last read. Never waits: the lines are read as they come
    /// by the follower ([`JournalReader::follow_on`]).
    pub fn read(&mut self) -> std::io::Result<JournalChunk> {
        self.start();
        let Some(events) = self.events.as_mut() else { return Err(std::io::Error::other("the journal follower has no runtime")) };
        let mut chunk = JournalChunk::default();
        let mut failure = None;
        loop {
            match events.try_recv() {
                Ok(Event::Entry(line, cursor)) => {
                    chunk.lines.push(line);
                    self.cursor = Some(cursor);
                }
                Ok(Event::Failed(reason)) => failure = Some(reason),
                Err(_) => break,
            }
        }
        match failure {
            Some(reason) if chunk.lines.is_empty() => Err(std::io::Error::other(reason)),
            _ => Ok(chunk),
        }
    }
}

/// Runs journalctl until the reader is dropped, starting it again with back-off when it ends.
async fn follow(directory: Option<PathBuf>, mut cursor: Option<String>, tx: mpsc::Sender<Event>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = tokio::time::Instant::now();
        let reason = match follow_once(directory.as_ref(), &mut cursor, &tx).await {
            Ok(()) if tx.is_closed() => return,
            Ok(()) => "journalctl ended".to_owned(),
            Err(reason) => reason,
        };
        // A child that ran a while had worked: the next one starts soon.
        if started.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_secs(1);
        }
        // The reason alone: the daemon says a failure again only when its reason changes, and the
        // growing back-off is not a new reason (it said so at every retry).
        tracing::debug!("journalctl: {reason}; started again in {} s", backoff.as_secs());
        if tx.send(Event::Failed(reason)).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One journalctl child, from `cursor` (or the end), its entries sent as they come; `Ok` when
/// the reader is gone (the child is killed as it is dropped), `Err` with why it ended otherwise.
async fn follow_once(directory: Option<&PathBuf>, cursor: &mut Option<String>, tx: &mpsc::Sender<Event>) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("journalctl");
    cmd.args(["--follow", "--no-pager", "--quiet", "--output=json"]);
    if let Some(d) = directory {
        cmd.arg(format!("--directory={}", d.display()));
    }
    match cursor.as_deref() {
        Some(c) => cmd.arg(format!("--after-cursor={c}")),
        None => cmd.arg("--lines=0"),
    };
    cmd.arg("_TRANSPORT=kernel").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { " (is systemd's journalctl installed, and in PATH?)" } else { "" };
        format!("cannot run journalctl: {e}{hint}")
    })?;
    let stdout = child.stdout.take().ok_or("journalctl has no output")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line.map_err(|e| format!("reading journalctl's output: {e}"))?,
            () = tx.closed() => return Ok(()),
        };
        let Some(line) = line else { break };
        let Some((text, entry_cursor)) = entry(&line) else { continue };
        *cursor = Some(entry_cursor.clone());
        if tx.send(Event::Entry(text, entry_cursor)).await.is_err() {
            return Ok(());
        }
    }
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|e| format!("journalctl: {e}"))?;
    Err(failure(&status, &stderr))
}

/// An entry of `journalctl --output=json` as `-o short` writes it (`Nov 20 10:15:01 fw1
/// kernel: …`, the time in UTC), with its cursor; `None` for a line that is not an entry.
fn entry(line: &str) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let cursor = value.get("__CURSOR")?.as_str()?.to_owned();
    let message = match value.get("MESSAGE")? {
        serde_json::Value::String(s) => s.clone(),
        // Not UTF-8: journalctl gives the bytes.
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes.iter().filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => return None,
    };
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    let host = field("_HOSTNAME").unwrap_or("localhost");
    let ident = field("SYSLOG_IDENTIFIER").unwrap_or("kernel");
    let at = field("__REALTIME_TIMESTAMP").and_then(|us| us.parse::<i128>().ok()).and_then(|us| time::OffsetDateTime::from_unix_timestamp_nanos(us * 1000).ok());
    let when = match at {
        Some(t) => {
            const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            format!("{} {:>2} {:02}:{:02}:{:02}", MONTHS[usize::from(u8::from(t.month())) - 1], t.day(), t.hour(), t.minute(), t.second())
        }
        None => "- - -".to_owned(),
    };
    Some((format!("{when} {host} {ident}: {message}"), cursor))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_entries_read_as_short_lines_with_their_cursor() {
        let line = r#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1763633701000000","_HOSTNAME":"fw1","SYSLOG_IDENTIFIER":"kernel","MESSAGE":"rocsync-drop: SRC=198.18.1.20 DST=198.18.3.40"}"#;
        let (text, cursor) = entry(line).expect("an entry");
        assert_eq!(text, "Nov 20 10:15:01 fw1 kernel: rocsync-drop: SRC=198.18.1.20 DST=198.18.3.40");
        assert_eq!(cursor, "s=1;i=2");
        let bytes = r#"{"__CURSOR":"c","MESSAGE":[104,105,255]}"#;
        assert_eq!(entry(bytes).map(|(t, _)| t), Some("- - - localhost kernel: hi\u{fffd}".to_owned()));
        assert_eq!(entry("not json"), None);
        assert_eq!(entry(r#"{"MESSAGE":"no cursor"}"#), None);
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
