//! Exports of a trace to the formats people's tools open: Perfetto / Chrome trace events,
//! OpenTelemetry OTLP/JSON, Jaeger's JSON, ShiViz logs and Graphviz DOT.
//!
//! Each export is one pass of [`walk::walk`] over the records: the streaming formats write
//! as they go and hold only what is pending (steps in progress, messages in flight, timers
//! set); Jaeger's format groups spans by trace, so it holds the spans of the requests it
//! writes. Ids are derived from trace indices, so exports of one trace agree with each
//! other and with `retrace why`/`show`: a span id is the step's input index + 1, a trace id
//! the request id, a flow id the send's index.

mod dot;
mod jaeger;
mod otlp;
mod perfetto;
mod shiviz;
pub mod walk;

use retrace_sim::trace::{Event, Header, Record};
use retrace_sim::RequestId;
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

    /// Whether it needs a first pass over the trace ([`request_ends`]) to stream.
    pub fn two_passes(self) -> bool {
        matches!(self, Format::Jaeger)
    }
}

/// What to export.
pub struct Options<'a> {
    /// Only this request's events (all formats but Perfetto and ShiViz, which show the run).
    pub request: Option<RequestId>,
    /// A message's name from its payload (the model's enum variant), for labels.
    pub message_name: &'a dyn Fn(&[u8]) -> String,
    /// Each request's last event (see [`request_ends`]): lets Jaeger write each trace as
    /// soon as it is whole instead of holding every span to the end.
    pub request_ends: Option<&'a BTreeMap<RequestId, u64>>,
}

/// A first pass for Jaeger: the index of each request's last event.
pub fn request_ends(events: impl Iterator<Item = Event>) -> BTreeMap<RequestId, u64> {
    let mut ends = BTreeMap::new();
    for e in events {
        match &e.record {
            Record::Deliver { request_ids, .. } | Record::Timer { request_ids, .. } => {
                for r in request_ids {
                    ends.insert(*r, e.index);
                }
            }
            Record::External { request, .. } => {
                ends.insert(*request, e.index);
            }
            _ => {}
        }
    }
    ends
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

/// A trace id: `retrace` in ASCII, then the request id — never all zeros (invalid in W3C
/// trace context and OTLP), whatever the request id.
pub(crate) fn trace_id(r: RequestId) -> String {
    format!("7265747261636500{:016x}", r.0)
}

/// A short name for what a step handled: the message's variant, the timer, the boot.
pub(crate) fn label(input: &Event, options: &Options<'_>) -> String {
    match &input.record {
        Record::Deliver { payload, .. } | Record::External { payload, .. } => {
            (options.message_name)(payload)
        }
        Record::Timer { tag, .. } => format!("timer {tag}"),
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

/// The node's name from the header.
pub(crate) fn node_name(header: &Header, node: retrace_sim::NodeId) -> String {
    crate::describe::node_name(header, node)
}
