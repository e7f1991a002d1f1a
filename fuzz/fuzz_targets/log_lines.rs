//! Squid access.log and nftables drop log lines: the parsers never panic, the streamed reading
//! cuts any bytes, and the prefilter of `inspect log` never changes a verdict.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use rocsync::watch::read::{LogParser, Scope, for_each_line};
    use rocsync::watch::{nftlog, squid};
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = squid::parse_line(line);
        let _ = nftlog::parse_line(line, "rocsync-drop: ");
    }
    let (squid_fast, nft_fast) = (LogParser::squid(Scope::Denials), LogParser::nft("rocsync-drop: ", Scope::Denials));
    let _ = for_each_line(data, |_, line| {
        if let Ok(line) = line {
            assert_eq!(squid_fast.line(line), squid::parse_line(line));
            assert_eq!(nft_fast.line(line), nftlog::parse_line(line, "rocsync-drop: "));
        }
        std::ops::ControlFlow::Continue(())
    });
});
