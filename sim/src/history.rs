//! What clients saw: each external request's invocation and its answer, as a history of
//! operations that invariants and the linearizability checker read.
//!
//! A runtime hands each step's client events to the invariants through
//! [`View::client`](crate::View::client) (the simulator and the replayer alike, so a trace's
//! history is the same whichever made it); [`History`] gathers them over a run.
//!
//! Time in a history is the trace's order, not its clock: an operation is invoked at its
//! external request's step and returns at the step that answered it. Two operations are
//! ordered only when one returned in a step before the other's invocation; an answer given in
//! the very step that invoked another operation overlaps it (both happened "at once").

use crate::ids::{NodeId, RequestId};
use std::collections::BTreeMap;

/// One client-visible event of a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent<M> {
    /// An external request arrived at `node`: an operation begins.
    Invoke {
        request: RequestId,
        node: NodeId,
        msg: M,
    },
    /// `node` answered `request` (with `Ctx::respond` or `Ctx::respond_to`).
    Complete {
        request: RequestId,
        node: NodeId,
        msg: M,
    },
}

/// A point in a history's order: steps by their input record's index, and within a step,
/// invocations before answers (so an answer in an invoking step overlaps the invocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The invocation point of a step.
    pub fn call(step_index: u64) -> Instant {
        Instant(step_index.saturating_mul(2))
    }
    /// The answer point of a step.
    pub fn ret(step_index: u64) -> Instant {
        Instant(step_index.saturating_mul(2).saturating_add(1))
    }
    /// Later than every step: where an operation that never returned ends.
    pub const NEVER: Instant = Instant(u64::MAX);

    /// The point as a number, ordered like the points.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The trace index of the step this point is in.
    pub fn step_index(self) -> u64 {
        self.0 / 2
    }
}

/// One external operation: what was asked, where, when, and the first answer, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<M> {
    pub request: RequestId,
    /// The node that received the request.
    pub node: NodeId,
    pub input: M,
    pub call: Instant,
    pub call_ns: u64,
    /// The first answer: `None` while the operation is open, and forever if the answer
    /// never came (the node crashed, the answer was lost, the run ended first).
    pub output: Option<M>,
    pub ret: Instant,
    pub ret_ns: Option<u64>,
    /// The node that answered.
    pub answered_by: Option<NodeId>,
}

/// The operations of a run, in invocation order.
#[derive(Clone, Debug)]
pub struct History<M> {
    ops: Vec<Operation<M>>,
    /// Operations not yet answered, by request id.
    open: BTreeMap<RequestId, usize>,
    /// Answers beyond the first, and answers to requests this history never saw invoked.
    pub extra_answers: u64,
}

impl<M> Default for History<M> {
    fn default() -> Self {
        History {
            ops: Vec::new(),
            open: BTreeMap::new(),
            extra_answers: 0,
        }
    }
}

impl<M: Clone> History<M> {
    pub fn new() -> Self {
        History::default()
    }

    /// Takes in one step's client events (`step_index` is its input record's index, at
    /// virtual time `time_ns`). Returns the indices of the operations it completed.
    pub fn observe(
        &mut self,
        step_index: u64,
        time_ns: u64,
        events: &[ClientEvent<M>],
    ) -> Vec<usize> {
        let mut completed = Vec::new();
        for e in events {
            match e {
                ClientEvent::Invoke { request, node, msg } => {
                    if self.open.contains_key(request) {
                        // A request id is invoked once; a second invocation would be a
                        // runtime bug. Keep the first, count the rest as noise.
                        self.extra_answers += 1;
                        continue;
                    }
                    self.open.insert(*request, self.ops.len());
                    self.ops.push(Operation {
                        request: *request,
                        node: *node,
                        input: msg.clone(),
                        call: Instant::call(step_index),
                        call_ns: time_ns,
                        output: None,
                        ret: Instant::NEVER,
                        ret_ns: None,
                        answered_by: None,
                    });
                }
                ClientEvent::Complete { request, node, msg } => {
                    let Some(i) = self.open.remove(request) else {
                        self.extra_answers += 1;
                        continue;
                    };
                    let op = &mut self.ops[i];
                    op.output = Some(msg.clone());
                    op.ret = Instant::ret(step_index);
                    op.ret_ns = Some(time_ns);
                    op.answered_by = Some(*node);
                    completed.push(i);
                }
            }
        }
        completed
    }
}

impl<M> History<M> {
    pub fn ops(&self) -> &[Operation<M>] {
        &self.ops
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Operations not answered (yet).
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// A history from operations already put together (tests, histories from elsewhere).
    /// Operations are kept in the order given.
    pub fn from_ops(ops: Vec<Operation<M>>) -> Self {
        let open = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.ret == Instant::NEVER)
            .map(|(i, o)| (o.request, i))
            .collect();
        History {
            ops,
            open,
            extra_answers: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_in_an_invoking_step_overlaps_the_invocation() {
        let mut h = History::new();
        let n = NodeId(0);
        h.observe(
            1,
            10,
            &[ClientEvent::Invoke {
                request: RequestId(1),
                node: n,
                msg: "a",
            }],
        );
        let done = h.observe(
            5,
            20,
            &[
                ClientEvent::Invoke {
                    request: RequestId(2),
                    node: n,
                    msg: "b",
                },
                ClientEvent::Complete {
                    request: RequestId(1),
                    node: n,
                    msg: "ok",
                },
            ],
        );
        assert_eq!(done, vec![0]);
        let ops = h.ops();
        assert!(ops[1].call < ops[0].ret, "b began before a's answer");
        assert_eq!(ops[1].ret, Instant::NEVER);
        assert_eq!(h.open(), 1);
    }

    #[test]
    fn second_answers_and_unknown_requests_are_counted_not_kept() {
        let mut h = History::new();
        let n = NodeId(0);
        let inv = ClientEvent::Invoke {
            request: RequestId(1),
            node: n,
            msg: 1,
        };
        let done = |m| ClientEvent::Complete {
            request: RequestId(1),
            node: n,
            msg: m,
        };
        h.observe(0, 0, &[inv]);
        h.observe(2, 0, &[done(2)]);
        h.observe(4, 0, &[done(3)]);
        assert_eq!(h.ops()[0].output, Some(2));
        assert_eq!(h.extra_answers, 1);
    }
}
