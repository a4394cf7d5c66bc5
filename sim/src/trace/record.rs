//! The trace's records and their compact wire encoding.
//!
//! A trace is a flat sequence of records; a record's *index* is its position. Records are of
//! three sorts:
//! - **inputs** that start a *step* on one node (start, restart, delivery, timer firing,
//!   external request) or end its incarnation (crash); each carries its time and a causal link
//!   to the previous input on the same node;
//! - **outputs and in-step inputs** of the step that precedes them (sends, timer settings,
//!   annotations, clock readings, replies): they inherit that step's node and time, so they
//!   carry neither;
//! - **world records**: network faults, drops, duplicates, an invariant violation, the end.
//!
//! On the wire, times are deltas from the previous timed record and links are distances
//! back from the current index, all varints, so a delivery with its send costs ~30 bytes plus
//! the payload.

use crate::codec::{put_bytes, put_ivarint, put_uvarint, Cursor, ReadError};
use crate::http::{HttpRequest, HttpResponse};
use crate::ids::{NodeId, RequestId, TimerId};
use crate::service::{ConnId, ServiceEvent, ServiceOp};
use crate::snapshot::NodeSnapshot;
use crate::tag::{Tag, TAG_BYTES_MAX};

/// Why a sent message never arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Random message loss from the network model.
    Loss,
    /// The link was cut by a partition.
    Partition,
    /// The receiver was down when the message arrived.
    NodeDown,
    /// The destination is not a node of this cluster.
    NoSuchNode,
}

impl DropReason {
    fn code(self) -> u8 {
        match self {
            DropReason::Loss => 0,
            DropReason::Partition => 1,
            DropReason::NodeDown => 2,
            DropReason::NoSuchNode => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DropReason::Loss,
            1 => DropReason::Partition,
            2 => DropReason::NodeDown,
            3 => DropReason::NoSuchNode,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::Partition => "partition",
            DropReason::NodeDown => "node down",
            DropReason::NoSuchNode => "no such node",
        }
    }
}

/// A change to the network or a node's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultRecord {
    /// Cut the listed directed links until the matching `Heal`.
    Cut {
        id: u32,
        links: Vec<(NodeId, NodeId)>,
    },
    /// Restore the links cut by the `Cut` with the same id.
    Heal { id: u32 },
    /// A node's clock jumps by `by_ns` (negative: backwards).
    ClockJump { node: NodeId, by_ns: i64 },
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The scenario's time limit was reached with every invariant holding.
    TimeLimit,
    /// Nothing was left to happen.
    Quiescent,
    /// The scenario's event bound was reached.
    EventLimit,
    /// An invariant broke; a `Violation` record precedes the end.
    Violation,
    /// A recorded run: the recording stopped.
    Recorded,
}

impl Outcome {
    fn code(self) -> u8 {
        match self {
            Outcome::TimeLimit => 0,
            Outcome::Quiescent => 1,
            Outcome::EventLimit => 2,
            Outcome::Violation => 3,
            Outcome::Recorded => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Outcome::TimeLimit,
            1 => Outcome::Quiescent,
            2 => Outcome::EventLimit,
            3 => Outcome::Violation,
            4 => Outcome::Recorded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::TimeLimit => "time limit reached",
            Outcome::Quiescent => "quiescent",
            Outcome::EventLimit => "event limit reached",
            Outcome::Violation => "invariant violated",
            Outcome::Recorded => "recording ended",
        }
    }
}

