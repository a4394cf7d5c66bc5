//! The smallest sub-history that shows a key is not linearizable.
//!
//! Two steps. First the earliest answer that makes the key non-linearizable: the key's
//! history cut at each answer (answers after the cut treated as not yet given) is checked
//! by bisection, since a cut that cannot be linearized stays so when the history goes on.
//! Then delta debugging removes operations from that prefix while it still cannot be
//! linearized — but only while every result that remains is still *explained*: produced
//! by the initial state, or by some remaining operation applied just before it (the write
//! whose value a read returned). Without that rule the smallest "witness" of a stale read
//! would be the read alone, returning a value nobody wrote; with it, the witness keeps the
//! write that explains the value and the newer write the read should have seen: the shape
//! a person recognises.

use super::{result_of, search, search_ops, Observed, Spec, Witness};
use crate::fuzz::ddmin::ddmin;
use crate::history::{History, Instant};

/// See the module docs. `ops`: the key's operations (history indices, invocation order),
/// known not to be linearizable.
pub(super) fn smallest<S: Spec>(
    history: &History<S::Msg>,
    key: String,
    ops: &[usize],
    budget: &mut u64,
) -> Witness {
    // Unknown operations that explain nothing only slow the search down (see
    // `check_key`); leave them out of the witness.
    let ops = &super::explaining::<S>(history, ops)[..];
    let all = Witness {
        key: key.clone(),
        ops: ops.to_vec(),
        cut: Instant::NEVER,
        minimal: false,
        key_ops: ops.len(),
    };
    let lin = |ops: &[usize], cut: Instant, budget: &mut u64| {
        search::linearizable::<S>(&search_ops::<S>(history, ops, cut, true), budget)
    };
    // The answers, in order; the first cut that fails is the culprit's answer.
    let mut answers: Vec<Instant> = ops
        .iter()
        .map(|&i| history.ops()[i].ret)
        .filter(|&r| r != Instant::NEVER)
        .collect();
    answers.sort_unstable();
    answers.dedup();
    let prefix_at = |cut: Instant| -> Vec<usize> {
        ops.iter()
            .copied()
            .filter(|&i| history.ops()[i].call < cut)
            .collect()
    };
    let (mut lo, mut hi) = (0usize, answers.len());
    // Invariant: cuts before `lo` are linearizable, the cut at `hi` (or the whole history
    // when hi = len) is not.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match lin(&prefix_at(answers[mid]), answers[mid], budget) {
            Some(true) => lo = mid + 1,
            Some(false) => hi = mid,
            None => return all,
        }
    }
    let mut cut = answers.get(hi).copied().unwrap_or(Instant::NEVER);
    let mut prefix = prefix_at(cut);
    let mut explained = all_explained::<S>(history, &prefix, cut, budget);
    if !explained
        && cut != Instant::NEVER
        && all_explained::<S>(history, ops, Instant::NEVER, budget)
    {
        // A result nothing before it explains may be explained by what came later (a read
        // of a value written only after it answered): show that write rather than the
        // read alone.
        prefix = ops.to_vec();
        cut = Instant::NEVER;
        explained = true;
    }
    let mut exhausted = false;
    let mut tests = u32::MAX;
    let mut still_fails = |sub: &[usize]| -> bool {
        if exhausted {
            return false;
        }
        // The cheap rule first: it rejects most removals without a search.
        if explained && !all_explained::<S>(history, sub, cut, budget) {
            return false;
        }
        match lin(sub, cut, budget) {
            Some(linearizable) => !linearizable,
            None => {
                exhausted = true;
                false
            }
        }
    };
    let smallest = ddmin(prefix, &mut tests, &mut still_fails);
    Witness {
        key,
        ops: smallest,
        cut,
        minimal: !exhausted && *budget > 0,
        key_ops: all.key_ops,
    }
}

/// Whether every known result among `ops` (answers up to `cut`) is produced by the initial
/// state or by one of `ops` applied just before it. Each spec application costs one step
/// of `budget`.
fn all_explained<S: Spec>(
    history: &History<S::Msg>,
    ops: &[usize],
    cut: Instant,
    budget: &mut u64,
) -> bool {
    let at = |i: usize| &history.ops()[i];
    ops.iter().all(|&k| {
        let op = at(k);
        let saw = match result_of::<S>(op) {
            Some(Observed::Returned(r)) if op.ret <= cut => r,
            _ => return true,
        };
        *budget = budget.saturating_sub(1);
        if S::default().apply(&op.input) == saw {
            return true;
        }
        ops.iter().any(|&u| {
            if u == k {
                return false;
            }
            *budget = budget.saturating_sub(2);
            let mut state = S::default();
            state.apply(&at(u).input);
            state.apply(&op.input) == saw
        })
    })
}
