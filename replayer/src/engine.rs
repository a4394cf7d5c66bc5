//! Deterministic re-execution: every node of the trace's cluster, in one process, fed the
//! trace's inputs in order; every output the code makes is checked against the trace.

use crate::diff::{diff, Change};
use crate::steps::Steps;
use retrace_sim::check::{
    peers_of, run_handler, CheckingEnv, Expected, HandlerError, Input, NodeWorld, Output, Place,
};
use retrace_sim::codec::CodecError;
use retrace_sim::history::ClientEvent;
use retrace_sim::snapshot::{Resumed, SnapshotOf};
use retrace_sim::trace::{Header, Origin, Record};
use retrace_sim::{
    codec, scenario, Boot, Event, Invariant, Model, Node, NodeId, NodeSnapshot, StepRng, Storage,
    TimerId, Trace, View,
};
use std::collections::BTreeSet;

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
    /// The invariant's named facts (see [`retrace_sim::Broken`]).
    pub facts: Vec<(String, String)>,
}

/// The whole cluster's state between two steps.
pub struct Cluster<M: Model> {
    pub nodes: Vec<Option<M::Node>>,
    rngs: Vec<StepRng>,
    storages: Vec<Storage>,
    /// Per node: which life is running (from its last start or restart record).
    boots: Vec<Boot>,
    /// Per node: its timers set and not yet fired or cancelled.
    timers: Vec<BTreeSet<TimerId>>,
    invariants: Vec<Box<dyn Invariant<M::Node>>>,
    /// The last step's client events, kept when an invariant reads them or a caller asked
    /// ([`Cluster::watch_clients`]).
    client: Option<Vec<ClientEvent<<M::Node as Node>::Msg>>>,
    /// Steps applied so far.
    pub applied: usize,
}

pub use retrace_sim::snapshot::NodeState;

impl<M: Model> Clone for Cluster<M> {
    fn clone(&self) -> Self {
        Cluster {
            nodes: self.nodes.clone(),
            rngs: self.rngs.clone(),
            boots: self.boots.clone(),
            storages: self.storages.clone(),
            timers: self.timers.clone(),
            invariants: self.invariants.iter().map(|i| i.boxed_clone()).collect(),
            client: self.client.clone(),
            applied: self.applied,
        }
    }
}

impl<M: Model> Cluster<M> {
    /// The cluster of `n` nodes before the first step.
    pub fn initial(options: &M::Options, n: usize) -> Cluster<M> {
        let invariants = M::invariants(options);
        let client = invariants.iter().any(|i| i.sees_clients()).then(Vec::new);
        Cluster {
            nodes: (0..n).map(|_| None).collect(),
            rngs: (0..n).map(|_| StepRng::new(0)).collect(),
            boots: vec![Boot::First; n],
            storages: vec![Storage::default(); n],
            timers: vec![BTreeSet::new(); n],
            invariants,
            client,
            applied: 0,
        }
    }

    /// Node `i` as a snapshot, if it is up: what a trace cut from this moment resumes it
    /// from (`crate::window`). Fails only if the node's state does not encode.
    pub fn snapshot(&self, i: usize) -> Option<Result<NodeSnapshot, CodecError>> {
        let node = self.nodes.get(i)?.as_ref()?;
        Some(NodeSnapshot::take(SnapshotOf {
            node,
            storage: &self.storages[i],
            timers: &mut self.timers[i].iter().copied(),
            rng: &self.rngs[i],
            boot: self.boots[i],
        }))
    }

    /// Every node as data, for a state checkpoint a later replay starts from
    /// ([`Cluster::from_states`]). Fails only if a node's state does not encode.
    pub fn states(&self) -> Result<Vec<NodeState>, CodecError> {
        (0..self.nodes.len())
            .map(|i| match self.snapshot(i) {
                Some(snapshot) => snapshot.map(|s| NodeState::Up(Box::new(s))),
                None => Ok(NodeState::Down {
                    storage: self.storages[i].image(),
                    boot: self.boots[i],
                }),
            })
            .collect()
    }