/// One trace record with absolute times and indices (the wire form uses deltas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// First boot of a node; `seed` seeds its random generator.
    Start {
        node: NodeId,
        prev: Option<u64>,
        seed: u64,
    },
    /// Boot after a crash: volatile state rebuilt, synced storage kept (`storage_digest`).
    Restart {
        node: NodeId,
        prev: Option<u64>,
        seed: u64,
        storage_digest: u64,
    },
    /// The node's history in the trace starts here, in the middle of a life: it is as the
    /// snapshot says (taken between two steps; its pending timers by their ids in this
    /// trace, whose firings link here as to their setting). What came before is not in
    /// the trace — a recording whose older segments retention deleted, or a window cut
    /// out of a longer run.
    Resume {
        node: NodeId,
        prev: Option<u64>,
        snapshot: Box<NodeSnapshot>,
    },
    /// A message arrives; `send` is the index of the `Send` that produced it, `None` when the
    /// sender's record of it is lost (a recorded node whose last log writes died with it).
    Deliver {
        node: NodeId,
        prev: Option<u64>,
        from: NodeId,
        send: Option<u64>,
        request_ids: Vec<RequestId>,
        payload: Vec<u8>,
    },
    /// A timer fires; `set` is the index of its `TimerSet`; `tag` the node's timer value.
    Timer {
        node: NodeId,
        prev: Option<u64>,
        timer: TimerId,
        tag: Tag,
        set: u64,
        request_ids: Vec<RequestId>,
    },
    /// A request from outside the cluster; it starts a new request id.
    External {
        node: NodeId,
        prev: Option<u64>,
        request: RequestId,
        payload: Vec<u8>,
    },
    /// The node stops: volatile state and unsynced storage are gone, timers are cancelled.
    Crash { node: NodeId, prev: Option<u64> },
    /// A network or clock fault.
    Fault(FaultRecord),
    /// The message of the `Send` at `send` is lost.
    Drop { send: u64, reason: DropReason },
    /// The network delivers the message of the `Send` at `send` twice.
    Duplicate { send: u64 },
    /// Output: a message to `to`; `digest` is the digest of its payload.
    Send { to: NodeId, digest: u64 },
    /// Output: a timer set to fire `after_ns` from now.
    TimerSet {
        timer: TimerId,
        tag: Tag,
        after_ns: u64,
    },
    /// Output: a timer cancelled before it fired.
    TimerCancel { timer: TimerId },
    /// Output: free text from node code.
    Annotate { text: String },
    /// In-step input: the node read its local clock.
    ClockRead { value_ns: u64 },
    /// Output: the reply to the external client of `request`.
    Respond { request: RequestId, digest: u64 },
    /// An invariant broke after the step at index `step`.
    Violation {
        step: u64,
        invariant: String,
        message: String,
    },
    /// The run ended.
    End { outcome: Outcome },
    /// Output: the handler kept its node busy for `ns` (modelled with `ctx.busy`, or
    /// measured in a recording): what it sends leaves that much later, and what arrives
    /// meanwhile waits.
    Busy { ns: u64 },
    /// The step's input waited `ns` in the node's queue (behind earlier busy handlers)
    /// before it was handled.
    Queued { ns: u64 },
    /// In-step input of a recorded `Restart`: the durable storage the node found. Which
    /// writes survive a real crash is the OS's choice, and the writes of a log tail lost
    /// in the crash are in it, so replay takes it as given.
    StorageImage { entries: Vec<(String, Vec<u8>)> },
    /// Output: a `tracing` event the handler emitted (see `sim::logs`). Replay does not
    /// check these, so logging added to node code still replays old traces.
    Log {
        level: u8,
        target: String,
        text: String,
    },
    /// In the step of the `External` input for `request`: the HTTP request that carried it
    /// (see `sim::http`). Replay does not check it: the model's mapping, not node code,
    /// made the message from it.
    HttpRequest {
        request: RequestId,
        http: Box<HttpRequest>,
    },
    /// Output, after the `Respond` to `request`: the HTTP response that carried the answer.
    HttpResponse {
        request: RequestId,
        http: Box<HttpResponse>,
    },
    /// Traffic between two processes retrace does not host, as a `retrace tap` between them
    /// saw it on connection `conn`. A world record: no node's step, and no causal link to
    /// any (none was observed).
    Wire { conn: u64, event: WireEvent },
    /// What happened on a connection the node opened to a service (see `sim::service`): an
    /// input, with the service's bytes in full. `cause` is the node's `ServiceOut` it
    /// answers (the connect, or the latest write on the connection), `None` when that is
    /// not in the trace; the request ids are that step's.
    ServiceIn {
        node: NodeId,
        prev: Option<u64>,
        conn: ConnId,
        cause: Option<u64>,
        request_ids: Vec<RequestId>,
        event: ServiceEvent,
    },
    /// Output: what the node did to a service connection, its bytes in full.
    ServiceOut { conn: ConnId, op: ServiceOp },
}

/// What a tap saw on one proxied connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WireEvent {
    /// A client connected to the tap `tap`, which connected on to `upstream`.
    Open {
        tap: String,
        client: String,
        upstream: String,
    },
    /// Bytes, in full, as they crossed: toward the upstream, or back to the client.
    Data { to_upstream: bool, bytes: Vec<u8> },
    /// The connection ended, and why (which side closed it, or what failed).
    Close { reason: String },
}

