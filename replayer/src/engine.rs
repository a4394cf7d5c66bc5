//! Deterministic re-execution: every node of the trace's cluster, in one process, fed the
//! trace's inputs in order; every output the code makes is checked against the trace.

use crate::diff::{diff, Change};
use crate::steps::Steps;
use retrace_sim::trace::{Origin, Record};
use retrace_sim::{
    codec, scenario, Ctx, Env, Event, Invariant, Message, Model, Node, NodeId, RequestId, SimRng,
    StepRng, Storage, Time, TimerId, Trace, View,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a trace cannot be replayed with a model at all.
#[derive(Debug)]
pub struct ReplayError(pub String);

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first place the code did something other than what the trace says.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// The step (by number) and its input record.
    pub step: usize,
    pub input_index: usize,
    /// The record that did not match (or where a missing output should have been).
    pub record_index: usize,
    pub node: NodeId,
    pub node_name: String,
    pub expected: String,
    pub actual: String,
    /// A structural diff of expected and actual message, when both are known.
    pub changes: Vec<Change>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "divergence at event {} ({}, step at event {}):",
            self.record_index, self.node_name, self.input_index
        )?;
        writeln!(f, "  trace says: {}", self.expected)?;
        write!(f, "  code did:   {}", self.actual)?;
        for c in &self.changes {
            write!(f, "\n    {c}")?;
        }
        Ok(())
    }
}

/// An invariant that broke during replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayViolation {
    pub step: usize,
    pub input_index: usize,
    pub invariant: String,
    pub message: String,
}

/// The whole cluster's state between two steps.
pub struct Cluster<M: Model> {
    pub nodes: Vec<Option<M::Node>>,
    rngs: Vec<StepRng>,
    storages: Vec<Storage>,
    /// Active timers and their nodes.
    timers: BTreeMap<TimerId, NodeId>,
    invariants: Vec<Box<dyn Invariant<M::Node>>>,
    /// Steps applied so far.
    pub applied: usize,
}

impl<M: Model> Clone for Cluster<M> {
    fn clone(&self) -> Self {
        Cluster {
            nodes: self.nodes.clone(),
            rngs: self.rngs.clone(),
            storages: self.storages.clone(),
            timers: self.timers.clone(),
            invariants: self.invariants.iter().map(|i| i.boxed_clone()).collect(),
            applied: self.applied,
        }
    }
}

impl<M: Model> Cluster<M> {
    /// An estimate of the memory a copy of this state holds, for the checkpoint budget.
    pub fn approx_bytes(&self) -> usize {
        let nodes = codec::encode(&self.nodes).map_or(0, |b| b.len());
        let storage: usize = self
            .storages
            .iter()
            .map(|s| {
                s.synced()
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 48)
                    .sum::<usize>()
            })
            .sum();
        nodes * 2 + storage + self.timers.len() * 32 + 256
    }
}

/// The messages a step sent, each with its `Send` record's index ([`Replay::apply_observed`]).
pub type Sent<M> = Vec<(usize, <<M as Model>::Node as Node>::Msg)>;

/// A trace loaded for re-execution with model `M`.
pub struct Replay<M: Model> {
    pub trace: Trace,
    pub steps: Steps,
    pub options: M::Options,
    pub node_names: Vec<String>,
    /// Simulated traces record modelled service time (checked); recorded ones measured
    /// time (not checked).
    pub simulated: bool,
}

/// What the replay environment expects next, and what it found.
struct ReplayEnv<'a, M> {
    node: NodeId,
    peers: &'a [NodeId],
    node_count: usize,
    events: &'a [Event],
    steps: &'a Steps,
    /// Next record to compare, and the end of the step.
    cursor: usize,
    end: usize,
    simulated: bool,
    request_ids: Vec<RequestId>,
    rng: &'a mut StepRng,
    storage: &'a mut Storage,
    timers: &'a mut BTreeMap<TimerId, NodeId>,
    mismatch: Option<(usize, String, String, Vec<Change>)>,
    /// Where the messages the code sent go, with their `Send` records' indices, when the
    /// caller asked to see them ([`Replay::apply_observed`]); the trace keeps only digests.
    sent: Option<&'a mut Vec<(usize, M)>>,
}

