//! Frames on a node's client port (4-byte length + JSON), decoded as kv requests.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(frame) = retrace_recorder::client::read_frame(&mut input) {
        let _ = serde_json::from_slice::<retrace_models::kv::msg::Msg>(&frame);
    }
});
