//! The happens-before graph in Graphviz DOT: one vertex per handled event, edges for program
//! order on each node and for messages (bold) and timers (dashed); with a request, only that
//! request's events. Each node's events share a colour.

use super::walk::{StepInfo, Visitor};
use super::{json_str, kind_and_label, node_name, Options};
use retrace_sim::trace::{Event, Header};
use std::io::{self, Write};

const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub struct Dot<'a> {
    out: &'a mut dyn Write,
    header: &'a Header,
    options: &'a Options<'a>,
    /// Per node: the last exported event, for program-order edges.
    last: Vec<Option<u64>>,
    /// Exported events (only needed to know whether a cause was exported when filtering).
    kept: std::collections::BTreeSet<u64>,
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
        Ok(Dot {
            out,
            header,
            options,
            last: vec![None; header.nodes.len().max(1)],
            kept: Default::default(),
        })
    }
}

impl Visitor for Dot<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        if let Some(r) = self.options.request {
            if !s.request_ids.contains(&r) {
                return Ok(());
            }
        }
        let i = s.input.index;
        let k = s.node.index().min(self.last.len() - 1);
        let text = format!(
            "#{i} {}\n{}",
            node_name(self.header, s.node),
            kind_and_label(s.input, self.options)
        );
        writeln!(
            self.out,
            "  e{i} [label={}, color=\"{}\"];",
            json_str(&text),
            COLORS[k % COLORS.len()]
        )?;
        if let Some(p) = self.last[k] {
            writeln!(self.out, "  e{p} -> e{i} [color=\"#999999\"];")?;
        }
        if let Some(c) = s.cause {
            // Without a filter every cause was exported; with one, only kept causes are.
            if self.options.request.is_none() || self.kept.contains(&c.index) {
                let style = if c.by_message { "bold" } else { "dashed" };
                writeln!(self.out, "  e{} -> e{i} [style={style}];", c.index)?;
            }
        }
        self.last[k] = Some(i);
        if self.options.request.is_some() {
            self.kept.insert(i);
        }
        Ok(())
    }

    fn world(&mut self, _: &Event) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        writeln!(self.out, "}}")?;
        self.out.flush()
    }
}
