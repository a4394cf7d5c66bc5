//! The one checking environment: a node's code re-executed against what a runtime recorded.
//!
//! Two things re-execute recorded handlers — `verify` (over one node's log) and replay (over
//! a trace) — and both must agree with every runtime on what a handler's outputs are. So
//! there is one [`CheckingEnv`]: the caller turns the step's recorded outputs into
//! [`Expected`]s (from log records or trace records, leaving out what no code makes: log
//! lines, drops, queueing), hands over the node's rng, storage and timers, and runs the
//! handler with [`run_handler`]; every output the code makes must be the next expected one,
//! and [`CheckingEnv::finish`] reports the first that was not, or one the code never made.
//! What the callers keep is only their walk over inputs.

use crate::codec;
use crate::history::ClientEvent;
use crate::node::{Boot, Ctx, Env, Message, Node};
use crate::service::{ConnId, ServiceEvent, ServiceOp};
use crate::tag::Tag;
use crate::trace::Record;
use crate::{NodeId, RequestId, SimRng, StepRng, Storage, Time, TimerId};
use std::collections::BTreeSet;
use std::time::Duration;

/// A recorded output, in the terms both trace and log records convert to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected<'a> {
    Send {
        to: NodeId,
        digest: u64,
    },
    TimerSet {
        timer: TimerId,
        /// The encoded timer value.
        tag: &'a [u8],
        after_ns: u64,
    },
    TimerCancel {
        timer: TimerId,
    },
    Annotate {
        text: &'a str,
    },
    ClockRead {
        value_ns: u64,
    },
    Respond {
        request: RequestId,
        digest: u64,
    },
    /// Modelled service time (checked in simulated traces only).
    Busy {
        ns: u64,
    },
    /// An operation on a service connection, its bytes in full.
    ServiceOut {
        conn: ConnId,
        op: &'a ServiceOp,
    },
}

impl Expected<'_> {
    /// As a trace record (for describing it).
    pub fn to_record(self) -> Record {
        match self {
            Expected::Send { to, digest } => Record::Send { to, digest },
            Expected::TimerSet {
                timer,
                tag,
                after_ns,
            } => Record::TimerSet {
                timer,
                tag: Tag::from_bytes(tag),
                after_ns,
            },
            Expected::TimerCancel { timer } => Record::TimerCancel { timer },
            Expected::Annotate { text } => Record::Annotate { text: text.into() },
            Expected::ClockRead { value_ns } => Record::ClockRead { value_ns },
            Expected::Respond { request, digest } => Record::Respond { request, digest },
            Expected::Busy { ns } => Record::Busy { ns },
            Expected::ServiceOut { conn, op } => Record::ServiceOut {
                conn,
                op: op.clone(),
            },
        }
    }
}

/// A record as a mismatch report shows it.
pub fn describe(r: &Record) -> String {
    match r {
        Record::Send { to, digest } => format!("send to n{} (digest {digest:016x})", to.0),
        Record::Respond { request, digest } => {
            format!("respond to {request} (digest {digest:016x})")
        }
        Record::ServiceOut { conn, op } => match op {
            ServiceOp::Connect {
                service,
                timeout_ns,
            } => format!(
                "connect {conn} to service `{service}` (timeout {})",
                crate::format_ns(*timeout_ns)
            ),
            ServiceOp::Write { bytes } => format!(
                "write {} bytes to {conn}: {}",
                bytes.len(),
                crate::http::show_bytes(bytes, 80)
            ),
            ServiceOp::Close => format!("close {conn}"),
        },
        other => format!("{other:?}"),
    }
}

/// One expected output and where it was recorded (a trace or log record index).
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    pub at: usize,
    pub expected: Expected<'a>,
}

/// The first output that differs: where (the record, or the step's end), what was
/// recorded, what the code did; for a send, the message the code sent (so the caller can
/// show it against the recorded one).
#[derive(Clone, Debug)]
pub struct Mismatch<M> {
    pub at: usize,
    pub expected: String,
    pub actual: String,
    pub sent: Option<M>,
}

/// What a node is, for the handler about to run: its id and the cluster's size.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub id: NodeId,
    pub peers: &'a [NodeId],
    pub node_count: usize,
}

/// Every other node of an `n`-node cluster, in id order: what `ctx.peers()` says in every
/// runtime.
pub fn peers_of(id: NodeId, n: usize) -> Vec<NodeId> {
    (0..n as u32).map(NodeId).filter(|p| *p != id).collect()
}

/// The node state a handler changes besides its own: kept by the caller between steps.
pub struct NodeWorld<'a> {
    pub rng: &'a mut StepRng,
    pub storage: &'a mut Storage,
    /// The node's timers that are set and have neither fired nor been cancelled.
    pub timers: &'a mut BTreeSet<TimerId>,
    /// Which life of the node is running (from its recorded boot).
    pub boot: Boot,
}

