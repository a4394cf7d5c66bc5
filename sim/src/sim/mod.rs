//! The simulator: one event queue in virtual time, the nodes, the world, the trace.

mod env;
mod faults;
mod fork;
mod fuzzing;
mod services;
mod workload;

pub use env::MAX_REQUEST_IDS;
pub use workload::REFUSED_PAUSE_NS;

use crate::codec;
use crate::http::Protocol;
use crate::ids::{format_ns, NodeId, TimerId};
use crate::logs::Capture;
use crate::model::{Broken, Invariant, Model, View};
use crate::node::{Boot, Ctx, Node};
use crate::queue::EventQueue;
use crate::rng::{derive_seed, Purpose, SimRng, StepRng};
use crate::scenario::Scenario;
use crate::schedule::{Decider, Follow, Schedule};
use crate::tag::Tag;
use crate::trace::InputHead;
use crate::trace::{DropReason, Header, NodeInfo, Origin, Outcome, TraceOut, TraceWriter};
use crate::world::{Clock, Network, SwarmKinds};
use env::{Core, InFlight, NodeSlot, Pending, ReqIds};
use fuzzing::{Fuzzing, Source};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use workload::{Clients, Workload};

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
    /// The invariant's named facts (see [`Broken`]).
    pub facts: Vec<(String, String)>,
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
    /// Under a decider: the choices made, in the order they applied, and the requests left
    /// out, which replay the run with [`Simulation::with_schedule`]. (Replaying a schedule,
    /// the choices that applied.)
    pub schedule: Option<Schedule>,
    /// For each of `schedule`'s choices about a message, the trace index of its send.
    pub choice_sends: Vec<Option<u64>>,
    /// Replaying a schedule: the indices of its choices that never applied (their message
    /// was never sent, their moment never came, their node does not exist).
    pub unapplied: Vec<usize>,
    /// Replaying a schedule: every message sent, in order, by key.
    pub sent: Vec<crate::schedule::MsgKey>,
    /// Under a decider: the moment of each decision (a choice at one applies right before
    /// that decision's event).
    pub decisions: Vec<crate::schedule::Moment>,
    /// Workload requests drawn, sent or not (their numbers are `0..requests_drawn`).
    pub requests_drawn: u64,
    /// Under a decider: which handlers ran — (node, message variant) for deliveries and
    /// requests, (node, tag) for timers — as opaque keys, for the fuzzer's coverage.
    pub coverage: BTreeSet<u64>,
}

/// A simulation of model `M` on one scenario. Build it with [`Simulation::new`], then
/// [`Simulation::run`] it, or drive it one step at a time with [`Simulation::step`].
///
/// The event loop lives here; what a node's `Ctx` reaches is in `env.rs`, the workload in
/// `workload.rs`, faults in `faults.rs`, and running under a decider in `fuzzing.rs`.
pub struct Simulation<M: Model> {
    options: M::Options,
    node_names: Vec<String>,
    nodes: Vec<Option<M::Node>>,
    invariants: Vec<Box<dyn Invariant<M::Node>>>,
    core: Core<<M::Node as Node>::Msg>,
    workload: Workload,
    /// A closed-loop workload's clients.
    clients: Option<Clients<<M::Node as Node>::Msg>>,
    seed: u64,
    swarm: Option<SwarmKinds>,
    time_limit_ns: u64,
    max_events: u64,
    outcome: Option<Outcome>,
    violation: Option<Violation>,
    memory_trace: bool,
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
        nodes: NodeInfo::list(
            scenario
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.role.as_str())),
        ),
        writer: concat!("retrace-sim ", env!("CARGO_PKG_VERSION")).to_string(),
    }
}

/// Each node's clock: its offset and drift drawn from the scenario's ranges (all zero when a
/// swarm run switched clock faults off).
fn draw_clocks<O>(scenario: &Scenario<O>, seed: u64, kinds: &SwarmKinds) -> Vec<Clock> {
    let mut clock_rng = SimRng::new(derive_seed(seed, Purpose::Clocks, 0, 0));
    (0..scenario.nodes.len())
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
        .collect()
}

