//! `retrace fork` and the fork API: any moment of a trace, simulated or recorded, as the
//! start of a new simulation whose trace starts with the original's records unchanged.

mod common;

use common::{record_and_merge_kv, retrace, scratch_dir, stderr, stdout, write_trace};
use proptest::prelude::*;
use retrace_models::KvModel as Kv;
use retrace_models::RaftModel as Raft;
use retrace_replayer::fork::{boundary, fork, ForkWalk};
use retrace_replayer::Replay;
use retrace_sim::trace::{Origin, Trace};
use retrace_sim::{ForkFuture, TraceSink};
use std::path::Path;

/// The trace's records from the first, each as its frame's bytes in the file: what a fork
/// must keep byte for byte up to its moment. (Where each frame ends comes from encoding the
/// records again, which the golden tests hold to be exact; the bytes are the file's.)
fn record_bytes(path: &Path) -> Vec<Vec<u8>> {
    use retrace_sim::trace::{TraceOut, TraceWriter};
    let trace = Trace::load(path).expect("trace loads");
    let file = std::fs::read(path).unwrap();
    let mut out = TraceOut::new(Some(TraceWriter::in_memory(&trace.header)));
    let len = |out: &TraceOut| out.writer.as_ref().map_or(0, |w| w.len_bytes()) as usize;
    let mut at = len(&out);
    let mut records = Vec::new();
    for e in &trace.events {
        out.push(|enc, o| enc.record(o, e.time_ns, &e.record));
        let end = len(&out);
        records.push(file[at..end].to_vec());
        at = end;
    }
    assert_eq!(
        at,
        file.len(),
        "{}: every byte is a record's",
        path.display()
    );
    records
}

fn replays_clean(path: &Path) {
    let o = retrace(&["replay", path.to_str().unwrap(), "--headless"]);
    let text = stdout(&o);
    assert!(
        text.contains("replay    ok"),
        "{}: the fork replays without divergence\n{text}\n{}",
        path.display(),
        stderr(&o)
    );
}

fn fork_cli(trace: &Path, at: u64, seed: u64, out: &Path) -> std::process::Output {
    retrace(&[
        "fork",
        trace.to_str().unwrap(),
        "--at",
        &at.to_string(),
        "--seed",
        &seed.to_string(),
        "-o",
        out.to_str().unwrap(),
    ])
}

#[test]
fn a_fork_with_the_original_seed_reproduces_the_original_suffix_byte_for_byte() {
    let dir = scratch_dir("fork-own-seed");
    let original = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let want = record_bytes(&original);
    for at in [0u64, 1_500, 6_000] {
        let out = dir.join(format!("own-{at}.trace"));
        let o = fork_cli(&original, at, 7, &out);
        assert!(
            stdout(&o).contains("its own run"),
            "{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        assert_eq!(
            record_bytes(&out),
            want,
            "fork at {at}: every record as it was"
        );
        let fork = Trace::load(&out).unwrap();
        assert!(matches!(fork.header.origin, Origin::Forked { seed: 7, .. }));
    }
}

#[test]
fn a_fork_with_a_new_seed_keeps_the_prefix_and_replays_without_divergence() {
    let dir = scratch_dir("fork-new-seed");
    let traces = [
        write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7),
        write_trace::<Raft>(&dir, "raft.toml", 3),
    ];
    for original in &traces {
        let before = record_bytes(original);
        let n = before.len() as u64;
        for (k, at) in [n / 5, n / 2, n - 3].into_iter().enumerate() {
            let seed = 100 + k as u64;
            let out = dir.join(format!("fork-{k}.trace"));
            let o = fork_cli(original, at, seed, &out);
            assert!(
                matches!(o.status.code(), Some(0 | 1)),
                "{}\n{}",
                stdout(&o),
                stderr(&o)
            );
            let after = record_bytes(&out);
            let fork = Trace::load(&out).unwrap();
            let Origin::Forked { at: first, .. } = fork.header.origin else {
                panic!("a fork's origin says so")
            };
            assert!(first > at, "the fork keeps the step holding event {at}");
            assert_eq!(
                after[..first as usize],
                before[..first as usize],
                "{}: records before the fork are the original's, byte for byte",
                original.display()
            );
            replays_clean(&out);
            // The same fork again is the same trace.
            let again = dir.join(format!("fork-{k}-again.trace"));
            fork_cli(original, at, seed, &again);
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
        }
    }
}

