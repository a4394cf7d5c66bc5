//! The ShiViz log format: the parsing regex on the first line, a blank line, then two lines
//! per event — the host and its vector clock as JSON, then the event's text. Paste the file
//! into ShiViz (its first line goes in the "regular expression" box, or keep it: ShiViz's
//! examples carry it the same way).

use super::walk::{StepInfo, Visitor};
use super::{kind_and_label, node_name, Options};
use retrace_sim::trace::{Event, Header};
use std::io::{self, Write};

/// The regex ShiViz parses each event with.
pub const REGEX: &str = r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)";

pub struct Shiviz<'a> {
    out: &'a mut dyn Write,
    /// Host names as ShiViz needs them: without spaces, quoted for JSON once.
    hosts: Vec<String>,
    options: &'a Options<'a>,
}

impl<'a> Shiviz<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        writeln!(out, "{REGEX}\n")?;
        let hosts = (0..header.nodes.len())
            .map(|k| {
                node_name(header, retrace_sim::NodeId(k as u32)).replace(char::is_whitespace, "_")
            })
            .collect();
        Ok(Shiviz {
            out,
            hosts,
            options,
        })
    }
}

impl Visitor for Shiviz<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        let host = &self.hosts[s.node.index().min(self.hosts.len() - 1)];
        let mut clock = String::from("{");
        for (k, &n) in s.clock.iter().enumerate() {
            if n > 0 {
                if clock.len() > 1 {
                    clock.push_str(", ");
                }
                clock.push_str(&format!("\"{}\":{n}", self.hosts[k]));
            }
        }
        clock.push('}');
        let text = format!(
            "#{} {}",
            s.input.index,
            kind_and_label(s.input, self.options)
        );
        // One line per event: a newline inside would break the regex.
        writeln!(self.out, "{host} {clock}\n{}", text.replace('\n', " "))
    }

    fn world(&mut self, _: &Event) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