/// The `Env` that checks a handler's outputs against the expected ones.
pub struct CheckingEnv<'a, M> {
    place: Place<'a>,
    outputs: &'a [Output<'a>],
    next: usize,
    /// Reported as where an output is missing when the code makes one too many.
    step_end: usize,
    request_ids: Vec<RequestId>,
    world: NodeWorld<'a>,
    check_busy: bool,
    mismatch: Option<Mismatch<M>>,
    sent: Option<&'a mut Vec<(usize, M)>>,
    answers: Option<&'a mut Vec<ClientEvent<M>>>,
}

impl<'a, M: Message> CheckingEnv<'a, M> {
    /// `outputs` are the step's recorded outputs, in order; `step_end` the record index
    /// after the step. `check_busy`: whether `ctx.busy` is recorded (simulated runs).
    pub fn new(
        place: Place<'a>,
        outputs: &'a [Output<'a>],
        step_end: usize,
        request_ids: Vec<RequestId>,
        world: NodeWorld<'a>,
        check_busy: bool,
    ) -> Self {
        CheckingEnv {
            place,
            outputs,
            next: 0,
            step_end,
            request_ids,
            world,
            check_busy,
            mismatch: None,
            sent: None,
            answers: None,
        }
    }

    /// Also hand over each answer the code gave to a client (matching the recorded one), as
    /// a [`ClientEvent::Complete`]: what the trace itself keeps only as a digest.
    pub fn observe_answers(mut self, answers: &'a mut Vec<ClientEvent<M>>) -> Self {
        self.answers = Some(answers);
        self
    }

    /// Also hand over each message the code sent, with its record index.
    pub fn observe_sends(mut self, sent: &'a mut Vec<(usize, M)>) -> Self {
        self.sent = Some(sent);
        self
    }

    /// Takes the next expected output if `accept` says it is the one the code made; else
    /// records the mismatch (and every later output is ignored).
    fn expect(
        &mut self,
        actual: impl FnOnce() -> String,
        accept: impl FnOnce(&Expected<'a>) -> bool,
    ) -> Option<(usize, Expected<'a>)> {
        if self.mismatch.is_some() {
            return None;
        }
        match self.outputs.get(self.next) {
            Some(o) if accept(&o.expected) => {
                self.next += 1;
                Some((o.at, o.expected))
            }
            Some(o) => {
                self.mismatch = Some(Mismatch {
                    at: o.at,
                    expected: describe(&o.expected.to_record()),
                    actual: actual(),
                    sent: None,
                });
                None
            }
            None => {
                self.mismatch = Some(Mismatch {
                    at: self.step_end,
                    expected: "no further output in this step".into(),
                    actual: actual(),
                    sent: None,
                });
                None
            }
        }
    }

    /// How many outputs matched, or the first mismatch — including an output recorded that
    /// the code did not make.
    pub fn finish(self) -> Result<usize, Mismatch<M>> {
        if let Some(m) = self.mismatch {
            return Err(m);
        }
        match self.outputs.get(self.next) {
            Some(extra) => Err(Mismatch {
                at: extra.at,
                expected: describe(&extra.expected.to_record()),
                actual: "the step ended without this output".into(),
                sent: None,
            }),
            None => Ok(self.next),
        }
    }
}

