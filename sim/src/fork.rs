//! A moment of a trace as the start of a new simulation: what the cluster holds there
//! besides its nodes' states — messages in flight, timers pending, partitions open, service
//! connections open, the ids handed out so far — as data ([`ForkPoint`]), and the ledger
//! that reads it off a trace's records ([`ForkLedger`]).
//!
//! The nodes' states come from re-executing the trace to the moment (the replayer's job):
//! never from a snapshot that could be wrong. The ledger needs only the records, so it
//! reads a recording (whose messages in flight the trace holds as digests) as well as a
//! simulated run. [`crate::Simulation::fork`] starts a run from a [`ForkPoint`].

use crate::ids::{NodeId, RequestId, TimerId};
use crate::model::{Invariant, Model};
use crate::node::Node;
use crate::service::{ConnId, ServiceOp};
use crate::snapshot::NodeState;
use crate::tag::Tag;
use crate::trace::{Event, FaultRecord, Header, Record};
use std::collections::BTreeMap;

/// Why a fork could not start: the trace and the scenario or the prefix do not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkError(pub String);

impl std::fmt::Display for ForkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ForkError {}

/// A message on its way at the fork: sent before it, neither delivered nor dropped.
#[derive(Clone, Debug)]
pub struct ForkMsg<Msg> {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: Msg,
    /// Trace index of its `Send`.
    pub send: u64,
    pub sent_ns: u64,
    /// The sending step's request ids.
    pub request_ids: Vec<RequestId>,
}

/// A timer set before the fork that had neither fired nor been cancelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkTimer {
    pub node: NodeId,
    pub timer: TimerId,
    pub tag: Tag,
    /// Trace index of its setting (a `TimerSet`, or the `Resume` that brought it).
    pub set: u64,
    /// When it is due: its setting's time plus its delay.
    pub due_ns: u64,
    pub request_ids: Vec<RequestId>,
}

/// A partition open at the fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkCut {
    /// The id its `Cut` record gave it (its heal names it).
    pub id: u32,
    pub links: Vec<(NodeId, NodeId)>,
    pub cut_ns: u64,
}

/// A service connection open at the fork.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkConn {
    pub conn: ConnId,
    pub node: NodeId,
    pub service: String,
    /// Trace index of the node's latest operation on it.
    pub last_op: u64,
    pub request_ids: Vec<RequestId>,
}

/// A node at the fork.
#[derive(Clone, Debug)]
pub struct ForkNode {
    pub state: NodeState,
    /// Trace index of its last input: the back-link of its first input after the fork.
    pub last_input: Option<u64>,
    /// Its lives so far (starts and restarts in the trace).
    pub lives: u64,
    /// When it went down, if it is down.
    pub down_since_ns: Option<u64>,
}

/// Everything a simulation started at a moment of a trace needs, besides the scenario.
pub struct ForkPoint<M: Model> {
    /// The fork's header: the trace's, with a [`crate::trace::Origin::Forked`] origin.
    pub header: Header,
    /// Records before the fork: the index of the fork's first new record.
    pub records: u64,
    /// The time of the last record before the fork.
    pub time_ns: u64,
    /// Where the scenario's clock starts on the trace's time axis: 0 for a simulated run,
    /// the first record's time for a recording (whose times are wall-clock).
    pub base_ns: u64,
    pub nodes: Vec<ForkNode>,
    pub in_flight: Vec<ForkMsg<<M::Node as Node>::Msg>>,
    pub timers: Vec<ForkTimer>,
    pub cuts: Vec<ForkCut>,
    pub conns: Vec<ForkConn>,
    /// The first ids the fork may hand out: above every one the trace used.
    pub next_cut: u32,
    pub next_timer: u64,
    pub next_request: u64,
    pub next_conn: u64,
    /// The invariants, having seen every step before the fork (some keep history: kv's
    /// acknowledged writes, a linearizability frontier).
    pub invariants: Vec<Box<dyn Invariant<M::Node>>>,
    /// Messages in flight whose content the trace does not hold (sent before the replay's
    /// starting state and never delivered in it): the fork loses them.
    pub unknown_in_flight: u64,
}

