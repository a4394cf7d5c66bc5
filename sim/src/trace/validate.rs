//! The structural check every trace consumer gets from [`super::TraceReader`]: a frame
//! whose CRC matches can still say things no writer of retrace says — a node id past the
//! cluster, a delivery whose "send" is a timer, a header with no nodes or a hundred
//! thousand. Consumers index arrays by these values, so each is checked once, here, as the
//! records stream past, instead of defensively in every consumer.
//!
//! Memory is a few bits per record (which records are sends, timer settings, inputs) and
//! one slot per node.

use super::{Event, FaultRecord, Header, Record};
use crate::limits;
use crate::NodeId;

/// One bit per record index.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn set(&mut self, i: u64) {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }
    fn get(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Checks a header, then each record in order (see the module docs).
pub struct Validator {
    nodes: usize,
    last_input: Vec<Option<u64>>,
    sends: Bits,
    timer_sets: Bits,
    /// Records a service event may answer: service operations, and resumes.
    service_ops: Bits,
    inputs: Bits,
}

impl Validator {
    /// Checks the header's own limits.
    pub fn new(header: &Header) -> Result<Validator, String> {
        let n = header.nodes.len();
        if n == 0 || n > limits::MAX_NODES {
            return Err(format!(
                "the header lists {n} nodes; a trace has 1 to {}",
                limits::MAX_NODES
            ));
        }
        if let Some((i, _)) = header.nodes.iter().enumerate().find(|(_, n)| {
            n.name.len() > limits::MAX_NAME_BYTES || n.role.len() > limits::MAX_NAME_BYTES
        }) {
            return Err(format!(
                "node {i}'s name or role is longer than {} bytes",
                limits::MAX_NAME_BYTES
            ));
        }
        if header.scenario_toml.len() as u64 > limits::MAX_SCENARIO_BYTES {
            return Err(format!(
                "the scenario text is longer than {} bytes",
                limits::MAX_SCENARIO_BYTES
            ));
        }
        Ok(Validator {
            nodes: n,
            last_input: vec![None; n],
            sends: Bits::default(),
            timer_sets: Bits::default(),
            service_ops: Bits::default(),
            inputs: Bits::default(),
        })
    }

    fn node(&self, what: &str, node: NodeId) -> Result<(), String> {
        if node.index() >= self.nodes {
            return Err(format!(
                "{what} is node {}, but the trace has {} nodes",
                node.0, self.nodes
            ));
        }
        Ok(())
    }

    fn link(&self, what: &str, to: u64, kind: &str, bits: &Bits) -> Result<(), String> {
        if !bits.get(to) {
            return Err(format!(
                "{what} points at record {to}, which is not a {kind}"
            ));
        }
        Ok(())
    }

    /// Checks one record (records must come in index order).
    pub fn check(&mut self, e: &Event) -> Result<(), String> {
        let r = &e.record;
        if let Some(node) = r.input_node() {
            self.node("its node", node)?;
            let prev = r.prev_input();
            // `prev` chains a node's inputs: replay and causality walk it as program order.
            if prev != self.last_input[node.index()] {
                return Err(format!(
                    "its link to the node's previous input is {}, but that input is {}",
                    prev.map_or("none".into(), |p| format!("record {p}")),
                    self.last_input[node.index()].map_or("none".into(), |p| format!("record {p}"))
                ));
            }
            self.last_input[node.index()] = Some(e.index);
            self.inputs.set(e.index);
        }
        match r {
            Record::Deliver { from, send, .. } => {
                self.node("its sender", *from)?;
                if let Some(s) = send {
                    self.link("its send link", *s, "send", &self.sends)?;
                }
            }
            Record::Timer { set, .. } => {
                self.link("its timer link", *set, "timer-set", &self.timer_sets)?
            }
            Record::ServiceIn {
                cause: Some(cause), ..
            } => self.link("its service link", *cause, "service-out", &self.service_ops)?,
            // A window's resumed node opened its connections before the window begins.
            Record::ServiceOut { .. } => self.service_ops.set(e.index),
            Record::Drop { send, .. } | Record::Duplicate { send } => {
                self.link("its send link", *send, "send", &self.sends)?
            }
            Record::Violation { step, .. } => {
                self.link("its step link", *step, "input", &self.inputs)?
            }
            Record::Send { to, .. } => {
                self.node("its destination", *to)?;
                self.sends.set(e.index);
            }
            // A resumed node's pending timers were set before the trace begins: their
            // firings link to the resume.
            Record::TimerSet { .. } => self.timer_sets.set(e.index),
            Record::Resume { .. } => {
                self.timer_sets.set(e.index);
                self.service_ops.set(e.index);
            }
            Record::Fault(FaultRecord::Cut { links, .. }) => {
                for (a, b) in links {
                    self.node("a cut link's end", *a)?;
                    self.node("a cut link's end", *b)?;
                }
            }
            Record::Fault(FaultRecord::ClockJump { node, .. }) => self.node("its node", *node)?,
            _ => {}
        }
        Ok(())
    }
}
