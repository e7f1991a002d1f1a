//! Squid access.log and nftables drop log lines.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = rocsync::watch::squid::parse_line(line);
        let _ = rocsync::watch::nftlog::parse_line(line, "rocsync-drop: ");
    }
});
