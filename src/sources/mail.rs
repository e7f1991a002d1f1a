//! Inter-AMC notification e-mails (contract §2): one opening or closing of domains per line,
//! in the text (plain or HTML-only, any transfer encoding and charset, quoted in a forward) or
//! in a `;`-separated CSV attachment.
//!
//! Pure: bytes in, a [`Notification`] out. A line that looks like a change but does not parse is
//! kept in `rejected_lines` with its number and reason; prose is ignored. MIME decoding,
//! charsets and HTML-to-text are `mail-parser`'s; CSV is the `csv` crate's.

use std::collections::BTreeSet;

use mail_parser::{HeaderName, Message, MessageParser, MimeHeaders};
use serde::Serialize;
use time::Date;
use time::macros::format_description;

use crate::amc::AmcNumber;
use crate::host::Host;

/// An opening or a closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Open,
    Close,
}

/// What the receiving server's `Authentication-Results` say of DKIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dkim {
    Pass,
    Fail,
    /// No DKIM result at all.
    None,
}

/// One change a notification announces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MailChange {
    pub action: Action,
    /// The date of effect, as announced.
    pub effective: String,
    pub amc: AmcNumber,
    pub name: String,
    pub host: Host,
}

/// A line that looks like a change but could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedLine {
    /// Where: `body` (the text), or the CSV attachment's file name.
    pub part: String,
    /// The line in that part, from 1.
    pub line: u64,
    pub text: String,
    pub reason: String,
}

/// What rocsync reads in one notification e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub message_id: Option<String>,
    /// The sender's address, lower-cased.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// Whether the subject names an opening or a closing (`ouverture`, `fermeture`).
    pub subject_matches: bool,
    pub dkim: Dkim,
    pub changes: Vec<MailChange>,
    pub rejected_lines: Vec<RejectedLine>,
}

/// What rocsync does with a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// From an allowed sender, with changes: triggers a re-poll; openings the annuaire does not
    /// list wait in a plan for approval.
    Used,
    /// From a sender outside the allow-list, or failing DKIM when it is required.
    Rejected(String),
    /// Readable, but no change in it: kept aside and reported.
    NoChange,
    /// Not an e-mail rocsync can read: kept and reported.
    Unreadable(String),
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Used => "used",
            Verdict::Rejected(_) => "rejected",
            Verdict::NoChange => "no_change",
            Verdict::Unreadable(_) => "unreadable",
        }
    }
}

/// Judges a notification: `allowed_senders` holds addresses (`notifications@inter-amc.test`)
/// or whole domains (`@inter-amc.test`).
pub fn judge(n: &Notification, allowed_senders: &[String], require_dkim_pass: bool) -> Verdict {
    let from = n.from.as_deref().unwrap_or("");
    let allowed = allowed_senders.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        if a.starts_with('@') { from.ends_with(&a) } else { from == a }
    });
    if !allowed {
        return Verdict::Rejected(format!("sender `{from}` is not in notifications.allowed_senders"));
    }
    if require_dkim_pass && n.dkim != Dkim::Pass {
        return Verdict::Rejected(format!("DKIM {:?} while notifications.require_dkim_pass = true", n.dkim).to_lowercase());
    }
    if n.changes.is_empty() {
        return Verdict::NoChange;
    }
    Verdict::Used
}

/// Why bytes are not an e-mail at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("not an e-mail message (no header could be read)")]
    NotAMessage,
}

