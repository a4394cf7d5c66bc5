//! The real runtime: one node as one OS process. The same `Node` code as in the simulator,
//! behind an `Env` that talks TCP, reads the real clock, seeds its generator from the OS,
//! keeps storage in a file, and records every boundary input and output in the node's log.
//!
//! One thread owns the node and runs every handler (see `net` for the other threads). After
//! each event the runtime persists storage if the node synced, hands the log records to the
//! OS (and fsyncs them as the policy says), and only then releases the event's messages and
//! replies: nothing leaves a node that its log does not already hold.

use crate::client;
use crate::diag::{self, Status};
use crate::durable::DurableFile;
use crate::http_port::{self, HttpConn};
use crate::log::{wall_now_ns, Fsync, LogHeader, LogRecord, LogWriter, RecordError, Timing};
use crate::net::{self, ByteBudget, Deadline, Limits, PeerLink, PeerPort, Permit, Transport};
use crate::policy::LogPolicy;
use crate::service_conn::ServiceConns;
use crate::wire::{self, Envelope, MsgId, Wire};
use retrace_sim::codec;
use retrace_sim::http::{HttpApi, HttpRequest, HttpResponse};
use retrace_sim::logs::Capture;
use retrace_sim::snapshot::{NodeSnapshot, SnapshotOf};
use retrace_sim::trace::NodeInfo;
use retrace_sim::{
    Boot, ConnId, Ctx, Env, Model, Node, NodeId, RequestId, Scenario, ServiceEvent, ServiceOp,
    SimRng, StepRng, Storage, Time, TimerId,
};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Events waiting for the node's thread.
const INBOUND_QUEUE: usize = 8192;
/// How long a client connection waits for its reply.
const CLIENT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run one node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: NodeId,
    pub incarnation: u32,
    /// Every node's peer address, indexed by node id (this node's included).
    pub peer_addrs: Vec<SocketAddr>,
    pub client_addr: SocketAddr,
    /// Where to record; `None` runs unrecorded.
    pub log_path: Option<PathBuf>,
    pub storage_path: PathBuf,
    pub fsync: Fsync,
    /// Segments, retention and snapshots.
    pub policy: LogPolicy,
    /// A recording failure ends the node instead of only stopping the recording.
    pub strict: bool,
    /// How peer links are carried (mutual TLS, or plaintext only when asked for).
    pub transport: Transport,
    /// Bounds on what connections may cost the node.
    pub limits: Limits,
}

/// How far past the next expected sequence number of a sender's life a message may be.
/// Numbers grow by one per message sent, and a gap means messages the sender dropped (its
/// queue to us was full); a number far beyond any gap a real sender leaves is forged or
/// corrupt, and believing it would make every later real message look like a duplicate.
pub const SEQ_WINDOW: u64 = 1 << 24;

/// What a node did, printed when it stops.
#[derive(Debug, Default)]
pub struct NodeSummary {
    pub events: u64,
    pub delivered: u64,
    pub duplicates_dropped: u64,
    pub undecodable: u64,
    pub external: u64,
    /// Bytes written to the log in this life (some may since have been deleted).
    pub log_bytes: u64,
    /// Segments of this life's log, and how many of the node's segments retention deleted.
    pub segments: u32,
    pub segments_retired: usize,
    pub recording: bool,
}

enum Inbound<M> {
    /// A message, with when its frame was read off the connection; its permit holds its
    /// bytes in the node's inbound budget until it is handled.
    Peer(Envelope, Instant, Permit),
    Request {
        msg: M,
        /// The HTTP request that carried it, when it came over HTTP.
        http: Option<HttpRequest>,
        reply: Sender<Reply>,
        received: Instant,
        _permit: Option<Permit>,
    },
    /// What happened on a service connection, reported by its threads.
    Service {
        conn: u64,
        event: ServiceEvent,
        received: Instant,
    },
    /// `retrace mark`: keep this moment (the reply gets the mark as JSON).
    Mark {
        reason: String,
        reply: Sender<Vec<u8>>,
    },
    Shutdown,
}

/// An answer on its way to the client connection waiting for it.
enum Reply {
    /// A framed JSON reply's bytes.
    Framed(Vec<u8>),
    /// The response the model's HTTP mapping made of the answer (as recorded).
    Http(HttpResponse),
}

/// A client waiting for the answer to its request.
struct Waiter {
    reply: Sender<Reply>,
    /// Whether the request came over HTTP (its answer is mapped to a response, recorded).
    http: bool,
}

/// The client port's one frame that is not a request: `{"retrace_mark": "reason"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkRequest {
    retrace_mark: String,
}

/// The signal that marks the moment on a running node, for scripts and watchdogs.
pub const MARK_SIGNAL: i32 = signal_hook::consts::SIGUSR1;

