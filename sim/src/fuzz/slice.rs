//! Causal slicing: what the violating step causally depends on. A request whose external
//! input is not in that step's causal past, a choice about a message no step of that past
//! sent or waited for, a node fault after which nothing in that past happened — these are the
//! minimiser's first removal candidates, tried in bulk before delta debugging. They are only
//! candidates: an invariant compares states of many nodes, and a step it reads need not be in
//! the violating step's past (the first of two grants of one fencing token is not), so every
//! removal is still checked by a run.

use crate::trace::{Record, Trace};
use std::collections::BTreeSet;

/// The causal past of one step of a trace.
pub(super) struct Slice {
    /// Input records in the past (the violating step's own included).
    past: BTreeSet<u64>,
    /// For each record, the input record of its step.
    owner: Vec<Option<u64>>,
    /// Each record's virtual time.
    time_ns: Vec<u64>,
    /// Per node, the latest time of a step in the past.
    node_last_ns: Vec<Option<u64>>,
    /// The latest time of any step in the past.
    last_ns: u64,
    /// Workload requests whose external input is in the past.
    pub requests: BTreeSet<u64>,
}

impl Slice {
    /// The causal past of the step starting at input record `violating` of a trace held in
    /// memory; `None` if the trace does not read back or has no such step.
    pub fn of(trace: &[u8], violating: u64) -> Option<Slice> {
        let trace = Trace::from_bytes(trace, "run").ok()?;
        let n = trace.events.len();
        let mut owner = vec![None; n];
        let mut time_ns = vec![0; n];
        let mut current = None;
        for (i, e) in trace.events.iter().enumerate() {
            if e.record.input_node().is_some() {
                current = Some(e.index);
            }
            owner[i] = current;
            time_ns[i] = e.time_ns;
        }
        let at = |index: u64| usize::try_from(index).ok().filter(|&i| i < n);
        at(violating)?;
        // Backwards over program order and send -> delivery (timer set -> fire is program
        // order too), each input visited once.
        let mut past = BTreeSet::new();
        let mut todo = vec![violating];
        let mut requests = BTreeSet::new();
        let nodes = trace.header.nodes.len();
        let mut node_last_ns = vec![None; nodes];
        let mut last_ns = 0;
        while let Some(index) = todo.pop() {
            let Some(i) = at(index) else { continue };
            if !past.insert(index) {
                continue;
            }
            let e = &trace.events[i];
            if let Some(node) = e.record.input_node() {
                if let Some(slot) = node_last_ns.get_mut(node.index()) {
                    *slot = Some(slot.map_or(e.time_ns, |t: u64| t.max(e.time_ns)));
                }
                last_ns = last_ns.max(e.time_ns);
            }
            let (prev, cause) = match &e.record {
                Record::Start { prev, .. }
                | Record::Restart { prev, .. }
                | Record::Resume { prev, .. }
                | Record::Crash { prev, .. } => (*prev, None),
                Record::Deliver { prev, send, .. } => (*prev, send.and_then(|s| owner[at(s)?])),
                Record::Timer { prev, set, .. } => (*prev, at(*set).and_then(|s| owner[s])),
                Record::ServiceIn { prev, cause, .. } => (*prev, cause.and_then(|c| owner[at(c)?])),
                Record::External { prev, request, .. } => {
                    requests.insert(request.0);
                    (*prev, None)
                }
                _ => (None, None),
            };
            todo.extend(prev);
            todo.extend(cause);
        }
        Some(Slice {
            past,
            owner,
            time_ns,
            node_last_ns,
            last_ns,
            requests,
        })
    }

    /// Whether a choice about the message sent at record `send` to node `to` can matter: its
    /// sender's step is in the past, or its receiver did something in the past after it was
    /// sent (which the message, or its absence, could have changed).
    pub fn needs_send(&self, send: u64, to: u32) -> bool {
        let Some(i) = usize::try_from(send).ok().filter(|&i| i < self.owner.len()) else {
            return true;
        };
        let sender_in_past = self.owner[i].is_some_and(|o| self.past.contains(&o));
        let receiver_later = self
            .node_last_ns
            .get(to as usize)
            .copied()
            .flatten()
            .is_some_and(|t| t >= self.time_ns[i]);
        sender_in_past || receiver_later
    }

    /// Whether a node fault at `at_ns` can matter: something in the past happened at or
    /// after it.
    pub fn needs_fault_at(&self, at_ns: u64) -> bool {
        self.last_ns >= at_ns
    }
}
