//! Load: every log of a recorded run into program-ordered steps per node, with deliveries
//! deduplicated and those whose send no log holds marked as coming from a black box.

use super::MergeReport;
use crate::log::{LogRecord, Timing};
use crate::manifest::Manifest;
use crate::segments::{read_segments, SegmentsError};
use crate::wire::MsgId;
use retrace_sim::codec;
use retrace_sim::NodeSnapshot;
use retrace_sim::RequestId;
use std::collections::BTreeSet;
use std::path::Path;

pub(crate) enum Input {
    Start {
        seed: u64,
        restart: bool,
        storage_digest: u64,
        /// What the node found on disk (kept for restarts: replay starts from it).
        storage: Vec<(String, Vec<u8>)>,
    },
    Deliver {
        id: MsgId,
        payload: Vec<u8>,
        request_ids: Vec<RequestId>,
        /// The sender's log lost the send (a black box): delivered with no causal link.
        unsent: bool,
    },
    Timer {
        timer: u64,
        tag: Vec<u8>,
        request_ids: Vec<RequestId>,
    },
    External {
        request: RequestId,
        payload: Vec<u8>,
    },
    Service {
        conn: u64,
        request_ids: Vec<RequestId>,
        event: retrace_sim::ServiceEvent,
    },
    Crash,
    /// The life's log starts at this snapshot: retention deleted what came before.
    Resume {
        snapshot: NodeSnapshot,
    },
}

pub(crate) struct Step {
    /// Measured waiting and handler time of the step (recorded runs).
    pub timing: Timing,
    pub node: u32,
    pub incarnation: u32,
    /// Position in the node's program order.
    pub local: usize,
    pub wall_ns: u64,
    pub input: Input,
    pub outputs: Vec<LogRecord>,
}

impl Step {
    /// The id of the message a `Send` output of this step carries.
    pub fn sent_id(&self, output: &LogRecord) -> Option<MsgId> {
        match output {
            LogRecord::Send { seq, .. } => Some(MsgId {
                node: self.node,
                incarnation: self.incarnation,
                seq: *seq,
            }),
            _ => None,
        }
    }
}

fn storage_digest(entries: &[(String, Vec<u8>)]) -> u64 {
    let mut bytes = Vec::new();
    for (k, v) in entries {
        codec::put_bytes(&mut bytes, k.as_bytes());
        codec::put_bytes(&mut bytes, v);
    }
    codec::digest(&bytes)
}

/// Reads every log of the run in `dir` (as its manifest lists them) into program-ordered
/// steps per node.
pub(super) fn load_steps(
    dir: &Path,
    manifest: &Manifest,
    report: &mut MergeReport,
) -> Vec<Vec<Step>> {
    let mut per_node = Vec::new();
    for (node, mn) in manifest.nodes.iter().enumerate() {
        let mut steps: Vec<Step> = Vec::new();
        for (inc, incarnation) in mn.incarnations.iter().enumerate() {
            if incarnation.log.is_empty() {
                continue;
            }
            let log = match read_segments(dir, &mn.name, &incarnation.log) {
                Ok(read) => {
                    if read.first_segment > 0 {
                        report.retained.push(format!(
                            "{}: log {} starts at segment {}'s snapshot: retention deleted the segments before it",
                            mn.name, incarnation.log, read.first_segment
                        ));
                    }
                    read.log
                }
                Err(SegmentsError::Retired) => {
                    report.retained.push(format!(
                        "{}: log {} was deleted whole by retention; its node is a black box there",
                        mn.name, incarnation.log
                    ));
                    continue;
                }
                Err(e) => {
                    report.problems.push(format!(
                        "{}: log {} unusable ({e}); its node is a black box there",
                        mn.name, incarnation.log
                    ));
                    continue;
                }
            };
            report.logs += 1;
            if let Some(cut) = &log.cut {
                report.problems.push(format!(
                    "{}: log {} {cut}; its complete steps are merged",
                    mn.name, incarnation.log
                ));
            }
            push_life(
                &mut steps,
                node as u32,
                inc as u32,
                log.records,
                incarnation.ended.crashed(),
            );
        }
        per_node.push(steps);
    }
    per_node
}