/// A random seed from the OS (through std's randomly keyed hasher), to be recorded.
fn os_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(wall_now_ns());
    h.write_u32(std::process::id());
    h.finish()
}

/// An id unique in the whole recorded run, from a counter of this node's life: the counter
/// in the high bits, then 12 bits of incarnation and 12 of node id (small for the log's
/// varints). Request ids are made so, and timer ids too: a node keeps its timers' ids in its
/// state, so they must mean the same in the merged trace — where every node's timers live
/// together — as in the log, or a node resumed from a snapshot would hold ids of other
/// timers.
fn run_unique_id(counter: u64, incarnation: u32, node: NodeId) -> u64 {
    (counter << 24) | (u64::from(incarnation & 0xfff) << 12) | u64::from(node.0 & 0xfff)
}

struct Timers {
    /// (deadline, timer id) -> (encoded tag, request ids of the event that set it).
    queue: BTreeMap<(Instant, u64), (Vec<u8>, Vec<RequestId>)>,
    deadline_of: BTreeMap<u64, Instant>,
    next_id: u64,
}

/// Everything a handler's `Ctx` reaches, for one event.
struct RuntimeEnv<'a, M> {
    id: NodeId,
    incarnation: u32,
    peers: &'a [NodeId],
    node_count: usize,
    outputs: Vec<LogRecord>,
    rng: &'a mut StepRng,
    storage: &'a mut Storage,
    timers: &'a mut Timers,
    lamport: &'a mut u64,
    next_seq: &'a mut u64,
    event_index: u64,
    request_ids: Vec<RequestId>,
    outbox: &'a mut Vec<(usize, Vec<u8>)>,
    replies: &'a mut Vec<(RequestId, Reply)>,
    /// Who waits for which request, to answer an HTTP client over HTTP.
    waiting: &'a BTreeMap<RequestId, Waiter>,
    http: &'a dyn HttpApi<M>,
    /// The connection counter (ids are made unique in the run).
    next_conn: &'a mut u64,
    /// Service operations, released once the step is committed.
    service_ops: &'a mut Vec<(u64, ServiceOp)>,
}

impl<M: serde::Serialize + std::fmt::Debug> RuntimeEnv<'_, M> {
    /// Outputs wait here until the handler returns: the input record, which carries the
    /// handler's measured time, goes first.
    fn record(&mut self, r: LogRecord) {
        self.outputs.push(r);
    }
}

impl<M: retrace_sim::Message> Env<M> for RuntimeEnv<'_, M> {
    fn id(&self) -> NodeId {
        self.id
    }
    fn peers(&self) -> &[NodeId] {
        self.peers
    }
    fn node_count(&self) -> usize {
        self.node_count
    }
    fn boot(&self) -> Boot {
        // The log's start record says the same (`restart`), which replay and verify read.
        if self.incarnation > 0 {
            Boot::Restart
        } else {
            Boot::First
        }
    }
    fn now(&mut self) -> Time {
        let value_ns = wall_now_ns();
        self.record(LogRecord::ClockRead { value_ns });
        Time(value_ns)
    }
    fn send(&mut self, to: NodeId, msg: M) {
        let payload = match codec::encode(&msg) {
            Ok(p) => p,
            Err(e) => panic!("message {msg:?} failed to encode: {e}"),
        };
        let id = MsgId {
            node: self.id.0,
            incarnation: self.incarnation,
            seq: *self.next_seq,
        };
        *self.next_seq += 1;
        *self.lamport += 1;
        self.record(LogRecord::Send {
            to: to.0,
            seq: id.seq,
            digest: codec::digest(&payload),
        });
        if to.index() >= self.node_count {
            self.record(LogRecord::Annotate {
                text: format!("send to unknown node {to} dropped"),
            });
            return;
        }
        let env = Envelope {
            id,
            sender_event: self.event_index,
            lamport: *self.lamport,
            request_ids: self.request_ids.iter().map(|r| r.0).collect(),
            payload,
        };
        let mut frame = Vec::new();
        if wire::encode(&Wire::Msg(env), &mut frame).is_ok() {
            self.outbox.push((to.index(), frame));
        }
    }
    fn set_timer(&mut self, after: Duration, tag: retrace_sim::Tag) -> TimerId {
        let timer = run_unique_id(self.timers.next_id, self.incarnation, self.id);
        self.timers.next_id += 1;
        let after_ns = retrace_sim::duration_ns(after);
        let tag = tag.as_bytes().to_vec();
        self.record(LogRecord::TimerSet {
            timer,
            tag: tag.clone(),
            after_ns,
        });
        let deadline = Instant::now() + after;
        self.timers
            .queue
            .insert((deadline, timer), (tag, self.request_ids.clone()));
        self.timers.deadline_of.insert(timer, deadline);
        TimerId(timer)
    }
    fn cancel_timer(&mut self, timer: TimerId) -> bool {
        match self.timers.deadline_of.remove(&timer.0) {
            Some(deadline) => {
                self.timers.queue.remove(&(deadline, timer.0));
                self.record(LogRecord::TimerCancel { timer: timer.0 });
                true
            }
            None => false,
        }
    }
    fn rng(&mut self) -> &mut SimRng {
        self.rng.rng()
    }
    fn storage(&mut self) -> &mut Storage {
        self.storage
    }
    fn annotate(&mut self, text: String) {
        self.record(LogRecord::Annotate { text });
    }
    fn respond(&mut self, request: RequestId, msg: M) {
        let payload = codec::encode(&msg).unwrap_or_default();
        self.record(LogRecord::Respond {
            request: request.0,
            digest: codec::digest(&payload),
        });
        let reply = if self.waiting.get(&request).is_some_and(|w| w.http) {
            let http = self.http.response(&msg);
            self.record(LogRecord::HttpResponse {
                request: request.0,
                http: http.clone(),
            });
            Reply::Http(http)
        } else {
            let json = serde_json::json!({ "reply": msg });
            Reply::Framed(serde_json::to_vec(&json).unwrap_or_default())
        };
        self.replies.push((request, reply));
    }
    fn request_ids(&self) -> &[RequestId] {
        &self.request_ids
    }
    fn detach(&mut self) {
        self.request_ids.clear();
    }
    fn busy(&mut self, _duration: Duration) {
        // Real handlers take real time, which the runtime measures and records.
    }
    fn connect(&mut self, service: &str, timeout_ns: u64) -> ConnId {
        let conn = run_unique_id(*self.next_conn, self.incarnation, self.id);
        *self.next_conn += 1;
        let op = ServiceOp::Connect {
            service: service.to_string(),
            timeout_ns,
        };
        self.record(LogRecord::ServiceOut {
            conn,
            op: op.clone(),
        });
        self.service_ops.push((conn, op));
        ConnId(conn)
    }
    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        // Recorded in full: what the service got is exactly what replay checks.
        self.record(LogRecord::ServiceOut {
            conn: conn.0,
            op: ServiceOp::Write {
                bytes: bytes.clone(),
            },
        });
        self.service_ops.push((conn.0, ServiceOp::Write { bytes }));
    }
    fn close(&mut self, conn: ConnId) {
        self.record(LogRecord::ServiceOut {
            conn: conn.0,
            op: ServiceOp::Close,
        });
        self.service_ops.push((conn.0, ServiceOp::Close));
    }
}

