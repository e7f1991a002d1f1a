//! The command an export runs after its file changed (`squid -k reconfigure`): no shell, a
//! timeout. The command runs in a process group of its own, and a timeout kills the whole group:
//! a `sh -c` script's children outlived a kill of the shell (and held its stderr open).
//!
//! Its stderr is read on a thread while it runs and only the end is kept: a command that says a
//! lot never fills the pipe and blocks until it is killed, and a failure is reported with the
//! last lines, where the reason usually is.

use std::io::{self, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How much of a command's stderr a report keeps: its last bytes.
const TAIL: usize = 4096;
/// How long the stderr of a command that failed may stay open after it exited (a process it
/// started may still hold it) before the report is made with what was read by then.
const STDERR_GRACE: Duration = Duration::from_millis(500);
/// The longest pause between two looks at whether the command exited.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A command to run after an output file changed, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostWrite {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl PostWrite {
    /// Runs the command; `Err` says why it failed, timed out, or could not start, with the end
    /// of what it wrote to stderr.
    pub fn run(&self) -> Result<(), String> {
        let shown = self.argv.join(" ");
        let (program, args) = self.argv.split_first().ok_or("empty command")?;
        let mut child = Command::new(program)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("`{shown}` cannot start: {e}"))?;
        let stderr = match child.stderr.take().map(StderrTail::start).transpose() {
            Ok(stderr) => stderr,
            Err(e) => {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(format!("`{shown}`: cannot read its stderr: {e}"));
            }
        };
        // A timeout too long for the clock to add is no deadline, not a panic.
        let deadline = Instant::now().checked_add(self.timeout);
        let mut pause = Duration::from_millis(5);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(format!("`{shown}`: {e}")),
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(with_stderr(format!("`{shown}` did not finish within {:?} and was killed", self.timeout), stderr));
            }
            thread::sleep(left.map_or(pause, |left| left.min(pause)));
            pause = (pause * 2).min(MAX_PAUSE);
        };
        if status.success() {
            return Ok(());
        }
        Err(with_stderr(format!("`{shown}` failed ({status})"), stderr))
    }
}

/// Kills the command and every process of its group (what a script started, too). The group's
/// id is the command's pid (`process_group(0)`), and stays taken until the command is reaped.
fn kill_group(child: &mut std::process::Child) {
    if let Some(group) = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw) {
        // The group is the child's own, which it leads until it is waited for.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
}

/// `report`, followed by the end of what the command wrote to stderr when it wrote something.
fn with_stderr(report: String, stderr: Option<StderrTail>) -> String {
    match stderr.map(StderrTail::finish).filter(|text| !text.is_empty()) {
        Some(text) => format!("{report}: {text}"),
        None => report,
    }
}

/// A command's stderr, read on its own thread as it comes, of which only the end is kept.
struct StderrTail {
    tail: Arc<Mutex<Tail>>,
    reader: JoinHandle<()>,
}

impl StderrTail {
    fn start(mut stderr: ChildStderr) -> io::Result<StderrTail> {
        let tail = Arc::new(Mutex::new(Tail::default()));
        let shared = Arc::clone(&tail);
        let reader = thread::Builder::new().name("post-write-stderr".into()).spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => shared.lock().unwrap_or_else(PoisonError::into_inner).push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })?;
        Ok(StderrTail { tail, reader })
    }

    /// The end of what was read, once the pipe closed or [`STDERR_GRACE`] passed. A reader still
    /// blocked then is left to end with the pipe.
    fn finish(self) -> String {
        let until = Instant::now() + STDERR_GRACE;
        while !self.reader.is_finished() && Instant::now() < until {
            thread::sleep(Duration::from_millis(5));
        }
        let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        tail.text()
    }
}

