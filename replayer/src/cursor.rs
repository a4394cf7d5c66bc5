//! A cursor over a run: forward and back, by node, to an event or a time, until a predicate
//! holds; bookmarks; every node's state at every step.
//!
//! Rewind is rr's approach: whole-cluster checkpoints, taken every `spacing` of re-execution
//! time, then re-execution from the nearest one. When the checkpoints outgrow the memory
//! budget, every other one in the older half is dropped, so recent history stays dense and
//! old history sparse.

use crate::diff::{diff_states, Change};
use crate::engine::{Cluster, Divergence, Replay, ReplayViolation};
use crate::predicate::Predicate;
use retrace_sim::trace::Record;
use retrace_sim::{codec, Model, Node, NodeId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How checkpoints are kept.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Re-execution time between checkpoints: a jump costs at most about this much.
    pub spacing: Duration,
    /// Memory the checkpoints may hold (estimated).
    pub budget_bytes: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            spacing: Duration::from_millis(10),
            budget_bytes: 512 << 20,
        }
    }
}

struct Checkpoint<M: Model> {
    cluster: Cluster<M>,
    bytes: usize,
}

pub struct Cursor<M: Model> {
    replay: Replay<M>,
    cluster: Cluster<M>,
    /// By step count.
    checkpoints: BTreeMap<usize, Checkpoint<M>>,
    bytes: usize,
    policy: CheckpointPolicy,
    since_checkpoint: Duration,
    /// The first divergence, once met: the cursor cannot pass it.
    divergence: Option<Box<Divergence>>,
    /// Invariant violations met while moving forward, by step.
    violations: BTreeMap<usize, Vec<ReplayViolation>>,
    bookmarks: BTreeMap<String, usize>,
}

impl<M: Model> Cursor<M> {
    pub fn new(replay: Replay<M>, policy: CheckpointPolicy) -> Self {
        let cluster = replay.initial();
        let mut c = Cursor {
            replay,
            cluster,
            checkpoints: BTreeMap::new(),
            bytes: 0,
            policy,
            since_checkpoint: Duration::ZERO,
            divergence: None,
            violations: BTreeMap::new(),
            bookmarks: BTreeMap::new(),
        };
        c.checkpoint();
        c
    }

    pub fn replay(&self) -> &Replay<M> {
        &self.replay
    }

    /// Steps applied: the state is the cluster after steps `0..position()`.
    pub fn position(&self) -> usize {
        self.cluster.applied
    }

    /// The step the cursor is on (the last one applied), if any.
    pub fn current_step(&self) -> Option<usize> {
        self.position().checked_sub(1)
    }