impl Record {
    /// The node whose step this record starts, if it is an input.
    pub fn input_node(&self) -> Option<NodeId> {
        match self {
            Record::Start { node, .. }
            | Record::Restart { node, .. }
            | Record::Resume { node, .. }
            | Record::Deliver { node, .. }
            | Record::Timer { node, .. }
            | Record::External { node, .. }
            | Record::ServiceIn { node, .. }
            | Record::Crash { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// For an input, the node's previous input (its program-order link), if any.
    pub fn prev_input(&self) -> Option<u64> {
        match self {
            Record::Start { prev, .. }
            | Record::Restart { prev, .. }
            | Record::Resume { prev, .. }
            | Record::Deliver { prev, .. }
            | Record::Timer { prev, .. }
            | Record::External { prev, .. }
            | Record::ServiceIn { prev, .. }
            | Record::Crash { prev, .. } => *prev,
            _ => None,
        }
    }

    /// The request ids of the step this input starts: a delivery's or a timer's (inherited
    /// from the step that sent or set it), an external request's own; none for the rest.
    pub fn request_ids(&self) -> &[RequestId] {
        match self {
            Record::Deliver { request_ids, .. }
            | Record::Timer { request_ids, .. }
            | Record::ServiceIn { request_ids, .. } => request_ids,
            Record::External { request, .. } => std::slice::from_ref(request),
            _ => &[],
        }
    }

    /// Whether the record carries its own time on the wire.
    pub fn is_timed(&self) -> bool {
        self.input_node().is_some()
            || matches!(
                self,
                Record::Fault(_) | Record::Drop { .. } | Record::End { .. } | Record::Wire { .. }
            )
    }

    /// Whether this record is what the network did to a message (dropped or duplicated it).
    /// It is neither an input nor a node's output: it may sit among the outputs of the step
    /// that sent the message, and no step ends at it.
    pub fn is_network_fate(&self) -> bool {
        matches!(self, Record::Drop { .. } | Record::Duplicate { .. })
    }

    /// Whether this record ends the step before it without being an input: a world event
    /// (a fault, a tap's traffic), a violation, the end.
    pub fn ends_step(&self) -> bool {
        matches!(
            self,
            Record::End { .. } | Record::Fault(_) | Record::Violation { .. } | Record::Wire { .. }
        )
    }

    /// A short name of the record's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Start { .. } => "start",
            Record::Restart { .. } => "restart",
            Record::Resume { .. } => "resume",
            Record::Deliver { .. } => "deliver",
            Record::Timer { .. } => "timer",
            Record::External { .. } => "external",
            Record::Crash { .. } => "crash",
            Record::Fault(_) => "fault",
            Record::Drop { .. } => "drop",
            Record::Duplicate { .. } => "duplicate",
            Record::Send { .. } => "send",
            Record::TimerSet { .. } => "timer-set",
            Record::TimerCancel { .. } => "timer-cancel",
            Record::Annotate { .. } => "annotate",
            Record::ClockRead { .. } => "clock-read",
            Record::Respond { .. } => "respond",
            Record::Violation { .. } => "violation",
            Record::End { .. } => "end",
            Record::Busy { .. } => "busy",
            Record::Queued { .. } => "queued",
            Record::StorageImage { .. } => "storage",
            Record::Log { .. } => "log",
            Record::HttpRequest { .. } => "http-request",
            Record::HttpResponse { .. } => "http-response",
            Record::Wire { .. } => "wire",
            Record::ServiceIn { .. } => "service-in",
            Record::ServiceOut { .. } => "service-out",
        }
    }
}

/// A record as read back, with its position, absolute time and node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub index: u64,
    pub time_ns: u64,
    /// The input's node, or for outputs the node of the step they belong to.
    pub node: Option<NodeId>,
    pub record: Record,
}

mod tag {
    pub const START: u8 = 1;
    pub const RESTART: u8 = 2;
    pub const DELIVER: u8 = 3;
    pub const TIMER: u8 = 4;
    pub const EXTERNAL: u8 = 5;
    pub const CRASH: u8 = 6;
    pub const CUT: u8 = 7;
    pub const HEAL: u8 = 8;
    pub const CLOCK_JUMP: u8 = 9;
    pub const DROP: u8 = 10;
    pub const DUPLICATE: u8 = 11;
    pub const SEND: u8 = 12;
    pub const TIMER_SET: u8 = 13;
    pub const TIMER_CANCEL: u8 = 14;
    pub const ANNOTATE: u8 = 15;
    pub const CLOCK_READ: u8 = 16;
    pub const RESPOND: u8 = 17;
    pub const VIOLATION: u8 = 18;
    pub const END: u8 = 19;
    pub const BUSY: u8 = 20;
    pub const QUEUED: u8 = 21;
    pub const STORAGE_IMAGE: u8 = 22;
    pub const LOG: u8 = 23;
    pub const RESUME: u8 = 24;
    pub const HTTP_REQUEST: u8 = 25;
    pub const HTTP_RESPONSE: u8 = 26;
    pub const WIRE: u8 = 27;
    pub const SERVICE_IN: u8 = 28;
    pub const SERVICE_OUT: u8 = 29;
}

/// What every input record starts with: the node whose step it starts, when, and the
/// back-link to that node's previous input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputHead {
    pub node: NodeId,
    pub time_ns: u64,
    pub prev: Option<u64>,
}

impl InputHead {
    pub fn new(node: NodeId, time_ns: u64, prev: Option<u64>) -> Self {
        InputHead {
            node,
            time_ns,
            prev,
        }
    }
}

/// Encodes record bodies (without framing) with delta state. The simulator's hot paths call
/// the per-kind methods directly; [`BodyEncoder::record`] encodes any owned record through
/// the same methods, so there is one encoding per kind.
#[derive(Debug, Default, Clone)]
pub struct BodyEncoder {
    /// Index the next record will get.
    pub index: u64,
    last_time_ns: u64,
    /// The node of the last input record, and how many inputs there were: with the time,
    /// where a reader starting at the next record is (`RecordPosition`, `position`).
    last_input_node: Option<NodeId>,
    inputs: u64,
}

impl BodyEncoder {
    fn time(&mut self, out: &mut Vec<u8>, time_ns: u64) {
        put_ivarint(out, time_ns.wrapping_sub(self.last_time_ns) as i64);
        self.last_time_ns = time_ns;
    }

    fn back(&self, out: &mut Vec<u8>, earlier: u64) {
        assert!(earlier < self.index, "links point backwards");
        put_uvarint(out, self.index - earlier);
    }

    fn prev(&self, out: &mut Vec<u8>, prev: Option<u64>) {
        match prev {
            Some(p) => self.back(out, p),
            None => out.push(0),
        }
    }