impl<M: Message> Env<M> for CheckingEnv<'_, M> {
    fn id(&self) -> NodeId {
        self.place.id
    }
    fn peers(&self) -> &[NodeId] {
        self.place.peers
    }
    fn node_count(&self) -> usize {
        self.place.node_count
    }
    fn boot(&self) -> Boot {
        self.world.boot
    }
    fn now(&mut self) -> Time {
        match self.expect(
            || "read the clock".into(),
            |e| matches!(e, Expected::ClockRead { .. }),
        ) {
            Some((_, Expected::ClockRead { value_ns })) => Time(value_ns),
            _ => Time(0),
        }
    }
    fn send(&mut self, to: NodeId, msg: M) {
        let bytes = codec::encode(&msg).unwrap_or_default();
        let digest = codec::digest(&bytes);
        let got = self.expect(
            || format!("send to n{} (digest {digest:016x}): {msg:?}", to.0),
            |e| matches!(e, Expected::Send { to: t, digest: d } if *t == to && *d == digest),
        );
        match got {
            Some((at, _)) => {
                if let Some(sent) = self.sent.as_mut() {
                    sent.push((at, msg));
                }
            }
            None => {
                if let Some(m) = self.mismatch.as_mut().filter(|m| m.sent.is_none()) {
                    m.sent = Some(msg);
                }
            }
        }
    }
    fn set_timer(&mut self, after: Duration, tag: Tag) -> TimerId {
        let after_ns = crate::duration_ns(after);
        match self.expect(
            || format!("set a timer: tag {tag:?}, in {}", crate::format_ns(after_ns)),
            |e| matches!(e, Expected::TimerSet { tag: t, after_ns: a, .. } if *t == tag.as_bytes() && *a == after_ns),
        ) {
            Some((_, Expected::TimerSet { timer, .. })) => {
                self.world.timers.insert(timer);
                timer
            }
            _ => TimerId(u64::MAX),
        }
    }
    fn cancel_timer(&mut self, timer: TimerId) -> bool {
        // A timer that fired, was cancelled or is another node's: a no-op, as everywhere.
        if !self.world.timers.remove(&timer) {
            return false;
        }
        self.expect(
            || format!("cancel timer t{}", timer.0),
            |e| matches!(e, Expected::TimerCancel { timer: t } if *t == timer),
        )
        .is_some()
    }
    fn rng(&mut self) -> &mut SimRng {
        self.world.rng.rng()
    }
    fn storage(&mut self) -> &mut Storage {
        self.world.storage
    }
    fn annotate(&mut self, text: String) {
        self.expect(
            || format!("annotate {text:?}"),
            |e| matches!(e, Expected::Annotate { text: t } if *t == text),
        );
    }
    fn respond(&mut self, request: RequestId, msg: M) {
        let digest = codec::digest(&codec::encode(&msg).unwrap_or_default());
        let matched = self.expect(
            || format!("respond to {request} (digest {digest:016x}): {msg:?}"),
            |e| matches!(e, Expected::Respond { request: q, digest: d } if *q == request && *d == digest),
        );
        if let (Some(_), Some(answers)) = (matched, self.answers.as_mut()) {
            answers.push(ClientEvent::Complete {
                request,
                node: self.place.id,
                msg,
            });
        }
    }
    fn request_ids(&self) -> &[RequestId] {
        &self.request_ids
    }
    fn detach(&mut self) {
        self.request_ids.clear();
    }
    fn connect(&mut self, service: &str, timeout_ns: u64) -> ConnId {
        match self.expect(
            || {
                format!(
                    "connect to service `{service}` (timeout {})",
                    crate::format_ns(timeout_ns)
                )
            },
            |e| {
                matches!(e, Expected::ServiceOut { op: ServiceOp::Connect { service: s, timeout_ns: t }, .. }
                    if s == service && *t == timeout_ns)
            },
        ) {
            Some((_, Expected::ServiceOut { conn, .. })) => conn,
            _ => ConnId(u64::MAX),
        }
    }
    fn write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.expect(
            || {
                format!(
                    "write {} bytes to {conn}: {}",
                    bytes.len(),
                    crate::http::show_bytes(&bytes, 80)
                )
            },
            |e| {
                matches!(e, Expected::ServiceOut { conn: c, op: ServiceOp::Write { bytes: b } }
                    if *c == conn && *b == bytes)
            },
        );
    }
    fn close(&mut self, conn: ConnId) {
        self.expect(
            || format!("close {conn}"),
            |e| matches!(e, Expected::ServiceOut { conn: c, op: ServiceOp::Close } if *c == conn),
        );
    }
    fn busy(&mut self, duration: Duration) {
        if !self.check_busy {
            return;
        }
        let ns = crate::duration_ns(duration);
        self.expect(
            || format!("busy for {}", crate::format_ns(ns)),
            |e| matches!(e, Expected::Busy { ns: n } if *n == ns),
        );
    }
}

/// The input a handler runs on, as recorded (messages still encoded).
#[derive(Clone, Copy, Debug)]
pub enum Input<'p> {
    Start,
    Deliver {
        from: NodeId,
        payload: &'p [u8],
    },
    Timer {
        timer: TimerId,
        tag: &'p [u8],
    },
    External {
        payload: &'p [u8],
    },
    Service {
        conn: ConnId,
        event: &'p ServiceEvent,
    },
}

/// Why a handler did not run to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerError {
    /// The node's code panicked (the text of the panic).
    Panicked(String),
    /// The recorded message does not decode as this model's message.
    Undecodable(String),
}

/// Runs the handler for `input` on `node` in `env`, catching a panic of the node's code.
pub fn run_handler<N: Node>(
    node: &mut N,
    env: &mut dyn Env<N::Msg>,
    input: Input<'_>,
) -> Result<(), HandlerError> {
    let decode = |payload: &[u8]| {
        codec::decode::<N::Msg>(payload)
            .map_err(|e| HandlerError::Undecodable(format!("payload does not decode: {e}")))
    };
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let ctx = &mut Ctx::new(env);
        match input {
            Input::Start => node.on_start(ctx),
            Input::Deliver { from, payload } => node.on_message(ctx, from, decode(payload)?),
            Input::Timer { timer, tag } => {
                let tag = codec::decode::<N::Timer>(tag).map_err(|e| {
                    HandlerError::Undecodable(format!("timer tag does not decode: {e}"))
                })?;
                node.on_timer(ctx, timer, tag)
            }
            Input::External { payload } => node.on_request(ctx, decode(payload)?),
            Input::Service { conn, event } => node.on_service(ctx, conn, event.clone()),
        }
        Ok(())
    }));
    match ran {
        Ok(result) => result,
        Err(panic) => Err(HandlerError::Panicked(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        )),
    }
}