/// The last bytes of a stream: at most [`TAIL`] once read, twice that while reading.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    /// Whether bytes before these were dropped.
    cut: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL {
            let extra = self.bytes.len() - TAIL;
            self.bytes.drain(..extra);
            self.cut = true;
        }
    }

    /// The end as one line, `…` in front when its start was dropped. Control characters, line
    /// breaks included, become spaces: a command's output cannot add a line to a log or to the
    /// audit trail.
    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL);
        let text = crate::sinks::comment_text(&String::from_utf8_lossy(&self.bytes[start..]));
        let text = text.trim();
        if self.cut || start > 0 { format!("…{text}") } else { text.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn post_write_commands_report_failure_and_timeout() {
        let ok = PostWrite { argv: vec!["true".into()], timeout: Duration::from_secs(5) };
        assert_eq!(ok.run(), Ok(()));
        let fails = PostWrite { argv: sh("echo broken >&2; exit 3"), timeout: Duration::from_secs(5) };
        let err = fails.run().unwrap_err();
        assert!(err.contains("exit status: 3") && err.ends_with(": broken"), "{err}");
        let slow = PostWrite { argv: vec!["sleep".into(), "5".into()], timeout: Duration::from_millis(200) };
        let started = Instant::now();
        assert!(slow.run().unwrap_err().contains("did not finish within 200ms"));
        assert!(started.elapsed() < Duration::from_secs(2));
        let missing = PostWrite { argv: vec!["/nonexistent/reload".into()], timeout: Duration::from_secs(1) };
        assert!(missing.run().unwrap_err().contains("cannot start"));
    }

    /// Issue 12: a timeout killed the shell of `sh -c` and left what it started running (here a
    /// `sleep` that would have held a reload for a minute). The whole process group is killed.
    #[test]
    fn a_timeout_kills_what_the_command_started_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let slow = PostWrite { argv: sh(&script), timeout: Duration::from_millis(500) };
        let started = Instant::now();
        assert!(slow.run().unwrap_err().contains("did not finish within 500ms"));
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let gone = || {
            // Gone, or a zombie waiting for whoever adopted it.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        while !gone() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the script's child {pid} outlived the timeout");
    }

    #[test]
    fn a_timeout_reports_what_the_killed_command_said() {
        let slow = PostWrite { argv: sh("echo still loading >&2; exec sleep 5"), timeout: Duration::from_millis(300) };
        let err = slow.run().unwrap_err();
        assert!(err.contains("did not finish within 300ms and was killed") && err.ends_with(": still loading"), "{err}");
    }

    /// Regression: stderr was read only after the command exited, so a command writing more
    /// than the pipe holds blocked until the timeout killed it, reported "did not finish".
    #[test]
    fn a_command_writing_a_megabyte_to_stderr_does_not_block_on_the_pipe() {
        let talkative = PostWrite { argv: sh("yes 0123456789abcdef | head -c 1048576 >&2; exit 0"), timeout: Duration::from_secs(20) };
        let started = Instant::now();
        assert_eq!(talkative.run(), Ok(()));
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn a_command_failing_after_a_megabyte_of_stderr_reports_its_tail() {
        let script = "yes 0123456789abcdef | head -c 1048576 >&2; echo the reason is here >&2; exit 1";
        let failing = PostWrite { argv: sh(script), timeout: Duration::from_secs(20) };
        let err = failing.run().unwrap_err();
        assert!(!err.contains("did not finish"), "{err}");
        assert!(err.contains("failed (exit status: 1): …") && err.ends_with("the reason is here"), "{err}");
        assert!(err.contains("0123456789abcdef 0123456789abcdef"), "what it said before, line breaks as spaces: {err}");
        assert!(err.len() < TAIL + script.len() + 100, "{} bytes", err.len());
        assert!(!err.contains('\n'), "one line");
    }

    /// Regression: `Instant::now() + timeout` panicked on a timeout too long for the clock.
    #[test]
    fn a_timeout_too_long_for_the_clock_is_no_deadline_not_a_panic() {
        let ok = PostWrite { argv: vec!["true".into()], timeout: Duration::MAX };
        assert_eq!(ok.run(), Ok(()));
        let fails = PostWrite { argv: sh("exit 2"), timeout: Duration::MAX };
        assert!(fails.run().unwrap_err().contains("exit status: 2"));
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_as_one_line() {
        let mut tail = Tail::default();
        tail.push(b"first\nsecond\r\n");
        assert_eq!(tail.text(), "first second");
        for _ in 0..10 {
            tail.push(&[b'x'; 1000]);
        }
        tail.push(b"\x1b[31mend\n");
        assert!(tail.bytes.len() <= 2 * TAIL);
        let text = tail.text();
        assert!(text.starts_with("…xxx") && text.ends_with(" [31mend"), "{text}");
        assert_eq!(text.len(), "…".len() + TAIL - 1, "the last 4 KiB, the final line break trimmed");
    }
}
