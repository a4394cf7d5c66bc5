//! The one decision source for fuzzing: at every step a [`Decider`] may run a later pending
//! message first (reordering) and inject a fault. A [`Schedule`] is the sequence of those
//! choices; it replays a run exactly, and any choice deleted or set to zero still leaves a
//! valid schedule ("the default order, no fault" is the zero), so shrinking moves towards
//! fewer faults and the default order.

use crate::ids::NodeId;
use crate::rng::SimRng;
use serde::{Deserialize, Serialize};

/// How many pending events a choice can pick among.
pub const WINDOW: usize = 8;
/// Fault kinds a choice can inject (`FaultKind::ALL.len()`).
pub const FAULT_KINDS: u8 = 6;

/// What a fault code injects, in code order: a choice's `fault` is
/// `1 + kind + FAULT_KINDS * target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum FaultKind {
    /// Drop the chosen delivery.
    Drop = 0,
    /// Deliver the chosen message twice.
    Duplicate = 1,
    /// Crash the target (it restarts [`CRASH_DOWN_NS`] later).
    Crash = 2,
    /// Cut the target off from every other node for [`ISOLATION_NS`].
    Isolate = 3,
    /// Jump the target's clock forward [`CLOCK_JUMP_NS`].
    ClockForward = 4,
    /// Jump the target's clock back [`CLOCK_JUMP_NS`].
    ClockBack = 5,
}

impl FaultKind {
    pub const ALL: [FaultKind; FAULT_KINDS as usize] = [
        FaultKind::Drop,
        FaultKind::Duplicate,
        FaultKind::Crash,
        FaultKind::Isolate,
        FaultKind::ClockForward,
        FaultKind::ClockBack,
    ];

    /// The kind a non-zero fault code injects; `None` for 0 (no fault).
    pub fn of_code(fault: u8) -> Option<FaultKind> {
        let code = fault.checked_sub(1)?;
        Some(Self::ALL[usize::from(code % FAULT_KINDS)])
    }

    /// Whether the fault is about a node (crash, isolation, clock jump) rather than the
    /// chosen message, so that it can be anchored in time.
    pub fn is_node_fault(self) -> bool {
        !matches!(self, FaultKind::Drop | FaultKind::Duplicate)
    }
}
/// How long an injected crash lasts before the node restarts, and an injected isolation.
pub const CRASH_DOWN_NS: u64 = 100_000_000;
pub const ISOLATION_NS: u64 = 200_000_000;
pub const CLOCK_JUMP_NS: i64 = 50_000_000;

/// One step's decision; the zero value is the default order with no fault.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Choice {
    /// Which pending event runs: 0 the earliest; k >= 1 the delivery number `(k - 1) mod D`
    /// among the `D` deliveries in the window, delivered now, ahead of its time.
    pub order: u8,
    /// 0 none; otherwise kind `(fault - 1) % FAULT_KINDS` on target node
    /// `(fault - 1) / FAULT_KINDS` (mod the node count): drop the chosen delivery, duplicate
    /// it, crash the target (it restarts 100 ms later), isolate the target (200 ms), jump its
    /// clock forward or back 50 ms.
    pub fault: u8,
}

/// An injected fault, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    Drop,
    Duplicate,
    Crash(NodeId),
    Isolate(NodeId),
    ClockJump(NodeId, i64),
}

impl Choice {
    pub fn is_default(&self) -> bool {
        *self == Choice::default()
    }

    pub fn injected(&self, nodes: usize) -> Option<Injected> {
        if self.fault == 0 || nodes == 0 {
            return None;
        }
        let kind = FaultKind::of_code(self.fault)?;
        let target = NodeId((u32::from((self.fault - 1) / FAULT_KINDS)) % nodes as u32);
        Some(match kind {
            FaultKind::Drop => Injected::Drop,
            FaultKind::Duplicate => Injected::Duplicate,
            FaultKind::Crash => Injected::Crash(target),
            FaultKind::Isolate => Injected::Isolate(target),
            FaultKind::ClockForward => Injected::ClockJump(target, CLOCK_JUMP_NS),
            FaultKind::ClockBack => Injected::ClockJump(target, -CLOCK_JUMP_NS),
        })
    }

    /// The fault code of `kind` on `target`.
    pub fn fault_code(kind: FaultKind, target: u32) -> u8 {
        let code = u32::from(kind as u8) + u32::from(FAULT_KINDS) * (target % 42);
        (code + 1).min(255) as u8
    }
}

/// A fault injected at a virtual time rather than at a step (the minimiser anchors node
/// faults this way, so that removing other events does not move them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimedFault {
    pub at_ns: u64,
    /// A fault code as in [`Choice::fault`]; only node faults (crash, isolate, clock jumps).
    pub fault: u8,
    /// How long a crash (until the restart) or an isolation (until it heals) lasts, if not
    /// [`CRASH_DOWN_NS`] or [`ISOLATION_NS`]; past the run's end, it never ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lasts_ns: Option<u64>,
}

/// A whole run's decisions, and which workload requests to leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub choices: Vec<Choice>,
    /// Workload requests (by number, from 0) that are not sent.
    #[serde(default)]
    pub skip_requests: Vec<u64>,
    /// Faults at times, applied before the first step at or after their time.
    #[serde(default)]
    pub timed: Vec<TimedFault>,
    /// Workload requests after the first arrive this much earlier (never before the one
    /// before them): the minimiser moves the requests a failure keeps towards its start.
    #[serde(default)]
    pub workload_shift_ns: u64,
    /// Workload requests numbered this or later are not sent. The minimiser sets it to the
    /// failing run's count, so that moving the workload earlier brings in no request that
    /// came after the violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_max: Option<u64>,
}

