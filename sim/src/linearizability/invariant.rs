//! Linearizability as an invariant: the run's history grows step by step, and each answer
//! is checked against the key it touched (P-compositionality: the other keys cannot have
//! changed).
//!
//! Checking a key from scratch at every answer costs the key's whole history each time —
//! quadratic over a run, and what made a fuzz campaign with the check five times slower.
//! So each key keeps a *frontier*: the state after a linearization already found of every
//! answered operation (and of any open ones it needed). A new answer that the frontier's
//! state explains — applied last, or right after one still-open operation — extends that
//! linearization, which stays valid: the new operation answered now, so nothing
//! linearized before it began after it ended. Only an answer the frontier cannot explain
//! sends the key to the full search (which may find another order, or the violation).
//! An answer that leaves the state as it was (a read) may also go in among the last
//! operations placed, after any that had not ended when it began: two reads racing a write
//! see either side of it.

use super::{linearize_key, witness, Limits, Observed, Spec};
use crate::history::History;
use crate::history::Instant;
use crate::model::{Broken, Invariant, View};
use crate::node::Node;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::marker::PhantomData;

/// Keys with more operations than this are no longer searched whole while a run goes on
/// (the frontier still extends cheaply); `retrace check --linearizable` checks them whole.
pub const OPS_PER_KEY_MAX: usize = 20_000;

/// The search limits of a check inside a run. A key whose search runs out is no longer
/// checked in that run (it is reported undecided by `retrace check`).
pub const INVARIANT_LIMITS: Limits = Limits {
    steps_per_key: 300_000,
    steps_per_witness: 3_000_000,
};

/// Open operations tried before a new answer, at most, when extending a frontier.
const OPEN_TRIED_MAX: usize = 64;

/// The last operations placed that a read may still go in among, with their states.
const RECENT_MAX: usize = 32;

/// A key's operations and the end of a linearization of them found so far.
struct Key<S: Spec> {
    /// History indices, in invocation order (failed operations taken out).
    ops: Vec<usize>,
    /// The state after the linearization.
    state: S,
    /// The operations in it.
    placed: BTreeSet<usize>,
    /// Those placed before their answer came, with the result the order gave them: their
    /// answer must match it.
    expect: BTreeMap<usize, S::Ret>,
    /// The linearization's last operations, each with the state after it (the last one's
    /// is `state`).
    recent: VecDeque<(usize, S)>,
}

impl<S: Spec> Clone for Key<S> {
    fn clone(&self) -> Self {
        Key {
            ops: self.ops.clone(),
            state: self.state.clone(),
            placed: self.placed.clone(),
            expect: self.expect.clone(),
            recent: self.recent.clone(),
        }
    }
}

impl<S: Spec> Default for Key<S> {
    fn default() -> Self {
        Key {
            ops: Vec::new(),
            state: S::default(),
            placed: BTreeSet::new(),
            expect: BTreeMap::new(),
            recent: VecDeque::new(),
        }
    }
}

/// What the frontier says of a new answer.
enum Extended {
    /// Still linearizable.
    Yes,
    /// The frontier cannot tell: search the key.
    Search,
}

impl<S: Spec> Key<S> {
    /// Operation `i` answered `result`: extends the linearization if the state explains it.
    fn extend(&mut self, history: &History<S::Msg>, i: usize, result: &S::Ret) -> Extended {
        if let Some(expected) = self.expect.remove(&i) {
            return if expected == *result {
                Extended::Yes
            } else {
                Extended::Search
            };
        }
        if self.placed.contains(&i) {
            return Extended::Yes;
        }
        let input = &history.ops()[i].input;
        let mut after = self.state.clone();
        if after.apply(input) == *result {
            self.place(i, after);
            return Extended::Yes;
        }
        // One open operation may have taken effect first: the write a read returned.
        let open = self
            .ops
            .iter()
            .copied()
            .filter(|&j| j != i && !self.placed.contains(&j) && open_or_unknown::<S>(history, j))
            .take(OPEN_TRIED_MAX);
        for j in open {
            let mut after = self.state.clone();
            let got = after.apply(&history.ops()[j].input);
            let mut last = after.clone();
            if last.apply(input) == *result {
                self.place(j, after);
                self.place(i, last);
                if history.ops()[j].output.is_none() {
                    self.expect.insert(j, got);
                }
                return Extended::Yes;
            }
        }
        self.insert_read(history, i, result)
    }

    /// Appends operation `i`, after which the state is `after`.
    fn place(&mut self, i: usize, after: S) {
        self.placed.insert(i);
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((i, after.clone()));
        self.state = after;
    }

    /// Puts operation `i` right after one of the last operations placed, if there it
    /// returns `result` and changes nothing (so what follows it still holds), and every
    /// operation after that point had not ended when `i` began.
    fn insert_read(&mut self, history: &History<S::Msg>, i: usize, result: &S::Ret) -> Extended {
        let op = &history.ops()[i];
        for p in (0..self.recent.len()).rev() {
            // The operation at p + 1 would now follow `i`: it must not have ended first.
            if let Some(&(later, _)) = self.recent.get(p + 1) {
                if known_ret::<S>(history, later) < op.call {
                    break;
                }
            }
            let before = &self.recent[p].1;
            let mut after = before.clone();
            if after.apply(&op.input) == *result && after == *before {
                self.placed.insert(i);
                if self.recent.len() == RECENT_MAX {
                    // Keep the window's length; what falls out is older than p.
                    self.recent.pop_front();
                    self.recent.insert(p, (i, after));
                } else {
                    self.recent.insert(p + 1, (i, after));
                }
                return Extended::Yes;
            }
        }
        Extended::Search
    }

