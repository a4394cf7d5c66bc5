//! Linearizability as an invariant: the run's history grows step by step, and each answer
//! re-checks the key it touched (P-compositionality: the other keys cannot have changed).

use super::{check_key, witness, Limits, Spec};
use crate::history::History;
use crate::model::{Broken, Invariant, View};
use crate::node::Node;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

/// Keys with more operations than this are no longer checked while a run goes on (the
/// cost of a check grows with the key's history); `retrace check --linearizable` still
/// checks them whole.
pub const OPS_PER_KEY_MAX: usize = 20_000;

/// The search limits of a check inside a run: it re-checks a key at every answer, so one
/// check gets far less than a whole-history check does. A key whose check runs out is no
/// longer checked in that run (it is reported undecided by `retrace check`).
pub const INVARIANT_LIMITS: Limits = Limits {
    steps_per_key: 300_000,
    steps_per_witness: 3_000_000,
};

/// The invariant "what clients saw is linearizable" for specification `S`.
pub struct Linearizable<S: Spec> {
    name: String,
    history: History<S::Msg>,
    /// Each key's operations (history indices), as for [`super::partitions`].
    keys: BTreeMap<String, Vec<usize>>,
    /// Keys no longer checked: too long, or the search ran out of its budget once.
    skipped: BTreeSet<String>,
    limits: Limits,
    _spec: PhantomData<fn() -> S>,
}

impl<S: Spec> Clone for Linearizable<S> {
    fn clone(&self) -> Self {
        Linearizable {
            name: self.name.clone(),
            history: self.history.clone(),
            keys: self.keys.clone(),
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
            keys: BTreeMap::new(),
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
            if let Some(key) = S::partition(&self.history.ops()[i].input) {
                self.keys.entry(key).or_default().push(i);
            }
        }
        for i in completed {
            let Some(key) = S::partition(&self.history.ops()[i].input) else {
                continue;
            };
            let output = self.history.ops()[i].output.as_ref().map(S::observe);
            if matches!(output, Some(super::Observed::Failed)) {
                // It did not happen: out of the key's operations, as `partitions` leaves it.
                if let Some(ops) = self.keys.get_mut(&key) {
                    ops.retain(|&j| j != i);
                }
                continue;
            }
            if self.skipped.contains(&key) {
                continue;
            }
            let ops = &self.keys[&key];
            if ops.len() > OPS_PER_KEY_MAX {
                self.skipped.insert(key);
                continue;
            }
            let mut budget = self.limits.steps_per_key;
            match check_key::<S>(&self.history, ops, &mut budget) {
                Some(true) => {}
                None => {
                    self.skipped.insert(key);
                }
                Some(false) => {
                    let mut budget = self.limits.steps_per_witness;
                    let w = witness::<S>(&self.history, key.clone(), ops, &mut budget);
                    let diagram = super::draw::<S>(&self.history, &w, &|n| n.to_string());
                    let requests: Vec<String> = w
                        .ops
                        .iter()
                        .map(|&j| self.history.ops()[j].request.to_string())
                        .collect();
                    return Err(
                        Broken::new(format!("not linearizable: {}", diagram.trim_end()))
                            .fact("key", key)
                            .fact("requests", requests.join(" ")),
                    );
                }
            }
        }
        Ok(())
    }
}
