//! The annuaire web service over mutual TLS, against a real HTTPS server on loopback with a PKI
//! made by the test: what a network engineer sees when it works, and when it does not.

mod util;

use std::time::{Duration, Instant};

use util::annuaire_server::{AnnuaireServer, Ca, Leaf, Reply, write};
use util::{Sandbox, fixture, stderr};

/// The test's PKI: a fake IGC-Santé CA that signs the hospital's certificate, a fake IGC OSI
/// CA that signs the annuaire's.
struct Pki {
    igc_sante: Ca,
    igc_osi: Ca,
    server: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let igc_sante = Ca::new("Fake IGC-Sante AC-IDENTIFICATION");
        let igc_osi = Ca::new("Fake IGC OSI AC-SERVEUR");
        let server = igc_osi.leaf("annuaire-amc.test", -1, 365);
        Pki { igc_sante, igc_osi, server }
    }
}

fn answer(name: &str, etag: &str) -> Reply {
    let content_type = if name.ends_with(".xml") { "text/xml; charset=UTF-8" } else { "application/json" };
    Reply::Answer { body: std::fs::read(fixture(&format!("annuaire/{name}"))).unwrap(), content_type: content_type.into(), etag: etag.into() }
}

/// A sandbox configured for `server`, presenting `client` as a PKCS#12 file and trusting `ca`.
fn sandbox(server: &AnnuaireServer, pki: &Pki, client: &Leaf, ca_pem: &str, extra: &str) -> Sandbox {
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"{}\"\nclient_pkcs12 = \"hospital.p12\"\nclient_password = {{ file = \"p12.pass\" }}\n\
         ca_bundle = \"igc-osi.pem\"\nconnect_timeout = \"2s\"\ntimeout = \"3s\"\nmax_body_bytes = 65536\n{extra}\n\
         [review]\nmode = \"auto\"\n",
        server.url()
    ));
    write(sb.dir.path(), "hospital.p12", client.pkcs12(&pki.igc_sante, "s3cret-p12", false));
    write(sb.dir.path(), "p12.pass", "s3cret-p12\n");
    write(sb.dir.path(), "igc-osi.pem", ca_pem);
    sb
}

#[test]
fn the_right_certificate_gets_the_list_and_an_etag_avoids_refetching() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"4182\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE ORG AUTH_CLI", -10, 1000);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    assert!(sb.ok(&["check-config"]).contains("OK"));
    let out = sb.ok(&["poll"]);
    assert!(out.contains("→ 200") && out.contains("ETag \"4182\""), "{out}");
    assert!(out.contains("json answer, serial 4182") && out.contains("12 hosts to allow"), "{out}");
    let out = sb.ok(&["once"]);
    assert!(out.contains("Plan 1  applied"), "{out}");
    assert_eq!(sb.read("out/hosts.txt").lines().count(), 12);
    // Unchanged: the server answers 304 and no plan is made.
    let requests = server.requests();
    let out = sb.ok(&["once"]);
    assert!(out.contains("Nothing to change"), "{out}");
    assert_eq!(server.requests(), requests + 1);
    assert!(server.conditional.load(std::sync::atomic::Ordering::SeqCst) >= 1, "If-None-Match was sent");
    assert!(sb.ok(&["poll"]).contains("304 Not Modified"));
    assert_eq!(sb.json(&["plan", "list", "--json"]).as_array().unwrap().len(), 1);
    // A new list is fetched in full and planned.
    server.set(answer("urls-v2.json", "\"4183\""));
    let out = sb.ok(&["once"]);
    assert!(out.contains("serial 4183") && out.contains("Plan 2  applied"), "{out}");
    let status = sb.ok(&["status"]);
    assert!(status.contains("Client certificate: CN=CHU EXEMPLE ORG AUTH_CLI"), "{status}");
    assert!(status.contains("issuer CN=Fake IGC-Sante AC-IDENTIFICATION"), "{status}");
}

#[test]
fn xml_answers_and_pem_identities_work_too() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.xml", "\"x1\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = Sandbox::with_config(&format!(
        "[annuaire]\nurl = \"{}\"\nclient_cert = \"client.crt\"\nclient_key = \"client.key\"\nca_bundle = \"igc-osi.pem\"\n[review]\nmode = \"auto\"\n",
        server.url()
    ));
    write(sb.dir.path(), "client.crt", &client.cert_pem);
    write(sb.dir.path(), "client.key", &client.key_pem);
    write(sb.dir.path(), "igc-osi.pem", &pki.igc_osi.pem);
    let out = sb.ok(&["poll"]);
    assert!(out.contains("xml answer, serial 4182") && out.contains("12 hosts"), "{out}");
}