/// Reads one message. `trusted_authserv_id`, when set, is the receiving server's name
/// (`mx.chu-exemple.test`): `Authentication-Results` headers of any other server are ignored,
/// as a sender could have written them.
pub fn parse(raw: &[u8], trusted_authserv_id: Option<&str>) -> Result<Notification, MailError> {
    let message = MessageParser::default().parse(raw).ok_or(MailError::NotAMessage)?;
    if message.headers().is_empty() {
        return Err(MailError::NotAMessage);
    }
    let subject = message.subject().map(str::to_owned);
    let subject_matches = subject.as_deref().is_some_and(|s| {
        let s = fold(s);
        s.contains("ouverture") || s.contains("fermeture")
    });
    let from = message.from().and_then(|a| a.first()).and_then(|a| a.address()).map(|a| a.trim().to_ascii_lowercase());
    let mut found = Found::default();
    read_parts(&message, &mut found, 0);
    let changes: BTreeSet<MailChange> = found.changes.into_iter().collect();
    Ok(Notification {
        message_id: message.message_id().map(str::to_owned),
        from,
        subject,
        subject_matches,
        dkim: dkim(&message, trusted_authserv_id),
        changes: changes.into_iter().collect(),
        rejected_lines: found.rejected,
    })
}

#[derive(Default)]
struct Found {
    changes: Vec<MailChange>,
    rejected: Vec<RejectedLine>,
}

/// The text bodies, the CSV attachments, and forwarded messages inside, to a bounded depth.
fn read_parts(message: &Message<'_>, found: &mut Found, depth: usize) {
    for i in 0..message.text_body_count() {
        // For an HTML-only message, mail-parser gives the HTML turned into text.
        if let Some(text) = message.body_text(i) {
            let label = if message.text_body_count() > 1 { format!("body{}", i + 1) } else { "body".to_owned() };
            read_lines(&text, &label, found);
        }
    }
    for part in message.attachments() {
        let name = part.attachment_name().unwrap_or("attachment").to_owned();
        let is_csv = part.is_content_type("text", "csv")
            || name.to_ascii_lowercase().ends_with(".csv")
            || part.content_type().is_some_and(|c| c.subtype().is_some_and(|s| s.eq_ignore_ascii_case("csv")));
        if let Some(inner) = part.message() {
            if depth < 3 {
                read_parts(inner, found, depth + 1);
            }
        } else if is_csv {
            // A text/* part arrives already decoded to UTF-8; other types are decoded here.
            let text = match part.text_contents() {
                Some(text) => text.to_owned(),
                None => decode_text(part.contents(), part.content_type().and_then(|c| c.attribute("charset"))),
            };
            read_csv(&text, &name, found);
        }
    }
}

/// Attachment bytes as text: the declared charset, else UTF-8, else Windows-1252 (a superset
/// of ISO-8859-1 in practice).
fn decode_text(bytes: &[u8], charset: Option<&str>) -> String {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if let Some(enc) = charset.and_then(|c| encoding_rs::Encoding::for_label(c.as_bytes())) {
        return enc.decode_without_bom_handling(bytes).0.into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0.into_owned(),
    }
}

/// Lower case without accents, for matching words.
fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => 'e',
            'à' | 'â' | 'À' | 'Â' => 'a',
            'ô' | 'Ô' => 'o',
            'ù' | 'û' | 'Ù' | 'Û' => 'u',
            'î' | 'ï' | 'Î' | 'Ï' => 'i',
            'ç' | 'Ç' => 'c',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The action word at the start of `field`, if it is one.
fn action_word(field: &str) -> Option<Action> {
    match fold(field.trim()).as_str() {
        "ouverture" => Some(Action::Open),
        "fermeture" => Some(Action::Close),
        _ => None,
    }
}

/// Lines of the form `ACTION | date | AMC | name | host` (or `;`). A line is a candidate when it
/// starts with the action word followed by a separator; anything else is prose. Quote marks of
/// a forward (`> `) are stripped.
fn read_lines(text: &str, label: &str, found: &mut Found) {
    for (i, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim_start_matches(|c: char| c == '>' || c.is_whitespace()).trim_end();
        let Some(sep) = line.find(['|', ';']) else { continue };
        if action_word(&line[..sep]).is_none() {
            continue;
        }
        let sep_char = line[sep..].chars().next().unwrap_or('|');
        let fields: Vec<&str> = line.split(sep_char).map(str::trim).collect();
        match change(&fields) {
            Ok(c) => found.changes.push(c),
            Err(reason) => found.rejected.push(RejectedLine { part: label.to_owned(), line: i as u64 + 1, text: line.to_owned(), reason }),
        }
    }
}

