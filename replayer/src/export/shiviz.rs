//! The ShiViz log format: the parsing regex on the first line, a blank line, then two lines
//! per event — the host and its vector clock as JSON, then the event's text. Paste the file
//! into ShiViz (its first line goes in the "regular expression" box, or keep it: ShiViz's
//! examples carry it the same way).

use super::walk::{Cause, StepInfo, Visitor};
use super::{json_str, node_name, Options};
use retrace_sim::trace::Record;
use retrace_sim::trace::{Event, Header};
use std::io::{self, Write};

/// The regex ShiViz parses each event with.
pub const REGEX: &str = r"(?<host>\S*) (?<clock>{.*})\n(?<event>.*)";

pub struct Shiviz<'a> {
    out: &'a mut dyn Write,
    /// Host names as ShiViz needs them: without spaces.
    hosts: Vec<String>,
    /// The same, as JSON keys (`"name":`), made once.
    keys: Vec<String>,
    options: &'a Options<'a>,
    /// One event's text, reused.
    line: String,
    events: u64,
}

impl<'a> Shiviz<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        writeln!(out, "{REGEX}\n")?;
        let hosts: Vec<String> = (0..header.nodes.len())
            .map(|k| {
                node_name(header, retrace_sim::NodeId(k as u32)).replace(char::is_whitespace, "_")
            })
            .collect();
        let keys = hosts.iter().map(|h| format!("{}:", json_str(h))).collect();
        Ok(Shiviz {
            out,
            hosts,
            keys,
            options,
            line: String::new(),
            events: 0,
        })
    }
}

impl Visitor for Shiviz<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        use std::fmt::Write as _;
        let line = &mut self.line;
        line.clear();
        line.push_str(&self.hosts[s.node.index().min(self.hosts.len() - 1)]);
        line.push_str(" {");
        let mut first = true;
        for (k, &n) in s.clock.iter().enumerate() {
            if n > 0 {
                if !first {
                    line.push_str(", ");
                }
                first = false;
                line.push_str(&self.keys[k]);
                let _ = write!(line, "{n}");
            }
        }
        let _ = write!(line, "}}\n#{} ", s.input.index);
        // The message in full — variant and fields — as `show` prints it: ShiViz's search
        // and its event view are where people read them. One line per event: a newline
        // inside would break the regex.
        let text = match &s.input.record {
            Record::Deliver { payload, .. } | Record::External { payload, .. } => format!(
                "{} {}",
                s.input.record.kind(),
                (self.options.message_text)(payload)
            ),
            _ => super::kind_and_label(s.input, self.options),
        };
        if text.contains('\n') {
            line.push_str(&text.replace('\n', " "));
        } else {
            line.push_str(&text);
        }
        line.push('\n');
        self.events += 1;
        self.out.write_all(line.as_bytes())
    }

    fn world(&mut self, _: &Event, _: Option<&Cause>) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.events
    }
}
