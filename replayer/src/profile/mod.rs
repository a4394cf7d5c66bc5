//! Where a request's time went: its critical path over the exact message edges, from the
//! external request to the reply, split into service, queueing, network and timer waits per
//! node and link; and the same across many requests, with percentiles and a time window.
//!
//! The path is walked backwards from the reply: each step was triggered by exactly one input
//! (a delivery, a timer, or the request itself), so following triggers gives the chain of
//! events that the reply waited for — no span-timing guesswork.

mod chunked;
mod summary;

pub use chunked::{profile_indexed, ChunkedRun, Chunking};
pub use summary::{
    compare_window, percentiles, summarize, Percentiles, Summarizer, Summary, WindowComparison,
    WindowSummarizer,
};

use crate::causality::Causality;
use crate::steps::Steps;
use retrace_sim::trace::{Event, Record};
use retrace_sim::{ConnId, NodeId, RequestId, ServiceOp};
use serde::Serialize;
use std::collections::BTreeMap;

/// A bound on hops per critical path: a path can be no longer than the run.
const MAX_HOPS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A handler's service time (from `ctx.busy`, or measured).
    Service,
    /// Waiting in a node's queue behind earlier work.
    Queueing,
    /// A message in flight.
    Network,
    /// Waiting for a timer.
    Timer,
    /// A node waiting for the input that let it answer (a request answered with
    /// `respond_to` once something else — a commit, a batch — decided it).
    Waiting,
    /// A node waiting on a black-box service (`Place::from` names it): from its write (or
    /// connect) to the service's answer reaching the node — the service's own time and
    /// both ways on the wire, which retrace cannot see apart.
    Remote,
}

/// Where a piece of time was spent: a node, or a link `from -> to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Place {
    pub kind: Kind,
    pub node: String,
    /// Set for network time: the sending node (`node` is the receiver).
    pub from: Option<String>,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Service => "service",
            Kind::Queueing => "queueing",
            Kind::Network => "network",
            Kind::Timer => "timer",
            Kind::Waiting => "waiting",
            Kind::Remote => {
                let service = self.from.as_deref().unwrap_or("a service");
                return write!(f, "waiting on {service} at {}", self.node);
            }
        };
        match &self.from {
            Some(from) => write!(f, "{kind} {from}->{}", self.node),
            None => write!(f, "{kind} at {}", self.node),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    pub place: Place,
    pub ns: u64,
    /// The step (trace index of its input) where this time ended.
    pub event: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct RequestProfile {
    pub request: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub latency_ns: u64,
    /// The critical path, in time order.
    pub path: Vec<Hop>,
    /// Steps of the request off the critical path, their service time, and the least slack
    /// among them (how much later the earliest-to-matter of them could have finished).
    pub off_path_steps: usize,
    pub off_path_service_ns: u64,
    pub min_slack_ns: Option<u64>,
}

impl RequestProfile {
    /// Time per place on the critical path.
    pub fn by_place(&self) -> BTreeMap<&Place, u64> {
        let mut m = BTreeMap::new();
        for h in &self.path {
            *m.entry(&h.place).or_insert(0) += h.ns;
        }
        m
    }
}

/// Per-step timing facts read off the trace.
struct Timing<'a> {
    events: &'a [Event],
    steps: &'a Steps,
    names: &'a [String],
    /// Each service connection's service, from its connect (when in these events).
    services: BTreeMap<ConnId, String>,
}

