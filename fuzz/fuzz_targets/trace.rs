//! A trace file: the reader and its structural check, then every consumer that takes a
//! trace without a model (steps, causality, `why`, the profiler, every export format).
#![no_main]
use libfuzzer_sys::fuzz_target;
use retrace_replayer::export::{export, Format, Options};
use retrace_replayer::profile::Profiler;
use retrace_replayer::{Causality, Steps};
use retrace_sim::Trace;

fuzz_target!(|data: &[u8]| {
    let Ok(trace) = Trace::from_bytes(data, "fuzz") else {
        return;
    };
    let steps = Steps::new(&trace.events);
    let causality = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    if !steps.is_empty() {
        let _ = causality.why(steps.len() - 1);
        let _ = causality.effects(0);
    }
    let names: Vec<String> = trace.header.nodes.iter().map(|n| n.name.clone()).collect();
    let _ = Profiler::new(&trace.events, &steps, &causality, &names).all(None);
    let Ok(survey) = retrace_replayer::export::survey(&trace.header, trace.events.iter().cloned())
    else {
        return;
    };
    let name = |p: &[u8]| format!("message ({} bytes)", p.len());
    for format in Format::ALL {
        let options = Options {
            request: None,
            message_name: &name,
            message_text: &name,
            timer_name: &name,
            service_bytes: &name,
            survey: Some(&survey),
            base_time_ns: u64::MAX - 5,
            dot_depth: Some(3),
        };
        let _ = export(
            &trace.header,
            trace.events.iter().cloned(),
            format,
            &options,
            &mut std::io::sink(),
        );
    }
});
