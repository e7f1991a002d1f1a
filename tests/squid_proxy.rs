//! The exported ACL in a running Squid (Debian's package, started by the test on loopback): a
//! request to an allowed `.test` host goes through (200 from a test server), a request to any
//! other host is denied (403), a wildcard allows its sub-domains. Needs root and squid.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::Sandbox;

/// An HTTP server on loopback that answers 200 to everything.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            });
        }
    });
    port
}

struct Squid(Child);

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status code of `GET http://host:port/` through the proxy.
fn through(proxy: u16, host: &str, port: u16) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn squid_allows_the_exported_hosts_and_denies_the_rest() {
    if !util::have("squid", true) {
        return;
    }
    let sb = Sandbox::new("auto", "urls-v1.json");
    sb.ok(&["once"]);
    let up = upstream();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Squid resolves the test names from this file only: everything is on loopback.
    std::fs::write(
        d.join("hosts"),
        "127.0.0.1 idb.roc.mutuelle-exemple.test x.api.mutuelle-exemple.test www.example-news.test idb.ancienne-mutuelle.test\n",
    )
    .unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        d.join("squid.conf"),
        format!(
            "http_port 127.0.0.1:{proxy}\npid_filename {p}/squid.pid\ncache_log {p}/cache.log\naccess_log stdio:{p}/access.log\n\
             cache deny all\ncache_mem 8 MB\nhosts_file {p}/hosts\ndns_nameservers 127.0.0.1\nshutdown_lifetime 0 seconds\n\
             cache_effective_user proxy\ncoredump_dir {p}\n\
             acl roc_amc dstdomain \"{acl}\"\nhttp_access allow roc_amc\nhttp_access deny all\n",
            p = d.display(),
            acl = sb.path("out/squid.acl").display()
        ),
    )
    .unwrap();
    Command::new("chmod").args(["777", d.to_str().unwrap()]).status().unwrap();
    let child = Command::new("squid").args(["-N", "-f"]).arg(d.join("squid.conf")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let _squid = Squid(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", proxy)).is_err() {
        assert!(Instant::now() < deadline, "squid did not start: {}", std::fs::read_to_string(d.join("cache.log")).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(through(proxy, "idb.roc.mutuelle-exemple.test", up), 200, "an allowed AMC host");
    assert_eq!(through(proxy, "x.api.mutuelle-exemple.test", up), 200, "under an allowed wildcard");
    assert_eq!(through(proxy, "www.example-news.test", up), 403, "not an AMC host");
    assert_eq!(through(proxy, "idb.ancienne-mutuelle.test", up), 403, "an AMC that left");
    let log = std::fs::read_to_string(d.join("access.log")).unwrap_or_default();
    assert!(log.contains("TCP_DENIED/403") && log.contains("www.example-news.test"), "{log}");
}
