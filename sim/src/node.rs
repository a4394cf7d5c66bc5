//! The node API: what a user writes, and the context through which a node meets the world.

use crate::ids::{NodeId, RequestId, Time, TimerId};
use crate::rng::SimRng;
use crate::service::{ConnId, ServiceEvent};
use crate::storage::Storage;
use crate::tag::Tag;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::time::Duration;

/// What a message must be: cloneable for duplicates, printable for the trace viewer,
/// serializable for the trace, and sendable across threads (the real runtime's).
pub trait Message: Clone + Debug + Serialize + DeserializeOwned + Send + 'static {}
impl<T: Clone + Debug + Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A node: a deterministic state machine.
///
/// Given the same inputs (start, messages, timer firings, external requests, and what it
/// reads through its [`Ctx`]: clock, randomness, storage) a node must make the same outputs
/// and reach the same state. It talks to the world only through the `Ctx`, so the same code
/// runs in the simulator, in the real runtime and in the replayer.
///
/// # Roles
/// A cluster usually has nodes of different kinds (clients, servers, caches). Make them one
/// node type, an enum with a variant per role, and one message enum shared by all roles:
///
/// ```
/// use retrace_sim::{Ctx, Node, NodeId, TimerId};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum Msg { Get(String), Value(Option<String>) }
///
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// enum Role {
///     Client { server: NodeId, answers: u32 },
///     Server { data: std::collections::BTreeMap<String, String> },
/// }
///
/// impl Node for Role {
///     type Msg = Msg;
///     type Timer = u64; // this system sets no timers
///     fn on_start(&mut self, ctx: &mut Ctx<'_, Msg>) {
///         if let Role::Client { server, .. } = self {
///             ctx.send(*server, Msg::Get("x".into()));
///         }
///     }
///     fn on_message(&mut self, ctx: &mut Ctx<'_, Msg>, from: NodeId, msg: Msg) {
///         match (self, msg) {
///             (Role::Server { data }, Msg::Get(key)) => {
///                 ctx.send(from, Msg::Value(data.get(&key).cloned()))
///             }
///             (Role::Client { answers, .. }, Msg::Value(_)) => *answers += 1,
///             (_, other) => ctx.annotate(format!("unexpected {other:?}")),
///         }
///     }
///     fn on_timer(&mut self, _ctx: &mut Ctx<'_, Msg>, _timer: TimerId, _tag: u64) {}
/// }
/// ```
pub trait Node: Clone + Debug + Serialize + DeserializeOwned + 'static {
    /// The messages nodes of this system exchange (one enum for all roles).
    type Msg: Message;

    /// What a timer carries back to the node when it fires: usually an enum of the node's
    /// timers (`Heartbeat`, `Retry { op }`, …), so traces and the TUI show them by name and
    /// the fuzzer counts each kind once. `u64` for a system with no timers or plain numbers.
    type Timer: Message;

    /// The node boots: first start, or restart after a crash (the node was rebuilt by its
    /// model's constructor; its synced storage is what survived). [`Ctx::boot`] tells which.
    fn on_start(&mut self, ctx: &mut Ctx<'_, Self::Msg, Self::Timer>);

    /// A message from another node arrives.
    fn on_message(
        &mut self,
        ctx: &mut Ctx<'_, Self::Msg, Self::Timer>,
        from: NodeId,
        msg: Self::Msg,
    );

    /// A timer set with [`Ctx::set_timer`] fires, with the value it was set with.
    fn on_timer(
        &mut self,
        ctx: &mut Ctx<'_, Self::Msg, Self::Timer>,
        timer: TimerId,
        tag: Self::Timer,
    );

    /// A request from outside the cluster arrives (a client of the system). It starts a new
    /// request id; answer it with [`Ctx::respond`]. The default ignores it.
    fn on_request(&mut self, ctx: &mut Ctx<'_, Self::Msg, Self::Timer>, request: Self::Msg) {
        let _ = request;
        ctx.annotate("external request ignored: on_request is not implemented");
    }

    /// Something happened on a connection this node opened to a service with
    /// [`Ctx::connect`]: it opened, bytes arrived, it closed, or the service did not answer
    /// in time. The event belongs to the requests of the step that last used the connection.
    /// The default ignores it.
    fn on_service(
        &mut self,
        ctx: &mut Ctx<'_, Self::Msg, Self::Timer>,
        conn: ConnId,
        event: ServiceEvent,
    ) {
        let _ = (conn, event);
        ctx.annotate("service event ignored: on_service is not implemented");
    }
}

