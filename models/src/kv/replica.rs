//! kv replicas: primary-backup replication with epoch-numbered views.
//!
//! The primary of epoch `e` is replica `e mod n`. It orders writes, applies them, and (in the
//! correct protocol) acknowledges a client only once a majority holds the write. Backups
//! watch the primary's heartbeats; when they stop, a backup becomes a candidate for the next
//! epoch it would lead, collects the stores of a majority that promise to ignore older
//! epochs, merges them (newest version of each key wins), and starts the new view. Any two
//! majorities share a replica, so every acknowledged write reaches the new primary.
//!
//! With `bug = "ack-before-replicate"` the primary acknowledges a write as soon as it has
//! applied it locally and ships writes to the backups lazily, with its next heartbeat: a
//! crash in between loses an acknowledged write.
//!
//! With `bug = "local-reads"` the primary answers reads from its own store at once, without
//! the read barrier: a deposed primary that has not yet heard of its successor answers with
//! values the new primary has already overwritten. No write is lost, so only the
//! linearizability check of what clients saw notices.

use super::msg::{Entry, Msg, Op, OpResult, Store, Timer, Version};
use super::KvBug;
use retrace_sim::{Ctx, NodeId, TimerId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Following (or leading) `epoch`.
    Normal,
    /// Collecting promises for epoch `promised`; the stores received so far, by replica.
    Candidate { votes: BTreeMap<u32, Store> },
    /// Restarted from storage; waits to learn the current view.
    Recovering,
}

/// A client operation waiting for a majority to confirm it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOp {
    pub client: NodeId,
    pub op_id: u64,
    pub result: OpResult,
    pub acks: BTreeSet<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub me: u32,
    pub n: u32,
    pub bug: Option<KvBug>,
    pub heartbeat_ms: u64,
    pub failover_ms: u64,
    /// The epoch whose primary this replica follows or is.
    pub epoch: u64,
    /// The highest epoch this replica promised to; it ignores anything older. Durable.
    pub promised: u64,
    pub status: Status,
    pub store: Store,
    pub next_seq: u64,
    pub next_slot: u64,
    pub pending: BTreeMap<u64, PendingOp>,
    /// Bug mode only: acknowledged writes not yet shipped to the backups.
    pub unshipped: Vec<(String, Entry)>,
    pub failover_timer: Option<TimerId>,
    /// Whether the current view showed signs of life since the watchdog last looked.
    pub heard: bool,
    pub heartbeat_timer: Option<TimerId>,
}

/// Stores `entry` unless the store already holds that key at a newer or equal version.
/// Returns whether the store changed. Versions only grow, so replays and duplicates are safe.
fn apply(store: &mut Store, key: String, entry: Entry) -> bool {
    match store.get(&key) {
        Some(mine) if mine.version >= entry.version => false,
        _ => {
            store.insert(key, entry);
            true
        }
    }
}

fn merge(into: &mut Store, from: &Store) {
    for (key, entry) in from {
        apply(into, key.clone(), entry.clone());
    }
}

impl Replica {
    pub fn new(me: u32, n: u32, bug: Option<KvBug>, heartbeat_ms: u64, failover_ms: u64) -> Self {
        Replica {
            me,
            n,
            bug,
            heartbeat_ms,
            failover_ms,
            epoch: 0,
            promised: 0,
            status: Status::Normal,
            store: Store::new(),
            next_seq: 0,
            next_slot: 0,
            pending: BTreeMap::new(),
            unshipped: Vec::new(),
            failover_timer: None,
            heard: false,
            heartbeat_timer: None,
        }
    }

    pub fn primary_of(&self, epoch: u64) -> NodeId {
        NodeId((epoch % u64::from(self.n)) as u32)
    }

    /// Leading a view that no replica has told it is over.
    pub fn is_primary(&self) -> bool {
        self.status == Status::Normal
            && self.promised == self.epoch
            && self.primary_of(self.epoch).0 == self.me
    }