impl<M: Model> Clone for ForkPoint<M> {
    fn clone(&self) -> Self {
        ForkPoint {
            header: self.header.clone(),
            records: self.records,
            time_ns: self.time_ns,
            base_ns: self.base_ns,
            nodes: self.nodes.clone(),
            in_flight: self.in_flight.clone(),
            timers: self.timers.clone(),
            cuts: self.cuts.clone(),
            conns: self.conns.clone(),
            next_cut: self.next_cut,
            next_timer: self.next_timer,
            next_request: self.next_request,
            next_conn: self.next_conn,
            invariants: self.invariants.iter().map(|i| i.boxed_clone()).collect(),
            unknown_in_flight: self.unknown_in_flight,
        }
    }
}

/// How a fork's future is modelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkFuture {
    /// Whether the scenario's scripted faults (`[[faults]]`) after the fork still happen.
    /// `retrace fork` keeps them (the scenario goes on); `inevitable` drops them: what it
    /// asks is which *event* made the failure certain, and a scripted fault that happened
    /// is an event of the trace.
    pub scripted_faults: bool,
    /// When the fork's run stops, on the trace's time axis; by default the scenario's
    /// limit (from `base_ns`).
    pub until_ns: Option<u64>,
    /// Changes made by hand at the moment (the TUI's what-if): checked against the fork
    /// point by [`crate::what_if::check`].
    pub interventions: Vec<crate::Intervention>,
}

impl Default for ForkFuture {
    fn default() -> Self {
        ForkFuture {
            scripted_faults: true,
            until_ns: None,
            interventions: Vec::new(),
        }
    }
}

/// A send not yet delivered, as the ledger saw it.
#[derive(Clone, Debug)]
pub struct PendingSend {
    pub from: NodeId,
    pub to: NodeId,
    pub sent_ns: u64,
    pub request_ids: Vec<RequestId>,
    /// Copies still on their way: the network may have duplicated it.
    pub copies: u32,
}

/// A timer whose value the ledger may not know: one a `Resume` brought has only its id
/// (its setting is before the trace), until its firing shows it.
#[derive(Clone, Debug)]
struct LedgerTimer {
    node: NodeId,
    tag: Option<Tag>,
    set: u64,
    due_ns: u64,
    request_ids: Vec<RequestId>,
}

/// What a trace's records say about the cluster around the nodes, read one record at a
/// time up to a fork: the messages in flight, timers pending, cuts and connections open,
/// each node's last input and lives, the largest ids used. Cheap to clone, so a search
/// over many moments walks the trace once.
#[derive(Clone, Debug)]
pub struct ForkLedger {
    /// Records read: the index of the next.
    pub records: u64,
    pub time_ns: u64,
    /// The first record's time.
    pub start_ns: u64,
    last_input: Vec<Option<u64>>,
    lives: Vec<u64>,
    down_since_ns: Vec<Option<u64>>,
    /// The step open now: its node, time and request ids.
    step: Option<(NodeId, u64, Vec<RequestId>)>,
    sends: BTreeMap<u64, PendingSend>,
    timers: BTreeMap<TimerId, LedgerTimer>,
    cuts: BTreeMap<u32, (Vec<(NodeId, NodeId)>, u64)>,
    conns: BTreeMap<ConnId, ForkConn>,
    next_cut: u32,
    next_timer: u64,
    next_request: u64,
    next_conn: u64,
}

impl ForkLedger {
    /// The ledger of a trace of `nodes` nodes whose first record is at `start_ns` (a
    /// recording's times are wall-clock: a fork before its first record starts there, not
    /// at zero), before that record.
    pub fn new(nodes: usize, start_ns: u64) -> ForkLedger {
        ForkLedger {
            records: 0,
            time_ns: start_ns,
            start_ns,
            last_input: vec![None; nodes],
            lives: vec![0; nodes],
            down_since_ns: vec![Some(0); nodes],
            step: None,
            sends: BTreeMap::new(),
            timers: BTreeMap::new(),
            cuts: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_cut: 0,
            next_timer: 0,
            next_request: 0,
            next_conn: 0,
        }
    }

