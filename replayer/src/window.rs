//! A window of a trace too large to load, as a trace of its own that replays: its records
//! from one step to another, each node that is up at the start resumed there from a
//! snapshot of the state re-execution reached (a `Resume` record, as `retrace capture`
//! starts a node), the partitions open at the start cut again, and every link into the
//! time before the window made to say so.
//!
//! Re-execution to the start streams from the file (`stream::replay_span`), so memory is
//! the window's, not the trace's. The first cut of a trace takes time proportional to
//! where its window starts; on the way it leaves the whole cluster's state every
//! `STATE_EVERY_RECORDS` records with the trace's index (and in its file), so any later cut
//! starts from the nearest of those and takes time proportional to the window. The window's records
//! come through the index a block at a time.
//!
//! Links that point before the window are rewritten, as a capture's are: a delivery whose
//! send is earlier arrives with no send ("from before the window"); an input's program-order
//! link and a timer's setting point at its node's `Resume` (the snapshot holds the pending
//! timers); drops and duplicates of earlier sends, and violations of earlier steps, are
//! left out; a node down at the start that restarts in the window finds its storage in an
//! image after its restart, as a recorded restart does. Record numbers change ([`Span`]).

use crate::describe::group;
use crate::engine::{Cluster, NodeState};
use crate::index::{FaultEntry, IndexError, IndexedTrace};
use crate::index::{StateCheckpoint, STATE_EVERY_RECORDS};
use crate::stream::{replay_span, Span as StreamSpan, StreamError};
use retrace_sim::trace::{
    FaultRecord, InputHead, Origin, Outcome, Record, TraceError, TraceOut, TraceWriter,
};
use retrace_sim::{codec, Event, Model, NodeId, Trace};
use std::collections::BTreeMap;
use std::path::Path;

/// Records read from the index per batch while the window is written.
const BATCH_RECORDS: u64 = 1 << 16;
/// Progress is reported every this many steps re-executed.
const PROGRESS_EVERY_STEPS: u64 = 4096;

/// A node's synced storage, as a storage image record lists it.
type StorageEntries = Vec<(String, Vec<u8>)>;

/// A window cut out of a trace.
pub struct Window {
    /// The window as a trace (validated, as a loaded file is) ...
    pub trace: Trace,
    /// ... and as the bytes of its file.
    pub bytes: Vec<u8>,
    /// Which of the trace's records it holds.
    pub span: Span,
    /// Nodes resumed from a snapshot at the start.
    pub resumed: usize,
    /// Steps re-executed to reach the start.
    pub reexecuted: usize,
}

impl Window {
    /// One line on what the window is: which records of which trace, and how it starts.
    pub fn describe(&self, trace: &Path) -> String {
        let span = &self.span;
        // Past the resumes at its start, the window numbers records as the trace does,
        // shifted by this much (drops of messages from before the window, and storage
        // images after restarts, move it by one here and there). A window that starts
        // within its first few records has more resumes than records before it: the shift
        // is then negative.
        let local = span.local(span.from).unwrap_or(span.from);
        let shift = if span.from >= local {
            format!("+{}", group(span.from - local))
        } else {
            format!("-{}", group(local - span.from))
        };
        format!(
            "events {}..{} of {} (event k here is about k{shift} there; {} steps re-executed to its start, {} nodes resumed there)",
            group(span.from),
            group(span.to),
            trace.display(),
            group(self.reexecuted as u64),
            self.resumed,
        )
    }
}

/// Which records of a trace a window holds, and how they are numbered in it.
///
/// The window is the trace's records `from..to`, renumbered, with records of its own
/// among them: cuts and resumes before them, a storage image after the restart of a node
/// that was down at the start; and without the records that speak only of the time before
/// it (drops and duplicates of messages sent before it). So the numbering is a list of
/// runs, each a stretch of the trace's records kept in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub from: u64,
    pub to: u64,
    /// In order of both numberings.
    runs: Vec<Run>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    /// The window's number of the run's first record.
    local: u64,
    /// The trace's number of it.
    original: u64,
    len: u64,
}

impl Span {
    /// The trace's record number of the window's record `k`, if it is one of the trace's.
    pub fn original(&self, k: u64) -> Option<u64> {
        let r = self.runs[..self.runs.partition_point(|r| r.local <= k)].last()?;
        (k - r.local < r.len).then(|| r.original + (k - r.local))
    }

    /// The window's record number of the trace's record `i`, if the window holds it.
    pub fn local(&self, i: u64) -> Option<u64> {
        let r = self.runs[..self.runs.partition_point(|r| r.original <= i)].last()?;
        (i - r.original < r.len).then(|| r.local + (i - r.original))
    }