/// Which life of a node this is: its first, or one after a crash (built afresh by its
/// model's constructor, with the storage it had synced). Recorded with the boot, so replay
/// and `verify` tell node code the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Boot {
    First,
    Restart,
}

/// The world as one node sees it while handling one event. Implemented by retrace's
/// runtimes (the simulator, the real networked runtime, the replayer), not by users.
pub trait Env<M> {
    fn id(&self) -> NodeId;
    fn peers(&self) -> &[NodeId];
    fn node_count(&self) -> usize;
    /// Which life of the node is running.
    fn boot(&self) -> Boot;
    fn now(&mut self) -> Time;
    fn send(&mut self, to: NodeId, msg: M);
    fn set_timer(&mut self, after: Duration, tag: Tag) -> TimerId;
    fn cancel_timer(&mut self, timer: TimerId) -> bool;
    fn rng(&mut self) -> &mut SimRng;
    fn storage(&mut self) -> &mut Storage;
    fn annotate(&mut self, text: String);
    /// Answers `request` (see [`Ctx::respond_to`]).
    fn respond(&mut self, request: RequestId, msg: M);
    fn request_ids(&self) -> &[RequestId];
    fn detach(&mut self);
    /// Models service time (see [`Ctx::busy`]). Runtimes that measure real time ignore it.
    fn busy(&mut self, duration: Duration);
    /// Opens a connection to a service (see [`Ctx::connect`]).
    fn connect(&mut self, service: &str, timeout_ns: u64) -> ConnId;
    /// Writes to a connection (see [`Ctx::write`]).
    fn write(&mut self, conn: ConnId, bytes: Vec<u8>);
    /// Closes a connection (see [`Ctx::close`]).
    fn close(&mut self, conn: ConnId);
}

/// A node's only door to the world while it handles an event: `M` its messages, `T` its
/// timer values (see [`Node::Timer`]).
pub struct Ctx<'a, M, T = u64> {
    env: &'a mut dyn Env<M>,
    _timer: PhantomData<fn(T)>,
}