    /// Takes a linearization the search found (history indices, in order) as the frontier.
    fn reset(&mut self, history: &History<S::Msg>, order: &[usize]) {
        self.state = S::default();
        self.placed.clear();
        self.expect.clear();
        self.recent.clear();
        for &j in order {
            let mut after = self.state.clone();
            let got = after.apply(&history.ops()[j].input);
            self.place(j, after);
            if history.ops()[j].output.is_none() {
                self.expect.insert(j, got);
            }
        }
    }
}

/// When operation `j` is known to have ended: its answer, if that says what it returned;
/// otherwise never (it may take effect at any time).
fn known_ret<S: Spec>(history: &History<S::Msg>, j: usize) -> Instant {
    let op = &history.ops()[j];
    match op.output.as_ref().map(S::observe) {
        Some(Observed::Returned(_)) => op.ret,
        _ => Instant::NEVER,
    }
}

/// An operation without an answer yet, or whose answer says nothing of its effect.
fn open_or_unknown<S: Spec>(history: &History<S::Msg>, j: usize) -> bool {
    match history.ops()[j].output.as_ref() {
        None => true,
        Some(out) => matches!(S::observe(out), Observed::Unknown),
    }
}

/// The invariant "what clients saw is linearizable" for specification `S`.
pub struct Linearizable<S: Spec> {
    name: String,
    history: History<S::Msg>,
    /// Each key's number, in order of first use, and each key by number.
    key_ids: BTreeMap<String, u32>,
    keys: Vec<(String, Key<S>)>,
    /// Per operation of the history, its key's number (so an answer finds its key without
    /// partitioning the request again).
    op_keys: Vec<Option<u32>>,
    /// Keys no longer checked: too long, or the search ran out of its budget once.
    skipped: BTreeSet<u32>,
    limits: Limits,
    _spec: PhantomData<fn() -> S>,
}

impl<S: Spec> Clone for Linearizable<S> {
    fn clone(&self) -> Self {
        Linearizable {
            name: self.name.clone(),
            history: self.history.clone(),
            key_ids: self.key_ids.clone(),
            keys: self.keys.clone(),
            op_keys: self.op_keys.clone(),
            skipped: self.skipped.clone(),
            limits: self.limits,
            _spec: PhantomData,
        }
    }
}

impl<S: Spec> Linearizable<S> {
    pub fn new(name: &str) -> Self {
        Linearizable {
            name: name.to_string(),
            history: History::new(),
            key_ids: BTreeMap::new(),
            keys: Vec::new(),
            op_keys: Vec::new(),
            skipped: BTreeSet::new(),
            limits: INVARIANT_LIMITS,
            _spec: PhantomData,
        }
    }

    /// With other search limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The history seen so far.
    pub fn history(&self) -> &History<S::Msg> {
        &self.history
    }

    /// Searches `key` whole: a new frontier, or the violation with its witness.
    fn search(&mut self, id: u32) -> Result<(), Broken> {
        let (key, k) = &mut self.keys[id as usize];
        if k.ops.len() > OPS_PER_KEY_MAX {
            self.skipped.insert(id);
            return Ok(());
        }
        let mut budget = self.limits.steps_per_key;
        match linearize_key::<S>(&self.history, &k.ops, &mut budget) {
            Some(Some(order)) => {
                k.reset(&self.history, &order);
                Ok(())
            }
            None => {
                self.skipped.insert(id);
                Ok(())
            }
            Some(None) => {
                let mut budget = self.limits.steps_per_witness;
                let w = witness::<S>(&self.history, key.clone(), &k.ops, &mut budget);
                let diagram = super::draw::<S>(&self.history, &w, &|n| n.to_string());
                let requests: Vec<String> = w
                    .ops
                    .iter()
                    .map(|&j| self.history.ops()[j].request.to_string())
                    .collect();
                Err(
                    Broken::new(format!("not linearizable: {}", diagram.trim_end()))
                        .fact("key", key.clone())
                        .fact("requests", requests.join(" ")),
                )
            }
        }
    }
}

impl<N: Node, S: Spec<Msg = N::Msg>> Invariant<N> for Linearizable<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn sees_clients(&self) -> bool {
        true
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<N>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, N>) -> Result<(), Broken> {
        if view.client.is_empty() {
            return Ok(());
        }
        let first_new = self.history.len();
        let completed = self
            .history
            .observe(view.step_index, view.time_ns, view.client);
        for i in first_new..self.history.len() {
            let id = S::partition(&self.history.ops()[i].input).map(|key| {
                let next = self.keys.len() as u32;
                let id = *self.key_ids.entry(key.clone()).or_insert(next);
                if id == next {
                    self.keys.push((key, Key::default()));
                }
                self.keys[id as usize].1.ops.push(i);
                id
            });
            debug_assert_eq!(self.op_keys.len(), i);
            self.op_keys.push(id);
        }
        for i in completed {
            let op = &self.history.ops()[i];
            let Some(id) = self.op_keys[i] else {
                continue;
            };
            if self.skipped.contains(&id) {
                continue;
            }
            let k = &mut self.keys[id as usize].1;
            let observed = op.output.as_ref().map(S::observe);
            let verdict = match observed {
                // It did not happen: out of the key's operations, as `partitions` leaves
                // it. A linearization that had it in is no longer one.
                Some(Observed::Failed) => {
                    k.ops.retain(|&j| j != i);
                    if k.placed.contains(&i) {
                        Extended::Search
                    } else {
                        Extended::Yes
                    }
                }
                // No answer to explain: it may take effect at any time, or never.
                Some(Observed::Unknown) | None => {
                    k.expect.remove(&i);
                    Extended::Yes
                }
                Some(Observed::Returned(result)) => k.extend(&self.history, i, &result),
            };
            if let Extended::Search = verdict {
                self.search(id)?;
            }
        }
        Ok(())
    }
}
