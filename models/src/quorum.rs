//! `quorum`: a leaderless replicated register per key, Dynamo style. Every server is a
//! replica and a coordinator: a client's put, delete or get goes to any server, which sends
//! it to all replicas and answers after a quorum (W = R = 2 of 3) has replied. Writes carry
//! a version (the coordinator's Lamport counter and id); replicas keep the newest version
//! of each key, durably; a read returns the newest version among its quorum and repairs
//! the replies that were older. A delete writes a tombstone, a version without a value, so
//! a read quorum always meets it. Invariant: a read never returns a value older than a
//! delete of its key that had already completed.
//!
//! With `bug = "no-tombstones"` a delete removes the key from the replica instead: a replica
//! that missed the delete (a lost message, a partition, a crash) still holds the value, a
//! read quorum that meets it and a replica without the key returns the old value, and read
//! repair writes it back everywhere — the deleted value is resurrected.
//!
//! Like `lockserv`, written as a held-out check for the fuzzer's minimiser.

use retrace_sim::{
    Broken, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, RequestId, SimRng, TimerId,
    View,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuorumBug {
    NoTombstones,
}

/// A write's version: the newest wins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    pub counter: u64,
    pub node: u32,
}

/// What a replica holds for a key: a value, or a tombstone (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub version: Version,
    pub value: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External requests.
    Put {
        key: u32,
        value: u64,
    },
    Delete {
        key: u32,
    },
    Get {
        key: u32,
    },
    /// External replies.
    Done,
    Value {
        key: u32,
        value: Option<u64>,
    },
    /// Coordinator to replica: store this version of `key` (`op` 0: a read repair).
    Write {
        op: u64,
        key: u32,
        entry: Entry,
    },
    Written {
        op: u64,
    },
    Read {
        op: u64,
        key: u32,
    },
    ReadReply {
        op: u64,
        entry: Option<Entry>,
    },
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuorumOptions {
    pub bug: Option<QuorumBug>,
    /// Keys the workload uses.
    pub keys: u32,
}

impl Default for QuorumOptions {
    fn default() -> Self {
        QuorumOptions { bug: None, keys: 2 }
    }
}

const REPLICAS: u32 = 3;
const QUORUM: usize = 2;

/// An operation this server coordinates, waiting for its quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub request: RequestId,
    pub key: u32,
    /// The version written (writes), or `None` for a read.
    pub wrote: Option<Entry>,
    /// Who replied, and for reads what they hold.
    pub replies: Vec<(u32, Option<Entry>)>,
}

/// What a completed operation looked like to its client (what the invariant reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Completed {
    Deleted {
        key: u32,
        version: Version,
    },
    Read {
        op: u64,
        key: u32,
        version: Option<Version>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub bug: Option<QuorumBug>,
    pub counter: u64,
    pub next_op: u64,
    /// Durable: the newest version of each key.
    pub store: BTreeMap<u32, Entry>,
    pub ops: BTreeMap<u64, Op>,
    /// Operations completed by this server, in order.
    pub completed: Vec<Completed>,
}

impl Server {
    fn persist(&self, ctx: &mut Ctx<'_, Msg>) {
        let s = ctx.storage();
        let _ = s.put_value("store", &self.store);
        let _ = s.put_value("counter", &self.counter);
        s.sync();
    }

    fn apply(&mut self, ctx: &mut Ctx<'_, Msg>, key: u32, entry: Entry) {
        self.counter = self.counter.max(entry.version.counter);
        let newer = self
            .store
            .get(&key)
            .is_none_or(|e| e.version < entry.version);
        if !newer {
            return;
        }
        if entry.value.is_none() && self.bug == Some(QuorumBug::NoTombstones) {
            self.store.remove(&key);
        } else {
            self.store.insert(key, entry);
        }
        self.persist(ctx);
    }

