//! What a node's [`Ctx`] reaches into while it runs: the queue, the trace, the network and
//! each node's slot (clock, random stream, disk, liveness). The event loop in `mod.rs` owns
//! it; nothing here decides what runs next.

use super::Stats;
use crate::codec;
use crate::history::ClientEvent;
use crate::http::HttpApi;
use crate::ids::{NodeId, RequestId, Time, TimerId};
use crate::logs::Capture;
use crate::node::{Boot, Env, Message};
use crate::queue::{EventQueue, Handle};
use crate::rng::{SimRng, StepRng};
use crate::scenario::{FaultAction, LinkParams};
use crate::schedule::Fate;
use crate::service::ConnId;
use crate::storage::Storage;
use crate::tag::Tag;
use crate::trace::{DropReason, TraceOut};
use crate::world::{Clock, Network};
use std::collections::BTreeMap;
use std::time::Duration;

/// At most this many request ids ride on one event; more would mean ids are spreading
/// along paths that are not one request's causality.
pub const MAX_REQUEST_IDS: usize = 4;

/// The request ids an event carries: a small inline set, so that carrying them costs no
/// allocation per message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ReqIds {
    len: u8,
    ids: [RequestId; MAX_REQUEST_IDS],
}

impl ReqIds {
    pub fn one(id: RequestId) -> Self {
        let mut r = ReqIds::default();
        r.ids[0] = id;
        r.len = 1;
        r
    }

    /// The first [`MAX_REQUEST_IDS`] of `ids` (a trace's records hold at most as many).
    pub fn from_slice(ids: &[RequestId]) -> Self {
        let mut r = ReqIds::default();
        for (slot, id) in r.ids.iter_mut().zip(ids) {
            *slot = *id;
            r.len += 1;
        }
        r
    }

    pub fn as_slice(&self) -> &[RequestId] {
        &self.ids[..self.len as usize]
    }
}

/// Messages encoded at most this long ride in the queue with their encoding, so that the
/// delivery record reuses the bytes the send's digest was computed from.
const INLINE_PAYLOAD_BYTES: usize = 47;

/// A message's encoding carried alongside it in flight (`len == u8::MAX`: not kept).
#[derive(Clone, Copy)]
pub(super) struct InlinePayload {
    len: u8,
    bytes: [u8; INLINE_PAYLOAD_BYTES],
}

impl InlinePayload {
    pub const NONE: InlinePayload = InlinePayload {
        len: u8::MAX,
        bytes: [0; INLINE_PAYLOAD_BYTES],
    };

    pub fn keep(encoded: &[u8]) -> Self {
        if encoded.len() > INLINE_PAYLOAD_BYTES {
            return Self::NONE;
        }
        let mut p = InlinePayload {
            len: encoded.len() as u8,
            bytes: [0; INLINE_PAYLOAD_BYTES],
        };
        p.bytes[..encoded.len()].copy_from_slice(encoded);
        p
    }

    pub fn get(&self) -> Option<&[u8]> {
        (self.len != u8::MAX).then(|| &self.bytes[..self.len as usize])
    }
}

/// A copy of a message on its way.
#[derive(Clone)]
pub(super) struct InFlight<M> {
    pub to: NodeId,
    pub from: NodeId,
    pub msg: M,
    /// Trace index of its send.
    pub send: u64,
    /// The request ids of the step that sent it.
    pub ids: ReqIds,
    pub payload: InlinePayload,
    /// Under a decider: where the message's key is in the run's list of keys
    /// ([`NO_KEY`] otherwise).
    pub key: u32,
}

/// [`InFlight::key`] of a message sent without a decider.
pub(super) const NO_KEY: u32 = u32::MAX;

