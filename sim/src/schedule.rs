//! The one decision source for fuzzing. A [`Decider`] decides what happens to each message
//! when it is sent (dropped, duplicated, held back), which node faults happen at each moment,
//! and which pending delivery runs ahead of its time. A [`Schedule`] is the list of those
//! decisions, each named by what it is about — a message by its [`MsgKey`] (link, request,
//! kind and how many of that kind the request sent on that link before it), a node fault and
//! an early delivery by its [`Moment`] in virtual time — never by a global step number. So
//! removing one choice, or a request, leaves every other choice on the same message, and a
//! schedule still replays after an unrelated change to the model; a choice whose message no
//! longer exists simply does not apply, and the run says so. The empty schedule is the
//! default run: shrinking is deleting.

use crate::ids::NodeId;
use crate::rng::SimRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many pending events an early delivery can be picked from.
pub const WINDOW: usize = 8;
/// How long an injected crash lasts before the node restarts, and an injected isolation.
pub const CRASH_DOWN_NS: u64 = 100_000_000;
pub const ISOLATION_NS: u64 = 200_000_000;
pub const CLOCK_JUMP_NS: i64 = 50_000_000;
/// The longest a message is held back: long enough to arrive after a failover (stale
/// leaders, stale appends), short enough that a run still ends.
pub const DELAY_MAX_NS: u64 = 1_000_000_000;
/// The shortest hold a decider draws.
pub const DELAY_MIN_NS: u64 = 1_000_000;
/// How long a quick restart (half of the random deciders' crashes) keeps a node down.
pub const QUICK_RESTART_NS: (u64, u64) = (1_000_000, 10_000_000);
/// The largest clock jump a schedule file may ask for.
pub const CLOCK_JUMP_MAX_NS: u64 = 3_600_000_000_000;

/// The kinds of fault a decider can inject; swarm runs switch whole kinds off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Lose a message.
    Drop,
    /// Deliver a message twice.
    Duplicate,
    /// Hold a message back (up to [`DELAY_MAX_NS`]).
    Delay,
    /// Crash a node (it restarts [`CRASH_DOWN_NS`] later).
    Crash,
    /// Cut a node off from every other node for [`ISOLATION_NS`].
    Isolate,
    /// Jump a node's clock forward [`CLOCK_JUMP_NS`].
    ClockForward,
    /// Jump a node's clock back [`CLOCK_JUMP_NS`].
    ClockBack,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Drop,
        FaultKind::Duplicate,
        FaultKind::Delay,
        FaultKind::Crash,
        FaultKind::Isolate,
        FaultKind::ClockForward,
        FaultKind::ClockBack,
    ];

    /// Whether the fault is about a node (decided at a moment) rather than a message
    /// (decided when it is sent).
    pub fn is_node_fault(self) -> bool {
        !matches!(
            self,
            FaultKind::Drop | FaultKind::Duplicate | FaultKind::Delay
        )
    }
}

/// Which message a choice is about, as a schedule file names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgKey {
    pub from: u32,
    pub to: u32,
    /// The request the sending step worked for (its first request id); none for
    /// background work such as heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// The message's kind: its enum variant's name.
    pub kind: String,
    /// How many messages of this kind the same request (or background work) sent on this
    /// link before this one.
    pub nth: u32,
}

/// A [`MsgKey`] as a run compares it: the kind by a hash of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub from: u32,
    pub to: u32,
    /// [`NO_REQUEST`] for background work.
    pub request: u64,
    pub kind: u64,
    pub nth: u32,
}

/// [`Key::request`] of a message sent outside any request.
pub const NO_REQUEST: u64 = u64::MAX;

/// The hash a [`Key`] gives a kind's name (FNV-1a: fixed, so keys agree across runs and
/// builds).
pub fn kind_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl MsgKey {
    pub fn key(&self) -> Key {
        Key {
            from: self.from,
            to: self.to,
            request: self.request.unwrap_or(NO_REQUEST),
            kind: kind_hash(&self.kind),
            nth: self.nth,
        }
    }
}

impl std::fmt::Display for MsgKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.kind.is_empty() {
            "message"
        } else {
            &self.kind
        };
        write!(f, "{kind} #{} {}→{}", self.nth, self.from, self.to)?;
        match self.request {
            Some(r) => write!(f, " of request {r}"),
            None => write!(f, " (background)"),
        }
    }
}

