//! Squid's native `access.log` format:
//! `time elapsed client code/status bytes method URL ident hierarchy/peer type`.
//! A line whose code starts with `TCP_DENIED` (or `NONE_NONE/403`) is a blocked request; its
//! host is that of `CONNECT host:port`, or of the URL.

use std::net::IpAddr;

use super::{Blocked, Line};

/// `None` when the line is not a Squid access.log line.
pub fn parse_line(line: &str) -> Option<Line> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 7 {
        return None;
    }
    let time = fields[0];
    time.parse::<f64>().ok()?;
    fields[1].parse::<u64>().ok()?;
    let client: Option<IpAddr> = fields[2].parse().ok();
    let (code, status) = fields[3].split_once('/')?;
    if !code.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
        return None;
    }
    let (method, target) = (fields[5], fields[6]);
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