impl<M: Message> ReplayEnv<'_, M> {
    /// The next record the code's output must match (skipping what no code makes).
    fn next_expected(&mut self) -> Option<usize> {
        while self.cursor < self.end {
            match &self.events[self.cursor].record {
                Record::Drop { .. }
                | Record::Duplicate { .. }
                | Record::Queued { .. }
                | Record::StorageImage { .. }
                | Record::Log { .. }
                | Record::Violation { .. } => self.cursor += 1,
                Record::Busy { .. } if !self.simulated => self.cursor += 1,
                _ => return Some(self.cursor),
            }
        }
        None
    }

    fn expect(
        &mut self,
        actual: impl FnOnce() -> String,
        accept: impl FnOnce(&Record) -> bool,
    ) -> Option<Record> {
        if self.mismatch.is_some() {
            return None;
        }
        match self.next_expected() {
            Some(i) if accept(&self.events[i].record) => {
                self.cursor = i + 1;
                Some(self.events[i].record.clone())
            }
            Some(i) => {
                self.mismatch = Some((i, describe(&self.events[i].record), actual(), Vec::new()));
                None
            }
            None => {
                self.mismatch = Some((
                    self.end,
                    "no further output in this step".into(),
                    actual(),
                    Vec::new(),
                ));
                None
            }
        }
    }
}

/// A record as the divergence report shows it.
pub fn describe(r: &Record) -> String {
    match r {
        Record::Send { to, digest } => format!("send to n{} (digest {digest:016x})", to.0),
        Record::Respond { request, digest } => {
            format!("respond to {request} (digest {digest:016x})")
        }
        other => format!("{other:?}"),
    }
}

impl<M: Message> Env<M> for ReplayEnv<'_, M> {
    fn id(&self) -> NodeId {
        self.node
    }
    fn peers(&self) -> &[NodeId] {
        self.peers
    }
    fn node_count(&self) -> usize {
        self.node_count
    }
    fn now(&mut self) -> Time {
        match self.expect(
            || "read the clock".into(),
            |r| matches!(r, Record::ClockRead { .. }),
        ) {
            Some(Record::ClockRead { value_ns }) => Time(value_ns),
            _ => Time(0),
        }
    }
    fn send(&mut self, to: NodeId, msg: M) {
        let bytes = codec::encode(&msg).unwrap_or_default();
        let digest = codec::digest(&bytes);
        let got = self.expect(
            || format!("send to n{} (digest {digest:016x}): {msg:?}", to.0),
            |r| matches!(r, Record::Send { to: t, digest: d } if *t == to && *d == digest),
        );
        if got.is_some() {
            if let Some(sent) = self.sent.as_mut() {
                sent.push((self.cursor - 1, msg));
            }
        } else {
            // Show what the trace's message was, if it was delivered somewhere.
            if let Some((at, expected, actual, changes)) = self.mismatch.as_mut() {
                if let Some(&deliver) = self.steps.delivery_of_send.get(&(*at as u64)) {
                    if let Record::Deliver { payload, .. } = &self.events[deliver].record {
                        if let Ok(original) = codec::decode::<M>(payload) {
                            expected.push_str(&format!(": {original:?}"));
                            *changes = diff(&original, &msg);
                        }
                    }
                }
                let _ = actual;
            }
        }
    }
    fn set_timer(&mut self, after: Duration, tag: u64) -> TimerId {
        let after_ns = retrace_sim::duration_ns(after);
        match self.expect(
            || format!("set a timer: tag {tag}, in {}", retrace_sim::format_ns(after_ns)),
            |r| matches!(r, Record::TimerSet { tag: t, after_ns: a, .. } if *t == tag && *a == after_ns),
        ) {
            Some(Record::TimerSet { timer, .. }) => {
                self.timers.insert(timer, self.node);
                timer
            }
            _ => TimerId(u64::MAX),
        }
    }
    fn cancel_timer(&mut self, timer: TimerId) -> bool {
        if self.timers.get(&timer) != Some(&self.node) {
            return false;
        }
        self.timers.remove(&timer);
        self.expect(
            || format!("cancel timer t{}", timer.0),
            |r| matches!(r, Record::TimerCancel { timer: t } if *t == timer),
        )
        .is_some()
    }
    fn rng(&mut self) -> &mut SimRng {
        self.rng.rng()
    }
    fn storage(&mut self) -> &mut Storage {
        self.storage
    }
    fn annotate(&mut self, text: String) {
        self.expect(
            || format!("annotate {text:?}"),
            |r| matches!(r, Record::Annotate { text: t } if *t == text),
        );
    }
    fn respond(&mut self, msg: M) {
        let Some(&request) = self.request_ids.first() else {
            return self.annotate(format!("respond outside of any request ignored: {msg:?}"));
        };
        let digest = codec::digest(&codec::encode(&msg).unwrap_or_default());
        self.expect(
            || format!("respond to {request} (digest {digest:016x}): {msg:?}"),
            |r| matches!(r, Record::Respond { request: q, digest: d } if *q == request && *d == digest),
        );
    }
    fn request_ids(&self) -> &[RequestId] {
        &self.request_ids
    }
    fn detach(&mut self) {
        self.request_ids.clear();
    }
    fn busy(&mut self, duration: Duration) {
        if !self.simulated {
            return;
        }
        let ns = retrace_sim::duration_ns(duration);
        self.expect(
            || format!("busy for {}", retrace_sim::format_ns(ns)),
            |r| matches!(r, Record::Busy { ns: n } if *n == ns),
        );
    }
}

