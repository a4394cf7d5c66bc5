//! The workload: external requests arriving as a Poisson process, drawn from their own random
//! stream so that what the nodes do never changes which requests arrive or when.

use super::env::{Pending, ReqIds};
use super::Simulation;
use crate::history::ClientEvent;
use crate::ids::{NodeId, RequestId};
use crate::model::Model;
use crate::node::{Ctx, Node};
use crate::rng::SimRng;
use crate::scenario;
use crate::schedule::{Choice, Schedule};
use crate::trace::InputHead;
use std::collections::BTreeSet;

/// Where the workload stands: what it has drawn, what a schedule leaves out, when it ticks.
pub(super) struct Workload {
    spec: Option<scenario::Workload>,
    rng: SimRng,
    /// Requests a schedule leaves out (minimisation), by number.
    skip: BTreeSet<u64>,
    /// A schedule's cap on request numbers.
    max: Option<u64>,
    /// Requests drawn, sent or not (their numbers are `0..drawn`).
    pub drawn: u64,
    /// When the next request is due on the unshifted clock, and the schedule's shift.
    clock_ns: u64,
    shift_ns: u64,
    /// When the pending tick was due.
    due_ns: u64,
}

impl Workload {
    pub fn new(spec: Option<scenario::Workload>, rng: SimRng) -> Self {
        let start_ns = spec.map_or(0, |w| w.start_ns);
        Workload {
            spec,
            rng,
            skip: BTreeSet::new(),
            max: None,
            drawn: 0,
            clock_ns: start_ns,
            shift_ns: 0,
            due_ns: start_ns,
        }
    }

    /// When the first tick is due, if the workload sends anything at all.
    pub fn first_tick_ns(&self) -> Option<u64> {
        let w = self.spec.as_ref()?;
        (w.rate.per_second > 0.0 && w.requests != Some(0)).then_some(w.start_ns)
    }

    /// Takes a schedule's edits: requests left out, a cap, a shift of every arrival.
    pub fn follow(&mut self, schedule: &Schedule) {
        self.skip = schedule.skip_requests.iter().copied().collect();
        self.max = schedule.requests_max;
        self.shift_ns = schedule.workload_shift_ns;
    }

    /// The schedule that replays a decided run: its choices, with this workload's edits.
    pub fn schedule(&self, choices: Vec<Choice>) -> Schedule {
        Schedule {
            choices,
            skip_requests: self.skip.iter().copied().collect(),
            workload_shift_ns: self.shift_ns,
            requests_max: self.max,
        }
    }

    /// Whether a tick at `now_ns` still sends, after `issued` requests.
    fn open(&self, now_ns: u64, issued: u64) -> bool {
        self.spec.is_some_and(|w| {
            w.stop_ns.is_none_or(|stop| now_ns < stop) && w.requests.is_none_or(|max| issued < max)
        })
    }

    /// Numbers the request just drawn; `None` if a schedule leaves it out.
    fn number(&mut self) -> Option<u64> {
        let number = self.drawn;
        self.drawn += 1;
        let left_out = self.skip.contains(&number) || self.max.is_some_and(|max| number >= max);
        (!left_out).then_some(number)
    }

    /// Draws when the next tick is due, after a tick at `now_ns`.
    fn next_tick_ns(&mut self, now_ns: u64) -> Option<u64> {
        let mean = self.spec?.rate.mean_interval_ns()?;
        // The draws follow the unshifted clock, so a shift moves arrivals, not requests.
        // A tick the decider ran late delays the clock by as much (as without a shift).
        let gap = self.rng.exponential_ns(mean).max(1);
        let late = now_ns.saturating_sub(self.due_ns);
        self.clock_ns = self.clock_ns.saturating_add(late).saturating_add(gap);
        let next = self.clock_ns.saturating_sub(self.shift_ns).max(now_ns);
        self.due_ns = next;
        Some(next)
    }
}

impl<M: Model> Simulation<M> {
    /// A workload tick: maybe a request, then the next tick.
    pub(super) fn workload_tick(&mut self) {
        let now = self.core.now_ns;
        let issued = self.core.stats.requests + self.core.stats.requests_refused;
        if !self.workload.open(now, issued) {
            return;
        }
        if let Some((node, msg)) = M::request(&self.options, &mut self.workload.rng) {
            // A request left out still consumed its draws: the others stay in step.
            if let Some(number) = self.workload.number() {
                if node.index() < self.nodes.len() && self.core.slots[node.index()].up {
                    self.handle(Pending::External { node, msg, number });
                } else {
                    self.core.stats.requests_refused += 1;
                }
            }
        }
        if let Some(next) = self.workload.next_tick_ns(now) {
            self.core.queue.push(next, Pending::WorkloadTick);
        }
    }

    /// A request from outside the cluster, a step on `node`. Its id is its number in the
    /// workload, so leaving requests out (minimisation) renames none of the others, and
    /// each request keeps its own random draws (see [`StepRng`](crate::StepRng)).
    pub(super) fn external(&mut self, node: NodeId, msg: <M::Node as Node>::Msg, number: u64) {
        let now = self.core.now_ns;
        if !self.core.slots[node.index()].up {
            self.core.stats.requests_refused += 1;
            return;
        }
        let request = RequestId(number);
        let prev = self.core.slots[node.index()].last_input;
        let core = &mut self.core;
        if core.trace.enabled() {
            core.encode_scratch(&msg);
        }
        let payload = &core.scratch;
        let index = core
            .trace
            .push(|e, out| e.external(out, InputHead::new(node, now, prev), request, payload));
        core.stats.requests += 1;
        self.begin_step(node, ReqIds::one(request), index);
        if let Some(client) = &mut self.core.client {
            client.push(ClientEvent::Invoke {
                request,
                node,
                msg: msg.clone(),
            });
        }
        if let Some(state) = self.nodes[node.index()].as_mut() {
            state.on_request(&mut Ctx::new(&mut self.core), msg);
        }
        self.end_step(node, index);
    }
}
