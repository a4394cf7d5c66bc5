//! A window cut out of a trace (`retrace_replayer::window`) replays divergence-free, and at
//! every step of it each node is in the state the whole trace's replay has at that step —
//! across crashes, restarts, partitions open at the window's start, loss and duplicates.

mod common;
use common::*;
use retrace_models::{KvModel, RaftModel, WebstackModel};
use retrace_replayer::index::{IndexFile, IndexedTrace, StateCheckpoint};
use retrace_replayer::window::{bounds, cut, Window};
use retrace_replayer::Replay;
use retrace_sim::trace::Record;
use retrace_sim::{codec, Model, Trace};
use std::collections::BTreeMap;
use std::path::Path;

/// Every node's state after each step whose input is in `from..to`, by that input.
fn states_in<M: Model>(trace: Trace, from: u64, to: u64) -> BTreeMap<u64, Vec<u8>> {
    let replay = Replay::<M>::new(trace).unwrap();
    let mut cluster = replay.initial();
    let mut states = BTreeMap::new();
    for s in 0..replay.steps.steps.len() {
        replay.apply(&mut cluster).unwrap();
        let input = replay.steps.steps[s].input as u64;
        if (from..to).contains(&input) {
            states.insert(input, codec::encode(&cluster.nodes).unwrap());
        }
    }
    states
}

/// Cuts windows of `records` records around several points of the trace at `path` and
/// holds each to the whole replay. Returns how many windows started with a node resumed
/// and a message in flight from before them.
fn windows_agree<M: Model>(path: &Path, records: u64) -> usize {
    let whole = Trace::load(path).unwrap();
    let len = whole.events.len() as u64;
    let mut indexed = IndexedTrace::open(path, IndexFile::Memory).unwrap();
    let mut interesting = 0;
    for around in [0, len / 5, len / 2, len * 4 / 5, len - 1] {
        let (from, to) = bounds(&mut indexed, around, records).unwrap();
        assert!(
            from <= around && around < to,
            "{around} not in {from}..{to}"
        );
        let window: Window = cut::<M>(path, &mut indexed, from, to, &mut |_| {}).unwrap();
        let want = states_in::<M>(Trace::load(path).unwrap(), from, to);
        let resumed = window.resumed;
        let span = window.span.clone();
        let original_of = |k: u64| span.original(k);
        let replay = Replay::<M>::new(window.trace).unwrap();
        let mut cluster = replay.initial();
        let mut compared = 0;
        for s in 0..replay.steps.steps.len() {
            if let Err(d) = replay.apply(&mut cluster) {
                panic!("{} window {from}..{to}: {d}", path.display());
            }
            let input = replay.steps.steps[s].input as u64;
            let Some(original) = original_of(input) else {
                continue; // a resume at the window's start
            };
            let got = codec::encode(&cluster.nodes).unwrap();
            assert!(
                want.get(&original) == Some(&got),
                "{} window {from}..{to}: states differ after record {original}",
                path.display()
            );
            compared += 1;
        }
        assert_eq!(
            compared,
            want.len(),
            "every step of the window was compared"
        );
        // Records keep their meaning: a delivery's send is the same send, or none when it
        // was sent before the window.
        let mut from_before = 0;
        for e in &replay.trace.events {
            let Some(original) = original_of(e.index) else {
                continue;
            };
            if let (
                Record::Deliver { send, payload, .. },
                Record::Deliver {
                    send: was,
                    payload: had,
                    ..
                },
            ) = (&e.record, &whole.events[original as usize].record)
            {
                assert_eq!(payload, had);
                match send {
                    Some(s) => assert_eq!(original_of(*s), *was),
                    None => from_before += usize::from(was.is_some()),
                }
            }
        }
        interesting += usize::from(resumed > 0 && from_before > 0);
    }
    interesting
}

