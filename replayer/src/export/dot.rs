//! The happens-before graph in Graphviz DOT: one vertex per handled event, edges for program
//! order on each node and for messages (bold) and timers (dashed); dropped messages end in a
//! red "dropped" mark and the violation is a red vertex after the step it was found at.
//!
//! A whole run is too big to draw (the demo's 16 k events do not lay out in a minute), so
//! with a violation and [`Options::dot_depth`] the graph is its neighbourhood: the last
//! `depth` events of each node among those that happened before the violating step (its
//! vector clock, from [`Options::survey`], says which). With a request, only that request's
//! events. Each node's events share a colour.

use super::walk::{Cause, StepInfo, Visitor};
use super::{json_str, kind_and_label, node_name, Options};
use retrace_sim::trace::{Event, Header, Record};
use std::collections::BTreeSet;
use std::io::{self, Write};

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub struct Dot<'a> {
    out: &'a mut dyn Write,
    header: &'a Header,
    options: &'a Options<'a>,
    /// The violating step's vector clock and how many events of each node to draw before it.
    window: Option<(&'a [u32], u32)>,
    /// Per node: the last exported event, for program-order edges.
    last: Vec<Option<u64>>,
    /// Exported events, when some are left out (to know whether an edge's end was drawn).
    kept: BTreeSet<u64>,
    /// The last step walked, drawn or not: the one a violation was found after.
    previous: Option<u64>,
    vertices: u64,
}

impl<'a> Dot<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        writeln!(out, "digraph happens_before {{")?;
        writeln!(out, "  rankdir=TB;")?;
        writeln!(
            out,
            "  node [shape=box, fontname=\"monospace\", fontsize=10];"
        )?;
        let window = match (options.dot_depth, options.survey) {
            (Some(depth), Some(survey)) => survey
                .violation
                .as_ref()
                .map(|(_, clock)| (clock.as_slice(), depth)),
            _ => None,
        };
        Ok(Dot {
            out,
            header,
            options,
            window,
            last: vec![None; header.nodes.len().max(1)],
            kept: BTreeSet::new(),
            previous: None,
            vertices: 0,
        })
    }

    fn filtered(&self) -> bool {
        self.options.request.is_some() || self.window.is_some()
    }

    fn drawn(&self, index: u64) -> bool {
        !self.filtered() || self.kept.contains(&index)
    }

    fn wanted(&self, s: &StepInfo<'_>) -> bool {
        if let Some(r) = self.options.request {
            if !s.request_ids.contains(&r) {
                return false;
            }
        }
        match self.window {
            Some((violating, depth)) => {
                // Before the violating step (or it) on this node's own count, and among the
                // last `depth` of them.
                let k = s.node.index();
                let (own, bound) = (s.clock[k], violating.get(k).copied().unwrap_or(0));
                own <= bound && own + depth > bound
            }
            None => true,
        }
    }
}

impl Visitor for Dot<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        self.previous = Some(s.input.index);
        if !self.wanted(s) {
            return Ok(());
        }
        let i = s.input.index;
        let k = s.node.index().min(self.last.len() - 1);
        let text = format!(
            "#{i} {}\n{}",
            node_name(self.header, s.node),
            kind_and_label(s.input, self.options)
        );
        let crash = if matches!(s.input.record, Record::Crash { .. }) {
            ", style=filled, fillcolor=\"#dddddd\""
        } else {
            ""
        };
        writeln!(
            self.out,
            "  e{i} [label={}, color=\"{}\"{crash}];",
            json_str(&text),
            COLORS[k % COLORS.len()]
        )?;
        self.vertices += 1;
        if let Some(p) = self.last[k] {
            writeln!(self.out, "  e{p} -> e{i} [color=\"#999999\"];")?;
        }
        if let Some(c) = s.cause {
            if self.drawn(c.index) {
                let style = if c.by_message { "bold" } else { "dashed" };
                writeln!(self.out, "  e{} -> e{i} [style={style}];", c.index)?;
            }
        }
        self.last[k] = Some(i);
        if self.filtered() {
            self.kept.insert(i);
        }
        Ok(())
    }

    fn world(&mut self, e: &Event, sender: Option<&Cause>) -> io::Result<()> {
        match &e.record {
            Record::Drop { reason, .. } => {
                let Some(sender) = sender.filter(|c| self.drawn(c.index)) else {
                    return Ok(());
                };
                writeln!(
                    self.out,
                    "  x{} [label={}, shape=plaintext, fontcolor=red];",
                    e.index,
                    json_str(&format!("#{} dropped ({})", e.index, reason.as_str()))
                )?;
                writeln!(
                    self.out,
                    "  e{} -> x{} [color=red, style=bold];",
                    sender.index, e.index
                )?;
                self.vertices += 1;
            }
            Record::Violation {
                invariant, message, ..
            } => {
                let text = format!("#{} invariant broken: {invariant}\n{message}", e.index);
                writeln!(
                    self.out,
                    "  v{} [label={}, shape=box, style=\"filled,bold\", color=red, fillcolor=\"#ffe0e0\"];",
                    e.index,
                    json_str(&text)
                )?;
                if let Some(p) = self.previous.filter(|&p| self.drawn(p)) {
                    writeln!(self.out, "  e{p} -> v{} [color=red, style=bold];", e.index)?;
                }
                self.vertices += 1;
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        writeln!(self.out, "}}")?;
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.vertices
    }
}
