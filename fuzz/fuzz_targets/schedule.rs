//! Schedule files (`retrace run --schedule`), parsed and checked against a scenario's limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sf) = serde_json::from_slice::<retrace_sim::fuzz::ScheduleFile>(data) {
        let _ = sf.schedule.check(10_000_000_000);
    }
});