impl<M: Model> Simulation<M> {
    /// Prepares a run of `scenario` with `seed` (usually `scenario.seed`).
    pub fn new(scenario: &Scenario<M::Options>, seed: u64, sink: TraceSink) -> Self {
        Self::from_start(scenario, seed, sim_header(scenario, seed), sink)
    }

    /// [`Simulation::new`], writing `header`.
    fn from_start(
        scenario: &Scenario<M::Options>,
        seed: u64,
        header: Header,
        sink: TraceSink,
    ) -> Self {
        let mut sim = Self::assemble(scenario, seed, header, sink);
        let n = scenario.nodes.len();
        for node in 0..n as u32 {
            sim.core.queue.push(0, Pending::Boot { node: NodeId(node) });
        }
        if let Some(at_ns) = sim.workload.first_tick_ns() {
            sim.core.queue.push(at_ns, Pending::WorkloadTick);
        }
        if let Some(clients) = &sim.clients {
            let start_ns = sim.workload.start_ns();
            for client in 0..clients.len() {
                sim.core
                    .queue
                    .push(start_ns, Pending::ClientWake { client });
            }
        }
        for fault in &scenario.faults {
            sim.schedule_fault(fault.at_ns, fault.action.clone());
        }
        let mut random = scenario.random_faults;
        sim.swarm_kinds().apply(&mut random);
        sim.schedule_random_faults(&random, n, seed, 0);
        sim
    }

    /// The fault kinds this run has (all of them without swarm).
    fn swarm_kinds(&self) -> SwarmKinds {
        self.swarm.unwrap_or(SwarmKinds::ALL)
    }

    /// A simulation of `scenario` with `seed` and nothing queued yet: no node booted, no
    /// request or fault due. [`Simulation::new`] queues a run from its start, and
    /// [`Simulation::fork`] one from a trace's moment.
    fn assemble(
        scenario: &Scenario<M::Options>,
        seed: u64,
        header: Header,
        sink: TraceSink,
    ) -> Self {
        let n = scenario.nodes.len();
        assert!(
            n > 0 && n <= u32::MAX as usize,
            "a cluster needs between 1 and 2^32 nodes"
        );
        let swarm = scenario
            .swarm
            .then(|| SwarmKinds::draw(&mut SimRng::new(derive_seed(seed, Purpose::Swarm, 0, 0))));
        let kinds = swarm.unwrap_or(SwarmKinds::ALL);

        let memory_trace = matches!(sink, TraceSink::Memory);
        let writer = match sink {
            TraceSink::Discard => None,
            TraceSink::Memory => Some(TraceWriter::in_memory(&header)),
            TraceSink::Stream(w) => Some(TraceWriter::to_sink(&header, w)),
        };
        let slots = draw_clocks(scenario, seed, &kinds)
            .into_iter()
            .enumerate()
            .map(|(i, clock)| NodeSlot::new(NodeId(i as u32), n, clock))
            .collect();
        let core = Core {
            now_ns: 0,
            queue: EventQueue::default(),
            trace: TraceOut::new(writer),
            scratch: Vec::with_capacity(256),
            logs: Capture::new(),
            fuzzing: None,
            client: None,
            answers: None,
            http: scenario
                .workload
                .filter(|w| w.protocol == Protocol::Http)
                .map(|_| M::http(&scenario.options)),
            services: services::Services::new::<M>(&scenario.services, &scenario.options, seed),
            net: Network::new(scenario, &kinds),
            net_rng: StepRng::new(derive_seed(seed, Purpose::Network, 0, 0)),
            slots,
            timers: BTreeMap::new(),
            next_timer: 0,
            step_node: NodeId(0),
            step_ids: ReqIds::default(),
            step_busy_ns: 0,
            step_queued_ns: 0,
            stats: Stats::default(),
        };
        let workload = Workload::new(
            scenario.workload,
            SimRng::new(derive_seed(seed, Purpose::Workload, 0, 0)),
        );
        let clients = workload
            .closed_loop()
            .map(|spec| Clients::new::<M>(spec, scenario.network.latency, &scenario.options, seed));
        let mut sim = Simulation {
            options: scenario.options.clone(),
            node_names: scenario.nodes.iter().map(|s| s.name.clone()).collect(),
            nodes: (0..n).map(|_| None).collect(),
            invariants: M::invariants(&scenario.options),
            core,
            workload,
            clients,
            seed,
            swarm,
            time_limit_ns: scenario.time_limit_ns,
            max_events: scenario.max_events,
            outcome: None,
            violation: None,
            memory_trace,
        };
        if sim.invariants.iter().any(|i| i.sees_clients()) {
            sim.core.client = Some(Vec::new());
        }
        if sim.clients.is_some() {
            sim.core.answers = Some(Vec::new());
        }
        sim
    }

