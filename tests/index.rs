//! A trace opened through its index answers as the loaded trace does: every record, and
//! `why` (count, nearest, faults) and `effects` for steps across runs with crashes,
//! partitions, loss, duplicates and clock jumps. And the index file next to a trace is used
//! only with that trace.

mod common;
use common::*;
use retrace_models::{KvModel, RaftModel, WebstackModel};
use retrace_replayer::faults::fault_causes;
use retrace_replayer::index::{IndexFile, IndexedTrace};
use retrace_replayer::{Causality, Steps};
use retrace_sim::Trace;
use std::path::{Path, PathBuf};

/// Every record, and `why`/`effects` of a spread of steps, agree with the loaded trace.
/// Returns how many of the steps checked had faults in their history.
fn agrees(path: &Path) -> usize {
    let trace = Trace::load(path).unwrap();
    let steps = Steps::new(&trace.events);
    let causality = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    let mut indexed = IndexedTrace::open(path, IndexFile::Memory).unwrap();
    assert_eq!(indexed.len(), trace.events.len() as u64);
    for e in &trace.events {
        assert_eq!(&indexed.event(e.index).unwrap(), e);
    }
    let n = steps.steps.len();
    assert!(n > 100, "{}: too few steps to test", path.display());
    let limit = 40;
    let mut checked = 0;
    let mut with_faults = 0;
    for s in (0..n).step_by((n / 60).max(1)).chain([n - 1]) {
        let input = steps.steps[s].input as u64;
        let why: Vec<u64> = causality
            .why(s)
            .iter()
            .map(|&x| steps.steps[x].input as u64)
            .collect();
        let past = indexed.why(input, limit).unwrap();
        assert_eq!(past.count, why.len() as u64, "{} step {s}", path.display());
        assert_eq!(
            past.nearest,
            why[why.len().saturating_sub(limit)..],
            "step {s}"
        );
        let faults: Vec<u64> = fault_causes(&causality, &steps, &trace.events, s)
            .iter()
            .map(|f| f.record as u64)
            .collect();
        assert_eq!(past.faults, faults, "{} step {s}", path.display());
        with_faults += usize::from(!faults.is_empty());
        let all = indexed.why(input, usize::MAX).unwrap();
        assert_eq!(all.nearest, why);

        let effects: Vec<u64> = causality
            .effects(s)
            .iter()
            .map(|&x| steps.steps[x].input as u64)
            .collect();
        let later = indexed.effects(input, limit).unwrap();
        assert_eq!(later.count, effects.len() as u64, "step {s}");
        assert_eq!(
            later.nearest,
            effects[..effects.len().min(limit)],
            "step {s}"
        );
        checked += 1;
    }
    assert!(checked > 50);
    with_faults
}

#[test]
fn an_indexed_trace_answers_as_the_loaded_one() {
    let dir = scratch_dir("index-agrees");
    for seed in [1, 2, 3] {
        let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", seed);
        let trace = Trace::load(&path).unwrap();
        // The runs hold what the fault rules judge.
        let faults = trace
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.record,
                    retrace_sim::trace::Record::Fault(_) | retrace_sim::trace::Record::Drop { .. }
                )
            })
            .count();
        assert!(faults > 10, "seed {seed}: {faults} faults");
        // Many blocks, so clocks cross checkpoints with messages in flight.
        assert!(trace.events.len() > 8 * 4096, "seed {seed}");
        assert!(agrees(&path) > 10, "seed {seed}: faults in few histories");
    }
    agrees(&write_trace::<RaftModel>(&dir, "raft-double-vote.toml", 7));
    agrees(&write_trace::<WebstackModel>(
        &dir,
        "webstack-lunchtime.toml",
        1,
    ));
}