/// An event waiting in the queue for its virtual time.
pub(super) enum Pending<M> {
    Boot {
        node: NodeId,
    },
    Deliver(InFlight<M>),
    Timer {
        node: NodeId,
        timer: TimerId,
        tag: Tag,
        set: u64,
        ids: ReqIds,
    },
    WorkloadTick,
    /// A closed-loop client's think time is over: it makes its next request.
    ClientWake {
        client: u32,
    },
    /// A closed-loop client's call `request` may have timed out.
    ClientTimeout {
        client: u32,
        request: RequestId,
    },
    /// An answer on its way back to a closed-loop client.
    ClientAnswer {
        client: u32,
        request: RequestId,
        msg: M,
    },
    /// A request from the workload, for a node that was busy when it arrived.
    External {
        node: NodeId,
        msg: M,
        /// The workload's request number, which is its request id.
        number: u64,
    },
    /// An input that arrived while its node was busy, waiting since `arrived_ns`.
    Deferred {
        item: Box<Pending<M>>,
        arrived_ns: u64,
    },
    Fault(FaultAction),
    Heal {
        id: u32,
    },
    /// A service event on its way to its node (an input).
    Service(Box<super::services::ServiceDelivery>),
    /// A write's bytes on their way to the service.
    ServiceArrive {
        conn: ConnId,
        /// Trace index of the write.
        cause: u64,
        ids: ReqIds,
        bytes: Vec<u8>,
    },
    /// A write's answer is due (the event to hand the node, and the connection's count of
    /// answers at the write).
    ServiceTimeout(Box<super::services::ServiceDelivery>, u64),
}

/// One node's place in the simulated world: what survives its crashes (disk, clock, its
/// count of lives) and what a life holds (its random stream, whether it is up, how long its
/// handlers keep it busy).
pub(super) struct NodeSlot {
    pub clock: Clock,
    pub rng: StepRng,
    pub storage: Storage,
    pub peers: Vec<NodeId>,
    pub up: bool,
    /// Which life is running.
    pub boot: Boot,
    /// Lives so far: the next boot's incarnation (it seeds the node's random stream).
    pub incarnation: u64,
    /// Trace index of the node's last input: the back-link of its next one.
    pub last_input: Option<u64>,
    /// Until when earlier handlers keep the node busy.
    pub busy_until_ns: u64,
}

impl NodeSlot {
    pub fn new(me: NodeId, n: usize, clock: Clock) -> Self {
        NodeSlot {
            clock,
            rng: StepRng::new(0),
            storage: Storage::default(),
            peers: crate::check::peers_of(me, n),
            up: false,
            boot: Boot::First,
            incarnation: 0,
            last_input: None,
            busy_until_ns: 0,
        }
    }
}

/// Everything but the nodes and invariants: what a node's [`Ctx`](crate::Ctx) reaches into.
pub(super) struct Core<M> {
    pub now_ns: u64,
    pub queue: EventQueue<Pending<M>>,
    pub trace: TraceOut,
    pub scratch: Vec<u8>,
    pub net: Network,
    /// Drop, duplicate and latency draws, by the sending step's request (see [`StepRng`]).
    pub net_rng: StepRng,
    pub slots: Vec<NodeSlot>,
    pub timers: BTreeMap<TimerId, (NodeId, Handle)>,
    pub next_timer: u64,
    pub step_node: NodeId,
    pub step_ids: ReqIds,
    /// Service time declared so far in the current step.
    pub step_busy_ns: u64,
    /// How long the current step's input waited for its node.
    pub step_queued_ns: u64,
    pub stats: Stats,
    /// `tracing` events node code emits, recorded as `Log` records of their step.
    pub logs: Capture,
    /// Under a decider (fuzzing, or replaying a schedule): it decides each message's fate.
    pub fuzzing: Option<Box<super::fuzzing::Fuzzing>>,
    /// The step's client events, kept only when an invariant reads them.
    pub client: Option<Vec<ClientEvent<M>>>,
    /// The step's answers, kept only when the workload has stateful clients waiting.
    pub answers: Option<Vec<(RequestId, M)>>,
    /// When the workload speaks HTTP (`[workload] protocol = "http"`): the model's mapping,
    /// through which every external request arrives and every answer leaves, recorded.
    pub http: Option<Box<dyn HttpApi<M>>>,
    /// The scenario's services, played by the model, and the connections open to them.
    pub services: super::services::Services,
}