/// Serves the client port: framed JSON requests, or HTTP/1.1 ones (told apart by the
/// first byte: see `http_port`), in; replies out. Connections are capped, a connection idle
/// longer than the limit or stalled inside a request is closed, and each request holds its
/// share of the inbound byte budget until handled.
fn serve_clients<M: retrace_sim::Message>(
    listener: TcpListener,
    tx: SyncSender<Inbound<M>>,
    label: String,
    limits: Limits,
    budget: Arc<ByteBudget>,
    http: Arc<dyn HttpApi<M>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let max = limits.client_connections_max;
    // A client says nothing to introduce itself: each counts as introduced at once.
    net::serve(
        listener,
        max,
        max,
        format!("{label}-clients"),
        stop,
        move |conn, mut slot| {
            slot.established();
            let _ = conn.set_nodelay(true);
            let Ok(mut conn) = Deadline::new(conn) else {
                return;
            };
            let warn = |e: &dyn std::fmt::Display| {
                diag::warn(format_args!(
                    "[{label}] client: {e}; closing the connection"
                ))
            };
            // Between requests a client may be idle up to its limit.
            conn.deadline = Some(Instant::now() + limits.client_idle_timeout);
            let mut first = [0u8; 1];
            match conn.read(&mut first) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => return warn(&e),
            }
            // A frame's length is at most a megabyte, so its first byte is zero; an HTTP
            // request starts with a method's letter. Anything else is read as a frame, and
            // refused as one.
            if first[0].is_ascii_uppercase() {
                let conn = HttpConn::new(conn, &first);
                return serve_http(conn, &tx, &limits, &budget, &*http, &warn);
            }
            let mut first = Some(first[0]);
            loop {
                let lead = match first.take() {
                    Some(byte) => byte,
                    None => {
                        conn.deadline = Some(Instant::now() + limits.client_idle_timeout);
                        let mut byte = [0u8; 1];
                        match conn.read(&mut byte) {
                            Ok(0) => return,
                            Ok(_) => byte[0],
                            Err(e) => return warn(&e),
                        }
                    }
                };
                // Once a frame has begun it must arrive within the stall limit.
                let deadline = Instant::now() + limits.stall_timeout;
                conn.deadline = Some(deadline);
                let mut permit = None;
                let frame = client::read_frame_with(&mut (&[lead][..]).chain(&mut conn), |len| {
                    permit = budget.acquire(u64::from(len), deadline);
                    permit.is_some()
                });
                let bytes = match frame {
                    Ok(b) => b,
                    Err(client::FrameError::Closed) => return,
                    Err(e) => {
                        warn(&e);
                        let err = serde_json::json!({ "error": e.to_string() });
                        let _ = client::write_frame(&mut conn, err.to_string().as_bytes());
                        return;
                    }
                };
                if let Ok(mark) = serde_json::from_slice::<MarkRequest>(&bytes) {
                    let (rtx, rrx) = mpsc::channel();
                    let request = Inbound::Mark {
                        reason: mark.retrace_mark,
                        reply: rtx,
                    };
                    if tx.send(request).is_err() {
                        return;
                    }
                    let reply = rrx.recv_timeout(CLIENT_REPLY_TIMEOUT).unwrap_or_else(|_| {
                        serde_json::json!({ "error": "no reply" })
                            .to_string()
                            .into_bytes()
                    });
                    if client::write_frame(&mut conn, &reply).is_err() {
                        return;
                    }
                    continue;
                }
                let reply = match (serde_json::from_slice::<M>(&bytes), permit) {
                    (Err(e), _) => {
                        serde_json::json!({ "error": format!("not a request of this model: {e}") })
                            .to_string()
                            .into_bytes()
                    }
                    (Ok(_), None) => return,
                    (Ok(msg), Some(permit)) => match ask(&tx, msg, None, Some(permit)) {
                        None => return,
                        Some(Reply::Framed(bytes)) => bytes,
                        Some(Reply::Http(_)) => return,
                    },
                };
                if client::write_frame(&mut conn, &reply).is_err() {
                    return;
                }
            }
        },
    )
}

