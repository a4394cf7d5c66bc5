//! One streaming pass over a trace's records that hands each exporter whole steps with what
//! they need (node, times, service time, request ids, the step that caused it, the vector
//! clock) and the world events between them. State kept: one step's records, each node's
//! clock, and the sends and timers still pending — never the whole trace.

use retrace_sim::trace::{Event, Record};
use retrace_sim::{ConnId, NodeId, RequestId, ServiceEvent, ServiceOp, TimerId};
use std::collections::{BTreeMap, VecDeque};
use std::io;

/// Which exported trace (Jaeger's and OTLP's unit) a step's span belongs to.
///
/// A request's steps form its trace. Work outside any request (boots, timers, what
/// `ctx.detach()` started) is exported too: a boot or a timer firing outside a request
/// starts a background trace, and the steps its messages cause join it — so a heartbeat and
/// the replies it drew are one trace, and the next heartbeat is the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TraceKey {
    Request(RequestId),
    /// Background work, named by the input index of the step that started it.
    Background(u64),
}

/// What caused a step: the step that sent its message or set its timer.
#[derive(Clone, Debug)]
pub struct Cause {
    /// The causing step's input record index.
    pub index: u64,
    pub node: NodeId,
    pub time_ns: u64,
    /// The `Send`, `TimerSet` or `ServiceOut` record.
    pub link: u64,
    pub by_message: bool,
    pub request_ids: Vec<RequestId>,
    /// The exported traces the causing step belongs to.
    pub traces: Vec<TraceKey>,
}

/// A call to a black-box service that a step's input (the service's event) completes:
/// from the node's oldest write on the connection not yet answered to the event — the time
/// spent in the service and on the wire, which no step of the trace accounts for.
#[derive(Clone, Debug)]
pub struct ServiceCall {
    pub conn: ConnId,
    /// The service, from the connection's connect (empty when that is not in the trace).
    pub service: String,
    /// The write's record index.
    pub write: u64,
    /// The writing step: its time, its input index (the call's parent span), its node.
    pub start_ns: u64,
    pub writer: u64,
    pub writer_node: NodeId,
    /// The exported traces the writing step belongs to.
    pub traces: Vec<TraceKey>,
    /// What was written.
    pub bytes: Vec<u8>,
}

/// One step as exporters see it.
pub struct StepInfo<'a> {
    /// The step's number (0-based, trace order).
    pub step: u64,
    pub input: &'a Event,
    /// The records after the input that belong to the step (outputs, clock reads, ...).
    pub rest: &'a [Event],
    pub node: NodeId,
    pub busy_ns: u64,
    pub queued_ns: u64,
    pub request_ids: &'a [RequestId],
    pub cause: Option<&'a Cause>,
    /// The exported traces this step belongs to (none for a crash, which runs no code):
    /// its own requests' (or its background work's), and those of the requests it answered
    /// from outside them (`respond_to` once a commit or a batch decided them).
    pub traces: &'a [TraceKey],
    /// Requests this step answered that are not its own, each with the input index of the
    /// step it arrived in (when the walk saw it).
    pub answered: &'a [(RequestId, Option<u64>)],
    /// The node's vector clock after this step (entry k: steps of node k that precede it,
    /// itself included).
    pub clock: &'a [u32],
    /// The service call this step's input (a service's event) completes, if any.
    pub service_call: Option<&'a ServiceCall>,
}

impl StepInfo<'_> {
    /// Whether this step's span has a parent in trace `key`: its cause is in the same trace.
    pub fn parent_in(&self, key: TraceKey) -> Option<&Cause> {
        self.cause.filter(|c| c.traces.contains(&key))
    }

    /// The input index of this step's parent span in trace `key`: its cause if that is in
    /// the trace; in the trace of a request it answered from outside, the step the request
    /// arrived in (so the answer hangs under its request).
    pub fn parent_index(&self, key: TraceKey) -> Option<u64> {
        if let Some(c) = self.parent_in(key) {
            return Some(c.index);
        }
        let TraceKey::Request(r) = key else {
            return None;
        };
        self.answered
            .iter()
            .find(|(a, _)| *a == r)
            .and_then(|(_, root)| *root)
            .filter(|&root| root != self.input.index)
    }
}

