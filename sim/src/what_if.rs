//! Changes made by hand at a fork's moment, before its future runs: the TUI's what-if
//! ("had this message arrived now, had that node crashed"). A branch is a fork plus a list
//! of [`Intervention`]s; the list is data, saved in a schedule file beside the branch's
//! trace (`ScheduleFrom::interventions`), so `retrace fork TRACE --at N --schedule FILE`
//! makes the same branch again.

use crate::fork::{ForkError, ForkPoint};
use crate::ids::{format_ns, NodeId};
use crate::model::Model;
use crate::scenario::FaultAction;
use crate::snapshot::NodeState;
use std::collections::BTreeSet;

/// Most changes one branch makes: a person picks them one by one, and a schedule file that
/// names more is not one the TUI wrote.
pub const INTERVENTIONS_MAX: usize = 1024;

/// The longest delay a change may add: a day, far past any run's horizon.
pub const DELAY_NS_MAX: u64 = 86_400 * 1_000_000_000;

/// One change at the moment. Messages are named by their `Send` record's index in the
/// trace; a message may be changed once.
///
/// When the future starts, node changes happen first, in the order given; then the
/// messages delivered "now" arrive, in the order of their sends.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Intervention {
    /// The message arrives at the moment, ahead of the network's latency.
    Deliver { send: u64 },
    /// The message arrives `by_ns` later than the network would have delivered it.
    Delay { send: u64, by_ns: u64 },
    /// The message is lost (recorded as a drop at the moment).
    Drop { send: u64 },
    /// The message arrives twice (recorded as a duplicate at the moment).
    Duplicate { send: u64 },
    /// The node crashes at the moment and stays down.
    Crash { node: NodeId },
    /// A node that is down restarts at the moment; one that is up reboots (a crash and a
    /// restart at once).
    Restart { node: NodeId },
    /// Every link to and from the node is cut at the moment, and stays cut.
    Isolate { node: NodeId },
}

impl Intervention {
    /// The message it changes, if it changes one.
    pub fn send(&self) -> Option<u64> {
        match *self {
            Intervention::Deliver { send }
            | Intervention::Delay { send, .. }
            | Intervention::Drop { send }
            | Intervention::Duplicate { send } => Some(send),
            _ => None,
        }
    }

    /// The node it changes, if it changes one.
    pub fn node(&self) -> Option<NodeId> {
        match *self {
            Intervention::Crash { node }
            | Intervention::Restart { node }
            | Intervention::Isolate { node } => Some(node),
            _ => None,
        }
    }

    /// Whether its node is up after it, given whether it was up before (changes to
    /// messages and isolation leave it as it was).
    pub fn leaves_up(&self, up: bool) -> bool {
        match self {
            Intervention::Crash { .. } => false,
            Intervention::Restart { .. } => true,
            _ => up,
        }
    }

    /// For people: `drop #412`, `crash replica-2`.
    pub fn describe(&self, node_names: &[String]) -> String {
        let name = |n: NodeId| {
            node_names
                .get(n.index())
                .cloned()
                .unwrap_or_else(|| n.to_string())
        };
        match *self {
            Intervention::Deliver { send } => format!("deliver #{send} now"),
            Intervention::Delay { send, by_ns } => format!("delay #{send} by {}", format_ns(by_ns)),
            Intervention::Drop { send } => format!("drop #{send}"),
            Intervention::Duplicate { send } => format!("duplicate #{send}"),
            Intervention::Crash { node } => format!("crash {}", name(node)),
            Intervention::Restart { node } => format!("restart {}", name(node)),
            Intervention::Isolate { node } => format!("isolate {}", name(node)),
        }
    }

    /// The fault a node change is, at the moment.
    pub(crate) fn fault(&self, nodes: usize) -> Option<FaultAction> {
        Some(match *self {
            Intervention::Crash { node } => FaultAction::Crash {
                node,
                restart_after_ns: None,
            },
            Intervention::Restart { node } => FaultAction::Restart { node },
            Intervention::Isolate { node } => FaultAction::Cut {
                links: (0..nodes as u32)
                    .map(NodeId)
                    .filter(|&other| other != node)
                    .flat_map(|other| [(node, other), (other, node)])
                    .collect(),
                heal_after_ns: None,
            },
            _ => return None,
        })
    }
}

/// Checks `list` against the moment: each message is in flight there and changed once,
/// each node exists, a crash finds its node up. The error names the change.
pub fn check<M: Model>(point: &ForkPoint<M>, list: &[Intervention]) -> Result<(), ForkError> {
    if list.len() > INTERVENTIONS_MAX {
        return Err(ForkError(format!(
            "{} changes at one moment; at most {INTERVENTIONS_MAX}",
            list.len()
        )));
    }
    let names = point.header.node_names();
    let in_flight: BTreeSet<u64> = point.in_flight.iter().map(|m| m.send).collect();
    let mut up: Vec<bool> = point
        .nodes
        .iter()
        .map(|n| matches!(n.state, NodeState::Up(_)))
        .collect();
    let mut changed = BTreeSet::new();
    for (k, change) in list.iter().enumerate() {
        let fail = |why: String| {
            Err(ForkError(format!(
                "change {} ({}): {why}",
                k + 1,
                change.describe(&names)
            )))
        };
        if let Some(send) = change.send() {
            if !in_flight.contains(&send) {
                return fail(format!(
                    "record {send} is no message in flight after record {}",
                    point.records.saturating_sub(1)
                ));
            }
            if !changed.insert(send) {
                return fail("the message is changed twice".into());
            }
            if let Intervention::Delay { by_ns, .. } = change {
                if *by_ns > DELAY_NS_MAX {
                    return fail(format!("a delay over {}", format_ns(DELAY_NS_MAX)));
                }
            }
        }
        if let Some(node) = change.node() {
            let Some(is_up) = up.get_mut(node.index()) else {
                return fail(format!("the cluster has {} nodes", point.nodes.len()));
            };
            if matches!(change, Intervention::Crash { .. }) && !*is_up {
                return fail(
                    "the node is down by then (at the moment, or by an earlier change)".into(),
                );
            }
            *is_up = change.leaves_up(*is_up);
        }
    }
    Ok(())
}

/// What becomes of the copies of one message in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// At the network's time plus `by_ns`.
    Later {
        by_ns: u64,
    },
    Now,
    Lost,
    Twice,
}

/// The fate each changed message meets, by its send.
pub(crate) fn fates(list: &[Intervention]) -> std::collections::BTreeMap<u64, Fate> {
    list.iter()
        .filter_map(|c| {
            let fate = match *c {
                Intervention::Deliver { .. } => Fate::Now,
                Intervention::Delay { by_ns, .. } => Fate::Later { by_ns },
                Intervention::Drop { .. } => Fate::Lost,
                Intervention::Duplicate { .. } => Fate::Twice,
                _ => return None,
            };
            Some((c.send()?, fate))
        })
        .collect()
}