/// Hands a request to the node's thread and waits for its answer: `None` when the node
/// has stopped; a timeout's answer says there was none.
fn ask<M>(
    tx: &SyncSender<Inbound<M>>,
    msg: M,
    http: Option<HttpRequest>,
    permit: Option<Permit>,
) -> Option<Reply> {
    let over_http = http.is_some();
    let (rtx, rrx) = mpsc::channel();
    let request = Inbound::Request {
        msg,
        http,
        reply: rtx,
        received: Instant::now(),
        _permit: permit,
    };
    tx.send(request).ok()?;
    Some(rrx.recv_timeout(CLIENT_REPLY_TIMEOUT).unwrap_or_else(|_| {
        let why = "the node gave no answer in time";
        if over_http {
            Reply::Http(HttpResponse::error(504, why))
        } else {
            Reply::Framed(serde_json::json!({ "error": why }).to_string().into_bytes())
        }
    }))
}

/// One HTTP client connection: requests in order, each mapped to the model's message by its
/// HTTP mapping (a request the mapping refuses gets the mapping's response and never
/// reaches the node), answered in order.
fn serve_http<M>(
    mut conn: HttpConn,
    tx: &SyncSender<Inbound<M>>,
    limits: &Limits,
    budget: &Arc<ByteBudget>,
    http: &dyn HttpApi<M>,
    warn: &dyn Fn(&dyn std::fmt::Display),
) {
    loop {
        let incoming =
            match conn.read_request(limits.client_idle_timeout, limits.stall_timeout, budget) {
                Ok(incoming) => incoming,
                Err(http_port::ReadError::Closed) => return,
                Err(http_port::ReadError::Io(e)) => return warn(&e),
                Err(http_port::ReadError::Refuse(response)) => {
                    warn(&format_args!(
                        "HTTP request refused with {}",
                        response.status
                    ));
                    let _ = conn.write_response(&response, false);
                    return;
                }
            };
        let keep_alive = incoming.keep_alive;
        let response = match http.request(&incoming.request) {
            Err(refused) => refused,
            Ok(msg) => match ask(tx, msg, Some(incoming.request), incoming.permit) {
                None => return,
                Some(Reply::Http(response)) => response,
                Some(Reply::Framed(_)) => return,
            },
        };
        if conn.write_response(&response, keep_alive).is_err() || !keep_alive {
            return;
        }
    }
}

/// One node's life in the runtime: its state, everything its handlers reach, its log and
/// its outgoing links. [`NodeRuntime::event`] is the one way an input reaches the node.
struct NodeRuntime<'o, M: Model> {
    id: NodeId,
    name: String,
    opts: &'o NodeOptions,
    node_count: usize,
    node: M::Node,
    peers: Vec<NodeId>,
    rng: StepRng,
    storage: Storage,
    durable: DurableFile,
    /// The storage sync count last written to disk.
    persisted_syncs: u64,
    /// Whether persisting storage has failed in this life (reported once).
    storage_failed: bool,
    timers: Timers,
    lamport: u64,
    next_seq: u64,
    next_request: u64,
    /// Per sender life (node, incarnation): the last sequence number delivered.
    last_seen: BTreeMap<(u32, u32), u64>,
    /// Clients waiting for the answer to their request.
    waiting: BTreeMap<RequestId, Waiter>,
    /// The model's HTTP mapping, shared with the client port's threads.
    http: Arc<dyn HttpApi<MsgOf<M>>>,
    summary: NodeSummary,
    log: LogWriter,
    links: Vec<PeerLink>,
    /// Node code's `tracing` events, which become log records of the event being handled.
    capture: Capture,
    /// Connections to the scenario's services.
    services: ServiceConns,
    /// Where service connections' threads hand their events.
    inbound: SyncSender<Inbound<MsgOf<M>>>,
}