pub trait Visitor {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()>;
    /// A fault, drop, duplicate, violation or the end; for a drop or a duplicate, `sender`
    /// is the step that sent the message (when it is still pending).
    fn world(&mut self, e: &Event, sender: Option<&Cause>) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
    /// How many things (spans, slices, vertices, events) the export wrote: an export that
    /// wrote none is reported as empty, never as a success.
    fn written(&self) -> u64;
}

/// Counts of what a walk saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Walked {
    pub records: u64,
    pub steps: u64,
    /// What the visitor wrote ([`Visitor::written`]).
    pub written: u64,
}

struct Pending {
    cause: Cause,
    clock: Vec<u32>,
    /// Deliveries (or drops) still to come.
    remaining: u32,
}

struct Walker<'v> {
    nodes: usize,
    clocks: Vec<Vec<u32>>,
    sends: BTreeMap<u64, Pending>,
    timers: BTreeMap<u64, Pending>,
    timer_sets: BTreeMap<TimerId, u64>,
    timers_of_node: Vec<Vec<u64>>,
    /// Per open service connection: its service, its latest operations (at most
    /// [`SERVICE_OPS_KEPT_MAX`]), which the service's events answer, and its oldest write
    /// not answered yet.
    service_conns: BTreeMap<ConnId, ConnState>,
    step: Vec<Event>,
    /// Where each request arrived (its first step's input index), for answers given from
    /// other steps; at most `ROOTS_MAX` are remembered.
    roots: BTreeMap<RequestId, u64>,
    walked: Walked,
    visitor: &'v mut dyn Visitor,
}

#[derive(Default)]
struct ConnState {
    service: String,
    ops: VecDeque<Cause>,
    unanswered: Option<ServiceCall>,
}

/// Operations remembered per service connection: a service answering a write older than
/// that many later ones has its answer exported without a parent.
const SERVICE_OPS_KEPT_MAX: usize = 64;

/// Requests whose arrival the walk remembers (about 48 bytes each): an answer to a request
/// beyond them is still put in its trace, without a parent.
const ROOTS_MAX: usize = 1 << 18;

/// A timer set at `set` fired or was cancelled: its cause, the entry gone once every timer
/// it stands for has (a resume stands for several).
fn take_timer(timers: &mut BTreeMap<u64, Pending>, set: u64) -> Option<Cause> {
    let p = timers.get_mut(&set)?;
    p.remaining = p.remaining.saturating_sub(1);
    let cause = p.cause.clone();
    if p.remaining == 0 {
        timers.remove(&set);
    }
    Some(cause)
}

