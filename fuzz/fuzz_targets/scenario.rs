//! Scenario files, parsed and checked for every shipped model.
#![no_main]
use libfuzzer_sys::fuzz_target;
use retrace_models::{KvModel, PingPongModel, RaftModel, TwoPcModel, WebstackModel};
use retrace_sim::scenario::{model_name, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = model_name("fuzz.toml", text);
    let _ = parse::<KvModel>("fuzz.toml", text);
    let _ = parse::<RaftModel>("fuzz.toml", text);
    let _ = parse::<TwoPcModel>("fuzz.toml", text);
    let _ = parse::<WebstackModel>("fuzz.toml", text);
    let _ = parse::<PingPongModel>("fuzz.toml", text);
});