type MsgOf<M> = <<M as Model>::Node as Node>::Msg;
type TimerOf<M> = <<M as Model>::Node as Node>::Timer;

impl<M: Model> NodeRuntime<'_, M> {
    /// One event: record the input, run the handler, persist, commit, release. Nothing the
    /// handler sent or answered leaves the node before its log holds the event.
    fn event(
        &mut self,
        mut input: LogRecord,
        in_step: Vec<LogRecord>,
        request_ids: Vec<RequestId>,
        call: impl FnOnce(&mut M::Node, &mut Ctx<'_, MsgOf<M>, TimerOf<M>>),
    ) -> Result<(), RecordError> {
        let event_index = self.log.next_index();
        let started = Instant::now();
        let mut outbox = Vec::new();
        let mut replies = Vec::new();
        let mut service_ops = Vec::new();
        self.rng.begin_step(&request_ids);
        let mut env = RuntimeEnv::<MsgOf<M>> {
            id: self.id,
            incarnation: self.opts.incarnation,
            peers: &self.peers,
            node_count: self.node_count,
            // What the runtime knew of the input besides the message comes first.
            outputs: in_step,
            rng: &mut self.rng,
            storage: &mut self.storage,
            timers: &mut self.timers,
            lamport: &mut self.lamport,
            next_seq: &mut self.next_seq,
            event_index,
            request_ids,
            outbox: &mut outbox,
            replies: &mut replies,
            waiting: &self.waiting,
            http: &*self.http,
            next_conn: &mut self.services.next_id,
            service_ops: &mut service_ops,
        };
        call(&mut self.node, &mut Ctx::new(&mut env));
        let step_ids = env.request_ids.clone();
        let mut outputs = env.outputs;
        outputs.extend(self.capture.take().into_iter().map(|l| LogRecord::Log {
            level: l.level,
            target: l.target,
            text: l.text,
        }));
        if let Some(t) = input.timing_mut() {
            t.busy_us = started.elapsed().as_micros() as u64;
        }
        // Records are plain data: encoding cannot fail.
        let _ = self.log.append(input);
        for o in outputs {
            let _ = self.log.append(o);
        }
        self.persist_storage();
        self.log.commit()?;
        for (to, frame) in outbox {
            self.links[to].send(frame);
        }
        for (request, reply) in replies {
            if let Some(waiter) = self.waiting.remove(&request) {
                let _ = waiter.reply.send(reply);
            }
        }
        for (conn, op) in service_ops {
            self.release_service_op(conn, op, step_ids.clone());
        }
        self.summary.events += 1;
        if self.log.snapshot_due() {
            self.snapshot()?;
        }
        Ok(())
    }

    /// One committed operation on a service connection goes out.
    fn release_service_op(&mut self, conn: u64, op: ServiceOp, ids: Vec<RequestId>) {
        match op {
            ServiceOp::Connect {
                service,
                timeout_ns,
            } => {
                let tx = self.inbound.clone();
                let deliver = Box::new(move |event| {
                    tx.send(Inbound::Service {
                        conn,
                        event,
                        received: Instant::now(),
                    })
                    .is_ok()
                });
                self.services
                    .connect(conn, &service, timeout_ns, ids, deliver)
            }
            ServiceOp::Write { bytes } => self.services.write(conn, bytes, ids),
            ServiceOp::Close => self.services.close(conn),
        }
    }

    /// What happened on a service connection, as the node's input. `ids`: the requests of
    /// the step that last used the connection.
    fn on_service(
        &mut self,
        conn: u64,
        ids: Vec<RequestId>,
        event: ServiceEvent,
        received: Instant,
    ) -> Result<(), RecordError> {
        let input = LogRecord::ServiceIn {
            wall_ns: wall_now_ns(),
            conn,
            request_ids: ids.iter().map(|r| r.0).collect(),
            event: event.clone(),
            timing: Timing {
                queued_us: received.elapsed().as_micros() as u64,
                busy_us: 0,
            },
        };
        self.event(input, Vec::new(), ids, |state, ctx| {
            state.on_service(ctx, ConnId(conn), event)
        })
    }

    /// Handles the service events the runtime made itself (refusals, timeouts), each an
    /// input; a handler may cause more (a reconnect refused), so the walk is bounded.
    fn service_local_events(&mut self) -> Result<(), RecordError> {
        self.services.expire(Instant::now());
        for _ in 0..crate::service_conn::SERVICE_CONNS_MAX {
            let Some((conn, ids, event)) = self.services.local.pop_front() else {
                break;
            };
            self.on_service(conn, ids, event, Instant::now())?;
        }
        Ok(())
    }

    /// Marks this moment in the log (between steps); the answer for `retrace mark`.
    fn mark(&mut self, reason: &str) -> Result<Vec<u8>, RecordError> {
        if !self.log.recording() {
            return Ok(serde_json::json!({ "error": "this node is not recording" })
                .to_string()
                .into_bytes());
        }
        let mark = self.log.mark(reason)?;
        Ok(serde_json::json!({ "marked": mark })
            .to_string()
            .into_bytes())
    }

    /// Records the node as it is between steps (see `retrace_sim::snapshot`).
    fn snapshot(&mut self) -> Result<(), RecordError> {
        let boot = if self.opts.incarnation > 0 {
            Boot::Restart
        } else {
            Boot::First
        };
        let started = Instant::now();
        let taken = NodeSnapshot::take(SnapshotOf {
            node: &self.node,
            storage: &self.storage,
            timers: &mut self.timers.deadline_of.keys().map(|&t| TimerId(t)),
            rng: &self.rng,
            boot,
        });
        match taken {
            Ok(snapshot) => self.log.snapshot(snapshot, started.elapsed()),
            Err(e) => {
                // Nothing re-executes from a snapshot that was not written: the log stays
                // whole, only longer to re-execute.
                diag::warn(format_args!(
                    "[{}] warning: the node's state does not encode, no snapshot: {e}",
                    self.name
                ));
                Ok(())
            }
        }
    }

    /// Writes storage to disk if the node synced since the last write.
    fn persist_storage(&mut self) {
        if self.storage.syncs() == self.persisted_syncs {
            return;
        }
        if let Err(e) = self.durable.store(self.storage.synced()) {
            // Once per life: a full disk fails every store after the first.
            if !self.storage_failed {
                self.storage_failed = true;
                diag::warn(format_args!(
                    "[{}] warning: persisting storage failed: {e}",
                    self.name
                ));
                diag::status(&Status::StorageNotPersisted {
                    reason: e.to_string(),
                });
            }
        }
        self.persisted_syncs = self.storage.syncs();
    }

    /// How long the loop may wait for input: until the next timer or the log's next write.
    fn wait(&self) -> Duration {
        let now = Instant::now();
        let mut wait = self
            .timers
            .queue
            .keys()
            .next()
            .map_or(Duration::from_millis(200), |(d, _)| {
                d.saturating_duration_since(now)
            });
        if let Some(sync_in) = self.log.next_write_in() {
            wait = wait.min(sync_in);
        }
        if let Some(deadline) = self.services.next_deadline() {
            wait = wait.min(deadline.saturating_duration_since(now));
        }
        if !self.services.local.is_empty() {
            wait = Duration::ZERO;
        }
        wait
    }

    /// A message from a peer. Nothing about the sender is believed until the whole message
    /// checks out: its number is new and within the window, and its payload decodes.
    fn on_peer(&mut self, env: Envelope, received: Instant) -> Result<(), RecordError> {
        let sender = (env.id.node, env.id.incarnation);
        let last = self.last_seen.get(&sender).copied();
        let next = last.map_or(0, |s| s.saturating_add(1));
        let checked = if last.is_some_and(|seq| env.id.seq <= seq) {
            Err(None)
        } else if env.id.seq > next.saturating_add(SEQ_WINDOW) {
            Err(Some(format!(
                "message {} is numbered past the window after #{next}",
                env.id
            )))
        } else {
            codec::decode::<MsgOf<M>>(&env.payload)
                .map_err(|e| Some(format!("message {} does not decode: {e}", env.id)))
        };
        let msg = match checked {
            Ok(msg) => msg,
            Err(None) => {
                self.summary.duplicates_dropped += 1;
                return Ok(());
            }
            Err(Some(why)) => {
                self.summary.undecodable += 1;
                diag::warn(format_args!("[{}] {why}; dropped", self.name));
                return Ok(());
            }
        };
        self.last_seen.insert(sender, env.id.seq);
        self.lamport = self.lamport.max(env.lamport) + 1;
        let from = NodeId(env.id.node);
        let ids = env.request_ids.iter().map(|&r| RequestId(r)).collect();
        let input = LogRecord::Deliver {
            wall_ns: wall_now_ns(),
            id: env.id,
            sender_event: env.sender_event,
            lamport: env.lamport,
            request_ids: env.request_ids,
            payload: env.payload,
            timing: Timing {
                queued_us: received.elapsed().as_micros() as u64,
                busy_us: 0,
            },
        };
        self.summary.delivered += 1;
        self.event(input, Vec::new(), ids, |state, ctx| {
            state.on_message(ctx, from, msg)
        })
    }

    /// A client's request: it gets a request id, and its client waits for the answer.
    fn on_request(
        &mut self,
        msg: MsgOf<M>,
        http: Option<HttpRequest>,
        reply: Sender<Reply>,
        received: Instant,
    ) -> Result<(), RecordError> {
        let request = RequestId(run_unique_id(
            self.next_request,
            self.opts.incarnation,
            self.id,
        ));
        self.next_request += 1;
        self.waiting.insert(
            request,
            Waiter {
                reply,
                http: http.is_some(),
            },
        );
        let in_step = http
            .map(|http| LogRecord::HttpRequest {
                request: request.0,
                http,
            })
            .into_iter()
            .collect();
        let payload = codec::encode(&msg).unwrap_or_default();
        let input = LogRecord::External {
            wall_ns: wall_now_ns(),
            request: request.0,
            payload,
            timing: Timing {
                queued_us: received.elapsed().as_micros() as u64,
                busy_us: 0,
            },
        };
        self.summary.external += 1;
        self.event(input, in_step, vec![request], |state, ctx| {
            state.on_request(ctx, msg)
        })
    }

    /// Fires every timer that is due, earliest first (ties by id).
    fn fire_due_timers(&mut self) -> Result<(), RecordError> {
        while let Some((deadline, timer)) = self
            .timers
            .queue
            .keys()
            .next()
            .copied()
            .filter(|(d, _)| *d <= Instant::now())
        {
            let Some((tag, ids)) = self.timers.queue.remove(&(deadline, timer)) else {
                break;
            };
            self.timers.deadline_of.remove(&timer);
            // This runtime encoded the tag from the node's own timer value.
            let value = codec::decode::<<M::Node as Node>::Timer>(&tag)
                .map_err(|e| RecordError(format!("timer {timer}: its tag does not decode: {e}")))?;
            let input = LogRecord::Timer {
                wall_ns: wall_now_ns(),
                timer,
                tag,
                request_ids: ids.iter().map(|r| r.0).collect(),
                timing: Timing {
                    queued_us: deadline.elapsed().as_micros() as u64,
                    busy_us: 0,
                },
            };
            self.event(input, Vec::new(), ids, |state, ctx| {
                state.on_timer(ctx, TimerId(timer), value)
            })?;
        }
        Ok(())
    }

    /// Ends the life: the stop record, the log flushed, the summary.
    fn stop(mut self) -> Result<NodeSummary, RecordError> {
        let _ = self.log.append(LogRecord::Stop {
            wall_ns: wall_now_ns(),
        });
        self.log.flush()?;
        self.summary.log_bytes = self.log.bytes();
        let (last, retired) = self.log.segments();
        self.summary.segments = last + 1;
        self.summary.segments_retired = retired.segments;
        self.summary.recording = self.log.recording();
        Ok(self.summary)
    }
}