impl Timing<'_> {
    fn name(&self, n: NodeId) -> String {
        self.names
            .get(n.index())
            .cloned()
            .unwrap_or_else(|| n.to_string())
    }

    fn queued(&self, s: usize) -> u64 {
        let st = &self.steps.steps[s];
        self.events[st.input + 1..st.end]
            .iter()
            .find_map(|e| match e.record {
                Record::Queued { ns } => Some(ns),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Service time spent in step `s` before record `at` (or all of it).
    fn busy_before(&self, s: usize, at: Option<usize>) -> u64 {
        let st = &self.steps.steps[s];
        let end = at.unwrap_or(st.end).min(st.end);
        self.events[st.input + 1..end]
            .iter()
            .map(|e| match e.record {
                Record::Busy { ns } => ns,
                _ => 0,
            })
            .sum()
    }

    fn arrival(&self, s: usize) -> u64 {
        self.steps.steps[s].time_ns.saturating_sub(self.queued(s))
    }
}

/// Profiles every request that has both its external request and a reply in the trace.
pub struct Profiler<'a> {
    t: Timing<'a>,
    causality: &'a Causality,
    /// Request -> its external step.
    starts: BTreeMap<RequestId, usize>,
    /// The whole trace's number of the first of `events` (they may be a part of it).
    first_event: usize,
    /// Request -> (its external step, the step with its last reply, the reply's record).
    ends: BTreeMap<RequestId, (usize, usize, usize)>,
}

impl<'a> Profiler<'a> {
    pub fn new(
        events: &'a [Event],
        steps: &'a Steps,
        causality: &'a Causality,
        names: &'a [String],
    ) -> Self {
        let mut starts: BTreeMap<RequestId, usize> = BTreeMap::new();
        let mut replies: BTreeMap<RequestId, (usize, usize)> = BTreeMap::new();
        let mut services = BTreeMap::new();
        for (s, st) in steps.steps.iter().enumerate() {
            if let Record::External { request, .. } = events[st.input].record {
                starts.entry(request).or_insert(s);
            }
            for (i, e) in events.iter().enumerate().take(st.end).skip(st.input + 1) {
                match &e.record {
                    Record::Respond { request, .. } => {
                        replies.insert(*request, (s, i));
                    }
                    Record::ServiceOut {
                        conn,
                        op: ServiceOp::Connect { service, .. },
                    } => {
                        services.insert(*conn, service.clone());
                    }
                    _ => {}
                }
            }
        }
        let ends = starts
            .iter()
            .filter_map(|(r, start)| replies.get(r).map(|&(s, i)| (*r, (*start, s, i))))
            .collect();
        Profiler {
            t: Timing {
                events,
                steps,
                names,
                services,
            },
            causality,
            starts,
            ends,
            first_event: 0,
        }
    }

    /// The same profiler, for `events` that start at record `first` of a trace: profiles
    /// name events by the trace's numbers.
    pub fn numbered_from(self, first: u64) -> Self {
        Profiler {
            first_event: first as usize,
            ..self
        }
    }

    /// Every request whose external request is in the trace, with that request's record
    /// index, in id order (answered or not).
    pub fn started(&self) -> impl Iterator<Item = (RequestId, usize)> + '_ {
        let steps = &self.t.steps.steps;
        self.starts.iter().map(|(r, &s)| (*r, steps[s].input))
    }

    /// Requests that completed, in id order.
    pub fn requests(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.ends.keys().copied()
    }

    pub fn request(&self, r: RequestId) -> Option<RequestProfile> {
        let &(start, end, reply) = self.ends.get(&r)?;
        let t = &self.t;
        let st = &t.steps.steps;
        let end_ns = st[end].time_ns + t.busy_before(end, Some(reply));
        let mut path: Vec<Hop> = Vec::new();
        let node_place = |kind, n: NodeId| Place {
            kind,
            node: t.name(n),
            from: None,
        };
        // The reply leaves after the service the final step did before it.
        path.push(Hop {
            place: node_place(Kind::Service, st[end].node),
            ns: t.busy_before(end, Some(reply)),
            event: st[end].input,
        });
        let mut on_path = vec![end];
        let mut s = end;
        for _ in 0..MAX_HOPS {
            let queued = t.queued(s);
            path.push(Hop {
                place: node_place(Kind::Queueing, st[s].node),
                ns: queued,
                event: st[s].input,
            });
            if s == start {
                break;
            }
            let record = &t.events[st[s].input].record;
            // The step whose output (at trace index `at`) set this one off.
            let step_at = |at: u64, kind| {
                let p = t.steps.step_of.get(at as usize).copied().flatten()?;
                Some((p, at as usize, kind))
            };
            let trigger = match record {
                Record::Deliver {
                    send: Some(send), ..
                } => step_at(*send, Kind::Network),
                Record::Timer { set, .. } => step_at(*set, Kind::Timer),
                Record::ServiceIn {
                    cause: Some(cause), ..
                } => step_at(*cause, Kind::Remote),
                _ => None, // an external input that is not this request's start
            };
            let follows_start = |p: usize| p == start || self.causality.precedes(start, p);
            let Some((p, at, kind)) = trigger.filter(|&(p, _, _)| follows_start(p)) else {
                // The step was set off by work that did not follow the request (an answer
                // given with `respond_to` when a batch or a commit decided it): its node was
                // waiting for that since its own previous step that did follow the request.
                let Some(q) = self
                    .causality
                    .previous_on_node(s)
                    .filter(|&q| follows_start(q))
                else {
                    break;
                };
                let service = t.busy_before(q, None);
                path.push(Hop {
                    place: node_place(Kind::Waiting, st[s].node),
                    ns: t.arrival(s).saturating_sub(st[q].time_ns + service),
                    event: st[s].input,
                });
                path.push(Hop {
                    place: node_place(Kind::Service, st[q].node),
                    ns: service,
                    event: st[q].input,
                });
                on_path.push(q);
                s = q;
                continue;
            };
            let departs = st[p].time_ns + t.busy_before(p, Some(at));
            let wait = t.arrival(s).saturating_sub(departs);
            let place = match kind {
                Kind::Network => Place {
                    kind,
                    node: t.name(st[s].node),
                    from: Some(t.name(st[p].node)),
                },
                Kind::Remote => Place {
                    kind,
                    node: t.name(st[s].node),
                    from: match &t.events[at].record {
                        Record::ServiceOut { conn, .. } => t.services.get(conn).cloned(),
                        _ => None,
                    },
                },
                _ => node_place(kind, st[s].node),
            };
            path.push(Hop {
                place,
                ns: wait,
                event: st[s].input,
            });
            path.push(Hop {
                place: node_place(Kind::Service, st[p].node),
                ns: t.busy_before(p, Some(at)),
                event: st[p].input,
            });
            on_path.push(p);
            s = p;
        }
        path.retain(|h| h.ns > 0);
        path.reverse();
        for h in &mut path {
            h.event += self.first_event;
        }
        let start_ns = t.arrival(start);
        // Off-path work of the same request.
        on_path.sort_unstable();
        let mut off_steps = 0;
        let mut off_service = 0;
        let mut min_slack: Option<u64> = None;
        for &o in self.causality.request(r) {
            if on_path.binary_search(&o).is_ok() {
                continue;
            }
            off_steps += 1;
            let busy = t.busy_before(o, None);
            off_service += busy;
            let done = st[o].time_ns + busy;
            if done <= end_ns {
                let slack = end_ns - done;
                min_slack = Some(min_slack.map_or(slack, |m| m.min(slack)));
            }
        }
        Some(RequestProfile {
            request: r.0,
            start_ns,
            end_ns,
            latency_ns: end_ns.saturating_sub(start_ns),
            path,
            off_path_steps: off_steps,
            off_path_service_ns: off_service,
            min_slack_ns: min_slack,
        })
    }

    /// Profiles of every completed request starting in `[from, to)`.
    pub fn all(&self, window: Option<(u64, u64)>) -> Vec<RequestProfile> {
        self.requests()
            .filter_map(|r| self.request(r))
            .filter(|p| window.is_none_or(|(a, b)| p.start_ns >= a && p.start_ns < b))
            .collect()
    }
}
