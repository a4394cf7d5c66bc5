//! The Wing–Gong search with Lowe's memoisation, as porcupine runs it: walk the history's
//! call and return points in order, linearize an operation whose call is reached (apply it
//! to the specification; its result must match what the client saw), and backtrack at a
//! return whose operation could not be linearized in time. A set of (operations linearized,
//! state) pairs already explored cuts the search: reaching the same pair again cannot end
//! differently.

use super::Spec;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fast hash for the memo (bitsets and small states); the set is only looked up, never
/// iterated, so the hash shapes no output.
#[derive(Default)]
struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(u64::from_le_bytes(last) ^ (bytes.len() as u64) << 56);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// An operation as the search sees it: times as plain numbers (call < ret), and the result
/// the client saw, or `None` when unknown (no answer: it may or may not have taken effect).
pub(super) struct SearchOp<'h, S: Spec> {
    pub input: &'h S::Msg,
    pub result: Option<S::Ret>,
    pub call: u64,
    pub ret: u64,
}

const NIL: usize = usize::MAX;

/// Whether `ops` are linearizable: `Some(answer)`, or `None` when the search took more
/// than `budget` steps (each step is one call or return point visited). `budget` is
/// decreased by the steps taken.
pub(super) fn linearizable<S: Spec>(ops: &[SearchOp<'_, S>], budget: &mut u64) -> Option<bool> {
    linearize(ops, budget).map(|order| order.is_some())
}

/// As [`linearizable`], with the order found: `Some(Some(order))` lists every operation
/// (indices into `ops`) in an order that explains every result.
pub(super) fn linearize<S: Spec>(
    ops: &[SearchOp<'_, S>],
    budget: &mut u64,
) -> Option<Option<Vec<usize>>> {
    let n = ops.len();
    if n == 0 {
        return Some(Some(Vec::new()));
    }
    // Points: (time, is_return, op). At equal times calls come first, so operations that
    // touch at one instant overlap rather than being ordered.
    let mut points: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        debug_assert!(op.call < op.ret, "an operation returns after its call");
        points.push((op.call, false, i));
        points.push((op.ret, true, i));
    }
    points.sort_unstable();
    // A doubly linked list over the points, with a head sentinel at index 2n, so lifting an
    // operation out (both its points) and putting it back are O(1) ("dancing links").
    let head = 2 * n;
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    let mut last = head;
    for (p, &(_, is_ret, op)) in points.iter().enumerate() {
        if is_ret {
            ret_at[op] = p;
        } else {
            call_at[op] = p;
        }
        next[last] = p;
        prev[p] = last;
        last = p;
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = next[e];
        if next[e] != NIL {
            prev[next[e]] = prev[e];
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        next[prev[e]] = e;
        if next[e] != NIL {
            prev[next[e]] = e;
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    // Linearized set -> the states reached with it. Looked up by the set as a slice, so a
    // visit already made costs no allocation; most sets have one or two states.
    let mut seen: HashMap<Vec<u64>, Vec<S>, BuildHasherDefault<Fx>> = HashMap::default();
    let mut stack: Vec<(usize, S)> = Vec::new();
    let mut state = S::default();
    let mut entry = next[head];
    while next[head] != NIL {
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        debug_assert!(entry != NIL, "the list ends with a return point");
        let (_, is_ret, op) = points[entry];
        if !is_ret {
            let mut after = state.clone();
            let got = after.apply(ops[op].input);
            let fits = ops[op].result.as_ref().is_none_or(|saw| *saw == got);
            if fits {
                linearized[op / 64] |= 1 << (op % 64);
                let new = match seen.get_mut(linearized.as_slice()) {
                    Some(states) if states.contains(&after) => false,
                    Some(states) => {
                        states.push(after.clone());
                        true
                    }
                    None => {
                        seen.insert(linearized.clone(), vec![after.clone()]);
                        true
                    }
                };
                if new {
                    stack.push((op, std::mem::replace(&mut state, after)));
                    unlink(&mut next, &mut prev, call_at[op]);
                    unlink(&mut next, &mut prev, ret_at[op]);
                    entry = next[head];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = next[entry];
        } else {
            // The first return reached belongs to an operation not linearized yet: it had to
            // take effect before now. Undo the latest choice and try the next one.
            let Some((undo, before)) = stack.pop() else {
                return Some(None);
            };
            linearized[undo / 64] &= !(1 << (undo % 64));
            state = before;
            relink(&mut next, &mut prev, ret_at[undo]);
            relink(&mut next, &mut prev, call_at[undo]);
            entry = next[call_at[undo]];
        }
    }
    Some(Some(stack.into_iter().map(|(op, _)| op).collect()))
}