#[test]
fn windows_of_chaotic_runs_replay_to_the_whole_runs_states() {
    let dir = scratch_dir("window-kv");
    let mut interesting = 0;
    for seed in [1, 2] {
        let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", seed);
        interesting += windows_agree::<KvModel>(&path, 3_000);
    }
    assert!(
        interesting >= 4,
        "windows started mid-flight: {interesting}"
    );
}

#[test]
fn windows_of_raft_and_webstack_replay_to_the_whole_runs_states() {
    let dir = scratch_dir("window-other");
    let raft = write_trace::<RaftModel>(&dir, "raft.toml", 3);
    assert!(windows_agree::<RaftModel>(&raft, 400) >= 2);
    let web = write_trace::<WebstackModel>(&dir, "webstack-lunchtime.toml", 1);
    assert!(windows_agree::<WebstackModel>(&web, 600) >= 2);
}

/// `retrace cut` writes a window that every command opens like a whole run's trace; bad
/// requests name what is wrong.
#[test]
fn cut_writes_a_window_every_command_opens() {
    let dir = scratch_dir("window-cli");
    let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", 1);
    let trace = path.to_str().unwrap();
    let out = dir.join("window.trace");
    let out_s = out.to_str().unwrap();
    let o = retrace(&[
        "cut",
        trace,
        "--around",
        "20000",
        "--records",
        "5000",
        "-o",
        out_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("nodes resumed there"), "{}", stdout(&o));
    let o = retrace(&["replay", out_s, "--headless"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("every output as recorded"));
    let shown = stdout(&retrace(&["show", out_s, "--limit", "3"]));
    assert!(shown.contains("resume"), "{shown}");
    assert!(retrace(&["why", out_s, "3000"]).status.success());
    assert!(retrace(&["profile", out_s]).status.success());
    let json = dir.join("window.json");
    let o = retrace(&[
        "export",
        out_s,
        "-f",
        "perfetto",
        "-o",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = retrace(&["cut", trace, "--around", "99999999", "-o", out_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("there is no event 99999999"),
        "{}",
        stderr(&o)
    );
    let o = retrace(&[
        "cut",
        trace,
        "--around",
        "10",
        "--records",
        "0",
        "-o",
        out_s,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--records 0"), "{}", stderr(&o));
}

/// A cut leaves the cluster's state at its window's start with the index; a later cut after
/// it starts there, re-executes less, and writes the same window byte for byte as a cut
/// from the run's start. Written, the states live on in the index file, and a damaged one
/// is passed over.
#[test]
fn a_later_cut_starts_from_the_state_an_earlier_one_left_and_writes_the_same_window() {
    let dir = scratch_dir("window-states");
    let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", 2);
    let len = Trace::load(&path).unwrap().events.len() as u64;
    let (a, b) = (len / 3, len * 2 / 3);
    let cold = {
        let mut fresh = IndexedTrace::open(&path, IndexFile::Memory).unwrap();
        let (from, to) = bounds(&mut fresh, b, 2_000).unwrap();
        cut::<KvModel>(&path, &mut fresh, from, to, &mut |_| {}).unwrap()
    };
    let mut kept = IndexedTrace::open(&path, IndexFile::Write).unwrap();
    assert_eq!(kept.state_checkpoints(), 0);
    let (from, to) = bounds(&mut kept, a, 2_000).unwrap();
    cut::<KvModel>(&path, &mut kept, from, to, &mut |_| {}).unwrap();
    assert_eq!(
        kept.state_checkpoints(),
        1,
        "the state at the first window's start"
    );
    // Only that one: a re-execution this short leaves no periodic states, and the index
    // file (rewritten whole) is not rewritten for it.
    assert_eq!(
        IndexedTrace::open(&path, IndexFile::Write)
            .unwrap()
            .state_checkpoints(),
        0
    );
    let (from, to) = bounds(&mut kept, b, 2_000).unwrap();
    let warm = cut::<KvModel>(&path, &mut kept, from, to, &mut |_| {}).unwrap();
    assert!(
        warm.reexecuted < cold.reexecuted,
        "warm {} cold {}",
        warm.reexecuted,
        cold.reexecuted
    );
    assert!(warm.bytes == cold.bytes, "the same window either way");

    // Written to the file, the states live on for the next process.
    kept.write_file().unwrap();
    drop(kept);
    let mut reopened = IndexedTrace::open(&path, IndexFile::Write).unwrap();
    assert!(!reopened.built, "the index file is read");
    assert_eq!(
        reopened.state_checkpoints(),
        2,
        "the states were kept in the file"
    );
    let again = cut::<KvModel>(&path, &mut reopened, from, to, &mut |_| {}).unwrap();
    assert!(again.reexecuted <= warm.reexecuted);
    assert!(again.bytes == cold.bytes);

    // A damaged index file (here: its last bytes, inside the states) is rebuilt, and the
    // cut still comes out the same.
    let idx = dir.join("kv-chaos.toml-2.trace.idx");
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xff;
    std::fs::write(&idx, &bytes).unwrap();
    let mut rebuilt = IndexedTrace::open(&path, IndexFile::Write).unwrap();
    assert!(rebuilt.built);
    let rebuilt_cut = cut::<KvModel>(&path, &mut rebuilt, from, to, &mut |_| {}).unwrap();
    assert!(rebuilt_cut.bytes == cold.bytes);
}

/// The simulation that writes a trace can take the cluster's states on the way
/// (`Simulation::run_observed`, what `retrace run` leaves with a large trace's index): a cut
/// from them writes the same window byte for byte as a cut that re-executes from the run's
/// start, while re-executing only from the nearest state — across crashes, restarts,
/// partitions and clock faults (kv-chaos), elections (raft) and service times (webstack).
fn simulated_states_cut_the_same_windows<M: Model>(scenario: &str, seed: u64, every: u64) {
    let dir = scratch_dir("window-sim-states");
    let path = dir.join(format!("{scenario}-{seed}.trace"));
    let s = retrace_sim::scenario::parse::<M>(
        scenario,
        &read(&root().join("scenarios").join(scenario)),
    )
    .unwrap();
    let file = std::fs::File::create(&path).unwrap();
    let mut states = Vec::new();
    retrace_sim::Simulation::<M>::new(&s, seed, retrace_sim::TraceSink::Stream(Box::new(file)))
        .run_observed(every, &mut |sim| {
            let (at, applied) = sim.trace_position().unwrap();
            let nodes = sim.node_states().unwrap();
            states.push(StateCheckpoint::new(at, applied, &nodes).unwrap());
        });
    let taken = states.len();
    assert!(taken >= 5, "{scenario}: {taken} states taken");
    let len = Trace::load(&path).unwrap().events.len() as u64;
    let mut with_states = IndexedTrace::open(&path, IndexFile::Memory).unwrap();
    with_states.add_states(states);
    for around in [len / 4, len / 2, len - 1] {
        let mut cold = IndexedTrace::open(&path, IndexFile::Memory).unwrap();
        let (from, to) = bounds(&mut cold, around, every / 2).unwrap();
        let want = cut::<M>(&path, &mut cold, from, to, &mut |_| {}).unwrap();
        let got = cut::<M>(&path, &mut with_states, from, to, &mut |_| {}).unwrap();
        assert!(
            got.bytes == want.bytes,
            "{scenario} window {from}..{to}: the simulation's states cut another window"
        );
        assert!(
            got.reexecuted as u64 <= every + 2_000 && got.reexecuted < want.reexecuted,
            "{scenario} window {from}..{to}: re-executed {} steps (cold: {})",
            got.reexecuted,
            want.reexecuted
        );
    }
}

#[test]
fn a_simulations_own_states_cut_the_same_windows_as_re_execution() {
    simulated_states_cut_the_same_windows::<KvModel>("kv-chaos.toml", 1, 5_000);
    simulated_states_cut_the_same_windows::<RaftModel>("raft.toml", 3, 200);
    simulated_states_cut_the_same_windows::<WebstackModel>("webstack-lunchtime.toml", 1, 10_000);
}