#[test]
fn legacy_and_openssl_made_pkcs12_files_are_read() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"a\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    write(sb.dir.path(), "hospital.p12", client.pkcs12(&pki.igc_sante, "s3cret-p12", true));
    assert!(sb.ok(&["poll"]).contains("→ 200"), "3DES/SHA-1 PKCS#12");
    if !util::have("openssl", false) {
        return;
    }
    write(sb.dir.path(), "c.pem", &client.cert_pem);
    write(sb.dir.path(), "k.pem", &client.key_pem);
    for legacy in [false, true] {
        let mut cmd = std::process::Command::new("openssl");
        cmd.current_dir(sb.dir.path()).args(["pkcs12", "-export", "-in", "c.pem", "-inkey", "k.pem", "-out", "hospital.p12", "-passout", "pass:s3cret-p12"]);
        if legacy {
            cmd.args(["-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1"]);
        }
        assert!(cmd.status().unwrap().success());
        let out = sb.run(&["poll"]);
        assert!(out.status.success(), "openssl pkcs12 (legacy: {legacy}): {}", stderr(&out));
    }
    // A wrong password says so, naming the file.
    write(sb.dir.path(), "p12.pass", "wrong");
    let out = sb.run(&["poll"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("hospital.p12") && stderr(&out).contains("wrong password"), "{}", stderr(&out));
}

#[test]
fn a_certificate_from_another_ca_is_refused_by_the_annuaire() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"a\""));
    let other_ca = Ca::new("Some Other CA");
    let client = other_ca.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    let out = sb.run(&["poll"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused the hospital's certificate"), "{err}");
    assert!(err.contains("issued by \"CN=Some Other CA\""), "{err}");
    assert!(err.contains("hospital.p12"), "{err}");
}

#[test]
fn an_expired_certificate_is_explained_and_audited() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"a\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1100, -2);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    let out = sb.run(&["once"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("refused the hospital's certificate") && err.contains("CertificateExpired"), "{err}");
    assert!(err.contains("the client certificate has expired"), "the expiry watch warns too: {err}");
    let audit = sb.ok(&["audit"]);
    assert!(audit.contains("cert.expired"), "{audit}");
    // Once a day, not at every poll.
    sb.run(&["poll"]);
    assert_eq!(sb.ok(&["audit"]).matches("cert.expired").count(), 1);
    let status = sb.ok(&["status"]);
    assert!(status.contains("(-2 day(s) left)"), "{status}");
}

#[test]
fn a_certificate_near_expiry_is_warned_about() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"a\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1000, 12);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "cert_expiry_warning = \"30d\"");
    let out = sb.run(&["once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the client certificate expires in 11 day(s)"), "{}", stderr(&out));
    assert!(sb.ok(&["audit"]).contains("cert.expiring"));
}

#[test]
fn a_server_certificate_not_from_the_configured_ca_is_refused() {
    let pki = Pki::new();
    let rogue = Ca::new("Rogue CA");
    let server = AnnuaireServer::start(&rogue.leaf("annuaire-amc.test", -1, 100), &pki.igc_sante, answer("urls-v1.json", "\"a\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    let out = sb.run(&["poll"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("the annuaire's certificate") && err.contains("is not signed by a CA of annuaire.ca_bundle"), "{err}");
    assert!(err.contains("igc-osi.pem"), "{err}");
    assert_eq!(server.requests(), 0, "no request was sent to an untrusted server");
}

/// Each failure: a clear error, nothing planned, nothing removed.
#[test]
fn outages_and_garbage_remove_nothing() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"a\""));
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    sb.ok(&["once"]);
    let before = sb.outputs();
    let html = std::fs::read(fixture("annuaire/error-503.html")).unwrap();
    let cases: Vec<(Reply, Option<i32>, &str)> = vec![
        (Reply::Status { code: 503, content_type: "text/html".into(), body: html.clone() }, Some(1), "answered HTTP 503; the body begins: \"<html><head><title>503"),
        (Reply::Answer { body: html, content_type: "text/html".into(), etag: "\"h\"".into() }, Some(2), "it is an HTML page"),
        (Reply::Answer { body: b"{\"organismes\": [{\"numero_amc\"".to_vec(), content_type: "application/json".into(), etag: "\"t\"".into() }, Some(2), "invalid JSON"),
        (Reply::Truncated { body: b"{\"organismes\": []}".to_vec() }, Some(1), "was cut off before its end"),
        (Reply::Answer { body: vec![b' '; 70_000], content_type: "application/json".into(), etag: "\"big\"".into() }, Some(1), "more than annuaire.max_body_bytes = 65536 bytes"),
        (Reply::Answer { body: std::fs::read(fixture("annuaire/empty-organismes.json")).unwrap(), content_type: "application/json".into(), etag: "\"e\"".into() }, Some(0), "Plan 2  pending"),
    ];
    for (reply, code, message) in cases {
        server.set(reply.clone());
        let out = sb.run(&["once"]);
        let text = stderr(&out) + &util::stdout(&out);
        assert_eq!(out.status.code(), code, "{reply:?}: {text}");
        assert!(text.contains(message), "{reply:?}: expected {message:?} in {text}");
        assert_eq!(sb.outputs(), before, "{reply:?} closed something");
    }
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["in_force"]["hosts"], 12);
}

