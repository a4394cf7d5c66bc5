//! `retrace verify`: re-execute each node from its own log, in this process, and check that
//! it makes exactly the recorded outputs. The log supplies every input — deliveries, timer
//! firings, external requests, clock readings, the random seed, the storage found at boot —
//! and the node's code regenerates the outputs, which must match record for record.

use crate::log::RecordError;
use crate::log::{incomplete_marker, Log, LogRecord};
use crate::manifest::Manifest;
use crate::segments::{read_segments, SegmentsError};
use retrace_sim::check::{
    describe, peers_of, run_handler, CheckingEnv, Expected, HandlerError, Input, NodeWorld, Output,
    Place,
};
use retrace_sim::snapshot::{NodeSnapshot, SnapshotOf};
use retrace_sim::trace::Record;
use retrace_sim::{
    Boot, ConnId, Model, Node, NodeId, RequestId, Scenario, StepRng, Storage, TimerId,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The first place a node did something other than what its log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub node: String,
    pub log: String,
    /// Index of the record in the log (0 = the first record after the header).
    pub record: usize,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}), record {}:\n  expected (log): {}\n  actual (code):  {}",
            self.node, self.log, self.record, self.expected, self.actual
        )
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub logs: usize,
    pub events: u64,
    pub outputs: u64,
    pub mismatches: Vec<Mismatch>,
    /// Logs that could not be checked (missing, unreadable, corrupt), by name: the run
    /// is not verified while any is listed.
    pub unreadable: Vec<String>,
    /// Logs cut where a crash or a full disk cuts them, verified up to their last
    /// complete step: where, why, and how much was left out.
    pub cut: Vec<String>,
    /// Snapshots the re-executed node was checked against (each must equal it).
    pub snapshots: u64,
    /// Lives whose oldest segments retention deleted, verified from the first snapshot
    /// kept; and lives retention deleted whole.
    pub retired: Vec<String>,
}

/// What re-executing one life's log checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub events: u64,
    pub outputs: u64,
    /// Snapshots passed and found equal to the re-executed node.
    pub snapshots: u64,
}

/// The outputs of the step whose input is record `input`, as the checking environment
/// expects them, and the index one past the step (the next input, or the log's end marker).
/// Log lines are not outputs: logging added to node code still verifies old logs.
fn step_outputs(records: &[LogRecord], input: usize) -> (Vec<Output<'_>>, usize) {
    let mut out = Vec::new();
    let mut at = input + 1;
    while let Some(r) = records.get(at) {
        let expected = match r {
            _ if r.is_input() => break,
            LogRecord::Stop { .. } | LogRecord::Incomplete { .. } | LogRecord::Snapshot { .. } => {
                break
            }
            LogRecord::Send { to, digest, .. } => Expected::Send {
                to: NodeId(*to),
                digest: *digest,
            },
            LogRecord::TimerSet {
                timer,
                tag,
                after_ns,
            } => Expected::TimerSet {
                timer: TimerId(*timer),
                tag,
                after_ns: *after_ns,
            },
            LogRecord::TimerCancel { timer } => Expected::TimerCancel {
                timer: TimerId(*timer),
            },
            LogRecord::Annotate { text } => Expected::Annotate { text },
            LogRecord::ClockRead { value_ns } => Expected::ClockRead {
                value_ns: *value_ns,
            },
            LogRecord::Respond { request, digest } => Expected::Respond {
                request: RequestId(*request),
                digest: *digest,
            },
            LogRecord::ServiceOut { conn, op } => Expected::ServiceOut {
                conn: ConnId(*conn),
                op,
            },
            // What the model's HTTP mapping made, not node code: not checked.
            LogRecord::Log { .. }
            | LogRecord::Mark { .. }
            | LogRecord::HttpRequest { .. }
            | LogRecord::HttpResponse { .. }
            | LogRecord::Tap { .. } => {
                at += 1;
                continue;
            }
            // Inputs and end markers stopped the walk above.
            LogRecord::Start { .. }
            | LogRecord::Deliver { .. }
            | LogRecord::Timer { .. }
            | LogRecord::External { .. }
            | LogRecord::ServiceIn { .. } => break,
        };
        out.push(Output { at, expected });
        at += 1;
    }
    (out, at)
}

/// A log record as a mismatch shows it.
fn show(r: &LogRecord) -> String {
    match r {
        LogRecord::Send { to, digest, .. } => describe(&Record::Send {
            to: NodeId(*to),
            digest: *digest,
        }),
        LogRecord::Respond { request, digest } => describe(&Record::Respond {
            request: RequestId(*request),
            digest: *digest,
        }),
        other => format!("{other:?}"),
    }
}

