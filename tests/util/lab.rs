//! A three-namespace network for enforcement tests: a client (198.18.1.2, 2001:db8:1::2), a
//! router between two veth links (where rocsync runs), and a server whose HTTPS listeners
//! answer on 198.18.2.x and 2001:db8:2::x. Everything lives in namespaces the test created and
//! is deleted with them; no packet leaves them.
//!
//! The HTTPS listeners and the client are Rust threads that enter a namespace (`setns`) to
//! open their sockets: a TLS handshake and an echoed line prove that a connection works, and
//! a held connection can be checked again after a change.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::Netns;

pub struct Lab {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    roots: Arc<rustls::RootCertStore>,
    server_config: Arc<rustls::ServerConfig>,
}

/// Runs `f` on a thread inside network namespace `ns`: the sockets it opens live there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
                let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
                // SAFETY: setns on this thread only, with a namespace file we hold open.
                let r = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread in netns")
    })
}

fn ip(ns: &str, args: &str) {
    let out = Command::new("ip").args(["netns", "exec", ns, "sh", "-c", args]).output().expect("ip");
    assert!(out.status.success(), "{ns}: {args}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    /// Builds the network; `names` are the DNS names the server's certificate covers.
    pub fn new(tag: &str, names: &[&str]) -> Lab {
        let client = Netns::new(&format!("{tag}c"));
        let router = Netns::new(&format!("{tag}r"));
        let server = Netns::new(&format!("{tag}s"));
        let (c, r, s) = (&client.0, &router.0, &server.0);
        let status = Command::new("ip")
            .args(["link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "r0", "netns", r])
            .status()
            .unwrap();
        assert!(status.success());
        let status = Command::new("ip")
            .args(["link", "add", "s0", "netns", s, "type", "veth", "peer", "name", "r1", "netns", r])
            .status()
            .unwrap();
        assert!(status.success());
        ip(c, "sysctl -qw net.ipv6.conf.c0.accept_dad=0 && ip link set lo up && ip link set c0 up && ip addr add 198.18.1.2/24 dev c0 && \
               ip addr add 2001:db8:1::2/64 dev c0 nodad && ip route add default via 198.18.1.1 && \
               ip -6 route add default via 2001:db8:1::1");
        ip(r, "sysctl -qw net.ipv6.conf.r0.accept_dad=0 && sysctl -qw net.ipv6.conf.r1.accept_dad=0 && \
               ip link set lo up && ip link set r0 up && ip link set r1 up && \
               ip addr add 198.18.1.1/24 dev r0 && ip addr add 198.18.2.1/24 dev r1 && \
               ip addr add 2001:db8:1::1/64 dev r0 nodad && ip addr add 2001:db8:2::1/64 dev r1 nodad && \
               sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1");
        ip(s, "sysctl -qw net.ipv6.conf.s0.accept_dad=0 && ip link set lo up && ip link set s0 up && ip addr add 198.18.2.2/24 dev s0 && \
               ip route add default via 198.18.2.1 && ip addr add 2001:db8:2::2/64 dev s0 nodad && \
               ip -6 route add default via 2001:db8:2::1");

        let ca = {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, "rocsync test AMC CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        Lab { client, router, server, roots: Arc::new(roots), server_config: Arc::new(server_config) }
    }

    /// Adds `addr` to the server and serves HTTPS (an echo of each line) on `addr`:443.
    pub fn serve(&self, addr: IpAddr) {
        let prefix = if addr.is_ipv4() { "24" } else { "64 nodad" };
        ip(&self.server.0, &format!("ip addr add {addr}/{prefix} dev s0"));
        let listener = in_netns(&self.server.0, || TcpListener::bind(SocketAddr::new(addr, 443)).expect("bind"));
        let config = self.server_config.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                std::thread::spawn(move || echo(stream, config));
            }
        });
    }

    /// Opens an HTTPS connection from the client to `addr`:443 for `name`, and checks that a
    /// line comes back; `None` when it cannot (dropped, refused, timed out).
    pub fn connect(&self, addr: IpAddr, name: &str) -> Option<Conn> {
        let stream = in_netns(&self.client.0, || TcpStream::connect_timeout(&SocketAddr::new(addr, 443), Duration::from_millis(800)))
            .ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        let tls = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(name.to_owned()).ok()?).ok()?;
        let mut conn = Conn { tls: rustls::StreamOwned::new(tls, stream) };
        conn.ping().then_some(conn)
    }

    /// Whether a new connection to `addr` for `name` works.
    pub fn reaches(&self, addr: &str, name: &str) -> bool {
        self.connect(addr.parse().unwrap(), name).is_some()
    }
}

/// An open HTTPS connection from the client.
pub struct Conn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl Conn {
    /// Sends a line and reads it back.
    pub fn ping(&mut self) -> bool {
        if self.tls.write_all(b"ping\n").and_then(|()| self.tls.flush()).is_err() {
            return false;
        }
        let mut line = String::new();
        let mut reader = BufReader::new(&mut self.tls);
        reader.read_line(&mut line).is_ok() && line == "ping\n"
    }
}

fn echo(stream: TcpStream, config: Arc<rustls::ServerConfig>) {
    let Ok(conn) = rustls::ServerConnection::new(config) else { return };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = {
            let mut reader = BufReader::new(&mut tls);
            reader.read_line(&mut line)
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tls.write_all(line.as_bytes()).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
        }
    }
}
