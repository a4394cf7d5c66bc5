//! Jaeger's JSON, the format its UI's "JSON File" upload reads: `{"data":[trace...]}`, each
//! trace with its spans (`CHILD_OF` the span that caused them) and processes (one per
//! node). Jaeger wants each trace whole, so the spans are held until the end.

use super::walk::{StepInfo, Visitor};
use super::{json_str, label, span_id, trace_id, Options};
use retrace_sim::trace::{Event, Header};
use retrace_sim::RequestId;
use std::collections::BTreeMap;
use std::io::{self, Write};

pub struct Jaeger<'a> {
    out: &'a mut dyn Write,
    header: &'a Header,
    options: &'a Options<'a>,
    /// Per request: its spans, written as JSON objects.
    traces: BTreeMap<RequestId, Vec<String>>,
}

impl<'a> Jaeger<'a> {
    pub fn new(header: &'a Header, options: &'a Options<'a>, out: &'a mut dyn Write) -> Self {
        Jaeger {
            out,
            header,
            options,
            traces: BTreeMap::new(),
        }
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
        for &r in s.request_ids {
            if self.options.request.is_some_and(|only| only != r) {
                continue;
            }
            let tid = trace_id(r);
            let references = s
                .cause
                .filter(|c| c.request_ids.contains(&r))
                .map(|c| {
                    format!(
                        "{{\"refType\":\"CHILD_OF\",\"traceID\":\"{tid}\",\"spanID\":\"{}\"}}",
                        span_id(c.index)
                    )
                })
                .unwrap_or_default();
            let logs: Vec<String> = s
                .rest
                .iter()
                .filter_map(|e| match &e.record {
                    retrace_sim::trace::Record::Annotate { text }
                    | retrace_sim::trace::Record::Log { text, .. } => Some(format!(
                        "{{\"timestamp\":{},\"fields\":[{}]}}",
                        s.input.time_ns / 1000,
                        tag("event", text)
                    )),
                    _ => None,
                })
                .collect();
            // Jaeger counts in microseconds; the exact nanoseconds ride along as tags.
            let span = format!(
                "{{\"traceID\":\"{tid}\",\"spanID\":\"{}\",\"operationName\":{},\"references\":[{references}],\"startTime\":{},\"duration\":{},\"tags\":[{},{},{},{}],\"logs\":[{}],\"processID\":\"p{}\",\"warnings\":null,\"flags\":1}}",
                span_id(s.input.index),
                json_str(&label(s.input, self.options)),
                s.input.time_ns / 1000,
                s.busy_ns / 1000,
                tag("retrace.event", &s.input.index.to_string()),
                tag("retrace.kind", s.input.record.kind()),
                tag("retrace.start_ns", &s.input.time_ns.to_string()),
                tag("retrace.service_ns", &s.busy_ns.to_string()),
                logs.join(","),
                s.node.index()
            );
            self.traces.entry(r).or_default().push(span);
        }
        Ok(())
    }

    fn world(&mut self, _: &Event) -> io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let processes: Vec<String> = self
            .header
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| {
                format!(
                    "\"p{k}\":{{\"serviceName\":{},\"tags\":[{}]}}",
                    json_str(&n.name),
                    tag("role", &n.role)
                )
            })
            .collect();
        let processes = processes.join(",");
        write!(self.out, "{{\"data\":[")?;
        for (k, (r, spans)) in std::mem::take(&mut self.traces).into_iter().enumerate() {
            write!(
                self.out,
                "{}\n{{\"traceID\":\"{}\",\"spans\":[{}],\"processes\":{{{processes}}},\"warnings\":null}}",
                if k == 0 { "" } else { "," },
                trace_id(r),
                spans.join(",")
            )?;
        }
        writeln!(self.out, "\n]}}")?;
        self.out.flush()
    }
}
