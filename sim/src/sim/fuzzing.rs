//! Running under a [`Decider`]: it decides each message's fate when it is sent, node faults
//! at each moment, and which pending delivery runs early; what it decided is kept, keyed by
//! what each choice is about, so the run replays as a [`Schedule`].

use super::env::Pending;
use super::Simulation;
use crate::codec;
use crate::ids::NodeId;
use crate::model::Model;
use crate::node::Node;
use crate::scenario::{links_between_groups, FaultAction};
use crate::schedule::{
    kind_hash, Candidate, Choice, Decider, Fate, Follow, Key, Moment, MsgKey, NodeFault,
    CRASH_DOWN_NS, ISOLATION_NS, NO_REQUEST, WINDOW,
};
use std::collections::{BTreeMap, BTreeSet};

/// A bound on the coverage keys one run keeps.
const COVERAGE_KEYS_MAX: usize = 1 << 16;

/// Who decides: a search's decider, or a schedule being replayed.
pub(super) enum Source {
    Explore(Box<dyn Decider>),
    Follow(Follow),
}

impl Source {
    fn decider(&mut self) -> &mut dyn Decider {
        match self {
            Source::Explore(d) => d.as_mut(),
            Source::Follow(f) => f,
        }
    }
}

/// The fuzzing state of a run: who decides, every send's key, what was decided and when,
/// and which handlers ran.
pub(super) struct Fuzzing {
    source: Source,
    /// Sends so far per (from, to, request, kind hash): the next one's `nth`.
    counts: BTreeMap<(u32, u32, u64, u64), u32>,
    /// Kind names by hash, to write keys back out.
    kind_names: BTreeMap<u64, &'static str>,
    /// Each send's key, in send order ([`InFlight::key`](super::env::InFlight) indexes it).
    keys: Vec<Key>,
    taken: Vec<Choice>,
    /// For each taken choice about a message, the trace index of its send.
    taken_send: Vec<Option<u64>>,
    /// Each decision's moment.
    decisions: Vec<Moment>,
    /// The last decision's moment.
    moment: Option<Moment>,
    coverage: BTreeSet<u64>,
}

/// What a decided run hands back to its report.
pub(super) struct Decided {
    pub choices: Vec<Choice>,
    pub sent: Vec<MsgKey>,
    pub choice_sends: Vec<Option<u64>>,
    pub decisions: Vec<Moment>,
    pub unapplied: Vec<usize>,
    pub coverage: BTreeSet<u64>,
}

impl Fuzzing {
    pub fn new(source: Source) -> Self {
        Fuzzing {
            source,
            counts: BTreeMap::new(),
            kind_names: BTreeMap::new(),
            keys: Vec::new(),
            taken: Vec::new(),
            taken_send: Vec::new(),
            decisions: Vec::new(),
            moment: None,
            coverage: BTreeSet::new(),
        }
    }

    /// Gives a message sent now its key, and where it is kept. Every send is counted, also
    /// those a partition or the network loses, so that a key does not depend on them.
    pub fn key_send(
        &mut self,
        from: NodeId,
        to: NodeId,
        request: Option<u64>,
        kind: &'static str,
    ) -> (Key, u32) {
        let hash = kind_hash(kind);
        self.kind_names.entry(hash).or_insert(kind);
        let request = request.unwrap_or(NO_REQUEST);
        let count = self
            .counts
            .entry((from.0, to.0, request, hash))
            .or_insert(0);
        let key = Key {
            from: from.0,
            to: to.0,
            request,
            kind: hash,
            nth: *count,
        };
        *count += 1;
        let index = u32::try_from(self.keys.len()).unwrap_or(u32::MAX - 1);
        self.keys.push(key);
        (key, index)
    }

    /// The fate of a message the network is about to carry.
    pub fn fate(&mut self, key: &Key, send: u64) -> Fate {
        let fate = self.source.decider().fate(key);
        if let Some(choice) = Choice::of_fate(self.msg_key(key), fate) {
            self.taken.push(choice);
            self.taken_send.push(Some(send));
        }
        fate
    }

    fn msg_key(&self, key: &Key) -> MsgKey {
        MsgKey {
            from: key.from,
            to: key.to,
            request: (key.request != NO_REQUEST).then_some(key.request),
            kind: self
                .kind_names
                .get(&key.kind)
                .copied()
                .unwrap_or_default()
                .to_string(),
            nth: key.nth,
        }
    }

    fn key_of(&self, index: u32) -> Option<Key> {
        self.keys.get(index as usize).copied()
    }

    /// The moment of a decision at `at_ns`.
    fn next_moment(&mut self, at_ns: u64) -> Moment {
        let m = match self.moment {
            Some(m) if m.at_ns == at_ns => Moment {
                at_ns,
                nth: m.nth + 1,
            },
            _ => Moment::at(at_ns),
        };
        self.moment = Some(m);
        m
    }