/// A moment of a run: its `nth` decision at virtual time `at_ns` (counting from 0). A
/// choice at a moment applies at the first decision at or after it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Moment {
    pub at_ns: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nth: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Moment {
    pub fn at(at_ns: u64) -> Moment {
        Moment { at_ns, nth: 0 }
    }
}

/// One decision of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "choice", rename_all = "kebab-case")]
pub enum Choice {
    /// The message is lost.
    Drop { msg: MsgKey },
    /// The message arrives twice, at once.
    Duplicate { msg: MsgKey },
    /// The message is held back `by_ns` beyond its latency.
    Delay { msg: MsgKey, by_ns: u64 },
    /// The message is delivered at the first decision at or after `at` where it is among
    /// the next [`WINDOW`] pending events, ahead of its time.
    Early { msg: MsgKey, at: Moment },
    /// The node crashes at `at`; it restarts `lasts_ns` later ([`CRASH_DOWN_NS`] if not
    /// given; past the run's end, never).
    Crash {
        node: u32,
        at: Moment,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lasts_ns: Option<u64>,
    },
    /// The node is cut off from every other node at `at` for `lasts_ns` ([`ISOLATION_NS`]).
    Isolate {
        node: u32,
        at: Moment,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lasts_ns: Option<u64>,
    },
    /// The node's clock jumps by `by_ns` at `at`.
    ClockJump { node: u32, at: Moment, by_ns: i64 },
}

impl Choice {
    /// The message the choice is about, if it is about one.
    pub fn msg(&self) -> Option<&MsgKey> {
        match self {
            Choice::Drop { msg }
            | Choice::Duplicate { msg }
            | Choice::Delay { msg, .. }
            | Choice::Early { msg, .. } => Some(msg),
            _ => None,
        }
    }

    /// The moment of an early delivery or a node fault.
    pub fn moment(&self) -> Option<Moment> {
        match self {
            Choice::Early { at, .. }
            | Choice::Crash { at, .. }
            | Choice::Isolate { at, .. }
            | Choice::ClockJump { at, .. } => Some(*at),
            _ => None,
        }
    }

