//! `kv`: a primary-backup replicated key-value store.
//!
//! Nodes `replica-0..R` hold the data (see [`replica`] for the protocol); nodes
//! `client-0..C` take get/put operations from outside (the scenario's workload), send them
//! to the replica they believe is primary, retry elsewhere on timeouts, and answer their
//! caller. The invariants: no acknowledged write is lost, and (with `linearizable = true`)
//! what clients saw is linearizable (each key a register; `spec.rs`).

pub mod client;
pub mod http;
mod invariants;
pub mod msg;
pub mod replica;
pub mod spec;

use client::Client;
use msg::{Msg, Op, Timer};
use replica::Replica;
use retrace_sim::linearizability::{self, HistoryCheck, Linearizable};
use retrace_sim::{Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, SimRng, TimerId};
use serde::{Deserialize, Serialize};

/// Known bugs a scenario can switch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvBug {
    /// The primary acknowledges a put before any backup has it (asynchronous replication).
    AckBeforeReplicate,
    /// The primary answers reads from its own store, without a read barrier: a deposed
    /// primary serves stale values (only linearizability notices).
    LocalReads,
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvOptions {
    pub replicas: u32,
    pub clients: u32,
    /// Keys are `k0..k{keys}`.
    pub keys: u32,
    /// Fraction of operations that are puts.
    pub put_ratio: f64,
    pub bug: Option<KvBug>,
    pub heartbeat_ms: u64,
    /// A backup stands for election after this long (plus jitter) without a heartbeat.
    pub failover_ms: u64,
    /// A client retries elsewhere after this long without an answer.
    pub client_timeout_ms: u64,
    /// Also check that what clients saw is linearizable (each key a register, `spec.rs`).
    /// Off by default, because the store is not: its retries are at-least-once (a put
    /// retried at the next primary after its first try took effect is applied again, after
    /// newer writes — `scenarios/kv-chaos.toml` with the check on, seed 1), and a read may
    /// return a write no majority holds yet. Neither loses an acknowledged write.
    pub linearizable: bool,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            replicas: 3,
            clients: 4,
            keys: 8,
            put_ratio: 0.5,
            bug: None,
            heartbeat_ms: 20,
            failover_ms: 100,
            client_timeout_ms: 200,
            linearizable: false,
        }
    }
}

/// A kv node: one enum for both roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvNode {
    Replica(Replica),
    Client(Client),
}

impl Node for KvNode {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        match self {
            KvNode::Replica(r) => r.on_start(ctx),
            KvNode::Client(c) => c.on_start(ctx),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match self {
            KvNode::Replica(r) => r.on_message(ctx, from, msg),
            KvNode::Client(c) => c.on_message(ctx, from, msg),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, timer: TimerId, tag: Timer) {
        match self {
            KvNode::Replica(r) => r.on_timer(ctx, timer, tag),
            KvNode::Client(c) => c.on_timer(ctx, timer, tag),
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        match self {
            KvNode::Client(c) => c.on_request(ctx, request),
            KvNode::Replica(_) => ctx.annotate("replicas take requests only from kv clients"),
        }
    }
}

/// The `kv` model.
pub struct KvModel;

impl Model for KvModel {
    const NAME: &'static str = "kv";
    const ABOUT: &'static str =
        "primary-backup replicated key-value store with failover (bugs: ack-before-replicate, local-reads)";
    type Node = KvNode;
    type Options = KvOptions;

    fn validate(o: &KvOptions) -> Result<(), OptionError> {
        let err = |field: &str, message: &str| {
            Err(OptionError {
                field: field.into(),
                message: message.into(),
            })
        };
        if !(1..=64).contains(&o.replicas) {
            return err("replicas", "must be between 1 and 64");
        }
        // Replicas and clients together stay within the cluster limit.
        let clients_max = retrace_sim::limits::MAX_NODES as u32 - 64;
        if !(1..=clients_max).contains(&o.clients) {
            return err("clients", &format!("must be between 1 and {clients_max}"));
        }
        if o.keys == 0 {
            return err("keys", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&o.put_ratio) {
            return err("put_ratio", "must be between 0 and 1");
        }
        if o.heartbeat_ms == 0 || o.heartbeat_ms >= o.failover_ms {
            return err(
                "heartbeat_ms",
                "must be at least 1 and shorter than failover_ms",
            );
        }
        if o.client_timeout_ms == 0 {
            return err("client_timeout_ms", "must be at least 1");
        }
        Ok(())
    }

    fn nodes(o: &KvOptions) -> Vec<NodeSpec> {
        let replicas = (0..o.replicas).map(|i| NodeSpec::new(format!("replica-{i}"), "replica"));
        let clients = (0..o.clients).map(|i| NodeSpec::new(format!("client-{i}"), "client"));
        replicas.chain(clients).collect()
    }

    fn build(o: &KvOptions, id: NodeId) -> KvNode {
        if id.0 < o.replicas {
            KvNode::Replica(Replica::new(
                id.0,
                o.replicas,
                o.bug,
                o.heartbeat_ms,
                o.failover_ms,
            ))
        } else {
            KvNode::Client(Client::new(o.replicas, o.client_timeout_ms))
        }
    }

    fn invariants(o: &KvOptions) -> Vec<Box<dyn Invariant<KvNode>>> {
        let mut all: Vec<Box<dyn Invariant<KvNode>>> =
            vec![Box::new(invariants::AckedWritesDurable::default())];
        if o.linearizable {
            all.push(Box::new(Linearizable::<spec::Register>::new(
                "clients see a linearizable store",
            )));
        }
        all
    }

    fn linearizability(_: &KvOptions) -> Option<Box<dyn HistoryCheck<Msg>>> {
        Some(linearizability::checker::<spec::Register>())
    }

    fn http(_: &KvOptions) -> Box<dyn retrace_sim::http::HttpApi<Msg>> {
        Box::new(http::KvHttp)
    }

    fn request(o: &KvOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        let client = NodeId(o.replicas + rng.below(u64::from(o.clients)) as u32);
        let key = format!("k{}", rng.below(u64::from(o.keys)));
        let op = if rng.chance(o.put_ratio) {
            Op::Put {
                key,
                value: format!("v{:08x}", rng.next_u64() as u32),
            }
        } else {
            Op::Get { key }
        };
        Some((client, Msg::Op(op)))
    }
}
