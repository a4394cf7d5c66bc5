//! `why` and `effects` on an indexed trace, with the answers [`crate::Causality`] and
//! [`crate::faults`] give on the loaded trace (the tests hold them to it).
//!
//! The causal past of a step is read off its vector clock: on node `k` it is the first
//! `clock[k]` steps. So its size is the clock's sum, and its nearest members are a merge
//! of each node's chain walked back from its last member through the `prev` links — as
//! many reads as members shown, however long the trace. Faults are judged from the
//! positions the index keeps with them, without reading a record.

use super::access::IndexedTrace;
use super::{FaultEntry, IndexError, Layout, BLOCK_RECORDS};
use std::collections::{BTreeMap, BinaryHeap};

/// What causally precedes a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Past {
    /// How many steps precede it.
    pub count: u64,
    /// The inputs of the nearest `limit` of them, in trace order.
    pub nearest: Vec<u64>,
    /// The faults and drops that changed what its history saw (their records, in order).
    pub faults: Vec<u64>,
}

/// What a step causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effects {
    /// How many later steps follow causally from it.
    pub count: u64,
    /// The inputs of the first `limit` of them, in trace order.
    pub nearest: Vec<u64>,
}

impl IndexedTrace {
    fn node_of_step(&mut self, input: u64) -> Result<usize, IndexError> {
        let e = self.event(input)?;
        match e.record.input_node() {
            Some(node) if node.index() < self.layout.nodes => Ok(node.index()),
            _ => Err(self
                .reader
                .inconsistent(format!("record {input} is not a step's input"))),
        }
    }

    /// The steps that happen before the step whose input is `input`: how many, the nearest
    /// `limit`, and the faults its history saw.
    pub fn why(&mut self, input: u64, limit: usize) -> Result<Past, IndexError> {
        let own = self.node_of_step(input)?;
        let clock = self.clock_of_step(input)?;
        // Its own entry counts itself (at least 1 in any index this build wrote).
        let count = clock
            .iter()
            .map(|&c| u64::from(c))
            .sum::<u64>()
            .saturating_sub(1);
        // Each node's last member; then always the latest not yet taken.
        let mut heads = BinaryHeap::new();
        for (k, &c) in clock.iter().enumerate() {
            let members = if k == own { c.saturating_sub(1) } else { c };
            if members > 0 {
                if let Some(i) = self.reader.nth_step(&self.layout, k, members - 1)? {
                    heads.push(i);
                }
            }
        }
        let mut nearest = Vec::new();
        // Bounded by `limit` and by the past's size.
        while nearest.len() < limit {
            let Some(i) = heads.pop() else { break };
            nearest.push(i);
            let e = self.event(i)?;
            if let Some(prev) = e.record.prev_input() {
                if prev >= i {
                    return Err(self
                        .reader
                        .inconsistent(format!("record {i} links forward to record {prev}")));
                }
                heads.push(prev);
            }
        }
        nearest.reverse();
        let faults = fault_causes(&self.layout, input, &clock);
        Ok(Past {
            count,
            nearest,
            faults,
        })
    }

    /// The steps that the step whose input is `input` happens before: how many, and the
    /// first `limit`. One pass from the step to the end of the trace.
    pub fn effects(&mut self, input: u64, limit: usize) -> Result<Effects, IndexError> {
        let own = self.node_of_step(input)?;
        let mine = self.clock_of_step(input)?.get(own).copied().unwrap_or(0);
        let layout = &self.layout;
        let reader = &mut self.reader;
        let c = Layout::block_of(input) as u64 / layout.clock_every;
        let Some(cp) = layout.checkpoints.get(c as usize) else {
            return Err(reader.inconsistent(format!("no clock checkpoint for record {input}")));
        };
        let mut walker = super::clocks::ClockWalker::from_checkpoint(layout.nodes, cp);
        let mut count = 0u64;
        let mut nearest = Vec::new();
        let first = (c * layout.clock_every) as usize;
        for b in first..layout.blocks.len() {
            let block = reader.block(layout, b)?;
            for e in &block.events {
                let entered = walker.feed(e, &mut |send| match reader.step_of(layout, send)? {
                    Some(step) => reader.clock_of_step(layout, step).map(Some),
                    None => Ok(None),
                })?;
                if let Some(entered) = entered {
                    if e.index > input && walker.clock_of(entered.node)[own] >= mine {
                        count += 1;
                        if nearest.len() < limit {
                            nearest.push(e.index);
                        }
                    }
                }
            }
        }
        debug_assert!(layout.blocks.len() as u64 * BLOCK_RECORDS >= layout.records);
        Ok(Effects { count, nearest })
    }
}

/// The faults that changed what the history with vector clock `clock` (of the step at
/// `input`) saw: the rules of [`crate::faults`], on the positions the index keeps.
fn fault_causes(layout: &Layout, input: u64, clock: &[u32]) -> Vec<u64> {
    let seen = |k: usize, position: u32| clock.get(k).is_some_and(|&c| position < c);
    let mut out = Vec::new();
    // Cuts in force: id -> (record, links).
    type Links<'a> = &'a [(retrace_sim::NodeId, retrace_sim::NodeId)];
    let mut cuts: BTreeMap<u32, (u64, Links)> = BTreeMap::new();
    for f in layout.faults.iter().take_while(|f| f.record() <= input) {
        match f {
            FaultEntry::Cut { record, id, links } => {
                cuts.insert(*id, (*record, links.as_slice()));
            }
            FaultEntry::Heal { id, .. } => {
                cuts.remove(id);
            }
            FaultEntry::Jump { record, node, read } => {
                if read.is_some_and(|p| seen(node.index(), p)) {
                    out.push(*record);
                }
            }
            FaultEntry::Drop {
                record,
                from,
                to,
                sender,
                to_steps,
                partition,
            } => {
                let Some(sender) = sender else { continue };
                if !seen(from.index(), *sender) || !seen(to.index(), *to_steps) {
                    continue;
                }
                out.push(*record);
                if *partition {
                    let cut = cuts
                        .values()
                        .filter(|(_, links)| links.contains(&(*from, *to)))
                        .map(|(at, _)| *at)
                        .max();
                    out.extend(cut);
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