#[test]
fn an_index_file_is_used_only_with_its_own_trace() {
    let dir = scratch_dir("index-file");
    let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", 4);
    let idx = PathBuf::from(format!("{}.idx", path.display()));
    let first = IndexedTrace::open(&path, IndexFile::Write).unwrap();
    assert!(first.built && idx.exists());
    let mut again = IndexedTrace::open(&path, IndexFile::Write).unwrap();
    assert!(!again.built, "the index file is read, not rebuilt");
    let last = again.len() - 1;
    let step = again.step_at_or_before(last).unwrap().unwrap();
    let from_file = again.why(step, 40).unwrap();
    let mut memory = IndexedTrace::open(&path, IndexFile::Memory).unwrap();
    assert_eq!(memory.why(step, 40).unwrap(), from_file);

    // A damaged index is rebuilt, never trusted.
    let mut bytes = std::fs::read(&idx).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&idx, &bytes).unwrap();
    assert!(IndexedTrace::open(&path, IndexFile::Write).unwrap().built);
    // So is the index of another trace.
    let other = write_trace::<KvModel>(&dir, "kv-chaos.toml", 5);
    std::fs::copy(&idx, format!("{}.idx", other.display())).unwrap();
    let opened = IndexedTrace::open(&other, IndexFile::Memory).unwrap();
    assert!(opened.built);
    assert_eq!(
        opened.len(),
        Trace::load(&other).unwrap().events.len() as u64
    );
    // Garbage of any length is rebuilt too.
    for len in [0, 5, 10, 11, 100] {
        std::fs::write(&idx, vec![0xA5; len]).unwrap();
        assert!(IndexedTrace::open(&path, IndexFile::Memory).unwrap().built);
    }
}

#[test]
fn a_torn_trace_indexes_its_valid_prefix() {
    let dir = scratch_dir("index-torn");
    let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", 6);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let trace = Trace::load(&path).unwrap();
    let mut indexed = IndexedTrace::open(&path, IndexFile::Memory).unwrap();
    assert_eq!(indexed.len(), trace.events.len() as u64);
    assert!(trace.tail.is_some());
    assert!(indexed.tail().is_some() && !indexed.is_complete());
    let last = indexed.len() - 1;
    assert_eq!(indexed.event(last).unwrap(), trace.events[last as usize]);
    assert!(indexed.event(last + 1).is_err());
    agrees(&path);
}

#[test]
fn a_trace_changed_under_its_index_is_a_located_error_not_a_panic() {
    let dir = scratch_dir("index-changed");
    let path = write_trace::<KvModel>(&dir, "kv-chaos.toml", 8);
    IndexedTrace::open(&path, IndexFile::Write).unwrap();
    // A byte in the middle: outside the bytes the fingerprint covers, so the index still
    // matches, but the block holding it no longer reads.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 4 * 65536, "the trace is long enough");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let mut t = IndexedTrace::open(&path, IndexFile::Memory).unwrap();
    assert!(!t.built, "the index still matches the fingerprint");
    let mut failed = 0;
    for i in (0..t.len()).step_by(97) {
        if let Err(e) = t.event(i) {
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(".idx to rebuild it"), "{text}");
            failed += 1;
        }
    }
    assert!(failed > 0, "the damaged block is reported");
    // The CLI says the same, with a non-zero exit.
    let last = (t.len() - 1).to_string();
    let o = retrace(&["show", path.to_str().unwrap(), "--from", &last]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = retrace(&[
        "show",
        path.to_str().unwrap(),
        "--from",
        "0",
        "--limit",
        &t.len().to_string(),
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(".idx to rebuild it"), "{}", stderr(&o));
}

/// A reader that hands out the trace in uneven pieces, as a run's writes arrive.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    piece: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.piece = self.piece * 7 % 4099 + 1;
        let n = buf.len().min(self.piece).min(self.bytes.len() - self.at);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// `retrace run` builds a large trace's index from the bytes it writes, as it writes them
/// (`IndexedTrace::index_stream`): the index file it keeps is byte for byte the one a pass
/// over the finished file writes.
#[test]
fn an_index_built_from_the_written_bytes_is_the_one_built_from_the_file() {
    let dir = scratch_dir("index-stream");
    for path in [
        write_trace::<KvModel>(&dir, "kv-chaos.toml", 1),
        write_trace::<RaftModel>(&dir, "raft.toml", 3),
    ] {
        let idx = PathBuf::from(format!("{}.idx", path.display()));
        let _ = std::fs::remove_file(&idx);
        drop(IndexedTrace::open(&path, IndexFile::Write).unwrap());
        let from_file = std::fs::read(&idx).unwrap();
        std::fs::remove_file(&idx).unwrap();
        let input = Trickle {
            bytes: std::fs::read(&path).unwrap(),
            at: 0,
            piece: 1,
        };
        let built = IndexedTrace::index_stream(&path, input).unwrap();
        let mut streamed = IndexedTrace::from_streamed(&path, built).unwrap();
        assert!(!idx.exists(), "kept in memory until asked");
        streamed.write_file().unwrap();
        assert!(
            std::fs::read(&idx).unwrap() == from_file,
            "{}: the streamed index differs",
            path.display()
        );
    }
}