    pub fn into_decided(self) -> Decided {
        assert_eq!(
            self.taken.len(),
            self.taken_send.len(),
            "every choice has its place"
        );
        let unapplied = match &self.source {
            Source::Follow(f) => f.unapplied(),
            Source::Explore(_) => Vec::new(),
        };
        // Every message's key, for the minimiser's single-fault swaps; only a followed
        // schedule's run (the minimiser's) pays for writing them out.
        let sent = match &self.source {
            Source::Follow(_) => self.keys.iter().map(|k| self.msg_key(k)).collect(),
            Source::Explore(_) => Vec::new(),
        };
        Decided {
            sent,
            choices: self.taken,
            choice_sends: self.taken_send,
            decisions: self.decisions,
            unapplied,
            coverage: self.coverage,
        }
    }
}

impl<M: Model> Simulation<M> {
    /// One step under a decider: node faults due at this moment first, then the decider
    /// picks among the next pending events.
    pub(super) fn decided_step(&mut self) -> bool {
        let Some(front_ns) = self.core.queue.peek_time() else {
            return self.finish(crate::trace::Outcome::Quiescent);
        };
        let front_ns = front_ns.max(self.core.now_ns);
        let n = self.nodes.len();
        let Some(fuzzing) = self.core.fuzzing.as_mut() else {
            unreachable!("decided_step runs only under a decider");
        };
        let at = fuzzing.next_moment(front_ns);
        let mut faults = Vec::new();
        fuzzing.source.decider().node_faults(at, n, &mut faults);
        for (moment, fault) in faults {
            if let Some(f) = self.core.fuzzing.as_mut() {
                f.taken.push(Choice::of_node_fault(moment, fault));
                f.taken_send.push(None);
            }
            // A fault anchored earlier than the next event happens at its own time.
            self.core.now_ns = self.core.now_ns.max(moment.at_ns.min(front_ns));
            self.inject_node_fault(fault, n);
            if self.outcome.is_some() {
                return true;
            }
        }
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
            return self.finish(crate::trace::Outcome::Quiescent);
        }
        let Some(fuzzing) = self.core.fuzzing.as_mut() else {
            unreachable!("decided_step runs only under a decider");
        };
        let candidates: Vec<Candidate> = window
            .iter()
            .map(|(_, _, p)| Candidate {
                msg: match p {
                    Pending::Deliver(m) => fuzzing.key_of(m.key),
                    _ => None,
                },
                node: Self::queued_input_node(p).unwrap_or(NodeId(0)),
            })
            .collect();
        let chosen = fuzzing
            .source
            .decider()
            .early(at, &candidates)
            .filter(|&i| i < window.len() && candidates[i].is_delivery())
            .unwrap_or(0);
        if chosen != 0 {
            if let Some(key) = candidates[chosen].msg {
                let msg = fuzzing.msg_key(&key);
                let send = match &window[chosen].2 {
                    Pending::Deliver(m) => Some(m.send),
                    _ => None,
                };
                fuzzing.taken.push(Choice::Early { msg, at });
                fuzzing.taken_send.push(send);
            }
        }
        let (time_ns, _, pending) = window.remove(chosen);
        for (t, seq, item) in window {
            self.requeue(t, seq, item);
        }
        self.core.now_ns = self.core.now_ns.max(time_ns);
        if let Some(f) = self.core.fuzzing.as_mut() {
            f.decisions.push(at);
        }
        self.cover(&pending);
        self.handle(pending);
        true
    }

    /// Notes which handler `pending` will exercise. The message's (or timer's) enum variant
    /// stands for its kind; `DefaultHasher::new()` has fixed keys, so keys agree across runs.
    fn cover(&mut self, pending: &Pending<<M::Node as Node>::Msg>) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        match pending {
            Pending::Deliver(m) => (0u8, m.to, std::mem::discriminant(&m.msg)).hash(&mut h),
            Pending::Timer { node, tag, .. } => {
                // By the timer's kind (its enum variant), not its value: a timer that carries
                // an operation number is one handler, not one per number.
                match codec::decode::<<M::Node as Node>::Timer>(tag.as_bytes()) {
                    Ok(value) => (1u8, node, std::mem::discriminant(&value)).hash(&mut h),
                    Err(_) => (1u8, node).hash(&mut h),
                }
            }
            Pending::External { node, msg, .. } => {
                (2u8, node, std::mem::discriminant(msg)).hash(&mut h)
            }
            _ => return,
        }
        if let Some(f) = self.core.fuzzing.as_mut() {
            if f.coverage.len() < COVERAGE_KEYS_MAX {
                f.coverage.insert(h.finish());
            }
        }
    }

    /// Applies a crash, isolation or clock jump now.
    fn inject_node_fault(&mut self, fault: NodeFault, n: usize) {
        match fault {
            NodeFault::Crash { node, lasts_ns } => {
                self.handle(Pending::Fault(FaultAction::Crash {
                    node: NodeId(node),
                    restart_after_ns: Some(lasts_ns.unwrap_or(CRASH_DOWN_NS)),
                }))
            }
            NodeFault::Isolate { node, lasts_ns } => {
                let group_of: Vec<usize> =
                    (0..n).map(|i| usize::from(i == node as usize)).collect();
                let links = links_between_groups(&group_of);
                self.handle(Pending::Fault(FaultAction::Cut {
                    links,
                    heal_after_ns: Some(lasts_ns.unwrap_or(ISOLATION_NS)),
                }))
            }
            NodeFault::ClockJump { node, by_ns } => {
                self.handle(Pending::Fault(FaultAction::ClockJump {
                    node: NodeId(node),
                    by_ns,
                }))
            }
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
}