    /// Notes that the trace's record `original` is the window's record `local`.
    fn keep(&mut self, local: u64, original: u64) {
        match self.runs.last_mut() {
            Some(r) if r.local + r.len == local && r.original + r.len == original => r.len += 1,
            _ => self.runs.push(Run {
                local,
                original,
                len: 1,
            }),
        }
    }
}

#[derive(Debug)]
pub enum WindowError {
    Index(IndexError),
    Stream(StreamError),
    /// Re-executing the trace diverged before the window (its states there are unknown).
    Diverged {
        at: u64,
        what: String,
    },
    /// A node's state would not encode as a snapshot.
    Snapshot {
        node: String,
        error: String,
    },
    /// A record of the window links where the window cannot follow.
    Link {
        at: u64,
        what: String,
    },
    /// The cut trace did not validate (a link this module failed to rewrite).
    Cut(TraceError),
}

impl std::fmt::Display for WindowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowError::Index(e) => write!(f, "{e}"),
            WindowError::Stream(e) => write!(f, "{e}"),
            WindowError::Diverged { at, what } => write!(
                f,
                "re-executing to the window diverged at record {at}: {what}; the window cannot start after it"
            ),
            WindowError::Snapshot { node, error } => {
                write!(f, "{node}'s state does not encode as a snapshot: {error}")
            }
            WindowError::Link { at, what } => write!(f, "record {at}: {what}"),
            WindowError::Cut(e) => write!(f, "the window does not form a valid trace: {e}"),
        }
    }
}

impl std::error::Error for WindowError {}

impl From<IndexError> for WindowError {
    fn from(e: IndexError) -> Self {
        WindowError::Index(e)
    }
}

/// Where a window of about `records_max` records around record `around` starts and ends:
/// three quarters before it and one after (all before it at the trace's end), at step
/// boundaries, inside the trace.
pub fn bounds(
    indexed: &mut IndexedTrace,
    around: u64,
    records_max: u64,
) -> Result<(u64, u64), IndexError> {
    let len = indexed.len();
    let around = around.min(len.saturating_sub(1));
    let before = records_max / 4 * 3;
    let mut want_from = around.saturating_sub(before);
    let mut want_to = want_from.saturating_add(records_max);
    if want_to > len {
        // Near the end: the window takes more of what came before instead.
        want_from = len.saturating_sub(records_max);
        want_to = len;
    }
    let want_to = want_to.max(around + 1);
    let from = if want_from == 0 {
        0
    } else {
        indexed.step_at_or_before(want_from)?.unwrap_or(0)
    };
    // A step is never split: the window ends before the step that would not fit.
    let to = if want_to >= len {
        len
    } else {
        match indexed.step_at_or_before(want_to)? {
            Some(input) if input > around => input,
            _ => want_to,
        }
    };
    Ok((from, to))
}

