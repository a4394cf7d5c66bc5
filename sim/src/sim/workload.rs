//! The workload: external requests arriving as a Poisson process, drawn from their own random
//! stream so that what the nodes do never changes which requests arrive or when — or, closed
//! loop, the model's stateful clients (`crate::client`), each waiting for its answer.

use super::env::{Pending, ReqIds};
use super::Simulation;
use crate::client::{Call, Client, ClientCtx};
use crate::history::ClientEvent;
use crate::ids::{NodeId, RequestId};
use crate::model::Model;
use crate::node::{Ctx, Node};
use crate::rng::{derive_seed, Purpose, SimRng};
use crate::scenario::{self, ClosedLoop};
use crate::schedule::{Choice, Schedule};
use crate::trace::InputHead;
use std::collections::{BTreeMap, BTreeSet};

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

    /// Starts the workload at `now_ns` instead (a fork's moment), numbering requests from
    /// `first_number` on (the trace's own used the numbers below). Returns when its first
    /// tick is due, if it sends anything at all.
    pub fn resume_at(&mut self, now_ns: u64, first_number: u64) -> Option<u64> {
        self.drawn = first_number;
        self.first_tick_ns()?;
        let start_ns = self.start_ns();
        if start_ns > now_ns {
            return Some(start_ns);
        }
        self.clock_ns = now_ns;
        self.due_ns = now_ns;
        self.next_tick_ns(now_ns)
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

    /// The closed loop's parameters, if the workload is one.
    pub fn closed_loop(&self) -> Option<ClosedLoop> {
        self.spec?.clients
    }

    /// When the workload starts.
    pub fn start_ns(&self) -> u64 {
        self.spec.map_or(0, |w| w.start_ns)
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

/// The least pause after a call to a node that is down: a refusal takes no virtual time,
/// so without it a client that keeps calling down nodes with no think time would loop at
/// one instant for ever (a real connection refusal takes about this long, too).
pub const REFUSED_PAUSE_NS: u64 = 1_000_000;

/// The least time a request or an answer takes between a client and a node: nothing
/// crosses a network in no time, and a client answered at the instant it asked could ask
/// again, at that instant, for ever.
const HOP_MIN_NS: u64 = 1_000;

/// One closed-loop client: the model's object, its own random stream, and the call it
/// waits on.
pub(super) struct ClientSlot<Msg> {
    client: Box<dyn Client<Msg>>,
    rng: SimRng,
    /// The request it waits for an answer to (at most one: the loop is closed).
    waiting: Option<RequestId>,
}

/// The closed-loop clients, and which of them waits on which request.
pub(super) struct Clients<Msg> {
    spec: ClosedLoop,
    /// One way between a client and a node: the scenario's default network latency, at
    /// least [`HOP_MIN_NS`].
    latency: scenario::DurRange,
    slots: Vec<ClientSlot<Msg>>,
    /// Request -> client, for the answers a step gives.
    awaiting: BTreeMap<RequestId, u32>,
}

impl<Msg> Clients<Msg> {
    /// The model's clients for `spec`, each with its stream from the run's seed.
    pub fn new<M: Model>(
        spec: ClosedLoop,
        latency: scenario::DurRange,
        options: &M::Options,
        seed: u64,
    ) -> Self
    where
        M::Node: Node<Msg = Msg>,
    {
        let slots = (0..spec.clients)
            .filter_map(|i| {
                let client = M::client(options, i)?;
                Some(ClientSlot {
                    client,
                    rng: SimRng::new(derive_seed(seed, Purpose::Client, u64::from(i), 0)),
                    waiting: None,
                })
            })
            .collect();
        Clients {
            spec,
            latency: scenario::DurRange {
                lo_ns: latency.lo_ns.max(HOP_MIN_NS),
                hi_ns: latency.hi_ns.max(HOP_MIN_NS),
            },
            slots,
            awaiting: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }
}

impl<M: Model> Simulation<M> {
    /// A client's think time is over: its next call, a step on the node it calls (or, if
    /// that node is down, a timeout at once: a refused connection is no wait).
    pub(super) fn client_wake(&mut self, client: u32) {
        let now = self.core.now_ns;
        // Every call is numbered when made (refused, left out or still on its way too), so
        // the count of numbers is what a `requests` cap bounds.
        if !self.workload.open(now, self.workload.drawn) {
            return;
        }
        let nodes = self.nodes.len() as u32;
        let Some(clients) = &mut self.clients else {
            return;
        };
        let slot = &mut clients.slots[client as usize];
        assert!(slot.waiting.is_none(), "client {client} woke while waiting");
        let mut cx = ClientCtx::new(client, nodes, now, &mut slot.rng);
        let Some(Call { to, msg }) = slot.client.request(&mut cx) else {
            return; // this client is done
        };
        // A call left out by a schedule is lost on its way: the client times out.
        let Some(number) = self.workload.number() else {
            return self.client_waits(client, RequestId(u64::MAX - u64::from(client)));
        };
        let request = RequestId(number);
        if to.index() >= self.nodes.len() || !self.core.slots[to.index()].up {
            self.core.stats.requests_refused += 1;
            return self.client_gives_up(client, None, REFUSED_PAUSE_NS);
        }
        self.client_waits(client, request);
        let hop = self.client_hop(client);
        let at = now.saturating_add(hop);
        self.core.queue.push(
            at,
            Pending::External {
                node: to,
                msg,
                number,
            },
        );
    }

    /// A one-way trip between `client` and a node, drawn from the client's stream.
    fn client_hop(&mut self, client: u32) -> u64 {
        let Some(clients) = &mut self.clients else {
            return 0;
        };
        let latency = clients.latency;
        clients.slots[client as usize]
            .rng
            .between(latency.lo_ns, latency.hi_ns)
    }

    /// `client` waits for `request` until its timeout.
    fn client_waits(&mut self, client: u32, request: RequestId) {
        let Some(clients) = &mut self.clients else {
            return;
        };
        clients.slots[client as usize].waiting = Some(request);
        clients.awaiting.insert(request, client);
        let at = self.core.now_ns.saturating_add(clients.spec.timeout_ns);
        self.core
            .queue
            .push(at, Pending::ClientTimeout { client, request });
    }

    /// A call's timeout came: if the client still waits on it, it is told so.
    pub(super) fn client_timeout(&mut self, client: u32, request: RequestId) {
        let waits = self
            .clients
            .as_ref()
            .is_some_and(|c| c.slots[client as usize].waiting == Some(request));
        if waits {
            self.client_gives_up(client, Some(request), 0);
        }
    }

    /// Tells `client` its call failed; its next call comes no sooner than `pause_min_ns`.
    fn client_gives_up(&mut self, client: u32, request: Option<RequestId>, pause_min_ns: u64) {
        let nodes = self.nodes.len() as u32;
        let now = self.core.now_ns;
        let Some(clients) = &mut self.clients else {
            return;
        };
        if let Some(r) = request {
            clients.awaiting.remove(&r);
        }
        let slot = &mut clients.slots[client as usize];
        slot.waiting = None;
        let mut cx = ClientCtx::new(client, nodes, now, &mut slot.rng);
        slot.client.on_timeout(&mut cx);
        let asked = cx.asked_next_after_ns();
        self.client_thinks(client, asked, pause_min_ns);
    }

    /// Sends the step's answers back to the clients waiting on them: each arrives after a
    /// one-way trip (an answer to a request no client waits on reaches no one).
    pub(super) fn answer_clients(&mut self) {
        let Some(answers) = self.core.answers.as_mut().filter(|a| !a.is_empty()) else {
            return;
        };
        let answers = std::mem::take(answers);
        for (request, msg) in answers {
            let Some(client) = self
                .clients
                .as_ref()
                .and_then(|c| c.awaiting.get(&request).copied())
            else {
                continue;
            };
            let at = self.core.now_ns.saturating_add(self.client_hop(client));
            self.core.queue.push(
                at,
                Pending::ClientAnswer {
                    client,
                    request,
                    msg,
                },
            );
        }
    }

    /// An answer reaches its client: if it still waits on that call (not timed out, not
    /// answered already), it is told, then thinks.
    pub(super) fn client_answer(
        &mut self,
        client: u32,
        request: RequestId,
        msg: <M::Node as Node>::Msg,
    ) {
        let nodes = self.nodes.len() as u32;
        let now = self.core.now_ns;
        let Some(clients) = &mut self.clients else {
            return;
        };
        let slot = &mut clients.slots[client as usize];
        if slot.waiting != Some(request) {
            return;
        }
        clients.awaiting.remove(&request);
        slot.waiting = None;
        let mut cx = ClientCtx::new(client, nodes, now, &mut slot.rng);
        slot.client.on_answer(&mut cx, msg);
        let asked = cx.asked_next_after_ns();
        self.client_thinks(client, asked, 0);
    }

    /// Schedules the client's next call: after what it asked for, or the scenario's think
    /// time drawn from its stream, and no sooner than `pause_min_ns`.
    fn client_thinks(&mut self, client: u32, asked_ns: Option<u64>, pause_min_ns: u64) {
        let Some(clients) = &mut self.clients else {
            return;
        };
        let think = clients.spec.think;
        let slot = &mut clients.slots[client as usize];
        let after = asked_ns
            .unwrap_or_else(|| slot.rng.between(think.lo_ns, think.hi_ns))
            .max(pause_min_ns);
        let at = self.core.now_ns.saturating_add(after);
        self.core.queue.push(at, Pending::ClientWake { client });
    }

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
        // Over HTTP the message travels as the request a client makes for it, and the node
        // gets what the model's mapping makes of that request, as in the real runtime.
        let (msg, http) = match &self.core.http {
            None => (msg, None),
            Some(api) => match api.client_request(&msg) {
                None => (msg, None),
                Some(request) => match api.request(&request) {
                    Ok(mapped) => (mapped, Some(request)),
                    Err(_) => {
                        // The server refuses it before the node sees it.
                        self.core.stats.requests_refused += 1;
                        return;
                    }
                },
            },
        };
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
        if let Some(http) = &http {
            core.trace.push(|e, out| e.http_request(out, request, http));
        }
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
