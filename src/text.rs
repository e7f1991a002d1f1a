//! Text from outside, made safe to show to a person.
//!
//! An AMC name, a mail subject, a rejected value or a log field can hold anything: a newline
//! that adds a fake line to a plan, an escape sequence that hides text on a terminal, a bidi
//! override that makes `moc.evil` read as `evil.com`. Every such text passes [`escape`] once,
//! where it enters rocsync (the annuaire parser, the mail parser, the log watchers), so that
//! whatever shows it later (terminal, mail, journal, export comment, console) receives only
//! printable characters. HTML escaping is a second, separate step that the console's
//! templates do for their own context.

use std::borrow::Cow;
use std::fmt;

/// Whether `c` must never reach a person's screen as itself: C0 and C1 controls, DEL, the
/// line and paragraph separators, the byte-order mark, and the bidirectional formatting
/// characters (marks, embeddings, overrides and isolates).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// `text` with every unsafe character shown as `\u{…}` (and tab, CR, LF as `\t`, `\r`, `\n`);
/// borrowed when there is none, which is the usual case.
///
/// ```
/// use rocsync::text::escape;
///
/// assert_eq!(escape("MUTUELLE EXEMPLE"), "MUTUELLE EXEMPLE");
/// assert_eq!(escape("A\n    + faux.test\u{1b}[8m"), "A\\n    + faux.test\\u{1b}[8m");
/// assert_eq!(escape("\u{202e}tset.live"), "\\u{202e}tset.live");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] into an owned string, for values that are kept.
pub fn escaped(text: &str) -> String {
    escape(text).into_owned()
}

/// Shows a text from outside escaped: `format!("{}", Untrusted(name))`.
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

/// A name from outside as the title of a group of lines (an AMC in a plan or a mail):
/// [`escape`]d, and quoted when it begins like a change line would (`+`, `-`, `~`, `#`, `>`,
/// `*`) or is blank, so that `+ faux.test  tcp/443` as an AMC name never reads as an opening.
///
/// ```
/// use rocsync::text::label;
///
/// assert_eq!(label("MUTUELLE EXEMPLE"), "MUTUELLE EXEMPLE");
/// assert_eq!(label("+ faux.test  tcp/443"), "\"+ faux.test  tcp/443\"");
/// ```
pub fn label(text: &str) -> String {
    let shown = escape(text);
    match shown.chars().next() {
        None => "\"\"".into(),
        Some(c) if c.is_whitespace() || "+-~#>*".contains(c) => format!("\"{shown}\""),
        Some(_) => shown.into_owned(),
    }
}

/// `word` as one shell word, to paste into a terminal: bare when it holds only characters the
/// shell gives no meaning to, else single-quoted; control characters escaped first (a pasted
/// command must never carry an escape sequence or a line break of its own).
///
/// ```
/// use rocsync::text::shell_word;
///
/// assert_eq!(shell_word("/var/lib/rocsync"), "/var/lib/rocsync");
/// assert_eq!(shell_word("x y;$(id)"), "'x y;$(id)'");
/// assert_eq!(shell_word("it's"), r"'it'\''s'");
/// ```
pub fn shell_word(word: &str) -> String {
    let word = escape(word);
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c)) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// At most `max` bytes of `text` (cut on a character boundary, `…` added), escaped: for a value
/// quoted in an error or a warning, which must stay one short line.
pub fn excerpt(text: &str, max: usize) -> String {
    let cut = text.floor_char_boundary(max.min(text.len()));
    let mut out = escaped(&text[..cut]);
    if cut < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_every_kind_of_control() {
        for c in ['\0', '\x07', '\x1b', '\x7f', '\u{85}', '\u{9b}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}', '\u{feff}', '\u{200f}'] {
            let shown = escape(&format!("a{c}b")).into_owned();
            assert!(!shown.contains(c), "{c:?} still in {shown:?}");
            assert!(shown.starts_with('a') && shown.ends_with('b'));
        }
        assert_eq!(escape("Générale & Fils — ok"), "Générale & Fils — ok");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn words_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_word("--config"), "--config");
        assert_eq!(shell_word("/etc/rocsync/config.toml"), "/etc/rocsync/config.toml");
        assert_eq!(shell_word("J. Martin (RSSI)"), "'J. Martin (RSSI)'");
        assert_eq!(shell_word("l'AMC"), r"'l'\''AMC'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a\u{1b}[2J"), "'a\\u{1b}[2J'", "no escape sequence reaches a pasted command");
    }

    #[test]
    fn excerpt_is_short_and_escaped() {
        assert_eq!(excerpt("abc\ndef", 100), "abc\\ndef");
        assert_eq!(excerpt("ééé", 3), "é…");
    }

    proptest! {
        /// Whatever the input, the shown text is one line of printable characters.
        #[test]
        fn escaped_text_is_one_printable_line(s in any::<String>()) {
            let shown = escape(&s);
            prop_assert!(!shown.chars().any(is_unsafe), "{:?}", shown);
            prop_assert_eq!(shown.lines().count(), usize::from(!shown.is_empty()));
        }
    }
}