/// Appends one life's records to its node's program-ordered `steps`: each input starts a
/// step, the records after it are its outputs; a life that `crashed` ends in a crash step.
/// (`capture` hands over part of a life: records from a snapshot to the window's end.)
pub(crate) fn push_life(
    steps: &mut Vec<Step>,
    node: u32,
    incarnation: u32,
    records: Vec<LogRecord>,
    crashed: bool,
) {
    let mut last_wall = 0;
    let mut first = true;
    for mut record in records {
        let at_start = std::mem::take(&mut first);
        let wall = record.wall_ns();
        let timing = record.timing_mut().copied().unwrap_or_default();
        let input = match record {
            LogRecord::Start {
                seed,
                restart,
                storage,
                ..
            } => Some(Input::Start {
                seed,
                restart,
                storage_digest: storage_digest(&storage),
                storage,
            }),
            LogRecord::Deliver {
                id,
                request_ids,
                payload,
                ..
            } => Some(Input::Deliver {
                id,
                payload,
                request_ids: request_ids.into_iter().map(RequestId).collect(),
                unsent: false,
            }),
            LogRecord::Timer {
                timer,
                tag,
                request_ids,
                ..
            } => Some(Input::Timer {
                timer,
                tag,
                request_ids: request_ids.into_iter().map(RequestId).collect(),
            }),
            LogRecord::External {
                request, payload, ..
            } => Some(Input::External {
                request: RequestId(request),
                payload,
            }),
            LogRecord::ServiceIn {
                conn,
                request_ids,
                event,
                ..
            } => Some(Input::Service {
                conn,
                request_ids: request_ids.into_iter().map(RequestId).collect(),
                event,
            }),
            LogRecord::Stop { .. } => None,
            // A snapshot where the kept log starts is where the node's history in
            // the trace starts; any later one only checks re-execution (`verify`).
            LogRecord::Snapshot { snapshot, .. } if at_start => Some(Input::Resume { snapshot }),
            LogRecord::Snapshot { .. } => None,
            other => {
                if let Some(step) = steps.last_mut().filter(|s| s.incarnation == incarnation) {
                    step.outputs.push(other);
                }
                None
            }
        };
        if let Some(w) = wall {
            last_wall = w;
        }
        if let Some(input) = input {
            let local = steps.len();
            steps.push(Step {
                timing,
                node,
                incarnation,
                local,
                wall_ns: last_wall,
                input,
                outputs: Vec::new(),
            });
        }
    }
    // A life that did not stop cleanly ended in a crash (the launcher's SIGKILL, or a
    // failure): the trace says so, as the simulator's would.
    if crashed {
        let local = steps.len();
        steps.push(Step {
            timing: Timing::default(),
            node,
            incarnation,
            local,
            wall_ns: last_wall,
            input: Input::Crash,
            outputs: Vec::new(),
        });
    }
}

/// Drops deliveries duplicated by reconnects (by message id) and marks those whose send is in
/// no log: they are delivered as coming from a black box, with no causal link.
pub(super) fn link_deliveries(per_node: &mut [Vec<Step>], report: &mut MergeReport) {
    // Every message some log says was sent.
    let sent: BTreeSet<MsgId> = per_node
        .iter()
        .flatten()
        .flat_map(|step| step.outputs.iter().filter_map(|o| step.sent_id(o)))
        .collect();
    for steps in per_node.iter_mut() {
        let mut seen = BTreeSet::new();
        steps.retain(|s| match &s.input {
            Input::Deliver { id, .. } => {
                let first = seen.insert(*id);
                if !first {
                    report.duplicates_dropped += 1;
                }
                first
            }
            _ => true,
        });
        for (pos, s) in steps.iter_mut().enumerate() {
            s.local = pos;
            if let Input::Deliver { id, unsent, .. } = &mut s.input {
                if !sent.contains(id) {
                    report.black_box_messages += 1;
                    *unsent = true;
                }
            }
        }
    }
}
