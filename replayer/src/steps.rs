//! The steps of a trace: which records belong to which input, and where each message's
//! delivery is. Built once per loaded trace; everything else indexes into it.

use retrace_sim::trace::{Event, Record};
use retrace_sim::NodeId;
use std::collections::BTreeMap;

/// One step: an input record and the records after it that belong to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Index of the input record.
    pub input: usize,
    /// Index one past the step's last record.
    pub end: usize,
    pub node: NodeId,
    pub time_ns: u64,
}

/// The steps of a trace, in trace order.
#[derive(Clone, Debug, Default)]
pub struct Steps {
    pub steps: Vec<Step>,
    /// For each record index, the step it belongs to (`None` before the first step).
    pub step_of: Vec<Option<usize>>,
    /// Where each send's message was first delivered: send record index -> deliver index.
    pub delivery_of_send: BTreeMap<u64, usize>,
}

impl Steps {
    pub fn new(events: &[Event]) -> Steps {
        let mut steps: Vec<Step> = Vec::new();
        let mut step_of = Vec::with_capacity(events.len());
        let mut delivery_of_send = BTreeMap::new();
        // Whether records may still join the last step: a fault, a violation or the end
        // closes it (they happen between steps).
        let mut open = false;
        for (i, e) in events.iter().enumerate() {
            if let Some(node) = e.record.input_node() {
                steps.push(Step {
                    input: i,
                    end: i + 1,
                    node,
                    time_ns: e.time_ns,
                });
                open = true;
            } else if e.record.ends_step() {
                open = false;
            } else if let Some(last) = steps.last_mut().filter(|_| open) {
                last.end = i + 1;
            }
            if let Record::Deliver {
                send: Some(send), ..
            } = e.record
            {
                delivery_of_send.entry(send).or_insert(i);
            }
            step_of.push(steps.len().checked_sub(1).filter(|&s| steps[s].end > i));
        }
        Steps {
            steps,
            step_of,
            delivery_of_send,
        }
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The step whose input is at or before record `index` (the step `index` belongs to, or
    /// the last step before a world record).
    pub fn step_at_or_before(&self, index: usize) -> Option<usize> {
        match self.steps.binary_search_by_key(&index, |s| s.input) {
            Ok(s) => Some(s),
            Err(0) => None,
            Err(s) => Some(s - 1),
        }
    }
}
