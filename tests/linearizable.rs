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

#[test]
fn check_replays_a_trace_from_its_file_and_names_the_stale_reads_of_its_witness() {
    let dir = scratch_dir("linearizable-check");
    // Eight keys rather than four: fewer operations per key keep the checker's search (and
    // its smallest witness) short in a debug build.
    let scenario = std::fs::read_to_string(common::root().join("scenarios/kv-local-reads.toml"))
        .unwrap()
        .replace("keys = 4", "keys = 8");
    let buggy = dir.join("kv-local-reads-8.toml");
    std::fs::write(&buggy, &scenario).unwrap();
    let trace = dir.join("local-reads.trace");
    let trace_arg = trace.to_str().unwrap();
    let out = retrace(&["run", buggy.to_str().unwrap(), "-o", trace_arg]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let out = retrace(&["check", trace_arg, "--linearizable"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("verdict   NOT linearizable"), "{text}");
    // Each key's witness: its operations, and where the first one starts in the trace.
    assert!(text.contains("  requests  r"), "{text}");
    assert!(
        text.contains(&format!("retrace show {trace_arg} --from ")),
        "{text}"
    );

    // A torn copy: what it holds is checked, then the exit says the input was bad.
    let bytes = std::fs::read(&trace).unwrap();
    let torn = dir.join("torn.trace");
    std::fs::write(&torn, &bytes[..bytes.len() - 100]).unwrap();
    let out = retrace(&["check", torn.to_str().unwrap(), "--linearizable"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("history "), "{}", stdout(&out));
    assert!(common::stderr(&out).contains("checking the records before it"));

    // The bug off: the same clients see a linearizable store.
    let scenario = scenario.replace("bug = \"local-reads\"", "");
    let path = dir.join("kv-fixed.toml");
    std::fs::write(&path, scenario).unwrap();
    let fixed = dir.join("fixed.trace");
    let out = retrace(&["run", path.to_str().unwrap(), "-o", fixed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = retrace(&["check", fixed.to_str().unwrap(), "--linearizable"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("verdict   linearizable"),
        "{}",
        stdout(&out)
    );
}
