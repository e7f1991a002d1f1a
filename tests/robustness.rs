//! Every parser of outside input, fed arbitrary bytes and mutated fixtures: it never panics, and
//! what it accepts still holds its promises (hosts are clean, problems are explained). Bounded:
//! proptest's default of 256 cases per property. The fuzz targets of the packaging issue will go
//! further; these run in every `cargo test`.

mod util;

use proptest::prelude::*;
use rocsync::sources::{annuaire, mail};

fn fixture_bytes(path: &str) -> Vec<u8> {
    std::fs::read(util::fixture(path)).unwrap()
}

/// A fixture with some bytes overwritten, some removed, and possibly cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    (proptest::collection::vec((0..len, any::<u8>()), 0..8), proptest::collection::vec(0..len, 0..4), 0..=len).prop_map(
        move |(flips, cuts, keep)| {
            let mut b = base.clone();
            for (i, v) in flips {
                b[i] = v;
            }
            for i in cuts {
                if i < b.len() {
                    b.remove(i);
                }
            }
            b.truncate(keep.max(1));
            b
        },
    )
}

fn clean(host: &str) -> bool {
    host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'*')
}

fn check_answer(result: Result<annuaire::Answer, annuaire::AnswerError>) -> Result<(), TestCaseError> {
    match result {
        Ok(answer) => {
            for amc in &answer.amcs {
                for s in &amc.services {
                    prop_assert!(clean(s.host.as_str()), "{}", s.host);
                }
                for d in &amc.domains {
                    prop_assert!(clean(d.as_str()), "{d}");
                }
            }
            for r in &answer.rejected {
                prop_assert!(!r.reason.is_empty() && !r.place.is_empty(), "{r:?}");
            }
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #[test]
    fn annuaire_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512),
                                ct in proptest::option::of("(application|text)/(json|xml|html|plain)(; charset=[a-z0-9-]{1,10})?")) {
        check_answer(annuaire::parse(&body, ct.as_deref()))?;
    }

    #[test]
    fn annuaire_mutated_json(body in mutated(fixture_bytes("annuaire/urls-v1.json"))) {
        check_answer(annuaire::parse(&body, None))?;
    }

    #[test]
    fn annuaire_mutated_xml(body in mutated(fixture_bytes("annuaire/urls-v1.xml"))) {
        check_answer(annuaire::parse(&body, Some("text/xml")))?;
    }

    #[test]
    fn mail_mutated(body in prop_oneof![
        mutated(fixture_bytes("mail/ouverture-texte.eml")),
        mutated(fixture_bytes("mail/fermeture-csv.eml")),
        mutated(fixture_bytes("mail/ouverture-html-latin1.eml")),
        proptest::collection::vec(any::<u8>(), 0..512),
    ]) {
        if let Ok(n) = mail::parse(&body, None) {
            for c in &n.changes {
                prop_assert!(clean(c.host.as_str()), "{}", c.host);
            }
            for r in &n.rejected_lines {
                prop_assert!(!r.reason.is_empty() && r.line >= 1, "{r:?}");
            }
        }
    }

    #[test]
    fn config_mutated(text in mutated(std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap())) {
        let text = String::from_utf8_lossy(&text);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        if let Err(e) = rocsync::config::Config::load(&text, "mutated.toml", dir) {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(!p.message.is_empty(), "{p:?}");
            }
        }
    }
}
