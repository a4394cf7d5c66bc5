//! OpenTelemetry OTLP/JSON (what an OTLP/HTTP collector accepts as `application/json`): one
//! trace per request id, one span per handled event of that request, its parent the span of
//! the event that sent the message (or set the timer) it handled, the node as the resource's
//! `service.name`. Spans are written as they come, each in its own `resourceSpans` entry.

use super::walk::{StepInfo, Visitor};
use super::{json_str, label, node_name, notes, span_id, trace_id, Options};
use retrace_sim::trace::{Event, Header};
use std::io::{self, Write};

pub struct Otlp<'a> {
    out: &'a mut dyn Write,
    header: &'a Header,
    options: &'a Options<'a>,
    first: bool,
}

impl<'a> Otlp<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        write!(out, "{{\"resourceSpans\":[")?;
        Ok(Otlp {
            out,
            header,
            options,
            first: true,
        })
    }
}

fn attr_str(key: &str, value: &str) -> String {
    format!(
        "{{\"key\":\"{key}\",\"value\":{{\"stringValue\":{}}}}}",
        json_str(value)
    )
}

fn attr_int(key: &str, value: u64) -> String {
    format!("{{\"key\":\"{key}\",\"value\":{{\"intValue\":\"{value}\"}}}}")
}

impl Visitor for Otlp<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        let node = node_name(self.header, s.node);
        for &r in s.request_ids {
            if self.options.request.is_some_and(|only| only != r) {
                continue;
            }
            let parent = s
                .cause
                .filter(|c| c.request_ids.contains(&r))
                .map(|c| format!(",\"parentSpanId\":\"{}\"", span_id(c.index)))
                .unwrap_or_default();
            // A request's first event is where it arrives from its client: a server span.
            let kind = if parent.is_empty() { 2 } else { 1 };
            let start = s.input.time_ns;
            let attrs = [
                attr_int("retrace.event", s.input.index),
                attr_str("retrace.kind", s.input.record.kind()),
                attr_int("retrace.queued_ns", s.queued_ns),
            ];
            let events: Vec<String> = notes(s.rest)
                .map(|text| {
                    format!(
                        "{{\"timeUnixNano\":\"{start}\",\"name\":{}}}",
                        json_str(text)
                    )
                })
                .collect();
            write!(
                self.out,
                "{}\n{{\"resource\":{{\"attributes\":[{}]}},\"scopeSpans\":[{{\"scope\":{{\"name\":\"retrace\"}},\"spans\":[{{\"traceId\":\"{}\",\"spanId\":\"{}\"{parent},\"name\":{},\"kind\":{kind},\"startTimeUnixNano\":\"{start}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[{}],\"events\":[{}]}}]}}]}}",
                if self.first { "" } else { "," },
                attr_str("service.name", &node),
                trace_id(r),
                span_id(s.input.index),
                json_str(&label(s.input, self.options)),
                start + s.busy_ns,
                attrs.join(","),
                events.join(",")
            )?;
            self.first = false;
        }
        Ok(())
    }

    fn world(&mut self, _: &Event) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        writeln!(self.out, "\n]}}")?;
        self.out.flush()
    }
}
