//! Reading a whole log in bounded memory: fixed-size blocks cut at newlines with `memchr`, one
//! buffer reused for the whole file, whatever its size. A line longer than [`MAX_LINE`] is
//! rejected (with its number) and its bytes dropped as they come, never buffered whole; a line
//! that is not UTF-8 is rejected too, and the reading goes on.
//!
//! [`LogParser`] says what a line is. With [`Scope::Denials`] (what `inspect log` asks), a line
//! that cannot be a blocked request is not parsed: a `memchr::memmem` scan for what every
//! denial holds (`TCP_DENIED` or `/403` in Squid's log, the log prefix in the kernel's) lets it
//! through to a cheap look at its shape, which only tells a line of the log from another. The
//! verdicts are exactly those of the full parse ([`Scope::All`]): a property test holds them
//! equal on arbitrary lines.

use std::io::{self, Read};
use std::ops::ControlFlow;

use memchr::memmem::Finder;
use serde::Serialize;

use super::{Line, nftlog, squid};

/// A longer line is rejected: no log this crate reads writes one, and it is never buffered.
pub const MAX_LINE: usize = 64 * 1024;

/// What one read asks of the file; larger than [`MAX_LINE`], so that a line within the bound
/// always fits beside the next read.
const BLOCK: usize = 256 * 1024;

/// Why a line of a log was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    /// Longer than [`MAX_LINE`] bytes.
    TooLong,
    /// Not UTF-8: no log rocsync reads writes such bytes, so the line is not trusted to mean
    /// what it seems to say.
    NotUtf8,
}

/// A line that was not read, by its number (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub line: u64,
    pub reason: Reject,
}