    /// The cluster as [`Cluster::states`] took it, `applied` steps into the trace, with
    /// fresh invariants (they see only what follows). The states are untrusted input.
    pub fn from_states(
        options: &M::Options,
        states: &[NodeState],
        applied: usize,
    ) -> Result<Cluster<M>, String> {
        let mut cluster = Cluster::initial(options, states.len());
        for (i, state) in states.iter().enumerate() {
            match state {
                NodeState::Up(snapshot) => cluster.resume(i, snapshot.resume::<M::Node>()?),
                NodeState::Down { storage, boot } => {
                    cluster.storages[i] = Storage::from_image(storage.clone());
                    cluster.boots[i] = *boot;
                }
            }
        }
        cluster.applied = applied;
        Ok(cluster)
    }

    /// Node `i` becomes the node a snapshot resumed (a `Resume` record, a state checkpoint).
    fn resume(&mut self, i: usize, resumed: Resumed<M::Node>) {
        self.nodes[i] = Some(resumed.node);
        self.storages[i] = resumed.storage;
        self.timers[i] = resumed.timers;
        self.rngs[i] = resumed.rng;
        self.boots[i] = resumed.boot;
    }

    /// A copy of the invariants, with what they learned from the steps applied so far (a
    /// fork's run goes on checking with them).
    pub fn invariants(&self) -> Vec<Box<dyn Invariant<M::Node>>> {
        self.invariants.iter().map(|i| i.boxed_clone()).collect()
    }

    /// Node `i`'s synced storage, if it has any: what it would find on a restart.
    pub fn synced_storage(&self, i: usize) -> Option<Vec<(String, Vec<u8>)>> {
        let synced = self.storages.get(i)?.synced();
        (!synced.is_empty()).then(|| synced.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Keeps each step's client events (the request it began with, the answers it gave)
    /// for [`Cluster::client_events`].
    pub fn watch_clients(&mut self) {
        self.client.get_or_insert_with(Vec::new);
    }

    /// The client events of the last step applied (empty unless watched or read by an
    /// invariant).
    pub fn client_events(&self) -> &[ClientEvent<<M::Node as Node>::Msg>] {
        self.client.as_deref().unwrap_or_default()
    }

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
        nodes * 2 + storage + self.timers.iter().map(BTreeSet::len).sum::<usize>() * 32 + 256
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
    /// Where the trace came from: simulated records hold modelled service time (checked),
    /// recorded ones measured time (not checked); a fork holds both.
    pub origin: Origin,
}

/// The recorded outputs of a step as the checking environment expects them: what node
/// code makes (sends, timers, annotations, clock readings, answers, and modelled busy time
/// in simulated traces), leaving out what the network, the runtime or logging added.
fn expected_outputs(records: &[Event], simulated: bool) -> Vec<Output<'_>> {
    let mut out = Vec::new();
    for e in records {
        let at = e.index as usize;
        let expected = match &e.record {
            Record::Send { to, digest } => Expected::Send {
                to: *to,
                digest: *digest,
            },
            Record::TimerSet {
                timer,
                tag,
                after_ns,
            } => Expected::TimerSet {
                timer: *timer,
                tag: tag.as_bytes(),
                after_ns: *after_ns,
            },
            Record::TimerCancel { timer } => Expected::TimerCancel { timer: *timer },
            Record::Annotate { text } => Expected::Annotate { text },
            Record::ClockRead { value_ns } => Expected::ClockRead {
                value_ns: *value_ns,
            },
            Record::Respond { request, digest } => Expected::Respond {
                request: *request,
                digest: *digest,
            },
            Record::Busy { ns } if simulated => Expected::Busy { ns: *ns },
            Record::ServiceOut { conn, op } => Expected::ServiceOut { conn: *conn, op },
            // Drops, duplicates, queueing, storage images, log lines and violations are
            // not the code's outputs; neither is a recording's measured busy time.
            _ => continue,
        };
        out.push(Output { at, expected });
    }
    out
}

impl<M: Model> Replay<M> {
    /// Prepares a loaded trace for re-execution with `M`: the header must name the model,
    /// and its scenario must parse with the model's options.
    pub fn new(trace: Trace) -> Result<Self, ReplayError> {
        let options = check_header::<M>(&trace.header)?;
        let mut steps = Steps::new(&trace.events);
        if !trace.is_complete() {
            // A trace cut short (a crash of its writer, a torn tail) may end inside its last
            // step: replaying that step would report the missing outputs as a divergence.
            steps.steps.pop();
        }
        let node_names = trace.header.node_names();
        Ok(Replay {
            origin: trace.header.origin.clone(),
            trace,
            steps,
            options,
            node_names,
        })
    }