#[test]
fn a_fork_of_a_recorded_merged_trace_runs_and_replays_without_divergence() {
    let dir = scratch_dir("fork-recorded");
    let merged = record_and_merge_kv(&dir);
    let n = Trace::load(&merged).unwrap().events.len() as u64;
    let before = record_bytes(&merged);
    for (k, at) in [n / 4, n / 2, n * 9 / 10].into_iter().enumerate() {
        let out = dir.join(format!("fork-{k}.trace"));
        let o = fork_cli(&merged, at, k as u64, &out);
        assert!(
            matches!(o.status.code(), Some(0 | 1)),
            "{}\n{}",
            stdout(&o),
            stderr(&o)
        );
        let text = stdout(&o);
        assert!(text.contains("carried"), "{text}");
        let fork = Trace::load(&out).unwrap();
        let Origin::Forked {
            at: first, parent, ..
        } = &fork.header.origin
        else {
            panic!("a fork's origin says so")
        };
        assert!(matches!(**parent, Origin::Recorded { .. }));
        assert_eq!(
            record_bytes(&out)[..*first as usize],
            before[..*first as usize]
        );
        assert!(
            fork.events.len() as u64 > *first + 100,
            "the simulated future goes on ({} records)",
            fork.events.len()
        );
        replays_clean(&out);
    }
}

#[test]
fn a_fork_refuses_an_event_the_trace_does_not_have_naming_the_file() {
    let dir = scratch_dir("fork-bad");
    let original = write_trace::<Raft>(&dir, "raft.toml", 1);
    let out = dir.join("never.trace");
    let o = fork_cli(&original, 10_000_000, 1, &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("there is no event 10000000"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("raft.toml-1.trace"), "{}", stderr(&o));
    let o = retrace(&["fork", "tests/data/no-such.trace", "--at", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
}

/// The library API: a proptest that starts from a trace's prefix, as from a recorded
/// incident's, and asks something of every future it tries.
fn kv_incident() -> (Replay<Kv>, usize) {
    let dir = scratch_dir("fork-proptest");
    let path = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let replay = Replay::<Kv>::new(Trace::load(&path).unwrap()).unwrap();
    let at = boundary(&replay, 3_000);
    (replay, at)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn every_future_of_an_incident_prefix_is_deterministic_and_replays(seed in any::<u64>()) {
        let (replay, at) = kv_incident();
        let mut walk = ForkWalk::new(&replay).unwrap();
        walk.advance(at).unwrap();
        let future = ForkFuture { scripted_faults: false, ..ForkFuture::default() };
        let run = |seed| {
            walk.simulation(seed, &future, TraceSink::Memory).unwrap().run().trace.unwrap()
        };
        let (a, b) = (run(seed), run(seed));
        prop_assert_eq!(&a, &b);
        let forked = Replay::<Kv>::new(Trace::from_bytes(&a, "fork").unwrap()).unwrap();
        let mut cluster = forked.initial();
        while cluster.applied < forked.steps.len() {
            prop_assert!(forked.apply(&mut cluster).is_ok());
        }
        // Without the scripted kill, the future of this moment loses no write.
        let report = fork(&replay, 3_000, seed, &future, TraceSink::Discard).unwrap().run();
        prop_assert!(report.violation.is_none(), "{:?}", report.violation);
    }
}

#[test]
fn fuzz_from_a_moment_keeps_the_prefix_and_its_schedule_replays_with_fork() {
    let dir = scratch_dir("fuzz-from");
    let original = write_trace::<Kv>(&dir, "kv-ack-before-replicate.toml", 7);
    let out = dir.join("found");
    let o = retrace(&[
        "fuzz",
        original.to_str().unwrap(),
        "--from",
        "3000",
        "--cases",
        "1",
        "--jobs",
        "1",
        "--no-minimize",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}\n{}", stderr(&o));
    let find = |ext: &str| {
        std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(ext))
            .unwrap_or_else(|| panic!("the fuzzer wrote a {ext}"))
    };
    let (trace, schedule) = (find(".trace"), find(".schedule.json"));
    let found = Trace::load(&trace).unwrap();
    let Origin::Forked { at: first, .. } = found.header.origin else {
        panic!("a failure found from a moment is a fork")
    };
    assert_eq!(
        record_bytes(&trace)[..first as usize],
        record_bytes(&original)[..first as usize],
        "every case keeps the trace's records before the moment"
    );
    replays_clean(&trace);
    let sf: serde_json::Value = serde_json::from_str(&common::read(&schedule)).unwrap();
    assert_eq!(sf["from"]["at"], 3000);
    // The schedule replays the failure through `fork`, and `run` points there.
    let again = dir.join("again.trace");
    let o = retrace(&[
        "fork",
        original.to_str().unwrap(),
        "--at",
        "3000",
        "--schedule",
        schedule.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(record_bytes(&again), record_bytes(&trace));
    let o = retrace(&[
        "run",
        "scenarios/kv-ack-before-replicate.toml",
        "--schedule",
        schedule.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fork"), "{}", stderr(&o));
}
