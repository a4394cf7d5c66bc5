//! Linearizability: could every operation clients saw have taken effect at one instant
//! between its invocation and its answer, in an order a sequential specification accepts?
//!
//! The author writes the specification ([`Spec`]): the object as one sequential machine
//! (`apply` an operation, get its result), which part of the state an operation touches
//! (`partition`, by key: linearizability is compositional, so each key is checked alone —
//! P-compositionality), and how a client's answer reads as a result (`observe`). The check
//! is the Wing–Gong/Lowe search with memoisation, as in porcupine (`search.rs`); a violation
//! comes with the smallest sub-history that still cannot be ordered (`witness.rs`), drawn as
//! overlapping bars (`diagram.rs`). [`Linearizable`] runs the check as an invariant while a
//! run grows its history.

mod diagram;
mod invariant;
mod search;
mod witness;

pub use diagram::draw;
pub use invariant::Linearizable;

use crate::history::{History, Instant, Operation};
use crate::ids::NodeId;
use crate::node::Message;
use search::SearchOp;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::marker::PhantomData;

/// A sequential specification: the state of one partition (one key) of the object, which
/// starts as `Default` and changes only through `apply`.
///
/// ```
/// use retrace_sim::linearizability::{Observed, Spec};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum Msg { Put(String, u64), Get(String), Ok, Value(Option<u64>), Busy }
///
/// /// One register per key.
/// #[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
/// struct Register(Option<u64>);
///
/// impl Spec for Register {
///     type Msg = Msg;
///     type Ret = Option<Option<u64>>; // None for a put's "ok", Some(value) for a get
///     fn partition(input: &Msg) -> Option<String> {
///         match input { Msg::Put(k, _) | Msg::Get(k) => Some(k.clone()), _ => None }
///     }
///     fn apply(&mut self, input: &Msg) -> Self::Ret {
///         match input {
///             Msg::Put(_, v) => { self.0 = Some(*v); None }
///             _ => Some(self.0),
///         }
///     }
///     fn observe(output: &Msg) -> Observed<Self::Ret> {
///         match output {
///             Msg::Ok => Observed::Returned(None),
///             Msg::Value(v) => Observed::Returned(Some(*v)),
///             Msg::Busy => Observed::Failed, // refused: it did not happen
///             _ => Observed::Unknown,
///         }
///     }
/// }
/// ```
pub trait Spec: Clone + Eq + Hash + Debug + Default + 'static {
    /// The node's message type: requests and answers are messages.
    type Msg: Message;
    /// What an operation returns, as the specification computes it.
    type Ret: PartialEq + Clone + Debug;
    /// The key an operation touches; `None` for a request that is not an operation of this
    /// object (it is left out of the check).
    fn partition(input: &Self::Msg) -> Option<String>;
    /// Performs `input` on this state and says what it returns.
    fn apply(&mut self, input: &Self::Msg) -> Self::Ret;
    /// What the client's answer says the operation returned.
    fn observe(output: &Self::Msg) -> Observed<Self::Ret>;
    /// One short line for an operation in a violation's diagram.
    fn describe(input: &Self::Msg, output: Option<&Self::Msg>) -> String {
        match output {
            Some(o) => format!("{input:?} -> {o:?}"),
            None => format!("{input:?} -> (no answer)"),
        }
    }
}

/// What an answer tells about its operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed<R> {
    /// It took effect and returned this.
    Returned(R),
    /// It may or may not have taken effect (a timeout, "gave up"): treated like an
    /// operation that never returned.
    Unknown,
    /// It certainly did not take effect (refused before doing anything): left out.
    Failed,
}

/// Bounds on the work one check may do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Search steps (call and return points visited) per key; a key that needs more is
    /// reported undecided, never as a violation.
    pub steps_per_key: u64,
    /// Search steps spent looking for the smallest non-linearizable sub-history of one key;
    /// when they run out the witness is reported as not minimal.
    pub steps_per_witness: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps_per_key: 10_000_000,
            steps_per_witness: 5_000_000,
        }
    }
}

/// A key whose operations cannot be linearized, with the smallest sub-history found that
/// still cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Witness {
    pub key: String,
    /// Indices into the history's operations, in invocation order.
    pub ops: Vec<usize>,
    /// Operations answered after this point are treated as unanswered (the witness is a
    /// prefix of the key's history: the first answer that made it non-linearizable).
    pub cut: Instant,
    /// Whether every operation of `ops` is needed (the search finished in its budget).
    pub minimal: bool,
    /// Operations of the key in the whole history.
    pub key_ops: usize,
}