impl<M: Message> Core<M> {
    /// The slot of the node whose step is running.
    fn stepping(&mut self) -> &mut NodeSlot {
        &mut self.slots[self.step_node.index()]
    }

    pub fn encode_scratch(&mut self, msg: &M) {
        self.scratch.clear();
        if let Err(e) = codec::encode_into(msg, &mut self.scratch) {
            // Serialize impls of plain data do not fail; one that does is a bug in node code.
            panic!("message {msg:?} failed to encode: {e}");
        }
    }

    /// Records that the message of the send at `send` will arrive twice.
    pub fn note_duplicate(&mut self, send: u64) {
        self.trace.push(|e, out| e.duplicate(out, send));
        self.stats.duplicated += 1;
    }

    /// Records what the step's handler logged with `tracing`.
    pub fn flush_logs(&mut self) {
        for line in self.logs.take() {
            self.trace
                .push(|e, out| e.log(out, line.level, &line.target, &line.text));
            self.stats.log_lines += 1;
        }
    }

    pub fn drop_msg(&mut self, send: u64, reason: DropReason) {
        let now = self.now_ns;
        self.trace.push(|e, out| e.drop_msg(out, now, send, reason));
        self.stats.dropped += 1;
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, msg: M, send: u64, payload: InlinePayload) {
        let key = self.fuzzing.as_mut().map(|f| {
            let request = self.step_ids.as_slice().first().map(|r| r.0);
            f.key_send(from, to, request, crate::variant::variant_name(&msg))
        });
        let link = *self.net.link(from, to);
        if self.net.is_blocked(from, to) {
            return self.drop_msg(send, DropReason::Partition);
        }
        if self.net_rng.rng().chance(link.drop) {
            return self.drop_msg(send, DropReason::Loss);
        }
        // The network's draws come first and are the same whatever the decider chooses, so
        // that a choice about this message shifts no other message's latency.
        let copy_ns = self
            .net_rng
            .rng()
            .chance(link.duplicate)
            .then(|| self.latency_ns(&link));
        let latency_ns = self.latency_ns(&link);
        let fate = match (key, self.fuzzing.as_mut()) {
            (Some((key, _)), Some(f)) => f.fate(&key, send),
            _ => Fate::Deliver,
        };
        let key = key.map_or(NO_KEY, |(_, index)| index);
        let (held_ns, twice) = match fate {
            Fate::Deliver => (0, false),
            Fate::Drop => return self.drop_msg(send, DropReason::Loss),
            Fate::Duplicate => (0, true),
            Fate::Delay(by_ns) => (by_ns, false),
        };
        let ids = self.step_ids;
        let original = InFlight {
            to,
            from,
            msg,
            send,
            ids,
            payload,
            key,
        };
        if let Some(copy_ns) = copy_ns {
            self.note_duplicate(send);
            self.deliver_later(original.clone(), copy_ns + held_ns);
        }
        if twice {
            self.note_duplicate(send);
            self.deliver_later(original.clone(), latency_ns);
        }
        self.deliver_later(original, latency_ns + held_ns);
    }

    fn latency_ns(&mut self, link: &LinkParams) -> u64 {
        self.net_rng
            .rng()
            .between(link.latency.lo_ns, link.latency.hi_ns)
    }

    /// Queues one copy of a message, `latency_ns` after it leaves. Each copy draws its own
    /// latency: reordering falls out of this jitter, as a later send may draw a shorter one.
    fn deliver_later(&mut self, m: InFlight<M>, latency_ns: u64) {
        let departs = self.now_ns.saturating_add(self.step_busy_ns);
        let at = departs.saturating_add(latency_ns);
        self.queue.push(at, Pending::Deliver(m));
    }

    pub fn cancel_timers_of(&mut self, node: NodeId) {
        let mine: Vec<TimerId> = self
            .timers
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(t, _)| *t)
            .collect();
        for timer in mine {
            if let Some((_, handle)) = self.timers.remove(&timer) {
                self.queue.cancel(handle);
            }
        }
    }
}