    /// Takes in the next record. Records come in trace order from the first (a validated
    /// trace: node ids are in range).
    pub fn observe(&mut self, e: &Event) {
        debug_assert_eq!(
            e.index, self.records,
            "the ledger reads every record in order"
        );
        self.records = e.index + 1;
        self.time_ns = e.time_ns;
        if let Some(node) = e.record.input_node() {
            return self.input(node, e);
        }
        if e.record.ends_step() {
            self.step = None;
        }
        match &e.record {
            Record::Send { to, .. } => {
                if let Some((from, _, ids)) = &self.step {
                    self.sends.insert(
                        e.index,
                        PendingSend {
                            from: *from,
                            to: *to,
                            sent_ns: e.time_ns,
                            request_ids: ids.clone(),
                            copies: 1,
                        },
                    );
                }
            }
            Record::Drop { send, .. } => self.arrived(*send),
            Record::Duplicate { send } => {
                if let Some(s) = self.sends.get_mut(send) {
                    s.copies = s.copies.saturating_add(1);
                }
            }
            Record::TimerSet {
                timer,
                tag,
                after_ns,
            } => {
                self.next_timer = self.next_timer.max(timer.0.saturating_add(1));
                if let Some((node, _, ids)) = &self.step {
                    self.timers.insert(
                        *timer,
                        LedgerTimer {
                            node: *node,
                            tag: Some(tag.clone()),
                            set: e.index,
                            due_ns: e.time_ns.saturating_add(*after_ns),
                            request_ids: ids.clone(),
                        },
                    );
                }
            }
            Record::TimerCancel { timer } => {
                self.timers.remove(timer);
            }
            Record::Respond { request, .. } => self.saw_request(*request),
            Record::Fault(FaultRecord::Cut { id, links }) => {
                self.next_cut = self.next_cut.max(id.saturating_add(1));
                self.cuts.insert(*id, (links.clone(), e.time_ns));
            }
            Record::Fault(FaultRecord::Heal { id }) => {
                self.cuts.remove(id);
            }
            Record::ServiceOut { conn, op } => {
                self.next_conn = self.next_conn.max(conn.0.saturating_add(1));
                let Some((node, _, ids)) = &self.step else {
                    return;
                };
                match op {
                    ServiceOp::Connect { service, .. } => {
                        self.conns.insert(
                            *conn,
                            ForkConn {
                                conn: *conn,
                                node: *node,
                                service: service.clone(),
                                last_op: e.index,
                                request_ids: ids.clone(),
                            },
                        );
                    }
                    ServiceOp::Write { .. } => {
                        if let Some(c) = self.conns.get_mut(conn) {
                            c.last_op = e.index;
                            c.request_ids = ids.clone();
                        }
                    }
                    ServiceOp::Close => {
                        self.conns.remove(conn);
                    }
                }
            }
            _ => {}
        }
    }

    /// One copy of the send's message arrived or was lost.
    fn arrived(&mut self, send: u64) {
        if let Some(s) = self.sends.get_mut(&send) {
            s.copies = s.copies.saturating_sub(1);
            if s.copies == 0 {
                self.sends.remove(&send);
            }
        }
    }

    fn saw_request(&mut self, request: RequestId) {
        self.next_request = self.next_request.max(request.0.saturating_add(1));
    }

    fn input(&mut self, node: NodeId, e: &Event) {
        let i = node.index();
        self.last_input[i] = Some(e.index);
        let mut ids: Vec<RequestId> = Vec::new();
        match &e.record {
            Record::Start { .. } | Record::Restart { .. } => {
                self.lives[i] += 1;
                self.down_since_ns[i] = None;
            }
            Record::Resume { snapshot, .. } => {
                self.down_since_ns[i] = None;
                self.lives[i] = self.lives[i].max(1);
                for timer in &snapshot.timers {
                    self.next_timer = self.next_timer.max(timer.0.saturating_add(1));
                    self.timers.insert(
                        *timer,
                        LedgerTimer {
                            node,
                            tag: None,
                            set: e.index,
                            due_ns: e.time_ns,
                            request_ids: Vec::new(),
                        },
                    );
                }
            }
            Record::Crash { .. } => {
                self.down_since_ns[i] = Some(e.time_ns);
                self.timers.retain(|_, t| t.node != node);
                self.conns.retain(|_, c| c.node != node);
            }
            Record::Deliver {
                send, request_ids, ..
            } => {
                if let Some(send) = send {
                    self.arrived(*send);
                }
                ids = request_ids.clone();
            }
            Record::Timer {
                timer, request_ids, ..
            } => {
                self.timers.remove(timer);
                ids = request_ids.clone();
            }
            Record::External { request, .. } => ids = vec![*request],
            Record::ServiceIn {
                conn,
                event,
                request_ids,
                ..
            } => {
                if matches!(
                    event,
                    crate::service::ServiceEvent::Closed { .. }
                        | crate::service::ServiceEvent::TimedOut
                ) {
                    self.conns.remove(conn);
                }
                ids = request_ids.clone();
            }
            _ => {}
        }
        for id in &ids {
            self.saw_request(*id);
        }
        self.step = Some((node, e.time_ns, ids));
    }