/// The node's name in its scenario (`n<id>` if the scenario has fewer nodes).
fn node_name<O>(scenario: &Scenario<O>, id: NodeId) -> String {
    scenario
        .nodes
        .get(id.index())
        .map_or_else(|| format!("n{}", id.0), |n| n.name.clone())
}

/// The header of the node's log.
fn log_header<O>(scenario: &Scenario<O>, opts: &NodeOptions, name: &str) -> LogHeader {
    LogHeader {
        node: opts.id.0,
        name: name.to_string(),
        incarnation: opts.incarnation,
        model: scenario.model.clone(),
        scenario_name: scenario.name.clone(),
        scenario_toml: scenario.source.clone(),
        nodes: NodeInfo::list(
            scenario
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.role.as_str())),
        ),
        fsync: opts.fsync.describe(),
        writer: concat!("retrace-recorder ", env!("CARGO_PKG_VERSION")).to_string(),
        segment: 0,
        first_record: 0,
        started_wall_ns: 0,
    }
}

/// Runs node `opts.id` of `scenario` until `stop` says so (or its inbound channel closes).
/// Returns an error only when recording fails under `strict`, or a port cannot be bound.
pub fn run_node<M: Model>(
    scenario: &Scenario<M::Options>,
    opts: &NodeOptions,
    stop_rx: Option<Receiver<()>>,
) -> Result<NodeSummary, RecordError> {
    let id = opts.id;
    let name = node_name(scenario, id);
    let n = scenario.nodes.len();
    if opts.peer_addrs.len() != n {
        return Err(RecordError(format!(
            "{} peer addresses for {n} nodes",
            opts.peer_addrs.len()
        )));
    }
    let bind = |addr: SocketAddr| {
        TcpListener::bind(addr)
            .map_err(|e| RecordError(format!("{name}: cannot listen on {addr}: {e}")))
    };
    let peer_listener = bind(opts.peer_addrs[id.index()])?;
    let client_listener = bind(opts.client_addr)?;

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Inbound<MsgOf<M>>>(INBOUND_QUEUE);
    let peer_tx = tx.clone();
    let budget = ByteBudget::new(opts.limits.inbound_bytes_max);
    let spawn_err = |e: std::io::Error| RecordError(format!("{name}: cannot start a thread: {e}"));
    let port = PeerPort {
        node_count: n,
        transport: opts.transport.clone(),
        limits: opts.limits,
        budget: budget.clone(),
        label: name.clone(),
    };
    net::serve_peers(peer_listener, port, stop.clone(), move |env, permit| {
        peer_tx
            .send(Inbound::Peer(env, Instant::now(), permit))
            .is_ok()
    })
    .map_err(spawn_err)?;
    let http: Arc<dyn HttpApi<MsgOf<M>>> = Arc::from(M::http(&scenario.options));
    serve_clients(
        client_listener,
        tx.clone(),
        name.clone(),
        opts.limits,
        budget,
        http.clone(),
        stop.clone(),
    )
    .map_err(spawn_err)?;
    if let Some(stop_rx) = stop_rx {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = stop_rx.recv();
            let _ = tx.send(Inbound::Shutdown);
        });
    }
    let service_tx = tx.clone();
    drop(tx);

    let mut hello = Vec::new();
    let _ = wire::encode(
        &Wire::Hello {
            node: id.0,
            incarnation: opts.incarnation,
        },
        &mut hello,
    );
    let links: Vec<PeerLink> = opts
        .peer_addrs
        .iter()
        .enumerate()
        .map(|(to, addr)| {
            PeerLink::start(
                to as u32,
                *addr,
                hello.clone(),
                opts.transport.clone(),
                stop.clone(),
            )
        })
        .collect::<Result<_, _>>()
        .map_err(spawn_err)?;

    let log = match &opts.log_path {
        Some(path) => LogWriter::create(
            path,
            &log_header(scenario, opts, &name),
            opts.fsync,
            opts.strict,
        )?
        .with_policy(opts.policy),
        None => LogWriter::disabled(),
    };
    let durable = DurableFile::new(&opts.storage_path);
    let found = durable.load();
    let storage = Storage::from_synced(found.clone());
    let seed = os_seed();
    let mut rt = NodeRuntime::<M> {
        id,
        name,
        opts,
        node_count: n,
        node: M::build(&scenario.options, id),
        peers: retrace_sim::check::peers_of(id, n),
        rng: StepRng::new(seed),
        persisted_syncs: storage.syncs(),
        storage,
        durable,
        storage_failed: false,
        http,
        timers: Timers {
            queue: BTreeMap::new(),
            deadline_of: BTreeMap::new(),
            next_id: 0,
        },
        lamport: 0,
        next_seq: 0,
        next_request: 0,
        last_seen: BTreeMap::new(),
        waiting: BTreeMap::new(),
        summary: NodeSummary::default(),
        log,
        links,
        capture: Capture::new(),
        services: ServiceConns::new(
            scenario
                .services
                .iter()
                .map(|s| (s.name.clone(), s.address))
                .collect(),
        ),
        inbound: service_tx,
    };
    let _logs = rt.capture.enter();
    let marked = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(MARK_SIGNAL, marked.clone()) {
        diag::warn(format_args!(
            "[{}] warning: the mark signal cannot be caught: {e}",
            rt.name
        ));
    }

    // What the node finds on disk is an input: the OS decided which writes survived.
    let start = LogRecord::Start {
        wall_ns: wall_now_ns(),
        seed,
        restart: opts.incarnation > 0,
        storage: found.into_iter().collect(),
    };
    rt.event(start, Vec::new(), Vec::new(), |state, ctx| {
        state.on_start(ctx)
    })?;
    loop {
        match rx.recv_timeout(rt.wait()) {
            Ok(Inbound::Peer(env, received, _permit)) => rt.on_peer(env, received)?,
            Ok(Inbound::Request {
                msg,
                http,
                reply,
                received,
                _permit,
            }) => rt.on_request(msg, http, reply, received)?,
            Ok(Inbound::Service {
                conn,
                event,
                received,
            }) => {
                if let Some(ids) = rt.services.arrived(conn, &event) {
                    rt.on_service(conn, ids, event, received)?;
                }
            }
            Ok(Inbound::Mark { reason, reply }) => {
                let json = rt.mark(&reason)?;
                let _ = reply.send(json);
            }
            Ok(Inbound::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        rt.fire_due_timers()?;
        rt.service_local_events()?;
        if marked.swap(false, Ordering::AcqRel) {
            rt.mark("signal SIGUSR1")?;
        }
        rt.log.commit()?;
    }
    stop.store(true, Ordering::Relaxed);
    rt.stop()
}
