//! A real HTTPS annuaire for tests: a test PKI made with rcgen (a fake IGC-Santé CA for the
//! hospital's certificate, a fake IGC OSI CA for the server's), and a server on loopback that
//! requires a client certificate and answers as told (a list, 304 on a matching ETag, an error
//! status, an outage page, a truncated or oversize body, or nothing for a while). By default each
//! answer closes its connection (`Connection: close`); [`AnnuaireServer::start_keep_alive`]
//! keeps connections open between requests as a real web service does, closes those idle for
//! a while, and counts TLS handshakes.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

/// A certificate authority of the test PKI.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// A leaf certificate for `cn`, valid from `not_before` to `not_after` days from now, with
    /// 127.0.0.1 as its address.
    pub fn leaf(&self, cn: &str, not_before: i64, not_after: i64) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "CHU EXEMPLE");
        params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
        let now = OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(not_before);
        params.not_after = now + time::Duration::days(not_after);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_der: cert.der().to_vec(), cert_pem: cert.pem(), key_der: key.serialize_der(), key_pem: key.serialize_pem() }
    }
}

/// A certificate and its key.
pub struct Leaf {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Leaf {
    /// The PKCS#12 file the ANS platform would deliver; `legacy` uses 3DES and SHA-1 as older
    /// exports do, otherwise AES-256 and SHA-256.
    pub fn pkcs12(&self, ca: &Ca, password: &str, legacy: bool) -> Vec<u8> {
        let key = p12_keystore::PrivateKey::from_der(&self.key_der).unwrap();
        let certs = [&self.cert_der[..], ca.issuer.der().as_ref()]
            .into_iter()
            .map(|d| p12_keystore::Certificate::from_der(d).unwrap());
        let chain = p12_keystore::PrivateKeyChain::new(&b"rocsync-test-key"[..], key, certs);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry("hospital", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
        let writer = store.writer(password);
        let writer = if legacy {
            writer
                .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
                .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
        } else {
            writer
        };
        writer.write().unwrap()
    }
}

/// What the server answers next.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with this body; 304 when the request's If-None-Match is `etag`.
    Answer { body: Vec<u8>, content_type: String, etag: String },
    /// This status and body.
    Status { code: u16, content_type: String, body: Vec<u8> },
    /// Announces twice the length of `body`, sends `body`, then closes.
    Truncated { body: Vec<u8> },
    /// A 200 whose body never ends within the test (headers, then nothing).
    Stall,
    /// 304 Not Modified whatever the request.
    AlwaysNotModified,
}

/// A running annuaire on 127.0.0.1. Each connection is served on its own thread.
pub struct AnnuaireServer {
    pub addr: SocketAddr,
    pub reply: Arc<Mutex<Reply>>,
    pub requests: Arc<AtomicUsize>,
    /// Requests that came with an If-None-Match header.
    pub conditional: Arc<AtomicUsize>,
    /// TLS handshakes completed (one per connection).
    pub handshakes: Arc<AtomicUsize>,
}

/// How the server treats a connection after an answer.
#[derive(Clone, Copy)]
struct Lifetime {
    /// `None`: closed after each answer. `Some(idle)`: kept for the next request, and closed by
    /// the server after `idle` without one.
    keep_alive: Option<Duration>,
}

impl AnnuaireServer {
    /// Serves with `server_leaf`, accepting client certificates signed by `client_ca`.
    pub fn start(server_leaf: &Leaf, client_ca: &Ca, reply: Reply) -> AnnuaireServer {
        AnnuaireServer::launch(server_leaf, client_ca, reply, Lifetime { keep_alive: None })
    }

    /// As [`AnnuaireServer::start`], with HTTP/1.1 keep-alive: no `Connection: close`, and a
    /// connection idle for `idle` is closed by the server (close_notify, then FIN).
    pub fn start_keep_alive(server_leaf: &Leaf, client_ca: &Ca, reply: Reply, idle: Duration) -> AnnuaireServer {
        AnnuaireServer::launch(server_leaf, client_ca, reply, Lifetime { keep_alive: Some(idle) })
    }

    fn launch(server_leaf: &Leaf, client_ca: &Ca, reply: Reply, lifetime: Lifetime) -> AnnuaireServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(client_ca.issuer.der().to_vec())).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_leaf.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_leaf.key_der.clone())),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = AnnuaireServer {
            addr,
            reply: Arc::new(Mutex::new(reply)),
            requests: Arc::new(AtomicUsize::new(0)),
            conditional: Arc::new(AtomicUsize::new(0)),
            handshakes: Arc::new(AtomicUsize::new(0)),
        };
        let counters = Counters { requests: server.requests.clone(), conditional: server.conditional.clone(), handshakes: server.handshakes.clone() };
        let reply = server.reply.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, reply, counters) = (config.clone(), reply.clone(), counters.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, config, &reply, &counters, lifetime);
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("https://{}/annuaire/urls", self.addr)
    }

    pub fn set(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Counters {
    requests: Arc<AtomicUsize>,
    conditional: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
}

fn serve(stream: std::net::TcpStream, config: Arc<rustls::ServerConfig>, reply: &Mutex<Reply>, counters: &Counters, lifetime: Lifetime) -> std::io::Result<()> {
    stream.set_read_timeout(Some(lifetime.keep_alive.unwrap_or(Duration::from_secs(10))))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    // The handshake (and the client certificate check) first, to count it.
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    counters.handshakes.fetch_add(1, Ordering::SeqCst);
    let close = if lifetime.keep_alive.is_some() { "" } else { "Connection: close\r\n" };
    loop {
        // Read a request head; with keep-alive, a read that times out is an idle connection,
        // which the server closes as web services do.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tls.read(&mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) => head.push(byte[0]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) && head.is_empty() => {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            if head.len() > 16 * 1024 {
                return Ok(());
            }
        }
        counters.requests.fetch_add(1, Ordering::SeqCst);
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let if_none_match = head.lines().find_map(|l| l.strip_prefix("if-none-match:")).map(|v| v.trim().to_owned());
        if if_none_match.is_some() {
            counters.conditional.fetch_add(1, Ordering::SeqCst);
        }
        let reply = reply.lock().unwrap().clone();
        let response = match reply {
            Reply::Answer { body, content_type, etag } => {
                if if_none_match.as_deref() == Some(etag.to_ascii_lowercase().as_str()) {
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n{close}\r\n").into_bytes()
                } else {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nETag: {etag}\r\nContent-Length: {}\r\n{close}\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
            }
            Reply::Status { code, content_type, body } => {
                let mut r = format!("HTTP/1.1 {code} Error\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{close}\r\n", body.len())
                    .into_bytes();
                r.extend_from_slice(&body);
                r
            }
            Reply::Truncated { body } => {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len() * 2
                )
                .into_bytes();
                r.extend_from_slice(&body);
                tls.write_all(&r)?;
                tls.flush()?;
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return Ok(());
            }
            Reply::AlwaysNotModified => format!("HTTP/1.1 304 Not Modified\r\n{close}\r\n").into_bytes(),
            Reply::Stall => {
                tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")?;
                tls.flush()?;
                std::thread::sleep(Duration::from_secs(8));
                return Ok(());
            }
        };
        tls.write_all(&response)?;
        tls.flush()?;
        if lifetime.keep_alive.is_none() {
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return Ok(());
        }
    }
}

/// Writes `text` to `dir/name`.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), text).unwrap();
}
