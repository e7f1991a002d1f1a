//! A real DNS server (dnsmasq) on loopback for tests, answering `.test` names from a hosts file
//! with a short TTL; the file can be rewritten and reloaded (SIGHUP). Stopped when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Dnsmasq {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl Dnsmasq {
    /// Serves `hosts` (lines `ip name`) with answers valid `ttl` seconds.
    pub fn start(hosts: &str, ttl: u32) -> Dnsmasq {
        Dnsmasq::start_in(None, hosts, ttl)
    }

    /// [`Dnsmasq::start`] inside network namespace `netns` (its loopback must be up).
    pub fn start_in(netns: Option<&str>, hosts: &str, ttl: u32) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), hosts).unwrap();
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "dnsmasq"]);
                c
            }
            None => Command::new("dnsmasq"),
        };
        let child = command
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--user=root", "--pid-file"])
            .arg(format!("--addn-hosts={}", dir.path().join("hosts").display()))
            .arg(format!("--local-ttl={ttl}"))
            .args(["--local=/test/", "--listen-address=127.0.0.1", "--bind-interfaces"])
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq");
        std::thread::sleep(Duration::from_millis(300));
        Dnsmasq { dir, port, child: Some(child) }
    }

    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Replaces the hosts file and makes dnsmasq read it again.
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.dir.path().join("hosts"), hosts).unwrap();
        if let Some(child) = &self.child {
            let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
            assert!(status.success());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Kills the server: its port stops answering.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
