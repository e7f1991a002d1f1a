//! The annuaire's answer as XML/SOAP, and content sniffing without a content type.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = rocsync::sources::annuaire::parse(data, Some("text/xml; charset=UTF-8"));
    let _ = rocsync::sources::annuaire::parse(data, None);
});
