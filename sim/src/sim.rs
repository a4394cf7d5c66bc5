//! The simulator: one event queue in virtual time, the nodes, the world, the trace.

use crate::codec;
use crate::ids::{format_ns, NodeId, RequestId, Time, TimerId};
use crate::logs::Capture;
use crate::model::{Invariant, Model, View};
use crate::node::{Ctx, Env, Message, Node};
use crate::queue::{EventQueue, Handle};
use crate::rng::{derive_seed, Purpose, SimRng, StepRng};
use crate::scenario::{links_between_groups, FaultAction, LinkParams, Scenario};
use crate::schedule::{
    Candidate, Choice, Decider, Injected, Schedule, TimedFault, CRASH_DOWN_NS, ISOLATION_NS, WINDOW,
};
use crate::storage::Storage;
use crate::trace::{
    DropReason, FaultRecord, Header, NodeInfo, Origin, Outcome, TraceOut, TraceWriter,
};
use crate::world::{Clock, Network, SwarmKinds};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

/// At most this many request ids ride on one event; more would mean ids are spreading
/// along paths that are not one request's causality.
pub const MAX_REQUEST_IDS: usize = 4;

/// A bound on random faults drawn for one run.
const MAX_RANDOM_FAULTS: usize = 100_000;

/// The request ids an event carries: a small inline set, so that carrying them costs no
/// allocation per message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReqIds {
    len: u8,
    ids: [RequestId; MAX_REQUEST_IDS],
}

impl ReqIds {
    fn one(id: RequestId) -> Self {
        let mut r = ReqIds::default();
        r.ids[0] = id;
        r.len = 1;
        r
    }

    pub fn as_slice(&self) -> &[RequestId] {
        &self.ids[..self.len as usize]
    }
}

/// Messages encoded at most this long ride in the queue with their encoding, so that the
/// delivery record reuses the bytes the send's digest was computed from.
const INLINE_PAYLOAD_BYTES: usize = 47;

/// A message's encoding carried alongside it in flight (`len == u8::MAX`: not kept).
#[derive(Clone, Copy)]
struct InlinePayload {
    len: u8,
    bytes: [u8; INLINE_PAYLOAD_BYTES],
}

impl InlinePayload {
    const NONE: InlinePayload = InlinePayload {
        len: u8::MAX,
        bytes: [0; INLINE_PAYLOAD_BYTES],
    };

    fn keep(encoded: &[u8]) -> Self {
        if encoded.len() > INLINE_PAYLOAD_BYTES {
            return Self::NONE;
        }
        let mut p = InlinePayload {
            len: encoded.len() as u8,
            bytes: [0; INLINE_PAYLOAD_BYTES],
        };
        p.bytes[..encoded.len()].copy_from_slice(encoded);
        p
    }

    fn get(&self) -> Option<&[u8]> {
        (self.len != u8::MAX).then(|| &self.bytes[..self.len as usize])
    }
}

/// Where the trace of a run goes.
pub enum TraceSink {
    /// No trace at all (the fastest; for benchmarks and fuzzing).
    Discard,
    /// Keep the trace in memory: [`RunReport::trace`].
    Memory,
    /// Stream the trace to a writer (a file).
    Stream(Box<dyn Write>),
}

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs handled by nodes (boots, deliveries, timer firings, external requests) plus crashes.
    pub steps: u64,
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub timers_fired: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub requests: u64,
    /// External requests that found their node down.
    pub requests_refused: u64,
    pub responses: u64,
    pub clock_reads: u64,
    pub annotations: u64,
    pub network_faults: u64,
    /// `tracing` events recorded from node code.
    pub log_lines: u64,
}

/// The first broken invariant of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Trace index of the input record whose step broke the invariant.
    pub step_index: u64,
    pub node: NodeId,
    pub node_name: String,
    pub time_ns: u64,
    pub invariant: String,
    pub message: String,
}

/// What a run did.
pub struct RunReport {
    pub outcome: Outcome,
    pub violation: Option<Violation>,
    /// Virtual time when the run ended.
    pub end_time_ns: u64,
    pub stats: Stats,
    pub seed: u64,
    /// The fault kinds a swarm run enabled (`None` without swarm).
    pub swarm: Option<SwarmKinds>,
    /// Records in the trace (counted even when it is discarded).
    pub trace_records: u64,
    /// Bytes of trace written (0 when discarded).
    pub trace_bytes: u64,
    /// The trace, with [`TraceSink::Memory`].
    pub trace: Option<Vec<u8>>,
    /// The first error met writing a streamed trace.
    pub trace_error: Option<std::io::Error>,
    /// Under a decider: the choices made (trailing defaults trimmed) and requests left out,
    /// which replay the run with [`Simulation::with_schedule`].
    pub schedule: Option<Schedule>,
    /// Under a decider: the virtual time of each decision's step.
    pub decision_times: Vec<u64>,
    /// Workload requests drawn, sent or not (their numbers are `0..requests_drawn`).
    pub requests_drawn: u64,
    /// Under a decider: which handlers ran — (node, message variant) for deliveries and
    /// requests, (node, tag) for timers — as opaque keys, for the fuzzer's coverage.
    pub coverage: BTreeSet<u64>,
}

