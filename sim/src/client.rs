//! Stateful clients: a workload that keeps state and sees answers.
//!
//! [`Model::request`](crate::Model::request) draws each request blind, from nothing but a
//! random stream: fine for load, too little for a client that must count its own operations,
//! wait for a reply, retry after a timeout, or follow the node that says "the leader is
//! over there". A [`Client`] is such a client, one instance per simulated user, run closed
//! loop — one request at a time: it is asked for a [`Call`], then told the call's answer or
//! its timeout, then thinks (the scenario's `think`, or what it asks for with
//! [`ClientCtx::next_after`]) and is asked again.
//!
//! The same client code runs in the simulator (virtual time, its random stream derived from
//! the run's seed) and under `retrace cluster` (one thread per client against the nodes'
//! client ports, real time). Either way, what the nodes see of it is recorded as ever: each
//! call is an external request, each answer a response; the client itself is outside the
//! trace, so replay never needs it.

pub use crate::sim::REFUSED_PAUSE_NS;

use crate::ids::NodeId;
use crate::rng::SimRng;
use std::time::Duration;

/// One request a client makes: which node it goes to, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call<M> {
    pub to: NodeId,
    pub msg: M,
}

/// A client of the cluster that keeps state between requests (see the module docs).
///
/// `M` is the node's message type: calls are requests, answers are what nodes respond.
pub trait Client<M>: 'static {
    /// The next request, or `None` when this client has nothing more to ask (it stops).
    fn request(&mut self, cx: &mut ClientCtx<'_>) -> Option<Call<M>>;
    /// The answer to the last call.
    fn on_answer(&mut self, cx: &mut ClientCtx<'_>, answer: M);
    /// The last call got no answer: its node did not answer within the scenario's
    /// `timeout`, or could not be reached at all (it is down; then at once, and the next
    /// call comes no sooner than [`REFUSED_PAUSE_NS`]). Whether the request took effect is
    /// unknown — a retry may apply it twice.
    fn on_timeout(&mut self, cx: &mut ClientCtx<'_>);
}

/// What a client reaches: who it is, the time, its own random stream, and how long to think.
pub struct ClientCtx<'a> {
    client: u32,
    nodes: u32,
    now_ns: u64,
    rng: &'a mut SimRng,
    next_after_ns: Option<u64>,
}

impl<'a> ClientCtx<'a> {
    /// For runtimes: client `client` of a cluster of `nodes` nodes at `now_ns`.
    pub fn new(client: u32, nodes: u32, now_ns: u64, rng: &'a mut SimRng) -> Self {
        ClientCtx {
            client,
            nodes,
            now_ns,
            rng,
            next_after_ns: None,
        }
    }

    /// This client's number, `0..clients`: a unique prefix for what it writes.
    pub fn client(&self) -> u32 {
        self.client
    }

    /// How many nodes the cluster has (`NodeId(0)..NodeId(nodes)`).
    pub fn nodes(&self) -> u32 {
        self.nodes
    }

    /// Time since the run started: virtual in the simulator, real under `retrace cluster`.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns)
    }

    /// The client's own random stream (in the simulator, derived from the run's seed and
    /// the client's number, so one client's draws never shift another's).
    pub fn rng(&mut self) -> &mut SimRng {
        self.rng
    }

    /// Makes the next request go `after` from now instead of after the scenario's think
    /// time: `Duration::ZERO` to follow a redirection at once, longer to back off.
    pub fn next_after(&mut self, after: Duration) {
        self.next_after_ns = Some(crate::ids::duration_ns(after));
    }

    /// For runtimes: what [`ClientCtx::next_after`] asked for, if anything.
    pub fn asked_next_after_ns(&self) -> Option<u64> {
        self.next_after_ns
    }
}
