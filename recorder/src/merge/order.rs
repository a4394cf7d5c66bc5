//! Order: Kahn's algorithm over program order plus send → delivery, choosing among ready steps
//! by wall-clock time, then node id, then position — deterministic, consistent with
//! causality, and close to real time.

use super::load::{Input, Step};
use super::MergeReport;
use crate::wire::MsgId;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Which steps can go next.
pub(super) struct Order {
    /// The deliveries each message's send unblocks: (node, position).
    waiting_on_send: BTreeMap<MsgId, Vec<(usize, usize)>>,
    /// Per node and position: a delivery whose send is not yet emitted.
    blocked: Vec<Vec<bool>>,
    /// Per node: the position of its next step (program order).
    next_pos: Vec<usize>,
    ready: BinaryHeap<Reverse<(u64, usize, usize)>>,
}

impl Order {
    pub fn new(per_node: &[Vec<Step>]) -> Self {
        let mut waiting_on_send: BTreeMap<MsgId, Vec<(usize, usize)>> = BTreeMap::new();
        let mut blocked = Vec::with_capacity(per_node.len());
        for (node, steps) in per_node.iter().enumerate() {
            let mut node_blocked = vec![false; steps.len()];
            for (pos, s) in steps.iter().enumerate() {
                if let Input::Deliver {
                    id, unsent: false, ..
                } = &s.input
                {
                    waiting_on_send.entry(*id).or_default().push((node, pos));
                    node_blocked[pos] = true;
                }
            }
            blocked.push(node_blocked);
        }
        let mut order = Order {
            waiting_on_send,
            blocked,
            next_pos: vec![0; per_node.len()],
            ready: BinaryHeap::new(),
        };
        for node in 0..per_node.len() {
            order.push_if_ready(per_node, node, 0);
        }
        order
    }

    fn push_if_ready(&mut self, per_node: &[Vec<Step>], node: usize, pos: usize) {
        if let Some(s) = per_node[node].get(pos) {
            if !self.blocked[node][pos] {
                self.ready.push(Reverse((s.wall_ns, node, pos)));
            }
        }
    }

    /// The next step to emit, as (node, position). When nothing is ready but steps remain —
    /// a cycle, which only inconsistent logs make — the earliest blocked step is freed by
    /// delivering its message with no causal link (and the report says so).
    pub fn next(
        &mut self,
        per_node: &mut [Vec<Step>],
        names: &[String],
        report: &mut MergeReport,
    ) -> Option<(usize, usize)> {
        // Each round either pops a step or frees one, and there are finitely many.
        loop {
            if let Some(Reverse((_, node, pos))) = self.ready.pop() {
                assert_eq!(pos, self.next_pos[node], "steps leave in program order");
                return Some((node, pos));
            }
            let stuck = (0..per_node.len())
                .filter(|&n| self.next_pos[n] < per_node[n].len())
                .min_by_key(|&n| (per_node[n][self.next_pos[n]].wall_ns, n))?;
            let pos = self.next_pos[stuck];
            report.problems.push(format!(
                "{}: step {pos} waits on a send that never comes; delivered unlinked",
                names[stuck]
            ));
            self.blocked[stuck][pos] = false;
            if let Input::Deliver { unsent, .. } = &mut per_node[stuck][pos].input {
                *unsent = true;
                report.black_box_messages += 1;
            }
            self.push_if_ready(per_node, stuck, pos);
        }
    }

    /// The send of `msg` is in the trace: its deliveries may go once their turn comes.
    /// Taken out of the map: a send id that a corrupt log repeats unblocks nothing twice (and
    /// so never readies a delivery twice).
    pub fn sent(&mut self, per_node: &[Vec<Step>], msg: &MsgId) {
        let Some(receivers) = self.waiting_on_send.remove(msg) else {
            return;
        };
        for (node, pos) in receivers {
            self.blocked[node][pos] = false;
            if self.next_pos[node] == pos {
                self.push_if_ready(per_node, node, pos);
            }
        }
    }

    /// The step at (node, pos) is in the trace: the node's next one may go.
    pub fn emitted(&mut self, per_node: &[Vec<Step>], node: usize, pos: usize) {
        self.next_pos[node] = pos + 1;
        self.push_if_ready(per_node, node, pos + 1);
    }
}