    fn start(&mut self, ctx: &mut Ctx<'_, Msg>, key: u32, wrote: Option<Entry>) {
        let Some(&request) = ctx.request_ids().first() else {
            return;
        };
        self.next_op += 1;
        let op = self.next_op;
        self.ops.insert(
            op,
            Op {
                request,
                key,
                wrote,
                replies: Vec::new(),
            },
        );
        for r in 0..REPLICAS {
            let msg = match wrote {
                Some(entry) => Msg::Write { op, key, entry },
                None => Msg::Read { op, key },
            };
            ctx.send(NodeId(r), msg);
        }
    }

    fn write(&mut self, ctx: &mut Ctx<'_, Msg>, key: u32, value: Option<u64>) {
        self.counter += 1;
        let version = Version {
            counter: self.counter,
            node: ctx.id().0,
        };
        self.persist(ctx);
        self.start(ctx, key, Some(Entry { version, value }));
    }

    fn reply(&mut self, ctx: &mut Ctx<'_, Msg>, from: NodeId, op: u64, entry: Option<Entry>) {
        let Some(pending) = self.ops.get_mut(&op) else {
            return; // Late replies after the quorum.
        };
        // A duplicated reply is the same replica again, not a quorum.
        if pending.replies.iter().any(|(r, _)| *r == from.0) {
            return;
        }
        pending.replies.push((from.0, entry));
        if pending.replies.len() < QUORUM {
            return;
        }
        let Some(done) = self.ops.remove(&op) else {
            return;
        };
        match done.wrote {
            Some(Entry { version, value }) => {
                if value.is_none() {
                    self.completed.push(Completed::Deleted {
                        key: done.key,
                        version,
                    });
                }
                ctx.respond_to(done.request, Msg::Done);
            }
            None => {
                let newest = done
                    .replies
                    .iter()
                    .filter_map(|(_, e)| *e)
                    .max_by_key(|e| e.version);
                // Read repair: every reply older than the newest gets it.
                if let Some(entry) = newest {
                    for (r, e) in &done.replies {
                        if e.is_none_or(|e| e.version < entry.version) {
                            let key = done.key;
                            ctx.send(NodeId(*r), Msg::Write { op: 0, key, entry });
                        }
                    }
                }
                self.completed.push(Completed::Read {
                    op,
                    key: done.key,
                    version: newest.filter(|e| e.value.is_some()).map(|e| e.version),
                });
                let value = newest.and_then(|e| e.value);
                ctx.respond_to(
                    done.request,
                    Msg::Value {
                        key: done.key,
                        value,
                    },
                );
            }
        }
    }
}

impl Node for Server {
    type Msg = Msg;
    /// Quorum nodes set no timers.
    type Timer = u64;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg>) {
        let s = ctx.storage();
        self.store = s
            .get_value("store")
            .and_then(Result::ok)
            .unwrap_or_default();
        self.counter = s.get_value("counter").and_then(Result::ok).unwrap_or(0);
        // Operation ids are new in every life: a late reply to an operation of an earlier
        // life must not count towards a quorum of this one.
        let lives: u64 = s.get_value("lives").and_then(Result::ok).unwrap_or(0);
        let _ = s.put_value("lives", &(lives + 1));
        s.sync();
        self.next_op = (lives + 1) << 40;
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg>, request: Msg) {
        match request {
            Msg::Put { key, value } => self.write(ctx, key, Some(value)),
            Msg::Delete { key } => self.write(ctx, key, None),
            Msg::Get { key } => self.start(ctx, key, None),
            other => ctx.annotate(format!("ignored external {other:?}")),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Write { op, key, entry } => {
                self.apply(ctx, key, entry);
                if op != 0 {
                    ctx.send(from, Msg::Written { op });
                }
            }
            Msg::Read { op, key } => {
                let entry = self.store.get(&key).copied();
                ctx.send(from, Msg::ReadReply { op, entry });
            }
            Msg::Written { op } => self.reply(ctx, from, op, None),
            Msg::ReadReply { op, entry } => self.reply(ctx, from, op, entry),
            other => ctx.annotate(format!("unexpected {other:?} from {from}")),
        }
    }

    fn on_timer(&mut self, _ctx: &mut Ctx<'_, Msg>, _timer: TimerId, _tag: u64) {}
}

