//! A recorded run's `manifest.json`, parsed and checked.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("manifest.json");
        let _ = retrace_recorder::manifest::Manifest::parse(text, path);
    }
});
