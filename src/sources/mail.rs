//! Inter-AMC notification e-mails (contract §2): one opening or closing of domains per line,
//! in the text (plain or HTML-only, any transfer encoding and charset, quoted in a forward) or
//! in a `;`-separated CSV attachment.
//!
//! Pure: bytes in, a [`Notification`] out. A line that looks like a change but does not parse is
//! kept in `rejected_lines` with its number and reason; prose is ignored. DKIM is read from
//! one `Authentication-Results` header, the receiving server's topmost, and counts only when
//! aligned with the From domain. MIME decoding, charsets and HTML-to-text are `mail-parser`'s;
//! CSV is the `csv` crate's.

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

/// What the receiving server's `Authentication-Results` say of the From domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dkim {
    /// A DKIM signature aligned with the From domain passed, or DMARC passed for it.
    Pass,
    /// Results, but none that vouches for the From domain: a failure, or a pass for another
    /// domain.
    Fail,
    /// No DKIM or DMARC result in the header that counts.
    None,
}

impl Dkim {
    pub fn word(self) -> &'static str {
        match self {
            Dkim::Pass => "pass",
            Dkim::Fail => "fail",
            Dkim::None => "none",
        }
    }
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
    /// Why `dkim` is what it is (which result, in which header): for the verdict's reason.
    pub dkim_detail: String,
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
        return Verdict::Rejected(format!("dkim {} while notifications.require_dkim_pass = true: {}", n.dkim.word(), n.dkim_detail));
    }
    if n.changes.is_empty() {
        return Verdict::NoChange;
    }
    Verdict::Used
}

/// A message as a mailbox hands it over: its bytes, or only its size when it is larger than
/// `notifications.max_message_bytes`. A notification is a few kilobytes, and parsing a message
/// takes several times its size in memory: a larger one is set aside without being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Bytes(Vec<u8>),
    TooLarge { size: u64 },
}

/// Why a message was set aside unread for its size. It is recorded as unreadable, as bytes
/// that are not an e-mail are, so that a person looks at it.
pub fn too_large(size: u64, limit: u64) -> String {
    format!("the message is {size} bytes, more than notifications.max_message_bytes = {limit}: set aside without being read")
}

/// Why bytes are not an e-mail at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    #[error("not an e-mail message (no header could be read)")]
    NotAMessage,
}

