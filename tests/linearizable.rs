//! What clients saw, checked for linearizability: a kv bug no durability check sees (reads
//! answered by a deposed primary from its own store) is caught in a run, by the fuzzer, and
//! again when the trace is replayed (the replayer hands the invariant the same history).

mod common;

use common::{retrace, scratch_dir, stdout};
use retrace::models::KvModel;
use retrace::replayer::Replay;
use retrace::sim::Trace;

const INVARIANT: &str = "clients see a linearizable store";

#[test]
fn kv_local_reads_is_caught_by_linearizability_and_by_nothing_else() {
    let out = retrace(&["run", "scenarios/kv-local-reads.toml", "--no-trace"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(INVARIANT), "{text}");
    // The diagram: one line per operation, a bar for each interval.
    assert!(text.contains("cannot be ordered"), "{text}");
    assert!(text.contains("|---|"), "{text}");

    // The same run without the check: every other invariant holds.
    let dir = scratch_dir("linearizable");
    let scenario = std::fs::read_to_string(common::root().join("scenarios/kv-local-reads.toml"))
        .unwrap()
        .replace("linearizable = true", "linearizable = false");
    let path = dir.join("kv-local-reads-unchecked.toml");
    std::fs::write(&path, scenario).unwrap();
    let out = retrace(&["run", path.to_str().unwrap(), "--no-trace"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn fuzzer_finds_a_stale_read_and_replay_sees_it_again() {
    let dir = scratch_dir("linearizable-fuzz");
    let out = retrace(&[
        "fuzz",
        "scenarios/kv-local-reads.toml",
        "--seed",
        "5",
        "--cases",
        "40",
        "--jobs",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(text.contains(INVARIANT), "{text}");
    let trace_path = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "trace"))
        .expect("the fuzzer wrote the failing case's trace");
    let trace = Trace::load(&trace_path).unwrap();
    let replay = Replay::<KvModel>::new(trace).unwrap();
    let mut cluster = replay.initial();
    let mut seen = Vec::new();
    while cluster.applied < replay.steps.steps.len() {
        let violations = replay
            .apply(&mut cluster)
            .expect("replays without divergence");
        seen.extend(violations);
    }
    let v = seen
        .iter()
        .find(|v| v.invariant == INVARIANT)
        .expect("the replay breaks the same invariant");
    assert!(v.facts.iter().any(|(name, _)| name == "key"), "{v:?}");
}
