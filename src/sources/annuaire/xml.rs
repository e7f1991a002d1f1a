//! The XML answer (contract §1b), bare or inside a SOAP 1.1 envelope.
//!
//! Elements and attributes are matched on their local name, whatever their namespace prefix.
//! quick-xml never fetches external entities nor expands a DTD, so a hostile document cannot
//! make rocsync read a file or blow up memory through entity expansion.

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};

use super::{AnswerError, RawAnswer, RawOrganisme, RawService, Rejected};

/// Which element's text is being collected.
#[derive(Clone, Copy, PartialEq)]
enum Collect {
    Nothing,
    Url,
    Domain,
    FaultString,
}

/// `transcoded`: the bytes are already UTF-8 whatever the declaration says (the caller decoded a
/// UTF-16 byte-order mark).
pub(crate) fn parse(bytes: &[u8], transcoded: bool) -> Result<RawAnswer, AnswerError> {
    let text = if transcoded {
        std::borrow::Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| AnswerError::Xml { line: 1, message: "the document is not valid UTF-8".into() })?)
    } else {
        to_utf8(bytes)?
    };
    let body = text.as_bytes();
    let mut reader = quick_xml::Reader::from_str(&text);
    reader.config_mut().trim_text(true);
    let mut lines = LineCounter::new(body);

    let mut raw = RawAnswer::default();
    let mut in_list = false;
    let mut found_list = false;
    let mut fault: Option<String> = None;
    let mut org: Option<RawOrganisme> = None;
    let mut svc: Option<RawService> = None;
    let mut collect = Collect::Nothing;
    let mut text = String::new();
    let mut buf = Vec::new();

    loop {
        let pos = reader.buffer_position();
        let event = reader.read_event_into(&mut buf).map_err(|e| AnswerError::Xml {
            line: lines.line_at(reader.error_position()),
            message: e.to_string(),
        })?;
        let line = lines.line_at(pos);
        let place = || format!("line {line}");
        match event {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                match (e.local_name().as_ref(), in_list) {
                    ("listeUrls", _) => {
                        found_list = true;
                        in_list = !empty;
                        raw.generated_at = attr(e, "genereLe", &mut raw.rejected, &place);
                        raw.serial = attr(e, "serie", &mut raw.rejected, &place).map(|s| (place(), s));
                    }
                    ("Fault", _) => fault = Some(String::new()),
                    ("faultstring", _) if fault.is_some() => collect = Collect::FaultString,
                    ("organisme", true) if org.is_some() => {
                        // An organism inside another: which AMC its contents belong to cannot be
                        // told; the outer one is rejected whole (held), the inner one too.
                        if let Some(o) = org.as_mut() {
                            o.ambiguous.push(format!("another <organisme> is nested inside it at line {line}"));
                        }
                        raw.rejected.push(Rejected::new(None, "<organisme>", "an <organisme> nested inside another is not read".into(), place()));
                    }
                    ("organisme", true) => {
                        let mut o = RawOrganisme { place: place(), ..RawOrganisme::default() };
                        o.ambiguous.extend(repeated_attributes(e).map(|names| format!("the organism has the attribute(s) {names} more than once")));
                        o.number = attr(e, "numeroAmc", &mut raw.rejected, &place);
                        o.name = attr(e, "libelle", &mut raw.rejected, &place);
                        o.state = attr(e, "etat", &mut raw.rejected, &place);
                        if empty {
                            raw.organismes.push(o);
                        } else {
                            org = Some(o);
                        }
                    }
                    ("service", true) if org.is_some() => {
                        if let (Some(names), Some(o)) = (repeated_attributes(e), org.as_mut()) {
                            o.ambiguous.push(format!("the service at line {line} has the attribute(s) {names} more than once"));
                        }
                        let s = RawService {
                            place: place(),
                            code: attr(e, "code", &mut raw.rejected, &place),
                            url: attr(e, "url", &mut raw.rejected, &place),
                        };
                        match (empty, org.as_mut()) {
                            (true, Some(o)) => o.services.push(s),
                            _ => svc = Some(s),
                        }
                    }
                    ("url", true) if svc.is_some() && !empty => collect = Collect::Url,
                    ("domaine", true) if org.is_some() && !empty => {
                        collect = Collect::Domain;
                        text.clear();
                        if let Some(o) = org.as_mut() {
                            o.domains.push((place(), String::new()));
                        }
                    }
                    _ => {}
                }
                if collect != Collect::Nothing && collect != Collect::Domain {
                    text.clear();
                }
            }
            Event::Text(t) => {
                if collect != Collect::Nothing {
                    text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Event::CData(t) => {
                if collect != Collect::Nothing {
                    text.push_str(&t.xml_content(XmlVersion::Implicit1_0));
                }
            }
            Event::GeneralRef(r) => {
                if collect != Collect::Nothing {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(ch)) => Some(ch.to_string()),
                        _ => resolve_predefined_entity(&r.xml_content(XmlVersion::Implicit1_0))
                            .map(str::to_owned),
                    };
                    match resolved {
                        Some(s) => text.push_str(&s),
                        None => {
                            return Err(AnswerError::Xml {
                                line,
                                message: format!("unknown entity `&{};`", r.xml_content(XmlVersion::Implicit1_0)),
                            });
                        }
                    }
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "listeUrls" => in_list = false,
                "organisme" => raw.organismes.extend(org.take()),
                "service" => {
                    if let (Some(s), Some(o)) = (svc.take(), org.as_mut()) {
                        o.services.push(s);
                    }
                }
                "url" if collect == Collect::Url => {
                    if let Some(s) = svc.as_mut() {
                        if s.url.is_some() {
                            if let Some(o) = org.as_mut() {
                                o.ambiguous.push(format!("the service at {} has more than one URL", s.place));
                            }
                        }
                        s.url = Some(std::mem::take(&mut text));
                    }
                    collect = Collect::Nothing;
                }
                "domaine" if collect == Collect::Domain => {
                    if let Some((_, value)) = org.as_mut().and_then(|o| o.domains.last_mut()) {
                        *value = std::mem::take(&mut text);
                    }
                    collect = Collect::Nothing;
                }
                "faultstring" if collect == Collect::FaultString => {
                    fault = Some(std::mem::take(&mut text));
                    collect = Collect::Nothing;
                }
                _ => {}
            },
            _ => {}
        }
        buf.clear();
    }
    if let Some(fault) = fault {
        return Err(AnswerError::SoapFault(if fault.is_empty() { "(no faultstring)".into() } else { fault }));
    }
    if !found_list {
        return Err(AnswerError::MissingList("the XML answer has no <listeUrls> element".into()));
    }
    Ok(raw)
}