impl<M: Model> Replay<M> {
    /// Prepares a loaded trace for re-execution with `M`: the header must name the model,
    /// and its scenario must parse with the model's options.
    pub fn new(trace: Trace) -> Result<Self, ReplayError> {
        if trace.header.model != M::NAME {
            return Err(ReplayError(format!(
                "the trace is of model `{}`, not `{}`",
                trace.header.model,
                M::NAME
            )));
        }
        let s = scenario::parse::<M>(&trace.header.scenario_name, &trace.header.scenario_toml)
            .map_err(|e| ReplayError(format!("the trace's scenario: {e}")))?;
        if s.nodes.len() != trace.header.nodes.len() {
            return Err(ReplayError(format!(
                "the trace has {} nodes, the model builds {} from its scenario",
                trace.header.nodes.len(),
                s.nodes.len()
            )));
        }
        let mut steps = Steps::new(&trace.events);
        if !trace.is_complete() {
            // A trace cut short (a crash of its writer, a torn tail) may end inside its last
            // step: replaying that step would report the missing outputs as a divergence.
            steps.steps.pop();
        }
        let simulated = matches!(trace.header.origin, Origin::Simulated { .. });
        let node_names = trace.header.nodes.iter().map(|n| n.name.clone()).collect();
        Ok(Replay {
            trace,
            steps,
            options: s.options,
            node_names,
            simulated,
        })
    }

    /// The cluster before the first step.
    pub fn initial(&self) -> Cluster<M> {
        let n = self.node_names.len();
        Cluster {
            nodes: (0..n).map(|_| None).collect(),
            rngs: (0..n).map(|_| StepRng::new(0)).collect(),
            storages: vec![Storage::default(); n],
            timers: BTreeMap::new(),
            invariants: M::invariants(&self.options),
            applied: 0,
        }
    }

    /// Applies step number `cluster.applied`. Returns invariant violations it caused, or the
    /// divergence that stopped it.
    pub fn apply(&self, cluster: &mut Cluster<M>) -> Result<Vec<ReplayViolation>, Box<Divergence>> {
        self.apply_with(cluster, None)
    }

    /// [`Replay::apply`], also handing over each message the step sent (with its `Send`
    /// record's index): what the trace itself keeps only as a digest.
    pub fn apply_observed(
        &self,
        cluster: &mut Cluster<M>,
        sent: &mut Sent<M>,
    ) -> Result<Vec<ReplayViolation>, Box<Divergence>> {
        self.apply_with(cluster, Some(sent))
    }

