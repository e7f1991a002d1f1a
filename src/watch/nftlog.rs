//! nftables `log prefix "rocsync-drop: "` lines, as the kernel log, the journal or ulogd write
//! them: `… rocsync-drop: IN= OUT=eth1 SRC=… DST=… … PROTO=TCP SPT=… DPT=443 …`.

use std::net::IpAddr;

use super::{Blocked, Line};

/// `None` when the line is not a kernel packet log line; [`Line::Other`] for one with another
/// prefix.
pub fn parse_line(line: &str, prefix: &str) -> Option<Line> {
    let field = |name: &str| line.split_whitespace().find_map(|t| t.strip_prefix(name)).filter(|v| !v.is_empty());
    let src = field("SRC=")?;
    let dst = field("DST=")?;
    let Some(at) = line.find(prefix.trim_end()) else { return Some(Line::Other) };
    let ip: IpAddr = dst.parse().ok()?;
    let client: Option<IpAddr> = src.parse().ok();
    let port = field("DPT=").and_then(|p| p.parse().ok());
    // The syslog time before the host name and `kernel:` (`Nov 20 10:15:01`), if any.
    let head = &line[..at];
    let time = crate::text::excerpt(&head.split_whitespace().take(3).collect::<Vec<_>>().join(" "), 64);
    Some(Line::Blocked(Blocked { time, client, host: None, ip: Some(ip), port }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let l = "Nov 20 10:15:01 fw1 kernel: rocsync-drop: IN= OUT=eth1 SRC=198.18.1.20 DST=198.18.3.40 LEN=60 PROTO=TCP SPT=51234 DPT=443 SYN";
        let Some(Line::Blocked(b)) = parse_line(l, "rocsync-drop: ") else { panic!() };
        assert_eq!((b.time.as_str(), b.ip, b.port), ("Nov 20 10:15:01", Some("198.18.3.40".parse().unwrap()), Some(443)));
        let other = "Nov 20 10:15:03 fw1 kernel: other-prefix: IN=eth0 OUT= SRC=198.18.9.9 DST=198.18.1.20 LEN=40 PROTO=TCP SPT=80 DPT=40000";
        assert_eq!(parse_line(other, "rocsync-drop: "), Some(Line::Other));
        assert_eq!(parse_line("Nov 20 10:15:03 fw1 sshd[1]: accepted", "rocsync-drop: "), None);
        assert_eq!(parse_line("rocsync-drop: SRC=x DST=not-an-ip", "rocsync-drop: "), None);
    }
}