/// The result of checking a whole history.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Keys checked, and operations in them.
    pub keys: usize,
    pub ops: usize,
    /// Operations whose answer said they did not happen, left out.
    pub failed: usize,
    /// Operations never answered (or answered "unknown").
    pub open: usize,
    pub violations: Vec<Witness>,
    /// Keys the search could not decide within its limits.
    pub undecided: Vec<String>,
    /// Search steps taken in all.
    pub steps: u64,
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The operations of `history` this specification checks, by key: history indices in
/// invocation order, without operations whose answer says they failed.
pub fn partitions<S: Spec>(history: &History<S::Msg>) -> BTreeMap<String, Vec<usize>> {
    let mut keys: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops().iter().enumerate() {
        let Some(key) = S::partition(&op.input) else {
            continue;
        };
        if matches!(result_of::<S>(op), Some(Observed::Failed)) {
            continue;
        }
        keys.entry(key).or_default().push(i);
    }
    keys
}

/// What the answer of `op` says, `None` when there was none.
fn result_of<S: Spec>(op: &Operation<S::Msg>) -> Option<Observed<S::Ret>> {
    op.output.as_ref().map(S::observe)
}

/// The search's view of operations `ops` of `history`, with answers after `cut` treated as
/// unknown. With `ordered` false, every operation overlaps every other (the question is
/// then only whether *some* order explains the results).
fn search_ops<'h, S: Spec>(
    history: &'h History<S::Msg>,
    ops: &[usize],
    cut: Instant,
    ordered: bool,
) -> Vec<SearchOp<'h, S>> {
    ops.iter()
        .map(|&i| {
            let op = &history.ops()[i];
            let answered = op.ret <= cut;
            let result = match result_of::<S>(op) {
                Some(Observed::Returned(r)) if answered => Some(r),
                _ => None,
            };
            let ret = if result.is_some() {
                op.ret
            } else {
                Instant::NEVER
            };
            let (call, ret) = if ordered {
                (op.call.raw(), ret.raw())
            } else {
                (0, u64::MAX)
            };
            SearchOp {
                input: &op.input,
                result,
                call,
                ret,
            }
        })
        .collect()
}

/// Whether the operations `ops` (history indices of one key) are linearizable: `None`
/// when the search ran out of `budget` steps.
///
/// Operations whose result is unknown are the search's worst case: each may or may not
/// have taken effect at any point after its call, which doubles the states it can reach
/// (a crashed client's 28 open writes took a key from a hundred steps to millions). So they
/// come in by need. First none: if the rest is linearizable, so is the whole (each unknown
/// one can take effect last, after everything). Then those that can explain some result
/// ([`explaining`]). Only then all of them.
pub fn check_key<S: Spec>(
    history: &History<S::Msg>,
    ops: &[usize],
    budget: &mut u64,
) -> Option<bool> {
    linearize_key::<S>(history, ops, budget).map(|order| order.is_some())
}

/// As [`check_key`], with the order found: `Some(Some(order))` lists operations of `ops`
/// (history indices) in an order that explains every known result — every operation with
/// one, and whichever of the others it needed.
pub fn linearize_key<S: Spec>(
    history: &History<S::Msg>,
    ops: &[usize],
    budget: &mut u64,
) -> Option<Option<Vec<usize>>> {
    let search = |ops: &[usize], budget: &mut u64| {
        let found =
            search::linearize::<S>(&search_ops::<S>(history, ops, Instant::NEVER, true), budget)?;
        Some(found.map(|order| order.into_iter().map(|k| ops[k]).collect::<Vec<usize>>()))
    };
    let known: Vec<usize> = ops
        .iter()
        .copied()
        .filter(|&i| known_result::<S>(&history.ops()[i]))
        .collect();
    if known.len() == ops.len() {
        return search(ops, budget);
    }
    if let Some(order) = search(&known, budget)? {
        return Some(Some(order));
    }
    let some = explaining::<S>(history, ops);
    if some.len() < ops.len() {
        if let Some(order) = search(&some, budget)? {
            return Some(Some(order));
        }
    }
    search(ops, budget)
}