/// Reads one message. `trusted_authserv_id`, when set, is the receiving server's name
/// (`mx.chu-exemple.test`): only its topmost `Authentication-Results` header counts, as a
/// sender could have written any other (see `authentication`).
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
    // One sender only: a message `From:` several addresses (or with several `From:` headers)
    // cannot be told to come from the allowed one, so it has no sender.
    let senders = message.header_values("From").count();
    let from = match message.from() {
        Some(list) if senders == 1 && list.iter().count() == 1 => {
            list.first().and_then(|a| a.address()).map(|a| a.trim().to_ascii_lowercase())
        }
        _ => None,
    };
    let from_domain = from.as_deref().and_then(|a| a.rsplit_once('@')).map(|(_, domain)| domain);
    let (dkim, dkim_detail) = authentication(&message, from_domain, trusted_authserv_id);
    let mut found = Found::default();
    read_parts(&message, &mut found, 0);
    // Everything a person will read is escaped here, once, where it enters rocsync.
    let changes: BTreeSet<MailChange> = found
        .changes
        .into_iter()
        .map(|c| MailChange { name: crate::text::excerpt(&c.name, 200), effective: crate::text::excerpt(&c.effective, 40), ..c })
        .collect();
    for r in &mut found.rejected {
        r.text = crate::text::excerpt(&r.text, 200);
        r.part = crate::text::excerpt(&r.part, 80);
    }
    Ok(Notification {
        message_id: message.message_id().map(|m| crate::text::excerpt(m, 200)),
        from: from.map(|f| crate::text::excerpt(&f, 254)),
        subject: subject.map(|s| crate::text::excerpt(&s, 300)),
        subject_matches,
        dkim,
        dkim_detail,
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

/// The columns of the CSV attachment, as its header names them.
const CSV_COLUMNS: [&str; 5] = ["action", "date_effet", "numero_amc", "libelle", "domaine"];

/// Lines of the form `ACTION | date | AMC | name | host` (or `;`). A line is a candidate when it
/// starts with the action word followed by a separator, or when it has the five fields of a
/// change whatever its first word (`MODIFICATION | …` is reported, never skipped in silence);
/// anything else is prose (`Ouverture prévue :`), and so is the CSV header line. Quote marks of
/// a forward (`> `) are stripped.
fn read_lines(text: &str, label: &str, found: &mut Found) {
    for (i, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim_start_matches(|c: char| c == '>' || c.is_whitespace()).trim_end();
        let Some(sep) = line.find(['|', ';']) else { continue };
        let sep_char = line[sep..].chars().next().unwrap_or('|');
        let fields: Vec<&str> = line.split(sep_char).map(str::trim).collect();
        let is_csv_header = fields.iter().map(|f| fold(f)).eq(CSV_COLUMNS);
        let looks_like_a_change = action_word(&line[..sep]).is_some() || (fields.len() == 5 && !is_csv_header);
        if !looks_like_a_change {
            continue;
        }
        match change(&fields) {
            Ok(c) => found.changes.push(c),
            Err(reason) => found.rejected.push(RejectedLine { part: label.to_owned(), line: i as u64 + 1, text: line.to_owned(), reason }),
        }
    }
}

/// The CSV attachment: header `action;date_effet;numero_amc;libelle;domaine`, in any order.
fn read_csv(text: &str, name: &str, found: &mut Found) {
    let mut reader = csv::ReaderBuilder::new().delimiter(b';').flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(fold).collect(),
        Err(e) => {
            found.rejected.push(RejectedLine { part: name.to_owned(), line: 1, text: String::new(), reason: format!("unreadable CSV: {e}") });
            return;
        }
    };
    let positions: Option<Vec<usize>> = CSV_COLUMNS.iter().map(|c| header.iter().position(|h| h == c)).collect();
    let Some(positions) = positions else {
        found.rejected.push(RejectedLine {
            part: name.to_owned(),
            line: 1,
            text: header.join(";"),
            reason: format!("the CSV header must name the columns {}", CSV_COLUMNS.join(";")),
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

/// Judges the receiving server's `Authentication-Results` for the From domain: the verdict,
/// and which result of which header gave it.
///
/// One header counts: the topmost one of the trusted server, since the receiving server adds
/// its own on top and any lower one, even in its name, may have come with the message (RFC 8601
/// §5). Without a trusted server, the topmost header counts, whoever wrote it. In that header, a
/// `dkim=pass` vouches for the sender only when its `header.d` is the From domain or a parent of
/// it that is not a public suffix (relaxed alignment, as DMARC has it), and a `dmarc=pass` only
/// when its `header.from` is the From domain; a `dmarc=fail` for the From domain outweighs both.
fn authentication(message: &Message<'_>, from_domain: Option<&str>, trusted: Option<&str>) -> (Dkim, String) {
    let trusted = trusted.map(|t| t.trim().to_ascii_lowercase());
    let header = message
        .header_values(HeaderName::AuthenticationResults)
        .filter_map(|value| value.as_text())
        .map(|text| clauses(&text.to_ascii_lowercase()))
        .find(|header| trusted.as_deref().is_none_or(|t| authserv_id(header) == t));
    let Some(header) = header else {
        let detail = match &trusted {
            Some(t) => format!("no Authentication-Results header of {t}"),
            None => "no Authentication-Results header".to_owned(),
        };
        return (Dkim::None, detail);
    };
    let place = match &trusted {
        Some(t) => format!("in the topmost Authentication-Results header of {t}"),
        None => format!(
            "in the topmost Authentication-Results header, written by {} (notifications.trusted_authserv_id is not set: \
             only the topmost header counts, whoever wrote it)",
            shown(authserv_id(&header))
        ),
    };
    let from = from_domain.unwrap_or("").trim_end_matches('.');
    let mut pass = None;
    let mut dmarc_fail = None;
    let mut others = Vec::new();
    for clause in header.iter().skip(1) {
        let Some((method, result)) = clause.first().and_then(|t| t.split_once('=')) else { continue };
        match (method, result) {
            (_, "none") => {}
            ("dkim", "pass") => match property(clause, "header.d") {
                Some(d) if aligned(d, from) => {
                    pass.get_or_insert_with(|| format!("dkim=pass header.d={}, aligned with the From domain", shown(d)));
                }
                Some(d) => others.push(format!("dkim=pass header.d={}, not aligned with the From domain {}", shown(d), shown(from))),
                None => others.push("dkim=pass without header.d, no signing domain to align with the From domain".to_owned()),
            },
            ("dmarc", "pass") => match property(clause, "header.from") {
                Some(f) if !from.is_empty() && f == from => {
                    pass.get_or_insert_with(|| format!("dmarc=pass header.from={}", shown(f)));
                }
                f => others.push(format!(
                    "dmarc=pass for {}, not for the From domain {}",
                    f.map_or_else(|| "no header.from".to_owned(), shown),
                    shown(from)
                )),
            },
            ("dmarc", _) if property(clause, "header.from").is_none_or(|f| f == from) => {
                dmarc_fail = Some(format!("dmarc={} for the From domain {}", crate::text::escape(result), shown(from)));
            }
            ("dkim" | "dmarc", _) => others.push(format!("{method}={}", crate::text::escape(result))),
            _ => {}
        }
    }
    if let Some(fail) = dmarc_fail {
        return (Dkim::Fail, format!("{fail} {place}"));
    }
    if let Some(pass) = pass {
        return (Dkim::Pass, format!("{pass} {place}"));
    }
    if others.is_empty() {
        return (Dkim::None, format!("no DKIM or DMARC result {place}"));
    }
    (Dkim::Fail, format!("{} {place}", others.join("; ")))
}

/// Relaxed alignment: `signer` is the From domain or a parent of it, and not a public suffix (a
/// signature by `test` or `co.uk` speaks for nobody in particular).
fn aligned(signer: &str, from: &str) -> bool {
    let signer = signer.trim_end_matches('.');
    !signer.is_empty()
        && (from == signer || from.strip_suffix(signer).is_some_and(|rest| rest.ends_with('.')))
        && !crate::host::is_public_suffix(signer)
}

/// An `Authentication-Results` value as its `;`-separated parts, each as its tokens, with the
/// comments dropped and each quoted string kept whole in its token: a comment or a quoted reason
/// may hold anything, even `header.d=`.
fn clauses(text: &str) -> Vec<Vec<String>> {
    fn flush(clauses: &mut [Vec<String>], token: &mut String) {
        if !token.is_empty() {
            if let Some(last) = clauses.last_mut() {
                last.push(std::mem::take(token));
            }
        }
    }
    let mut clauses = vec![Vec::new()];
    let mut token = String::new();
    let (mut comment_depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in text.chars() {
        if escaped {
            if comment_depth == 0 {
                token.push(c);
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment_depth > 0 => escaped = true,
            '"' if comment_depth == 0 => quoted = !quoted,
            _ if quoted => token.push(c),
            '(' => comment_depth += 1,
            ')' if comment_depth > 0 => comment_depth -= 1,
            _ if comment_depth > 0 => {}
            ';' => {
                flush(&mut clauses, &mut token);
                clauses.push(Vec::new());
            }
            c if c.is_whitespace() => flush(&mut clauses, &mut token),
            c => token.push(c),
        }
    }
    flush(&mut clauses, &mut token);
    clauses
}

/// The server that wrote a header: the first token of its first part.
fn authserv_id(header: &[Vec<String>]) -> &str {
    header.first().and_then(|part| part.first()).map_or("", String::as_str)
}

/// The value of the property `name` (`header.d`, `header.from`) of one result.
fn property<'a>(clause: &'a [String], name: &str) -> Option<&'a str> {
    clause.iter().skip(1).find_map(|t| t.strip_prefix(name)?.strip_prefix('=')).map(|v| v.trim_end_matches('.'))
}

/// Outside text in a reason a person reads: escaped, quoted and cut short.
fn shown(text: &str) -> String {
    format!("`{}`", crate::text::excerpt(text, 100))
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
        let raw = "From: a@b.test\r\nAuthentication-Results: evil.test; dkim=pass header.d=b.test\r\n\
                   Authentication-Results: mx.chu.test; dkim=fail header.d=b.test\r\nSubject: x\r\n\r\nbody\r\n";
        // Without a trusted server, the topmost header counts, whoever wrote it, and the reason
        // says so.
        let untrusted = parse(raw.as_bytes(), None).unwrap();
        assert_eq!(untrusted.dkim, Dkim::Pass);
        assert!(untrusted.dkim_detail.contains("`evil.test`") && untrusted.dkim_detail.contains("trusted_authserv_id is not set"), "{}", untrusted.dkim_detail);
        assert_eq!(parse(raw.as_bytes(), Some("mx.chu.test")).unwrap().dkim, Dkim::Fail);
        assert_eq!(parse(raw.as_bytes(), Some("MX.CHU.TEST")).unwrap().dkim, Dkim::Fail);
        let other = parse(raw.as_bytes(), Some("other.test")).unwrap();
        assert_eq!((other.dkim, other.dkim_detail.as_str()), (Dkim::None, "no Authentication-Results header of other.test"));
    }

    /// A message from `notifications@{from_domain}` with these `Authentication-Results`, topmost
    /// first.
    fn with_results(from_domain: &str, results: &[&str]) -> Notification {
        let headers: String = results.iter().map(|r| format!("Authentication-Results: {r}\r\n")).collect();
        let raw = format!(
            "{headers}From: Inter-AMC <notifications@{from_domain}>\r\nSubject: ouverture\r\nMessage-ID: <m@{from_domain}>\r\n\r\n\
             OUVERTURE | 2026-11-25 | 891234567 | X | idb.a.test\r\n"
        );
        parse(raw.as_bytes(), Some("mx.hopital.test")).unwrap()
    }

    #[test]
    fn a_dkim_pass_for_another_domain_is_not_a_pass() {
        let n = with_results("inter-amc.test", &["mx.hopital.test; dkim=pass header.d=attacker.test"]);
        assert_eq!(n.dkim, Dkim::Fail);
        assert!(n.dkim_detail.contains("header.d=`attacker.test`, not aligned with the From domain `inter-amc.test`"), "{}", n.dkim_detail);
        let allowed = vec!["notifications@inter-amc.test".to_owned()];
        assert!(matches!(judge(&n, &allowed, true), Verdict::Rejected(r) if r.contains("dkim fail") && r.contains("not aligned")));
        // Aligned: the From domain itself, or a parent of it.
        assert_eq!(with_results("inter-amc.test", &["mx.hopital.test; dkim=pass header.d=inter-amc.test"]).dkim, Dkim::Pass);
        assert_eq!(with_results("notif.inter-amc.test", &["mx.hopital.test; dkim=pass header.d=inter-amc.test"]).dkim, Dkim::Pass);
        assert_eq!(judge(&with_results("inter-amc.test", &["mx.hopital.test; dkim=pass header.d=inter-amc.test."]), &allowed, true), Verdict::Used);
        // Not aligned: a child, a look-alike suffix, a public suffix, no signing domain.
        for d in ["notif.inter-amc.test", "amc.test", "r-amc.test", "test", "\"\""] {
            let results = format!("mx.hopital.test; dkim=pass header.d={d}");
            let n = with_results("inter-amc.test", &[results.as_str()]);
            assert_eq!(n.dkim, Dkim::Fail, "header.d={d}: {}", n.dkim_detail);
        }
        assert_eq!(with_results("inter-amc.test", &["mx.hopital.test; dkim=pass"]).dkim, Dkim::Fail);
        // A comment or a quoted reason cannot smuggle a signing domain in.
        for r in [
            "mx.hopital.test; dkim=pass (header.d=inter-amc.test) header.d=attacker.test",
            "mx.hopital.test; dkim=pass reason=\"header.d=inter-amc.test; x\" header.d=attacker.test",
        ] {
            let n = with_results("inter-amc.test", &[r]);
            assert_eq!(n.dkim, Dkim::Fail, "{r}: {}", n.dkim_detail);
        }
        // One aligned signature among others passes, as DMARC has it.
        let n = with_results("inter-amc.test", &["mx.hopital.test; dkim=pass header.d=attacker.test; dkim=pass header.d=inter-amc.test"]);
        assert_eq!(n.dkim, Dkim::Pass);
    }

    #[test]
    fn dmarc_counts_only_for_the_from_domain() {
        let pass = with_results("inter-amc.test", &["mx.hopital.test; dkim=none; dmarc=pass header.from=inter-amc.test"]);
        assert_eq!(pass.dkim, Dkim::Pass, "{}", pass.dkim_detail);
        let other = with_results("inter-amc.test", &["mx.hopital.test; dmarc=pass header.from=attacker.test"]);
        assert_eq!(other.dkim, Dkim::Fail, "{}", other.dkim_detail);
        let fail = with_results("inter-amc.test", &["mx.hopital.test; dkim=pass header.d=inter-amc.test; dmarc=fail header.from=inter-amc.test"]);
        assert_eq!(fail.dkim, Dkim::Fail, "DMARC's failure for the From domain outweighs: {}", fail.dkim_detail);
        let nothing = with_results("inter-amc.test", &["mx.hopital.test; spf=pass smtp.mailfrom=inter-amc.test"]);
        assert_eq!(nothing.dkim, Dkim::None, "{}", nothing.dkim_detail);
    }

    #[test]
    fn a_lower_pass_does_not_override_the_trusted_servers_fail() {
        // The receiving server's own header is on top; the one below came with the message.
        let n = with_results(
            "inter-amc.test",
            &["mx.hopital.test; dkim=fail header.d=inter-amc.test", "mx.hopital.test; dkim=pass header.d=inter-amc.test"],
        );
        assert_eq!(n.dkim, Dkim::Fail, "{}", n.dkim_detail);
        assert!(n.dkim_detail.contains("topmost Authentication-Results header of mx.hopital.test"), "{}", n.dkim_detail);
        // Another server's header above the trusted one is skipped, not counted.
        let n = with_results(
            "inter-amc.test",
            &["relay.test; dkim=pass header.d=inter-amc.test", "mx.hopital.test; dkim=fail header.d=inter-amc.test"],
        );
        assert_eq!(n.dkim, Dkim::Fail);
        // Without a trusted server, the same: only the topmost header counts.
        let raw = "From: notifications@inter-amc.test\r\n\
                   Authentication-Results: mx.hopital.test; dkim=fail header.d=inter-amc.test\r\n\
                   Authentication-Results: mx.hopital.test; dkim=pass header.d=inter-amc.test\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(parse(raw.as_bytes(), None).unwrap().dkim, Dkim::Fail);
    }

    #[test]
    fn authentication_results_are_read_through_comments_quotes_and_folding() {
        let c = clauses("mx.test 1; dkim=pass (good (nested) signature) header.d=a.test\r\n header.s=sel; dmarc=fail reason=\"a \\\" b\"");
        assert_eq!(authserv_id(&c), "mx.test");
        assert_eq!(c[1], ["dkim=pass", "header.d=a.test", "header.s=sel"]);
        assert_eq!(c[2], ["dmarc=fail", "reason=a \" b"]);
        assert_eq!(property(&c[1], "header.d"), Some("a.test"));
        assert_eq!(property(&c[1], "header"), None);
    }

    #[test]
    fn five_field_lines_with_an_unknown_action_are_rejected_not_skipped() {
        let raw = "From: a@inter-amc.test\r\nSubject: ouverture\r\nMessage-ID: <u@y>\r\n\r\n\
                   Ouverture prevue :\r\n\
                   MODIFICATION | 2026-11-25 | 891234567 | X | mod.a.test\r\n\
                   OUVERTURE | 2026-11-25 | 891234567 | OK | ok.a.test\r\n\
                   Ouvertures ; 2026-11-25 ; 891234567 ; X ; typo.a.test\r\n\
                   action;date_effet;numero_amc;libelle;domaine\r\n\
                   Merci; bonne journee | a bientot\r\n";
        let n = parse(raw.as_bytes(), None).unwrap();
        assert_eq!(hosts(&n), [(Action::Open, "ok.a.test")]);
        let lines: Vec<(u64, &str)> = n.rejected_lines.iter().map(|r| (r.line, r.reason.as_str())).collect();
        assert_eq!(
            lines,
            [(2, "`MODIFICATION` is neither OUVERTURE nor FERMETURE"), (4, "`Ouvertures` is neither OUVERTURE nor FERMETURE")]
        );
        assert_eq!(n.rejected_lines[0].text, "MODIFICATION | 2026-11-25 | 891234567 | X | mod.a.test");
    }

    #[test]
    fn the_reason_for_a_message_over_the_limit_names_size_and_limit() {
        let reason = too_large(52_000, 10_000);
        assert!(reason.contains("52000 bytes") && reason.contains("max_message_bytes = 10000"), "{reason}");
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