/// Whether the re-executed node's state is the snapshot's: the same bytes, or (for a node
/// whose state holds a map the codec writes in no fixed order) the same value.
fn same_state<N: Node>(node: &N, snapshot: &[u8], encoded: &[u8]) -> bool {
    if snapshot == encoded {
        return true;
    }
    match retrace_sim::codec::decode::<N>(snapshot) {
        Ok(recorded) => {
            matches!((serde_json::to_value(&recorded), serde_json::to_value(node)), (Ok(a), Ok(b)) if a == b)
        }
        Err(_) => false,
    }
}

/// Re-executes one life's log, from its boot or (when retention deleted its start) from
/// its first snapshot; every later snapshot must equal the node re-execution reached.
/// `first_record` is the index in the life of `log.records[0]`, for the places reported.
pub fn verify_log<M: Model>(
    scenario: &Scenario<M::Options>,
    log: &Log,
    first_record: u64,
    log_name: &str,
) -> Result<Verified, Mismatch> {
    let id = NodeId(log.header.node);
    let node_name = log.header.name.clone();
    let mismatch = |record: usize, expected: String, actual: String| Mismatch {
        node: node_name.clone(),
        log: log_name.to_string(),
        record: record + first_record as usize,
        expected,
        actual,
    };
    let n = scenario.nodes.len();
    if id.index() >= n {
        return Err(mismatch(
            0,
            format!("a node of a {n}-node cluster"),
            format!("node id {}", id.0),
        ));
    }
    let peers = peers_of(id, n);
    let records = &log.records;
    let mut node: Option<M::Node> = None;
    let mut rng = StepRng::new(0);
    let mut storage = Storage::default();
    let mut timers = BTreeSet::new();
    let mut boot = Boot::First;
    let mut done = Verified::default();
    let mut i = 0usize;
    while i < records.len() {
        let record = &records[i];
        if !record.is_input() {
            match record {
                LogRecord::Stop { .. } | LogRecord::Incomplete { .. } | LogRecord::Mark { .. } => {
                    i += 1;
                    continue;
                }
                LogRecord::Snapshot { snapshot, .. } => {
                    match node.as_ref() {
                        // The log starts here (its earlier segments were deleted).
                        None => {
                            let r = snapshot.resume::<M::Node>().map_err(|e| {
                                mismatch(i, "a snapshot of this model's node".into(), e)
                            })?;
                            node = Some(r.node);
                            (rng, storage, timers, boot) = (r.rng, r.storage, r.timers, r.boot);
                        }
                        Some(state) => {
                            let reached = NodeSnapshot::take(SnapshotOf {
                                node: state,
                                storage: &storage,
                                timers: &mut timers.iter().copied(),
                                rng: &rng,
                                boot,
                            })
                            .map_err(|e| mismatch(i, "the snapshot".into(), e.to_string()))?;
                            let mut differ = reached.differences(snapshot);
                            if same_state(state, &snapshot.state, &reached.state) {
                                differ.retain(|d| *d != "node state");
                            }
                            if !differ.is_empty() {
                                return Err(mismatch(
                                    i,
                                    "the node as this snapshot records it".into(),
                                    format!(
                                        "re-execution reached a different {}",
                                        differ.join(", ")
                                    ),
                                ));
                            }
                            done.snapshots += 1;
                        }
                    }
                    i += 1;
                    continue;
                }
                other => {
                    return Err(mismatch(
                        i,
                        show(other),
                        "no output: the step had already ended".into(),
                    ))
                }
            }
        }
        let (request_ids, input): (Vec<RequestId>, Input<'_>) = match record {
            LogRecord::Start {
                seed,
                restart,
                storage: found,
                ..
            } => {
                boot = if *restart { Boot::Restart } else { Boot::First };
                rng = StepRng::new(*seed);
                storage = Storage::from_synced(found.iter().cloned().collect::<BTreeMap<_, _>>());
                timers.clear();
                node = Some(M::build(&scenario.options, id));
                (Vec::new(), Input::Start)
            }
            LogRecord::Deliver {
                id: msg_id,
                payload,
                request_ids,
                ..
            } => (
                request_ids.iter().map(|&r| RequestId(r)).collect(),
                Input::Deliver {
                    from: NodeId(msg_id.node),
                    payload,
                },
            ),
            LogRecord::Timer {
                timer,
                tag,
                request_ids,
                ..
            } => {
                // A fired timer is no longer active: cancelling it now is a no-op, as in
                // the runtime.
                timers.remove(&TimerId(*timer));
                (
                    request_ids.iter().map(|&r| RequestId(r)).collect(),
                    Input::Timer {
                        timer: TimerId(*timer),
                        tag,
                    },
                )
            }
            LogRecord::External {
                request, payload, ..
            } => (vec![RequestId(*request)], Input::External { payload }),
            LogRecord::ServiceIn {
                conn,
                request_ids,
                event,
                ..
            } => (
                request_ids.iter().map(|&r| RequestId(r)).collect(),
                Input::Service {
                    conn: ConnId(*conn),
                    event,
                },
            ),
            // `is_input` let only the inputs through.
            other => return Err(mismatch(i, show(other), "an input".into())),
        };
        let Some(state) = node.as_mut() else {
            return Err(mismatch(
                i,
                format!("{record:?}"),
                "an input before the node started".into(),
            ));
        };
        rng.begin_step(&request_ids);
        let (expected, end) = step_outputs(records, i);
        let mut env = CheckingEnv::<<M::Node as Node>::Msg>::new(
            Place {
                id,
                peers: &peers,
                node_count: n,
            },
            &expected,
            end,
            request_ids,
            NodeWorld {
                rng: &mut rng,
                storage: &mut storage,
                timers: &mut timers,
                boot,
            },
            // Recorded handlers report measured time (in the log's inputs), not `ctx.busy`.
            false,
        );
        match run_handler(state, &mut env, input) {
            Err(HandlerError::Panicked(text)) => {
                return Err(mismatch(
                    i,
                    "the handler returns".into(),
                    format!("the node panicked: {text}"),
                ));
            }
            Err(HandlerError::Undecodable(e)) => return Err(mismatch(i, format!("{record:?}"), e)),
            Ok(()) => {}
        }
        match env.finish() {
            Ok(matched) => done.outputs += matched as u64,
            Err(m) => return Err(mismatch(m.at, m.expected, m.actual)),
        }
        done.events += 1;
        i = end;
    }
    Ok(done)
}

