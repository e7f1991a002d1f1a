//! An Inter-AMC notification e-mail, then its verdict.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(n) = rocsync::sources::mail::parse(data, Some("mx.hopital.test")) {
        let _ = rocsync::sources::mail::judge(&n, &["@inter-amc.test".to_owned()], true);
    }
});