/// Cuts the trace's records `from..to` (`from` an input or 0) out as a [`Window`];
/// `progress` sees the record re-execution has reached.
pub fn cut<M: Model>(
    path: &Path,
    indexed: &mut IndexedTrace,
    from: u64,
    to: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Window, WindowError> {
    let header = indexed.header().clone();
    let to = to.min(indexed.len());
    let options = crate::engine::check_header::<M>(&header)
        .map_err(|e| WindowError::Stream(StreamError::Replay(e)))?;
    // Start from the latest state checkpoint an earlier cut left before the window (one
    // that does not thaw is passed over: the run's start is always there).
    let start = indexed.state_at_or_before(from).and_then(|cp| {
        let states: Vec<NodeState> = codec::decode(&cp.nodes).ok()?;
        let cluster = Cluster::<M>::from_states(&options, &states, cp.applied as usize).ok()?;
        Some((cp.position(), cluster))
    });
    let mut last_state = start.as_ref().map_or(0, |(at, _)| at.index);
    let mut states: Vec<StateCheckpoint> = Vec::new();
    let mut steps = 0u64;
    let (streamed, cluster) = replay_span::<M>(
        path,
        StreamSpan {
            start,
            to: None,
            stop_before: Some(from),
            watch_clients: false,
            on_step: &mut |step, _| {
                steps += 1;
                if steps.is_multiple_of(PROGRESS_EVERY_STEPS) {
                    progress(step[0].index);
                }
            },
            // Leave checkpoints for later cuts: every so often, and at the window's start.
            on_boundary: &mut |at, cluster| {
                let due = at.index >= last_state + STATE_EVERY_RECORDS || at.index == from;
                if !due {
                    return;
                }
                let Ok(checkpoint) = cluster
                    .states()
                    .and_then(|s| StateCheckpoint::new(at, cluster.applied as u64, &s))
                else {
                    return;
                };
                last_state = at.index;
                states.push(checkpoint);
            },
        },
    )
    .map_err(WindowError::Stream)?;
    if let Some(d) = streamed.divergence {
        return Err(WindowError::Diverged {
            at: d.record_index as u64,
            what: d.to_string(),
        });
    }
    // The periodic states a long re-execution left are worth rewriting the index file for
    // (they save a later process that much re-execution). The one at the window's own
    // start is kept for this process only (the TUI paging back to the window): it saves
    // less than a rewrite of the whole index costs.
    if states.iter().any(|s| s.index != from) {
        indexed.add_states(states);
    } else {
        indexed.remember_states(states);
    }
    let start_ns = if from < indexed.len() {
        indexed.event(from)?.time_ns
    } else {
        0
    };
    let mut out = TraceOut::new(Some(TraceWriter::in_memory(&header)));
    // The partitions open at the start: cut before the window, not yet healed.
    let mut open: BTreeMap<u32, &Vec<(NodeId, NodeId)>> = BTreeMap::new();
    for f in &indexed.layout.faults {
        match f {
            FaultEntry::Cut { record, id, links } if *record < from => {
                open.insert(*id, links);
            }
            FaultEntry::Heal { record, id } if *record < from => {
                open.remove(id);
            }
            _ => {}
        }
    }
    for (id, links) in open {
        let fault = FaultRecord::Cut {
            id,
            links: links.clone(),
        };
        out.push(|e, o| e.fault(o, start_ns, &fault));
    }
    let mut resume_at: Vec<Option<u64>> = vec![None; header.nodes.len()];
    if from > 0 {
        for (i, at) in resume_at.iter_mut().enumerate() {
            let Some(snapshot) = cluster.snapshot(i) else {
                continue;
            };
            let snapshot = snapshot.map_err(|e| WindowError::Snapshot {
                node: header.nodes[i].name.clone(),
                error: e.0,
            })?;
            let head = InputHead::new(NodeId(i as u32), start_ns, None);
            *at = Some(out.push(|e, o| e.resume(o, head, &snapshot)));
        }
    }
    let resumed = resume_at.iter().flatten().count();
    let mut renumber = Renumber {
        span: Span {
            from,
            to,
            runs: Vec::new(),
        },
        resume_at,
    };
    // Per node down at the start: the storage it kept, for its restart in the window.
    let mut kept_storage: Vec<Option<StorageEntries>> = (0..header.nodes.len())
        .map(|i| {
            (from > 0 && renumber.resume_at[i].is_none())
                .then(|| cluster.synced_storage(i))
                .flatten()
        })
        .collect();
    let mut image: Option<StorageEntries> = None;
    let mut batch: Vec<Event> = Vec::new();
    let mut last_ns = start_ns;
    let mut ended = false;
    let mut at = from;
    while at < to {
        let upto = (at + BATCH_RECORDS).min(to);
        indexed.events(at, upto, &mut batch)?;
        if batch.is_empty() {
            break;
        }
        for e in batch.drain(..) {
            at = e.index + 1;
            last_ns = e.time_ns;
            let index = e.index;
            let rewritten = renumber
                .record(e.record)
                .map_err(|what| WindowError::Link { at: index, what })?;
            let Some(record) = rewritten else {
                continue;
            };
            ended |= matches!(record, Record::End { .. });
            // The window has not seen what a node down at its start wrote before it went
            // down: its restart reads that as a recorded restart does, from an image
            // right after it — unless the trace has one there already (a recording's,
            // which is what the node really found).
            if let Some(entries) = image.take() {
                if !matches!(record, Record::StorageImage { .. }) {
                    out.push(|enc, o| enc.storage_image(o, &entries));
                }
            }
            if let Record::Restart { node, .. } = record {
                image = kept_storage.get_mut(node.index()).and_then(Option::take);
            }
            let written = out.push(|enc, o| enc.record(o, e.time_ns, &record));
            renumber.span.keep(written, index);
        }
    }
    if let Some(entries) = image.take() {
        out.push(|enc, o| enc.storage_image(o, &entries));
    }
    if !ended {
        let outcome = match header.origin {
            Origin::Recorded { .. } => Outcome::Recorded,
            Origin::Simulated { .. } | Origin::Forked { .. } => Outcome::EventLimit,
        };
        out.push(|e, o| e.end(o, last_ns, outcome));
    }
    let bytes = out.writer.map(TraceWriter::into_bytes).unwrap_or_default();
    let name = format!("{} (records {from}..{to})", path.display());
    let trace = Trace::from_bytes(&bytes, &name).map_err(WindowError::Cut)?;
    Ok(Window {
        trace,
        bytes,
        span: renumber.span,
        resumed,
        reexecuted: streamed.applied,
    })
}

/// How the trace's record numbers become the window's.
struct Renumber {
    span: Span,
    /// Per node: its `Resume` record, if it was up at the start.
    resume_at: Vec<Option<u64>>,
}

impl Renumber {
    /// A record at or after the window's start, already written to the window.
    fn local(&self, i: u64) -> Result<u64, String> {
        self.span
            .local(i)
            .ok_or_else(|| format!("links to record {i}, which the window does not hold"))
    }

    /// A link along `node`'s history (program order, a timer's setting): before the
    /// window it is the node's `Resume`, or nothing if the node was down at the start.
    fn along(&self, node: NodeId, i: u64) -> Result<Option<u64>, String> {
        if i < self.span.from {
            Ok(self.resume_at.get(node.index()).copied().flatten())
        } else {
            self.local(i).map(Some)
        }
    }

    /// A message's send: none when it was sent before the window.
    fn send(&self, i: u64) -> Result<Option<u64>, String> {
        if i < self.span.from {
            Ok(None)
        } else {
            self.local(i).map(Some)
        }
    }

    /// The record with its links renumbered; `None` for a record that only speaks of
    /// the time before the window (a drop or duplicate of an earlier send), which the
    /// caller leaves out (and notes in the span).
    fn record(&self, record: Record) -> Result<Option<Record>, String> {
        let prev_of = |node: NodeId, prev: Option<u64>| match prev {
            Some(p) => self.along(node, p),
            None => Ok(None),
        };
        Ok(Some(match record {
            Record::Drop { send, .. } | Record::Duplicate { send } if send < self.span.from => {
                return Ok(None)
            }
            Record::Start { node, prev, seed } => Record::Start {
                node,
                prev: prev_of(node, prev)?,
                seed,
            },
            Record::Restart {
                node,
                prev,
                seed,
                storage_digest,
            } => Record::Restart {
                node,
                prev: prev_of(node, prev)?,
                seed,
                storage_digest,
            },
            Record::Resume {
                node,
                prev,
                snapshot,
            } => Record::Resume {
                node,
                prev: prev_of(node, prev)?,
                snapshot,
            },
            Record::Deliver {
                node,
                prev,
                from,
                send,
                request_ids,
                payload,
            } => Record::Deliver {
                node,
                prev: prev_of(node, prev)?,
                from,
                send: match send {
                    Some(s) => self.send(s)?,
                    None => None,
                },
                request_ids,
                payload,
            },
            Record::Timer {
                node,
                prev,
                timer,
                tag,
                set,
                request_ids,
            } => Record::Timer {
                node,
                prev: prev_of(node, prev)?,
                timer,
                tag,
                // Set before the window: the snapshot the node resumed from holds it.
                set: self.along(node, set)?.ok_or_else(|| {
                    format!(
                        "timer {} fires on a node that was down at the window's start",
                        timer.0
                    )
                })?,
                request_ids,
            },
            Record::External {
                node,
                prev,
                request,
                payload,
            } => Record::External {
                node,
                prev: prev_of(node, prev)?,
                request,
                payload,
            },
            Record::Crash { node, prev } => Record::Crash {
                node,
                prev: prev_of(node, prev)?,
            },
            // An operation before the window (a connect, a write): the node's resume stands
            // in for it, as for a timer's setting.
            Record::ServiceIn {
                node,
                prev,
                conn,
                cause,
                request_ids,
                event,
            } => Record::ServiceIn {
                node,
                prev: prev_of(node, prev)?,
                conn,
                cause: prev_of(node, cause)?,
                request_ids,
                event,
            },
            Record::Drop { send, reason } => Record::Drop {
                send: self.local(send)?,
                reason,
            },
            Record::Duplicate { send } => Record::Duplicate {
                send: self.local(send)?,
            },
            // A violation follows its step, which (as `from` is an input) is in the window.
            Record::Violation {
                step,
                invariant,
                message,
            } => Record::Violation {
                step: self.local(step)?,
                invariant,
                message,
            },
            other => other,
        }))
    }
}
