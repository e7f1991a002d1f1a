//! What the Annuaire AMC's "available URLs" web service answers, and how rocsync reads it.
//!
//! Each wire format (`json`, `xml`) only turns bytes into a [`RawAnswer`] of plain strings with
//! their place in the document; [`validate`] then applies the contract's rules once for every
//! format. A value that fails validation is kept in [`Answer::rejected`] with its reason; only
//! a document that is not an annuaire answer at all is an error.

mod json;
mod xml;

use std::fmt;

use serde::Serialize;

use crate::amc::{AmcNumber, AmcState};
use crate::host::Host;

/// The wire format of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Xml,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Xml => "xml",
        })
    }
}

/// An annuaire answer after validation.
#[derive(Debug, Clone)]
pub struct Answer {
    pub format: Format,
    /// The annuaire's `serie`: a number that grows with each publication.
    pub serial: Option<u64>,
    /// The annuaire's `genere_le`, as written.
    pub generated_at: Option<String>,
    pub amcs: Vec<Amc>,
    /// Values that could not be understood, with why.
    pub rejected: Vec<Rejected>,
    /// Things kept but worth a look (an unknown `etat`).
    pub warnings: Vec<String>,
}

/// One AMC as the annuaire lists it.
#[derive(Debug, Clone)]
pub struct Amc {
    pub number: AmcNumber,
    pub name: String,
    pub state: AmcState,
    pub services: Vec<Service>,
    /// Extra hosts of `domaines`, allowed on port 443.
    pub domains: Vec<Host>,
}

/// One web service of an AMC: its code (`IDB`, `SIM`, `CLC`, `DEL` or other) and where it is.
#[derive(Debug, Clone)]
pub struct Service {
    pub code: String,
    pub host: Host,
    pub port: u16,
    /// The full URL, for display only.
    pub url: String,
}

/// A value of the answer that rocsync did not accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The AMC number as written, when the value belongs to an AMC.
    pub amc: Option<String>,
    pub value: String,
    pub reason: String,
    /// Where in the document: a JSON path or an XML line.
    pub place: String,
}

/// Why a document is not an annuaire answer. The caller adds which input it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// Nothing but white space.
    #[error("it is empty")]
    Empty,
    /// An HTML page (an outage or maintenance page, a login portal).
    #[error("it is an HTML page (an error or maintenance page?); it begins: {0}")]
    Html(String),
    /// The declared content type is neither JSON nor XML.
    #[error("content type `{content_type}` is neither JSON nor XML; the body begins: {start}")]
    ContentType { content_type: String, start: String },
    /// Neither JSON nor XML by its first byte.
    #[error("it is neither JSON nor XML; it begins: {0}")]
    Unrecognised(String),
    /// JSON that does not parse.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    /// XML that does not parse.
    #[error("invalid XML at line {line}: {message}")]
    Xml { line: usize, message: String },
    /// A SOAP fault instead of a list.
    #[error("it is a SOAP fault: {0}")]
    SoapFault(String),
    /// The document parses but lacks the list of organisms (a missing list is never an empty one).
    #[error("{0}")]
    MissingList(String),
}

/// What a format parser yields: strings as found, each with its place.
#[derive(Debug, Default)]
pub(crate) struct RawAnswer {
    serial: Option<(String, String)>,
    generated_at: Option<String>,
    organismes: Vec<RawOrganisme>,
    /// Problems the format parser found in a value it then skipped.
    rejected: Vec<Rejected>,
}

#[derive(Debug, Default)]
pub(crate) struct RawOrganisme {
    place: String,
    number: Option<String>,
    name: Option<String>,
    state: Option<String>,
    services: Vec<RawService>,
    domains: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct RawService {
    place: String,
    code: Option<String>,
    url: Option<String>,
}

/// Reads an answer. `content_type` is the HTTP header when there was one; without it, or when it
/// is generic (`text/plain`, `application/octet-stream`), the body is sniffed.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Answer, AnswerError> {
    let start = skip_bom_and_space(body);
    if start.is_empty() {
        return Err(AnswerError::Empty);
    }
    let format = match content_type.map(media_type) {
        None => sniff(start)?,
        Some(t) if matches!(t.as_str(), "" | "text/plain" | "application/octet-stream") => {
            sniff(start)?
        }
        Some(t) if t == "application/json" || t.ends_with("+json") => Format::Json,
        Some(t) if t == "application/xml" || t == "text/xml" || t.ends_with("+xml") => Format::Xml,
        Some(t) if t == "text/html" => return Err(AnswerError::Html(snippet(start))),
        Some(content_type) => {
            return Err(AnswerError::ContentType { content_type, start: snippet(start) });
        }
    };
    let raw = match format {
        Format::Json => json::parse(body)?,
        Format::Xml => {
            if looks_like_html(start) {
                return Err(AnswerError::Html(snippet(start)));
            }
            xml::parse(body)?
        }
    };
    Ok(validate(format, raw))
}

