//! The simulated world around the nodes: network links and cuts, clocks, and the fault
//! kinds a swarm run switches on and off.

use crate::ids::NodeId;
use crate::rng::SimRng;
use crate::scenario::{LinkParams, RandomFaults, Scenario};
use std::collections::BTreeMap;

/// Link parameters and the current cuts, as dense `n × n` matrices (`from * n + to`).
pub(crate) struct Network {
    n: usize,
    links: Vec<LinkParams>,
    /// How many active cuts block each directed link.
    blocked: Vec<u16>,
    cuts: BTreeMap<u32, Vec<(NodeId, NodeId)>>,
    next_cut: u32,
}

impl Network {
    pub fn new<O>(scenario: &Scenario<O>, swarm: &SwarmKinds) -> Self {
        let n = scenario.nodes.len();
        let mut links = Vec::with_capacity(n * n);
        for from in 0..n {
            for to in 0..n {
                let mut p = scenario.link(NodeId(from as u32), NodeId(to as u32));
                if !swarm.drop {
                    p.drop = 0.0;
                }
                if !swarm.duplicate {
                    p.duplicate = 0.0;
                }
                links.push(p);
            }
        }
        Network {
            n,
            links,
            blocked: vec![0; n * n],
            cuts: BTreeMap::new(),
            next_cut: 0,
        }
    }

    pub fn node_count(&self) -> usize {
        self.n
    }

    #[inline]
    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkParams {
        &self.links[from.index() * self.n + to.index()]
    }

    #[inline]
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked[from.index() * self.n + to.index()] > 0
    }

    /// Cuts `links` and returns the cut's id, for the matching heal.
    pub fn cut(&mut self, links: Vec<(NodeId, NodeId)>) -> u32 {
        let id = self.next_cut;
        self.next_cut += 1;
        for (from, to) in &links {
            let b = &mut self.blocked[from.index() * self.n + to.index()];
            *b = b.saturating_add(1);
        }
        self.cuts.insert(id, links);
        id
    }

    /// Puts back cut `id`, open at a fork's moment under the id its trace gave it; cuts
    /// made later get ids from `next` on, so none collides with the trace's.
    pub fn restore_cut(&mut self, id: u32, links: Vec<(NodeId, NodeId)>, next: u32) {
        let links: Vec<(NodeId, NodeId)> = links
            .into_iter()
            .filter(|(from, to)| from.index() < self.n && to.index() < self.n)
            .collect();
        for (from, to) in &links {
            let b = &mut self.blocked[from.index() * self.n + to.index()];
            *b = b.saturating_add(1);
        }
        self.cuts.insert(id, links);
        self.next_cut = self.next_cut.max(next).max(id.saturating_add(1));
    }

    /// Restores the links of cut `id`; false if it was already healed.
    pub fn heal(&mut self, id: u32) -> bool {
        let Some(links) = self.cuts.remove(&id) else {
            return false;
        };
        for (from, to) in &links {
            let b = &mut self.blocked[from.index() * self.n + to.index()];
            debug_assert!(*b > 0, "healing a link that is not cut");
            *b = b.saturating_sub(1);
        }
        true
    }
}

/// One node's clock as the node reads it: true time, plus an offset (initial skew and
/// jumps), plus drift proportional to elapsed time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub offset_ns: i64,
    pub drift_ppm: f64,
}

impl Clock {
    /// The node's reading at true time `true_ns`: offset, plus the rate error so far.
    pub fn read(&self, true_ns: u64) -> u64 {
        let drift = (true_ns as f64 * self.drift_ppm / 1e6) as i64;
        (true_ns as i64)
            .saturating_add(self.offset_ns)
            .saturating_add(drift)
            .max(0) as u64
    }

    /// How much true time passes while this clock counts `local_ns`: a timer runs on its
    /// node's clock, so a fast clock fires it early. A jump of the offset does not move it
    /// (timers follow a monotonic clock, as real ones do). The scenario bounds the drift to
    /// ±10%, so the rate is never zero.
    pub fn true_span(&self, local_ns: u64) -> u64 {
        if self.drift_ppm == 0.0 {
            return local_ns;
        }
        (local_ns as f64 / (1.0 + self.drift_ppm / 1e6)).round() as u64
    }
}

/// Which fault kinds are on for this run. Without swarm testing all are; with it each seed
/// switches every kind on or off with even odds, so that some runs see, say, only crashes
/// and reordering, which finds bugs that a uniform mix of everything drowns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwarmKinds {
    pub drop: bool,
    pub duplicate: bool,
    pub crash: bool,
    pub partition: bool,
    pub clock: bool,
}

impl SwarmKinds {
    pub const ALL: SwarmKinds = SwarmKinds {
        drop: true,
        duplicate: true,
        crash: true,
        partition: true,
        clock: true,
    };

    pub fn draw(rng: &mut SimRng) -> Self {
        SwarmKinds {
            drop: rng.chance(0.5),
            duplicate: rng.chance(0.5),
            crash: rng.chance(0.5),
            partition: rng.chance(0.5),
            clock: rng.chance(0.5),
        }
    }

    /// The enabled kinds, for the summary.
    pub fn describe(&self) -> String {
        let kinds = [
            (self.drop, "drop"),
            (self.duplicate, "duplicate"),
            (self.crash, "crash"),
            (self.partition, "partition"),
            (self.clock, "clock"),
        ];
        let on: Vec<&str> = kinds
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, k)| *k)
            .collect();
        if on.is_empty() {
            "none".to_string()
        } else {
            on.join(", ")
        }
    }

    pub fn apply(&self, faults: &mut RandomFaults) {
        if !self.crash {
            faults.crash_rate.per_second = 0.0;
        }
        if !self.partition {
            faults.partition_rate.per_second = 0.0;
        }
        if !self.clock {
            faults.clock_jump_rate.per_second = 0.0;
        }
    }
}
