//! Emit: one step of a recorded node as trace records — its input, its measured timing, its
//! outputs — with message and timer ids translated into the trace's.

use super::load::{Input, Step};
use crate::log::LogRecord;
use crate::wire::MsgId;
use retrace_sim::trace::{InputHead, TraceOut};
use retrace_sim::{ConnId, NodeId, RequestId, Tag, TimerId};
use std::collections::BTreeMap;

/// How a mark shows in a trace: a `warn` log line of this target.
pub const MARK_TARGET: &str = "retrace::mark";
const MARK_LEVEL: u8 = 2;

/// What the trace written so far says about ids.
pub(super) struct Emitter {
    pub trace: TraceOut,
    /// Trace index of each message's send.
    send_index: BTreeMap<MsgId, u64>,
    /// (node, life, timer id) → index of its setting (or of the resume it was pending at).
    /// The ids are the logs': unique in the run (see the runtime's `run_unique_id`), and
    /// kept, because nodes hold their timers' ids in their state.
    timer_ids: BTreeMap<(u32, u32, u64), u64>,
    /// (node, life, connection id) → index of the node's latest operation on it: what the
    /// connection's next event answers. (Connections opened before a life's kept log
    /// starts have none: their events link nowhere.)
    service_ops: BTreeMap<(u32, u32, u64), u64>,
    /// Per node: trace index of its last input (the back-link of its next one).
    prev: Vec<Option<u64>>,
    /// The latest wall-clock time emitted (the end record's time).
    pub last_wall_ns: u64,
}

impl Emitter {
    pub fn new(trace: TraceOut, node_count: usize) -> Self {
        Emitter {
            trace,
            send_index: BTreeMap::new(),
            timer_ids: BTreeMap::new(),
            service_ops: BTreeMap::new(),
            prev: vec![None; node_count],
            last_wall_ns: 0,
        }
    }

    /// Writes one step; the messages it sent are pushed to `sent`.
    pub fn step(
        &mut self,
        step: &Step,
        names: &[String],
        sent: &mut Vec<MsgId>,
    ) -> Result<(), String> {
        let node = step.node as usize;
        let id = NodeId(step.node);
        let now = step.wall_ns;
        self.last_wall_ns = self.last_wall_ns.max(now);
        let head = InputHead::new(id, now, self.prev[node]);
        let trace = &mut self.trace;
        let index = match &step.input {
            Input::Start {
                seed,
                restart: false,
                ..
            } => trace.push(|e, o| e.start(o, head, *seed)),
            Input::Start {
                seed,
                restart: true,
                storage_digest,
                storage,
            } => {
                let index = trace.push(|e, o| e.restart(o, head, *seed, *storage_digest));
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
                    self.send_index.get(msg).copied()
                };
                let from = NodeId(msg.node);
                trace.push(|e, o| e.deliver(o, head, from, send, request_ids, payload))
            }
            Input::Timer {
                timer,
                tag,
                request_ids,
            } => {
                // A node's log holds a timer's setting before its firing; a log without
                // it is not one a node wrote, and a trace linking the firing elsewhere
                // would be refused by every reader.
                let set = self
                    .timer_ids
                    .get(&(step.node, step.incarnation, *timer))
                    .copied()
                    .ok_or_else(|| {
                        format!(
                            "{}: life {}: timer {timer} fires but its log never set it",
                            names[node], step.incarnation
                        )
                    })?;
                let tag = Tag::from_bytes(tag);
                trace.push(|e, o| e.timer(o, head, TimerId(*timer), &tag, set, request_ids))
            }
            Input::External { request, payload } => {
                trace.push(|e, o| e.external(o, head, *request, payload))
            }
            Input::Service {
                conn,
                request_ids,
                event,
            } => {
                let cause = self
                    .service_ops
                    .get(&(step.node, step.incarnation, *conn))
                    .copied();
                trace.push(|e, o| e.service_in(o, head, ConnId(*conn), cause, request_ids, event))
            }
            Input::Crash => trace.push(|e, o| e.crash(o, head)),
            Input::Resume { snapshot } => {
                // The pending timers' firings link here, as to their setting.
                let index = trace.push(|e, o| e.resume(o, head, snapshot));
                for t in &snapshot.timers {
                    self.timer_ids
                        .insert((step.node, step.incarnation, t.0), index);
                }
                index
            }
        };
        self.prev[node] = Some(index);
        let (queued_ns, busy_ns) = (step.timing.queued_us * 1000, step.timing.busy_us * 1000);
        if queued_ns > 0 {
            self.trace.push(|e, out| e.queued(out, queued_ns));
        }
        if busy_ns > 0 {
            self.trace.push(|e, out| e.busy(out, busy_ns));
        }
        for o in &step.outputs {
            self.output(step, o, sent);
        }
        Ok(())
    }

    /// What a tap saw: a world record at its time.
    pub fn wire(&mut self, tap: crate::tap::TapRecord) {
        self.last_wall_ns = self.last_wall_ns.max(tap.wall_ns);
        self.trace
            .push(|e, o| e.wire(o, tap.wall_ns, tap.conn, &tap.event));
    }

    fn output(&mut self, step: &Step, output: &LogRecord, sent: &mut Vec<MsgId>) {
        let trace = &mut self.trace;
        match output {
            LogRecord::Send { to, seq, digest } => {
                let msg = MsgId {
                    node: step.node,
                    incarnation: step.incarnation,
                    seq: *seq,
                };
                let i = trace.push(|e, out| e.send(out, NodeId(*to), *digest));
                self.send_index.insert(msg, i);
                sent.push(msg);
            }
            LogRecord::TimerSet {
                timer,
                tag,
                after_ns,
            } => {
                let tag = Tag::from_bytes(tag);
                let i = trace.push(|e, out| e.timer_set(out, TimerId(*timer), &tag, *after_ns));
                self.timer_ids
                    .insert((step.node, step.incarnation, *timer), i);
            }
            LogRecord::TimerCancel { timer }
                if self
                    .timer_ids
                    .contains_key(&(step.node, step.incarnation, *timer)) =>
            {
                trace.push(|e, out| e.timer_cancel(out, TimerId(*timer)));
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
            LogRecord::HttpRequest { request, http } => {
                trace.push(|e, out| e.http_request(out, RequestId(*request), http));
            }
            LogRecord::HttpResponse { request, http } => {
                trace.push(|e, out| e.http_response(out, RequestId(*request), http));
            }
            LogRecord::ServiceOut { conn, op } => {
                let i = trace.push(|e, out| e.service_out(out, ConnId(*conn), op));
                self.service_ops
                    .insert((step.node, step.incarnation, *conn), i);
            }
            // A mark is no output of node code: a log line (which replay does not check),
            // after the step it followed.
            LogRecord::Mark { reason, .. } => {
                let text = format!("mark: {reason}");
                trace.push(|e, out| e.log(out, MARK_LEVEL, MARK_TARGET, &text));
            }
            LogRecord::Incomplete { reason, .. } => {
                let text = format!("recording stopped here: {reason}");
                trace.push(|e, out| e.annotate(out, &text));
            }
            _ => {}
        }
    }
}
