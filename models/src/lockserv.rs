//! `lockserv`: a lock service that hands out fencing tokens, run as a primary and a backup.
//! Clients ask any server for the lock; a backup forwards to the primary it follows. The
//! primary hands out the next token, replicates its counter to the backup and grants once
//! the backup has it (or alone, once the backup has been silent for a failover timeout).
//! The backup takes over when the primary has been silent that long, in a new epoch of its
//! own (server `i` takes only epochs equal to `i` modulo 2, so two servers that cannot hear
//! each other never share one); a token is `epoch << 32 | counter`.
//! A server that restarts comes back as a backup. Invariant: no token is granted twice —
//! the whole point of a fencing token.
//!
//! With `bug = "lazy-tokens"` the primary grants at once and sends its counter only with
//! its heartbeats, and a token is the bare counter: a primary that crashes between a grant
//! and its next heartbeat leaves a backup that takes over with an old counter and grants
//! the same token again.
//!
//! This model was written as a held-out check for the fuzzer's minimiser (which was built
//! against the other models only).

use retrace_sim::{
    Broken, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, SimRng, TimerId, View,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockBug {
    LazyTokens,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External: a client wants the lock.
    Acquire,
    /// External reply: the lock is yours, with this fencing token.
    Granted { token: u64 },
    /// A backup passes a client's request to the primary.
    Forward,
    /// The primary's counter (and epoch), replicated.
    Replicate { epoch: u32, next: u64 },
    /// The backup has the counter up to `next`.
    Ack { next: u64 },
    /// The primary is alive, in `epoch`, with its counter at `next`.
    Heartbeat { epoch: u32, next: u64 },
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockOptions {
    pub bug: Option<LockBug>,
    pub heartbeat_ms: u64,
    /// Silence after which a backup takes over, or a primary grants without its backup.
    pub failover_ms: u64,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            bug: None,
            heartbeat_ms: 30,
            failover_ms: 150,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Primary,
    /// Following `primary`.
    Backup {
        primary: NodeId,
    },
}

/// A grant waiting for the backup to have the counter past its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub request: retrace_sim::RequestId,
    pub token: u64,
    pub next: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockServer {
    pub bug: Option<LockBug>,
    pub heartbeat_ms: u64,
    pub failover_ms: u64,
    pub role: Role,
    pub epoch: u32,
    /// The next token's counter.
    pub next: u64,
    /// When the other server was last heard from (on this server's clock).
    pub heard_ns: u64,
    pub waiting: Vec<Waiting>,
    /// Tokens granted by this server, in order (what the invariant reads).
    pub granted: Vec<u64>,
}

impl LockServer {
    fn other(&self, ctx: &Ctx<'_, Msg, Timer>) -> NodeId {
        NodeId(1 - ctx.id().0.min(1))
    }

    fn token(&self, counter: u64) -> u64 {
        match self.bug {
            Some(LockBug::LazyTokens) => counter,
            None => (u64::from(self.epoch) << 32) | counter,
        }
    }

    fn backup_silent(&self, ctx: &mut Ctx<'_, Msg, Timer>) -> bool {
        let now = ctx.now().0;
        now.saturating_sub(self.heard_ns) >= self.failover_ms * 1_000_000
    }

    fn set_epoch(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, epoch: u32) {
        self.epoch = epoch;
        let s = ctx.storage();
        let _ = s.put_value("epoch", &epoch);
        s.sync();
    }

    fn grant(
        &mut self,
        ctx: &mut Ctx<'_, Msg, Timer>,
        request: retrace_sim::RequestId,
        token: u64,
    ) {
        self.granted.push(token);
        ctx.respond_to(request, Msg::Granted { token });
    }

    fn acquire(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let Some(&request) = ctx.request_ids().first() else {
            return;
        };
        if let Role::Backup { primary } = self.role {
            return ctx.send(primary, Msg::Forward);
        }
        let token = self.token(self.next);
        self.next += 1;
        if self.bug == Some(LockBug::LazyTokens) || self.backup_silent(ctx) {
            return self.grant(ctx, request, token);
        }
        let (epoch, next) = (self.epoch, self.next);
        self.waiting.push(Waiting {
            request,
            token,
            next,
        });
        let other = self.other(ctx);
        ctx.send(other, Msg::Replicate { epoch, next });
    }
}

/// A lock server's timer: the primary's heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    Heartbeat,
}

impl Node for LockServer {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        self.heard_ns = ctx.now().0;
        // The epoch is durable: a server that restarts and later takes over must not reuse
        // an epoch it already had (its tokens would collide).
        self.epoch = ctx
            .storage()
            .get_value("epoch")
            .and_then(Result::ok)
            .unwrap_or(0);
        let other = self.other(ctx);
        self.role = match ctx.boot() {
            retrace_sim::Boot::First if ctx.id() == NodeId(0) => Role::Primary,
            _ => Role::Backup { primary: other },
        };
        ctx.set_timer(Duration::from_millis(self.heartbeat_ms), Timer::Heartbeat);
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        match request {
            Msg::Acquire => self.acquire(ctx),
            other => ctx.annotate(format!("ignored external {other:?}")),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Forward => self.acquire(ctx),
            Msg::Replicate { epoch, next } | Msg::Heartbeat { epoch, next } => {
                // A primary of an older epoch is ignored; one of the same epoch is ours
                // (two primaries never share an epoch); a newer one is followed.
                if epoch < self.epoch || (epoch == self.epoch && self.role == Role::Primary) {
                    return;
                }
                self.heard_ns = ctx.now().0;
                if epoch > self.epoch {
                    self.set_epoch(ctx, epoch);
                    self.waiting.clear();
                }
                self.role = Role::Backup { primary: from };
                self.next = self.next.max(next);
                ctx.send(from, Msg::Ack { next: self.next });
            }
            Msg::Ack { next } => {
                self.heard_ns = ctx.now().0;
                let (ready, still): (Vec<Waiting>, Vec<Waiting>) =
                    std::mem::take(&mut self.waiting)
                        .into_iter()
                        .partition(|w| w.next <= next);
                self.waiting = still;
                for w in ready {
                    self.grant(ctx, w.request, w.token);
                }
            }
            other => ctx.annotate(format!("unexpected {other:?} from {from}")),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, _timer: TimerId, tag: Timer) {
        if tag != Timer::Heartbeat {
            return;
        }
        ctx.detach();
        ctx.set_timer(Duration::from_millis(self.heartbeat_ms), Timer::Heartbeat);
        let silent = self.backup_silent(ctx);
        match self.role {
            Role::Primary => {
                let other = self.other(ctx);
                let (epoch, next) = (self.epoch, self.next);
                ctx.send(other, Msg::Heartbeat { epoch, next });
                if silent {
                    // Alone: what waited for the backup is granted without it.
                    for w in std::mem::take(&mut self.waiting) {
                        self.grant(ctx, w.request, w.token);
                    }
                }
            }
            Role::Backup { .. } if silent => {
                self.role = Role::Primary;
                // Each server takes only its own epochs (those equal to its id modulo 2):
                // two servers that cannot hear each other never take the same one.
                let me = ctx.id().0;
                let epoch = (self.epoch + 1..)
                    .find(|e| e % 2 == me % 2)
                    .unwrap_or(self.epoch);
                self.set_epoch(ctx, epoch);
                self.heard_ns = ctx.now().0;
                ctx.annotate(format!(
                    "primary silent: taking over in epoch {} at counter {}",
                    self.epoch, self.next
                ));
            }
            Role::Backup { .. } => {}
        }
    }
}

/// Fencing: no token is granted twice.
#[derive(Clone, Default)]
pub struct UniqueTokens {
    /// Tokens seen granted, and by which node.
    seen: BTreeMap<u64, u32>,
    /// How many of each node's grants were checked (per life: a restart starts again).
    checked: BTreeMap<u32, usize>,
}

impl Invariant<LockServer> for UniqueTokens {
    fn name(&self) -> &str {
        "unique-tokens"
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<LockServer>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, LockServer>) -> Result<(), Broken> {
        let me = view.node.0;
        let Some(Some(node)) = view.nodes.get(view.node.index()) else {
            self.checked.insert(me, 0);
            return Ok(());
        };
        let done = self.checked.entry(me).or_insert(0);
        if *done > node.granted.len() {
            *done = 0;
        }
        for &token in &node.granted[*done..] {
            if let Some(first) = self.seen.insert(token, me) {
                return Err(Broken::new(format!(
                    "fencing token {token} granted twice: by node {first} and again by node {me}"
                ))
                .fact("token", token.to_string()));
            }
        }
        *done = node.granted.len();
        Ok(())
    }
}

/// The `lockserv` model.
pub struct LockModel;

impl Model for LockModel {
    const NAME: &'static str = "lockserv";
    const ABOUT: &'static str =
        "a primary-backup lock service with fencing tokens (bug: lazy-tokens)";
    type Node = LockServer;
    type Options = LockOptions;

    fn validate(o: &LockOptions) -> Result<(), OptionError> {
        if o.heartbeat_ms == 0 || o.failover_ms <= o.heartbeat_ms {
            return Err(OptionError {
                field: "failover_ms".into(),
                message: "must be longer than heartbeat_ms, which must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn nodes(_: &LockOptions) -> Vec<NodeSpec> {
        vec![
            NodeSpec::new("lock-0", "server"),
            NodeSpec::new("lock-1", "server"),
        ]
    }

    fn build(o: &LockOptions, _id: NodeId) -> LockServer {
        LockServer {
            bug: o.bug,
            heartbeat_ms: o.heartbeat_ms,
            failover_ms: o.failover_ms,
            role: Role::Backup { primary: NodeId(0) },
            epoch: 0,
            next: 0,
            heard_ns: 0,
            waiting: Vec::new(),
            granted: Vec::new(),
        }
    }

    fn invariants(_: &LockOptions) -> Vec<Box<dyn Invariant<LockServer>>> {
        vec![Box::new(UniqueTokens::default())]
    }

    fn request(_: &LockOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        Some((NodeId(rng.below(2) as u32), Msg::Acquire))
    }
}
