//! nftables `log prefix "rocsync-drop: "` lines, as the kernel log, the journal or ulogd write
//! them: `… rocsync-drop: IN= OUT=eth1 SRC=… DST=… … PROTO=TCP SPT=… DPT=443 …`.

use std::net::IpAddr;

use super::{Blocked, Line, words};

/// `None` when the line is not a kernel packet log line; [`Line::Other`] for one with another
/// prefix.
pub fn parse_line(line: &str, prefix: &str) -> Option<Line> {
    let Fields { src, dst, dpt } = fields(line);
    let (src, dst) = (src?, dst?);
    let Some(at) = line.find(prefix.trim_end()) else { return Some(Line::Other) };
    let ip: IpAddr = dst.parse().ok()?;
    let client: Option<IpAddr> = src.parse().ok();
    let port = dpt.and_then(|p| p.parse().ok());
    // The syslog time before the host name and `kernel:` (`Nov 20 10:15:01`), if any.
    let mut time = String::new();
    for word in words(&line[..at]).take(3) {
        if !time.is_empty() {
            time.push(' ');
        }
        time.push_str(word);
    }
    let time = crate::text::excerpt(&time, 64);
    Some(Line::Blocked(Blocked { time, client, host: None, ip: Some(ip), port }))
}

/// Whether [`parse_line`] takes `line` for a packet log line (`Some`), without parsing its
/// values.
pub fn is_line(line: &str) -> bool {
    let f = fields(line);
    f.src.is_some() && f.dst.is_some()
}

/// The values of the first `SRC=`, `DST=` and `DPT=` words, each `None` when missing or
/// empty; one pass over the line.
struct Fields<'l> {
    src: Option<&'l str>,
    dst: Option<&'l str>,
    dpt: Option<&'l str>,
}

fn fields(line: &str) -> Fields<'_> {
    let (mut src, mut dst, mut dpt) = (None, None, None);
    for word in words(line) {
        for (name, slot) in [("SRC=", &mut src), ("DST=", &mut dst), ("DPT=", &mut dpt)] {
            if slot.is_none()
                && let Some(value) = word.strip_prefix(name)
            {
                *slot = Some(value);
            }
        }
        if src.is_some() && dst.is_some() && dpt.is_some() {
            break;
        }
    }
    Fields { src: src.filter(|v| !v.is_empty()), dst: dst.filter(|v| !v.is_empty()), dpt: dpt.filter(|v| !v.is_empty()) }
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