    fn majority(&self) -> usize {
        self.n as usize / 2 + 1
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.n).filter(move |&r| r != self.me).map(NodeId)
    }

    fn persist(&self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let storage = ctx.storage();
        // Plain data: encoding cannot fail.
        let _ = storage.put_value("promised", &self.promised);
        let _ = storage.put_value("epoch", &self.epoch);
        let _ = storage.put_value("store", &self.store);
        storage.sync();
    }

    pub fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let storage = ctx.storage();
        let restarted = storage.get("promised").is_some();
        if restarted {
            self.promised = storage
                .get_value("promised")
                .and_then(Result::ok)
                .unwrap_or(0);
            self.epoch = storage.get_value("epoch").and_then(Result::ok).unwrap_or(0);
            self.store = storage
                .get_value("store")
                .and_then(Result::ok)
                .unwrap_or_default();
            self.status = Status::Recovering;
            ctx.annotate(format!(
                "recovering at epoch {} with {} keys",
                self.epoch,
                self.store.len()
            ));
            self.reset_failover(ctx);
        } else {
            self.persist(ctx);
            if self.is_primary() {
                self.start_heartbeats(ctx);
            } else {
                self.reset_failover(ctx);
            }
        }
    }

    /// Notes a sign of life from the current view and makes sure the watchdog runs.
    ///
    /// The watchdog is a periodic check ("heard anything since the last check?") rather than
    /// a timer re-armed on every message: the same failure detection within one to two
    /// periods, without a cancel and a set per message in the trace.
    fn reset_failover(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        self.heard = true;
        if self.failover_timer.is_none() {
            self.arm_watchdog(ctx);
        }
    }

    fn arm_watchdog(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        // A watchdog is background work: it must not belong to the request that armed it.
        ctx.detach();
        // Jitter keeps two backups from standing for election at the same instant forever.
        let jitter = ctx.rng().below(self.failover_ms / 2 + 1);
        self.failover_timer = Some(ctx.set_timer(
            Duration::from_millis(self.failover_ms + jitter),
            Timer::Failover,
        ));
    }

    fn start_heartbeats(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        ctx.detach();
        if let Some(t) = self.failover_timer.take() {
            ctx.cancel_timer(t);
        }
        if let Some(t) = self.heartbeat_timer.take() {
            ctx.cancel_timer(t);
        }
        self.send_heartbeats(ctx);
    }

    fn send_heartbeats(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let epoch = self.epoch;
        if !self.unshipped.is_empty() {
            let writes = std::mem::take(&mut self.unshipped);
            let _span = tracing::debug_span!("heartbeat", epoch).entered();
            tracing::debug!(
                writes = writes.len(),
                "shipping the writes acknowledged since the last heartbeat"
            );
            let slot = self.next_slot;
            self.next_slot += 1;
            for r in self.others().collect::<Vec<_>>() {
                ctx.send(
                    r,
                    Msg::Replicate {
                        epoch,
                        slot,
                        writes: writes.clone(),
                    },
                );
            }
        }
        for r in self.others().collect::<Vec<_>>() {
            ctx.send(r, Msg::Heartbeat { epoch });
        }
        self.heartbeat_timer =
            Some(ctx.set_timer(Duration::from_millis(self.heartbeat_ms), Timer::Heartbeat));
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, timer: TimerId, tag: Timer) {
        match tag {
            Timer::Heartbeat if self.heartbeat_timer == Some(timer) => {
                self.heartbeat_timer = None;
                if self.is_primary() {
                    self.send_heartbeats(ctx);
                }
            }
            Timer::Failover if self.failover_timer == Some(timer) => {
                self.failover_timer = None;
                if self.is_primary() {
                    return;
                }
                if std::mem::take(&mut self.heard) {
                    self.arm_watchdog(ctx);
                } else {
                    self.stand_for_election(ctx);
                }
            }
            _ => {}
        }
    }

    fn stand_for_election(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let floor = self.promised.max(self.epoch) + 1;
        let n = u64::from(self.n);
        let me = u64::from(self.me);
        let epoch = floor + (me + n - floor % n) % n;
        debug_assert_eq!(epoch % n, me);
        ctx.annotate(format!(
            "no word from primary replica-{}: standing for epoch {epoch}",
            self.primary_of(self.epoch).0
        ));
        self.promised = epoch;
        self.pending.clear();
        let mut votes = BTreeMap::new();
        votes.insert(self.me, self.store.clone());
        self.status = Status::Candidate { votes };
        self.persist(ctx);
        for r in self.others().collect::<Vec<_>>() {
            ctx.send(r, Msg::ViewChange { epoch });
        }
        self.maybe_lead(ctx);
        if !self.is_primary() {
            // A candidate that hears nothing by the next check stands again, higher.
            self.heard = false;
            if self.failover_timer.is_none() {
                self.arm_watchdog(ctx);
            }
        }
    }

    fn maybe_lead(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        let Status::Candidate { votes } = &self.status else {
            return;
        };
        if votes.len() < self.majority() {
            return;
        }
        let mut merged = self.store.clone();
        for store in votes.values() {
            merge(&mut merged, store);
        }
        self.store = merged;
        self.epoch = self.promised;
        self.status = Status::Normal;
        self.next_seq = 0;
        self.pending.clear();
        self.unshipped.clear();
        self.persist(ctx);
        ctx.annotate(format!(
            "primary of epoch {} with {} keys",
            self.epoch,
            self.store.len()
        ));
        let (epoch, store) = (self.epoch, self.store.clone());
        for r in self.others().collect::<Vec<_>>() {
            ctx.send(
                r,
                Msg::StartView {
                    epoch,
                    store: store.clone(),
                },
            );
        }
        self.start_heartbeats(ctx);
    }

    /// Follow `epoch` (at least as new as any promise), asking its primary for the state if
    /// this replica may have missed its start.
    fn follow(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, epoch: u64, from: NodeId) {
        let missed_start = self.status != Status::Normal || epoch > self.epoch;
        if missed_start {
            self.adopt_view(ctx, epoch);
            ctx.send(from, Msg::StateRequest { epoch });
        }
    }

    /// Follows `epoch` as a backup, durably.
    fn adopt_view(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, epoch: u64) {
        self.epoch = epoch;
        self.promised = epoch;
        self.status = Status::Normal;
        self.pending.clear();
        self.persist(ctx);
    }

    /// Promises, durably, never to follow an epoch below `epoch`: whatever this replica was
    /// doing for an older epoch (leading, standing for election) stops.
    fn promise(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, epoch: u64) {
        self.promised = epoch;
        self.pending.clear();
        self.unshipped.clear();
        if matches!(self.status, Status::Candidate { .. }) {
            self.status = Status::Recovering;
        }
        self.persist(ctx);
    }

    /// Answers a message from an epoch older than the promise with the newer epoch.
    fn reject_if_stale(&self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, epoch: u64) -> bool {
        if epoch < self.promised {
            ctx.send(
                from,
                Msg::Reject {
                    epoch: self.promised,
                },
            );
            return true;
        }
        false
    }

    /// Answers the operation of `slot` once a majority holds it. Slots are answered as
    /// they complete, not in order: a read's value is taken when it comes in, possibly from
    /// a write still on its way to the backups, so a read can return a write no majority
    /// holds yet (`retrace check --linearizable` shows it when that write is then lost).
    fn maybe_commit(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, slot: u64) {
        let Some(p) = self.pending.get(&slot) else {
            return;
        };
        if p.acks.len() >= self.majority() {
            if let Some(p) = self.pending.remove(&slot) {
                ctx.send(
                    p.client,
                    Msg::Reply {
                        op_id: p.op_id,
                        result: p.result,
                    },
                );
            }
        }
    }

    pub fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match msg {
            Msg::Request { op_id, op } => self.on_client_request(ctx, from, op_id, op),
            Msg::Replicate {
                epoch,
                slot,
                writes,
            } => {
                if self.reject_if_stale(ctx, from, epoch) {
                    return;
                }
                self.follow(ctx, epoch, from);
                let mut changed = false;
                for (key, entry) in writes {
                    changed |= apply(&mut self.store, key, entry);
                }
                if changed {
                    self.persist(ctx);
                }
                ctx.send(from, Msg::ReplicateOk { epoch, slot });
                self.reset_failover(ctx);
            }
            Msg::ReplicateOk { epoch, slot } => {
                if self.is_primary() && epoch == self.epoch {
                    if let Some(p) = self.pending.get_mut(&slot) {
                        p.acks.insert(from.0);
                    }
                    self.maybe_commit(ctx, slot);
                }
            }
            Msg::Heartbeat { epoch } => {
                if self.reject_if_stale(ctx, from, epoch) {
                    return;
                }
                self.follow(ctx, epoch, from);
                self.reset_failover(ctx);
            }
            Msg::Reject { epoch } => {
                if epoch > self.promised {
                    ctx.annotate(format!(
                        "epoch {epoch} exists: stepping down from {}",
                        self.epoch
                    ));
                    self.promise(ctx, epoch);
                    self.reset_failover(ctx);
                }
            }
            Msg::ViewChange { epoch } => {
                if self.primary_of(epoch) != from {
                    return ctx.annotate(format!("{from} cannot lead epoch {epoch}: ignored"));
                }
                if self.reject_if_stale(ctx, from, epoch) {
                    return;
                }
                if epoch > self.promised {
                    self.promise(ctx, epoch);
                }
                ctx.send(
                    from,
                    Msg::ViewChangeOk {
                        epoch,
                        store: self.store.clone(),
                    },
                );
                self.reset_failover(ctx);
            }
            Msg::ViewChangeOk { epoch, store } => {
                if epoch == self.promised {
                    if let Status::Candidate { votes } = &mut self.status {
                        votes.insert(from.0, store);
                        self.maybe_lead(ctx);
                    }
                }
            }
            Msg::StartView { epoch, store } => {
                if self.reject_if_stale(ctx, from, epoch) {
                    return;
                }
                merge(&mut self.store, &store);
                self.adopt_view(ctx, epoch);
                self.reset_failover(ctx);
            }
            Msg::StateRequest { epoch } => {
                if self.is_primary() && epoch == self.epoch {
                    ctx.send(
                        from,
                        Msg::StartView {
                            epoch,
                            store: self.store.clone(),
                        },
                    );
                }
            }
            other => ctx.annotate(format!("replica ignores {other:?} from {from}")),
        }
    }

    fn on_client_request(
        &mut self,
        ctx: &mut Ctx<'_, Msg, Timer>,
        client: NodeId,
        op_id: u64,
        op: Op,
    ) {
        if !self.is_primary() {
            let hint = self.primary_of(self.promised.max(self.epoch));
            return ctx.send(
                client,
                Msg::Reply {
                    op_id,
                    result: OpResult::NotPrimary { hint },
                },
            );
        }
        let epoch = self.epoch;
        let (result, writes) = match op {
            Op::Put { key, value } => {
                let version = Version {
                    epoch,
                    seq: self.next_seq,
                };
                self.next_seq += 1;
                let entry = Entry { version, value };
                self.store.insert(key.clone(), entry.clone());
                self.persist(ctx);
                if self.bug == Some(KvBug::AckBeforeReplicate) {
                    tracing::debug!(key = %key, seq = version.seq, "acknowledged before any backup has it");
                    self.unshipped.push((key, entry));
                    return ctx.send(
                        client,
                        Msg::Reply {
                            op_id,
                            result: OpResult::PutOk { version },
                        },
                    );
                }
                (OpResult::PutOk { version }, vec![(key, entry)])
            }
            // A read also goes round a majority: a deposed primary that has not heard of its
            // successor must not answer from a stale store.
            Op::Get { key } if self.bug == Some(KvBug::LocalReads) => {
                let entry = self.store.get(&key).cloned();
                tracing::debug!(key = %key, "read answered from the local store");
                return ctx.send(
                    client,
                    Msg::Reply {
                        op_id,
                        result: OpResult::GetOk { entry },
                    },
                );
            }
            Op::Get { key } => (
                OpResult::GetOk {
                    entry: self.store.get(&key).cloned(),
                },
                Vec::new(),
            ),
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        let acks = BTreeSet::from([self.me]);
        self.pending.insert(
            slot,
            PendingOp {
                client,
                op_id,
                result,
                acks,
            },
        );
        for r in self.others().collect::<Vec<_>>() {
            ctx.send(
                r,
                Msg::Replicate {
                    epoch,
                    slot,
                    writes: writes.clone(),
                },
            );
        }
        self.maybe_commit(ctx, slot);
    }
}