enum Pending<M> {
    Boot {
        node: NodeId,
    },
    Deliver {
        to: NodeId,
        from: NodeId,
        msg: M,
        send: u64,
        ids: ReqIds,
        payload: InlinePayload,
    },
    Timer {
        node: NodeId,
        timer: TimerId,
        tag: u64,
        set: u64,
        ids: ReqIds,
    },
    WorkloadTick,
    /// A request from the workload, for a node that was busy when it arrived.
    External {
        node: NodeId,
        msg: M,
        /// The workload's request number, which is its request id.
        number: u64,
    },
    /// An input that arrived while its node was busy, waiting since `arrived_ns`.
    Deferred {
        item: Box<Pending<M>>,
        arrived_ns: u64,
    },
    Fault(FaultAction),
    Heal {
        id: u32,
    },
}

/// Everything but the nodes and invariants: what a node's [`Ctx`] reaches into.
struct Core<M> {
    now_ns: u64,
    queue: EventQueue<Pending<M>>,
    trace: TraceOut,
    scratch: Vec<u8>,
    net: Network,
    /// Drop, duplicate and latency draws, by the sending step's request (see [`StepRng`]).
    net_rng: StepRng,
    clocks: Vec<Clock>,
    rngs: Vec<StepRng>,
    storages: Vec<Storage>,
    peers: Vec<Vec<NodeId>>,
    up: Vec<bool>,
    incarnation: Vec<u64>,
    last_input: Vec<Option<u64>>,
    timers: BTreeMap<TimerId, (NodeId, Handle)>,
    next_timer: u64,
    step_node: NodeId,
    step_ids: ReqIds,
    /// Service time declared so far in the current step.
    step_busy_ns: u64,
    /// How long the current step's input waited for its node.
    step_queued_ns: u64,
    /// Per node: until when earlier handlers keep it busy.
    busy_until: Vec<u64>,
    stats: Stats,
    /// `tracing` events node code emits, recorded as `Log` records of their step.
    logs: Capture,
}

impl<M: Message> Core<M> {
    fn encode_scratch(&mut self, msg: &M) {
        self.scratch.clear();
        if let Err(e) = codec::encode_into(msg, &mut self.scratch) {
            // Serialize impls of plain data do not fail; one that does is a bug in node code.
            panic!("message {msg:?} failed to encode: {e}");
        }
    }

    /// Records that the message of the send at `send` will arrive twice.
    fn note_duplicate(&mut self, send: u64) {
        self.trace.push(|e, out| e.duplicate(out, send));
        self.stats.duplicated += 1;
    }

    /// Records what the step's handler logged with `tracing`.
    fn flush_logs(&mut self) {
        for line in self.logs.take() {
            self.trace
                .push(|e, out| e.log(out, line.level, &line.target, &line.text));
            self.stats.log_lines += 1;
        }
    }

    fn drop_msg(&mut self, send: u64, reason: DropReason) {
        let now = self.now_ns;
        self.trace.push(|e, out| e.drop_msg(out, now, send, reason));
        self.stats.dropped += 1;
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, msg: M, send: u64, payload: InlinePayload) {
        let link = *self.net.link(from, to);
        if self.net.is_blocked(from, to) {
            return self.drop_msg(send, DropReason::Partition);
        }
        if self.net_rng.rng().chance(link.drop) {
            return self.drop_msg(send, DropReason::Loss);
        }
        if self.net_rng.rng().chance(link.duplicate) {
            self.note_duplicate(send);
            self.deliver_later(&link, from, to, msg.clone(), send, payload);
        }
        self.deliver_later(&link, from, to, msg, send, payload);
    }

    /// Queues one copy of a message. Each copy draws its own latency: reordering falls out
    /// of this jitter, as a later send may draw a shorter one.
    fn deliver_later(
        &mut self,
        link: &LinkParams,
        from: NodeId,
        to: NodeId,
        msg: M,
        send: u64,
        payload: InlinePayload,
    ) {
        let departs = self.now_ns.saturating_add(self.step_busy_ns);
        let at = departs.saturating_add(
            self.net_rng
                .rng()
                .between(link.latency.lo_ns, link.latency.hi_ns),
        );
        let ids = self.step_ids;
        self.queue.push(
            at,
            Pending::Deliver {
                to,
                from,
                msg,
                send,
                ids,
                payload,
            },
        );
    }

    fn cancel_timers_of(&mut self, node: NodeId) {
        let mine: Vec<TimerId> = self
            .timers
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(t, _)| *t)
            .collect();
        for timer in mine {
            if let Some((_, handle)) = self.timers.remove(&timer) {
                self.queue.cancel(handle);
            }
        }
    }
}

impl<M: Message> Env<M> for Core<M> {
    fn id(&self) -> NodeId {
        self.step_node
    }

    fn peers(&self) -> &[NodeId] {
        &self.peers[self.step_node.index()]
    }

    fn node_count(&self) -> usize {
        self.net.node_count()
    }

    fn now(&mut self) -> Time {
        let value_ns = self.clocks[self.step_node.index()].read(self.now_ns);
        self.trace.push(|e, out| e.clock_read(out, value_ns));
        self.stats.clock_reads += 1;
        Time(value_ns)
    }