    /// How many steps the run has.
    pub fn len(&self) -> usize {
        self.replay.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replay.steps.is_empty()
    }

    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_deref()
    }

    pub fn violations(&self) -> impl Iterator<Item = &ReplayViolation> {
        self.violations.values().flatten()
    }

    /// Node states at the current position.
    pub fn nodes(&self) -> &[Option<M::Node>] {
        &self.cluster.nodes
    }

    pub fn checkpoint_count(&self) -> usize {
        self.checkpoints.len()
    }

    pub fn checkpoint_bytes(&self) -> usize {
        self.bytes
    }

    fn checkpoint(&mut self) {
        let at = self.cluster.applied;
        if self.checkpoints.contains_key(&at) {
            return;
        }
        let bytes = self.cluster.approx_bytes();
        self.checkpoints.insert(
            at,
            Checkpoint {
                cluster: self.cluster.clone(),
                bytes,
            },
        );
        self.bytes += bytes;
        self.since_checkpoint = Duration::ZERO;
        self.thin();
    }

    /// Drops every other checkpoint of the older half until the budget holds (the first
    /// checkpoint, the run's start, always stays).
    fn thin(&mut self) {
        let mut rounds = 0;
        while self.bytes > self.policy.budget_bytes && self.checkpoints.len() > 2 && rounds < 64 {
            rounds += 1;
            let keys: Vec<usize> = self.checkpoints.keys().copied().collect();
            let older = &keys[1..keys.len() / 2 + 1];
            for k in older.iter().skip(1).step_by(2) {
                if let Some(c) = self.checkpoints.remove(k) {
                    self.bytes -= c.bytes;
                }
            }
            if older.len() < 2 {
                // Only recent checkpoints left: drop the oldest but the start.
                if let Some(&k) = keys.get(1) {
                    if let Some(c) = self.checkpoints.remove(&k) {
                        self.bytes -= c.bytes;
                    }
                }
            }
        }
        // The running total is what the budget is held to: it must be the checkpoints' sum.
        assert_eq!(
            self.bytes,
            self.checkpoints.values().map(|c| c.bytes).sum::<usize>(),
            "checkpoint byte total"
        );
    }

    /// One step forward; false at the end of the run or at the divergence.
    pub fn forward(&mut self) -> bool {
        let k = self.cluster.applied;
        if k >= self.len() || self.divergence.as_ref().is_some_and(|d| d.step <= k) {
            return false;
        }
        let started = Instant::now();
        match self.replay.apply(&mut self.cluster) {
            Ok(violations) => {
                if !violations.is_empty() {
                    self.violations.insert(k, violations);
                }
            }
            Err(d) => {
                self.divergence = Some(d);
                return false;
            }
        }
        self.since_checkpoint += started.elapsed();
        if self.since_checkpoint >= self.policy.spacing {
            self.checkpoint();
        }
        true
    }

    /// Goes to the state after `steps` steps (clamped to what can be reached).
    pub fn goto(&mut self, steps: usize) {
        let target = steps.min(self.len());
        // Restore the nearest checkpoint at or before the target when going back, or when it
        // is further along than where the cursor is.
        if let Some((&at, cp)) = self.checkpoints.range(..=target).next_back() {
            if target < self.cluster.applied || at > self.cluster.applied {
                self.cluster = cp.cluster.clone();
                self.since_checkpoint = Duration::ZERO;
            }
        }
        while self.cluster.applied < target {
            if !self.forward() {
                break;
            }
        }
    }

    pub fn back(&mut self) {
        let p = self.position();
        self.goto(p.saturating_sub(1));
    }

    /// Runs to the end of the run (or to the divergence).
    pub fn run_to_end(&mut self) {
        while self.forward() {}
    }

    /// Makes the step holding trace record `index` the current one.
    pub fn goto_event(&mut self, index: usize) {
        match self.replay.steps.step_at_or_before(index) {
            Some(s) => self.goto(s + 1),
            None => self.goto(0),
        }
    }

    /// Makes the first step at or after `time_ns` the current one.
    pub fn goto_time(&mut self, time_ns: u64) {
        let s = self
            .replay
            .steps
            .steps
            .partition_point(|s| s.time_ns < time_ns);
        self.goto(s + 1);
    }

    /// The next step on `node` after the current one.
    pub fn next_on_node(&mut self, node: NodeId) -> bool {
        let from = self.position();
        match self.replay.steps.steps[from.min(self.len())..]
            .iter()
            .position(|s| s.node == node)
        {
            Some(off) => {
                self.goto(from + off + 1);
                true
            }
            None => false,
        }
    }

    /// The previous step on `node` before the current one.
    pub fn prev_on_node(&mut self, node: NodeId) -> bool {
        let Some(cur) = self.current_step() else {
            return false;
        };
        match self.replay.steps.steps[..cur]
            .iter()
            .rposition(|s| s.node == node)
        {
            Some(s) => {
                self.goto(s + 1);
                true
            }
            None => false,
        }
    }

    /// The invariant violations met after step `step` (once the cursor has passed it).
    pub fn violations_at(&self, step: usize) -> &[ReplayViolation] {
        self.violations.get(&step).map_or(&[], Vec::as_slice)
    }

    /// Whether `pred` holds at the current step.
    pub fn holds(&self, pred: &Predicate) -> bool {
        let Some(k) = self.current_step() else {
            return false;
        };
        let step = &self.replay.steps.steps[k];
        let record = &self.replay.trace.events[step.input].record;
        let message = || match record {
            Record::Deliver { payload, .. } | Record::External { payload, .. } => {
                codec::decode::<<M::Node as Node>::Msg>(payload)
                    .ok()
                    .map(|m| format!("{m:?}"))
            }
            _ => None,
        };
        match pred {
            Predicate::Node(n) => step.node == *n,
            Predicate::Kind(kind) => record.kind() == kind,
            Predicate::Message(variant) => message().is_some_and(|m| {
                m.strip_prefix(variant.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '(', '{']))
            }),
            Predicate::Contains(text) => message().is_some_and(|m| m.contains(text.as_str())),
            Predicate::State { node, contains } => self
                .cluster
                .nodes
                .get(node.index())
                .and_then(|s| s.as_ref())
                .is_some_and(|s| format!("{s:?}").contains(contains.as_str())),
            Predicate::Invariant => self.violations.contains_key(&k),
            Predicate::Any(preds) => preds.iter().any(|p| self.holds(p)),
            Predicate::Request(r) => record.request_ids().contains(r),
        }
    }

    /// Moves forward until `pred` holds (at most to the end); true if found.
    pub fn run_forward_until(&mut self, pred: &Predicate) -> bool {
        let leaves = pred.leaves();
        let mut held = self.holding(&leaves);
        while self.forward() {
            if self.fires(&leaves, &mut held) {
                return true;
            }
        }
        false
    }

    /// Which of `leaves` hold at the current position.
    fn holding(&self, leaves: &[&Predicate]) -> Vec<bool> {
        leaves.iter().map(|p| self.holds(p)).collect()
    }

    /// Whether any of `leaves` fires at the current position, given which held at the
    /// position before (`held`, updated): a step predicate fires at every step it matches,
    /// a watch only where it becomes true ([`Predicate::is_watch`]).
    fn fires(&self, leaves: &[&Predicate], held: &mut [bool]) -> bool {
        debug_assert_eq!(leaves.len(), held.len());
        let mut fired = false;
        for (p, was) in leaves.iter().zip(held.iter_mut()) {
            let now = self.holds(p);
            fired |= now && !(p.is_watch() && *was);
            *was = now;
        }
        fired
    }

    /// Moves backward until `pred` holds (at most to the start); true if found. Searches
    /// segment by segment between checkpoints, forward inside each, so that it costs one
    /// re-execution of the distance, not one per step.
    pub fn run_backward_until(&mut self, pred: &Predicate) -> bool {
        let Some(cur) = self.current_step() else {
            return false;
        };
        let mut hi = cur; // search steps < hi (as positions hi-1 .. )
        loop {
            let lo = self
                .checkpoints
                .range(..hi)
                .next_back()
                .map_or(0, |(&k, _)| k);
            // Positions lo+1 ..= hi are states after steps lo .. hi-1.
            self.goto(lo);
            let leaves = pred.leaves();
            let mut held = self.holding(&leaves);
            let mut found = None;
            while self.position() < hi {
                if !self.forward() {
                    break;
                }
                if self.fires(&leaves, &mut held) {
                    found = Some(self.position());
                }
            }
            if let Some(p) = found {
                self.goto(p);
                return true;
            }
            if lo == 0 {
                self.goto(cur + 1);
                return false;
            }
            hi = lo;
        }
    }

    pub fn bookmark(&mut self, name: &str) {
        self.bookmarks.insert(name.to_string(), self.position());
    }

    pub fn goto_bookmark(&mut self, name: &str) -> bool {
        match self.bookmarks.get(name) {
            Some(&p) => {
                self.goto(p);
                true
            }
            None => false,
        }
    }

    pub fn bookmarks(&self) -> &BTreeMap<String, usize> {
        &self.bookmarks
    }

    /// A node's state before and after step `step`, and the structural difference.
    pub fn step_states(&mut self, step: usize) -> (Option<M::Node>, Option<M::Node>, Vec<Change>) {
        let node = self.replay.steps.steps[step].node.index();
        self.goto(step);
        let before = self.cluster.nodes.get(node).cloned().flatten();
        self.goto(step + 1);
        let after = self.cluster.nodes.get(node).cloned().flatten();
        let changes = diff_states(before.as_ref(), after.as_ref());
        (before, after, changes)
    }
}
