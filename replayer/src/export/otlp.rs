//! OpenTelemetry OTLP/JSON (what an OTLP/HTTP collector accepts as `application/json`): one
//! trace per request id and per piece of background work ([`TraceKey`]), one span per
//! handled event of it, its parent the span of the event that sent the message (or set the
//! timer) it handled. One `resourceSpans` entry per node (`service.name` = the node): spans
//! are held per node and written together — at the end, or when the held spans pass
//! [`HELD_BYTES_MAX`], when every node's are written and a long trace's nodes appear again
//! (OTLP allows that; collectors also refuse requests much larger than that). Each service
//! the nodes call is a resource of its own, holding a client span per call — from the
//! node's write to the service's answer, under the writing step's span.

use super::walk::{Cause, StepInfo, TraceKey, Visitor};
use super::{
    call_text, http_attributes, json_str, label, node_name, notes, span_id, trace_id, wanted,
    AttrValue, CallText, Options,
};
use retrace_sim::trace::{Event, Header};
use std::io::{self, Write};

/// What the spans held for all nodes may take before they are written.
pub const HELD_BYTES_MAX: usize = 8 << 20;

pub struct Otlp<'a> {
    out: &'a mut dyn Write,
    options: &'a Options<'a>,
    /// Per node, then per service: its resource's attributes, made once.
    resources: Vec<String>,
    nodes: usize,
    /// The services with a resource (after the nodes'), in order.
    services: Vec<String>,
    /// Per node: spans not yet written, as comma-separated JSON objects.
    held: Vec<Vec<u8>>,
    held_bytes: usize,
    first: bool,
    spans: u64,
}