    /// A reader's position at the next record, `offset` bytes into the file (see
    /// `TraceReader::open_at`), and how many steps (inputs) come before it.
    pub fn position(&self, offset: u64) -> (crate::trace::RecordPosition, u64) {
        let at = crate::trace::RecordPosition {
            offset,
            index: self.index,
            time_ns: self.last_time_ns,
            step_node: self.last_input_node,
        };
        (at, self.inputs)
    }

    fn input_head(&mut self, out: &mut Vec<u8>, tag: u8, head: InputHead) {
        self.last_input_node = Some(head.node);
        self.inputs += 1;
        out.push(tag);
        put_uvarint(out, u64::from(head.node.0));
        self.time(out, head.time_ns);
        self.prev(out, head.prev);
    }

    fn request_ids(out: &mut Vec<u8>, ids: &[RequestId]) {
        put_uvarint(out, ids.len() as u64);
        for id in ids {
            put_uvarint(out, id.0);
        }
    }

    pub fn start(&mut self, out: &mut Vec<u8>, head: InputHead, seed: u64) {
        self.input_head(out, tag::START, head);
        out.extend_from_slice(&seed.to_le_bytes());
    }

    pub fn restart(&mut self, out: &mut Vec<u8>, head: InputHead, seed: u64, storage_digest: u64) {
        self.input_head(out, tag::RESTART, head);
        out.extend_from_slice(&seed.to_le_bytes());
        out.extend_from_slice(&storage_digest.to_le_bytes());
    }

    pub fn resume(&mut self, out: &mut Vec<u8>, head: InputHead, snapshot: &NodeSnapshot) {
        self.input_head(out, tag::RESUME, head);
        // A snapshot is plain data: encoding cannot fail.
        let body = crate::codec::encode(snapshot).unwrap_or_default();
        put_bytes(out, &body);
    }

    pub fn deliver(
        &mut self,
        out: &mut Vec<u8>,
        head: InputHead,
        from: NodeId,
        send: Option<u64>,
        request_ids: &[RequestId],
        payload: &[u8],
    ) {
        self.input_head(out, tag::DELIVER, head);
        put_uvarint(out, u64::from(from.0));
        // Same encoding as `prev`: 0 means no link.
        self.prev(out, send);
        Self::request_ids(out, request_ids);
        put_bytes(out, payload);
    }

    pub fn timer(
        &mut self,
        out: &mut Vec<u8>,
        head: InputHead,
        timer: TimerId,
        tag: &Tag,
        set: u64,
        request_ids: &[RequestId],
    ) {
        self.input_head(out, tag::TIMER, head);
        put_uvarint(out, timer.0);
        put_bytes(out, tag.as_bytes());
        self.back(out, set);
        Self::request_ids(out, request_ids);
    }

    pub fn external(
        &mut self,
        out: &mut Vec<u8>,
        head: InputHead,
        request: RequestId,
        payload: &[u8],
    ) {
        self.input_head(out, tag::EXTERNAL, head);
        put_uvarint(out, request.0);
        put_bytes(out, payload);
    }

    pub fn crash(&mut self, out: &mut Vec<u8>, head: InputHead) {
        self.input_head(out, tag::CRASH, head);
    }

    pub fn fault(&mut self, out: &mut Vec<u8>, time_ns: u64, fault: &FaultRecord) {
        match fault {
            FaultRecord::Cut { id, links } => {
                out.push(tag::CUT);
                self.time(out, time_ns);
                put_uvarint(out, u64::from(*id));
                put_uvarint(out, links.len() as u64);
                for (from, to) in links {
                    put_uvarint(out, u64::from(from.0));
                    put_uvarint(out, u64::from(to.0));
                }
            }
            FaultRecord::Heal { id } => {
                out.push(tag::HEAL);
                self.time(out, time_ns);
                put_uvarint(out, u64::from(*id));
            }
            FaultRecord::ClockJump { node, by_ns } => {
                out.push(tag::CLOCK_JUMP);
                self.time(out, time_ns);
                put_uvarint(out, u64::from(node.0));
                put_ivarint(out, *by_ns);
            }
        }
    }

    pub fn drop_msg(&mut self, out: &mut Vec<u8>, time_ns: u64, send: u64, reason: DropReason) {
        out.push(tag::DROP);
        self.time(out, time_ns);
        self.back(out, send);
        out.push(reason.code());
    }

    pub fn duplicate(&mut self, out: &mut Vec<u8>, send: u64) {
        out.push(tag::DUPLICATE);
        self.back(out, send);
    }

    pub fn send(&mut self, out: &mut Vec<u8>, to: NodeId, digest: u64) {
        out.push(tag::SEND);
        put_uvarint(out, u64::from(to.0));
        out.extend_from_slice(&digest.to_le_bytes());
    }

    pub fn timer_set(&mut self, out: &mut Vec<u8>, timer: TimerId, tag: &Tag, after_ns: u64) {
        out.push(tag::TIMER_SET);
        put_uvarint(out, timer.0);
        put_bytes(out, tag.as_bytes());
        put_uvarint(out, after_ns);
    }

    pub fn timer_cancel(&mut self, out: &mut Vec<u8>, timer: TimerId) {
        out.push(tag::TIMER_CANCEL);
        put_uvarint(out, timer.0);
    }

