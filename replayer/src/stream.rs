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
use retrace_sim::trace::{read_records_at, Record, RecordPosition, TraceError, TraceReader};
use retrace_sim::{Event, Model, NodeId};
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
    replay_until::<M>(path, to, None, on_step).map(|(streamed, _)| streamed)
}

/// As [`replay_file`], and reading stops before the first step whose input is at or after
/// record `stop_before` (the steps after it are not counted); also returns the cluster as
/// the last applied step left it.
pub fn replay_until<M: Model>(
    path: &Path,
    to: Option<u64>,
    stop_before: Option<u64>,
    on_step: &mut dyn FnMut(&[Event]),
) -> Result<(Streamed, Cluster<M>), StreamError> {
    replay_span(
        path,
        Span {
            start: None,
            to,
            stop_before,
            watch_clients: false,
            on_step: &mut |step, _| on_step(step),
            on_boundary: &mut |_, _| {},
        },
    )
}

/// What a streaming replay covers, and what it reports on the way.
pub struct Span<'a, M: Model> {
    /// Start at this step boundary with the cluster as it was there (a state checkpoint
    /// taken by an earlier run's `on_boundary`) instead of at the trace's start.
    pub start: Option<(RecordPosition, Cluster<M>)>,
    /// Apply steps up to the one holding this record.
    pub to: Option<u64>,
    /// Stop reading before the step whose input is at or after this record.
    pub stop_before: Option<u64>,
    /// Keep each step's client events on the cluster (`Cluster::watch_clients`), for
    /// `on_step` to read.
    pub watch_clients: bool,
    /// Each step's records, once it is applied, and the cluster it left.
    pub on_step: &'a mut dyn FnMut(&[Event], &Cluster<M>),
    /// Between two applied steps: where the next one's input is, and the cluster there.
    pub on_boundary: &'a mut dyn FnMut(RecordPosition, &Cluster<M>),
}

/// Re-executes the steps of `span` straight from the file.
pub fn replay_span<M: Model>(
    path: &Path,
    span: Span<'_, M>,
) -> Result<(Streamed, Cluster<M>), StreamError> {
    let Span {
        start,
        to,
        stop_before,
        watch_clients,
        on_step,
        on_boundary,
    } = span;
    let (header, mut reader) = TraceReader::open(path).map_err(StreamError::Trace)?;
    let options = crate::engine::check_header::<M>(&header).map_err(StreamError::Replay)?;
    let node_names: Vec<String> = header.node_names();
    let rules = Rules::<M> {
        options: &options,
        node_names: &node_names,
        origin: &header.origin,
    };
    // Where the record after the last one read starts (to look ahead from a divergence).
    let mut last_time = 0u64;
    let mut last_input_node = None;
    // A reader in the middle of the file does not validate (its records link to ones it
    // never read): node ids are checked here instead, before they index anything.
    let mut checked_nodes = false;
    let mut cluster = match start {
        Some((at, cluster)) => {
            reader = TraceReader::open_at(path, at).map_err(StreamError::Trace)?;
            last_time = at.time_ns;
            last_input_node = at.step_node;
            checked_nodes = true;
            cluster
        }
        None => Cluster::<M>::initial(&options, node_names.len()),
    };
    if watch_clients {
        cluster.watch_clients();
    }
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
            if stop_before.is_some_and(|at| step[0].index >= at) {
                break;
            }
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
                            on_step(&step, &cluster);
                            if next.is_some() {
                                on_boundary(at, &cluster);
                            }
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
        if checked_nodes {
            let foreign = |n: &NodeId| n.index() >= node_names.len();
            let from = match &e.record {
                Record::Deliver { from, .. } => Some(from),
                _ => None,
            };
            if e.record.input_node().as_ref().is_some_and(foreign) || from.is_some_and(foreign) {
                return Err(StreamError::Replay(ReplayError(format!(
                    "record {} names a node the trace's header does not have (the file changed?)",
                    e.index
                ))));
            }
        }
        last_time = e.time_ns;
        last_is_end = matches!(e.record, Record::End { .. });
        if let Some(node) = e.record.input_node() {
            last_input_node = Some(node);
            open = true;
            step.push(e);
        } else if e.record.ends_step() {
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
    Ok((out, cluster))
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
