//! Log lines for the systemd journal. Under systemd, stderr is a stream into the journal that
//! makes an entry of each line, at priority 6 unless the line begins with `<N>` (sd-daemon(3)):
//! rocsync's ERRORs were invisible to `journalctl -p err`, its timestamps doubled the journal's,
//! and a multi-line error became several entries. When stderr is that stream, each event is
//! one line with its syslog priority, without a timestamp, its newlines escaped.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to its device and
/// inode. A child whose stderr was redirected inherits the variable with another file, so both
/// are compared; when stderr cannot be looked at, the variable is believed.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some(value) = value.to_str() else { return false };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => names_stream(value, m.dev(), m.ino()),
        Err(_) => !value.is_empty(),
    }
}

/// Whether `JOURNAL_STREAM`'s `DEVICE:INODE` names the file `dev`, `ino`.
fn names_stream(value: &str, dev: u64, ino: u64) -> bool {
    value.split_once(':').is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

/// The syslog priority of a level: error 3, warning 4, info 6, debug and trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// `text` on one line: a journal entry ends at a newline.
pub fn one_line(text: &str) -> String {
    text.trim_end_matches(['\n', '\r']).replace('\r', "\\r").replace('\n', "\\n")
}

/// The event format for the journal's stream: `<3>reconcile: apply{plan=4}: message field=value`.
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::new();
        {
            let mut buffer = Writer::new(&mut line);
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    buffer.write_str(span.name())?;
                    let extensions = span.extensions();
                    if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                        if !fields.is_empty() {
                            write!(buffer, "{{{fields}}}")?;
                        }
                    }
                    buffer.write_str(": ")?;
                }
            }
            ctx.field_format().format_fields(buffer.by_ref(), event)?;
        }
        writeln!(writer, "<{}>{}", priority(event.metadata().level()), one_line(&line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_syslog_priorities() {
        assert_eq!([Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE].map(|l| priority(&l)), [3, 4, 6, 7, 7]);
    }

    #[test]
    fn an_event_is_one_line() {
        assert_eq!(one_line("refused:\n  line 3: `mood`: unknown key\n"), "refused:\\n  line 3: `mood`: unknown key");
        assert_eq!(one_line("a\r\nb"), "a\\r\\nb");
    }

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(names_stream("64768:1234", 64768, 1234));
        assert!(!names_stream("64768:1234", 64768, 99), "stderr redirected elsewhere");
        assert!(!names_stream("garbage", 64768, 1234));
    }
}