    pub fn annotate(&mut self, out: &mut Vec<u8>, text: &str) {
        out.push(tag::ANNOTATE);
        put_bytes(out, text.as_bytes());
    }

    pub fn clock_read(&mut self, out: &mut Vec<u8>, value_ns: u64) {
        out.push(tag::CLOCK_READ);
        put_uvarint(out, value_ns);
    }

    pub fn respond(&mut self, out: &mut Vec<u8>, request: RequestId, digest: u64) {
        out.push(tag::RESPOND);
        put_uvarint(out, request.0);
        out.extend_from_slice(&digest.to_le_bytes());
    }

    pub fn violation(&mut self, out: &mut Vec<u8>, step: u64, invariant: &str, message: &str) {
        out.push(tag::VIOLATION);
        self.back(out, step);
        put_bytes(out, invariant.as_bytes());
        put_bytes(out, message.as_bytes());
    }

    pub fn end(&mut self, out: &mut Vec<u8>, time_ns: u64, outcome: Outcome) {
        out.push(tag::END);
        self.time(out, time_ns);
        out.push(outcome.code());
    }

    pub fn busy(&mut self, out: &mut Vec<u8>, ns: u64) {
        out.push(tag::BUSY);
        put_uvarint(out, ns);
    }

    pub fn queued(&mut self, out: &mut Vec<u8>, ns: u64) {
        out.push(tag::QUEUED);
        put_uvarint(out, ns);
    }

    pub fn log(&mut self, out: &mut Vec<u8>, level: u8, target: &str, text: &str) {
        out.push(tag::LOG);
        out.push(level);
        put_bytes(out, target.as_bytes());
        put_bytes(out, text.as_bytes());
    }

    pub fn http_request(&mut self, out: &mut Vec<u8>, request: RequestId, http: &HttpRequest) {
        out.push(tag::HTTP_REQUEST);
        put_uvarint(out, request.0);
        put_bytes(out, http.method.as_bytes());
        put_bytes(out, http.target.as_bytes());
        put_headers(out, &http.headers);
        put_bytes(out, &http.body);
    }

    pub fn http_response(&mut self, out: &mut Vec<u8>, request: RequestId, http: &HttpResponse) {
        out.push(tag::HTTP_RESPONSE);
        put_uvarint(out, request.0);
        put_uvarint(out, u64::from(http.status));
        put_headers(out, &http.headers);
        put_bytes(out, &http.body);
    }

    pub fn service_in(
        &mut self,
        out: &mut Vec<u8>,
        head: InputHead,
        conn: ConnId,
        cause: Option<u64>,
        request_ids: &[RequestId],
        event: &ServiceEvent,
    ) {
        self.input_head(out, tag::SERVICE_IN, head);
        put_uvarint(out, conn.0);
        // Same encoding as `prev`: 0 means no link.
        self.prev(out, cause);
        Self::request_ids(out, request_ids);
        match event {
            ServiceEvent::Connected => out.push(0),
            ServiceEvent::Data { bytes } => {
                out.push(1);
                put_bytes(out, bytes);
            }
            ServiceEvent::Closed { reason } => {
                out.push(2);
                put_bytes(out, reason.as_bytes());
            }
            ServiceEvent::TimedOut => out.push(3),
        }
    }

    pub fn service_out(&mut self, out: &mut Vec<u8>, conn: ConnId, op: &ServiceOp) {
        out.push(tag::SERVICE_OUT);
        put_uvarint(out, conn.0);
        match op {
            ServiceOp::Connect {
                service,
                timeout_ns,
            } => {
                out.push(0);
                put_bytes(out, service.as_bytes());
                put_uvarint(out, *timeout_ns);
            }
            ServiceOp::Write { bytes } => {
                out.push(1);
                put_bytes(out, bytes);
            }
            ServiceOp::Close => out.push(2),
        }
    }

    pub fn wire(&mut self, out: &mut Vec<u8>, time_ns: u64, conn: u64, event: &WireEvent) {
        out.push(tag::WIRE);
        self.time(out, time_ns);
        put_uvarint(out, conn);
        match event {
            WireEvent::Open {
                tap,
                client,
                upstream,
            } => {
                out.push(0);
                put_bytes(out, tap.as_bytes());
                put_bytes(out, client.as_bytes());
                put_bytes(out, upstream.as_bytes());
            }
            WireEvent::Data { to_upstream, bytes } => {
                out.push(if *to_upstream { 1 } else { 2 });
                put_bytes(out, bytes);
            }
            WireEvent::Close { reason } => {
                out.push(3);
                put_bytes(out, reason.as_bytes());
            }
        }
    }

    pub fn storage_image(&mut self, out: &mut Vec<u8>, entries: &[(String, Vec<u8>)]) {
        out.push(tag::STORAGE_IMAGE);
        put_uvarint(out, entries.len() as u64);
        for (k, v) in entries {
            put_bytes(out, k.as_bytes());
            put_bytes(out, v);
        }
    }