    fn send(&mut self, to: NodeId, msg: M) {
        let from = self.step_node;
        let (digest, payload) = if self.trace.enabled() {
            self.encode_scratch(&msg);
            (
                codec::digest(&self.scratch),
                InlinePayload::keep(&self.scratch),
            )
        } else {
            (0, InlinePayload::NONE)
        };
        let send = self.trace.push(|e, out| e.send(out, to, digest));
        self.stats.sent += 1;
        if to.index() >= self.net.node_count() {
            return self.drop_msg(send, DropReason::NoSuchNode);
        }
        self.transmit(from, to, msg, send, payload);
    }

    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        let timer = TimerId(self.next_timer);
        self.next_timer += 1;
        let after_ns = crate::ids::duration_ns(after);
        let set = self
            .trace
            .push(|e, out| e.timer_set(out, timer, tag, after_ns));
        let node = self.step_node;
        let at = self.now_ns.saturating_add(after_ns);
        let handle = self.queue.push(
            at,
            Pending::Timer {
                node,
                timer,
                tag,
                set,
                ids: self.step_ids,
            },
        );
        self.timers.insert(timer, (node, handle));
        timer
    }

    fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.timers.get(&timer) {
            Some((owner, handle)) if *owner == self.step_node => {
                let handle = *handle;
                self.timers.remove(&timer);
                self.queue.cancel(handle);
                self.trace.push(|e, out| e.timer_cancel(out, timer));
                true
            }
            _ => false,
        }
    }

    fn rng(&mut self) -> &mut SimRng {
        self.rngs[self.step_node.index()].rng()
    }

    fn storage(&mut self) -> &mut Storage {
        &mut self.storages[self.step_node.index()]
    }

    fn annotate(&mut self, text: String) {
        self.trace.push(|e, out| e.annotate(out, &text));
        self.stats.annotations += 1;
    }

    fn respond(&mut self, msg: M) {
        // `Ctx::respond` handles an answer outside any request.
        let Some(&request) = self.step_ids.as_slice().first() else {
            return;
        };
        let digest = if self.trace.enabled() {
            self.encode_scratch(&msg);
            codec::digest(&self.scratch)
        } else {
            0
        };
        self.trace.push(|e, out| e.respond(out, request, digest));
        self.stats.responses += 1;
    }

    fn request_ids(&self) -> &[RequestId] {
        self.step_ids.as_slice()
    }

    fn detach(&mut self) {
        self.step_ids = ReqIds::default();
    }

    fn busy(&mut self, duration: Duration) {
        let ns = crate::ids::duration_ns(duration);
        self.step_busy_ns = self.step_busy_ns.saturating_add(ns);
        self.trace.push(|e, out| e.busy(out, ns));
    }
}

/// A simulation of model `M` on one scenario. Build it with [`Simulation::new`], then
/// [`Simulation::run`] it, or drive it one step at a time with [`Simulation::step`].
pub struct Simulation<M: Model> {
    options: M::Options,
    node_names: Vec<String>,
    nodes: Vec<Option<M::Node>>,
    invariants: Vec<Box<dyn Invariant<M::Node>>>,
    core: Core<<M::Node as Node>::Msg>,
    workload_rng: SimRng,
    workload: Option<crate::scenario::Workload>,
    seed: u64,
    swarm: Option<SwarmKinds>,
    time_limit_ns: u64,
    max_events: u64,
    outcome: Option<Outcome>,
    violation: Option<Violation>,
    memory_trace: bool,
    /// Fuzzing: who decides order and faults, what was decided, requests left out.
    decider: Option<Box<dyn Decider>>,
    taken: Vec<Choice>,
    /// When each decision's event ran.
    taken_at: Vec<u64>,
    /// Faults at times still to apply, latest first.
    timed: Vec<TimedFault>,
    timed_all: Vec<TimedFault>,
    coverage: BTreeSet<u64>,
    skip_requests: BTreeSet<u64>,
    requests_max: Option<u64>,
    requests_drawn: u64,
    /// When the workload's next request is due unshifted, and the schedule's shift.
    workload_clock_ns: u64,
    workload_shift_ns: u64,
    /// When the pending workload tick was due.
    workload_due_ns: u64,
}

/// The header a simulated run writes.
pub fn sim_header<O>(scenario: &Scenario<O>, seed: u64) -> Header {
    let name = std::path::Path::new(&scenario.name)
        .file_name()
        .map_or_else(
            || scenario.name.clone(),
            |n| n.to_string_lossy().into_owned(),
        );
    Header {
        origin: Origin::Simulated { seed },
        model: scenario.model.clone(),
        scenario_name: name,
        scenario_toml: scenario.source.clone(),
        nodes: scenario
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                role: n.role.clone(),
            })
            .collect(),
        writer: concat!("retrace-sim ", env!("CARGO_PKG_VERSION")).to_string(),
    }
}

/// A node's first boot, or a boot after a crash (volatile state gone, synced storage kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    First,
    Restart,
}

