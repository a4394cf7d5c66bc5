//! Frames from a peer connection, as a node's reader decodes them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let mut body = Vec::new();
    while let Ok(Some(_)) = retrace_recorder::wire::read(&mut input, &mut body) {}
});