    /// The cluster before the first step.
    pub fn initial(&self) -> Cluster<M> {
        Cluster::initial(&self.options, self.node_names.len())
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
        let step = &self.steps.steps[cluster.applied];
        let events = &self.trace.events;
        let rules = Rules {
            options: &self.options,
            node_names: &self.node_names,
            origin: &self.origin,
        };
        let mut original = |send: u64| {
            self.steps
                .delivery_of_send
                .get(&send)
                .and_then(|&d| match &events[d].record {
                    Record::Deliver { payload, .. } => Some(payload.clone()),
                    _ => None,
                })
        };
        apply_step(
            &rules,
            cluster,
            &events[step.input..step.end],
            &mut original,
            sent,
        )
    }
}

/// The model's options for a trace with `header`: it must name the model, and its
/// scenario must parse with the model's options and build the trace's nodes.
pub fn check_header<M: Model>(header: &Header) -> Result<M::Options, ReplayError> {
    if header.model != M::NAME {
        return Err(ReplayError(format!(
            "the trace is of model `{}`, not `{}`",
            header.model,
            M::NAME
        )));
    }
    let s = scenario::parse::<M>(&header.scenario_name, &header.scenario_toml)
        .map_err(|e| ReplayError(format!("the trace's scenario: {e}")))?;
    if s.nodes.len() != header.nodes.len() {
        return Err(ReplayError(format!(
            "the trace has {} nodes, the model builds {} from its scenario",
            header.nodes.len(),
            s.nodes.len()
        )));
    }
    Ok(s.options)
}

/// What applying a step needs besides its records: the model's options, the nodes' names
/// and whether modelled busy time is checked. A loaded [`Replay`] and a streaming one
/// (`crate::stream`) apply steps the same way through it.
pub(crate) struct Rules<'a, M: Model> {
    pub options: &'a M::Options,
    pub node_names: &'a [String],
    pub origin: &'a Origin,
}

