//! Checking the determinism contract: the same scenario and seed give byte-identical traces.

use crate::model::Model;
use crate::scenario::Scenario;
use crate::sim::{RunReport, Simulation, TraceSink};
use crate::trace::{Event, Header, Trace};

/// Where two traces first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceDifference {
    Header {
        first: Box<Header>,
        second: Box<Header>,
    },
    /// The first differing record; `None` where one trace has ended.
    Event {
        index: u64,
        first: Option<Box<Event>>,
        second: Option<Box<Event>>,
    },
    /// The records decode alike but the bytes differ at `offset`.
    Bytes { offset: u64 },
    /// A trace does not decode.
    Unreadable(String),
}

impl std::fmt::Display for TraceDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceDifference::Header { first, second } => {
                write!(
                    f,
                    "headers differ:\n  first:  {first:?}\n  second: {second:?}"
                )
            }
            TraceDifference::Event {
                index,
                first,
                second,
            } => {
                let show = |e: &Option<Box<Event>>| {
                    e.as_ref()
                        .map_or("(trace ended)".into(), |e| format!("{e:?}"))
                };
                write!(
                    f,
                    "first difference at event {index}:\n  first run:  {}\n  second run: {}",
                    show(first),
                    show(second)
                )
            }
            TraceDifference::Bytes { offset } => write!(f, "traces differ at byte offset {offset}"),
            TraceDifference::Unreadable(e) => write!(f, "trace unreadable: {e}"),
        }
    }
}

/// Compares two encoded traces; `None` when they are byte-identical.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<TraceDifference> {
    if a == b {
        return None;
    }
    let load = |bytes: &[u8], name: &str| Trace::from_bytes(bytes, name).map_err(|e| e.to_string());
    let (ta, tb) = match (load(a, "first run"), load(b, "second run")) {
        (Ok(ta), Ok(tb)) => (ta, tb),
        (Err(e), _) | (_, Err(e)) => return Some(TraceDifference::Unreadable(e)),
    };
    if ta.header != tb.header {
        return Some(TraceDifference::Header {
            first: Box::new(ta.header),
            second: Box::new(tb.header),
        });
    }
    let longest = ta.events.len().max(tb.events.len());
    for i in 0..longest {
        let (ea, eb) = (ta.events.get(i), tb.events.get(i));
        if ea != eb {
            return Some(TraceDifference::Event {
                index: i as u64,
                first: ea.cloned().map(Box::new),
                second: eb.cloned().map(Box::new),
            });
        }
    }
    let offset = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some(TraceDifference::Bytes {
        offset: offset as u64,
    })
}

/// Runs the scenario twice in memory and compares the traces. Returns the first run's
/// report and the difference, if any.
pub fn check_determinism<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
) -> (RunReport, Option<TraceDifference>) {
    let first = Simulation::<M>::new(scenario, seed, TraceSink::Memory).run();
    let second = Simulation::<M>::new(scenario, seed, TraceSink::Memory).run();
    let diff = match (&first.trace, &second.trace) {
        (Some(a), Some(b)) => first_difference(a, b),
        _ => Some(TraceDifference::Unreadable("a run kept no trace".into())),
    };
    (first, diff)
}
