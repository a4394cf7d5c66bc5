//! Profiles of a trace too large to load, read through its index a chunk at a time.
//!
//! Why a chunk is enough: every step on a request's critical path is its external request
//! or follows it (the walk takes a trigger only when it does), and precedes its reply, so
//! the path lies between the two in trace order — and so does every causal chain the walk
//! asks about, since trace order extends happens-before. Loading a chunk's records plus a
//! reach beyond it therefore profiles each request that starts in the chunk and is answered
//! within the reach exactly as the whole trace would. Links to records before the chunk can
//! only point before such a request's start, which the walk never follows: they are cut.
//!
//! A request answered beyond its chunk's reach (a client that waited seconds on retries:
//! the slowest requests, which a profile must not lose) waits for the chunk that holds its
//! answer, which then loads the records from its start to there again — up to `span_max`
//! records, beyond which it is counted (`ChunkedRun::out_of_reach`), not profiled, as are
//! requests never answered. A request answered twice keeps its last answer in the records
//! loaded for it; off-path work after them is not counted.

use super::{Profiler, RequestProfile};
use crate::causality::Causality;
use crate::index::{IndexError, IndexedTrace};
use crate::steps::Steps;
use retrace_sim::trace::{Event, Record};
use retrace_sim::RequestId;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

/// How a trace is read: `records` at a time, each chunk with `reach` records more; a
/// request is profiled if at most `span_max` records lie between its start and its answer.
#[derive(Clone, Copy, Debug)]
pub struct Chunking {
    pub records: u64,
    pub reach: u64,
    pub span_max: u64,
}

impl Chunking {
    /// `records` at a time, reaching a quarter of that beyond, and requests spanning up to
    /// twice that.
    pub fn of(records: u64) -> Chunking {
        let records = records.max(1);
        Chunking {
            records,
            reach: records / 4,
            span_max: records.saturating_mul(2),
        }
    }
}

impl Default for Chunking {
    /// A quarter of a million records at a time: about 100 MB with their steps and clocks
    /// (twice that for the rare request spanning more than a chunk). Larger chunks are
    /// hardly faster (a 10 M-record kv trace: 12.2 s at this size, 11.1 s at twice it, for
    /// 160 against 260 MB), since a chunk costs what its records cost.
    fn default() -> Self {
        Chunking::of(1 << 18)
    }
}

/// What a chunked pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkedRun {
    pub chunks: u64,
    pub profiled: u64,
    /// Requests answered beyond their chunk's reach, whose records were loaded again.
    pub reloaded: u64,
    /// Requests not profiled because no answer came within `span_max` records of their
    /// start (there may be one later, or none).
    pub out_of_reach: u64,
    /// Requests still unanswered at the end of the trace (the whole trace's profile
    /// leaves them out too).
    pub unanswered: u64,
}

/// Hands `each` the profile of every request answered within `span_max` records of its
/// start (in no particular order), until it says stop; `progress` hears how many records
/// are done after each chunk.
pub fn profile_indexed(
    trace: &mut IndexedTrace,
    chunking: Chunking,
    mut each: impl FnMut(RequestProfile) -> ControlFlow<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<ChunkedRun, IndexError> {
    let records = chunking.records.max(1);
    let names = trace.header().node_names();
    let len = trace.len();
    let mut run = ChunkedRun::default();
    let mut events: Vec<Event> = Vec::new();
    // Requests started in earlier chunks and not answered in their reach: their start.
    let mut pending: BTreeMap<RequestId, u64> = BTreeMap::new();
    let mut from = 0;
    while from < len {
        let to = from.saturating_add(records).min(len);
        let end = to.saturating_add(chunking.reach).min(len);
        run.chunks += 1;
        let chunk = with_profiler(trace, from, end, &mut events, &names, |events, profiler| {
            let mut ready = Vec::new();
            for (request, input) in profiler.started() {
                if input as u64 >= to - from {
                    continue; // the next chunk's
                }
                match profiler.request(request) {
                    Some(p) => ready.push(p),
                    None => {
                        pending.insert(request, from + input as u64);
                    }
                }
            }
            let answered: BTreeSet<RequestId> = events
                .iter()
                .filter_map(|e| match e.record {
                    Record::Respond { request, .. } => Some(request),
                    _ => None,
                })
                .filter(|r| pending.get(r).is_some_and(|&start| start < from))
                .collect();
            (ready, answered)
        });
        let (ready, answered) = chunk?;
        if hand_over(&mut run, ready, false, &mut each).is_break() {
            return Ok(run);
        }
        // Requests of earlier chunks answered here: their records again, from the earliest
        // start among them; those that started too long ago are given up.
        let mut again: Vec<(RequestId, u64)> = Vec::new();
        for r in answered {
            match pending.remove(&r) {
                Some(start) if end - start <= chunking.span_max => again.push((r, start)),
                _ => run.out_of_reach += 1,
            }
        }
        if let Some(lo) = again.iter().map(|&(_, start)| start).min() {
            let profiles = with_profiler(trace, lo, end, &mut events, &names, |_, profiler| {
                again
                    .iter()
                    .filter_map(|&(r, _)| profiler.request(r))
                    .collect::<Vec<_>>()
            })?;
            run.out_of_reach += (again.len() - profiles.len()) as u64;
            if hand_over(&mut run, profiles, true, &mut each).is_break() {
                return Ok(run);
            }
        }
        // What is still waiting and can no longer be answered within `span_max`.
        let before = pending.len();
        pending.retain(|_, start| end.saturating_sub(*start) < chunking.span_max);
        run.out_of_reach += (before - pending.len()) as u64;
        from = to;
        progress(from);
    }
    run.unanswered = pending.len() as u64;
    Ok(run)
}

/// Hands `each` these profiles, counting them, until it says stop.
fn hand_over(
    run: &mut ChunkedRun,
    profiles: Vec<RequestProfile>,
    reloaded: bool,
    each: &mut impl FnMut(RequestProfile) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for p in profiles {
        run.profiled += 1;
        run.reloaded += u64::from(reloaded);
        each(p)?;
    }
    ControlFlow::Continue(())
}

/// Loads records `[from, to)` as a trace of their own and hands `f` them with their
/// profiler, whose profiles come back numbered as in the whole trace.
fn with_profiler<T>(
    trace: &mut IndexedTrace,
    from: u64,
    to: u64,
    events: &mut Vec<Event>,
    names: &[String],
    f: impl FnOnce(&[Event], &Profiler) -> T,
) -> Result<T, IndexError> {
    trace.events(from, to, events)?;
    cut_links_before(events, from);
    let steps = Steps::new(events);
    let causality = Causality::new(&steps, events, names.len());
    let profiler = Profiler::new(events, &steps, &causality, names).numbered_from(from);
    Ok(f(events, &profiler))
}

/// Makes a chunk's records stand alone, as far as `Steps`, `Causality` and `Profiler` read
/// them: links become chunk positions, and those to records before the chunk point nowhere
/// (a delivery's send is unknown, a timer's setting out of range). Other links are left as
/// they are: nothing here reads them.
fn cut_links_before(events: &mut [Event], from: u64) {
    for e in events {
        match &mut e.record {
            Record::Deliver { send, .. } => *send = send.and_then(|s| s.checked_sub(from)),
            Record::Timer { set, .. } => *set = set.checked_sub(from).unwrap_or(u64::MAX),
            Record::ServiceIn { cause, .. } => *cause = cause.and_then(|c| c.checked_sub(from)),
            _ => {}
        }
    }
}