/// The document as UTF-8, decoded by its byte-order mark or the `encoding` of its XML
/// declaration (UTF-8 when it has neither). Undecodable bytes are an error, not U+FFFD: a
/// replaced character inside a host name would be rejected later with a less helpful message.
fn to_utf8(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, AnswerError> {
    let (encoding, skip) = match encoding_rs::Encoding::for_bom(bytes) {
        Some((enc, bom)) => (enc, bom),
        None => (declared_encoding(bytes).unwrap_or(encoding_rs::UTF_8), 0),
    };
    encoding
        .decode_without_bom_handling_and_without_replacement(&bytes[skip..])
        .ok_or_else(|| AnswerError::Xml { line: 1, message: format!("the document is not valid {}", encoding.name()) })
}

/// The `encoding="…"` of `<?xml …?>`, if the document starts with one that names a known
/// encoding.
fn declared_encoding(bytes: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = &bytes[..bytes.len().min(256)];
    let decl = head.strip_prefix(b"<?xml")?;
    let decl = &decl[..decl.windows(2).position(|w| w == b"?>")?];
    let at = decl.windows(8).position(|w| w == b"encoding")?;
    let rest = &decl[at + 8..];
    let rest = &rest[rest.iter().position(|&b| b == b'"' || b == b'\'')? + 1..];
    let label = &rest[..rest.iter().position(|&b| b == b'"' || b == b'\'')?];
    encoding_rs::Encoding::for_label(label)
}

/// Line numbers of byte offsets, counted incrementally: offsets mostly grow, so each byte is
/// scanned about once (recounting from the start for each element made a large answer
/// quadratic).
struct LineCounter<'a> {
    body: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(body: &'a [u8]) -> Self {
        LineCounter { body, pos: 0, line: 1 }
    }

    fn line_at(&mut self, pos: u64) -> usize {
        let pos = (pos as usize).min(self.body.len());
        if pos < self.pos {
            (self.pos, self.line) = (0, 1);
        }
        self.line += self.body[self.pos..pos].iter().filter(|&&b| b == b'\n').count();
        self.pos = pos;
        self.line
    }
}