impl Schedule {
    /// The choice for step `step` (the default past the end).
    pub fn at(&self, step: u64) -> Choice {
        usize::try_from(step)
            .ok()
            .and_then(|i| self.choices.get(i))
            .copied()
            .unwrap_or_default()
    }

    /// Drops trailing default choices.
    pub fn trimmed(mut self) -> Self {
        while self.choices.last().is_some_and(Choice::is_default) {
            self.choices.pop();
        }
        self
    }

    /// Checks a schedule that came from outside (a schedule file) against the scenario it
    /// is for: every value within what a run of that scenario can use. Without this a
    /// `workload_shift_ns` of 2^64-1 would pin the workload's clock at the current instant
    /// and issue requests there forever. The error names the field.
    pub fn check(&self, time_limit_ns: u64, max_events: u64) -> Result<(), String> {
        let limit = crate::limits::MAX_SCHEDULE_ENTRIES;
        if self.workload_shift_ns > time_limit_ns {
            return Err(format!(
                "schedule.workload_shift_ns = {} exceeds the scenario's time limit ({} ns)",
                self.workload_shift_ns, time_limit_ns
            ));
        }
        if self.choices.len() as u64 > max_events {
            return Err(format!(
                "schedule.choices has {} entries, more than the scenario's max_events ({max_events})",
                self.choices.len()
            ));
        }
        for (what, n) in [
            ("skip_requests", self.skip_requests.len()),
            ("timed", self.timed.len()),
        ] {
            if n > limit {
                return Err(format!(
                    "schedule.{what} has {n} entries; the limit is {limit}"
                ));
            }
        }
        if let Some(i) = self.timed.iter().position(|t| t.at_ns > time_limit_ns) {
            return Err(format!(
                "schedule.timed[{i}].at_ns = {} is past the scenario's time limit ({} ns)",
                self.timed[i].at_ns, time_limit_ns
            ));
        }
        Ok(())
    }

    pub fn faults(&self) -> usize {
        self.choices.iter().filter(|c| c.fault != 0).count() + self.timed.len()
    }

    pub fn reorderings(&self) -> usize {
        self.choices.iter().filter(|c| c.order != 0).count()
    }
}

/// What a decider sees of one pending event in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub is_delivery: bool,
    /// The node the event happens on.
    pub node: NodeId,
}

/// Makes the simulator's choices of order and faults. The simulator records every choice it
/// makes into a [`Schedule`], which then replays the run through [`Schedule`]'s own impl.
pub trait Decider: Send {
    fn decide(&mut self, step: u64, window: &[Candidate], nodes: usize) -> Choice;
}

impl Decider for Schedule {
    fn decide(&mut self, step: u64, _window: &[Candidate], _nodes: usize) -> Choice {
        self.at(step)
    }
}

/// Random exploration: reorder with probability `reorder`, inject a fault with
/// probability `fault` (kinds drawn uniformly among `kinds`).
pub struct RandomDecider {
    pub rng: SimRng,
    pub reorder: f64,
    pub fault: f64,
    pub kinds: Vec<FaultKind>,
}

impl Decider for RandomDecider {
    fn decide(&mut self, _step: u64, window: &[Candidate], nodes: usize) -> Choice {
        let deliveries = window.iter().filter(|c| c.is_delivery).count();
        let order = if deliveries > 1 && self.rng.chance(self.reorder) {
            1 + self.rng.below(deliveries as u64) as u8
        } else {
            0
        };
        let fault = match self.rng.pick(&self.kinds).copied() {
            Some(kind) if self.rng.chance(self.fault) => {
                Choice::fault_code(kind, self.rng.below(nodes as u64) as u32)
            }
            _ => 0,
        };
        Choice { order, fault }
    }
}

/// Probabilistic concurrency testing: every node gets a random priority; at each step the
/// pending delivery to the highest-priority node runs first; at `d - 1` random steps the
/// node that just ran drops to the lowest priority. Finds bugs of depth `d` with a known
/// probability, unlike uniform shuffling.
pub struct PctDecider {
    priorities: Vec<u64>,
    change_points: Vec<u64>,
    next_low: u64,
}

impl PctDecider {
    pub fn new(rng: &mut SimRng, nodes: usize, depth: usize, expected_steps: u64) -> Self {
        let priorities = (0..nodes)
            .map(|_| 1_000_000 + rng.below(1_000_000))
            .collect();
        let mut change_points: Vec<u64> = (0..depth.saturating_sub(1))
            .map(|_| rng.below(expected_steps.max(1)))
            .collect();
        change_points.sort_unstable();
        PctDecider {
            priorities,
            change_points,
            next_low: 999_999,
        }
    }
}

impl Decider for PctDecider {
    fn decide(&mut self, step: u64, window: &[Candidate], _nodes: usize) -> Choice {
        let deliveries: Vec<&Candidate> = window.iter().filter(|c| c.is_delivery).collect();
        let prio = |n: NodeId| self.priorities.get(n.index()).copied().unwrap_or(0);
        let best = deliveries
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (prio(c.node), std::cmp::Reverse(*i)));
        let order = match best {
            Some((i, c)) => {
                if self.change_points.first() == Some(&step) {
                    self.change_points.remove(0);
                    if let Some(p) = self.priorities.get_mut(c.node.index()) {
                        *p = self.next_low;
                        self.next_low = self.next_low.saturating_sub(1);
                    }
                }
                i as u8 + 1
            }
            None => 0,
        };
        Choice { order, fault: 0 }
    }
}