impl Walker<'_> {
    fn flush(&mut self) -> io::Result<()> {
        let Some(input) = self.step.first() else {
            return Ok(());
        };
        let node = input.node.unwrap_or(NodeId(0));
        let k = node.index().min(self.nodes - 1);
        let request_ids: Vec<RequestId> = input.record.request_ids().to_vec();
        let cause: Option<Cause> = match &input.record {
            Record::Deliver { send: Some(s), .. } => match self.sends.get_mut(s) {
                Some(p) => {
                    p.remaining = p.remaining.saturating_sub(1);
                    for (m, o) in self.clocks[k].iter_mut().zip(&p.clock) {
                        *m = (*m).max(*o);
                    }
                    let c = p.cause.clone();
                    if p.remaining == 0 {
                        self.sends.remove(s);
                    }
                    Some(c)
                }
                None => None,
            },
            Record::Timer { set, .. } => take_timer(&mut self.timers, *set),
            Record::ServiceIn {
                conn,
                cause: Some(op),
                ..
            } => self
                .service_conns
                .get(conn)
                .and_then(|c| c.ops.iter().find(|c| c.link == *op))
                .cloned(),
            _ => None,
        };
        if let Record::Crash { .. } = input.record {
            for set in std::mem::take(&mut self.timers_of_node[k]) {
                self.timers.remove(&set);
            }
            self.service_conns
                .retain(|_, c| c.ops.front().is_none_or(|c| c.node != node));
        }
        let service_call = match &input.record {
            Record::ServiceIn { conn, event, .. } => {
                let ended = matches!(event, ServiceEvent::Closed { .. } | ServiceEvent::TimedOut);
                let call = match self.service_conns.get_mut(conn) {
                    Some(c) if !matches!(event, ServiceEvent::Connected) => c.unanswered.take(),
                    _ => None,
                };
                if ended {
                    self.service_conns.remove(conn);
                }
                call
            }
            _ => None,
        };
        let traces: Vec<TraceKey> =
            if !request_ids.is_empty() {
                request_ids.iter().map(|&r| TraceKey::Request(r)).collect()
            } else if matches!(input.record, Record::Crash { .. }) {
                Vec::new()
            } else {
                // A message from background work continues its trace; anything else starts one.
                let inherited = cause.as_ref().filter(|c| c.by_message).and_then(|c| {
                    match c.traces.as_slice() {
                        [TraceKey::Background(root)] => Some(*root),
                        _ => None,
                    }
                });
                vec![TraceKey::Background(inherited.unwrap_or(input.index))]
            };
        for &r in &request_ids {
            if self.roots.len() < ROOTS_MAX || self.roots.contains_key(&r) {
                self.roots.entry(r).or_insert(input.index);
            }
        }
        let mut answered: Vec<(RequestId, Option<u64>)> = Vec::new();
        for e in &self.step[1..] {
            if let Record::Respond { request, .. } = e.record {
                if !request_ids.contains(&request) && !answered.iter().any(|(a, _)| *a == request) {
                    answered.push((request, self.roots.get(&request).copied()));
                }
            }
        }
        let mut all_traces = traces.clone();
        all_traces.extend(answered.iter().map(|&(r, _)| TraceKey::Request(r)));
        self.clocks[k][k] += 1;
        let (mut busy_ns, mut queued_ns) = (0, 0);
        for e in &self.step[1..] {
            match &e.record {
                Record::Busy { ns } => busy_ns += ns,
                Record::Queued { ns } => queued_ns += ns,
                _ => {}
            }
        }
        let info = StepInfo {
            step: self.walked.steps,
            input,
            rest: &self.step[1..],
            node,
            busy_ns,
            queued_ns,
            request_ids: &request_ids,
            cause: cause.as_ref(),
            traces: &all_traces,
            answered: &answered,
            clock: &self.clocks[k],
            service_call: service_call.as_ref(),
        };
        self.visitor.step(&info)?;
        // What this step left pending.
        let me = Cause {
            index: input.index,
            node,
            time_ns: input.time_ns,
            link: 0,
            by_message: true,
            request_ids,
            traces,
        };
        for e in &self.step[1..] {
            match &e.record {
                Record::Send { .. } => {
                    self.sends.insert(
                        e.index,
                        Pending {
                            cause: Cause {
                                link: e.index,
                                ..me.clone()
                            },
                            clock: self.clocks[k].clone(),
                            remaining: 1,
                        },
                    );
                }
                Record::TimerSet { timer, .. } => {
                    self.timer_sets.insert(*timer, e.index);
                    self.timers_of_node[k].push(e.index);
                    self.timers.insert(
                        e.index,
                        Pending {
                            cause: Cause {
                                link: e.index,
                                by_message: false,
                                ..me.clone()
                            },
                            clock: Vec::new(),
                            remaining: 1,
                        },
                    );
                }
                Record::TimerCancel { timer } => {
                    if let Some(set) = self.timer_sets.remove(timer) {
                        take_timer(&mut self.timers, set);
                    }
                }
                Record::ServiceOut {
                    conn,
                    op: ServiceOp::Close,
                } => {
                    self.service_conns.remove(conn);
                }
                Record::ServiceOut { conn, op } => {
                    let c = self.service_conns.entry(*conn).or_default();
                    if c.ops.len() == SERVICE_OPS_KEPT_MAX {
                        c.ops.pop_front();
                    }
                    c.ops.push_back(Cause {
                        link: e.index,
                        by_message: false,
                        ..me.clone()
                    });
                    match op {
                        ServiceOp::Connect { service, .. } => c.service.clone_from(service),
                        ServiceOp::Write { bytes } if c.unanswered.is_none() => {
                            c.unanswered = Some(ServiceCall {
                                conn: *conn,
                                service: c.service.clone(),
                                write: e.index,
                                start_ns: me.time_ns,
                                writer: me.index,
                                writer_node: node,
                                traces: me.traces.clone(),
                                bytes: bytes.clone(),
                            });
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        // A resumed node's pending timers were set before the trace: the resume stands in
        // for their settings, one entry for them all.
        if let Some(Record::Resume { snapshot, .. }) = self.step.first().map(|e| &e.record) {
            let timers = snapshot.timers.clone();
            if !timers.is_empty() {
                let index = me.index;
                for t in &timers {
                    self.timer_sets.insert(*t, index);
                }
                self.timers_of_node[k].push(index);
                self.timers.insert(
                    index,
                    Pending {
                        cause: Cause {
                            link: index,
                            by_message: false,
                            ..me.clone()
                        },
                        clock: Vec::new(),
                        remaining: timers.len() as u32,
                    },
                );
            }
        }
        // Drops and duplicates decided while the step ran come after it.
        let step = std::mem::take(&mut self.step);
        for e in &step[1..] {
            if e.record.is_network_fate() {
                self.world(e)?;
            }
        }
        self.step = step;
        self.walked.steps += 1;
        self.step.clear();
        Ok(())
    }

    fn world(&mut self, e: &Event) -> io::Result<()> {
        match &e.record {
            Record::Drop { send, .. } => {
                let mut gone = None;
                if let Some(p) = self.sends.get_mut(send) {
                    p.remaining = p.remaining.saturating_sub(1);
                    if p.remaining == 0 {
                        gone = self.sends.remove(send);
                    }
                }
                let sender = gone.as_ref().or_else(|| self.sends.get(send));
                self.visitor.world(e, sender.map(|p| &p.cause))
            }
            Record::Duplicate { send } => {
                if let Some(p) = self.sends.get_mut(send) {
                    p.remaining += 1;
                }
                let sender = self.sends.get(send).map(|p| &p.cause);
                self.visitor.world(e, sender)
            }
            _ => self.visitor.world(e, None),
        }
    }
}

/// Walks `events` (in trace order) for a cluster of `nodes` nodes.
pub fn walk(
    nodes: usize,
    events: impl Iterator<Item = Event>,
    visitor: &mut dyn Visitor,
) -> io::Result<Walked> {
    let nodes = nodes.max(1);
    let mut w = Walker {
        nodes,
        clocks: vec![vec![0; nodes]; nodes],
        sends: BTreeMap::new(),
        timers: BTreeMap::new(),
        timer_sets: BTreeMap::new(),
        timers_of_node: vec![Vec::new(); nodes],
        service_conns: BTreeMap::new(),
        step: Vec::new(),
        roots: BTreeMap::new(),
        walked: Walked::default(),
        visitor,
    };
    for e in events {
        w.walked.records += 1;
        if e.record.input_node().is_some() {
            w.flush()?;
            w.step.push(e);
        } else if e.record.ends_step() {
            w.flush()?;
            w.world(&e)?;
        } else if !w.step.is_empty() {
            // Outputs, and drops or duplicates of messages the step may have just sent.
            w.step.push(e);
        } else if e.record.is_network_fate() {
            w.world(&e)?;
        }
    }
    w.flush()?;
    let mut walked = w.walked;
    w.visitor.finish()?;
    walked.written = w.visitor.written();
    Ok(walked)
}
