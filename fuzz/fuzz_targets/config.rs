//! The configuration file: every problem reported, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rocsync::config::Config::load(text, "fuzz.toml", std::path::Path::new("/nonexistent"));
    }
});
