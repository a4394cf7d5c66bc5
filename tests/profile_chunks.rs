//! `profile` on a trace too large to load reads it a chunk at a time through its index
//! (`retrace_replayer::profile::profile_indexed`): every request it profiles has the
//! critical path the whole trace gives it, requests slower than a chunk are loaded again
//! rather than lost, and the CLI's summaries are the same either way.

mod common;
use common::*;
use retrace_models::{KvModel, RaftModel, WebstackModel};
use retrace_replayer::index::{IndexFile, IndexedTrace};
use retrace_replayer::profile::{profile_indexed, ChunkedRun, Chunking, Profiler, RequestProfile};
use retrace_replayer::{Causality, Steps};
use retrace_sim::{Model, Trace};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

/// A profile as JSON, and the off-path work it counts apart: a chunk sees the request's
/// work only up to its reach past the answer, so it may count less there, never more.
type Profiled = (String, (usize, u64));

fn profiled(mut p: RequestProfile) -> (u64, Profiled) {
    let off = (p.off_path_steps, p.off_path_service_ns);
    (p.off_path_steps, p.off_path_service_ns) = (0, 0);
    (p.request, (serde_json::to_string(&p).unwrap(), off))
}

/// `got` is `want`'s profile, but for off-path work past the reach.
fn same(scenario: &str, r: u64, got: &Profiled, want: Option<&Profiled>) {
    let want = want.unwrap_or_else(|| panic!("{scenario}: r{r} is not profiled whole"));
    assert_eq!(got.0, want.0, "{scenario}: r{r}");
    assert!(
        got.1 .0 <= want.1 .0 && got.1 .1 <= want.1 .1,
        "{scenario}: r{r} off the path {:?}, whole {:?}",
        got.1,
        want.1
    );
}

/// Each answered request's profile, by id, from the whole trace.
fn whole(path: &Path) -> (BTreeMap<u64, Profiled>, usize) {
    let trace = Trace::load(path).unwrap();
    let steps = Steps::new(&trace.events);
    let c = Causality::new(&steps, &trace.events, trace.header.nodes.len());
    let names: Vec<String> = trace.header.node_names();
    let profiler = Profiler::new(&trace.events, &steps, &c, &names);
    let started = profiler.started().count();
    let profiles = profiler.all(None).into_iter().map(profiled).collect();
    (profiles, started)
}

fn chunked(path: &Path, chunking: Chunking) -> (BTreeMap<u64, Profiled>, ChunkedRun) {
    let mut trace = IndexedTrace::open(path, IndexFile::Memory).unwrap();
    let mut profiles = BTreeMap::new();
    let run = profile_indexed(
        &mut trace,
        chunking,
        |p| {
            let (r, p) = profiled(p);
            assert!(profiles.insert(r, p).is_none(), "r{r} profiled twice");
            ControlFlow::Continue(())
        },
        &mut |_| {},
    )
    .unwrap();
    (profiles, run)
}

/// Chunks of `records` agree with the whole trace on `scenario`; returns how many requests
/// were loaded again because their answer came after their chunk's reach.
fn chunks_agree<M: Model>(scenario: &str, seed: u64, records: u64) -> u64 {
    let dir = scratch_dir("profile-chunks");
    let path = write_trace::<M>(&dir, scenario, seed);
    let (want, started) = whole(&path);
    assert!(want.len() > 100, "{scenario}: {} requests", want.len());

    // With no bound on a request's span, every answered request is profiled, exactly.
    let unbounded = Chunking {
        span_max: u64::MAX,
        ..Chunking::of(records)
    };
    let (got, run) = chunked(&path, unbounded);
    assert!(run.chunks > 3, "{scenario}: {run:?}");
    assert_eq!(got.len(), want.len(), "{scenario}: {run:?}");
    for (r, p) in &got {
        same(scenario, *r, p, want.get(r));
    }
    assert_eq!(run.out_of_reach, 0);
    assert_eq!(run.profiled + run.unanswered, started as u64);

    // With a bound, what is profiled is still exact, and everything else is counted.
    let (got, bounded) = chunked(&path, Chunking::of(records));
    for (r, p) in &got {
        same(scenario, *r, p, want.get(r));
    }
    assert_eq!(
        bounded.profiled + bounded.out_of_reach + bounded.unanswered,
        started as u64,
        "{scenario}: {bounded:?}"
    );
    run.reloaded
}

#[test]
fn chunked_profiles_equal_the_whole_traces_and_slow_requests_are_loaded_again() {
    let reloaded = chunks_agree::<KvModel>("kv-chaos.toml", 1, 2_000)
        + chunks_agree::<KvModel>("kv-chaos.toml", 2, 2_000);
    assert!(
        reloaded > 10,
        "kv-chaos's stalled requests outlive a chunk's reach"
    );
    chunks_agree::<WebstackModel>("webstack-lunchtime.toml", 1, 5_000);
    chunks_agree::<RaftModel>("raft-clients.toml", 1, 1_000);
}

#[test]
fn profile_cli_prints_the_same_a_chunk_at_a_time() {
    let dir = scratch_dir("profile-chunks-cli");
    let path = write_trace::<WebstackModel>(&dir, "webstack-lunchtime.toml", 1);
    let path = path.to_str().unwrap();
    for extra in [
        &["--json"][..],
        &[][..],
        &["--window", "12s..14s"][..],
        &["--request", "r4000"][..],
    ] {
        let whole = retrace(&[&["profile", path][..], extra].concat());
        assert!(whole.status.success(), "{}", stderr(&whole));
        let chunked = retrace(&[&["profile", path, "--chunk-records", "3000"][..], extra].concat());
        assert!(chunked.status.success(), "{}", stderr(&chunked));
        assert_eq!(stdout(&chunked), stdout(&whole), "profile {extra:?}");
    }
    // A request that does not exist is refused alike.
    let missing = retrace(&[
        "profile",
        path,
        "--chunk-records",
        "3000",
        "--request",
        "r99999999",
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("r99999999 has no reply"),
        "{}",
        stderr(&missing)
    );
}