/// Deletes stay deleted: once a delete of a key has completed, no read that starts later
/// returns a value older than it. (A read concurrent with the delete may return either.)
#[derive(Clone, Default)]
pub struct DeletesStay {
    /// The newest completed delete of each key.
    deleted: BTreeMap<u32, Version>,
    /// Reads in progress, by (coordinator, op): the newest delete of their key completed
    /// before they started.
    started: BTreeMap<(u32, u64), Option<Version>>,
    /// How many of each node's completions were checked (per life).
    checked: BTreeMap<u32, usize>,
}

impl Invariant<Server> for DeletesStay {
    fn name(&self) -> &str {
        "deletes-stay-deleted"
    }

    fn boxed_clone(&self) -> Box<dyn Invariant<Server>> {
        Box::new(self.clone())
    }

    fn check(&mut self, view: &View<'_, Server>) -> Result<(), Broken> {
        let me = view.node.0;
        let Some(Some(node)) = view.nodes.get(view.node.index()) else {
            self.checked.insert(me, 0);
            return Ok(());
        };
        for (&op, pending) in &node.ops {
            if pending.wrote.is_none() {
                let before = self.deleted.get(&pending.key).copied();
                self.started.entry((me, op)).or_insert(before);
            }
        }
        let done = self.checked.entry(me).or_insert(0);
        if *done > node.completed.len() {
            *done = 0;
        }
        for c in &node.completed[*done..] {
            match *c {
                Completed::Deleted { key, version } => {
                    let d = self.deleted.entry(key).or_default();
                    *d = (*d).max(version);
                }
                Completed::Read { op, key, version } => {
                    let before = self.started.remove(&(me, op)).flatten();
                    if let Some((v, d)) = version.zip(before).filter(|(v, d)| v < d) {
                        return Err(Broken::new(format!(
                            "key {key} read back a value written at {}.{} after its delete at {}.{} had completed",
                            v.counter, v.node, d.counter, d.node
                        ))
                        .fact("key", key.to_string()));
                    }
                }
            }
        }
        *done = node.completed.len();
        Ok(())
    }
}

/// The `quorum` model.
pub struct QuorumModel;

impl Model for QuorumModel {
    const NAME: &'static str = "quorum";
    const ABOUT: &'static str =
        "leaderless quorum reads and writes with read repair (bug: no-tombstones)";
    type Node = Server;
    type Options = QuorumOptions;

    fn validate(o: &QuorumOptions) -> Result<(), OptionError> {
        if !(1..=1000).contains(&o.keys) {
            return Err(OptionError {
                field: "keys".into(),
                message: "must be between 1 and 1000".into(),
            });
        }
        Ok(())
    }

    fn nodes(_: &QuorumOptions) -> Vec<NodeSpec> {
        (0..REPLICAS)
            .map(|i| NodeSpec::new(format!("replica-{i}"), "replica"))
            .collect()
    }

    fn build(o: &QuorumOptions, _id: NodeId) -> Server {
        Server {
            bug: o.bug,
            counter: 0,
            next_op: 0,
            store: BTreeMap::new(),
            ops: BTreeMap::new(),
            completed: Vec::new(),
        }
    }

    fn invariants(_: &QuorumOptions) -> Vec<Box<dyn Invariant<Server>>> {
        vec![Box::new(DeletesStay::default())]
    }

    fn request(o: &QuorumOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        let node = NodeId(rng.below(u64::from(REPLICAS)) as u32);
        let key = rng.below(u64::from(o.keys)) as u32;
        let msg = match rng.below(4) {
            0 | 1 => Msg::Put {
                key,
                value: rng.below(1_000_000),
            },
            2 => Msg::Delete { key },
            _ => Msg::Get { key },
        };
        Some((node, msg))
    }
}