impl<M: Message> Env<M> for Core<M> {
    fn id(&self) -> NodeId {
        self.step_node
    }

    fn peers(&self) -> &[NodeId] {
        &self.slots[self.step_node.index()].peers
    }

    fn node_count(&self) -> usize {
        self.net.node_count()
    }

    fn boot(&self) -> Boot {
        self.slots[self.step_node.index()].boot
    }

    fn now(&mut self) -> Time {
        let now_ns = self.now_ns;
        let value_ns = self.stepping().clock.read(now_ns);
        self.trace.push(|e, out| e.clock_read(out, value_ns));
        self.stats.clock_reads += 1;
        Time(value_ns)
    }

    fn send(&mut self, to: NodeId, msg: M) {
        let from = self.step_node;
        let (digest, payload) = if self.trace.enabled() {
            self.encode_scratch(&msg);
            (
                codec::digest(&self.scratch),
                InlinePayload::keep(&self.scratch),
            )
        } else {
            (0, InlinePayload::NONE)
        };
        let send = self.trace.push(|e, out| e.send(out, to, digest));
        self.stats.sent += 1;
        if to.index() >= self.net.node_count() {
            return self.drop_msg(send, DropReason::NoSuchNode);
        }
        self.transmit(from, to, msg, send, payload);
    }

    fn set_timer(&mut self, after: Duration, tag: Tag) -> TimerId {
        let timer = TimerId(self.next_timer);
        self.next_timer += 1;
        let after_ns = crate::ids::duration_ns(after);
        let set = self
            .trace
            .push(|e, out| e.timer_set(out, timer, &tag, after_ns));
        let node = self.step_node;
        let true_after_ns = self.stepping().clock.true_span(after_ns);
        let at = self.now_ns.saturating_add(true_after_ns);
        let handle = self.queue.push(
            at,
            Pending::Timer {
                node,
                timer,
                tag,
                set,
                ids: self.step_ids,
            },
        );
        self.timers.insert(timer, (node, handle));
        timer
    }

    fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.timers.get(&timer) {
            Some((owner, handle)) if *owner == self.step_node => {
                let handle = *handle;
                self.timers.remove(&timer);
                self.queue.cancel(handle);
                self.trace.push(|e, out| e.timer_cancel(out, timer));
                true
            }
            _ => false,
        }
    }

    fn rng(&mut self) -> &mut SimRng {
        self.stepping().rng.rng()
    }

    fn storage(&mut self) -> &mut Storage {
        &mut self.stepping().storage
    }

    fn annotate(&mut self, text: String) {
        self.trace.push(|e, out| e.annotate(out, &text));
        self.stats.annotations += 1;
    }

    fn respond(&mut self, request: RequestId, msg: M) {
        let digest = if self.trace.enabled() {
            self.encode_scratch(&msg);
            codec::digest(&self.scratch)
        } else {
            0
        };
        self.trace.push(|e, out| e.respond(out, request, digest));
        if let (Some(http), true) = (&self.http, self.trace.enabled()) {
            let response = http.response(&msg);
            self.trace
                .push(|e, out| e.http_response(out, request, &response));
        }
        self.stats.responses += 1;
        if let Some(answers) = &mut self.answers {
            answers.push((request, msg.clone()));
        }
        let node = self.step_node;
        if let Some(client) = &mut self.client {
            client.push(ClientEvent::Complete { request, node, msg });
        }
    }

    fn request_ids(&self) -> &[RequestId] {
        self.step_ids.as_slice()
    }

    fn detach(&mut self) {
        self.step_ids = ReqIds::default();
    }

    fn busy(&mut self, duration: Duration) {
        let ns = crate::ids::duration_ns(duration);
        self.step_busy_ns = self.step_busy_ns.saturating_add(ns);
        self.trace.push(|e, out| e.busy(out, ns));
    }

    fn connect(&mut self, service: &str, timeout_ns: u64) -> ConnId {
        self.service_connect(service, timeout_ns)
    }

    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.service_write(conn, bytes)
    }

    fn close(&mut self, conn: ConnId) {
        self.service_close(conn)
    }
}
