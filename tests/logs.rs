//! `tracing` capture: what node code logs lands in the trace, attached to its node and
//! step, per run, with nothing leaking between runs on parallel threads.

use retrace::models::KvModel;
use retrace::replayer::Steps;
use retrace::sim::trace::Record;
use retrace::sim::{scenario, Simulation, Trace, TraceSink};

const SCENARIO: &str = include_str!("../scenarios/kv-ack-before-replicate.toml");

fn run() -> Vec<u8> {
    let s = scenario::parse::<KvModel>("kv-ack-before-replicate.toml", SCENARIO).unwrap();
    Simulation::<KvModel>::new(&s, s.seed, TraceSink::Memory)
        .run()
        .trace
        .unwrap()
}

#[test]
fn log_lines_belong_to_the_step_that_logged_them() {
    let trace = Trace::from_bytes(&run(), "kv").unwrap();
    let steps = Steps::new(&trace.events);
    let mut logs = 0;
    for (i, e) in trace.events.iter().enumerate() {
        if let Record::Log {
            level,
            target,
            text,
        } = &e.record
        {
            logs += 1;
            let s = steps.step_of[i].expect("a log line is inside a step");
            let step = &steps.steps[s];
            assert_eq!(e.node, Some(step.node));
            assert_eq!(e.time_ns, step.time_ns, "virtual time of its step");
            assert_eq!(trace.header.nodes[step.node.index()].role, "replica");
            assert_eq!(*level, 4, "debug");
            assert_eq!(target, "retrace_models::kv::replica");
            assert!(
                text.starts_with("acknowledged before any backup has it key=")
                    || text.starts_with("heartbeat{epoch="),
                "{text}"
            );
        }
    }
    assert!(logs > 100, "{logs}");
}

#[test]
fn parallel_runs_capture_only_their_own_lines() {
    let alone = run();
    // A subscriber of the test's own on this thread must neither see node logs nor
    // disturb the capture.
    let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(run)).collect();
    let _outside = tracing::info_span!("test thread").entered();
    tracing::info!("logged outside any run");
    let same_thread = run();
    assert_eq!(same_thread, alone);
    for h in handles {
        assert_eq!(h.join().unwrap(), alone, "byte-identical, logs included");
    }
}
