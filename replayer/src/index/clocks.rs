//! Vector clocks walked forward from a checkpoint, as [`crate::Causality`] computes them
//! for a whole loaded trace: program order on each node plus send -> delivery.
//!
//! The walker keeps the clock of each node's last step and of each message in flight; a
//! delivery takes its sender's clock from there. A message leaves the table when its last
//! copy is delivered or dropped, so the table holds what is in flight — what a checkpoint
//! stores. Whatever it cannot find (a copy delivered twice with no `Duplicate` record, or
//! an entry evicted because the table was full of messages never delivered) it asks the
//! caller for, who computes the sender's clock from an earlier checkpoint.

use super::{ClockCheckpoint, IndexError};
use retrace_sim::trace::{Event, Record};
use std::collections::BTreeMap;

/// Messages in flight the walker keeps at most; older ones are evicted (and recomputed if
/// ever delivered). A bound, not a tuning knob: a run has far fewer in flight at once.
const IN_FLIGHT_MAX: usize = 1 << 16;

#[derive(Clone, Debug)]
struct InFlight {
    /// The sending step's clock; empty when the send belongs to no step.
    clock: Vec<u32>,
    /// Deliveries still to come (a `Duplicate` adds one, a drop or delivery takes one).
    left: u32,
}

#[derive(Clone, Debug)]
pub(crate) struct ClockWalker {
    n: usize,
    last: Vec<u32>,
    in_flight: BTreeMap<u64, InFlight>,
    /// The node of the open step (records between steps close it, as in `Steps`).
    open: Option<usize>,
}

/// A step the walker just entered.
pub(crate) struct Entered {
    pub node: usize,
}

impl ClockWalker {
    pub fn new(n: usize) -> ClockWalker {
        ClockWalker {
            n,
            last: vec![0; n * n],
            in_flight: BTreeMap::new(),
            open: None,
        }
    }

    pub fn from_checkpoint(n: usize, cp: &ClockCheckpoint) -> ClockWalker {
        let mut w = ClockWalker::new(n);
        if cp.last.len() == n * n {
            w.last.copy_from_slice(&cp.last);
        }
        for (send, clock, left) in &cp.in_flight {
            w.in_flight.insert(
                *send,
                InFlight {
                    clock: clock.clone(),
                    left: *left,
                },
            );
        }
        w.open = cp.open.map(|k| k as usize).filter(|&k| k < n);
        w
    }

    pub fn checkpoint(&self) -> ClockCheckpoint {
        ClockCheckpoint {
            last: self.last.clone(),
            open: self.open.map(|k| k as u32),
            in_flight: self
                .in_flight
                .iter()
                .map(|(s, f)| (*s, f.clock.clone(), f.left))
                .collect(),
        }
    }

    /// The clock of node `k`'s last step (all zeros before its first).
    pub fn clock_of(&self, k: usize) -> &[u32] {
        &self.last[k * self.n..k * self.n + self.n]
    }

    /// How many steps node `k` has taken.
    pub fn steps_of(&self, k: usize) -> u32 {
        self.last[k * self.n + k]
    }

    /// The node of the step open now, if records may still join one.
    pub fn open_node(&self) -> Option<usize> {
        self.open
    }

    /// Takes one record, in trace order. `miss(send)` gives the clock of the step holding
    /// record `send` when the table does not (`None`: that send belongs to no step).
    pub fn feed(
        &mut self,
        e: &Event,
        miss: &mut dyn FnMut(u64) -> Result<Option<Vec<u32>>, IndexError>,
    ) -> Result<Option<Entered>, IndexError> {
        let n = self.n;
        if let Some(node) = e.record.input_node() {
            let k = node.index().min(n - 1);
            let sender: Option<Vec<u32>> = match &e.record {
                Record::Deliver {
                    send: Some(send), ..
                } => match self.in_flight.get_mut(send) {
                    Some(f) => {
                        let clock = f.clock.clone();
                        f.left = f.left.saturating_sub(1);
                        if f.left == 0 {
                            self.in_flight.remove(send);
                        }
                        (!clock.is_empty()).then_some(clock)
                    }
                    None => miss(*send)?,
                },
                _ => None,
            };
            let (mine_start, steps) = (k * n, self.last[k * n + k]);
            if let Some(s) = sender {
                for (m, o) in self.last[mine_start..mine_start + n].iter_mut().zip(&s) {
                    *m = (*m).max(*o);
                }
            }
            self.last[mine_start + k] = steps.saturating_add(1);
            self.open = Some(k);
            return Ok(Some(Entered { node: k }));
        }
        match &e.record {
            r if r.ends_step() => self.open = None,
            Record::Send { .. } => {
                let clock = match self.open {
                    Some(k) => self.clock_of(k).to_vec(),
                    None => Vec::new(),
                };
                self.in_flight.insert(e.index, InFlight { clock, left: 1 });
                while self.in_flight.len() > IN_FLIGHT_MAX {
                    self.in_flight.pop_first();
                }
            }
            Record::Duplicate { send } => {
                if let Some(f) = self.in_flight.get_mut(send) {
                    f.left = f.left.saturating_add(1);
                }
            }
            Record::Drop { send, .. } => {
                if let Some(f) = self.in_flight.get_mut(send) {
                    f.left = f.left.saturating_sub(1);
                    if f.left == 0 {
                        self.in_flight.remove(send);
                    }
                }
            }
            _ => {}
        }
        Ok(None)
    }
}
