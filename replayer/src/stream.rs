//! Re-execution straight from the file, a step at a time: what `retrace replay` runs
//! without a terminal, in memory that does not grow with the trace.
//!
//! Steps are grouped as [`crate::Steps`] groups them (an input and the records after it,
//! until the next input or a record that happens between steps) and applied as a loaded
//! [`crate::Replay`] applies them (`engine::apply_step`). A step is applied once the record
//! after it has been read, so that the last step of a trace cut short — which may be
//! missing outputs — is left out, as `Replay::new` leaves it out.

use crate::engine::{apply_step, Cluster, Rules};
use crate::{Divergence, ReplayError, ReplayViolation};
use retrace_sim::trace::{
    read_records_at, Origin, Record, RecordPosition, TraceError, TraceReader,
};
use retrace_sim::{Event, Model};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Violations kept for the report; later ones are only counted (an invariant broken early
/// in a long run stays broken for every later step).
const VIOLATIONS_KEPT_MAX: usize = 10_000;

/// How far past a divergent send to look for its delivery, to show the recorded message.
const DELIVERY_LOOKAHEAD_RECORDS: usize = 1 << 16;

/// What a streaming replay found.
#[derive(Debug)]
pub struct Streamed {
    /// Steps in the trace (those a loaded replay would apply).
    pub steps: usize,
    /// Steps re-executed.
    pub applied: usize,
    pub divergence: Option<Box<Divergence>>,
    /// The first violations, in order; `violations_more` counts the rest.
    pub violations: Vec<ReplayViolation>,
    pub violations_more: usize,
    /// What stopped the reading before the end of the file.
    pub tail: Option<retrace_sim::trace::TailError>,
}

/// Why a streaming replay could not start or go on.
#[derive(Debug)]
pub enum StreamError {
    Trace(TraceError),
    Replay(ReplayError),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Trace(e) => write!(f, "{e}"),
            StreamError::Replay(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// Re-executes the trace at `path` with `M`, up to the step holding record `to` (all of it
/// by default). `on_step` sees each step's records once it is applied.
pub fn replay_file<M: Model>(
    path: &Path,
    to: Option<u64>,
    on_step: &mut dyn FnMut(&[Event]),
) -> Result<Streamed, StreamError> {
    let (header, mut reader) = TraceReader::open(path).map_err(StreamError::Trace)?;
    let options = crate::engine::check_header::<M>(&header).map_err(StreamError::Replay)?;
    let node_names: Vec<String> = header.nodes.iter().map(|n| n.name.clone()).collect();
    let rules = Rules::<M> {
        options: &options,
        node_names: &node_names,
        simulated: matches!(header.origin, Origin::Simulated { .. }),
    };
    let mut cluster = Cluster::<M>::initial(&options, node_names.len());
    let mut out = Streamed {
        steps: 0,
        applied: 0,
        divergence: None,
        violations: Vec::new(),
        violations_more: 0,
        tail: None,
    };
    // The step being read, and whether records may still join it.
    let mut step: Vec<Event> = Vec::new();
    let mut open = false;
    let mut stopped = false;
    let mut last_is_end = false;
    // Where the record after the last one read starts (to look ahead from a divergence).
    let mut last_time = 0u64;
    let mut last_input_node = None;
    loop {
        let at = RecordPosition {
            offset: reader.offset(),
            index: reader.records_read(),
            time_ns: last_time,
            step_node: last_input_node,
        };
        let next = reader.next();
        let starts_step = next
            .as_ref()
            .is_none_or(|e| e.record.input_node().is_some());
        // The step read so far is whole once another begins (or the trace ends cleanly).
        if starts_step && !step.is_empty() {
            let whole = next.is_some() || (last_is_end && reader.tail_error().is_none());
            if whole {
                out.steps += 1;
                let wanted = to.is_none_or(|to| step[0].index <= to);
                if !stopped && wanted {
                    let mut original = |send: u64| look_ahead(path, at, send);
                    match apply_step(&rules, &mut cluster, &step, &mut original, None) {
                        Ok(violations) => {
                            out.applied += 1;
                            for v in violations {
                                if out.violations.len() < VIOLATIONS_KEPT_MAX {
                                    out.violations.push(v);
                                } else {
                                    out.violations_more += 1;
                                }
                            }
                            on_step(&step);
                        }
                        Err(d) => {
                            out.divergence = Some(d);
                            stopped = true;
                        }
                    }
                } else {
                    stopped = true;
                }
            }
            step.clear();
        }
        let Some(e) = next else { break };
        last_time = e.time_ns;
        last_is_end = matches!(e.record, Record::End { .. });
        if let Some(node) = e.record.input_node() {
            last_input_node = Some(node);
            open = true;
            step.push(e);
        } else if matches!(
            e.record,
            Record::End { .. } | Record::Fault(_) | Record::Violation { .. }
        ) {
            open = false;
        } else if open && !step.is_empty() {
            step.push(e);
        }
    }
    out.tail = reader.tail_error().cloned();
    if let Some(tail) = &out.tail {
        if tail.is_structural() {
            return Err(StreamError::Trace(TraceError::Invalid {
                path: path.to_owned(),
                tail: tail.clone(),
            }));
        }
    }
    Ok(out)
}

/// The payload first delivered for the `Send` at `send`, looked for in the records from
/// `at` on (bounded).
fn look_ahead(path: &Path, at: RecordPosition, send: u64) -> Option<Vec<u8>> {
    let mut file = BufReader::new(File::open(path).ok()?);
    let mut records = Vec::new();
    read_records_at(&mut file, at, DELIVERY_LOOKAHEAD_RECORDS, &mut records).ok()?;
    records.into_iter().find_map(|e| match e.record {
        Record::Deliver {
            send: Some(s),
            payload,
            ..
        } if s == send => Some(payload),
        _ => None,
    })
}
