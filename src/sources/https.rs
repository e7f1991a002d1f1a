//! The Annuaire AMC's "available URLs" web service, over mutual TLS.
//!
//! rocsync presents the hospital's IGC-Santé certificate (PKCS#12 as the ANS platform delivers
//! it, or PEM) and trusts only the configured IGC OSI CA bundle, unless
//! `annuaire.use_system_roots` adds the system's. It builds its own rustls configuration (TLS
//! 1.2 minimum, ring) and hands it to reqwest, so that every TLS failure can be told apart and
//! explained: which certificate, which CA, what to do.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{AlertDescription, CertificateError, RootCertStore};
use secrecy::{ExposeSecret as _, SecretString};
use time::OffsetDateTime;

use crate::sources::annuaire::snippet;

/// Where the client identity and the trusted CAs come from (`[annuaire]`).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub client_pkcs12: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The PKCS#12 password, read from its file or variable. Its `Debug` prints `[REDACTED]`.
    pub password: Option<SecretString>,
    pub ca_bundle: Option<PathBuf>,
    pub use_system_roots: bool,
}

/// Everything the client needs (`[annuaire]`).
#[derive(Debug, Clone)]
pub struct HttpsSettings {
    pub url: url::Url,
    pub tls: TlsSettings,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_body_bytes: u64,
}

/// What a certificate says about itself, for `status`, the expiry watch and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        })
    }

    /// Whole days until expiry (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject \"{}\", issued by \"{}\", valid until {}", self.subject, self.issuer, self.not_after.date())
    }
}

/// The hospital's certificate chain and key, and what the leaf says.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub info: CertInfo,
    /// The file it came from.
    pub path: PathBuf,
}

/// Why the TLS configuration cannot be built. Each names the file to look at.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate, key or CA file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The PKCS#12 file does not open: wrong password, or not PKCS#12.
    #[error("cannot open the PKCS#12 file {} (wrong password, or not a .p12/.pfx file): {reason}", path.display())]
    Pkcs12 { path: PathBuf, reason: String },
    /// The PKCS#12 file holds no private key with its certificate.
    #[error("the PKCS#12 file {} holds no private key with its certificate", path.display())]
    Pkcs12NoKey { path: PathBuf },
    /// A PEM file holds no certificate, or no key.
    #[error("{} holds no {what} in PEM form", path.display())]
    PemMissing { path: PathBuf, what: &'static str },
    /// A certificate cannot be parsed.
    #[error("{}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    /// The CA bundle holds no usable certificate.
    #[error("the CA bundle {} holds no usable certificate ({rejected} rejected)", path.display())]
    EmptyCaBundle { path: PathBuf, rejected: usize },
    /// Neither a CA bundle nor the system's roots.
    #[error("no CA to trust: set annuaire.ca_bundle (the IGC OSI CA bundle)")]
    NoTrust,
    /// rustls refuses the certificate or the key (unsupported algorithm, a key of another
    /// pair); the reason in words, not rustls' debug form.
    #[error("the client certificate and key in {} cannot be used: {reason}", path.display())]
    ClientAuth { path: PathBuf, reason: String },
    /// The client certificate is X.509 version 1 or 2: without extensions, which TLS client
    /// authentication needs (rustls said only "Other(OtherError(UnsupportedCertVersion))").
    #[error(
        "the client certificate in {} is an X.509 version {version} certificate; TLS needs version 3 (with extensions, such as \
         the \"client authentication\" usage an IGC-Santé ORG AUTH_CLI certificate carries): use the .p12 the ANS platform \
         delivered, or ask for a new certificate",
        path.display()
    )]
    CertificateVersion { path: PathBuf, version: u32 },
    /// The HTTP client cannot be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Reads the client identity from PKCS#12 or PEM.