/// The CSV attachment: header `action;date_effet;numero_amc;libelle;domaine`, in any order.
fn read_csv(text: &str, name: &str, found: &mut Found) {
    const COLUMNS: [&str; 5] = ["action", "date_effet", "numero_amc", "libelle", "domaine"];
    let mut reader = csv::ReaderBuilder::new().delimiter(b';').flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(fold).collect(),
        Err(e) => {
            found.rejected.push(RejectedLine { part: name.to_owned(), line: 1, text: String::new(), reason: format!("unreadable CSV: {e}") });
            return;
        }
    };
    let positions: Option<Vec<usize>> = COLUMNS.iter().map(|c| header.iter().position(|h| h == c)).collect();
    let Some(positions) = positions else {
        found.rejected.push(RejectedLine {
            part: name.to_owned(),
            line: 1,
            text: header.join(";"),
            reason: format!("the CSV header must name the columns {}", COLUMNS.join(";")),
        });
        return;
    };
    for record in reader.records() {
        let (line, result) = match record {
            Ok(r) => {
                let line = r.position().map(|p| p.line()).unwrap_or(0);
                let fields: Vec<&str> = positions.iter().map(|&p| r.get(p).unwrap_or("")).collect();
                (line, change(&fields).map_err(|reason| (r.iter().collect::<Vec<_>>().join(";"), reason)))
            }
            Err(e) => (e.position().map(|p| p.line()).unwrap_or(0), Err((String::new(), format!("unreadable CSV row: {e}")))),
        };
        match result {
            Ok(c) => found.changes.push(c),
            Err((text, reason)) => found.rejected.push(RejectedLine { part: name.to_owned(), line, text, reason }),
        }
    }
}

/// One change from its five fields.
fn change(fields: &[&str]) -> Result<MailChange, String> {
    let [action, date, amc, name, host] = fields else {
        return Err(format!("expected 5 fields (action, date, AMC number, name, domain), found {}", fields.len()));
    };
    let action = action_word(action).ok_or_else(|| format!("`{action}` is neither OUVERTURE nor FERMETURE"))?;
    let effective = Date::parse(date, format_description!("[year]-[month]-[day]"))
        .map_err(|_| format!("`{date}` is not a date (YYYY-MM-DD)"))?;
    let amc = AmcNumber::parse(amc).map_err(|e| format!("`{amc}`: {e}"))?;
    if name.is_empty() {
        return Err("the AMC name is empty".into());
    }
    let host = Host::parse(host).map_err(|e| format!("`{host}`: {e}"))?;
    Ok(MailChange { action, effective: effective.to_string(), amc, name: (*name).to_owned(), host })
}