/// `Application/JSON; charset=utf-8` → `application/json`.
fn media_type(header: &str) -> String {
    header.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

fn sniff(start: &[u8]) -> Result<Format, AnswerError> {
    match start[0] {
        b'{' | b'[' => Ok(Format::Json),
        b'<' if looks_like_html(start) => Err(AnswerError::Html(snippet(start))),
        b'<' => Ok(Format::Xml),
        _ => Err(AnswerError::Unrecognised(snippet(start))),
    }
}

fn looks_like_html(start: &[u8]) -> bool {
    let head: Vec<u8> = start.iter().take(64).map(u8::to_ascii_lowercase).collect();
    head.starts_with(b"<!doctype html") || head.starts_with(b"<html")
}

fn skip_bom_and_space(body: &[u8]) -> &[u8] {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let first = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    &body[first..]
}

/// The first bytes of a body, printable, for an error message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let mut out: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>();
    if body.len() > 80 {
        out.push('…');
    }
    format!("{:?}", out.trim())
}

/// Applies the contract to what a format parser found. Never fails: what is wrong is rejected
/// value by value.
fn validate(format: Format, raw: RawAnswer) -> Answer {
    let mut rejected = raw.rejected;
    let mut warnings = Vec::new();
    let serial = raw.serial.and_then(|(place, text)| match text.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            rejected.push(Rejected {
                amc: None,
                value: text,
                reason: "serial is not a whole number".into(),
                place,
            });
            None
        }
    });
    let mut amcs = Vec::new();
    for org in raw.organismes {
        let number_text = org.number.clone().unwrap_or_default();
        let reject = |value: &str, reason: String, place: &str| Rejected {
            amc: org.number.clone(),
            value: value.to_owned(),
            reason,
            place: place.to_owned(),
        };
        let number = match org.number.as_deref().map(str::trim).map(AmcNumber::parse) {
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                rejected.push(reject(&number_text, format!("{e}; organism skipped"), &org.place));
                continue;
            }
            None => {
                rejected.push(reject("", "organism without an AMC number; skipped".into(), &org.place));
                continue;
            }
        };
        let state = AmcState::parse(org.state.as_deref().map(str::trim).unwrap_or_default());
        if let AmcState::Unknown(raw) = &state {
            warnings.push(format!(
                "AMC {number}: unknown state {raw:?} at {}; treated as cercle_de_confiance",
                org.place
            ));
        }
        let mut services = Vec::new();
        for svc in &org.services {
            let code = svc.code.as_deref().map(str::trim).unwrap_or_default();
            let url_text = svc.url.as_deref().map(str::trim).unwrap_or_default();
            if code.is_empty() {
                rejected.push(reject(url_text, "service without a code".into(), &svc.place));
                continue;
            }
            match service_endpoint(url_text) {
                Ok((host, port)) => services.push(Service {
                    code: code.to_ascii_uppercase(),
                    host,
                    port,
                    url: url_text.to_owned(),
                }),
                Err(reason) => {
                    rejected.push(reject(url_text, format!("service {code}: {reason}"), &svc.place))
                }
            }
        }
        let mut domains = Vec::new();
        for (place, text) in &org.domains {
            match Host::parse(text.trim()) {
                Ok(host) => domains.push(host),
                Err(e) => rejected.push(reject(text, e.to_string(), place)),
            }
        }
        amcs.push(Amc {
            number,
            name: org.name.map(|n| n.trim().to_owned()).unwrap_or_default(),
            state,
            services,
            domains,
        });
    }
    Answer { format, serial, generated_at: raw.generated_at, amcs, rejected, warnings }
}