    /// The sends in flight now, by their `Send`'s index.
    pub fn in_flight(&self) -> &BTreeMap<u64, PendingSend> {
        &self.sends
    }

    /// A record after the fork shows a pending timer's value: a timer a `Resume` brought
    /// (its setting is not in the trace) is known from its firing.
    pub fn learn_timer(&mut self, timer: TimerId, tag: &Tag, fired_ns: u64) {
        if let Some(t) = self.timers.get_mut(&timer).filter(|t| t.tag.is_none()) {
            t.tag = Some(tag.clone());
            t.due_ns = fired_ns;
        }
    }

    /// The timers pending whose value is unknown (see [`ForkLedger::learn_timer`]).
    pub fn unknown_timers(&self) -> usize {
        self.timers.values().filter(|t| t.tag.is_none()).count()
    }

    /// The fork point at this record, with the nodes' states (re-executed to here), the
    /// invariants that saw every step so far, and the messages in flight with their content
    /// (those missing are counted in [`ForkPoint::unknown_in_flight`]).
    pub fn point<M: Model>(
        &self,
        header: Header,
        states: Vec<NodeState>,
        invariants: Vec<Box<dyn Invariant<M::Node>>>,
        mut message: impl FnMut(u64) -> Option<<M::Node as Node>::Msg>,
    ) -> ForkPoint<M> {
        let base_ns = if header.origin.virtual_time() {
            0
        } else {
            self.start_ns
        };
        let mut unknown_in_flight = 0;
        let mut in_flight = Vec::new();
        for (&send, s) in &self.sends {
            let Some(msg) = message(send) else {
                unknown_in_flight += u64::from(s.copies);
                continue;
            };
            for _ in 0..s.copies {
                in_flight.push(ForkMsg {
                    from: s.from,
                    to: s.to,
                    msg: msg.clone(),
                    send,
                    sent_ns: s.sent_ns,
                    request_ids: s.request_ids.clone(),
                });
            }
        }
        let nodes = states
            .into_iter()
            .enumerate()
            .map(|(i, state)| ForkNode {
                state,
                last_input: self.last_input.get(i).copied().flatten(),
                lives: self.lives.get(i).copied().unwrap_or(0),
                down_since_ns: self.down_since_ns.get(i).copied().flatten(),
            })
            .collect();
        let timers = self
            .timers
            .iter()
            .filter_map(|(&timer, t)| {
                Some(ForkTimer {
                    node: t.node,
                    timer,
                    tag: t.tag.clone()?,
                    set: t.set,
                    due_ns: t.due_ns,
                    request_ids: t.request_ids.clone(),
                })
            })
            .collect();
        ForkPoint {
            header,
            records: self.records,
            time_ns: self.time_ns,
            base_ns,
            nodes,
            in_flight,
            timers,
            cuts: self
                .cuts
                .iter()
                .map(|(id, (links, at))| ForkCut {
                    id: *id,
                    links: links.clone(),
                    cut_ns: *at,
                })
                .collect(),
            conns: self.conns.values().cloned().collect(),
            next_cut: self.next_cut,
            next_timer: self.next_timer,
            next_request: self.next_request,
            next_conn: self.next_conn,
            invariants,
            unknown_in_flight,
        }
    }
}