/// DKIM as the receiving server saw it: `pass` if any trusted result passes, `fail` if one
/// fails, `none` without a result.
fn dkim(message: &Message<'_>, trusted: Option<&str>) -> Dkim {
    let mut result = Dkim::None;
    for value in message.header_values(HeaderName::AuthenticationResults) {
        let Some(text) = value.as_text() else { continue };
        let text = text.to_ascii_lowercase();
        let authserv = text.split(';').next().unwrap_or("").split_whitespace().next().unwrap_or("");
        if trusted.is_some_and(|t| !authserv.eq_ignore_ascii_case(t)) {
            continue;
        }
        for clause in text.split(';').skip(1) {
            match clause.trim().strip_prefix("dkim=").map(|v| v.split_whitespace().next().unwrap_or("")) {
                Some("pass") => return Dkim::Pass,
                Some("fail" | "permerror" | "temperror" | "neutral" | "policy") => result = Dkim::Fail,
                _ => {}
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Notification {
        let path = format!("{}/tests/fixtures/mail/{name}", env!("CARGO_MANIFEST_DIR"));
        parse(&std::fs::read(path).unwrap(), None).unwrap()
    }

    fn hosts(n: &Notification) -> Vec<(Action, &str)> {
        n.changes.iter().map(|c| (c.action, c.host.as_str())).collect()
    }

    #[test]
    fn plain_text_quoted_printable() {
        let n = fixture("ouverture-texte.eml");
        assert_eq!(n.message_id.as_deref(), Some("ouverture-texte@inter-amc.test"));
        assert_eq!(n.from.as_deref(), Some("notifications@inter-amc.test"));
        assert_eq!(n.subject.as_deref(), Some("[ROC] Mise à jour des URL — ouverture de domaines"));
        assert!(n.subject_matches);
        assert_eq!(n.dkim, Dkim::Pass);
        assert_eq!(
            hosts(&n),
            [(Action::Open, "clc.nouvelle-mutuelle-sud.test"), (Action::Open, "idb.nouvelle-mutuelle-sud.test")]
        );
        assert_eq!(n.changes[0].effective, "2026-11-25");
        assert_eq!(n.changes[0].amc.as_str(), "891234567");
        assert_eq!(n.changes[0].name, "NOUVELLE MUTUELLE DU SUD");
        assert!(n.rejected_lines.is_empty());
    }

    #[test]
    fn html_only_latin1() {
        let n = fixture("ouverture-html-latin1.eml");
        assert_eq!(hosts(&n), [(Action::Open, "*.roc.mgt-sante.test")]);
        assert_eq!(n.changes[0].name, "MUTUELLE GÉNÉRALE DES TERRITOIRES");
        assert!(n.rejected_lines.is_empty(), "prose is not a rejected line: {:?}", n.rejected_lines);
    }

    #[test]
    fn csv_attachment() {
        let n = fixture("fermeture-csv.eml");
        assert_eq!(hosts(&n), [(Action::Close, "clc.otp-ouest.test"), (Action::Close, "idb.otp-ouest.test")]);
        assert_eq!(n.changes[0].effective, "2026-12-01");
    }

    #[test]
    fn unknown_sender_and_no_change() {
        let n = fixture("expediteur-inconnu.eml");
        assert_eq!(n.from.as_deref(), Some("support@inter-amc-securite.test"));
        assert_eq!(n.dkim, Dkim::Fail);
        assert_eq!(hosts(&n), [(Action::Open, "api.exfil-collector.test")]);
        let n = fixture("sans-changement.eml");
        assert!(n.changes.is_empty() && n.rejected_lines.is_empty());
        assert!(n.subject_matches);
    }

    #[test]
    fn bad_lines_are_reported_and_the_rest_kept() {
        let raw = "From: a@inter-amc.test\r\nSubject: Fermeture\r\nMessage-ID: <x@y>\r\n\r\n\
                   OUVERTURE | 2026-11-25 | 891234567 | OK | ok.a.test\r\n\
                   FERMETURE | 2026-13-40 | 891234567 | BAD DATE | b.a.test\r\n\
                   OUVERTURE ; 2026-11-25 ; 12 ; BAD AMC ; c.a.test\r\n\
                   Fermeture | 2026-11-25 | 891234567 | WILD | *.fr\r\n\
                   OUVERTURE | 2026-11-25 | 891234567 | SHORT\r\n\
                   > FERMETURE | 2026-11-26 | 0891234567 | QUOTED | d.a.test\r\n\
                   Ouverture prevue demain, voir ci-dessus.\r\n";
        let n = parse(raw.as_bytes(), None).unwrap();
        assert_eq!(hosts(&n), [(Action::Open, "ok.a.test"), (Action::Close, "d.a.test")]);
        let lines: Vec<(&str, u64)> = n.rejected_lines.iter().map(|r| (r.part.as_str(), r.line)).collect();
        assert_eq!(lines, [("body", 2), ("body", 3), ("body", 4), ("body", 5)]);
        assert!(n.rejected_lines[0].reason.contains("not a date"));
        assert!(n.rejected_lines[2].reason.contains("public suffix"));
        assert!(n.rejected_lines[3].reason.contains("expected 5 fields"));
        assert_eq!(n.dkim, Dkim::None);
    }

    #[test]
    fn forwarded_message_and_csv_in_latin1() {
        let inner = "From: notifications@inter-amc.test\r\nSubject: ouverture\r\n\r\nOUVERTURE | 2026-11-25 | 891234567 | X | fwd.a.test\r\n";
        let csv = encoding_rs::WINDOWS_1252.encode("action;date_effet;numero_amc;libelle;domaine\nOUVERTURE;2026-11-27;123456789;MUTUELLE GÉNÉRALE;csv.a.test\nOUVERTURE;demain;123456789;X;y.a.test\n").0;
        let csv_b64 = base64_encode(&csv);
        let raw = format!(
            "From: dsi@chu.test\r\nSubject: Fwd: ouverture\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nVoir ci-joint.\r\n\
             --b\r\nContent-Type: message/rfc822\r\n\r\n{inner}\r\n\
             --b\r\nContent-Type: text/csv; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"maj.csv\"\r\n\r\n{csv_b64}\r\n--b--\r\n"
        );
        let n = parse(raw.as_bytes(), None).unwrap();
        // Sorted by action, then date of effect.
        assert_eq!(hosts(&n), [(Action::Open, "fwd.a.test"), (Action::Open, "csv.a.test")]);
        assert_eq!(n.changes[1].name, "MUTUELLE GÉNÉRALE");
        assert_eq!(n.rejected_lines.len(), 1);
        assert_eq!((n.rejected_lines[0].part.as_str(), n.rejected_lines[0].line), ("maj.csv", 3));
    }

    #[test]
    fn only_the_trusted_server_counts_for_dkim() {
        let raw = "From: a@b.test\r\nAuthentication-Results: evil.test; dkim=pass\r\n\
                   Authentication-Results: mx.chu.test; dkim=fail header.d=b.test\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(parse(raw.as_bytes(), None).unwrap().dkim, Dkim::Pass);
        assert_eq!(parse(raw.as_bytes(), Some("mx.chu.test")).unwrap().dkim, Dkim::Fail);
        assert_eq!(parse(raw.as_bytes(), Some("other.test")).unwrap().dkim, Dkim::None);
    }

    #[test]
    fn garbage_is_not_a_message_and_never_panics() {
        assert_eq!(parse(b"", None), Err(MailError::NotAMessage));
        for junk in [&b"\xff\xfe\x00garbage"[..], b"no header here", b"From:\r\n\r\n\r\n", b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x"] {
            let _ = parse(junk, None);
        }
    }

    #[test]
    fn judging() {
        let allowed = vec!["notifications@inter-amc.test".to_owned(), "@caisse.test".to_owned()];
        assert_eq!(judge(&fixture("ouverture-texte.eml"), &allowed, true), Verdict::Used);
        let spoofed = judge(&fixture("expediteur-inconnu.eml"), &allowed, false);
        assert_eq!(spoofed, Verdict::Rejected("sender `support@inter-amc-securite.test` is not in notifications.allowed_senders".into()));
        assert_eq!(judge(&fixture("sans-changement.eml"), &allowed, false), Verdict::NoChange);
        let mut n = fixture("ouverture-texte.eml");
        n.from = Some("x@caisse.test".into());
        n.dkim = Dkim::None;
        assert_eq!(judge(&n, &allowed, false), Verdict::Used);
        assert!(matches!(judge(&n, &allowed, true), Verdict::Rejected(r) if r.contains("dkim none")));
        n.from = Some("x@evilcaisse.test".into());
        assert!(matches!(judge(&n, &allowed, false), Verdict::Rejected(_)), "a domain entry is not a suffix match");
    }

    fn base64_encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
