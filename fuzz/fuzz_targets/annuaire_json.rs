//! The annuaire's answer as JSON: any bytes give an answer or an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rocsync::sources::annuaire::parse(data, Some("application/json"));
});
