//! Exports of a trace to the formats people's tools open: Perfetto / Chrome trace events,
//! OpenTelemetry OTLP/JSON, Jaeger's JSON, ShiViz logs and Graphviz DOT.
//!
//! Each export is one pass of [`walk::walk`] over the records: the streaming formats write
//! as they go and hold only what is pending (steps in progress, messages in flight, timers
//! set); Jaeger's format groups spans by trace, so it holds the spans of the requests it
//! writes. Ids are derived from trace indices, so exports of one trace agree with each
//! other and with `retrace why`/`show`: a span id is the step's input index + 1, a trace id
//! the request id (or, for background work, the index of the step that started it), a flow
//! id the delivery's index.

mod dot;
mod jaeger;
mod otlp;
mod perfetto;
mod shiviz;
pub mod walk;

use retrace_sim::trace::{Event, Header, Record};
use retrace_sim::{RequestId, ServiceEvent};
use std::collections::BTreeMap;
use std::io::{self, Write};

/// The formats `retrace export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Perfetto,
    Otlp,
    Jaeger,
    Shiviz,
    Dot,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Perfetto,
        Format::Otlp,
        Format::Jaeger,
        Format::Shiviz,
        Format::Dot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Perfetto => "perfetto",
            Format::Otlp => "otlp",
            Format::Jaeger => "jaeger",
            Format::Shiviz => "shiviz",
            Format::Dot => "dot",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == text)
    }

    /// Whether it needs a first pass over the trace ([`survey`]).
    pub fn two_passes(self) -> bool {
        matches!(self, Format::Jaeger | Format::Dot)
    }
}

/// What to export.
pub struct Options<'a> {
    /// Only this request's events (all formats but Perfetto and ShiViz, which show the run).
    pub request: Option<RequestId>,
    /// A message's name from its payload (the model's enum variant), for labels.
    pub message_name: &'a dyn Fn(&[u8]) -> String,
    /// A message decoded in full (variant and fields), for ShiViz's event text.
    pub message_text: &'a dyn Fn(&[u8]) -> String,
    /// A timer's value from its tag (`Node::Timer`), for labels.
    pub timer_name: &'a dyn Fn(&[u8]) -> String,
    /// Bytes to or from a service, decoded where the model knows the protocol.
    pub service_bytes: &'a dyn Fn(&[u8]) -> String,
    /// What a first pass over the trace found (see [`survey`]): lets Jaeger write each
    /// trace as soon as it is whole, and `dot` draw the violation's neighbourhood.
    pub survey: Option<&'a Survey>,
    /// Added to every time in OTLP and Jaeger, so a simulated run (whose clock starts at
    /// zero) lands where a trace viewer's default search looks. Zero for recorded traces,
    /// whose times are already wall-clock nanoseconds since the Unix epoch.
    pub base_time_ns: u64,
    /// `dot`: how many events of each node before the violation to draw; `None` draws the
    /// whole run (also the default when the run has no violation).
    pub dot_depth: Option<u32>,
}

/// What a first pass over a trace finds for the exports that need to know ahead.
#[derive(Clone, Debug, Default)]
pub struct Survey {
    /// Each exported trace's last event (a request's, or a background trace's).
    pub ends: BTreeMap<walk::TraceKey, u64>,
    /// The first violation: the step it was found after, and that step's vector clock.
    pub violation: Option<(u64, Vec<u32>)>,
    pub steps: u64,
}

