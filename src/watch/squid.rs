//! Squid's native `access.log` format:
//! `time elapsed client code/status bytes method URL ident hierarchy/peer type`.
//! A line whose code starts with `TCP_DENIED` (or `NONE_NONE/403`) is a blocked request; its
//! host is that of `CONNECT host:port`, or of the URL.

use std::net::IpAddr;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use super::{Blocked, Line, words};

static DENIED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("TCP_DENIED"));
static FORBIDDEN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new("/403"));

/// `None` when the line is not a Squid access.log line.
pub fn parse_line(line: &str) -> Option<Line> {
    let [time, _, client, code_status, _, method, target] = fields(line)?;
    let client: Option<IpAddr> = client.parse().ok();
    let (code, status) = code_status.split_once('/')?;
    let denied = code.starts_with("TCP_DENIED") || (code.starts_with("NONE") && status == "403");
    if !denied {
        return Some(Line::Other);
    }
    let (host, port) = if method == "CONNECT" {
        let (h, p) = target.rsplit_once(':').unwrap_or((target, "443"));
        (h.to_owned(), p.parse().ok())
    } else {
        let url = url::Url::parse(target).ok()?;
        (url.host_str()?.to_owned(), url.port_or_known_default())
    };
    // What the log says is outside text: a client can put anything after CONNECT.
    let host = crate::text::excerpt(&host.trim_end_matches('.').to_ascii_lowercase(), 253);
    Some(Line::Blocked(Blocked { time: time.to_owned(), client, host: Some(host), ip: None, port }))
}

/// Whether `line` can be a blocked request, by a scan of its bytes: the code of every denial
/// starts with `TCP_DENIED`, or its status is `/403` (`NONE/403`). A line without either is
/// at most [`Line::Other`].
pub fn may_be_denied(line: &[u8]) -> bool {
    DENIED.find(line).is_some() || FORBIDDEN.find(line).is_some()
}

/// Whether [`parse_line`] takes `line` for an access.log line (`Some`), without parsing more
/// than its shape.
pub fn is_line(line: &str) -> bool {
    fields(line).is_some()
}

/// The seven fields [`parse_line`] reads, once the line has the shape of an access.log line:
/// a time, an elapsed count, and a `CODE/status` whose code is in capitals.
fn fields(line: &str) -> Option<[&str; 7]> {
    let mut cut = words(line);
    let mut fields = [""; 7];
    for field in &mut fields {
        *field = cut.next()?;
    }
    fields[0].parse::<f64>().ok()?;
    fields[1].parse::<u64>().ok()?;
    let (code, _) = fields[3].split_once('/')?;
    if !code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return None;
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let connect = "1763630101.202      0 198.18.1.20 TCP_DENIED/403 3921 CONNECT IDB.A.test:8443 - HIER_NONE/- text/html";
        let Some(Line::Blocked(b)) = parse_line(connect) else { panic!() };
        assert_eq!((b.host.as_deref(), b.port, b.client), (Some("idb.a.test"), Some(8443), Some("198.18.1.20".parse().unwrap())));
        let get = "1763630101.202 0 198.18.1.20 TCP_DENIED/403 10 GET http://crl.a.test/x.crl - HIER_NONE/- -";
        let Some(Line::Blocked(b)) = parse_line(get) else { panic!() };
        assert_eq!((b.host.as_deref(), b.port), (Some("crl.a.test"), Some(80)));
        assert_eq!(parse_line("1763630100.101 120 198.18.1.20 TCP_TUNNEL/200 5120 CONNECT a.test:443 - HIER_DIRECT/1.2.3.4 -"), Some(Line::Other));
        assert_eq!(parse_line("garbage line that is not squid"), None);
        assert_eq!(parse_line(""), None);
    }
}