impl<'a, M, T> Ctx<'a, M, T> {
    /// Wraps a runtime's environment (for runtimes, not for node code).
    pub fn new(env: &'a mut dyn Env<M>) -> Self {
        Ctx {
            env,
            _timer: PhantomData,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.env.id()
    }

    /// Every other node of the cluster, in id order.
    pub fn peers(&self) -> &[NodeId] {
        self.env.peers()
    }

    /// How many nodes the cluster has.
    pub fn node_count(&self) -> usize {
        self.env.node_count()
    }

    /// This node's clock: virtual time as skewed and drifted by the node's clock model
    /// (an offset, which clock-jump faults move, and a rate error). Each reading is recorded
    /// as an input.
    pub fn now(&mut self) -> Time {
        self.env.now()
    }

    /// Sends a message; the network may delay, drop, duplicate or reorder it.
    pub fn send(&mut self, to: NodeId, msg: M) {
        self.env.send(to, msg)
    }

    /// Sets a timer that fires `after` from now, handing `tag` back to `on_timer`, unless
    /// cancelled or the node crashes first. `after` is measured by this node's clock, as a
    /// real timer is: with a drifting clock (`[clocks] drift_ppm`) it fires that much early
    /// or late in true time; a clock jump does not move it (timers follow a monotonic
    /// clock). The real runtime uses the host's monotonic clock. The tag is recorded (it
    /// must encode to at most [`crate::tag::TAG_BYTES_MAX`] bytes).
    pub fn set_timer(&mut self, after: Duration, tag: T) -> TimerId
    where
        T: Serialize + Debug,
    {
        self.env.set_timer(after, Tag::of(&tag))
    }

    /// Cancels a timer; false if it already fired or was cancelled.
    pub fn cancel_timer(&mut self, timer: TimerId) -> bool {
        self.env.cancel_timer(timer)
    }

    /// This node's seeded random generator (reseeded, and recorded, at every boot).
    pub fn rng(&mut self) -> &mut SimRng {
        self.env.rng()
    }

    /// This node's durable storage.
    pub fn storage(&mut self) -> &mut Storage {
        self.env.storage()
    }

    /// Free text that shows up in the trace at this event.
    pub fn annotate(&mut self, text: impl Into<String>) {
        self.env.annotate(text.into())
    }

    /// Whether this life of the node is its first or one after a crash; what `on_start` needs
    /// to know to recover instead of starting fresh (no marker in storage needed).
    pub fn boot(&self) -> Boot {
        self.env.boot()
    }

    /// Answers the external client whose request this event belongs to (the first of
    /// [`Ctx::request_ids`]); ignored when the event belongs to no request.
    pub fn respond(&mut self, msg: M)
    where
        M: std::fmt::Debug,
    {
        let Some(&request) = self.env.request_ids().first() else {
            // One rule for every runtime, so traces, logs and their re-execution agree.
            return self
                .env
                .annotate(format!("respond outside of any request ignored: {msg:?}"));
        };
        self.env.respond(request, msg)
    }

    /// Answers the external request `request`, from any event: keep the id (it is plain data)
    /// and answer when the value is decided — after consensus, say, several steps later. The
    /// answer is recorded against `request` like [`Ctx::respond`]'s; in the real runtime it
    /// reaches the client if the client is still waiting. Answering a request twice records
    /// both answers; the client gets the first.
    pub fn respond_to(&mut self, request: RequestId, msg: M) {
        self.env.respond(request, msg)
    }

    /// The requests the current event belongs to, propagated by the runtime.
    pub fn request_ids(&self) -> &[RequestId] {
        self.env.request_ids()
    }

    /// Background work: what this handler does from here on (sends, timers) belongs to no
    /// request. Use it for watchdogs and periodic work re-armed inside a request.
    pub fn detach(&mut self) {
        self.env.detach()
    }

    /// Says this handler kept the node busy for `duration` (its service time) in the
    /// simulator: messages sent after this call leave that much later, and inputs that arrive
    /// while the node is busy wait in its queue. The real runtime measures handler time
    /// instead and ignores this.
    pub fn busy(&mut self, duration: Duration) {
        self.env.busy(duration)
    }

    /// Opens a connection to the service the scenario names `service` (`[services.NAME]`):
    /// in the real runtime a TCP connection to its address, in the simulator the model's
    /// stand-in ([`crate::Model::service`]), in replay what the trace recorded. What happens
    /// on it arrives as inputs ([`Node::on_service`]): `Connected` first, or `Closed` if it
    /// cannot open. `timeout` (zero: none) bounds the wait for an answer after each write:
    /// when nothing arrives in time the connection is closed and the node gets `TimedOut`.
    pub fn connect(&mut self, service: &str, timeout: Duration) -> ConnId {
        self.env.connect(service, crate::ids::duration_ns(timeout))
    }

    /// Writes `bytes` to a connection, recorded in full. Writing before `Connected` is fine
    /// (the bytes wait for the connection); a write on a connection that is closed goes
    /// nowhere (its `Closed` event says so, or said so already).
    pub fn write(&mut self, conn: ConnId, bytes: impl Into<Vec<u8>>) {
        self.env.write(conn, bytes.into())
    }

    /// Closes a connection; nothing more arrives on it.
    pub fn close(&mut self, conn: ConnId) {
        self.env.close(conn)
    }
}