/// Verifies every log of the run in `dir`.
pub fn verify_dir<M: Model>(
    dir: &Path,
    scenario: &Scenario<M::Options>,
) -> Result<VerifyReport, RecordError> {
    let manifest = Manifest::read(dir)?;
    let mut report = VerifyReport::default();
    for (node, mn) in manifest.nodes.iter().enumerate() {
        for inc in &mn.incarnations {
            if inc.log.is_empty() {
                continue;
            }
            let path = dir.join(&inc.log);
            let read = match read_segments(dir, &mn.name, &inc.log) {
                Ok(read) => read,
                Err(SegmentsError::Retired) => {
                    report.retired.push(format!(
                        "{}: {} deleted whole by retention",
                        mn.name, inc.log
                    ));
                    continue;
                }
                // A life that started on a full disk has a log with no room for its header.
                Err(e) if inc.recording_stopped.is_some() || incomplete_marker(&path).exists() => {
                    report.cut.push(format!(
                        "{}: {} recorded nothing ({e}): its recording had stopped",
                        mn.name, inc.log
                    ));
                    continue;
                }
                Err(e) => {
                    report.unreadable.push(format!("{}: {e}", mn.name));
                    continue;
                }
            };
            let log = &read.log;
            report.logs += 1;
            if read.first_segment > 0 {
                report.retired.push(format!(
                    "{}: {} verified from segment {}'s snapshot (segments before it deleted by retention)",
                    mn.name, inc.log, read.first_segment
                ));
            }
            if let Some(cut) = &log.cut {
                let line = format!("{}: {} {cut}", mn.name, inc.log);
                if cut.is_expected() || inc.recording_stopped.is_some() {
                    report.cut.push(line);
                } else {
                    report
                        .unreadable
                        .push(format!("{line} (corrupt: bytes after it are lost)"));
                }
            }
            let expected_node = NodeId(node as u32);
            if NodeId(log.header.node) != expected_node {
                report.unreadable.push(format!(
                    "{}: {} is node {}'s log, not node {}'s",
                    mn.name, inc.log, log.header.node, expected_node.0
                ));
                continue;
            }
            match verify_log::<M>(scenario, log, read.first_record, &inc.log) {
                Ok(done) => {
                    report.events += done.events;
                    report.outputs += done.outputs;
                    report.snapshots += done.snapshots;
                }
                Err(m) => report.mismatches.push(m),
            }
        }
    }
    Ok(report)
}