/// The first pass: walks the trace once, holding what [`walk::walk`] holds plus one entry
/// per exported trace.
pub fn survey(header: &Header, events: impl Iterator<Item = Event>) -> io::Result<Survey> {
    struct Surveyor {
        survey: Survey,
        last_step: Option<(u64, Vec<u32>)>,
    }
    impl walk::Visitor for Surveyor {
        fn step(&mut self, s: &walk::StepInfo<'_>) -> io::Result<()> {
            for &t in s.traces {
                self.survey.ends.insert(t, s.input.index);
            }
            self.last_step = Some((s.input.index, s.clock.to_vec()));
            Ok(())
        }
        fn world(&mut self, e: &Event, _: Option<&walk::Cause>) -> io::Result<()> {
            if matches!(e.record, Record::Violation { .. }) && self.survey.violation.is_none() {
                self.survey.violation = self.last_step.clone();
            }
            Ok(())
        }
        fn finish(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn written(&self) -> u64 {
            0
        }
    }
    let mut s = Surveyor {
        survey: Survey::default(),
        last_step: None,
    };
    let walked = walk::walk(header.nodes.len(), events, &mut s)?;
    s.survey.steps = walked.steps;
    Ok(s.survey)
}

/// Writes `events` (a trace's records in order, read from `header`'s trace) as `format`.
pub fn export(
    header: &Header,
    events: impl Iterator<Item = Event>,
    format: Format,
    options: &Options<'_>,
    out: &mut dyn Write,
) -> io::Result<walk::Walked> {
    let nodes = header.nodes.len();
    match format {
        Format::Perfetto => walk::walk(
            nodes,
            events,
            &mut perfetto::Perfetto::new(header, options, out)?,
        ),
        Format::Otlp => walk::walk(nodes, events, &mut otlp::Otlp::new(header, options, out)?),
        Format::Jaeger => walk::walk(
            nodes,
            events,
            &mut jaeger::Jaeger::new(header, options, out)?,
        ),
        Format::Shiviz => walk::walk(
            nodes,
            events,
            &mut shiviz::Shiviz::new(header, options, out)?,
        ),
        Format::Dot => walk::walk(nodes, events, &mut dot::Dot::new(header, options, out)?),
    }
}

/// A JSON string literal.
pub(crate) fn json_str(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// Nanoseconds as microseconds with three decimals: exact, as Chrome trace events want.
pub(crate) fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// A span id: the step's input index + 1 (zero is not a valid span id).
pub(crate) fn span_id(index: u64) -> String {
    format!("{:016x}", index + 1)
}

/// A trace id: `retrace` in ASCII, a zero byte and the request id, or a one byte and the
/// index of the step that started background work — never all zeros (invalid in W3C trace
/// context and OTLP), whatever the request id.
pub(crate) fn trace_id(key: walk::TraceKey) -> String {
    match key {
        walk::TraceKey::Request(r) => format!("7265747261636500{:016x}", r.0),
        walk::TraceKey::Background(index) => format!("7265747261636501{index:016x}"),
    }
}

/// Whether `key` is exported under `options` (a `--request` keeps that request's trace).
pub(crate) fn wanted(options: &Options<'_>, key: walk::TraceKey) -> bool {
    match options.request {
        Some(only) => key == walk::TraceKey::Request(only),
        None => true,
    }
}

/// A short name for what a step handled: the message's variant, the timer, the boot.
pub(crate) fn label(input: &Event, options: &Options<'_>) -> String {
    match &input.record {
        Record::Deliver { payload, .. } | Record::External { payload, .. } => {
            (options.message_name)(payload)
        }
        Record::Timer { tag, .. } => format!("timer {}", (options.timer_name)(tag.as_bytes())),
        other => other.kind().to_string(),
    }
}

/// `kind label`, or just the kind when the label says nothing more (a start, a crash).
pub(crate) fn kind_and_label(input: &Event, options: &Options<'_>) -> String {
    let l = label(input, options);
    if l == input.record.kind() {
        l
    } else {
        format!("{} {l}", input.record.kind())
    }
}

/// The free text a step carries: its annotations and `tracing` lines.
pub(crate) fn notes(rest: &[Event]) -> impl Iterator<Item = &str> {
    rest.iter().filter_map(|e| match &e.record {
        Record::Annotate { text } | Record::Log { text, .. } => Some(text.as_str()),
        _ => None,
    })
}

/// An exported attribute's value.
pub(crate) enum AttrValue {
    Str(String),
    Int(u64),
}

/// What a step's HTTP records say, as OpenTelemetry's semantic conventions name it: the
/// request that arrived (on the step that started its request) and the response that
/// answered it (on the step that answered).
pub(crate) fn http_attributes(rest: &[Event]) -> Vec<(&'static str, AttrValue)> {
    let mut attrs = Vec::new();
    for e in rest {
        match &e.record {
            Record::HttpRequest { http, .. } => {
                attrs.push(("http.request.method", AttrValue::Str(http.method.clone())));
                attrs.push(("url.path", AttrValue::Str(http.path().to_string())));
                if let Some((_, query)) = http.target.split_once('?') {
                    attrs.push(("url.query", AttrValue::Str(query.to_string())));
                }
                attrs.push((
                    "http.request.body.size",
                    AttrValue::Int(http.body.len() as u64),
                ));
                attrs.push((
                    "retrace.http.request.body",
                    AttrValue::Str(retrace_sim::http::show_bytes(&http.body, 256)),
                ));
            }
            Record::HttpResponse { http, .. } => {
                attrs.push((
                    "http.response.status_code",
                    AttrValue::Int(u64::from(http.status)),
                ));
                attrs.push((
                    "http.response.body.size",
                    AttrValue::Int(http.body.len() as u64),
                ));
                attrs.push((
                    "retrace.http.response.body",
                    AttrValue::Str(retrace_sim::http::show_bytes(&http.body, 256)),
                ));
            }
            _ => {}
        }
    }
    attrs
}

/// The node's name from the header.
/// A service call as the exports name it: its service (`service` when the connect is not in
/// the trace), what was written and what came back, the bytes as the model shows them.
pub(crate) struct CallText<'a> {
    pub service: &'a str,
    pub written: String,
    pub answer: String,
}

pub(crate) fn call_text<'a>(
    call: &'a walk::ServiceCall,
    answer: &Record,
    options: &Options<'_>,
) -> CallText<'a> {
    let answer = match answer {
        Record::ServiceIn {
            event: ServiceEvent::Data { bytes },
            ..
        } => (options.service_bytes)(bytes),
        Record::ServiceIn {
            event: ServiceEvent::Closed { reason },
            ..
        } => format!("closed: {reason}"),
        Record::ServiceIn { event, .. } => event.kind().to_string(),
        other => other.kind().to_string(),
    };
    CallText {
        service: if call.service.is_empty() {
            "service"
        } else {
            &call.service
        },
        written: (options.service_bytes)(&call.bytes),
        answer,
    }
}

pub(crate) fn node_name(header: &Header, node: retrace_sim::NodeId) -> String {
    crate::describe::node_name(header, node)
}
