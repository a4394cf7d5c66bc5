//! Faults: the random ones drawn up front for the whole run, and what each kind does when its
//! time comes (a crash, a cut and its heal, a clock jump).

use super::env::{Pending, ReqIds};
use super::Simulation;
use crate::ids::NodeId;
use crate::model::Model;
use crate::rng::{derive_seed, Purpose, SimRng};
use crate::scenario::{links_between_groups, FaultAction, RandomFaults};
use crate::trace::FaultRecord;
use crate::trace::InputHead;

/// A bound on random faults drawn for one run.
const MAX_RANDOM_FAULTS: usize = 100_000;

impl<M: Model> Simulation<M> {
    pub(super) fn schedule_fault(&mut self, at_ns: u64, action: FaultAction) {
        self.core.queue.push(at_ns, Pending::Fault(action));
    }

    /// Draws the random faults of the whole run up front, from their own stream, so that
    /// they do not depend on what the nodes do. Times count from `base_ns` (a recording's
    /// start, for a fork of one); a fork keeps only those after its moment.
    pub(super) fn schedule_random_faults(
        &mut self,
        r: &RandomFaults,
        n: usize,
        seed: u64,
        base_ns: u64,
    ) {
        let limit = self.time_limit_ns.saturating_sub(base_ns);
        let now = self.core.now_ns;
        let mut rng = SimRng::new(derive_seed(seed, Purpose::Faults, 0, 0));
        let mut planned: Vec<(u64, FaultAction)> = Vec::new();
        for node in 0..n {
            let node = NodeId(node as u32);
            let restart = r.restart_after;
            planned.extend(poisson_arrivals(
                &mut rng,
                limit,
                r.crash_rate.mean_interval_ns(),
                move |rng| FaultAction::Crash {
                    node,
                    restart_after_ns: Some(rng.between(restart.lo_ns, restart.hi_ns)),
                },
            ));
            let jump = r.clock_jump;
            planned.extend(poisson_arrivals(
                &mut rng,
                limit,
                r.clock_jump_rate.mean_interval_ns(),
                move |rng| {
                    let span = jump.hi_ns.abs_diff(jump.lo_ns);
                    FaultAction::ClockJump {
                        node,
                        by_ns: jump.lo_ns.saturating_add(rng.between(0, span) as i64),
                    }
                },
            ));
        }
        if n > 1 {
            let duration = r.partition_duration;
            planned.extend(poisson_arrivals(
                &mut rng,
                limit,
                r.partition_rate.mean_interval_ns(),
                move |rng| {
                    // A random split into two non-empty sides.
                    let mut group_of: Vec<usize> = (0..n).map(|_| rng.below(2) as usize).collect();
                    let first = group_of[0];
                    if group_of.iter().all(|&g| g == first) {
                        let flip = 1 + rng.below(n as u64 - 1) as usize;
                        group_of[flip] = 1 - first;
                    }
                    FaultAction::Cut {
                        links: links_between_groups(&group_of),
                        heal_after_ns: Some(rng.between(duration.lo_ns, duration.hi_ns)),
                    }
                },
            ));
        }
        planned.truncate(MAX_RANDOM_FAULTS);
        planned.sort_by_key(|(t, _)| *t);
        for (at, action) in planned {
            let at = at.saturating_add(base_ns);
            if at > now || now == 0 {
                self.schedule_fault(at, action);
            }
        }
    }

    /// A fault whose time has come.
    pub(super) fn apply_fault(&mut self, action: FaultAction) {
        match action {
            FaultAction::Restart { node } => {
                if !self.core.slots[node.index()].up {
                    self.boot(node, crate::node::Boot::Restart);
                }
            }
            FaultAction::Crash {
                node,
                restart_after_ns,
            } => self.crash(node, restart_after_ns),
            FaultAction::Cut {
                links,
                heal_after_ns,
            } => self.cut(links, heal_after_ns),
            FaultAction::ClockJump { node, by_ns } => self.jump_clock(node, by_ns),
        }
    }

    /// Crashes a node that is up: a step of its own (so its history ends there), volatile
    /// state, unsynced writes and timers gone, and its restart queued.
    fn crash(&mut self, node: NodeId, restart_after_ns: Option<u64>) {
        let i = node.index();
        if !self.core.slots[i].up {
            return;
        }
        let now = self.core.now_ns;
        let prev = self.core.slots[i].last_input;
        let index = self
            .core
            .trace
            .push(|e, out| e.crash(out, InputHead::new(node, now, prev)));
        self.begin_step(node, ReqIds::default(), index);
        self.core.stats.crashes += 1;
        let slot = &mut self.core.slots[i];
        slot.up = false;
        slot.storage.crash();
        slot.busy_until_ns = 0;
        self.nodes[i] = None;
        self.core.cancel_timers_of(node);
        self.core.services.close_all_of(node);
        if let Some(after) = restart_after_ns {
            self.core.queue.push(
                now.saturating_add(after),
                Pending::Fault(FaultAction::Restart { node }),
            );
        }
        self.end_step(node, index);
    }

    /// Cuts links, and queues their heal.
    fn cut(&mut self, links: Vec<(NodeId, NodeId)>, heal_after_ns: Option<u64>) {
        let now = self.core.now_ns;
        let id = self.core.net.cut(links.clone());
        let fault = FaultRecord::Cut { id, links };
        self.core.trace.push(|e, out| e.fault(out, now, &fault));
        self.core.stats.network_faults += 1;
        if let Some(after) = heal_after_ns {
            self.core
                .queue
                .push(now.saturating_add(after), Pending::Heal { id });
        }
    }

    /// Heals the cut `id`, if it is still in place.
    pub(super) fn heal(&mut self, id: u32) {
        let now = self.core.now_ns;
        if self.core.net.heal(id) {
            self.core
                .trace
                .push(|e, out| e.fault(out, now, &FaultRecord::Heal { id }));
        }
    }

    fn jump_clock(&mut self, node: NodeId, by_ns: i64) {
        let now = self.core.now_ns;
        let clock = &mut self.core.slots[node.index()].clock;
        clock.offset_ns = clock.offset_ns.saturating_add(by_ns);
        let fault = FaultRecord::ClockJump { node, by_ns };
        self.core.trace.push(|e, out| e.fault(out, now, &fault));
        self.core.stats.network_faults += 1;
    }
}

/// Event times of a Poisson process with the given mean interval, up to `limit_ns`.
fn poisson_arrivals(
    rng: &mut SimRng,
    limit_ns: u64,
    mean_ns: Option<f64>,
    mut each: impl FnMut(&mut SimRng) -> FaultAction,
) -> Vec<(u64, FaultAction)> {
    let Some(mean_ns) = mean_ns else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut t = rng.exponential_ns(mean_ns);
    while t < limit_ns && out.len() < MAX_RANDOM_FAULTS {
        out.push((t, each(rng)));
        t = t.saturating_add(rng.exponential_ns(mean_ns).max(1));
    }
    out
}