pub fn load_identity(tls: &TlsSettings) -> Result<ClientIdentity, TlsSetupError> {
    let read = |path: &Path| crate::sources::read_small(path).map_err(|source| TlsSetupError::Read { path: path.to_owned(), source });
    let (chain, key, path) = match (&tls.client_pkcs12, &tls.client_cert, &tls.client_key) {
        (Some(p12), _, _) => {
            let data = read(p12)?;
            let password = tls.password.as_ref().map_or("", |p| p.expose_secret());
            let store = p12_keystore::KeyStore::from_pkcs12(&data, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
                .map_err(|e| TlsSetupError::Pkcs12 { path: p12.clone(), reason: e.to_string() })?;
            let (_, keychain) = store.private_key_chain().ok_or_else(|| TlsSetupError::Pkcs12NoKey { path: p12.clone() })?;
            if keychain.certs().is_empty() {
                return Err(TlsSetupError::Pkcs12NoKey { path: p12.clone() });
            }
            let chain = keychain.certs().iter().map(|c| CertificateDer::from(c.as_der().to_vec())).collect();
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(keychain.key().as_der().to_vec()));
            (chain, key, p12.clone())
        }
        (None, Some(cert), Some(key_path)) => {
            let pem = read(cert)?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
            if chain.is_empty() {
                return Err(TlsSetupError::PemMissing { path: cert.clone(), what: "certificate" });
            }
            let key = PrivateKeyDer::from_pem_slice(&read(key_path)?)
                .map_err(|_| TlsSetupError::PemMissing { path: key_path.clone(), what: "unencrypted private key" })?;
            (chain, key, cert.clone())
        }
        _ => return Err(TlsSetupError::PemMissing { path: PathBuf::from("(none)"), what: "client certificate" }),
    };
    let info = CertInfo::from_der(&chain[0]).map_err(|reason| TlsSetupError::BadCertificate { path: path.clone(), reason })?;
    if let Some(version) = x509_version(&chain[0]).filter(|v| *v != 3) {
        return Err(TlsSetupError::CertificateVersion { path, version });
    }
    Ok(ClientIdentity { chain, key, info, path })
}

/// The X.509 version of a certificate (1, 2 or 3), if it parses.
fn x509_version(der: &[u8]) -> Option<u32> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.version().0 + 1)
}

/// Opens the client identity as a connection would, without connecting: the PKCS#12 file with
/// its password, the certificate's version, the key against the certificate. `check-config`
/// runs it, so that a wrong password is told before the first poll, not at it.
pub fn check_identity(tls: &TlsSettings) -> Result<CertInfo, TlsSetupError> {
    let ClientIdentity { chain, key, info, path } = load_identity(tls)?;
    client_config(RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsSetupError::ClientAuth { reason: client_auth_reason(&source), path })?;
    Ok(info)
}

/// Why rustls refuses a client certificate and key, in words.
fn client_auth_reason(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the private key does not belong to the certificate (they come from two different key pairs)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding) => "the certificate is not valid DER".into(),
        rustls::Error::InvalidCertificate(other) => format!("the certificate is refused ({other})"),
        other => other.to_string(),
    }
}

/// The CAs the annuaire's certificate must chain to.
pub fn load_roots(tls: &TlsSettings) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = &tls.ca_bundle {
        let pem = crate::sources::read_small(path).map_err(|source| TlsSetupError::Read { path: path.clone(), source })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
        let (added, rejected) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsSetupError::EmptyCaBundle { path: path.clone(), rejected });
        }
    }
    if tls.use_system_roots {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoTrust);
    }
    Ok(roots)
}

/// rustls for rocsync's clients: ring, TLS 1.3 or 1.2 only, trusting `roots`; the caller adds
/// its client certificate, or none.
pub(crate) fn client_config(roots: RootCertStore) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
}

/// A client of the annuaire web service.
pub struct AnnuaireClient {
    http: reqwest::Client,
    settings: HttpsSettings,
    /// The hospital's certificate, as presented.
    pub identity: CertInfo,
    identity_path: PathBuf,
}

/// What one request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: unchanged since the ETag sent.
    NotModified,
    Body { body: Vec<u8>, content_type: Option<String>, etag: Option<String> },
}

/// Why a request to the annuaire failed. Each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No TCP connection: refused, unreachable, or the name does not resolve.
    #[error("cannot connect to {url}: {detail}")]
    Connect { url: String, detail: String },
    /// Connecting, or the whole request, took longer than allowed.
    #[error("{url} did not answer within {after:?} ({detail})")]
    Timeout { url: String, after: Duration, detail: String },
    /// The annuaire's certificate is not signed by the configured CAs, expired, or for another
    /// name.
    #[error("the annuaire's certificate at {url} is refused: {reason}")]
    ServerNotTrusted { url: String, reason: String },
    /// The annuaire refused the hospital's certificate.
    #[error(
        "the annuaire at {url} refused the hospital's certificate ({alert}); rocsync presented {identity} from {}: check that it is the IGC-Santé ORG AUTH_CLI certificate and that it has not expired",
        path.display()
    )]
    ClientRefused { url: String, alert: String, identity: CertInfo, path: PathBuf },
    /// Another TLS failure.
    #[error("TLS with {url} failed: {detail}")]
    Tls { url: String, detail: String },
    /// An HTTP status other than 2xx and 304.
    #[error("{url} answered HTTP {status}; the body begins: {start}")]
    Status { url: String, status: u16, start: String },
    /// The body is larger than `annuaire.max_body_bytes`.
    #[error("{url} sent more than annuaire.max_body_bytes = {limit} bytes; the answer was refused")]
    TooLarge { url: String, limit: u64 },
    /// The connection closed before the whole answer arrived.
    #[error("the answer from {url} was cut off before its end ({detail})")]
    CutOff { url: String, detail: String },
    /// Another HTTP failure.
    #[error("request to {url} failed: {detail}")]
    Http { url: String, detail: String },
}