impl<'a> Otlp<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        write!(out, "{{\"resourceSpans\":[")?;
        let nodes = header.nodes.len().max(1);
        let resources = (0..nodes)
            .map(|k| {
                let node = retrace_sim::NodeId(k as u32);
                [
                    attr_str("service.name", &node_name(header, node)),
                    attr_str("retrace.model", &header.model),
                    attr_str("retrace.scenario", &header.scenario_name),
                    // Where the times came from: the trace's own plus this.
                    attr_int("retrace.base_time_unix_nano", options.base_time_ns),
                ]
                .join(",")
            })
            .collect();
        Ok(Otlp {
            out,
            options,
            resources,
            nodes,
            services: Vec::new(),
            held: vec![Vec::new(); nodes],
            held_bytes: 0,
            first: true,
            spans: 0,
        })
    }

    /// Writes every node's held spans, one `resourceSpans` entry per node.
    fn write_held(&mut self) -> io::Result<()> {
        for (k, spans) in self.held.iter_mut().enumerate() {
            if spans.is_empty() {
                continue;
            }
            write!(
                self.out,
                "{}\n{{\"resource\":{{\"attributes\":[{}]}},\"scopeSpans\":[{{\"scope\":{{\"name\":\"retrace\"}},\"spans\":[",
                if self.first { "" } else { "," },
                self.resources[k]
            )?;
            self.out.write_all(spans)?;
            write!(self.out, "]}}]}}")?;
            self.first = false;
            spans.clear();
        }
        self.held_bytes = 0;
        Ok(())
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

/// At most this many service resources (a scenario declares at most 64 services).
const SERVICE_RESOURCES_MAX: usize = 64;

impl Otlp<'_> {
    /// Where service `name`'s spans are held, its resource made the first time.
    fn service_slot(&mut self, name: &str) -> Option<usize> {
        if let Some(at) = self.services.iter().position(|s| s == name) {
            return Some(self.nodes + at);
        }
        if self.services.len() >= SERVICE_RESOURCES_MAX {
            return None;
        }
        self.services.push(name.to_string());
        self.resources.push(
            [
                attr_str("service.name", name),
                attr_str("retrace.kind", "black-box service"),
                attr_int("retrace.base_time_unix_nano", self.options.base_time_ns),
            ]
            .join(","),
        );
        self.held.push(Vec::new());
        Some(self.resources.len() - 1)
    }

    /// The service call the step's input completes, as a client span in each of the
    /// writing step's exported traces.
    fn service_span(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        let Some(call) = s.service_call else {
            return Ok(());
        };
        let CallText {
            service,
            written: shown,
            answer,
        } = call_text(call, &s.input.record, self.options);
        let Some(slot) = self.service_slot(service) else {
            return Ok(());
        };
        let start = self.options.base_time_ns.saturating_add(call.start_ns);
        let end = self.options.base_time_ns.saturating_add(s.input.time_ns);
        let attrs = [
            attr_str("peer.service", service),
            attr_str("db.query.text", &shown),
            attr_str("retrace.service.answer", &answer),
            attr_str("retrace.conn", &call.conn.to_string()),
            attr_int("retrace.event", call.write),
            attr_int("retrace.answer_event", s.input.index),
        ]
        .join(",");
        let name: String = format!("{service} {shown}").chars().take(80).collect();
        for &key in &call.traces {
            if !wanted(self.options, key) {
                continue;
            }
            let buf = &mut self.held[slot];
            let before = buf.len();
            if !buf.is_empty() {
                buf.push(b',');
            }
            write!(
                buf,
                "{{\"traceId\":\"{}\",\"spanId\":\"{}\",\"parentSpanId\":\"{}\",\"name\":{},\"kind\":3,\"startTimeUnixNano\":\"{start}\",\"endTimeUnixNano\":\"{end}\",\"attributes\":[{attrs}]}}",
                trace_id(key),
                span_id(call.write),
                span_id(call.writer),
                json_str(&name),
            )?;
            self.held_bytes += buf.len() - before;
            self.spans += 1;
        }
        Ok(())
    }

    fn span(&mut self, s: &StepInfo<'_>, key: TraceKey, parent: Option<u64>) -> io::Result<()> {
        let parent = parent
            .map(|index| format!(",\"parentSpanId\":\"{}\"", span_id(index)))
            .unwrap_or_default();
        // A request's first event is where it arrives from its client: a server span.
        let kind = match (key, parent.is_empty()) {
            (TraceKey::Request(_), true) => 2,
            _ => 1,
        };
        let start = self.options.base_time_ns.saturating_add(s.input.time_ns);
        let mut attrs = vec![
            attr_int("retrace.event", s.input.index),
            attr_str("retrace.kind", s.input.record.kind()),
            attr_int("retrace.time_ns", s.input.time_ns),
            attr_int("retrace.queued_ns", s.queued_ns),
        ];
        if let TraceKey::Background(_) = key {
            attrs.push(attr_str("retrace.background", "true"));
        }
        if !s.answered.is_empty() {
            let answered: Vec<String> = s.answered.iter().map(|(r, _)| r.to_string()).collect();
            attrs.push(attr_str("retrace.answers", &answered.join(" ")));
        }
        for (key, value) in http_attributes(s.rest) {
            attrs.push(match value {
                AttrValue::Str(text) => attr_str(key, &text),
                AttrValue::Int(n) => attr_int(key, n),
            });
        }
        let events: Vec<String> = notes(s.rest)
            .map(|text| {
                format!(
                    "{{\"timeUnixNano\":\"{start}\",\"name\":{}}}",
                    json_str(text)
                )
            })
            .collect();
        let k = s.node.index().min(self.nodes - 1);
        let buf = &mut self.held[k];
        let before = buf.len();
        if !buf.is_empty() {
            buf.push(b',');
        }
        write!(
            buf,
            "{{\"traceId\":\"{}\",\"spanId\":\"{}\"{parent},\"name\":{},\"kind\":{kind},\"startTimeUnixNano\":\"{start}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[{}],\"events\":[{}]}}",
            trace_id(key),
            span_id(s.input.index),
            json_str(&label(s.input, self.options)),
            start.saturating_add(s.busy_ns),
            attrs.join(","),
            events.join(",")
        )?;
        self.held_bytes += buf.len() - before;
        self.spans += 1;
        if self.held_bytes > HELD_BYTES_MAX {
            self.write_held()?;
        }
        Ok(())
    }
}

impl Visitor for Otlp<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        for &key in s.traces {
            if wanted(self.options, key) {
                self.span(s, key, s.parent_index(key))?;
            }
        }
        self.service_span(s)?;
        if self.held_bytes > HELD_BYTES_MAX {
            self.write_held()?;
        }
        Ok(())
    }

    fn world(&mut self, _: &Event, _: Option<&Cause>) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.write_held()?;
        writeln!(self.out, "\n]}}")?;
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.spans
    }
}