    /// Encodes an owned record. `time_ns` is used only by timed records.
    pub fn record(&mut self, out: &mut Vec<u8>, time_ns: u64, record: &Record) {
        match record {
            Record::Start { node, prev, seed } => {
                self.start(out, InputHead::new(*node, time_ns, *prev), *seed)
            }
            Record::Restart {
                node,
                prev,
                seed,
                storage_digest,
            } => self.restart(
                out,
                InputHead::new(*node, time_ns, *prev),
                *seed,
                *storage_digest,
            ),
            Record::Resume {
                node,
                prev,
                snapshot,
            } => self.resume(out, InputHead::new(*node, time_ns, *prev), snapshot),
            Record::Deliver {
                node,
                prev,
                from,
                send,
                request_ids,
                payload,
            } => self.deliver(
                out,
                InputHead::new(*node, time_ns, *prev),
                *from,
                *send,
                request_ids,
                payload,
            ),
            Record::Timer {
                node,
                prev,
                timer,
                tag,
                set,
                request_ids,
            } => self.timer(
                out,
                InputHead::new(*node, time_ns, *prev),
                *timer,
                tag,
                *set,
                request_ids,
            ),
            Record::External {
                node,
                prev,
                request,
                payload,
            } => self.external(
                out,
                InputHead::new(*node, time_ns, *prev),
                *request,
                payload,
            ),
            Record::Crash { node, prev } => self.crash(out, InputHead::new(*node, time_ns, *prev)),
            Record::Fault(fault) => self.fault(out, time_ns, fault),
            Record::Drop { send, reason } => self.drop_msg(out, time_ns, *send, *reason),
            Record::Duplicate { send } => self.duplicate(out, *send),
            Record::Send { to, digest } => self.send(out, *to, *digest),
            Record::TimerSet {
                timer,
                tag,
                after_ns,
            } => self.timer_set(out, *timer, tag, *after_ns),
            Record::TimerCancel { timer } => self.timer_cancel(out, *timer),
            Record::Annotate { text } => self.annotate(out, text),
            Record::ClockRead { value_ns } => self.clock_read(out, *value_ns),
            Record::Respond { request, digest } => self.respond(out, *request, *digest),
            Record::Violation {
                step,
                invariant,
                message,
            } => self.violation(out, *step, invariant, message),
            Record::End { outcome } => self.end(out, time_ns, *outcome),
            Record::Busy { ns } => self.busy(out, *ns),
            Record::Queued { ns } => self.queued(out, *ns),
            Record::StorageImage { entries } => self.storage_image(out, entries),
            Record::Log {
                level,
                target,
                text,
            } => self.log(out, *level, target, text),
            Record::HttpRequest { request, http } => self.http_request(out, *request, http),
            Record::HttpResponse { request, http } => self.http_response(out, *request, http),
            Record::Wire { conn, event } => self.wire(out, time_ns, *conn, event),
            Record::ServiceIn {
                node,
                prev,
                conn,
                cause,
                request_ids,
                event,
            } => self.service_in(
                out,
                InputHead::new(*node, time_ns, *prev),
                *conn,
                *cause,
                request_ids,
                event,
            ),
            Record::ServiceOut { conn, op } => self.service_out(out, *conn, op),
        }
    }
}

fn put_headers(out: &mut Vec<u8>, headers: &[(String, String)]) {
    put_uvarint(out, headers.len() as u64);
    for (name, value) in headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
}

/// Why a record body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Truncated,
    Malformed(&'static str),
    UnknownTag(u8),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Truncated => f.write_str("record body ends early"),
            BodyError::Malformed(what) => write!(f, "malformed {what}"),
            BodyError::UnknownTag(t) => write!(f, "unknown record tag {t}"),
        }
    }
}

impl From<ReadError> for BodyError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::End => BodyError::Truncated,
            ReadError::Malformed => BodyError::Malformed("field"),
        }
    }
}

/// Decodes record bodies, undoing the delta encoding of [`BodyEncoder`].
#[derive(Debug, Default, Clone)]
pub struct BodyDecoder {
    index: u64,
    time_ns: u64,
    step_node: Option<NodeId>,
}

impl BodyDecoder {
    /// A decoder that goes on from the middle of a trace: the next record gets `index`,
    /// the record before it was at `time_ns` (times are deltas), and the step open there
    /// is `step_node`'s (outputs take their step's node). What a trace index keeps per
    /// block, so a block decodes without the records before it.
    pub fn resume(index: u64, time_ns: u64, step_node: Option<NodeId>) -> BodyDecoder {
        BodyDecoder {
            index,
            time_ns,
            step_node,
        }
    }

    fn time(&mut self, c: &mut Cursor<'_>) -> Result<u64, BodyError> {
        let dt = c.ivarint()?;
        self.time_ns = self.time_ns.wrapping_add(dt as u64);
        Ok(self.time_ns)
    }

    fn back(&self, c: &mut Cursor<'_>) -> Result<u64, BodyError> {
        let d = c.uvarint()?;
        if d == 0 || d > self.index {
            return Err(BodyError::Malformed("causal link"));
        }
        Ok(self.index - d)
    }

    fn prev(&self, c: &mut Cursor<'_>) -> Result<Option<u64>, BodyError> {
        let d = c.uvarint()?;
        if d == 0 {
            return Ok(None);
        }
        if d > self.index {
            return Err(BodyError::Malformed("causal link"));
        }
        Ok(Some(self.index - d))
    }

