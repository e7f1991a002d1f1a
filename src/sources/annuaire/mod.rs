//! What the Annuaire AMC's "available URLs" web service answers, and how rocsync reads it.
//!
//! Each wire format (`json`, `xml`) only turns bytes into a [`RawAnswer`] of plain strings with
//! their place in the document; [`validate`] then applies the contract's rules once for every
//! format. A value that fails validation is kept in [`Answer::rejected`] with its reason; only
//! a document that is not an annuaire answer at all is an error.

mod json;
mod xml;



use crate::amc::{AmcNumber, AmcState};
use crate::host::Host;

// The answer's model is a core type (the catalogue is built from it); the parsers fill it.
pub use crate::answer::{Amc, Answer, Format, Rejected, Service};

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
    /// A byte-order mark announces an encoding that the bytes do not follow.
    #[error("it starts with a {0} byte-order mark but is not valid {0}")]
    Encoding(&'static str),
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
    /// Why the organism cannot be read one way only (a member given twice): it is rejected whole.
    ambiguous: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct RawService {
    place: String,
    code: Option<String>,
    url: Option<String>,
}

/// Reads an answer. `content_type` is the HTTP header when there was one; without it, or when it
/// is generic (`text/plain`, `application/octet-stream`), the body is sniffed.
///
/// A UTF-8 byte-order mark is skipped; a UTF-16 one (either byte order) makes the body be
/// transcoded to UTF-8 first, for JSON and XML alike. Without a mark, JSON must be UTF-8 and XML
/// follows its declaration.
pub fn parse(body: &[u8], content_type: Option<&str>) -> Result<Answer, AnswerError> {
    let (body, transcoded) = decode_bom(body)?;
    let body = &body[..];
    let start = skip_space(body);
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
            xml::parse(body, transcoded)?
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

/// The body without its byte-order mark, as UTF-8 when the mark says UTF-16; `true` when it was
/// transcoded (the XML declaration's `encoding` then no longer applies).
fn decode_bom(body: &[u8]) -> Result<(std::borrow::Cow<'_, [u8]>, bool), AnswerError> {
    match encoding_rs::Encoding::for_bom(body) {
        None => Ok((std::borrow::Cow::Borrowed(body), false)),
        Some((enc, len)) if enc == encoding_rs::UTF_8 => Ok((std::borrow::Cow::Borrowed(&body[len..]), false)),
        Some((enc, len)) => enc
            .decode_without_bom_handling_and_without_replacement(&body[len..])
            .map(|text| (std::borrow::Cow::Owned(text.into_owned().into_bytes()), true))
            .ok_or(AnswerError::Encoding(enc.name())),
    }
}

fn skip_space(body: &[u8]) -> &[u8] {
    let first = body.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(body.len());
    &body[first..]
}

/// The first bytes of a body, printable, for an error message.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(80)]);
    let more = if body.len() > 80 { "…" } else { "" };
    format!("\"{}{more}\"", crate::text::escape(text.trim()))
}

/// Applies the contract to what a format parser found. Never fails: what is wrong is rejected
/// value by value, or organism by organism when an organism cannot be read one way only.
fn validate(format: Format, raw: RawAnswer) -> Answer {
    let mut rejected = raw.rejected;
    let mut warnings = Vec::new();
    let mut held = Vec::new();
    let serial = raw.serial.and_then(|(place, text)| match text.trim().parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            rejected.push(Rejected::new(None, &text, "serial is not a whole number".into(), place));
            None
        }
    });
    let numbers: Vec<Option<AmcNumber>> = raw
        .organismes
        .iter()
        .map(|org| org.number.as_deref().map(str::trim).and_then(|n| AmcNumber::parse(n).ok()))
        .collect();
    let mut amcs = Vec::new();
    for (org, parsed) in raw.organismes.into_iter().zip(&numbers) {
        let number_text = org.number.clone().unwrap_or_default();
        let reject = |value: &str, reason: String, place: &str| Rejected::new(org.number.as_deref(), value, reason, place.to_owned());
        let number = match (parsed, org.number.as_deref()) {
            (Some(n), _) => n.clone(),
            (None, Some(text)) => {
                let e = AmcNumber::parse(text.trim()).err().map(|e| e.to_string()).unwrap_or_default();
                rejected.push(reject(&number_text, format!("{e}; organism skipped"), &org.place));
                continue;
            }
            (None, None) => {
                rejected.push(reject("", "organism without an AMC number; skipped".into(), &org.place));
                continue;
            }
        };
        // The same AMC twice (`789123456` and `0789123456` are one AMC): which entry is right
        // cannot be told, so neither is read.
        let listed = numbers.iter().filter(|n| n.as_ref() == Some(&number)).count();
        let mut ambiguous = org.ambiguous.clone();
        if listed > 1 {
            ambiguous.push(format!("AMC {number} is listed {listed} times in the answer"));
        }
        let state_text = org.state.as_deref().map(str::trim).unwrap_or_default();
        if ambiguous.is_empty() && state_text.is_empty() {
            ambiguous.push("the organism has no `etat`".into());
        }
        if !ambiguous.is_empty() {
            rejected.push(reject(
                &number_text,
                format!("{}: the organism is rejected whole, nothing of it is opened and what is in force for it stays", ambiguous.join("; ")),
                &org.place,
            ));
            if !held.contains(&number) {
                held.push(number);
            }
            continue;
        }
        let state = match AmcState::parse(state_text) {
            AmcState::Unknown(raw) => AmcState::Unknown(crate::text::excerpt(&raw, 60)),
            known => known,
        };
        if let AmcState::Unknown(raw) = &state {
            warnings.push(format!(
                "AMC {number}: unknown state \"{raw}\" at {}; treated as cercle_de_confiance",
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
            if !is_service_code(code) {
                rejected.push(reject(
                    code,
                    format!("service code is not a code (letters, digits and `_`, at most {MAX_CODE} characters)"),
                    &svc.place,
                ));
                continue;
            }
            match service_endpoint(url_text) {
                Ok((host, port)) => services.push(Service {
                    code: code.to_ascii_uppercase(),
                    host,
                    port,
                    url: crate::text::escaped(url_text),
                }),
                Err(reason) => rejected.push(reject(url_text, format!("service {code}: {reason}"), &svc.place)),
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
            name: org.name.as_deref().map(|n| crate::text::escaped(n.trim())).unwrap_or_default(),
            state,
            services,
            domains,
        });
    }
    let generated_at = raw.generated_at.map(|g| crate::text::excerpt(&g, 64));
    Answer { format, serial, generated_at, amcs, rejected, held, warnings }
}

/// Longest service code accepted.
const MAX_CODE: usize = 16;

/// `IDB`, `SIM`, `CLC`, `DEL` or another code: letters, digits and `_`. A code is shown in plans
/// and written into export comments, so nothing else may pass.
pub fn is_service_code(code: &str) -> bool {
    (1..=MAX_CODE).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The host and port a service URL needs opened.
fn service_endpoint(text: &str) -> Result<(Host, u16), String> {
    if text.is_empty() {
        return Err("no URL".into());
    }
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    // AMC services are SOAP over TLS: a plain `http` URL would open port 80 for nothing.
    if url.scheme() != "https" {
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
    if port == 0 {
        return Err("port 0 cannot be opened".into());
    }
    // An AMC service is HTTPS: on 443, or on an unprivileged port (8443). A system port (22,
    // 25, 53, …) would open SSH or mail to that host, and in managed nftables mode start
    // filtering that port for everyone.
    if port < 1024 && port != 443 {
        return Err(format!("port {port} is a system port other than 443: not an HTTPS service port"));
    }
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
                          {"code": "SIM", "url": "http://sim.ok.test/"},
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
                ("http://sim.ok.test/", "organismes[1].services[1]"),
                ("https://198.18.0.1/clc", "organismes[1].services[2]"),
                ("https://nocode.ok.test/", "organismes[1].services[3]"),
                ("*.test", "organismes[1].domaines[0]"),
                ("bad host.test", "organismes[1].domaines[1]"),
            ]
        );
        assert!(a.rejected[5].reason.contains("public suffix"), "{:?}", a.rejected[5]);
        assert_eq!(a.warnings.len(), 1);
    }

    #[test]
    fn service_codes_port_zero_and_system_ports_are_validated() {
        let body = br#"{"organismes": [{"numero_amc": "123456789", "libelle": "OK", "etat": "cercle_de_confiance",
             "services": [{"code": "IDB\n}\nflush ruleset\n#", "url": "https://idb.ok.test/"},
                          {"code": "SIM", "url": "https://idb0.ok.test:0/"},
                          {"code": "Autre_2", "url": "https://autre.ok.test/"},
                          {"code": "TOOLONGCODE_ABCDEFGH", "url": "https://long.ok.test/"},
                          {"code": "SSH", "url": "https://ssh.ok.test:22/"},
                          {"code": "CLC", "url": "https://clc.ok.test:8443/"}]}]}"#;
        let a = parse(body, None).unwrap();
        let codes: Vec<&str> = a.amcs[0].services.iter().map(|s| s.code.as_str()).collect();
        assert_eq!(codes, ["AUTRE_2", "CLC"]);
        assert_eq!(a.rejected.len(), 4, "{:?}", a.rejected);
        assert!(a.rejected[3].reason.contains("port 22 is a system port"), "{:?}", a.rejected[3]);
        assert!(a.rejected[0].reason.contains("service code") && a.rejected[0].value == "IDB\\n}\\nflush ruleset\\n#", "{:?}", a.rejected[0]);
        assert!(a.rejected[1].reason.contains("port 0"), "{:?}", a.rejected[1]);
    }

    #[test]
    fn names_and_rejected_values_are_escaped_once_where_they_enter() {
        let body = "{\"organismes\": [{\"numero_amc\": \"123456789\", \"etat\": \"cercle_de_confiance\",
            \"libelle\": \"A\\n    + faux.test  tcp/443\\u001b[8m\\u202e\",
            \"domaines\": [\"bad\\nhost.test\"]}]}";
        let a = parse(body.as_bytes(), None).unwrap();
        let name = &a.amcs[0].name;
        assert_eq!(name, "A\\n    + faux.test  tcp/443\\u{1b}[8m\\u{202e}");
        assert!(!a.rejected[0].value.contains('\n'), "{:?}", a.rejected[0]);
    }

    #[test]
    fn byte_order_marks_are_accepted_and_utf16_is_transcoded() {
        let json = fixture("urls-v1.json");
        let with_bom = [b"\xef\xbb\xbf".as_slice(), &json].concat();
        assert_eq!(parse(&with_bom, Some("application/json")).unwrap().amcs.len(), 9);
        assert_eq!(parse(&with_bom, None).unwrap().amcs.len(), 9);
        let xml = String::from_utf8(fixture("urls-v1.xml")).unwrap().replace("encoding=\"UTF-8\"", "encoding=\"UTF-16\"");
        for (bom, big_endian) in [([0xffu8, 0xfe], false), ([0xfe, 0xff], true)] {
            let mut body = bom.to_vec();
            for unit in xml.encode_utf16() {
                body.extend(if big_endian { unit.to_be_bytes() } else { unit.to_le_bytes() });
            }
            let a = parse(&body, Some("text/xml")).unwrap_or_else(|e| panic!("big endian {big_endian}: {e}"));
            assert_eq!(a.amcs.len(), 9);
            assert_eq!(parse(&body, None).unwrap().amcs.len(), 9);
        }
        let json16: Vec<u8> = [0xff, 0xfe].into_iter().chain(String::from_utf8(json).unwrap().encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(parse(&json16, None).unwrap().amcs.len(), 9);
        // A mark the bytes do not follow: a clear error.
        assert_eq!(parse(&[0xff, 0xfe, 0x00, 0xd8], None).unwrap_err(), AnswerError::Encoding("UTF-16LE"));
    }
}