impl<M: Model> Simulation<M> {
    /// Prepares a run of `scenario` with `seed` (usually `scenario.seed`).
    pub fn new(scenario: &Scenario<M::Options>, seed: u64, sink: TraceSink) -> Self {
        let n = scenario.nodes.len();
        assert!(
            n > 0 && n <= u32::MAX as usize,
            "a cluster needs between 1 and 2^32 nodes"
        );
        let swarm = scenario
            .swarm
            .then(|| SwarmKinds::draw(&mut SimRng::new(derive_seed(seed, Purpose::Swarm, 0, 0))));
        let kinds = swarm.unwrap_or(SwarmKinds::ALL);

        let header = sim_header(scenario, seed);
        let memory_trace = matches!(sink, TraceSink::Memory);
        let writer = match sink {
            TraceSink::Discard => None,
            TraceSink::Memory => Some(TraceWriter::in_memory(&header)),
            TraceSink::Stream(w) => Some(TraceWriter::to_sink(&header, w)),
        };

        let mut clock_rng = SimRng::new(derive_seed(seed, Purpose::Clocks, 0, 0));
        let clocks = (0..n)
            .map(|_| {
                if !kinds.clock {
                    return Clock {
                        offset_ns: 0,
                        drift_ppm: 0.0,
                    };
                }
                let skew = scenario.clocks.skew;
                let span = skew.hi_ns.abs_diff(skew.lo_ns);
                let offset_ns = skew.lo_ns.saturating_add(clock_rng.between(0, span) as i64);
                let ppm = scenario.clocks.drift_ppm;
                let drift_ppm = if ppm > 0.0 {
                    (clock_rng.unit() * 2.0 - 1.0) * ppm
                } else {
                    0.0
                };
                Clock {
                    offset_ns,
                    drift_ppm,
                }
            })
            .collect();

        let ids: Vec<NodeId> = (0..n as u32).map(NodeId).collect();
        let core = Core {
            now_ns: 0,
            queue: EventQueue::default(),
            trace: TraceOut::new(writer),
            scratch: Vec::with_capacity(256),
            logs: Capture::new(),
            net: Network::new(scenario, &kinds),
            net_rng: StepRng::new(derive_seed(seed, Purpose::Network, 0, 0)),
            clocks,
            rngs: (0..n).map(|_| StepRng::new(0)).collect(),
            storages: vec![Storage::default(); n],
            peers: ids
                .iter()
                .map(|&me| crate::check::peers_of(me, n))
                .collect(),
            up: vec![false; n],
            incarnation: vec![0; n],
            last_input: vec![None; n],
            timers: BTreeMap::new(),
            next_timer: 0,
            step_node: NodeId(0),
            step_ids: ReqIds::default(),
            step_busy_ns: 0,
            step_queued_ns: 0,
            busy_until: vec![0; n],
            stats: Stats::default(),
        };
        let mut sim = Simulation {
            options: scenario.options.clone(),
            node_names: scenario.nodes.iter().map(|s| s.name.clone()).collect(),
            nodes: (0..n).map(|_| None).collect(),
            invariants: M::invariants(&scenario.options),
            core,
            workload_rng: SimRng::new(derive_seed(seed, Purpose::Workload, 0, 0)),
            workload: scenario.workload,
            seed,
            swarm,
            time_limit_ns: scenario.time_limit_ns,
            max_events: scenario.max_events,
            outcome: None,
            violation: None,
            memory_trace,
            decider: None,
            taken: Vec::new(),
            taken_at: Vec::new(),
            timed: Vec::new(),
            timed_all: Vec::new(),
            coverage: BTreeSet::new(),
            skip_requests: BTreeSet::new(),
            requests_max: None,
            requests_drawn: 0,
            workload_clock_ns: scenario.workload.map_or(0, |w| w.start_ns),
            workload_shift_ns: 0,
            workload_due_ns: scenario.workload.map_or(0, |w| w.start_ns),
        };
        for id in &ids {
            sim.core.queue.push(0, Pending::Boot { node: *id });
        }
        if let Some(w) = &sim.workload {
            if w.rate.per_second > 0.0 && w.requests != Some(0) {
                sim.core.queue.push(w.start_ns, Pending::WorkloadTick);
            }
        }
        for fault in &scenario.faults {
            sim.schedule_fault(fault.at_ns, fault.action.clone());
        }
        let mut random = scenario.random_faults;
        kinds.apply(&mut random);
        sim.schedule_random_faults(&random, n, seed);
        sim
    }

    fn schedule_fault(&mut self, at_ns: u64, action: FaultAction) {
        self.core.queue.push(at_ns, Pending::Fault(action));
    }

    /// Draws the random faults of the whole run up front, from their own stream, so that
    /// they do not depend on what the nodes do.
    fn schedule_random_faults(&mut self, r: &crate::scenario::RandomFaults, n: usize, seed: u64) {
        let limit = self.time_limit_ns;
        let mut rng = SimRng::new(derive_seed(seed, Purpose::Faults, 0, 0));
        let mut planned: Vec<(u64, FaultAction)> = Vec::new();
        for node in 0..n {
            let node = NodeId(node as u32);
            let restart = r.restart_after;
            planned.extend(poisson_arrivals(
                &mut rng,
                limit,
                r.crash_rate.mean_interval_ns(),
                move |rng| FaultAction::Crash {
                    node,
                    restart_after_ns: Some(rng.between(restart.lo_ns, restart.hi_ns)),
                },
            ));
            let jump = r.clock_jump;
            planned.extend(poisson_arrivals(
                &mut rng,
                limit,
                r.clock_jump_rate.mean_interval_ns(),
                move |rng| {
                    let span = jump.hi_ns.abs_diff(jump.lo_ns);
                    FaultAction::ClockJump {
                        node,
                        by_ns: jump.lo_ns.saturating_add(rng.between(0, span) as i64),
                    }
                },
            ));
        }
        if n > 1 {
            let duration = r.partition_duration;
            planned.extend(poisson_arrivals(
                &mut rng,
                limit,
                r.partition_rate.mean_interval_ns(),
                move |rng| {
                    // A random split into two non-empty sides.
                    let mut group_of: Vec<usize> = (0..n).map(|_| rng.below(2) as usize).collect();
                    let first = group_of[0];
                    if group_of.iter().all(|&g| g == first) {
                        let flip = 1 + rng.below(n as u64 - 1) as usize;
                        group_of[flip] = 1 - first;
                    }
                    FaultAction::Cut {
                        links: links_between_groups(&group_of),
                        heal_after_ns: Some(rng.between(duration.lo_ns, duration.hi_ns)),
                    }
                },
            ));
        }
        planned.truncate(MAX_RANDOM_FAULTS);
        planned.sort_by_key(|(t, _)| *t);
        for (at, action) in planned {
            self.schedule_fault(at, action);
        }
    }