    fn input(&mut self, c: &mut Cursor<'_>) -> Result<(NodeId, Option<u64>), BodyError> {
        let node = Self::node(c)?;
        self.time(c)?;
        let prev = self.prev(c)?;
        Ok((node, prev))
    }

    fn node(c: &mut Cursor<'_>) -> Result<NodeId, BodyError> {
        Ok(NodeId(c.u32varint()?))
    }

    /// A timer's tag, no longer than any tag a node may set.
    fn tag(c: &mut Cursor<'_>) -> Result<Tag, BodyError> {
        let bytes = c.bytes()?;
        if bytes.len() > TAG_BYTES_MAX {
            return Err(BodyError::Malformed(
                "timer tag longer than a timer may carry",
            ));
        }
        Ok(Tag::from_bytes(bytes))
    }

    fn request_ids(c: &mut Cursor<'_>) -> Result<Vec<RequestId>, BodyError> {
        let n = c.count()?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(RequestId(c.uvarint()?));
        }
        Ok(ids)
    }

    fn text(c: &mut Cursor<'_>) -> Result<String, BodyError> {
        String::from_utf8(c.bytes()?.to_vec()).map_err(|_| BodyError::Malformed("text"))
    }

    fn headers(c: &mut Cursor<'_>) -> Result<Vec<(String, String)>, BodyError> {
        // `count` is bounded by the bytes left (a header takes at least two), so this
        // allocation is too.
        let n = c.count()?;
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            headers.push((Self::text(c)?, Self::text(c)?));
        }
        Ok(headers)
    }

    /// Decodes one body; on error the decoder's state is unchanged in the ways that matter
    /// (the caller stops at the first bad record).
    pub fn decode(&mut self, body: &[u8]) -> Result<Event, BodyError> {
        let mut c = Cursor::new(body);
        let t = c.u8()?;
        let time_before = self.time_ns;
        let record = match t {
            tag::START => {
                let (node, prev) = self.input(&mut c)?;
                Record::Start {
                    node,
                    prev,
                    seed: c.u64_le()?,
                }
            }
            tag::RESTART => {
                let (node, prev) = self.input(&mut c)?;
                Record::Restart {
                    node,
                    prev,
                    seed: c.u64_le()?,
                    storage_digest: c.u64_le()?,
                }
            }
            tag::RESUME => {
                let (node, prev) = self.input(&mut c)?;
                // The frame bounds the bytes, and the codec every length inside them.
                let snapshot = crate::codec::decode::<NodeSnapshot>(c.bytes()?)
                    .map_err(|_| BodyError::Malformed("snapshot"))?;
                Record::Resume {
                    node,
                    prev,
                    snapshot: Box::new(snapshot),
                }
            }
            tag::DELIVER => {
                let (node, prev) = self.input(&mut c)?;
                let from = Self::node(&mut c)?;
                let send = self.prev(&mut c)?;
                let request_ids = Self::request_ids(&mut c)?;
                let payload = c.bytes()?.to_vec();
                Record::Deliver {
                    node,
                    prev,
                    from,
                    send,
                    request_ids,
                    payload,
                }
            }
            tag::TIMER => {
                let (node, prev) = self.input(&mut c)?;
                let timer = TimerId(c.uvarint()?);
                let tag = Self::tag(&mut c)?;
                let set = self.back(&mut c)?;
                let request_ids = Self::request_ids(&mut c)?;
                Record::Timer {
                    node,
                    prev,
                    timer,
                    tag,
                    set,
                    request_ids,
                }
            }
            tag::EXTERNAL => {
                let (node, prev) = self.input(&mut c)?;
                let request = RequestId(c.uvarint()?);
                let payload = c.bytes()?.to_vec();
                Record::External {
                    node,
                    prev,
                    request,
                    payload,
                }
            }
            tag::CRASH => {
                let (node, prev) = self.input(&mut c)?;
                Record::Crash { node, prev }
            }
            tag::CUT => {
                self.time(&mut c)?;
                let id = c.u32varint()?;
                let n = c.count()?;
                let mut links = Vec::with_capacity(n);
                for _ in 0..n {
                    links.push((Self::node(&mut c)?, Self::node(&mut c)?));
                }
                Record::Fault(FaultRecord::Cut { id, links })
            }
            tag::HEAL => {
                self.time(&mut c)?;
                Record::Fault(FaultRecord::Heal { id: c.u32varint()? })
            }
            tag::CLOCK_JUMP => {
                self.time(&mut c)?;
                let node = Self::node(&mut c)?;
                Record::Fault(FaultRecord::ClockJump {
                    node,
                    by_ns: c.ivarint()?,
                })
            }
            tag::DROP => {
                self.time(&mut c)?;
                let send = self.back(&mut c)?;
                let reason =
                    DropReason::from_code(c.u8()?).ok_or(BodyError::Malformed("drop reason"))?;
                Record::Drop { send, reason }
            }
            tag::DUPLICATE => Record::Duplicate {
                send: self.back(&mut c)?,
            },
            tag::SEND => Record::Send {
                to: Self::node(&mut c)?,
                digest: c.u64_le()?,
            },
            tag::TIMER_SET => Record::TimerSet {
                timer: TimerId(c.uvarint()?),
                tag: Self::tag(&mut c)?,
                after_ns: c.uvarint()?,
            },
            tag::TIMER_CANCEL => Record::TimerCancel {
                timer: TimerId(c.uvarint()?),
            },
            tag::ANNOTATE => Record::Annotate {
                text: Self::text(&mut c)?,
            },
            tag::CLOCK_READ => Record::ClockRead {
                value_ns: c.uvarint()?,
            },
            tag::RESPOND => Record::Respond {
                request: RequestId(c.uvarint()?),
                digest: c.u64_le()?,
            },
            tag::VIOLATION => Record::Violation {
                step: self.back(&mut c)?,
                invariant: Self::text(&mut c)?,
                message: Self::text(&mut c)?,
            },
            tag::END => {
                self.time(&mut c)?;
                let outcome = Outcome::from_code(c.u8()?).ok_or(BodyError::Malformed("outcome"))?;
                Record::End { outcome }
            }
            tag::BUSY => Record::Busy { ns: c.uvarint()? },
            tag::QUEUED => Record::Queued { ns: c.uvarint()? },
            tag::LOG => Record::Log {
                level: c.u8()?,
                target: Self::text(&mut c)?,
                text: Self::text(&mut c)?,
            },
            tag::STORAGE_IMAGE => {
                // `count` is bounded by the bytes left, so this allocation is too.
                let n = c.count()?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let key = Self::text(&mut c)?;
                    entries.push((key, c.bytes()?.to_vec()));
                }
                Record::StorageImage { entries }
            }
            tag::HTTP_REQUEST => Record::HttpRequest {
                request: RequestId(c.uvarint()?),
                http: Box::new(HttpRequest {
                    method: Self::text(&mut c)?,
                    target: Self::text(&mut c)?,
                    headers: Self::headers(&mut c)?,
                    body: c.bytes()?.to_vec(),
                }),
            },
            tag::HTTP_RESPONSE => Record::HttpResponse {
                request: RequestId(c.uvarint()?),
                http: Box::new(HttpResponse {
                    status: u16::try_from(c.uvarint()?)
                        .map_err(|_| BodyError::Malformed("HTTP status"))?,
                    headers: Self::headers(&mut c)?,
                    body: c.bytes()?.to_vec(),
                }),
            },
            tag::WIRE => {
                self.time(&mut c)?;
                let conn = c.uvarint()?;
                let event = match c.u8()? {
                    0 => WireEvent::Open {
                        tap: Self::text(&mut c)?,
                        client: Self::text(&mut c)?,
                        upstream: Self::text(&mut c)?,
                    },
                    kind @ (1 | 2) => WireEvent::Data {
                        to_upstream: kind == 1,
                        bytes: c.bytes()?.to_vec(),
                    },
                    3 => WireEvent::Close {
                        reason: Self::text(&mut c)?,
                    },
                    _ => return Err(BodyError::Malformed("wire event")),
                };
                Record::Wire { conn, event }
            }
            tag::SERVICE_IN => {
                let (node, prev) = self.input(&mut c)?;
                let conn = ConnId(c.uvarint()?);
                let cause = self.prev(&mut c)?;
                let request_ids = Self::request_ids(&mut c)?;
                let event = match c.u8()? {
                    0 => ServiceEvent::Connected,
                    1 => ServiceEvent::Data {
                        bytes: c.bytes()?.to_vec(),
                    },
                    2 => ServiceEvent::Closed {
                        reason: Self::text(&mut c)?,
                    },
                    3 => ServiceEvent::TimedOut,
                    _ => return Err(BodyError::Malformed("service event")),
                };
                Record::ServiceIn {
                    node,
                    prev,
                    conn,
                    cause,
                    request_ids,
                    event,
                }
            }
            tag::SERVICE_OUT => {
                let conn = ConnId(c.uvarint()?);
                let op = match c.u8()? {
                    0 => ServiceOp::Connect {
                        service: Self::text(&mut c)?,
                        timeout_ns: c.uvarint()?,
                    },
                    1 => ServiceOp::Write {
                        bytes: c.bytes()?.to_vec(),
                    },
                    2 => ServiceOp::Close,
                    _ => return Err(BodyError::Malformed("service operation")),
                };
                Record::ServiceOut { conn, op }
            }
            other => return Err(BodyError::UnknownTag(other)),
        };
        if c.remaining() != 0 {
            self.time_ns = time_before;
            return Err(BodyError::Malformed("record length (trailing bytes)"));
        }
        let is_output = !record.is_timed()
            && !record.is_network_fate()
            && !matches!(record, Record::Violation { .. });
        if let Some(node) = record.input_node() {
            self.step_node = Some(node);
        } else if is_output && self.step_node.is_none() {
            self.time_ns = time_before;
            return Err(BodyError::Malformed("output outside of any step"));
        }
        let node = record
            .input_node()
            .or(if is_output { self.step_node } else { None });
        let event = Event {
            index: self.index,
            time_ns: self.time_ns,
            node,
            record,
        };
        self.index += 1;
        Ok(event)
    }
}
