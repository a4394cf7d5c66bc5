//! `retrace merge`: the logs of a recorded run become one trace.
//!
//! Each node's logs (its incarnations in order) give its program order; each delivery names
//! the message id of its send. The merged order is a topological order of that
//! happens-before graph, choosing among ready events by wall-clock time, then node id, then
//! position: deterministic, consistent with causality, and close to real time. Times in the
//! trace are the recorded wall-clock times (which may step back between nodes whose clocks
//! disagree; causality never does).
//!
//! A missing or torn log is reported by name and the rest still merges: messages whose send
//! was not recorded become external inputs at their receivers. Deliveries duplicated by
//! reconnects are dropped by message id.

use crate::log::{read_log, LogRecord, Timing};
use crate::manifest::Manifest;
use crate::wire::MsgId;
use retrace_sim::codec;
use retrace_sim::trace::{Header, NodeInfo, Origin, Outcome, TraceOut, TraceReader, TraceWriter};
use retrace_sim::{NodeId, RequestId, TimerId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::Path;

/// What the merge did, and what it could not use.
#[derive(Debug, Default)]
pub struct MergeReport {
    pub logs: usize,
    pub steps: u64,
    pub records: u64,
    pub bytes: u64,
    /// Messages whose send is not in any log, delivered without a causal link.
    pub black_box_messages: u64,
    pub duplicates_dropped: u64,
    /// Missing, torn or incomplete logs, by name.
    pub problems: Vec<String>,
}

enum Input {
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
        tag: u64,
        request_ids: Vec<RequestId>,
    },
    External {
        request: RequestId,
        payload: Vec<u8>,
    },
    Crash,
}

struct Step {
    /// Measured waiting and handler time of the step (recorded runs).
    timing: Timing,
    node: u32,
    incarnation: u32,
    /// Position in the node's program order.
    local: usize,
    wall_ns: u64,
    input: Input,
    outputs: Vec<LogRecord>,
}

