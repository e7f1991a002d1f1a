//! The pure pipeline at scale: parse an annuaire answer of 2,000 AMCs and 5,000 hosts (JSON and
//! XML), build the desired state, diff it against a state that differs by 10 hosts, and render
//! the Squid ACL. Run with `cargo bench --bench pipeline`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rocsync::catalogue::{Catalogue, Policy, desired};
use rocsync::plan::HostDiff;
use rocsync::sinks::squid;
use rocsync::sources::annuaire;

/// An answer of `amcs` AMCs and about `hosts` distinct hosts; every 7th AMC shares the hosts of
/// the one before (a tiers-payant operator). `shift` renames 10 hosts, to make a diff.
fn answer_json(amcs: usize, hosts: usize, shift: usize) -> String {
    let per_amc = hosts.div_ceil(amcs);
    let mut orgs = Vec::new();
    for a in 0..amcs {
        let owner = if a % 7 == 6 { a - 1 } else { a };
        let services: Vec<String> = (0..per_amc)
            .map(|h| {
                let n = owner * per_amc + h;
                let tag = if n < 10 { format!("v{shift}") } else { String::new() };
                format!(r#"{{"code": "IDB", "url": "https://idb{h}{tag}.amc{owner}.test/ws/idb"}}"#)
            })
            .collect();
        orgs.push(format!(
            r#"{{"numero_amc": "{:09}", "libelle": "MUTUELLE {a}", "etat": "cercle_de_confiance", "services": [{}], "domaines": ["*.api.amc{owner}.test"]}}"#,
            100_000_000 + a,
            services.join(",")
        ));
    }
    format!(r#"{{"format": "annuaire-urls/1", "serie": 1, "organismes": [{}]}}"#, orgs.join(","))
}

fn answer_xml(amcs: usize, hosts: usize) -> String {
    let per_amc = hosts.div_ceil(amcs);
    let mut body = String::from(r#"<listeUrls xmlns="urn:annuaire-amc:urls:1" serie="1">"#);
    for a in 0..amcs {
        body.push_str(&format!(r#"<organisme numeroAmc="{:09}" libelle="MUTUELLE {a}" etat="cercle_de_confiance">"#, 100_000_000 + a));
        for h in 0..per_amc {
            body.push_str(&format!(r#"<service code="IDB"><url>https://idb{h}.amc{a}.test/ws/idb</url></service>"#));
        }
        body.push_str(&format!("<domaine>*.api.amc{a}.test</domaine></organisme>"));
    }
    body + "</listeUrls>"
}

fn pipeline(c: &mut Criterion) {
    let (amcs, hosts) = (2_000, 5_000);
    let json = answer_json(amcs, hosts, 0);
    let xml = answer_xml(amcs, hosts);
    let policy = Policy::default();
    c.bench_function("parse JSON answer, 2000 AMCs", |b| b.iter(|| annuaire::parse(black_box(json.as_bytes()), None).unwrap()));
    c.bench_function("parse XML answer, 2000 AMCs", |b| b.iter(|| annuaire::parse(black_box(xml.as_bytes()), None).unwrap()));
    let answer = annuaire::parse(json.as_bytes(), None).unwrap();
    c.bench_function("catalogue + desired state", |b| {
        b.iter(|| desired(&Catalogue::from_answer(black_box(&answer)), &policy))
    });
    let before = desired(&Catalogue::from_answer(&answer), &policy);
    let after = desired(&Catalogue::from_answer(&annuaire::parse(answer_json(amcs, hosts, 1).as_bytes(), None).unwrap()), &policy);
    assert_eq!(HostDiff::between(&before, &after).unwrap().changes.len(), 20);
    c.bench_function("diff, 10 of ~7000 hosts renamed", |b| b.iter(|| HostDiff::between(black_box(&before), black_box(&after))));
    c.bench_function("render Squid ACL", |b| b.iter(|| squid::render(black_box(&before), 1)));
    eprintln!("state: {} hosts; JSON answer {} KiB, XML answer {} KiB", before.len(), json.len() / 1024, xml.len() / 1024);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = pipeline
}
criterion_main!(benches);
