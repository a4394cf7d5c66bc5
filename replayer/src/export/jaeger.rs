//! Jaeger's JSON, the format its UI's "JSON File" upload reads: `{"data":[trace...]}`, each
//! trace (a request, or a piece of background work: [`TraceKey`]) with its spans (`CHILD_OF`
//! the span that caused them) and processes (one per node). Jaeger wants each trace whole: a
//! trace's spans are held until its last event (when [`Options::survey`] says where that is,
//! from a first pass over the file), or to the end of the export otherwise.
//!
//! What Jaeger's UI needs, learnt the hard way: a span whose `startTime` is 0 is dropped (so
//! times carry the base time, and are never below 1 µs), and numbers above 2^53 lose digits
//! in JavaScript (so nanosecond tags are strings).

use super::walk::{Cause, StepInfo, TraceKey, Visitor};
use super::{
    http_attributes, json_str, label, notes, span_id, trace_id, wanted, AttrValue, Options,
};
use retrace_sim::trace::{Event, Header};
use std::collections::BTreeMap;
use std::io::{self, Write};

pub struct Jaeger<'a> {
    out: &'a mut dyn Write,
    options: &'a Options<'a>,
    /// Per request: its spans, written as comma-separated JSON objects.
    traces: BTreeMap<TraceKey, Vec<u8>>,
    /// The `processes` object every trace repeats.
    processes: String,
    written: usize,
    spans: u64,
}

impl<'a> Jaeger<'a> {
    pub fn new(
        header: &'a Header,
        options: &'a Options<'a>,
        out: &'a mut dyn Write,
    ) -> io::Result<Self> {
        let processes: Vec<String> = header
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| {
                format!(
                    "\"p{k}\":{{\"serviceName\":{},\"tags\":[{},{}]}}",
                    json_str(&n.name),
                    tag("role", &n.role),
                    tag(
                        "retrace.base_time_unix_nano",
                        &options.base_time_ns.to_string()
                    )
                )
            })
            .collect();
        write!(out, "{{\"data\":[")?;
        Ok(Jaeger {
            out,
            options,
            traces: BTreeMap::new(),
            processes: processes.join(","),
            written: 0,
            spans: 0,
        })
    }

    fn write_trace(&mut self, r: TraceKey, spans: &[u8]) -> io::Result<()> {
        write!(
            self.out,
            "{}\n{{\"traceID\":\"{}\",\"spans\":[",
            if self.written == 0 { "" } else { "," },
            trace_id(r)
        )?;
        self.out.write_all(spans)?;
        write!(
            self.out,
            "],\"processes\":{{{}}},\"warnings\":null}}",
            self.processes
        )?;
        self.written += 1;
        Ok(())
    }
}

fn tag(key: &str, value: &str) -> String {
    format!(
        "{{\"key\":\"{key}\",\"type\":\"string\",\"value\":{}}}",
        json_str(value)
    )
}

impl Visitor for Jaeger<'_> {
    fn step(&mut self, s: &StepInfo<'_>) -> io::Result<()> {
        for &r in s.traces {
            if !wanted(self.options, r) {
                continue;
            }
            let tid = trace_id(r);
            let references = s
                .parent_index(r)
                .map(|index| {
                    format!(
                        "{{\"refType\":\"CHILD_OF\",\"traceID\":\"{tid}\",\"spanID\":\"{}\"}}",
                        span_id(index)
                    )
                })
                .unwrap_or_default();
            let start_us =
                (self.options.base_time_ns.saturating_add(s.input.time_ns) / 1000).max(1);
            let logs: Vec<String> = notes(s.rest)
                .map(|text| {
                    format!(
                        "{{\"timestamp\":{},\"fields\":[{}]}}",
                        start_us,
                        tag("event", text)
                    )
                })
                .collect();
            // Jaeger counts in microseconds; the exact nanoseconds ride along as tags, as
            // strings (numbers and a kind word: nothing to escape).
            let buf = self.traces.entry(r).or_default();
            if !buf.is_empty() {
                buf.push(b',');
            }
            let (index, start_ns, busy_ns) = (s.input.index, s.input.time_ns, s.busy_ns);
            let http: String = http_attributes(s.rest)
                .into_iter()
                .map(|(key, value)| match value {
                    AttrValue::Str(text) => format!(",{}", tag(key, &text)),
                    AttrValue::Int(n) => {
                        format!(",{{\"key\":\"{key}\",\"type\":\"int64\",\"value\":{n}}}")
                    }
                })
                .collect();
            write!(
                buf,
                "{{\"traceID\":\"{tid}\",\"spanID\":\"{}\",\"operationName\":{},\"references\":[{references}],\"startTime\":{},\"duration\":{},\"tags\":[\
                 {{\"key\":\"retrace.event\",\"type\":\"int64\",\"value\":{index}}},\
                 {{\"key\":\"retrace.kind\",\"type\":\"string\",\"value\":\"{}\"}},\
                 {{\"key\":\"retrace.time_ns\",\"type\":\"string\",\"value\":\"{start_ns}\"}},\
                 {{\"key\":\"retrace.service_ns\",\"type\":\"string\",\"value\":\"{busy_ns}\"}}{http}],\
                 \"logs\":[{}],\"processID\":\"p{}\",\"warnings\":null,\"flags\":1}}",
                span_id(index),
                json_str(&label(s.input, self.options)),
                start_us,
                busy_ns / 1000,
                s.input.record.kind(),
                logs.join(","),
                s.node.index()
            )?;
            self.spans += 1;
            // The trace's last event: it is whole, write it and let it go.
            let last = self
                .options
                .survey
                .is_some_and(|survey| survey.ends.get(&r) == Some(&s.input.index));
            if last {
                if let Some(spans) = self.traces.remove(&r) {
                    self.write_trace(r, &spans)?;
                }
            }
        }
        Ok(())
    }

    fn world(&mut self, _: &Event, _: Option<&Cause>) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        for (r, spans) in std::mem::take(&mut self.traces) {
            self.write_trace(r, &spans)?;
        }
        writeln!(self.out, "\n]}}")?;
        self.out.flush()
    }

    fn written(&self) -> u64 {
        self.spans
    }
}