impl Step {
    /// The id of the message a `Send` output of this step carries.
    fn sent_id(&self, output: &LogRecord) -> Option<MsgId> {
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
fn load_steps(dir: &Path, manifest: &Manifest, report: &mut MergeReport) -> Vec<Vec<Step>> {
    let mut per_node = Vec::new();
    for (node, mn) in manifest.nodes.iter().enumerate() {
        let mut steps: Vec<Step> = Vec::new();
        for (inc, incarnation) in mn.incarnations.iter().enumerate() {
            if incarnation.log.is_empty() {
                continue;
            }
            let path = dir.join(&incarnation.log);
            let log = match read_log(&path) {
                Ok(log) => log,
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
            let mut last_wall = 0;
            for mut record in log.records {
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
                    LogRecord::Stop { .. } => None,
                    other => {
                        if let Some(step) = steps.last_mut().filter(|s| s.incarnation == inc as u32)
                        {
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
                        node: node as u32,
                        incarnation: inc as u32,
                        local,
                        wall_ns: last_wall,
                        input,
                        outputs: Vec::new(),
                    });
                }
            }
            // A life that did not stop cleanly ended in a crash (the launcher's SIGKILL, or a
            // failure): the trace says so, as the simulator's would.
            let killed = incarnation.ended.crashed();
            if killed {
                let local = steps.len();
                steps.push(Step {
                    timing: Timing::default(),
                    node: node as u32,
                    incarnation: inc as u32,
                    local,
                    wall_ns: last_wall,
                    input: Input::Crash,
                    outputs: Vec::new(),
                });
            }
        }
        per_node.push(steps);
    }
    per_node
}

/// Merges the run in `dir` into a trace at `out`.
pub fn merge(dir: &Path, out: &Path) -> Result<MergeReport, String> {
    let manifest = Manifest::read(dir)?;
    let mut report = MergeReport::default();
    let mut per_node = load_steps(dir, &manifest, &mut report);

    // Every message some log says was sent.
    let sent: BTreeSet<MsgId> = per_node
        .iter()
        .flatten()
        .flat_map(|step| step.outputs.iter().filter_map(|o| step.sent_id(o)))
        .collect();
    // Deliveries: drop duplicates; those whose send is unknown become external inputs.
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
    // Kahn's algorithm over program order plus send -> delivery.
    let mut waiting_on_send: BTreeMap<MsgId, Vec<(usize, usize)>> = BTreeMap::new();
    let mut blocked_by_send = vec![Vec::new(); per_node.len()];
    for (node, steps) in per_node.iter().enumerate() {
        blocked_by_send[node] = vec![false; steps.len()];
        for (pos, s) in steps.iter().enumerate() {
            if let Input::Deliver {
                id, unsent: false, ..
            } = &s.input
            {
                waiting_on_send.entry(*id).or_default().push((node, pos));
                blocked_by_send[node][pos] = true;
            }
        }
    }
    let mut next_pos = vec![0usize; per_node.len()];
    let mut ready: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let push_if_ready = |ready: &mut BinaryHeap<Reverse<(u64, usize, usize)>>,
                         node: usize,
                         pos: usize,
                         per_node: &Vec<Vec<Step>>,
                         blocked: &Vec<Vec<bool>>| {
        if let Some(s) = per_node[node].get(pos) {
            if !blocked[node][pos] {
                ready.push(Reverse((s.wall_ns, node, pos)));
            }
        }
    };
    for node in 0..per_node.len() {
        push_if_ready(&mut ready, node, 0, &per_node, &blocked_by_send);
    }

    let header = Header {
        origin: Origin::Recorded {
            description: format!("merged from {} ({} logs)", dir.display(), report.logs),
        },
        model: manifest.model.clone(),
        scenario_name: manifest.scenario_name.clone(),
        scenario_toml: manifest.scenario_toml.clone(),
        nodes: manifest
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                role: n.role.clone(),
            })
            .collect(),
        writer: concat!("retrace-recorder ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    let file = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut trace = TraceOut::new(Some(TraceWriter::to_sink(&header, Box::new(file))));
    let mut send_index: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut timer_ids: BTreeMap<(u32, u32, u64), (TimerId, u64)> = BTreeMap::new();
    let mut next_timer = 0u64;
    let mut prev: Vec<Option<u64>> = vec![None; per_node.len()];
    let total: usize = per_node.iter().map(Vec::len).sum();
    let mut emitted = 0usize;
    let mut last_wall = 0u64;

    while emitted < total {
        let Some(Reverse((_, node, pos))) = ready.pop() else {
            // A cycle can only come from inconsistent logs: free the earliest blocked step by
            // delivering its message with no causal link.
            let stuck = (0..per_node.len())
                .filter(|&n| next_pos[n] < per_node[n].len())
                .min_by_key(|&n| (per_node[n][next_pos[n]].wall_ns, n))
                .ok_or("merge made no progress")?;
            let pos = next_pos[stuck];
            report.problems.push(format!(
                "{}: step {pos} waits on a send that never comes; delivered unlinked",
                manifest.nodes[stuck].name
            ));
            blocked_by_send[stuck][pos] = false;
            if let Input::Deliver { unsent, .. } = &mut per_node[stuck][pos].input {
                *unsent = true;
                report.black_box_messages += 1;
            }
            push_if_ready(&mut ready, stuck, pos, &per_node, &blocked_by_send);
            continue;
        };
        debug_assert_eq!(pos, next_pos[node], "program order");
        let step = &per_node[node][pos];
        let id = NodeId(step.node);
        let now = step.wall_ns;
        last_wall = last_wall.max(now);
        let p = prev[node];
        let index = match &step.input {
            Input::Start {
                seed,
                restart: false,
                ..
            } => trace.push(|e, o| e.start(o, id, now, p, *seed)),
            Input::Start {
                seed,
                restart: true,
                storage_digest,
                storage,
            } => {
                let index = trace.push(|e, o| e.restart(o, id, now, p, *seed, *storage_digest));
                trace.push(|e, o| e.storage_image(o, storage));
                index
            }
            Input::Deliver {
                id: msg,
                payload,
                request_ids,
                unsent,
            } => {
                let send = if *unsent {
                    None
                } else {
                    send_index.get(msg).copied()
                };
                let from = NodeId(msg.node);
                trace.push(|e, o| e.deliver(o, id, now, p, from, send, request_ids, payload))
            }
            Input::Timer {
                timer,
                tag,
                request_ids,
            } => {
                // A node's log holds a timer's setting before its firing; a log without
                // it is not one a node wrote, and a trace linking the firing elsewhere
                // would be refused by every reader.
                let (tid, set) = timer_ids
                    .get(&(step.node, step.incarnation, *timer))
                    .copied()
                    .ok_or_else(|| {
                        format!(
                            "{}: life {}: timer {timer} fires but its log never set it",
                            manifest.nodes[step.node as usize].name, step.incarnation
                        )
                    })?;
                trace.push(|e, o| e.timer(o, id, now, p, tid, *tag, set, request_ids))
            }
            Input::External { request, payload } => {
                trace.push(|e, o| e.external(o, id, now, p, *request, payload))
            }
            Input::Crash => trace.push(|e, o| e.crash(o, id, now, p)),
        };
        prev[node] = Some(index);
        let (queued_ns, busy_ns) = (step.timing.queued_us * 1000, step.timing.busy_us * 1000);
        if queued_ns > 0 {
            trace.push(|e, out| e.queued(out, queued_ns));
        }
        if busy_ns > 0 {
            trace.push(|e, out| e.busy(out, busy_ns));
        }
        for o in &step.outputs {
            match o {
                LogRecord::Send { to, seq, digest } => {
                    let msg = MsgId {
                        node: step.node,
                        incarnation: step.incarnation,
                        seq: *seq,
                    };
                    let i = trace.push(|e, out| e.send(out, NodeId(*to), *digest));
                    send_index.insert(msg, i);
                    if let Some(receivers) = waiting_on_send.get(&msg) {
                        for &(rn, rp) in receivers {
                            blocked_by_send[rn][rp] = false;
                            if next_pos[rn] == rp {
                                push_if_ready(&mut ready, rn, rp, &per_node, &blocked_by_send);
                            }
                        }
                    }
                }
                LogRecord::TimerSet {
                    timer,
                    tag,
                    after_ns,
                } => {
                    let tid = TimerId(next_timer);
                    next_timer += 1;
                    let i = trace.push(|e, out| e.timer_set(out, tid, *tag, *after_ns));
                    timer_ids.insert((step.node, step.incarnation, *timer), (tid, i));
                }
                LogRecord::TimerCancel { timer } => {
                    if let Some((tid, _)) = timer_ids.get(&(step.node, step.incarnation, *timer)) {
                        let tid = *tid;
                        trace.push(|e, out| e.timer_cancel(out, tid));
                    }
                }
                LogRecord::Annotate { text } => {
                    trace.push(|e, out| e.annotate(out, text));
                }
                LogRecord::Log {
                    level,
                    target,
                    text,
                } => {
                    trace.push(|e, out| e.log(out, *level, target, text));
                }
                LogRecord::ClockRead { value_ns } => {
                    trace.push(|e, out| e.clock_read(out, *value_ns));
                }
                LogRecord::Respond { request, digest } => {
                    trace.push(|e, out| e.respond(out, RequestId(*request), *digest));
                }
                LogRecord::Incomplete { reason, .. } => {
                    let text = format!("recording stopped here: {reason}");
                    trace.push(|e, out| e.annotate(out, &text));
                }
                _ => {}
            }
        }
        emitted += 1;
        report.steps += 1;
        next_pos[node] = pos + 1;
        push_if_ready(&mut ready, node, pos + 1, &per_node, &blocked_by_send);
    }
    trace.push(|e, o| e.end(o, last_wall, Outcome::Recorded));
    report.records = trace.next_index();
    let writer = trace.writer.take().ok_or("trace writer missing")?;
    report.bytes = writer
        .finish()
        .map_err(|e| format!("{}: {e}", out.display()))?;
    check_readable(out)?;
    Ok(report)
}

/// Reads the merged trace back through the reader every consumer uses: what merge writes,
/// every tool must be able to read, so a trace the validator would refuse is merge's
/// error, reported here rather than by the first tool to open it.
fn check_readable(out: &Path) -> Result<(), String> {
    let (_, mut reader) = TraceReader::open(out).map_err(|e| e.to_string())?;
    reader.by_ref().for_each(drop);
    match reader.tail_error() {
        Some(tail) => Err(format!(
            "{}: the merged trace does not read back: {tail}",
            out.display()
        )),
        None => Ok(()),
    }
}
