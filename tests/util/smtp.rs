//! A fake SMTP server on loopback, named as such: the point is to receive what rocsync sends,
//! and to be down on demand (it then answers 421 to every connection, as a server in trouble
//! does). It speaks just enough SMTP for a client without TLS: EHLO/HELO, MAIL, RCPT, DATA,
//! RSET, NOOP, QUIT.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One message received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    /// The value of a header (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_owned());
                }
            }
        }
        value
    }

    /// The subject, decoded from RFC 2047 when it is encoded (as lettre does for non-ASCII).
    pub fn subject(&self) -> String {
        let raw = self.header("Subject").unwrap_or_default();
        let head = format!("Subject: {raw}\r\n\r\n");
        let parsed = mail_parser::MessageParser::default().parse(head.as_bytes());
        parsed.and_then(|m| m.subject().map(str::to_owned)).unwrap_or(raw)
    }

    /// The body, decoded.
    pub fn body(&self) -> String {
        mail_parser::MessageParser::default()
            .parse(self.data.as_bytes())
            .and_then(|m| m.body_text(0).map(|b| b.into_owned()))
            .unwrap_or_default()
    }
}

pub struct SmtpSink {
    pub addr: SocketAddr,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    down: Arc<AtomicBool>,
}

impl SmtpSink {
    /// Listens on 127.0.0.1 (in the calling thread's network namespace).
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (m, d) = (mails.clone(), down.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (m, d) = (m.clone(), d.clone());
                std::thread::spawn(move || {
                    let _ = session(stream, &m, &d);
                });
            }
        });
        SmtpSink { addr, mails, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `n` messages in all; returns them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.mails()
    }
}

fn session(stream: TcpStream, mails: &Mutex<Vec<Mail>>, down: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = stream.try_clone()?;
    if down.load(Ordering::SeqCst) {
        out.write_all(b"421 4.3.2 fake-smtp.test service not available\r\n")?;
        return Ok(());
    }
    out.write_all(b"220 fake-smtp.test ESMTP\r\n")?;
    let mut reader = BufReader::new(stream);
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            out.write_all(b"250-fake-smtp.test\r\n250 8BITMIME\r\n")?;
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            out.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            out.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().trim_matches(['<', '>']).to_owned());
            out.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("DATA") {
            out.write_all(b"354 go ahead\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let l = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(l);
            }
            mails.lock().unwrap().push(Mail { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data });
            out.write_all(b"250 queued\r\n")?;
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            out.write_all(b"250 ok\r\n")?;
        } else if upper.starts_with("QUIT") {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"502 not implemented\r\n")?;
        }
    }
}
