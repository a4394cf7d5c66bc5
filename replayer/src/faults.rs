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

use crate::causality::Causality;
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

/// Where a trace's faults and drops are: built once, so a query looks only at them and not
/// at every record (a `w` on a million-record trace would otherwise scan it each time).
#[derive(Clone, Debug, Default)]
pub struct FaultIndex {
    records: Vec<usize>,
}

impl FaultIndex {
    pub fn new(events: &[Event]) -> FaultIndex {
        FaultIndex {
            records: events
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e.record, Record::Fault(_) | Record::Drop { .. }))
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// [`fault_causes`] over the indexed records.
    pub fn causes(
        &self,
        causality: &Causality,
        steps: &Steps,
        events: &[Event],
        s: usize,
    ) -> Vec<FaultCause> {
        causes(causality, steps, events, s, &self.records)
    }
}

/// The faults that changed what the causal history of step `s` (`s` included) saw. Sorted
/// by record index. One pass over the records up to `s` (see [`FaultIndex`] to ask more
/// than once).
pub fn fault_causes(
    causality: &Causality,
    steps: &Steps,
    events: &[Event],
    s: usize,
) -> Vec<FaultCause> {
    FaultIndex::new(events).causes(causality, steps, events, s)
}

fn causes(
    causality: &Causality,
    steps: &Steps,
    events: &[Event],
    s: usize,
    candidates: &[usize],
) -> Vec<FaultCause> {
    let Some(end) = steps.steps.get(s).map(|st| st.input) else {
        return Vec::new();
    };
    // The first step of the history on `node` whose input comes after record `at`; the
    // history's steps on a node are a prefix of the node's steps (the vector clock says
    // how long), so nothing is built per query.
    let after = |node: NodeId, at: usize| -> Option<usize> {
        let list = causality.history_on(s, node.index());
        let k = list.partition_point(|&x| steps.steps[x].input <= at);
        list.get(k).copied()
    };
    let in_history = |x: usize| x == s || causality.precedes(x, s);
    let mut out = Vec::new();
    // Cuts in force: id -> (record, links).
    type Links<'a> = &'a [(NodeId, NodeId)];
    let mut cuts: BTreeMap<u32, (usize, Links)> = BTreeMap::new();
    for &i in candidates.iter().take_while(|&&i| i <= end) {
        match &events[i].record {
            Record::Fault(FaultRecord::Cut { id, links }) => {
                cuts.insert(*id, (i, links.as_slice()));
            }
            Record::Fault(FaultRecord::Heal { id }) => {
                cuts.remove(id);
            }
            Record::Fault(FaultRecord::ClockJump { node, .. }) => {
                let read = {
                    let list = causality.history_on(s, node.index());
                    let from = list.partition_point(|&x| steps.steps[x].input <= i);
                    list[from..].iter().copied().find(|&x| {
                        let st = &steps.steps[x];
                        st.input > i
                            && events[st.input..st.end]
                                .iter()
                                .any(|r| matches!(r.record, Record::ClockRead { .. }))
                    })
                };
                if let Some(x) = read {
                    out.push(FaultCause {
                        record: i,
                        affected_step: x,
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
