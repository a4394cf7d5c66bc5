//! The happens-before relation of a run: program order on each node plus send -> delivery,
//! as vector clocks (one entry per node, per step) and as a petgraph graph.
//!
//! `why(e)` is all and only the steps that happen before `e`: with vector clocks, step `f`
//! on node `k` precedes `e` exactly when `f`'s position on `k` is below `VC(e)[k]`, so the
//! answer is read off per node without walking the graph.

use crate::steps::Steps;
use petgraph::graph::{DiGraph, NodeIndex};
use retrace_sim::trace::{Event, Record};
use retrace_sim::RequestId;
use std::collections::BTreeMap;

/// Why one step follows another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// The next step on the same node.
    Program,
    /// A message sent in one step and delivered in the other.
    Message,
}

pub struct Causality {
    n: usize,
    /// Per step: its node and position on that node.
    node_of: Vec<u32>,
    local: Vec<u32>,
    /// Per node: its steps in order.
    per_node: Vec<Vec<usize>>,
    /// Per step: the sender's step of its message, if it is a delivery of a recorded send.
    pub cause: Vec<Option<usize>>,
    /// Vector clocks, `n` entries per step: entry k counts node k's steps that precede it
    /// (itself included on its own node).
    vc: Vec<u32>,
    /// Steps whose input carries each request id.
    requests: BTreeMap<RequestId, Vec<usize>>,
}

impl Causality {
    pub fn new(steps: &Steps, events: &[Event], node_count: usize) -> Causality {
        let n = node_count.max(1);
        let count = steps.steps.len();
        let mut node_of = Vec::with_capacity(count);
        let mut local = Vec::with_capacity(count);
        let mut per_node: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut cause = Vec::with_capacity(count);
        let mut vc = vec![0u32; count * n];
        let mut requests: BTreeMap<RequestId, Vec<usize>> = BTreeMap::new();
        let mut last_on_node: Vec<Option<usize>> = vec![None; n];
        for (s, step) in steps.steps.iter().enumerate() {
            let k = step.node.index().min(n - 1);
            node_of.push(k as u32);
            local.push(per_node[k].len() as u32);
            per_node[k].push(s);
            let record = &events[step.input].record;
            let sender = match record {
                Record::Deliver {
                    send: Some(send), ..
                } => steps
                    .step_of
                    .get(*send as usize)
                    .copied()
                    .flatten()
                    .filter(|&p| p < s),
                _ => None,
            };
            cause.push(sender);
            let (head, tail) = vc.split_at_mut(s * n);
            let mine = &mut tail[..n];
            if let Some(p) = last_on_node[k] {
                mine.copy_from_slice(&head[p * n..p * n + n]);
            }
            if let Some(p) = sender {
                for (m, o) in mine.iter_mut().zip(&head[p * n..p * n + n]) {
                    *m = (*m).max(*o);
                }
            }
            mine[k] = per_node[k].len() as u32;
            // A node's clock never shrinks from one of its steps to the next, and its own
            // entry counts its steps: what `happens_before` relies on.
            if let Some(p) = last_on_node[k] {
                let before = &head[p * n..p * n + n];
                assert!(
                    mine.iter().zip(before).all(|(m, b)| m >= b) && mine[k] == before[k] + 1,
                    "vector clock of step {s} shrank"
                );
            }
            last_on_node[k] = Some(s);
            for r in record.request_ids() {
                requests.entry(*r).or_default().push(s);
            }
            // A step that answers a request belongs to it too, even when it runs for another
            // (`respond_to` once a value is decided): following the request shows where its
            // answer came from.
            for e in events.get(step.input + 1..step.end).unwrap_or_default() {
                if let Record::Respond { request, .. } = e.record {
                    let members = requests.entry(request).or_default();
                    if members.last() != Some(&s) {
                        members.push(s);
                    }
                }
            }
        }
        Causality {
            n,
            node_of,
            local,
            per_node,
            cause,
            vc,
            requests,
        }
    }

    fn clock(&self, s: usize) -> &[u32] {
        &self.vc[s * self.n..s * self.n + self.n]
    }

    /// The vector clock of step `s`.
    pub fn vector_clock(&self, s: usize) -> Vec<u32> {
        self.clock(s).to_vec()
    }

    /// The step before `s` on its node, if any.
    pub fn previous_on_node(&self, s: usize) -> Option<usize> {
        let local = self.local[s] as usize;
        let node = self.node_of[s] as usize;
        local.checked_sub(1).map(|l| self.per_node[node][l])
    }

    /// Whether step `a` happens before step `b`.
    pub fn precedes(&self, a: usize, b: usize) -> bool {
        a != b && self.local[a] < self.clock(b)[self.node_of[a] as usize]
    }

    /// All and only the steps that happen before `s`, in trace order.
    pub fn why(&self, s: usize) -> Vec<usize> {
        let clock = self.clock(s);
        let mut out: Vec<usize> = Vec::new();
        for (k, steps) in self.per_node.iter().enumerate() {
            let upto = (clock[k] as usize).min(steps.len());
            out.extend(steps[..upto].iter().copied().filter(|&f| f != s));
        }
        out.sort_unstable();
        out
    }

    /// The steps of node `node` that happen before `s` (and `s`, when it is on `node`), in
    /// order: `why(s)` restricted to one node, without building it.
    pub fn history_on(&self, s: usize, node: usize) -> &[usize] {
        match self.per_node.get(node) {
            Some(steps) => &steps[..(self.clock(s)[node] as usize).min(steps.len())],
            None => &[],
        }
    }

    /// All and only the steps that `s` happens before, in trace order.
    pub fn effects(&self, s: usize) -> Vec<usize> {
        let k = self.node_of[s] as usize;
        let mine = self.local[s];
        ((s + 1)..self.node_of.len())
            .filter(|&f| self.clock(f)[k] > mine)
            .collect()
    }

    /// The steps whose input carries request `r`.
    pub fn request(&self, r: RequestId) -> &[usize] {
        self.requests.get(&r).map_or(&[], Vec::as_slice)
    }

    /// Every request id seen, in order.
    pub fn request_ids(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.requests.keys().copied()
    }

    /// The happens-before graph: one graph node per step (weight: the step number), edges
    /// for program order and messages.
    pub fn graph(&self) -> DiGraph<usize, Edge> {
        let mut g = DiGraph::with_capacity(self.node_of.len(), self.node_of.len() * 2);
        let ids: Vec<NodeIndex> = (0..self.node_of.len()).map(|s| g.add_node(s)).collect();
        for steps in &self.per_node {
            for w in steps.windows(2) {
                g.add_edge(ids[w[0]], ids[w[1]], Edge::Program);
            }
        }
        for (s, c) in self.cause.iter().enumerate() {
            if let Some(p) = c {
                g.add_edge(ids[*p], ids[s], Edge::Message);
            }
        }
        g
    }
}