/// The local names that an element carries more than once (`etat` and `x:etat` alike), or a
/// malformed attribute list: either way the element cannot be read one way only.
fn repeated_attributes(e: &BytesStart<'_>) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut repeated: Vec<String> = Vec::new();
    for a in e.attributes().with_checks(false) {
        let Ok(a) = a else {
            return Some("(malformed)".into());
        };
        let name = a.key.local_name().as_ref().to_owned();
        if seen.contains(&name) {
            let shown = format!("`{}`", crate::text::escape(&name));
            if !repeated.contains(&shown) {
                repeated.push(shown);
            }
        } else {
            seen.push(name);
        }
    }
    (!repeated.is_empty()).then(|| repeated.join(", "))
}

/// An attribute by local name. A value that cannot be decoded is rejected and read as absent.
fn attr(
    e: &BytesStart<'_>,
    name: &str,
    rejected: &mut Vec<Rejected>,
    place: &dyn Fn() -> String,
) -> Option<String> {
    for a in e.attributes() {
        let a = match a {
            Ok(a) => a,
            Err(err) => {
                rejected.push(Rejected {
                    amc: None,
                    value: String::new(),
                    reason: format!("malformed attribute: {err}"),
                    place: place(),
                });
                continue;
            }
        };
        if a.key.local_name().as_ref() == name {
            return match a.normalized_value(XmlVersion::Implicit1_0) {
                Ok(v) => Some(v.into_owned()),
                Err(err) => {
                    rejected.push(Rejected {
                        amc: None,
                        value: String::new(),
                        reason: format!("attribute `{name}`: {err}"),
                        place: place(),
                    });
                    None
                }
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_list_with_entities_and_latin1() {
        let body = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<listeUrls serie=\"9\">\
            <organisme numeroAmc=\"123456789\" libelle=\"MUTUELLE G\u{e9}N\u{c9}RALE &amp; FILS\">\
            <service code=\"IDB\"><url>https://idb.a.test/x?a=1&amp;b=2</url></service>\
            <service code=\"SIM\" url=\"https://sim.a.test/\"/>\
            <domaine> *.api.a.test </domaine></organisme></listeUrls>";
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode(body);
        let raw = parse(&latin1, false).unwrap();
        let org = &raw.organismes[0];
        assert_eq!(org.name.as_deref(), Some("MUTUELLE GéNÉRALE & FILS"));
        assert_eq!(org.services[0].url.as_deref(), Some("https://idb.a.test/x?a=1&b=2"));
        assert_eq!(org.services[1].url.as_deref(), Some("https://sim.a.test/"));
        assert_eq!(org.domains[0].1, "*.api.a.test");
        assert_eq!(raw.serial.as_ref().map(|s| s.1.as_str()), Some("9"));
    }

    #[test]
    fn soap_fault_and_missing_list_are_errors() {
        let fault = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
            <s:Fault><faultcode>s:Server</faultcode><faultstring>Certificat inconnu</faultstring></s:Fault>
            </s:Body></s:Envelope>"#;
        assert_eq!(parse(fault, false).unwrap_err(), AnswerError::SoapFault("Certificat inconnu".into()));
        assert!(matches!(parse(b"<autre/>", false), Err(AnswerError::MissingList(_))));
    }

    #[test]
    fn malformed_xml_names_the_line() {
        let err = parse(b"<listeUrls>\n<organisme numeroAmc=\"1\">\n</listeUrls>", false).unwrap_err();
        assert!(matches!(err, AnswerError::Xml { line: 3, .. }), "{err:?}");
    }
}