    fn apply_with(
        &self,
        cluster: &mut Cluster<M>,
        sent: Option<&mut Sent<M>>,
    ) -> Result<Vec<ReplayViolation>, Box<Divergence>> {
        let k = cluster.applied;
        let step = &self.steps.steps[k];
        let events = &self.trace.events;
        let input = &events[step.input];
        let node = step.node;
        let i = node.index();
        let diverge = |at: usize, expected: String, actual: String, changes: Vec<Change>| {
            Box::new(Divergence {
                step: k,
                input_index: step.input,
                record_index: at,
                node,
                node_name: self.node_names.get(i).cloned().unwrap_or_default(),
                expected,
                actual,
                changes,
            })
        };
        if i >= cluster.nodes.len() {
            return Err(diverge(
                step.input,
                "a node of this cluster".into(),
                format!("node {node}"),
                Vec::new(),
            ));
        }
        let mut request_ids = Vec::new();
        match &input.record {
            Record::Start { seed, .. } | Record::Restart { seed, .. } => {
                cluster.rngs[i] = StepRng::new(*seed);
                cluster.nodes[i] = Some(M::build(&self.options, node));
                let image = self.trace.events[step.input..step.end]
                    .iter()
                    .find_map(|e| match &e.record {
                        Record::StorageImage { entries } => Some(entries),
                        _ => None,
                    });
                if let Some(entries) = image {
                    // A recording: the node found this on disk. It may hold writes of steps
                    // whose log records died with the process; replay goes on from it.
                    cluster.storages[i] = Storage::from_synced(entries.iter().cloned().collect());
                } else if let Record::Restart { storage_digest, .. } = &input.record {
                    let have = cluster.storages[i].synced_digest();
                    if have != *storage_digest {
                        return Err(diverge(
                            step.input,
                            format!("storage at restart with digest {storage_digest:016x}"),
                            format!("storage regenerated with digest {have:016x}"),
                            Vec::new(),
                        ));
                    }
                }
            }
            Record::Crash { .. } => {
                cluster.nodes[i] = None;
                cluster.storages[i].crash();
                cluster.timers.retain(|_, n| *n != node);
                cluster.applied += 1;
                return Ok(self.check_invariants(cluster, k, step.input, node, input.time_ns));
            }
            Record::Deliver {
                request_ids: ids, ..
            }
            | Record::Timer {
                request_ids: ids, ..
            } => {
                request_ids = ids.clone();
            }
            Record::External { request, .. } => request_ids = vec![*request],
            _ => {}
        }
        if let Record::Timer { timer, .. } = &input.record {
            cluster.timers.remove(timer);
        }
        let node_count = cluster.nodes.len();
        let peers: Vec<NodeId> = (0..node_count as u32)
            .map(NodeId)
            .filter(|p| *p != node)
            .collect();
        let Some(state) = cluster.nodes[i].as_mut() else {
            return Err(diverge(
                step.input,
                format!("{:?}", input.record),
                "the node is down".into(),
                Vec::new(),
            ));
        };
        cluster.rngs[i].begin_step(&request_ids);
        let mut env = ReplayEnv::<<M::Node as Node>::Msg> {
            node,
            peers: &peers,
            node_count,
            events,
            steps: &self.steps,
            cursor: step.input + 1,
            end: step.end,
            simulated: self.simulated,
            request_ids,
            rng: &mut cluster.rngs[i],
            storage: &mut cluster.storages[i],
            timers: &mut cluster.timers,
            mismatch: None,
            sent,
        };
        let decode = |payload: &[u8]| {
            codec::decode::<<M::Node as Node>::Msg>(payload).map_err(|e| e.to_string())
        };
        let ran =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), String> {
                let ctx = &mut Ctx::new(&mut env);
                match &input.record {
                    Record::Start { .. } | Record::Restart { .. } => state.on_start(ctx),
                    Record::Deliver { from, payload, .. } => {
                        state.on_message(ctx, *from, decode(payload)?)
                    }
                    Record::Timer { timer, tag, .. } => state.on_timer(ctx, *timer, *tag),
                    Record::External { payload, .. } => state.on_request(ctx, decode(payload)?),
                    _ => {}
                }
                Ok(())
            }));
        match ran {
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(diverge(
                    step.input,
                    "the handler returns".into(),
                    format!("the node panicked: {text}"),
                    Vec::new(),
                ));
            }
            Ok(Err(e)) => {
                return Err(diverge(
                    step.input,
                    format!("{:?}", input.record),
                    format!("payload does not decode: {e}"),
                    Vec::new(),
                ))
            }
            Ok(Ok(())) => {}
        }
        if let Some((at, expected, actual, changes)) = env.mismatch.take() {
            return Err(diverge(at, expected, actual, changes));
        }
        if let Some(extra) = env.next_expected() {
            return Err(diverge(
                extra,
                describe(&events[extra].record),
                "the step ended without this output".into(),
                Vec::new(),
            ));
        }
        cluster.applied += 1;
        Ok(self.check_invariants(cluster, k, step.input, node, input.time_ns))
    }

    fn check_invariants(
        &self,
        cluster: &mut Cluster<M>,
        step: usize,
        input: usize,
        node: NodeId,
        time_ns: u64,
    ) -> Vec<ReplayViolation> {
        let view = View {
            time_ns,
            step_index: input as u64,
            node,
            nodes: &cluster.nodes,
        };
        let mut out = Vec::new();
        for inv in &mut cluster.invariants {
            if let Err(message) = inv.check(&view) {
                out.push(ReplayViolation {
                    step,
                    input_index: input,
                    invariant: inv.name().to_string(),
                    message,
                });
            }
        }
        out
    }
}