/// The host and port a service URL needs opened.
fn service_endpoint(text: &str) -> Result<(Host, u16), String> {
    if text.is_empty() {
        return Err("no URL".into());
    }
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("scheme `{}` is not https", url.scheme()));
    }
    let host = match url.host() {
        Some(url::Host::Domain(name)) => Host::parse(name).map_err(|e| e.to_string())?,
        Some(_) => return Err("the URL names an IP address, not a host".into()),
        None => return Err("the URL has no host".into()),
    };
    if host.is_wildcard() {
        return Err("a service URL cannot name a wildcard".into());
    }
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/annuaire/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn json_and_xml_fixtures_say_the_same() {
        let j = parse(&fixture("urls-v1.json"), Some("application/json")).unwrap();
        let x = parse(&fixture("urls-v1.xml"), Some("text/xml; charset=UTF-8")).unwrap();
        assert_eq!((j.format, x.format), (Format::Json, Format::Xml));
        assert_eq!(j.serial, Some(4182));
        assert_eq!(x.serial, Some(4182));
        assert_eq!(j.generated_at, x.generated_at);
        assert_eq!(j.amcs.len(), 9);
        let summary = |a: &Answer| {
            a.amcs
                .iter()
                .map(|amc| {
                    let svc: Vec<_> =
                        amc.services.iter().map(|s| format!("{}={}:{}", s.code, s.host, s.port)).collect();
                    format!("{} {} {:?} {:?} {:?}", amc.number, amc.name, amc.state, svc, amc.domains)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&j), summary(&x));
        assert!(j.rejected.is_empty() && x.rejected.is_empty());
    }

    #[test]
    fn sniffs_without_a_content_type() {
        assert_eq!(parse(&fixture("urls-v1.json"), None).unwrap().format, Format::Json);
        assert_eq!(parse(&fixture("urls-v1.xml"), Some("application/octet-stream")).unwrap().format, Format::Xml);
    }

    #[test]
    fn html_and_empty_bodies_are_not_answers() {
        let html = fixture("error-503.html");
        assert!(matches!(parse(&html, None), Err(AnswerError::Html(s)) if s.contains("503")));
        assert!(matches!(parse(&html, Some("text/html")), Err(AnswerError::Html(_))));
        assert!(matches!(parse(&html, Some("application/xml")), Err(AnswerError::Html(_))));
        assert_eq!(parse(b"  \n", None).unwrap_err(), AnswerError::Empty);
        assert!(matches!(parse(b"hello", None), Err(AnswerError::Unrecognised(_))));
        assert!(matches!(
            parse(b"{}", Some("image/png")),
            Err(AnswerError::ContentType { .. })
        ));
    }

    #[test]
    fn bad_values_are_rejected_one_by_one() {
        let body = br#"{"serie": 7, "organismes": [
            {"numero_amc": "12AB", "libelle": "X", "services": []},
            {"numero_amc": "123456789", "libelle": "OK", "etat": "nouvel_etat",
             "services": [{"code": "IDB", "url": "https://idb.ok.test/x"},
                          {"code": "SIM", "url": "ftp://sim.ok.test/"},
                          {"code": "CLC", "url": "https://198.18.0.1/clc"},
                          {"url": "https://nocode.ok.test/"}],
             "domaines": ["*.test", "bad host.test", "good.ok.test", 42]}]}"#;
        let a = parse(body, None).unwrap();
        assert_eq!(a.amcs.len(), 1);
        let amc = &a.amcs[0];
        assert_eq!(amc.state, AmcState::Unknown("nouvel_etat".into()));
        assert_eq!(amc.services.len(), 1);
        assert_eq!(amc.domains, vec![Host::parse("good.ok.test").unwrap()]);
        let reasons: Vec<_> = a.rejected.iter().map(|r| (r.value.as_str(), r.place.as_str())).collect();
        assert_eq!(
            reasons,
            vec![
                ("42", "organismes[1].domaines[3]"),
                ("12AB", "organismes[0]"),
                ("ftp://sim.ok.test/", "organismes[1].services[1]"),
                ("https://198.18.0.1/clc", "organismes[1].services[2]"),
                ("https://nocode.ok.test/", "organismes[1].services[3]"),
                ("*.test", "organismes[1].domaines[0]"),
                ("bad host.test", "organismes[1].domaines[1]"),
            ]
        );
        assert!(a.rejected[5].reason.contains("public suffix"), "{:?}", a.rejected[5]);
        assert_eq!(a.warnings.len(), 1);
    }
}