    /// Lets `decider` choose each message's fate, node faults and early deliveries. The
    /// choices made are returned in [`RunReport::schedule`].
    pub fn with_decider(mut self, decider: Box<dyn Decider>) -> Self {
        self.core.fuzzing = Some(Box::new(Fuzzing::new(Source::Explore(decider))));
        self
    }

    /// Replays a schedule: its choices, and the workload requests it leaves out. The
    /// choices that never applied are listed in [`RunReport::unapplied`].
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.workload.follow(&schedule);
        let follow = Follow::new(&schedule);
        self.core.fuzzing = Some(Box::new(Fuzzing::new(Source::Follow(follow))));
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

    /// Where the trace file's next record will start, with what reading from there needs,
    /// and how many steps come before it: between two [`Simulation::step`]s, a step
    /// boundary a state checkpoint can point at. `None` when no trace is written.
    pub fn trace_position(&self) -> Option<(crate::trace::RecordPosition, u64)> {
        let writer = self.core.trace.writer.as_ref()?;
        Some(self.core.trace.enc.position(writer.len_bytes()))
    }

    /// Every node as data, as a replay of the trace holds it at this point (between two
    /// [`Simulation::step`]s): what a state checkpoint keeps. Fails only if a node's state
    /// does not encode.
    pub fn node_states(&self) -> Result<Vec<crate::snapshot::NodeState>, codec::CodecError> {
        use crate::snapshot::{NodeSnapshot, NodeState, SnapshotOf};
        self.core
            .slots
            .iter()
            .zip(&self.nodes)
            .enumerate()
            .map(|(i, (slot, node))| match node {
                Some(node) if slot.up => {
                    let me = NodeId(i as u32);
                    let mut timers = self
                        .core
                        .timers
                        .iter()
                        .filter(|(_, (n, _))| *n == me)
                        .map(|(t, _)| *t);
                    NodeSnapshot::take(SnapshotOf {
                        node,
                        storage: &slot.storage,
                        timers: &mut timers,
                        rng: &slot.rng,
                        boot: slot.boot,
                    })
                    .map(|s| NodeState::Up(Box::new(s)))
                }
                _ => Ok(NodeState::Down {
                    storage: slot.storage.image(),
                    boot: slot.boot,
                }),
            })
            .collect()
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
        if self.core.fuzzing.is_some() {
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

    /// Runs to the end and reports.
    pub fn run(self) -> RunReport {
        self.run_observed(u64::MAX, &mut |_| {})
    }

    /// Runs to the end like [`Simulation::run`], handing `at_boundary` the simulation
    /// between two steps each time at least `every_records` more trace records were
    /// written (what `retrace run` takes state checkpoints at).
    pub fn run_observed(
        mut self,
        every_records: u64,
        at_boundary: &mut dyn FnMut(&Self),
    ) -> RunReport {
        let every_records = every_records.max(1);
        let logs = self.core.logs.enter();
        let mut next = every_records;
        while self.step_captured() {
            if self.core.trace.next_index() >= next {
                at_boundary(&self);
                next = self.core.trace.next_index().saturating_add(every_records);
            }
        }
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
        let decided = self.core.fuzzing.take().map(|f| f.into_decided());
        let (coverage, decisions, choice_sends, unapplied, sent, schedule) = match decided {
            None => (
                BTreeSet::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                None,
            ),
            Some(d) => (
                d.coverage,
                d.decisions,
                d.choice_sends,
                d.unapplied,
                d.sent,
                Some(self.workload.schedule(d.choices)),
            ),
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
            coverage,
            decisions,
            choice_sends,
            unapplied,
            sent,
            requests_drawn: self.workload.drawn,
            schedule,
        }
    }

    /// Records an input that starts a step on `node` and makes it the current step.
    fn begin_step(&mut self, node: NodeId, ids: ReqIds, index: u64) {
        let slot = &mut self.core.slots[node.index()];
        // Handlers run only on a live node, and a node's inputs link back in trace order.
        assert!(slot.up, "{node} stepped while down");
        assert!(
            slot.last_input.is_none_or(|prev| prev < index),
            "{node}: input {index} links forward to {:?}",
            slot.last_input
        );
        slot.rng.begin_step(ids.as_slice());
        slot.last_input = Some(index);
        self.core.step_node = node;
        self.core.step_ids = ids;
        self.core.net_rng.begin_step(ids.as_slice());
        self.core.step_busy_ns = 0;
        self.core.stats.steps += 1;
        if let Some(client) = &mut self.core.client {
            client.clear();
        }
        let queued = std::mem::take(&mut self.core.step_queued_ns);
        if queued > 0 {
            self.core.trace.push(|e, out| e.queued(out, queued));
        }
    }

    /// The node an input event is for, if `pending` is one that a busy node must queue.
    #[inline]
    fn queued_input_node(pending: &Pending<<M::Node as Node>::Msg>) -> Option<NodeId> {
        match pending {
            Pending::Deliver(m) => Some(m.to),
            Pending::Timer { node, .. } | Pending::External { node, .. } => Some(*node),
            Pending::Service(d) => Some(d.node),
            Pending::Deferred { item, .. } => Self::queued_input_node(item),
            _ => None,
        }
    }

    /// Holds back an input until its node is free at `free_at` (a deferred one keeps the
    /// time it first arrived).
    fn defer(&mut self, pending: Pending<<M::Node as Node>::Msg>, free_at: u64) {
        let (item, arrived_ns) = match pending {
            Pending::Deferred { item, arrived_ns } => (*item, arrived_ns),
            other => (other, self.core.now_ns),
        };
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
    }

    /// Runs one pending event; an input whose node is busy waits first. The event is looked
    /// at in place and moved only where it goes: this is the simulator's hottest path.
    fn handle(&mut self, pending: Pending<<M::Node as Node>::Msg>) {
        let now = self.core.now_ns;
        if let Some(node) = Self::queued_input_node(&pending) {
            let slot = &self.core.slots[node.index()];
            if slot.up && slot.busy_until_ns > now {
                return self.defer(pending, slot.busy_until_ns);
            }
        }
        // An input runs now; a deferred one has waited since it arrived. Anything else waited
        // for nothing: a deferred input that ran no step (its node had crashed) must not
        // leave its wait to the next step.
        self.core.step_queued_ns = match &pending {
            Pending::Deferred { arrived_ns, .. } => now - arrived_ns,
            _ => 0,
        };
        self.run_event(pending);
    }

    fn run_event(&mut self, pending: Pending<<M::Node as Node>::Msg>) {
        match pending {
            Pending::Boot { node } => self.boot(node, Boot::First),
            Pending::Deliver(m) => self.deliver(m),
            Pending::Timer {
                node,
                timer,
                tag,
                set,
                ids,
            } => self.fire_timer(node, timer, tag, set, ids),
            Pending::WorkloadTick => self.workload_tick(),
            Pending::ClientWake { client } => self.client_wake(client),
            Pending::ClientTimeout { client, request } => self.client_timeout(client, request),
            Pending::ClientAnswer {
                client,
                request,
                msg,
            } => self.client_answer(client, request, msg),
            Pending::External { node, msg, number } => self.external(node, msg, number),
            Pending::Deferred { item, .. } => self.run_event(*item),
            Pending::Fault(action) => self.apply_fault(action),
            Pending::Heal { id } => self.heal(id),
            Pending::Service(d) => self.service_step(*d),
            Pending::ServiceArrive {
                conn,
                cause,
                ids,
                bytes,
            } => self.service_arrive(conn, cause, ids, &bytes),
            Pending::ServiceTimeout(d, answers) => self.service_timeout(d, answers),
        }
    }

    /// A message arrives: a step on `to`, or a drop if `to` is down.
    fn deliver(&mut self, m: InFlight<<M::Node as Node>::Msg>) {
        let InFlight {
            to,
            from,
            msg,
            send,
            ids,
            payload,
            ..
        } = m;
        if !self.core.slots[to.index()].up {
            return self.core.drop_msg(send, DropReason::NodeDown);
        }
        let now = self.core.now_ns;
        let prev = self.core.slots[to.index()].last_input;
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
                InputHead::new(to, now, prev),
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
        self.end_step(to, index);
    }

    /// A timer comes due: a step on its node, unless it was cancelled in the same instant.
    fn fire_timer(&mut self, node: NodeId, timer: TimerId, tag: Tag, set: u64, ids: ReqIds) {
        if self.core.timers.remove(&timer).is_none() {
            return;
        }
        let now = self.core.now_ns;
        let prev = self.core.slots[node.index()].last_input;
        let index = self.core.trace.push(|e, out| {
            e.timer(
                out,
                InputHead::new(node, now, prev),
                timer,
                &tag,
                set,
                ids.as_slice(),
            )
        });
        self.core.stats.timers_fired += 1;
        self.begin_step(node, ids, index);
        // The simulator encoded this tag from the node's own timer value a moment ago.
        let value = codec::decode::<<M::Node as Node>::Timer>(tag.as_bytes())
            .unwrap_or_else(|e| panic!("{node}: timer {timer:?} tag {tag:?} does not decode: {e}"));
        if let Some(state) = self.nodes[node.index()].as_mut() {
            state.on_timer(&mut Ctx::new(&mut self.core), timer, value);
        }
        self.end_step(node, index);
    }

    /// Boots a node that is down: fresh state from the model, a new random stream for this
    /// life, synced storage kept across a restart.
    fn boot(&mut self, node: NodeId, boot: Boot) {
        let now = self.core.now_ns;
        let i = node.index();
        // A node boots only when it is down: two lives at once would share one slot.
        assert!(
            !self.core.slots[i].up && self.nodes[i].is_none(),
            "{node} booted while up"
        );
        let slot = &mut self.core.slots[i];
        let incarnation = slot.incarnation;
        slot.incarnation += 1;
        let seed = derive_seed(self.seed, Purpose::Node, i as u64, incarnation);
        slot.rng = StepRng::new(seed);
        slot.up = true;
        slot.boot = boot;
        let prev = slot.last_input;
        let storage_digest = slot.storage.synced_digest();
        self.nodes[i] = Some(M::build(&self.options, node));
        let index = match boot {
            Boot::Restart => {
                self.core.stats.restarts += 1;
                self.core.trace.push(|e, out| {
                    e.restart(out, InputHead::new(node, now, prev), seed, storage_digest)
                })
            }
            Boot::First => self
                .core
                .trace
                .push(|e, out| e.start(out, InputHead::new(node, now, prev), seed)),
        };
        self.begin_step(node, ReqIds::default(), index);
        if let Some(state) = self.nodes[i].as_mut() {
            state.on_start(&mut Ctx::new(&mut self.core));
        }
        self.end_step(node, index);
    }

    /// Closes the step that ran on `node`: records its log lines, keeps the node busy for the
    /// service time it declared, and checks the invariants (the first broken one ends the run).
    fn end_step(&mut self, node: NodeId, step_index: u64) {
        self.core.flush_logs();
        let busy = std::mem::take(&mut self.core.step_busy_ns);
        if busy > 0 {
            self.core.slots[node.index()].busy_until_ns = self.core.now_ns.saturating_add(busy);
        }
        self.check_invariants(node, step_index);
        self.answer_clients();
    }

    fn check_invariants(&mut self, node: NodeId, step_index: u64) {
        let view = View {
            time_ns: self.core.now_ns,
            step_index,
            node,
            nodes: &self.nodes,
            client: self.core.client.as_deref().unwrap_or_default(),
        };
        for inv in &mut self.invariants {
            if let Err(broken) = inv.check(&view) {
                let Broken { message, facts } = broken;
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
                    facts,
                });
                self.finish(Outcome::Violation);
                return;
            }
        }
    }
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