fn known_result<S: Spec>(op: &Operation<S::Msg>) -> bool {
    matches!(result_of::<S>(op), Some(Observed::Returned(_)))
}

/// The operations of `ops` with a known result, and those without one that could explain
/// one of the results: an unknown operation `u` counts when some known `k`, applied right
/// after `u` (from the initial state), returns what `k`'s client saw while `k` alone would
/// not — the write whose value a read returned, say.
pub fn explaining<S: Spec>(history: &History<S::Msg>, ops: &[usize]) -> Vec<usize> {
    let (known, unknown): (Vec<usize>, Vec<usize>) = ops
        .iter()
        .partition(|&&i| known_result::<S>(&history.ops()[i]));
    let results: Vec<(&S::Msg, S::Ret)> = known
        .iter()
        .filter_map(|&k| match result_of::<S>(&history.ops()[k]) {
            Some(Observed::Returned(r)) => Some((&history.ops()[k].input, r)),
            _ => None,
        })
        .collect();
    // Results the initial state already explains need no unknown operation.
    let unexplained: Vec<&(&S::Msg, S::Ret)> = results
        .iter()
        .filter(|(input, saw)| S::default().apply(input) != *saw)
        .collect();
    let mut keep: Vec<usize> = known;
    for &u in &unknown {
        let mut after = S::default();
        after.apply(&history.ops()[u].input);
        let explains = unexplained.iter().any(|(input, saw)| {
            let mut state = after.clone();
            state.apply(input) == *saw
        });
        if explains {
            keep.push(u);
        }
    }
    keep.sort_unstable_by_key(|&i| history.ops()[i].call);
    keep
}

/// Checks a whole history, key by key; each violation with its witness.
pub fn check<S: Spec>(history: &History<S::Msg>, limits: Limits) -> Report {
    let mut report = Report::default();
    for op in history.ops() {
        match result_of::<S>(op) {
            Some(Observed::Failed) if S::partition(&op.input).is_some() => report.failed += 1,
            None | Some(Observed::Unknown) if S::partition(&op.input).is_some() => report.open += 1,
            _ => {}
        }
    }
    for (key, ops) in partitions::<S>(history) {
        report.keys += 1;
        report.ops += ops.len();
        let mut budget = limits.steps_per_key;
        let verdict = check_key::<S>(history, &ops, &mut budget);
        report.steps += limits.steps_per_key - budget;
        match verdict {
            Some(true) => {}
            Some(false) => {
                let mut budget = limits.steps_per_witness;
                let w = witness::smallest::<S>(history, key, &ops, &mut budget);
                report.steps += limits.steps_per_witness - budget;
                report.violations.push(w);
            }
            None => report.undecided.push(key),
        }
    }
    report
}

/// The smallest sub-history of `ops` (one key's operations, known not linearizable) that
/// still cannot be linearized, found within `budget` search steps.
pub fn witness<S: Spec>(
    history: &History<S::Msg>,
    key: String,
    ops: &[usize],
    budget: &mut u64,
) -> Witness {
    witness::smallest::<S>(history, key, ops, budget)
}

/// A specification behind an object-safe face, so tools that know a model only by name
/// (`retrace check --linearizable`) can check its histories: what
/// [`crate::Model::linearizability`] returns.
pub trait HistoryCheck<M>: 'static {
    /// [`check`] with this specification.
    fn check(&self, history: &History<M>, limits: Limits) -> Report;
    /// [`draw`] with this specification.
    fn draw(
        &self,
        history: &History<M>,
        witness: &Witness,
        name: &dyn Fn(NodeId) -> String,
    ) -> String;
}

struct SpecCheck<S>(PhantomData<fn() -> S>);

impl<S: Spec> HistoryCheck<S::Msg> for SpecCheck<S> {
    fn check(&self, history: &History<S::Msg>, limits: Limits) -> Report {
        check::<S>(history, limits)
    }
    fn draw(
        &self,
        history: &History<S::Msg>,
        witness: &Witness,
        name: &dyn Fn(NodeId) -> String,
    ) -> String {
        draw::<S>(history, witness, name)
    }
}

/// `S` as a [`HistoryCheck`].
pub fn checker<S: Spec>() -> Box<dyn HistoryCheck<S::Msg>> {
    Box::new(SpecCheck::<S>(PhantomData))
}
