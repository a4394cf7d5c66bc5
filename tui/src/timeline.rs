//! What the TUI shows of a trace, precomputed once when it opens: the rows of the event
//! list (inputs and world events; a step's outputs are shown in its detail), each node's
//! up/down history, and an index of what is pending at any moment (messages in flight and
//! timers set), so that none of it is recomputed per keypress.

use retrace_sim::trace::{Event, Record};
use retrace_sim::{ConnId, NodeId, ServiceOp, TimerId};

/// At most this many service lanes (a scenario declares at most 64 services).
const SERVICE_LANES_MAX: usize = 64;
use std::collections::BTreeMap;

/// Records per bucket of the pending-work index.
const BUCKET: usize = 4096;

/// Something pending over a span of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// The message of the `Send` at this index, not yet delivered or dropped.
    Message { send: usize },
    /// Timer `timer`, set at this index (or pending at a node's resume there), not yet fired
    /// or cancelled; `end` is the record that fires, cancels or drops it (the trace's
    /// length if none does).
    Timer {
        set: usize,
        timer: TimerId,
        end: usize,
    },
}

impl Span {
    /// What is pending, knowing now where it ends.
    fn pending(&self) -> Pending {
        match self.what {
            Pending::Timer { set, timer, .. } => Pending::Timer {
                set,
                timer,
                end: self.end,
            },
            message => message,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Span {
    /// Pending after record `start` and before record `end`.
    start: usize,
    end: usize,
    what: Pending,
}

pub struct Timeline {
    /// Record index of each row.
    pub rows: Vec<usize>,
    /// Per node: the rows where it went up (true) or down (false), in order.
    lifetimes: Vec<Vec<(usize, bool)>>,
    spans: Vec<Span>,
    /// Per bucket of records: the spans that overlap it.
    buckets: Vec<Vec<u32>>,
    /// Time of the first record: the list shows times from here.
    pub base_ns: u64,
    /// The simulator's record of a broken invariant: the step's input index and the name.
    pub recorded_violation: Option<(usize, String)>,
    /// The services the nodes call, each a lane after the nodes': those the scenario
    /// declares, then any other a connection names.
    pub services: Vec<String>,
    /// Each service connection's service (a position in `services`), from its connect.
    pub conn_service: BTreeMap<ConnId, usize>,
}

/// Whether a record gets its own row.
pub fn is_row(record: &Record) -> bool {
    record.input_node().is_some()
        || matches!(
            record,
            Record::Fault(_)
                | Record::Wire { .. }
                | Record::Drop { .. }
                | Record::Duplicate { .. }
                | Record::Violation { .. }
                | Record::End { .. }
        )
}

impl Timeline {
    /// The time of a row's event, never earlier than the row before (a recording's merged
    /// wall clocks may step back between nodes; a time axis must not).
    pub fn row_time_ns(&self, events: &[Event], row: usize) -> u64 {
        // Looking back a bounded distance keeps this cheap; clocks step back by little.
        let lo = row.saturating_sub(64);
        (lo..=row)
            .map(|r| events[self.rows[r]].time_ns)
            .max()
            .unwrap_or(0)
    }

    /// The median time between consecutive rows that are not simultaneous (sampled: at
    /// most 65,536 gaps), for the time axis's first scale.
    pub fn median_gap_ns(&self, events: &[Event]) -> u64 {
        let n = self.rows.len();
        let stride = (n / 65_536).max(1);
        let mut gaps: Vec<u64> = (1..n)
            .step_by(stride)
            .map(|r| {
                events[self.rows[r]]
                    .time_ns
                    .saturating_sub(events[self.rows[r - 1]].time_ns)
            })
            .filter(|&g| g > 0)
            .collect();
        if gaps.is_empty() {
            return 1;
        }
        let mid = gaps.len() / 2;
        *gaps.select_nth_unstable(mid).1
    }

    pub fn new(events: &[Event], node_count: usize, mut services: Vec<String>) -> Timeline {
        let mut conn_service = BTreeMap::new();
        let mut rows = Vec::new();
        let mut lifetimes = vec![Vec::new(); node_count];
        let mut spans: Vec<Span> = Vec::new();
        // Open sends and timers: index -> position in `spans` (closed when they end).
        let mut open_sends: BTreeMap<usize, usize> = BTreeMap::new();
        let mut open_timers: BTreeMap<TimerId, usize> = BTreeMap::new();
        let mut timers_of_node: Vec<Vec<TimerId>> = vec![Vec::new(); node_count];
        let n = events.len();
        for (i, e) in events.iter().enumerate() {
            if is_row(&e.record) {
                let row = rows.len();
                rows.push(i);
                match &e.record {
                    Record::Start { node, .. }
                    | Record::Restart { node, .. }
                    | Record::Resume { node, .. } => {
                        if let Some(l) = lifetimes.get_mut(node.index()) {
                            l.push((row, true));
                        }
                    }
                    Record::Crash { node, .. } => {
                        if let Some(l) = lifetimes.get_mut(node.index()) {
                            l.push((row, false));
                        }
                        for t in timers_of_node
                            .get_mut(node.index())
                            .map(std::mem::take)
                            .unwrap_or_default()
                        {
                            if let Some(s) = open_timers.remove(&t) {
                                spans[s].end = i;
                            }
                        }
                    }
                    _ => {}
                }
            }
            match &e.record {
                Record::ServiceOut {
                    conn,
                    op: ServiceOp::Connect { service, .. },
                } => {
                    let at = services.iter().position(|s| s == service).or_else(|| {
                        (services.len() < SERVICE_LANES_MAX).then(|| {
                            services.push(service.clone());
                            services.len() - 1
                        })
                    });
                    if let Some(at) = at {
                        conn_service.insert(*conn, at);
                    }
                }
                Record::Send { .. } => {
                    open_sends.insert(i, spans.len());
                    spans.push(Span {
                        start: i,
                        end: n,
                        what: Pending::Message { send: i },
                    });
                }
                Record::Deliver {
                    send: Some(send), ..
                }
                | Record::Drop { send, .. } => {
                    if let Some(s) = open_sends.remove(&(*send as usize)) {
                        spans[s].end = i;
                    }
                }
                Record::TimerSet { timer, .. } => {
                    if let Some(node) = e.node.filter(|n| n.index() < node_count) {
                        timers_of_node[node.index()].push(*timer);
                    }
                    open_timers.insert(*timer, spans.len());
                    spans.push(Span {
                        start: i,
                        end: n,
                        what: Pending::Timer {
                            set: i,
                            timer: *timer,
                            end: n,
                        },
                    });
                }
                // A resumed node's timers are pending from the resume on.
                Record::Resume { node, snapshot, .. } => {
                    for timer in &snapshot.timers {
                        if let Some(mine) = timers_of_node.get_mut(node.index()) {
                            mine.push(*timer);
                        }
                        open_timers.insert(*timer, spans.len());
                        spans.push(Span {
                            start: i,
                            end: n,
                            what: Pending::Timer {
                                set: i,
                                timer: *timer,
                                end: n,
                            },
                        });
                    }
                }
                Record::Timer { timer, .. } | Record::TimerCancel { timer } => {
                    if let Some(s) = open_timers.remove(timer) {
                        spans[s].end = i;
                    }
                }
                _ => {}
            }
        }
        let recorded_violation = recorded_violation(events);
        let mut buckets = vec![Vec::new(); n / BUCKET + 1];
        for (k, s) in spans.iter().enumerate() {
            for b in buckets
                .iter_mut()
                .take(s.end / BUCKET + 1)
                .skip(s.start / BUCKET)
            {
                b.push(k as u32);
            }
        }
        Timeline {
            rows,
            lifetimes,
            spans,
            buckets,
            base_ns: events.first().map_or(0, |e| e.time_ns),
            recorded_violation,
            services,
            conn_service,
        }
    }

    /// The row of record `index`, or of the last row before it.
    pub fn row_of(&self, index: usize) -> usize {
        match self.rows.binary_search(&index) {
            Ok(r) => r,
            Err(r) => r.saturating_sub(1),
        }
    }

    /// Whether `node` is up at `row` (after the row's event).
    pub fn is_up(&self, node: NodeId, row: usize) -> bool {
        let Some(l) = self.lifetimes.get(node.index()) else {
            return false;
        };
        let k = l.partition_point(|&(r, _)| r <= row);
        k > 0 && l[k - 1].1
    }

    /// What is pending just after record `index`: messages in flight and timers set, oldest
    /// first, at most `limit` of them, and how many there are in all.
    pub fn pending_at(&self, index: usize, limit: usize) -> (Vec<Pending>, usize) {
        let Some(bucket) = self.buckets.get(index / BUCKET) else {
            return (Vec::new(), 0);
        };
        let mut found: Vec<&Span> = bucket
            .iter()
            .map(|&k| &self.spans[k as usize])
            .filter(|s| s.start <= index && s.end > index)
            .collect();
        found.sort_by_key(|s| s.start);
        let total = found.len();
        (
            found.into_iter().take(limit).map(Span::pending).collect(),
            total,
        )
    }
}

/// The step (its input's trace index) and invariant of the violation a trace records, if
/// it does.
pub(crate) fn recorded_violation(events: &[Event]) -> Option<(usize, String)> {
    events.iter().find_map(|e| match &e.record {
        Record::Violation {
            step, invariant, ..
        } => Some((*step as usize, invariant.clone())),
        _ => None,
    })
}