#[test]
fn a_slow_server_times_out() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, Reply::Stall);
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    let started = Instant::now();
    let out = sb.run(&["poll"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("did not answer within 3s"), "{}", stderr(&out));
    assert!(took.as_secs_f64() < 6.0, "gave up after the timeout, took {took:?}");
    let status = sb.json(&["status", "--json"]);
    assert_eq!(status["last_source_read"]["ok"], false);
}

#[test]
fn a_closed_port_is_a_connection_error() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, Reply::Stall);
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    // A port nobody listens on: bind, note it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = std::fs::read_to_string(sb.path("rocsync.toml")).unwrap().replace(&server.addr.port().to_string(), &port.to_string());
    sb.write_config(&text);
    let out = sb.run(&["poll"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("cannot connect to https://127.0.0.1:{port}/")), "{}", stderr(&out));
}

/// Regression: a server that answers 304 to a request without an ETag made rocsync panic.
#[test]
fn an_unasked_304_is_a_source_error_not_a_panic() {
    let pki = Pki::new();
    let server = AnnuaireServer::start(&pki.server, &pki.igc_sante, Reply::AlwaysNotModified);
    let client = pki.igc_sante.leaf("CHU EXEMPLE", -1, 100);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    let out = sb.run(&["once"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("304 Not Modified to a request without an ETag"), "{}", stderr(&out));
}

/// Issue 12: the engine built a tokio runtime per fetch while its reqwest client kept pooled
/// keep-alive connections whose tasks died with that runtime, so a later fetch opened a new
/// connection each time, or hung until its timeout / failed with "dispatch task is gone" (the
/// test annuaire always answered `Connection: close`, which hid it). Against a keep-alive
/// annuaire with mutual TLS: twenty polls make one TLS handshake, and the poll after the
/// server closed the idle connection succeeds at once on a new one.
#[test]
fn polls_reuse_one_keep_alive_tls_connection_and_survive_the_server_closing_it() {
    const POLLS: usize = 20;
    let pki = Pki::new();
    let idle = Duration::from_secs(2);
    let server = AnnuaireServer::start_keep_alive(&pki.server, &pki.igc_sante, answer("urls-v1.json", "\"4182\""), idle);
    let client = pki.igc_sante.leaf("CHU EXEMPLE ORG AUTH_CLI", -10, 1000);
    let sb = sandbox(&server, &pki, &client, &pki.igc_osi.pem, "");
    let config = rocsync::config::Config::from_path(&sb.path("rocsync.toml")).expect("a valid configuration");
    let mut engine = rocsync::engine::Engine::open(config).expect("the engine opens");
    for i in 0..POLLS {
        let started = Instant::now();
        engine.read_source(None).unwrap_or_else(|e| panic!("poll {i}: {e}"));
        assert!(started.elapsed() < Duration::from_secs(2), "poll {i} took {:?}", started.elapsed());
    }
    assert_eq!(server.requests(), POLLS);
    assert_eq!(server.handshakes(), 1, "{POLLS} polls, each on a new TLS connection: the pooled connection did not survive");
    // The server closes the connection once idle; the client's pool must notice, not send on it.
    std::thread::sleep(idle + Duration::from_millis(700));
    let started = Instant::now();
    engine.read_source(None).expect("the poll after the server closed the idle connection");
    assert!(started.elapsed() < Duration::from_secs(1), "the poll after an idle close took {:?} (a dead pooled connection?)", started.elapsed());
    assert_eq!(server.requests(), POLLS + 1);
    assert_eq!(server.handshakes(), 2, "one new connection after the idle close");
}
