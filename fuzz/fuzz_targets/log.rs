//! A node's log file, as `verify` and `merge` read it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/nonexistent/fuzz.log");
    let _ = retrace_recorder::log::read_log_from(data, data.len() as u64, path);
});
