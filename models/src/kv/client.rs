//! kv clients: receive operations from outside, find the primary, retry, answer.

use super::msg::{Msg, Op, OpResult, Timer};
use retrace_sim::{Boot, Ctx, NodeId, RequestId, TimerId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// At most this many operations are outstanding per client; more are refused.
pub const MAX_OUTSTANDING: usize = 64;
/// Attempts per operation before the client gives up.
pub const MAX_ATTEMPTS: u32 = 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outstanding {
    /// The external request this operation answers.
    pub request: Option<RequestId>,
    pub op: Op,
    pub target: NodeId,
    pub attempts: u32,
    pub timer: TimerId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub replicas: u32,
    pub timeout_ms: u64,
    /// Where requests go first.
    pub primary_guess: NodeId,
    pub next_op: u64,
    pub outstanding: BTreeMap<u64, Outstanding>,
}

impl Client {
    pub fn new(replicas: u32, timeout_ms: u64) -> Self {
        Client {
            replicas,
            timeout_ms,
            primary_guess: NodeId(0),
            next_op: 0,
            outstanding: BTreeMap::new(),
        }
    }

    pub fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        if ctx.boot() == Boot::Restart {
            // Replies to the operations of an earlier life may still arrive; operation ids
            // of this life must not match them (or an old answer would complete a new
            // operation). A random base makes that vanishingly unlikely.
            self.next_op = u64::from(ctx.rng().next_u64() as u32) << 32;
        }
    }

    pub fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, msg: Msg) {
        let Msg::Op(op) = msg else {
            ctx.annotate(format!("client ignores external {msg:?}"));
            return;
        };
        if self.outstanding.len() >= MAX_OUTSTANDING {
            ctx.respond(Msg::Done(OpResult::Refused {
                reason: "too many outstanding operations".into(),
            }));
            return;
        }
        let op_id = self.next_op;
        self.next_op += 1;
        let target = self.primary_guess;
        ctx.send(
            target,
            Msg::Request {
                op_id,
                op: op.clone(),
            },
        );
        let timer = ctx.set_timer(
            Duration::from_millis(self.timeout_ms),
            Timer::Retry { op_id },
        );
        self.outstanding.insert(
            op_id,
            Outstanding {
                request: ctx.request_ids().first().copied(),
                op,
                target,
                attempts: 1,
                timer,
            },
        );
    }

    pub fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        let Msg::Reply { op_id, result } = msg else {
            ctx.annotate(format!("client ignores {msg:?} from {from}"));
            return;
        };
        if !self.outstanding.contains_key(&op_id) {
            return; // a late or duplicated reply
        }
        match result {
            OpResult::NotPrimary { hint } => {
                let hint = if hint == from {
                    self.next_replica(from)
                } else {
                    hint
                };
                self.primary_guess = hint;
                self.retry(ctx, op_id, hint);
            }
            result => {
                self.primary_guess = from;
                self.complete(ctx, op_id, result);
            }
        }
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, timer: TimerId, tag: Timer) {
        let Timer::Retry { op_id } = tag else {
            return;
        };
        let Some(out) = self.outstanding.get(&op_id) else {
            return;
        };
        if out.timer != timer {
            return;
        }
        let next = self.next_replica(out.target);
        self.primary_guess = next;
        self.retry(ctx, op_id, next);
    }

    fn next_replica(&self, after: NodeId) -> NodeId {
        NodeId((after.0 + 1) % self.replicas.max(1))
    }

    fn retry(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, op_id: u64, target: NodeId) {
        let Some(out) = self.outstanding.get_mut(&op_id) else {
            return;
        };
        if out.attempts >= MAX_ATTEMPTS {
            let reason = format!("no answer after {MAX_ATTEMPTS} attempts");
            self.complete(ctx, op_id, OpResult::Failed { reason });
            return;
        }
        out.attempts += 1;
        out.target = target;
        ctx.cancel_timer(out.timer);
        ctx.send(
            target,
            Msg::Request {
                op_id,
                op: out.op.clone(),
            },
        );
        out.timer = ctx.set_timer(
            Duration::from_millis(self.timeout_ms),
            Timer::Retry { op_id },
        );
    }

    fn complete(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, op_id: u64, result: OpResult) {
        let Some(out) = self.outstanding.remove(&op_id) else {
            return;
        };
        ctx.cancel_timer(out.timer);
        // The operation's own request, whichever step completes it (a reply carries the
        // request ids of whatever the replica was doing, not necessarily this one's).
        if let Some(request) = out.request {
            ctx.respond_to(request, Msg::Done(result));
        }
    }
}