/// Calls `each` with every line of `reader` and its number (from 1): the line's text without
/// its end of line (`\n` or `\r\n`), or why it was rejected. The last line counts even
/// without its end of line. `each` can stop the reading early with [`ControlFlow::Break`].
/// Memory: one block of [`BLOCK`] bytes, whatever the size of the file and of its lines.
pub fn for_each_line(mut reader: impl Read, mut each: impl FnMut(u64, Result<&str, Reject>) -> ControlFlow<()>) -> io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    // The bytes not handed over yet are `buf[start..end]`.
    let (mut start, mut end) = (0usize, 0usize);
    // `buf[start..searched]` holds no newline: a long line is searched once, not at every read.
    let mut searched = 0usize;
    let mut number = 0u64;
    // Inside a line already rejected as too long: its bytes are dropped up to its end.
    let mut dropping = false;
    loop {
        while let Some(i) = memchr::memchr(b'\n', &buf[searched..end]) {
            let raw = &buf[start..searched + i];
            start = searched + i + 1;
            searched = start;
            if std::mem::take(&mut dropping) {
                continue;
            }
            number += 1;
            let line = if raw.len() > MAX_LINE { Err(Reject::TooLong) } else { decode(raw.strip_suffix(b"\r").unwrap_or(raw)) };
            if each(number, line).is_break() {
                return Ok(());
            }
        }
        // What is left is the start of a line whose end is not read yet.
        if dropping {
            start = end;
        } else if end - start > MAX_LINE {
            number += 1;
            dropping = true;
            start = end;
            if each(number, Err(Reject::TooLong)).is_break() {
                return Ok(());
            }
        }
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        searched = end;
        let read = loop {
            match reader.read(&mut buf[end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if read == 0 {
            // The last line without its end of line: a log being written, or cut short.
            if end > 0 && !dropping {
                number += 1;
                let _ = each(number, decode(&buf[..end]));
            }
            return Ok(());
        }
        end += read;
    }
}

fn decode(line: &[u8]) -> Result<&str, Reject> {
    std::str::from_utf8(line).map_err(|_| Reject::NotUtf8)
}

/// Which lines a reading parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the lines that can be a blocked request are parsed; the others are only told
    /// apart as lines of the log or not. What `inspect log` asks for.
    Denials,
    /// Every line is parsed, for a reader that wants the allowed requests too.
    All,
}

/// What a line of one log format is, parsed as [`Scope`] says.
#[derive(Debug, Clone)]
pub struct LogParser {
    format: Format,
    scope: Scope,
}

#[derive(Debug, Clone)]
enum Format {
    Squid,
    /// The log prefix, and a searcher for it without its trailing spaces (as the parser
    /// looks for it).
    Nft { prefix: String, marker: Finder<'static> },
}

impl LogParser {
    /// Squid's native access.log ([`squid::parse_line`]).
    pub fn squid(scope: Scope) -> LogParser {
        LogParser { format: Format::Squid, scope }
    }

    /// Kernel packet log lines of nftables' `log prefix "PREFIX"` ([`nftlog::parse_line`]).
    pub fn nft(prefix: &str, scope: Scope) -> LogParser {
        let marker = Finder::new(prefix.trim_end()).into_owned();
        LogParser { format: Format::Nft { prefix: prefix.to_owned(), marker }, scope }
    }

    /// What `line` is: the full parser's verdict, reached without parsing a line that cannot
    /// be a blocked request when the scope is [`Scope::Denials`].
    pub fn line(&self, line: &str) -> Option<Line> {
        let all = self.scope == Scope::All;
        match &self.format {
            Format::Squid if all || squid::may_be_denied(line.as_bytes()) => squid::parse_line(line),
            Format::Squid => squid::is_line(line).then_some(Line::Other),
            Format::Nft { prefix, marker } if all || marker.find(line.as_bytes()).is_some() => nftlog::parse_line(line, prefix),
            Format::Nft { .. } => nftlog::is_line(line).then_some(Line::Other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that hands its bytes over a few at a time, to cut blocks anywhere.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn lines_of(reader: impl Read) -> Vec<(u64, Result<String, Reject>)> {
        let mut out = Vec::new();
        for_each_line(reader, |n, l| {
            out.push((n, l.map(str::to_owned)));
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    /// The same lines, cut from the whole text at once: what streaming must agree with.
    fn whole(bytes: &[u8]) -> Vec<(u64, Result<String, Reject>)> {
        let mut parts: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let last_unterminated = parts.pop().filter(|l| !l.is_empty());
        let mut out = Vec::new();
        for (i, &raw) in parts.iter().enumerate() {
            let line = if raw.len() > MAX_LINE { Err(Reject::TooLong) } else { decode(raw.strip_suffix(b"\r").unwrap_or(raw)).map(str::to_owned) };
            out.push((i as u64 + 1, line));
        }
        if let Some(raw) = last_unterminated {
            let line = if raw.len() > MAX_LINE { Err(Reject::TooLong) } else { decode(raw).map(str::to_owned) };
            out.push((out.len() as u64 + 1, line));
        }
        out
    }

    #[test]
    fn a_long_line_invalid_utf8_nul_bytes_and_a_cut_last_line_are_numbered_and_the_rest_read() {
        let mut log = b"first\r\n".to_vec();
        log.extend(vec![b'x'; 1024 * 1024]);
        log.extend(b"\nbad \xff\xfe byte\nnul\0byte\n\n");
        log.extend(vec![b'y'; MAX_LINE + 1]);
        log.extend(b"\nexactly at the bound follows\n");
        log.extend(vec![b'z'; MAX_LINE]);
        log.extend(b"\ncut short");
        let expected = vec![
            (1, Ok("first".to_owned())),
            (2, Err(Reject::TooLong)),
            (3, Err(Reject::NotUtf8)),
            (4, Ok("nul\0byte".to_owned())),
            (5, Ok(String::new())),
            (6, Err(Reject::TooLong)),
            (7, Ok("exactly at the bound follows".to_owned())),
            (8, Ok("z".repeat(MAX_LINE))),
            (9, Ok("cut short".to_owned())),
        ];
        assert_eq!(lines_of(&log[..]), expected);
        assert_eq!(whole(&log), expected);
        for step in [7, 4096, MAX_LINE - 1, MAX_LINE + 3, BLOCK] {
            assert_eq!(lines_of(Trickle { bytes: &log, step }), expected, "read {step} bytes at a time");
        }
        // A long last line, cut short: rejected once.
        let cut = [b"a\n".to_vec(), vec![b'w'; MAX_LINE * 3]].concat();
        assert_eq!(lines_of(&cut[..]), [(1, Ok("a".to_owned())), (2, Err(Reject::TooLong))]);
    }

    #[test]
    fn break_stops_the_reading() {
        let mut seen = 0;
        for_each_line(&b"a\nb\nc\n"[..], |_, _| {
            seen += 1;
            if seen == 2 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        })
        .unwrap();
        assert_eq!(seen, 2);
    }

    /// A Squid line, whole or mangled: a field dropped, a byte changed, Unicode spaces.
    fn squid_line() -> impl Strategy<Value = String> {
        let codes = prop_oneof![
            Just("TCP_DENIED/403"),
            Just("NONE_NONE/403"),
            Just("NONE/403"),
            Just("NONE/400"),
            Just("TCP_TUNNEL/200"),
            Just("TCP_MISS/403"),
            Just("TCP_DENIED_REPLY/403"),
            Just("tcp_denied/403"),
            Just("TCP_DENIED"),
        ];
        let targets = prop_oneof![
            Just("idb.a.test:443".to_owned()),
            Just("http://crl.a.test/x.crl".to_owned()),
            Just("http://b.test/403".to_owned()),
            Just("not a url".to_owned()),
            "[a-z.:/0-9]{0,20}",
        ];
        let methods = prop_oneof![Just("CONNECT"), Just("GET")];
        let spaces = prop_oneof![Just(" "), Just("  "), Just("\t"), Just("\u{a0}"), Just("\u{2003}"), Just("\x0b")];
        (
            prop_oneof![Just("1763630101.202".to_owned()), Just("x".to_owned()), Just("1e3".to_owned()), Just("inf".to_owned())],
            prop_oneof![Just("0"), Just("-1"), Just("12")],
            codes,
            methods,
            targets,
            spaces,
            0..9usize,
        )
            .prop_map(|(time, elapsed, code, method, target, space, drop)| {
                let mut fields = vec![time, elapsed.to_owned(), "198.18.1.20".to_owned(), code.to_owned(), "10".to_owned(), method.to_owned(), target, "-".to_owned()];
                if drop < fields.len() {
                    fields.remove(drop);
                }
                fields.join(space)
            })
    }

    fn nft_line() -> impl Strategy<Value = String> {
        let fields = prop_oneof![
            Just("SRC=198.18.1.20"),
            Just("DST=198.18.3.40"),
            Just("DST=2001:db8::1"),
            Just("SRC="),
            Just("DST="),
            Just("DST=nope"),
            Just("DPT=443"),
            Just("DPT=x"),
            Just("rocsync-drop:"),
            Just("rocsync-drop: "),
            Just("other:"),
            Just("kernel:"),
            Just("\u{a0}"),
        ];
        (proptest::collection::vec(fields, 0..9), prop_oneof![Just(" "), Just("\t"), Just("\u{2003}")]).prop_map(|(f, space)| {
            format!("Nov 20 10:15:01 fw1 {}", f.join(space))
        })
    }

    proptest! {
        /// Streaming cuts the same lines as a reading of the whole text, wherever the blocks end.
        #[test]
        fn streaming_cuts_the_lines_the_whole_text_has(
            bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(0xffu8), Just(b'a'), any::<u8>()], 0..300),
            step in 1..40usize,
        ) {
            prop_assert_eq!(lines_of(Trickle { bytes: &bytes, step }), whole(&bytes));
        }

        /// The prefilter never changes a verdict: arbitrary text and mangled real lines.
        #[test]
        fn the_prefilter_keeps_the_full_parse_verdicts(
            any_text in "\\PC{0,80}",
            squid_text in squid_line(),
            nft_text in nft_line(),
        ) {
            let (fast, full) = (LogParser::squid(Scope::Denials), LogParser::squid(Scope::All));
            for line in [&any_text, &squid_text, &nft_text] {
                prop_assert_eq!(fast.line(line), full.line(line), "{:?}", line);
                prop_assert_eq!(full.line(line), squid::parse_line(line));
            }
            for prefix in ["rocsync-drop: ", "rocsync-drop:", "other: "] {
                let (fast, full) = (LogParser::nft(prefix, Scope::Denials), LogParser::nft(prefix, Scope::All));
                for line in [&any_text, &squid_text, &nft_text] {
                    prop_assert_eq!(fast.line(line), full.line(line), "{:?} {:?}", prefix, line);
                    prop_assert_eq!(full.line(line), nftlog::parse_line(line, prefix));
                }
            }
        }
    }
}