/// Applies step number `cluster.applied`, whose records (its input first) are `records`.
/// `original(send)` is the payload delivered for the `Send` at that index, if known: a
/// divergent message is shown beside it.
pub(crate) fn apply_step<M: Model>(
    rules: &Rules<'_, M>,
    cluster: &mut Cluster<M>,
    records: &[Event],
    original: &mut dyn FnMut(u64) -> Option<Vec<u8>>,
    sent: Option<&mut Sent<M>>,
) -> Result<Vec<ReplayViolation>, Box<Divergence>> {
    {
        let k = cluster.applied;
        let Some(input) = records.first() else {
            unreachable!("a step has its input");
        };
        let Some(node) = input.record.input_node() else {
            unreachable!("a step starts with an input");
        };
        let step = StepSpan {
            input: input.index as usize,
            end: input.index as usize + records.len(),
        };
        let i = node.index();
        let diverge = |at: usize, expected: String, actual: String, changes: Vec<Change>| {
            Box::new(Divergence {
                step: k,
                input_index: step.input,
                record_index: at,
                node,
                node_name: rules.node_names.get(i).cloned().unwrap_or_default(),
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
        if let Some(client) = &mut cluster.client {
            client.clear();
        }
        let mut request_ids = Vec::new();
        match &input.record {
            Record::Start { seed, .. } | Record::Restart { seed, .. } => {
                cluster.rngs[i] = StepRng::new(*seed);
                cluster.boots[i] = if matches!(input.record, Record::Restart { .. }) {
                    Boot::Restart
                } else {
                    Boot::First
                };
                cluster.nodes[i] = Some(M::build(rules.options, node));
                let image = records.iter().find_map(|e| match &e.record {
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
            Record::Resume { snapshot, .. } => {
                // The node is as the snapshot says; no handler runs. A snapshot that does not
                // fit this model is where replay cannot go on.
                let resumed = snapshot.resume::<M::Node>().map_err(|e| {
                    diverge(
                        step.input,
                        "a snapshot of this model's node".into(),
                        e,
                        Vec::new(),
                    )
                })?;
                cluster.resume(i, resumed);
                cluster.applied += 1;
                return Ok(check_invariants(
                    cluster,
                    k,
                    step.input,
                    node,
                    input.time_ns,
                ));
            }
            Record::Crash { .. } => {
                cluster.nodes[i] = None;
                cluster.storages[i].crash();
                cluster.timers[i].clear();
                cluster.applied += 1;
                return Ok(check_invariants(
                    cluster,
                    k,
                    step.input,
                    node,
                    input.time_ns,
                ));
            }
            Record::Deliver {
                request_ids: ids, ..
            }
            | Record::Timer {
                request_ids: ids, ..
            }
            | Record::ServiceIn {
                request_ids: ids, ..
            } => {
                request_ids = ids.clone();
            }
            Record::External { request, .. } => request_ids = vec![*request],
            _ => {}
        }
        if let Record::Timer { timer, .. } = &input.record {
            cluster.timers[i].remove(timer);
        }
        let node_count = cluster.nodes.len();
        let peers = peers_of(node, node_count);
        let Some(state) = cluster.nodes[i].as_mut() else {
            return Err(diverge(
                step.input,
                format!("{:?}", input.record),
                "the node is down".into(),
                Vec::new(),
            ));
        };
        let handler_input = match &input.record {
            Record::Start { .. } | Record::Restart { .. } => Input::Start,
            Record::Deliver { from, payload, .. } => Input::Deliver {
                from: *from,
                payload,
            },
            Record::Timer { timer, tag, .. } => Input::Timer {
                timer: *timer,
                tag: tag.as_bytes(),
            },
            Record::External { payload, .. } => Input::External { payload },
            Record::ServiceIn { conn, event, .. } => Input::Service { conn: *conn, event },
            other => {
                return Err(diverge(
                    step.input,
                    "an input".into(),
                    format!("{other:?}"),
                    Vec::new(),
                ))
            }
        };
        cluster.rngs[i].begin_step(&request_ids);
        if let (
            Some(client),
            Record::External {
                request, payload, ..
            },
        ) = (&mut cluster.client, &input.record)
        {
            // An undecodable request is reported by the handler's run just below.
            if let Ok(msg) = codec::decode::<<M::Node as Node>::Msg>(payload) {
                client.push(ClientEvent::Invoke {
                    request: *request,
                    node,
                    msg,
                });
            }
        }
        let simulated = rules.origin.simulated_at(step.input as u64);
        let outputs = expected_outputs(&records[1..], simulated);
        let mut env = CheckingEnv::<<M::Node as Node>::Msg>::new(
            Place {
                id: node,
                peers: &peers,
                node_count,
            },
            &outputs,
            step.end,
            request_ids,
            NodeWorld {
                rng: &mut cluster.rngs[i],
                storage: &mut cluster.storages[i],
                timers: &mut cluster.timers[i],
                boot: cluster.boots[i],
            },
            simulated,
        );
        if let Some(sent) = sent {
            env = env.observe_sends(sent);
        }
        if let Some(client) = &mut cluster.client {
            env = env.observe_answers(client);
        }
        match run_handler(state, &mut env, handler_input) {
            Err(HandlerError::Panicked(text)) => {
                return Err(diverge(
                    step.input,
                    "the handler returns".into(),
                    format!("the node panicked: {text}"),
                    Vec::new(),
                ));
            }
            Err(HandlerError::Undecodable(e)) => {
                return Err(diverge(
                    step.input,
                    format!("{:?}", input.record),
                    e,
                    Vec::new(),
                ))
            }
            Ok(()) => {}
        }
        if let Err(m) = env.finish() {
            // A different message: show the recorded one (from its delivery) beside it.
            let mut expected = m.expected;
            let mut changes = Vec::new();
            if let Some(code) = &m.sent {
                let original = original(m.at as u64)
                    .and_then(|payload| codec::decode::<<M::Node as Node>::Msg>(&payload).ok());
                if let Some(original) = original {
                    expected.push_str(&format!(": {original:?}"));
                    changes = diff(&original, code);
                }
            }
            return Err(diverge(m.at, expected, m.actual, changes));
        }
        cluster.applied += 1;
        Ok(check_invariants(
            cluster,
            k,
            step.input,
            node,
            input.time_ns,
        ))
    }
}

/// Where a step's records are in the trace.
struct StepSpan {
    input: usize,
    end: usize,
}

fn check_invariants<M: Model>(
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
        client: cluster.client.as_deref().unwrap_or_default(),
    };
    let mut out = Vec::new();
    for inv in &mut cluster.invariants {
        if let Err(broken) = inv.check(&view) {
            out.push(ReplayViolation {
                step,
                input_index: input,
                invariant: inv.name().to_string(),
                message: broken.message,
                facts: broken.facts,
            });
        }
    }
    out
}
