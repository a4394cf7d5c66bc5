//! Running under a [`Decider`]: it picks which of the next pending events runs and whether a
//! fault is injected; what it decided is kept so the run can be replayed as a [`Schedule`].

use super::env::Pending;
use super::Simulation;
use crate::ids::NodeId;
use crate::model::Model;
use crate::node::Node;
use crate::scenario::{links_between_groups, FaultAction};
use crate::schedule::{
    Candidate, Choice, Decider, Injected, TimedFault, CRASH_DOWN_NS, ISOLATION_NS, WINDOW,
};
use crate::trace::DropReason;
use std::collections::BTreeSet;

/// A bound on the coverage keys one run keeps.
const COVERAGE_KEYS_MAX: usize = 1 << 16;

/// The fuzzing state of a run: who decides, what was decided and when, faults anchored in
/// time, and which handlers ran.
pub(super) struct Fuzzing {
    pub decider: Box<dyn Decider>,
    taken: Vec<Choice>,
    /// When each decision's event ran (`taken_at[i]` belongs to `taken[i]`).
    taken_at: Vec<u64>,
    /// Faults at times still to apply, latest first.
    timed: Vec<TimedFault>,
    /// All of the schedule's timed faults, to hand back in the report.
    timed_all: Vec<TimedFault>,
    coverage: BTreeSet<u64>,
}

/// What a decided run hands back to its report.
pub(super) struct Decided {
    pub choices: Vec<Choice>,
    pub decision_times: Vec<u64>,
    pub timed: Vec<TimedFault>,
    pub coverage: BTreeSet<u64>,
}

impl Fuzzing {
    pub fn new(decider: Box<dyn Decider>) -> Self {
        Fuzzing {
            decider,
            taken: Vec::new(),
            taken_at: Vec::new(),
            timed: Vec::new(),
            timed_all: Vec::new(),
            coverage: BTreeSet::new(),
        }
    }

    /// Takes a schedule's faults anchored in time.
    pub fn follow(&mut self, timed: &[TimedFault]) {
        self.timed_all = timed.to_vec();
        self.timed = timed.to_vec();
        self.timed.sort_by(|a, b| b.cmp(a));
    }

    /// The next timed fault due at or before `front_ns`.
    fn due(&mut self, front_ns: u64) -> Option<TimedFault> {
        if self.timed.last()?.at_ns <= front_ns {
            return self.timed.pop();
        }
        None
    }

    fn record(&mut self, choice: Choice, at_ns: u64) {
        self.taken.push(choice);
        self.taken_at.push(at_ns);
    }

    pub fn into_decided(self) -> Decided {
        assert_eq!(
            self.taken.len(),
            self.taken_at.len(),
            "every decision has its time"
        );
        Decided {
            choices: self.taken,
            decision_times: self.taken_at,
            timed: self.timed_all,
            coverage: self.coverage,
        }
    }
}

impl<M: Model> Simulation<M> {
    /// One step under a decider: it picks among the next pending events and may inject a fault.
    pub(super) fn decided_step(&mut self) -> bool {
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
        let candidates: Vec<Candidate> = window
            .iter()
            .map(|(_, _, p)| Candidate {
                is_delivery: matches!(p, Pending::Deliver(_)),
                node: Self::queued_input_node(p).unwrap_or(NodeId(0)),
            })
            .collect();
        let n = self.nodes.len();
        // Faults anchored in time go first, once their time has come.
        let front = window[0].0.max(self.core.now_ns);
        while let Some(t) = self.fuzzing.as_mut().and_then(|f| f.due(front)) {
            self.core.now_ns = self.core.now_ns.max(t.at_ns);
            let fault = Choice {
                order: 0,
                fault: t.fault,
            }
            .injected(n);
            self.inject_node_fault(fault, n, t.lasts_ns);
        }
        let at_ns = window[0].0.max(self.core.now_ns);
        let Some(fuzzing) = self.fuzzing.as_mut() else {
            unreachable!("decided_step runs only under a decider");
        };
        let step = fuzzing.taken.len() as u64;
        let choice = fuzzing.decider.decide(step, &candidates, n);
        fuzzing.record(choice, at_ns);
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
                if let Pending::Deliver(m) = pending {
                    self.core.drop_msg(m.send, DropReason::Loss);
                    return true;
                }
            }
            Some(Injected::Duplicate) => {
                if let Pending::Deliver(m) = &pending {
                    self.core.note_duplicate(m.send);
                    let copy = Pending::Deliver(m.clone());
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
            Pending::Deliver(m) => (0u8, m.to, std::mem::discriminant(&m.msg)).hash(&mut h),
            Pending::Timer { node, tag, .. } => (1u8, node, tag).hash(&mut h),
            Pending::External { node, msg, .. } => {
                (2u8, node, std::mem::discriminant(msg)).hash(&mut h)
            }
            _ => return,
        }
        if let Some(f) = self.fuzzing.as_mut() {
            if f.coverage.len() < COVERAGE_KEYS_MAX {
                f.coverage.insert(h.finish());
            }
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
}