    /// Lets `decider` choose, at every step, which pending event runs and whether a fault is
    /// injected. The choices made are returned in [`RunReport::schedule`].
    pub fn with_decider(mut self, decider: Box<dyn Decider>) -> Self {
        self.decider = Some(decider);
        self
    }

    /// Replays a schedule: its choices, and the workload requests it leaves out.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.skip_requests = schedule.skip_requests.iter().copied().collect();
        self.requests_max = schedule.requests_max;
        self.workload_shift_ns = schedule.workload_shift_ns;
        self.timed_all = schedule.timed.clone();
        self.timed = schedule.timed.clone();
        self.timed.sort_by(|a, b| b.cmp(a));
        self.decider = Some(Box::new(schedule));
        self
    }

    /// Current virtual time.
    pub fn now_ns(&self) -> u64 {
        self.core.now_ns
    }

    /// Virtual time of the next pending event, if any.
    pub fn next_event_ns(&mut self) -> Option<u64> {
        self.core.queue.peek_time()
    }

    /// Each node's state; `None` while down.
    pub fn nodes(&self) -> &[Option<M::Node>] {
        &self.nodes
    }

    /// Counts so far.
    pub fn stats(&self) -> &Stats {
        &self.core.stats
    }

    /// Runs one step. Returns `false` once the run is over.
    pub fn step(&mut self) -> bool {
        // Node code's `tracing` events go to this run's capture, on this thread only.
        let _logs = self.core.logs.enter();
        self.step_captured()
    }

    /// [`Simulation::step`] with the capture already entered (`run` enters it once: doing
    /// it per step costs more than a ping-pong step).
    fn step_captured(&mut self) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        let Some(next_ns) = self.core.queue.peek_time() else {
            return self.finish(Outcome::Quiescent);
        };
        if next_ns > self.time_limit_ns {
            self.core.now_ns = self.time_limit_ns;
            return self.finish(Outcome::TimeLimit);
        }
        if self.core.stats.steps >= self.max_events {
            return self.finish(Outcome::EventLimit);
        }
        if self.decider.is_some() {
            return self.decided_step();
        }
        let Some((time_ns, pending)) = self.core.queue.pop() else {
            return self.finish(Outcome::Quiescent);
        };
        assert!(
            time_ns >= self.core.now_ns,
            "time went backwards: {time_ns} < {}",
            self.core.now_ns
        );
        self.core.now_ns = time_ns;
        self.handle(pending);
        true
    }

    /// One step under a decider: it picks among the next pending events and may inject a fault.
    fn decided_step(&mut self) -> bool {
        let mut window = Vec::with_capacity(WINDOW);
        while window.len() < WINDOW {
            match self.core.queue.pop_keyed() {
                Some(entry) if entry.0 <= self.time_limit_ns => window.push(entry),
                Some((t, seq, item)) => {
                    self.requeue(t, seq, item);
                    break;
                }
                None => break,
            }
        }
        if window.is_empty() {
            return self.finish(Outcome::Quiescent);
        }
        let candidates: Vec<Candidate> = window
            .iter()
            .map(|(_, _, p)| Candidate {
                is_delivery: matches!(p, Pending::Deliver { .. }),
                node: Self::queued_input_node(p).unwrap_or(NodeId(0)),
            })
            .collect();
        let step = self.taken.len() as u64;
        let n = self.nodes.len();
        // Faults anchored in time go first, once their time has come.
        let front = window[0].0.max(self.core.now_ns);
        while self.timed.last().is_some_and(|t| t.at_ns <= front) {
            let Some(t) = self.timed.pop() else { break };
            self.core.now_ns = self.core.now_ns.max(t.at_ns);
            let fault = Choice {
                order: 0,
                fault: t.fault,
            }
            .injected(n);
            self.inject_node_fault(fault, n, t.lasts_ns);
        }
        let choice = match self.decider.as_mut() {
            Some(d) => d.decide(step, &candidates, n),
            None => Choice::default(),
        };
        self.taken.push(choice);
        self.taken_at.push(window[0].0.max(self.core.now_ns));
        let deliveries: Vec<usize> = (0..window.len())
            .filter(|&i| candidates[i].is_delivery)
            .collect();
        let chosen = match (choice.order, deliveries.len()) {
            (0, _) | (_, 0) => 0,
            (k, d) => deliveries[(usize::from(k) - 1) % d],
        };
        let (time_ns, _, pending) = window.remove(chosen);
        for (t, seq, item) in window {
            self.requeue(t, seq, item);
        }
        self.core.now_ns = self.core.now_ns.max(time_ns);
        let now = self.core.now_ns;
        match choice.injected(n) {
            Some(Injected::Drop) => {
                if let Pending::Deliver { send, .. } = pending {
                    self.core.drop_msg(send, DropReason::Loss);
                    return true;
                }
            }
            Some(Injected::Duplicate) => {
                if let Pending::Deliver {
                    to,
                    from,
                    msg,
                    send,
                    ids,
                    payload,
                } = &pending
                {
                    self.core.note_duplicate(*send);
                    let copy = Pending::Deliver {
                        to: *to,
                        from: *from,
                        msg: msg.clone(),
                        send: *send,
                        ids: *ids,
                        payload: *payload,
                    };
                    self.core.queue.push(now, copy);
                }
            }
            other => self.inject_node_fault(other, n, None),
        }
        if self.outcome.is_none() {
            self.cover(&pending);
            self.handle(pending);
        }
        true
    }

    /// Notes which handler `pending` will exercise. The message's enum variant stands for
    /// its kind; `DefaultHasher::new()` has fixed keys, so keys agree across runs.
    fn cover(&mut self, pending: &Pending<<M::Node as Node>::Msg>) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match pending {
            Pending::Deliver { to, msg, .. } => (0u8, to, std::mem::discriminant(msg)).hash(&mut h),
            Pending::Timer { node, tag, .. } => (1u8, node, tag).hash(&mut h),
            Pending::External { node, msg, .. } => {
                (2u8, node, std::mem::discriminant(msg)).hash(&mut h)
            }
            _ => return,
        }
        if self.coverage.len() < 1 << 16 {
            self.coverage.insert(h.finish());
        }
    }

    /// Applies a crash, isolation or clock jump now (drops and duplicates need a message);
    /// `lasts_ns` overrides how long a crash or isolation lasts.
    fn inject_node_fault(&mut self, fault: Option<Injected>, n: usize, lasts_ns: Option<u64>) {
        match fault {
            Some(Injected::Crash(node)) => self.handle(Pending::Fault(FaultAction::Crash {
                node,
                restart_after_ns: Some(lasts_ns.unwrap_or(CRASH_DOWN_NS)),
            })),
            Some(Injected::Isolate(node)) => {
                let group_of: Vec<usize> = (0..n).map(|i| usize::from(i == node.index())).collect();
                let links = links_between_groups(&group_of);
                self.handle(Pending::Fault(FaultAction::Cut {
                    links,
                    heal_after_ns: Some(lasts_ns.unwrap_or(ISOLATION_NS)),
                }))
            }
            Some(Injected::ClockJump(node, by_ns)) => {
                self.handle(Pending::Fault(FaultAction::ClockJump { node, by_ns }))
            }
            Some(Injected::Drop | Injected::Duplicate) | None => {}
        }
    }

    /// Puts a pending event back in its place; a timer keeps its cancellation handle.
    fn requeue(&mut self, time_ns: u64, seq: u64, item: Pending<<M::Node as Node>::Msg>) {
        let timer = match &item {
            Pending::Timer { timer, .. } => Some(*timer),
            Pending::Deferred { item, .. } => match item.as_ref() {
                Pending::Timer { timer, .. } => Some(*timer),
                _ => None,
            },
            _ => None,
        };
        let handle = self.core.queue.restore(time_ns, seq, item);
        if let Some(entry) = timer.and_then(|t| self.core.timers.get_mut(&t)) {
            entry.1 = handle;
        }
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> RunReport {
        let logs = self.core.logs.enter();
        while self.step_captured() {}
        drop(logs);
        self.report()
    }

    fn finish(&mut self, outcome: Outcome) -> bool {
        let now = self.core.now_ns;
        self.core.trace.push(|e, out| e.end(out, now, outcome));
        self.outcome = Some(outcome);
        false
    }

    fn report(mut self) -> RunReport {
        let outcome = self.outcome.unwrap_or(Outcome::EventLimit);
        let trace_records = self.core.trace.next_index();
        let (trace_bytes, trace, trace_error) = match self.core.trace.writer.take() {
            None => (0, None, None),
            Some(w) if self.memory_trace => {
                let bytes = w.into_bytes();
                (bytes.len() as u64, Some(bytes), None)
            }
            Some(w) => {
                let len = w.len_bytes();
                match w.finish() {
                    Ok(n) => (n, None, None),
                    Err(e) => (len, None, Some(e)),
                }
            }
        };
        RunReport {
            outcome,
            violation: self.violation,
            end_time_ns: self.core.now_ns,
            stats: self.core.stats,
            seed: self.seed,
            swarm: self.swarm,
            trace_records,
            trace_bytes,
            trace,
            trace_error,
            coverage: self.coverage,
            decision_times: self.taken_at,
            requests_drawn: self.requests_drawn,
            schedule: self.decider.is_some().then(|| {
                Schedule {
                    choices: self.taken,
                    skip_requests: self.skip_requests.into_iter().collect(),
                    timed: self.timed_all,
                    workload_shift_ns: self.workload_shift_ns,
                    requests_max: self.requests_max,
                }
                .trimmed()
            }),
        }
    }

    /// Records an input that starts a step on `node` and makes it the current step.
    fn begin_step(&mut self, node: NodeId, ids: ReqIds, index: u64) {
        self.core.step_node = node;
        self.core.step_ids = ids;
        self.core.rngs[node.index()].begin_step(ids.as_slice());
        self.core.net_rng.begin_step(ids.as_slice());
        self.core.step_busy_ns = 0;
        self.core.last_input[node.index()] = Some(index);
        self.core.stats.steps += 1;
        let queued = std::mem::take(&mut self.core.step_queued_ns);
        if queued > 0 {
            self.core.trace.push(|e, out| e.queued(out, queued));
        }
    }

    /// The node an input event is for, if `pending` is one that a busy node must queue.
    fn queued_input_node(pending: &Pending<<M::Node as Node>::Msg>) -> Option<NodeId> {
        match pending {
            Pending::Deliver { to, .. } => Some(*to),
            Pending::Timer { node, .. } | Pending::External { node, .. } => Some(*node),
            Pending::Deferred { item, .. } => Self::queued_input_node(item),
            _ => None,
        }
    }

    /// Holds back an input whose node is still busy; returns it if the node is free.
    fn wait_if_busy(
        &mut self,
        pending: Pending<<M::Node as Node>::Msg>,
    ) -> Option<Pending<<M::Node as Node>::Msg>> {
        let now = self.core.now_ns;
        let Some(node) = Self::queued_input_node(&pending) else {
            return Some(pending);
        };
        let free_at = self.core.busy_until[node.index()];
        let (item, arrived_ns) = match pending {
            Pending::Deferred { item, arrived_ns } => (*item, arrived_ns),
            other => (other, now),
        };
        if free_at <= now || !self.core.up[node.index()] {
            self.core.step_queued_ns = now - arrived_ns;
            return Some(item);
        }
        let timer = match &item {
            Pending::Timer { timer, .. } => Some(*timer),
            _ => None,
        };
        let handle = self.core.queue.push(
            free_at,
            Pending::Deferred {
                item: Box::new(item),
                arrived_ns,
            },
        );
        // A deferred timer can still be cancelled: it now lives under a new handle.
        if let Some(t) = timer {
            if let Some(entry) = self.core.timers.get_mut(&t) {
                entry.1 = handle;
            }
        }
        None
    }

    fn handle(&mut self, pending: Pending<<M::Node as Node>::Msg>) {
        let now = self.core.now_ns;
        let Some(pending) = self.wait_if_busy(pending) else {
            return;
        };
        match pending {
            Pending::Boot { node } => self.boot(node, Boot::First),
            Pending::Fault(FaultAction::Restart { node }) => {
                if !self.core.up[node.index()] {
                    self.boot(node, Boot::Restart);
                }
            }
            Pending::Deliver {
                to,
                from,
                msg,
                send,
                ids,
                payload,
            } => {
                if !self.core.up[to.index()] {
                    return self.core.drop_msg(send, DropReason::NodeDown);
                }
                let prev = self.core.last_input[to.index()];
                let core = &mut self.core;
                let payload = match payload.get() {
                    Some(bytes) => bytes,
                    None => {
                        if core.trace.enabled() {
                            core.encode_scratch(&msg);
                        }
                        &core.scratch
                    }
                };
                let index = core.trace.push(|e, out| {
                    e.deliver(
                        out,
                        to,
                        now,
                        prev,
                        from,
                        Some(send),
                        ids.as_slice(),
                        payload,
                    )
                });
                core.stats.delivered += 1;
                self.begin_step(to, ids, index);
                if let Some(state) = self.nodes[to.index()].as_mut() {
                    state.on_message(&mut Ctx::new(&mut self.core), from, msg);
                }
                self.check_invariants(to, index);
            }
            Pending::Timer {
                node,
                timer,
                tag,
                set,
                ids,
            } => {
                if self.core.timers.remove(&timer).is_none() {
                    return; // cancelled in the same instant it was due
                }
                let prev = self.core.last_input[node.index()];
                let index = self
                    .core
                    .trace
                    .push(|e, out| e.timer(out, node, now, prev, timer, tag, set, ids.as_slice()));
                self.core.stats.timers_fired += 1;
                self.begin_step(node, ids, index);
                if let Some(state) = self.nodes[node.index()].as_mut() {
                    state.on_timer(&mut Ctx::new(&mut self.core), timer, tag);
                }
                self.check_invariants(node, index);
            }
            Pending::WorkloadTick => self.workload_tick(),
            Pending::External { node, msg, number } => self.external(node, msg, number),
            Pending::Deferred { .. } => unreachable!("wait_if_busy unwraps deferred inputs"),
            Pending::Fault(FaultAction::Crash {
                node,
                restart_after_ns,
            }) => {
                if !self.core.up[node.index()] {
                    return;
                }
                let prev = self.core.last_input[node.index()];
                let index = self.core.trace.push(|e, out| e.crash(out, node, now, prev));
                self.begin_step(node, ReqIds::default(), index);
                self.core.stats.crashes += 1;
                self.core.up[node.index()] = false;
                self.nodes[node.index()] = None;
                self.core.storages[node.index()].crash();
                self.core.cancel_timers_of(node);
                self.core.busy_until[node.index()] = 0;
                if let Some(after) = restart_after_ns {
                    self.core.queue.push(
                        now.saturating_add(after),
                        Pending::Fault(FaultAction::Restart { node }),
                    );
                }
                self.check_invariants(node, index);
            }
            Pending::Fault(FaultAction::Cut {
                links,
                heal_after_ns,
            }) => {
                let id = self.core.net.cut(links.clone());
                let fault = FaultRecord::Cut { id, links };
                self.core.trace.push(|e, out| e.fault(out, now, &fault));
                self.core.stats.network_faults += 1;
                if let Some(after) = heal_after_ns {
                    self.core
                        .queue
                        .push(now.saturating_add(after), Pending::Heal { id });
                }
            }
            Pending::Heal { id } => {
                if self.core.net.heal(id) {
                    self.core
                        .trace
                        .push(|e, out| e.fault(out, now, &FaultRecord::Heal { id }));
                }
            }
            Pending::Fault(FaultAction::ClockJump { node, by_ns }) => {
                let clock = &mut self.core.clocks[node.index()];
                clock.offset_ns = clock.offset_ns.saturating_add(by_ns);
                let fault = FaultRecord::ClockJump { node, by_ns };
                self.core.trace.push(|e, out| e.fault(out, now, &fault));
                self.core.stats.network_faults += 1;
            }
        }
    }

    fn boot(&mut self, node: NodeId, boot: Boot) {
        let now = self.core.now_ns;
        let i = node.index();
        // A node boots only when it is down: two lives at once would share one slot.
        assert!(
            !self.core.up[i] && self.nodes[i].is_none(),
            "{node} booted while up"
        );
        let incarnation = self.core.incarnation[i];
        self.core.incarnation[i] += 1;
        let seed = derive_seed(self.seed, Purpose::Node, i as u64, incarnation);
        self.core.rngs[i] = StepRng::new(seed);
        self.nodes[i] = Some(M::build(&self.options, node));
        self.core.up[i] = true;
        let prev = self.core.last_input[i];
        let index = if boot == Boot::Restart {
            self.core.stats.restarts += 1;
            let storage_digest = self.core.storages[i].synced_digest();
            self.core
                .trace
                .push(|e, out| e.restart(out, node, now, prev, seed, storage_digest))
        } else {
            self.core
                .trace
                .push(|e, out| e.start(out, node, now, prev, seed))
        };
        self.begin_step(node, ReqIds::default(), index);
        if let Some(state) = self.nodes[i].as_mut() {
            state.on_start(&mut Ctx::new(&mut self.core));
        }
        self.check_invariants(node, index);
    }

    fn workload_tick(&mut self) {
        let Some(w) = self.workload else { return };
        let now = self.core.now_ns;
        if w.stop_ns.is_some_and(|stop| now >= stop) {
            return;
        }
        let issued = self.core.stats.requests + self.core.stats.requests_refused;
        if w.requests.is_some_and(|max| issued >= max) {
            return;
        }
        if let Some((node, msg)) = M::request(&self.options, &mut self.workload_rng) {
            let number = self.requests_drawn;
            self.requests_drawn += 1;
            if self.skip_requests.contains(&number)
                || self.requests_max.is_some_and(|max| number >= max)
            {
                // Left out by a schedule (minimisation); the workload's draws stay in step.
            } else if node.index() < self.nodes.len() && self.core.up[node.index()] {
                self.handle(Pending::External { node, msg, number });
            } else {
                self.core.stats.requests_refused += 1;
            }
        }
        if let Some(mean) = w.rate.mean_interval_ns() {
            // The draws follow the unshifted clock, so a shift moves arrivals, not requests.
            // A tick the decider ran late delays the clock by as much (as without a shift).
            let gap = self.workload_rng.exponential_ns(mean).max(1);
            let late = now.saturating_sub(self.workload_due_ns);
            self.workload_clock_ns = self
                .workload_clock_ns
                .saturating_add(late)
                .saturating_add(gap);
            let next = self
                .workload_clock_ns
                .saturating_sub(self.workload_shift_ns)
                .max(now);
            self.workload_due_ns = next;
            self.core.queue.push(next, Pending::WorkloadTick);
        }
    }

    /// A request from outside the cluster, a step on `node`. Its id is its number in the
    /// workload, so leaving requests out (minimisation) renames none of the others, and
    /// each request keeps its own random draws (see [`StepRng`]).
    fn external(&mut self, node: NodeId, msg: <M::Node as Node>::Msg, number: u64) {
        let now = self.core.now_ns;
        if !self.core.up[node.index()] {
            self.core.stats.requests_refused += 1;
            return;
        }
        let request = RequestId(number);
        let prev = self.core.last_input[node.index()];
        let core = &mut self.core;
        if core.trace.enabled() {
            core.encode_scratch(&msg);
        }
        let payload = &core.scratch;
        let index = core
            .trace
            .push(|e, out| e.external(out, node, now, prev, request, payload));
        core.stats.requests += 1;
        self.begin_step(node, ReqIds::one(request), index);
        if let Some(state) = self.nodes[node.index()].as_mut() {
            state.on_request(&mut Ctx::new(&mut self.core), msg);
        }
        self.check_invariants(node, index);
    }

    fn check_invariants(&mut self, node: NodeId, step_index: u64) {
        // Every handler call is followed by this: the step's log lines close it.
        self.core.flush_logs();
        // The step is over: its declared service time keeps the node busy from now on.
        let busy = std::mem::take(&mut self.core.step_busy_ns);
        if busy > 0 {
            self.core.busy_until[node.index()] = self.core.now_ns.saturating_add(busy);
        }
        let view = View {
            time_ns: self.core.now_ns,
            step_index,
            node,
            nodes: &self.nodes,
        };
        for inv in &mut self.invariants {
            if let Err(message) = inv.check(&view) {
                let invariant = inv.name().to_string();
                let now = self.core.now_ns;
                self.core
                    .trace
                    .push(|e, out| e.violation(out, step_index, &invariant, &message));
                self.violation = Some(Violation {
                    step_index,
                    node,
                    node_name: self.node_names[node.index()].clone(),
                    time_ns: now,
                    invariant,
                    message,
                });
                self.finish(Outcome::Violation);
                return;
            }
        }
    }
}

/// Event times of a Poisson process with the given mean interval, up to `limit_ns`.
fn poisson_arrivals(
    rng: &mut SimRng,
    limit_ns: u64,
    mean_ns: Option<f64>,
    mut each: impl FnMut(&mut SimRng) -> FaultAction,
) -> Vec<(u64, FaultAction)> {
    let Some(mean_ns) = mean_ns else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut t = rng.exponential_ns(mean_ns);
    while t < limit_ns && out.len() < MAX_RANDOM_FAULTS {
        out.push((t, each(rng)));
        t = t.saturating_add(rng.exponential_ns(mean_ns).max(1));
    }
    out
}

impl Violation {
    /// One line for humans.
    pub fn describe(&self) -> String {
        format!(
            "invariant `{}` violated at event {} ({} at {}): {}",
            self.invariant,
            self.step_index,
            self.node_name,
            format_ns(self.time_ns),
            self.message
        )
    }
}