    pub fn moment_mut(&mut self) -> Option<&mut Moment> {
        match self {
            Choice::Early { at, .. }
            | Choice::Crash { at, .. }
            | Choice::Isolate { at, .. }
            | Choice::ClockJump { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The node of a node fault.
    pub fn node(&self) -> Option<u32> {
        match self {
            Choice::Crash { node, .. }
            | Choice::Isolate { node, .. }
            | Choice::ClockJump { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// A fault, as opposed to a reordering (an early delivery).
    pub fn is_fault(&self) -> bool {
        !matches!(self, Choice::Early { .. })
    }

    /// A node fault at a moment.
    pub fn of_node_fault(at: Moment, fault: NodeFault) -> Choice {
        match fault {
            NodeFault::Crash { node, lasts_ns } => Choice::Crash { node, at, lasts_ns },
            NodeFault::Isolate { node, lasts_ns } => Choice::Isolate { node, at, lasts_ns },
            NodeFault::ClockJump { node, by_ns } => Choice::ClockJump { node, at, by_ns },
        }
    }

    /// The node fault this choice injects, if it is one.
    pub fn node_fault(&self) -> Option<NodeFault> {
        match *self {
            Choice::Crash { node, lasts_ns, .. } => Some(NodeFault::Crash { node, lasts_ns }),
            Choice::Isolate { node, lasts_ns, .. } => Some(NodeFault::Isolate { node, lasts_ns }),
            Choice::ClockJump { node, by_ns, .. } => Some(NodeFault::ClockJump { node, by_ns }),
            _ => None,
        }
    }

    /// A message's fate as a choice (`None` for the default, delivery).
    pub fn of_fate(msg: MsgKey, fate: Fate) -> Option<Choice> {
        match fate {
            Fate::Deliver => None,
            Fate::Drop => Some(Choice::Drop { msg }),
            Fate::Duplicate => Some(Choice::Duplicate { msg }),
            Fate::Delay(by_ns) => Some(Choice::Delay { msg, by_ns }),
        }
    }

    fn fate(&self) -> Option<Fate> {
        match *self {
            Choice::Drop { .. } => Some(Fate::Drop),
            Choice::Duplicate { .. } => Some(Fate::Duplicate),
            Choice::Delay { by_ns, .. } => Some(Fate::Delay(by_ns)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        match self {
            Choice::Drop { msg } => write!(f, "drop {msg}"),
            Choice::Duplicate { msg } => write!(f, "duplicate {msg}"),
            Choice::Delay { msg, by_ns } => write!(f, "hold {msg} for {}ms", ms(*by_ns)),
            Choice::Early { msg, at } => write!(f, "deliver {msg} early at {}ms", ms(at.at_ns)),
            Choice::Crash { node, at, .. } => write!(f, "crash node {node} at {}ms", ms(at.at_ns)),
            Choice::Isolate { node, at, .. } => {
                write!(f, "isolate node {node} at {}ms", ms(at.at_ns))
            }
            Choice::ClockJump { node, at, by_ns } => write!(
                f,
                "jump node {node}'s clock {}ms at {}ms",
                *by_ns as f64 / 1e6,
                ms(at.at_ns)
            ),
        }
    }
}

/// What happens to a message when it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fate {
    #[default]
    Deliver,
    Drop,
    Duplicate,
    Delay(u64),
}

/// A fault injected into a node at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeFault {
    Crash { node: u32, lasts_ns: Option<u64> },
    Isolate { node: u32, lasts_ns: Option<u64> },
    ClockJump { node: u32, by_ns: i64 },
}

impl NodeFault {
    fn random(kind: FaultKind, node: u32) -> Option<NodeFault> {
        Some(match kind {
            FaultKind::Crash => NodeFault::Crash {
                node,
                lasts_ns: None,
            },
            FaultKind::Isolate => NodeFault::Isolate {
                node,
                lasts_ns: None,
            },
            FaultKind::ClockForward => NodeFault::ClockJump {
                node,
                by_ns: CLOCK_JUMP_NS,
            },
            FaultKind::ClockBack => NodeFault::ClockJump {
                node,
                by_ns: -CLOCK_JUMP_NS,
            },
            FaultKind::Drop | FaultKind::Duplicate | FaultKind::Delay => return None,
        })
    }
}

/// A whole run's decisions, and which workload requests to leave out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub choices: Vec<Choice>,
    /// Workload requests (by number, from 0) that are not sent.
    #[serde(default)]
    pub skip_requests: Vec<u64>,
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
    /// Checks a schedule that came from outside (a schedule file) against the scenario it
    /// is for: every value within what a run of that scenario can use. Without this a
    /// `workload_shift_ns` of 2^64-1 would pin the workload's clock at the current instant
    /// and issue requests there forever. The error names the field.
    pub fn check(&self, time_limit_ns: u64) -> Result<(), String> {
        let limit = crate::limits::MAX_SCHEDULE_ENTRIES;
        if self.workload_shift_ns > time_limit_ns {
            return Err(format!(
                "schedule.workload_shift_ns = {} exceeds the scenario's time limit ({} ns)",
                self.workload_shift_ns, time_limit_ns
            ));
        }
        for (what, n) in [
            ("choices", self.choices.len()),
            ("skip_requests", self.skip_requests.len()),
        ] {
            if n > limit {
                return Err(format!(
                    "schedule.{what} has {n} entries; the limit is {limit}"
                ));
            }
        }
        for (i, c) in self.choices.iter().enumerate() {
            if let Some(at) = c.moment().filter(|m| m.at_ns > time_limit_ns) {
                return Err(format!(
                    "schedule.choices[{i}].at.at_ns = {} is past the scenario's time limit ({time_limit_ns} ns)",
                    at.at_ns
                ));
            }
            match *c {
                Choice::Delay { by_ns, .. } if by_ns > DELAY_MAX_NS => {
                    return Err(format!(
                        "schedule.choices[{i}].by_ns = {by_ns} holds a message longer than {DELAY_MAX_NS} ns"
                    ));
                }
                Choice::ClockJump { by_ns, .. } if by_ns.unsigned_abs() > CLOCK_JUMP_MAX_NS => {
                    return Err(format!(
                        "schedule.choices[{i}].by_ns = {by_ns} jumps a clock more than {CLOCK_JUMP_MAX_NS} ns"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn faults(&self) -> usize {
        self.choices.iter().filter(|c| c.is_fault()).count()
    }

    pub fn reorderings(&self) -> usize {
        self.choices.len() - self.faults()
    }
}

/// What a decider sees of one pending event in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The message, for a delivery.
    pub msg: Option<Key>,
    /// The node the event happens on.
    pub node: NodeId,
}

impl Candidate {
    pub fn is_delivery(&self) -> bool {
        self.msg.is_some()
    }
}

/// Makes the simulator's choices. The simulator records every choice a decider makes into a
/// [`Schedule`], which replays the run through a [`Follow`].
pub trait Decider: Send {
    /// What happens to a message sent now.
    fn fate(&mut self, msg: &Key) -> Fate;
    /// Node faults to inject at `at`, before its event runs, each with the moment it is
    /// recorded at.
    fn node_faults(&mut self, at: Moment, nodes: usize, out: &mut Vec<(Moment, NodeFault)>);
    /// Which of the window's deliveries runs now, ahead of the earliest event, if any.
    fn early(&mut self, at: Moment, window: &[Candidate]) -> Option<usize>;
}

/// Random exploration: each message sent suffers a fault with probability `fault` times
/// the share of message kinds among `kinds`, each decision brings a node fault with
/// probability `fault` times the share of node kinds, and a delivery in the window runs
/// early with probability `reorder`.
pub struct RandomDecider {
    pub rng: SimRng,
    pub reorder: f64,
    pub fault: f64,
    pub kinds: Vec<FaultKind>,
}

impl RandomDecider {
    fn share(&self, node: bool) -> f64 {
        let of = self
            .kinds
            .iter()
            .filter(|k| k.is_node_fault() == node)
            .count();
        self.fault * of as f64 / self.kinds.len().max(1) as f64
    }

    fn pick(&mut self, node: bool) -> Option<FaultKind> {
        let kinds: Vec<FaultKind> = self
            .kinds
            .iter()
            .copied()
            .filter(|k| k.is_node_fault() == node)
            .collect();
        self.rng.pick(&kinds).copied()
    }
}

impl Decider for RandomDecider {
    fn fate(&mut self, _msg: &Key) -> Fate {
        if !self.rng.chance(self.share(false)) {
            return Fate::Deliver;
        }
        match self.pick(false) {
            Some(FaultKind::Drop) => Fate::Drop,
            Some(FaultKind::Duplicate) => Fate::Duplicate,
            Some(FaultKind::Delay) => Fate::Delay(self.rng.between(DELAY_MIN_NS, DELAY_MAX_NS)),
            _ => Fate::Deliver,
        }
    }

    fn node_faults(&mut self, at: Moment, nodes: usize, out: &mut Vec<(Moment, NodeFault)>) {
        if nodes == 0 || !self.rng.chance(self.share(true)) {
            return;
        }
        let Some(kind) = self.pick(true) else { return };
        let node = self.rng.below(nodes as u64) as u32;
        let mut fault = NodeFault::random(kind, node);
        // Half the crashes are a process restarted at once by its supervisor (1-10 ms): a
        // node that forgets what it had not synced in the middle of a protocol round (a vote,
        // a prepare) and is back before the round is over. The rest last CRASH_DOWN_NS.
        if let Some(NodeFault::Crash { lasts_ns, .. }) = &mut fault {
            if self.rng.chance(0.5) {
                *lasts_ns = Some(self.rng.between(QUICK_RESTART_NS.0, QUICK_RESTART_NS.1));
            }
        }
        out.extend(fault.map(|f| (at, f)));
    }

    fn early(&mut self, _at: Moment, window: &[Candidate]) -> Option<usize> {
        let deliveries = window.iter().filter(|c| c.is_delivery()).count();
        if deliveries > 1 && self.rng.chance(self.reorder) {
            let k = self.rng.below(deliveries as u64) as usize;
            return (0..window.len())
                .filter(|&i| window[i].is_delivery())
                .nth(k);
        }
        None
    }
}

/// Probabilistic concurrency testing: every node gets a random priority; at each decision
/// the pending delivery to the highest-priority node runs first; at `d - 1` random
/// decisions the node that just ran drops to the lowest priority. Finds ordering bugs of
/// depth `d` with a known probability, unlike uniform shuffling. Orderings alone miss every
/// bug that needs a crash, a partition or a lost message, so faults come from `faults`, a
/// random decider that does not reorder.
pub struct PctDecider {
    priorities: Vec<u64>,
    change_points: Vec<u64>,
    next_low: u64,
    decisions: u64,
    faults: RandomDecider,
}

impl PctDecider {
    pub fn new(
        rng: &mut SimRng,
        nodes: usize,
        depth: usize,
        expected_steps: u64,
        faults: RandomDecider,
    ) -> Self {
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
            decisions: 0,
            faults: RandomDecider {
                reorder: 0.0,
                ..faults
            },
        }
    }
}

impl Decider for PctDecider {
    fn fate(&mut self, msg: &Key) -> Fate {
        self.faults.fate(msg)
    }

    fn node_faults(&mut self, at: Moment, nodes: usize, out: &mut Vec<(Moment, NodeFault)>) {
        self.faults.node_faults(at, nodes, out);
    }

    fn early(&mut self, _at: Moment, window: &[Candidate]) -> Option<usize> {
        let step = self.decisions;
        self.decisions += 1;
        let prio = |n: NodeId| self.priorities.get(n.index()).copied().unwrap_or(0);
        let (i, c) = window
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_delivery())
            .max_by_key(|(i, c)| (prio(c.node), std::cmp::Reverse(*i)))?;
        if self.change_points.first() == Some(&step) {
            self.change_points.remove(0);
            if let Some(p) = self.priorities.get_mut(c.node.index()) {
                *p = self.next_low;
                self.next_low = self.next_low.saturating_sub(1);
            }
        }
        // The earliest event needs no choice; anything else is an early delivery.
        (i != 0).then_some(i)
    }
}

/// Replays a [`Schedule`]: each choice applies where its message or moment comes up, at
/// most once; [`Follow::unapplied`] tells which never did.
pub struct Follow {
    fates: BTreeMap<Key, (Fate, usize)>,
    early: BTreeMap<Key, (Moment, usize)>,
    /// Node faults, latest first.
    node: Vec<(Moment, NodeFault, usize)>,
    applied: Vec<bool>,
}

impl Follow {
    pub fn new(schedule: &Schedule) -> Follow {
        let mut f = Follow {
            fates: BTreeMap::new(),
            early: BTreeMap::new(),
            node: Vec::new(),
            applied: vec![false; schedule.choices.len()],
        };
        for (i, c) in schedule.choices.iter().enumerate() {
            if let Some(fate) = c.fate() {
                let key = c.msg().map(MsgKey::key);
                // A second choice about the same message replaces the first (which then
                // reports as not applied).
                f.fates.extend(key.map(|k| (k, (fate, i))));
            } else if let Choice::Early { msg, at } = c {
                f.early.insert(msg.key(), (*at, i));
            } else if let (Some(at), Some(fault)) = (c.moment(), c.node_fault()) {
                f.node.push((at, fault, i));
            }
        }
        f.node.sort_by_key(|e| std::cmp::Reverse((e.0, e.2)));
        f
    }

    /// Indices of the schedule's choices that never applied.
    pub fn unapplied(&self) -> Vec<usize> {
        (0..self.applied.len())
            .filter(|&i| !self.applied[i])
            .collect()
    }
}

impl Decider for Follow {
    fn fate(&mut self, msg: &Key) -> Fate {
        match self.fates.remove(msg) {
            Some((fate, i)) => {
                self.applied[i] = true;
                fate
            }
            None => Fate::Deliver,
        }
    }

    fn node_faults(&mut self, at: Moment, nodes: usize, out: &mut Vec<(Moment, NodeFault)>) {
        while let Some(&(due, fault, i)) = self.node.last() {
            if due > at {
                break;
            }
            self.node.pop();
            let node = match fault {
                NodeFault::Crash { node, .. }
                | NodeFault::Isolate { node, .. }
                | NodeFault::ClockJump { node, .. } => node,
            };
            if (node as usize) < nodes {
                self.applied[i] = true;
                out.push((due, fault));
            }
        }
    }

    fn early(&mut self, at: Moment, window: &[Candidate]) -> Option<usize> {
        if self.early.is_empty() {
            return None;
        }
        let (i, k) = window.iter().enumerate().find_map(|(i, c)| {
            let k = c.msg?;
            self.early
                .get(&k)
                .is_some_and(|(m, _)| *m <= at)
                .then_some((i, k))
        })?;
        if let Some((_, c)) = self.early.remove(&k) {
            self.applied[c] = true;
        }
        Some(i)
    }
}