impl AnnuaireClient {
    pub fn new(settings: HttpsSettings) -> Result<AnnuaireClient, TlsSetupError> {
        let identity = load_identity(&settings.tls)?;
        let config = client_config(load_roots(&settings.tls)?)
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(|source| TlsSetupError::ClientAuth { path: identity.path.clone(), reason: client_auth_reason(&source) })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("rocsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(TlsSetupError::Client)?;
        Ok(AnnuaireClient { http, identity: identity.info, identity_path: identity.path, settings })
    }

    pub fn url(&self) -> &url::Url {
        &self.settings.url
    }

    /// One request. With `etag`, a 304 answer is [`Fetched::NotModified`].
    pub async fn fetch(&self, etag: Option<&str>) -> Result<Fetched, FetchError> {
        let url = self.settings.url.to_string();
        let mut request = self
            .http
            .get(self.settings.url.clone())
            .header(ACCEPT, "application/json, application/xml;q=0.9, text/xml;q=0.8");
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await.map_err(|e| self.classify(&e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (content_type, new_etag) = (header(CONTENT_TYPE), header(ETAG));
        let limit = self.settings.max_body_bytes;
        if !status.is_success() {
            let mut start = Vec::new();
            while start.len() < 200 {
                match response.chunk().await {
                    Ok(Some(chunk)) => start.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            return Err(FetchError::Status { url, status: status.as_u16(), start: snippet(&start) });
        }
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(FetchError::TooLarge { url, limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(&e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(FetchError::TooLarge { url, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { body, content_type, etag: new_etag })
    }

    /// Turns a reqwest error into what it means for the operator.
    fn classify(&self, err: &reqwest::Error) -> FetchError {
        let url = self.settings.url.to_string();
        let detail = crate::error_chain(err);
        if let Some(tls) = find_rustls_error(err) {
            return match tls {
                rustls::Error::InvalidCertificate(cert) => {
                    FetchError::ServerNotTrusted { url, reason: server_cert_reason(cert, &self.settings.tls) }
                }
                rustls::Error::AlertReceived(alert) if is_client_cert_alert(alert) => FetchError::ClientRefused {
                    url,
                    alert: format!("TLS alert {alert:?}"),
                    identity: self.identity.clone(),
                    path: self.identity_path.clone(),
                },
                other => FetchError::Tls { url, detail: other.to_string() },
            };
        }
        if err.is_timeout() {
            let after = if err.is_connect() { self.settings.connect_timeout } else { self.settings.timeout };
            return FetchError::Timeout { url, after, detail };
        }
        if err.is_connect() {
            return FetchError::Connect { url, detail };
        }
        if err.is_body() || err.is_decode() {
            return FetchError::CutOff { url, detail };
        }
        FetchError::Http { url, detail }
    }
}

/// The server's certificate problem, in words.
fn server_cert_reason(err: &CertificateError, tls: &TlsSettings) -> String {
    let bundle = tls.ca_bundle.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into());
    match err {
        CertificateError::UnknownIssuer => format!(
            "it is not signed by a CA of annuaire.ca_bundle = {bundle}{} (is the IGC OSI AC-SERVEUR chain installed?)",
            if tls.use_system_roots { " nor by a system CA" } else { "" }
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "it is not valid yet (is this machine's clock right?)".into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it is not valid for the host name of annuaire.url".into()
        }
        CertificateError::Revoked => "it is revoked".into(),
        other => format!("{other:?}"),
    }
}

/// Alerts by which a server says it does not accept the client's certificate.
fn is_client_cert_alert(alert: &AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateRequired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
    )
}

/// The rustls error somewhere in the chain. An `io::Error` hides its payload from `source()`,
/// so it is opened by hand.
fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        current = e.source();
    }
    None
}
