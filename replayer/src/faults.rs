//! Faults as causes: the network cuts, drops and clock jumps that changed what the steps of
//! a causal history saw.
//!
//! Happens-before links steps by the messages they exchanged; a fault is the absence of a
//! message or a wrong clock, so it has no edge, and `why` alone cannot explain a stale read
//! caused by an isolation plus a clock jump. A fault belongs to a history when a step of
//! the history saw the world it made:
//! - a **drop** of a message sent by a step of the history to a node that has a step of the
//!   history after the drop (that step ran without the message);
//! - the **cut** (partition, isolation) that made such a drop, when its reason is a
//!   partition: the latest `Cut` before the drop that covers the link and was not healed;
//! - a **clock jump** on a node with a step of the history after the jump that read the
//!   clock.

use crate::steps::Steps;
use retrace_sim::trace::DropReason;
use retrace_sim::trace::{Event, FaultRecord, Record};
use retrace_sim::NodeId;
use std::collections::BTreeMap;

/// A fault in a causal history: its record, and the step of the history it affected first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultCause {
    pub record: usize,
    pub affected_step: usize,
}

/// The faults that changed what the steps in `history` (sorted step numbers, the step asked
/// about included) saw. Sorted by record index. One pass over the records up to the last
/// step of the history.
pub fn fault_causes(steps: &Steps, events: &[Event], history: &[usize]) -> Vec<FaultCause> {
    let Some(&last) = history.last() else {
        return Vec::new();
    };
    let end = steps.steps[last].input;
    // Per node: the inputs of the history's steps on it, in order.
    let mut on_node: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    for &s in history {
        let st = &steps.steps[s];
        on_node.entry(st.node).or_default().push(s);
    }
    // The first step of the history on `node` whose input comes after record `at`.
    let after = |node: NodeId, at: usize| -> Option<usize> {
        let list = on_node.get(&node)?;
        let k = list.partition_point(|&s| steps.steps[s].input <= at);
        list.get(k).copied()
    };
    let in_history = |s: usize| history.binary_search(&s).is_ok();
    let mut out = Vec::new();
    // Cuts in force: id -> (record, links).
    type Links<'a> = &'a [(NodeId, NodeId)];
    let mut cuts: BTreeMap<u32, (usize, Links)> = BTreeMap::new();
    for (i, e) in events.iter().enumerate().take(end + 1) {
        match &e.record {
            Record::Fault(FaultRecord::Cut { id, links }) => {
                cuts.insert(*id, (i, links.as_slice()));
            }
            Record::Fault(FaultRecord::Heal { id }) => {
                cuts.remove(id);
            }
            Record::Fault(FaultRecord::ClockJump { node, .. }) => {
                let read = on_node.get(node).and_then(|list| {
                    list.iter().copied().find(|&s| {
                        let st = &steps.steps[s];
                        st.input > i
                            && events[st.input..st.end]
                                .iter()
                                .any(|r| matches!(r.record, Record::ClockRead { .. }))
                    })
                });
                if let Some(s) = read {
                    out.push(FaultCause {
                        record: i,
                        affected_step: s,
                    });
                }
            }
            Record::Drop { send, reason } => {
                let send = *send as usize;
                let Some(sender) = steps.step_of.get(send).copied().flatten() else {
                    continue;
                };
                let (from, to) = match (&events[send].record, events[send].node) {
                    (Record::Send { to, .. }, Some(from)) => (from, *to),
                    _ => continue,
                };
                if !in_history(sender) {
                    continue;
                }
                let Some(affected) = after(to, i) else {
                    continue;
                };
                out.push(FaultCause {
                    record: i,
                    affected_step: affected,
                });
                if *reason == DropReason::Partition {
                    let cut = cuts
                        .values()
                        .filter(|(_, links)| links.contains(&(from, to)))
                        .map(|(at, _)| *at)
                        .max();
                    if let Some(at) = cut {
                        out.push(FaultCause {
                            record: at,
                            affected_step: affected,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|f| (f.record, f.affected_step));
    out.dedup_by_key(|f| f.record);
    out
}
