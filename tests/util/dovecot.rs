//! A real Dovecot IMAP server on loopback for tests, with its own configuration, a TLS
//! certificate from the test PKI and one user, `dsi`. Stopped when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::annuaire_server::Ca;

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ca_pem: PathBuf,
    child: Child,
}

pub const USER: &str = "dsi";
pub const PASSWORD: &str = "imap-s3cret";

impl Dovecot {
    /// Starts Dovecot (as root: it drops to `nobody` for the mailbox).
    pub fn start() -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ca = Ca::new("Fake hospital mail CA");
        let leaf = ca.leaf("mail.chu-exemple.test", -1, 30);
        std::fs::write(root.join("ca.pem"), &ca.pem).unwrap();
        std::fs::write(root.join("cert.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(root.join("key.pem"), &leaf.key_pem).unwrap();
        std::fs::write(root.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}\n")).unwrap();
        let maildir = root.join("home").join(USER).join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        for d in ["run", "state"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        // Dovecot's unprivileged processes need to reach their files.
        run("chmod", &["755", root.to_str().unwrap()]);
        run("chown", &["-R", "nobody:nogroup", root.join("home").to_str().unwrap()]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r = root.display();
        let conf = format!(
            "base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/dovecot.log\nprotocols = imap\nlisten = 127.0.0.1\n\
             ssl = required\nssl_cert = <{r}/cert.pem\nssl_key = <{r}/key.pem\nauth_mechanisms = plain\n\
             disable_plaintext_auth = yes\ndefault_internal_user = dovecot\ndefault_login_user = dovenull\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={r}/home/%u\n}}\n\
             mail_location = maildir:~/Maildir\n\
             service imap-login {{\n  inet_listener imap {{\n    port = 0\n  }}\n  inet_listener imaps {{\n    port = {port}\n    ssl = yes\n  }}\n}}\n\
             service stats {{\n  unix_listener stats-reader {{\n    mode = 0666\n  }}\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n"
        );
        std::fs::write(root.join("dovecot.conf"), conf).unwrap();
        let child = Command::new("dovecot")
            .args(["-F", "-c"])
            .arg(root.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot");
        let ca_pem = root.join("ca.pem");
        let server = Dovecot { port, ca_pem, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "dovecot did not listen: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The user's Maildir, for delivering messages the way the MTA would.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("home").join(USER).join("Maildir")
    }

    /// Delivers `body` into the INBOX (tmp/, then new/).
    pub fn deliver(&self, name: &str, body: &[u8]) {
        let tmp = self.maildir().join("tmp").join(name);
        std::fs::write(&tmp, body).unwrap();
        run("chown", &["nobody:nogroup", tmp.to_str().unwrap()]);
        std::fs::rename(&tmp, self.maildir().join("new").join(name)).unwrap();
    }

    /// Files of the processed folder (Maildir++ `.name`), all of cur/ and new/.
    pub fn folder_files(&self, folder: &str) -> Vec<String> {
        let base = if folder == "INBOX" { self.maildir() } else { self.maildir().join(format!(".{folder}")) };
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(base.join(sub)) {
                names.extend(rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
            }
        }
        names.sort();
        names
    }

    /// Settings for rocsync's IMAP client.
    pub fn settings(&self) -> rocsync::sources::imap::ImapSettings {
        rocsync::sources::imap::ImapSettings {
            server: "127.0.0.1".into(),
            port: self.port,
            security: rocsync::tls::TlsMode::Tls,
            username: USER.into(),
            password: PASSWORD.into(),
            folder: "INBOX".into(),
            processed_folder: "rocsync-traites".into(),
            ca_bundle: Some(self.ca_pem.clone()),
            timeout: Duration::from_secs(10),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The `[notifications]` configuration for this server.
    pub fn config(&self, dir: &Path) -> String {
        std::fs::write(dir.join("imap.pass"), format!("{PASSWORD}\n")).unwrap();
        format!(
            "[notifications]\nenabled = true\nsource = \"imap\"\nallowed_senders = [\"notifications@inter-amc.test\"]\n\
             [notifications.imap]\nserver = \"127.0.0.1\"\nport = {}\nsecurity = \"tls\"\nusername = \"{USER}\"\n\
             password = {{ file = \"imap.pass\" }}\nca_bundle = \"{}\"\ntimeout = \"10s\"\n",
            self.port,
            self.ca_pem.display()
        )
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its children too.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?}");
}
