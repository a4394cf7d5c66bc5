//! `webcache`: a web tier that serves HTTP and keeps a real Redis in front of its database —
//! cache-aside, as most sites do it, with the bug most sites have.
//!
//! A web node answers `GET /item/KEY` from Redis (`GET`), and on a miss reads the `db` node
//! and fills the cache (`SET`). `PUT /item/KEY` writes the database, then invalidates the
//! cache (`DEL`) and answers. Redis is a black-box service (`[services.cache]`): in a
//! recording the web nodes talk RESP to a real `redis-server`; in the simulator
//! [`resp::SimRedis`] plays it, and the scenario's service faults (resets, hangs, crashes)
//! apply to it.
//!
//! The bug lives in the arrows to the black box. A read that missed fills the cache with
//! what it read from the database — which a write may have replaced, and invalidated, in
//! between: the stale value then stays in the cache. And a write whose `DEL` is lost (the
//! connection reset, Redis did not answer in time) answers the client anyway. Either way a
//! later read is served a value older than one already acknowledged, which the invariant
//! `reads see acknowledged writes` catches from what clients saw.

pub mod http;
pub mod resp;

use redis_protocol::resp2::types::OwnedFrame;
use retrace_sim::history::ClientEvent;
use retrace_sim::{
    Broken, ConnId, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, RequestId,
    ServiceEvent, SimRng, TimerId, View,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The service name web nodes connect to: `[services.cache]` in a scenario.
pub const CACHE: &str = "cache";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External: read a key.
    Get { key: String },
    /// External: write a key.
    Put { key: String, value: String },
    /// Answer to `Get`: the value (`None`: no such key) and its version, and whether the
    /// cache served it.
    Item {
        key: String,
        version: u64,
        value: Option<String>,
        from_cache: bool,
    },
    /// Answer to `Put`: the version the database gave the value.
    Stored { key: String, version: u64 },
    /// Web → db: read a key for operation `op`.
    Read { op: u64, key: String },
    /// Db → web: the key's row (version 0, no value: never written).
    Row {
        op: u64,
        version: u64,
        value: Option<String>,
    },
    /// Web → db: write a key for operation `op`.
    Write { op: u64, key: String, value: String },
    /// Db → web: written, as `version`.
    Written { op: u64, version: u64 },
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebcacheOptions {
    /// Web nodes (`web-0`, `web-1`, …); the database is `db`.
    pub webs: u32,
    /// Keys `k0..kN` the workload uses.
    pub keys: u32,
    /// The share of the workload's requests that are writes.
    pub write_ratio: f64,
    /// How long a web node waits for Redis's answer before it gives up on the connection.
    pub cache_timeout_ms: u64,
    /// How long a web node waits before it reconnects to Redis.
    pub reconnect_ms: u64,
    /// Service times.
    pub web_us: u64,
    pub db_us: u64,
}

impl Default for WebcacheOptions {
    fn default() -> Self {
        WebcacheOptions {
            webs: 2,
            keys: 4,
            write_ratio: 0.3,
            cache_timeout_ms: 50,
            reconnect_ms: 100,
            web_us: 100,
            db_us: 400,
        }
    }
}

/// What an operation in progress at a web node is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum OpKind {
    Get,
    Put,
    /// The database wrote it as `version`; the cache's `DEL` is in flight.
    Invalidating {
        version: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Op {
    pub request: RequestId,
    pub key: String,
    pub kind: OpKind,
}

/// A command sent to Redis whose reply has not arrived (Redis answers in order).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Cmd {
    /// `GET` for operation `op`.
    Get { op: u64 },
    /// `SET` filling the cache after a miss (nobody waits on it).
    Fill,
    /// `DEL` invalidating after the write of operation `op`.
    Invalidate { op: u64 },
}

/// A web node's connection to Redis.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheLink {
    /// The connection, from connect until it closes.
    pub conn: Option<ConnId>,
    /// Commands in flight, oldest first.
    pub waiting: VecDeque<Cmd>,
    /// Reply bytes not yet a whole frame.
    pub pending: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Timer {
    /// Time to connect to Redis again.
    Reconnect,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Role {
    Web {
        cache: CacheLink,
        ops: BTreeMap<u64, Op>,
        next_op: u64,
        db: NodeId,
        timeout_ms: u64,
        reconnect_ms: u64,
        busy_us: u64,
    },
    Db {
        /// key → (version, value): what the node's storage holds, synced at every write,
        /// read back at every boot.
        rows: BTreeMap<String, (u64, String)>,
        busy_us: u64,
    },
}

type WebCtx<'a> = Ctx<'a, Msg, Timer>;

/// A cached value as stored in Redis: `VERSION:VALUE`.
fn cached(version: u64, value: &str) -> Vec<u8> {
    format!("{version}:{value}").into_bytes()
}

fn parse_cached(bytes: &[u8]) -> Option<(u64, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (version, value) = text.split_once(':')?;
    Some((version.parse().ok()?, value.to_string()))
}

impl Role {
    fn connect(ctx: &mut WebCtx<'_>, link: &mut CacheLink, timeout_ms: u64) {
        link.conn = Some(ctx.connect(CACHE, Duration::from_millis(timeout_ms)));
        link.waiting.clear();
        link.pending.clear();
    }

    /// Sends `command` to Redis if the node holds a connection; false if it does not.
    fn send_cache(ctx: &mut WebCtx<'_>, link: &mut CacheLink, command: Vec<u8>, cmd: Cmd) -> bool {
        let Some(conn) = link.conn else {
            return false;
        };
        ctx.write(conn, command);
        link.waiting.push_back(cmd);
        true
    }
}

impl Node for Role {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        match self {
            Role::Web {
                cache, timeout_ms, ..
            } => Role::connect(ctx, cache, *timeout_ms),
            Role::Db { rows, .. } => {
                for key in ctx.storage().keys() {
                    match ctx.storage().get_value::<(u64, String)>(&key) {
                        Some(Ok(row)) => {
                            rows.insert(key, row);
                        }
                        _ => ctx.annotate(format!("db: row {key:?} does not decode")),
                    }
                }
            }
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        let Role::Web {
            cache,
            ops,
            next_op,
            db,
            busy_us,
            ..
        } = self
        else {
            return ctx.annotate("the database serves no clients");
        };
        ctx.busy(Duration::from_micros(*busy_us));
        let Some(request_id) = ctx.request_ids().first().copied() else {
            return;
        };
        let op = *next_op;
        *next_op += 1;
        match request {
            Msg::Get { key } => {
                let command = resp::command(&[b"GET", key.as_bytes()]);
                if !Role::send_cache(ctx, cache, command, Cmd::Get { op }) {
                    // No cache: straight to the database.
                    ctx.send(
                        *db,
                        Msg::Read {
                            op,
                            key: key.clone(),
                        },
                    );
                }
                ops.insert(
                    op,
                    Op {
                        request: request_id,
                        key,
                        kind: OpKind::Get,
                    },
                );
            }
            Msg::Put { key, value } => {
                ctx.send(
                    *db,
                    Msg::Write {
                        op,
                        key: key.clone(),
                        value,
                    },
                );
                ops.insert(
                    op,
                    Op {
                        request: request_id,
                        key,
                        kind: OpKind::Put,
                    },
                );
            }
            other => ctx.annotate(format!("not a client request: {other:?}")),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match self {
            Role::Db { rows, busy_us } => {
                ctx.busy(Duration::from_micros(*busy_us));
                match msg {
                    Msg::Read { op, key } => {
                        let (version, value) = match rows.get(&key) {
                            Some((v, value)) => (*v, Some(value.clone())),
                            None => (0, None),
                        };
                        ctx.send(from, Msg::Row { op, version, value });
                    }
                    Msg::Write { op, key, value } => {
                        let version = rows.get(&key).map_or(0, |(v, _)| *v) + 1;
                        let row = (version, value);
                        // Durable before it is acknowledged.
                        if ctx.storage().put_value(key.clone(), &row).is_err() {
                            return ctx.annotate(format!("db: row {key:?} does not encode"));
                        }
                        ctx.storage().sync();
                        rows.insert(key, row);
                        ctx.send(from, Msg::Written { op, version });
                    }
                    other => ctx.annotate(format!("db: unexpected {other:?}")),
                }
            }
            Role::Web {
                cache,
                ops,
                busy_us,
                ..
            } => {
                ctx.busy(Duration::from_micros(*busy_us));
                match msg {
                    Msg::Row { op, version, value } => {
                        let Some(o) = ops.remove(&op) else { return };
                        if let Some(value) = &value {
                            // Cache-aside's fill: what was read, whatever happened since.
                            let command =
                                resp::command(&[b"SET", o.key.as_bytes(), &cached(version, value)]);
                            Role::send_cache(ctx, cache, command, Cmd::Fill);
                        }
                        ctx.respond_to(
                            o.request,
                            Msg::Item {
                                key: o.key,
                                version,
                                value,
                                from_cache: false,
                            },
                        );
                    }
                    Msg::Written { op, version } => {
                        let Some(o) = ops.get(&op) else { return };
                        let command = resp::command(&[b"DEL", o.key.as_bytes()]);
                        if !Role::send_cache(ctx, cache, command, Cmd::Invalidate { op }) {
                            // No connection to invalidate over: answered anyway (the bug).
                            if let Some(o) = ops.remove(&op) {
                                ctx.respond_to(
                                    o.request,
                                    Msg::Stored {
                                        key: o.key,
                                        version,
                                    },
                                );
                            }
                            return;
                        }
                        if let Some(o) = ops.get_mut(&op) {
                            o.kind = OpKind::Invalidating { version };
                        }
                    }
                    other => ctx.annotate(format!("web: unexpected {other:?}")),
                }
            }
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, _timer: TimerId, tag: Timer) {
        match (self, tag) {
            (
                Role::Web {
                    cache, timeout_ms, ..
                },
                Timer::Reconnect,
            ) => {
                if cache.conn.is_none() {
                    Role::connect(ctx, cache, *timeout_ms);
                }
            }
            (Role::Db { .. }, _) => {}
        }
    }

    fn on_service(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, conn: ConnId, event: ServiceEvent) {
        let Role::Web {
            cache,
            ops,
            db,
            reconnect_ms,
            ..
        } = self
        else {
            return;
        };
        if cache.conn != Some(conn) {
            return ctx.annotate(format!("{conn} is not the cache connection"));
        }
        let broken = match event {
            ServiceEvent::Connected => return,
            ServiceEvent::Data { bytes } => {
                cache.pending.extend_from_slice(&bytes);
                loop {
                    match resp::take_frame(&mut cache.pending) {
                        Ok(Some(frame)) => {
                            let Some(cmd) = cache.waiting.pop_front() else {
                                break Some("a reply to no command".to_string());
                            };
                            reply(ctx, ops, *db, cmd, frame);
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                }
            }
            ServiceEvent::Closed { reason } => Some(reason),
            ServiceEvent::TimedOut => Some("Redis did not answer in time".to_string()),
        };
        let Some(why) = broken else { return };
        ctx.annotate(format!("cache connection lost: {why}"));
        if let Some(conn) = cache.conn.take() {
            ctx.close(conn);
        }
        // Every command in flight failed: reads go to the database, writes answer without
        // their invalidation (the bug), fills are lost.
        let failed: Vec<Cmd> = cache.waiting.drain(..).collect();
        cache.pending.clear();
        for cmd in failed {
            fail(ctx, ops, *db, cmd);
        }
        ctx.detach();
        ctx.set_timer(Duration::from_millis(*reconnect_ms), Timer::Reconnect);
    }
}

/// Redis answered `cmd` with `frame`.
fn reply(
    ctx: &mut WebCtx<'_>,
    ops: &mut BTreeMap<u64, Op>,
    db: NodeId,
    cmd: Cmd,
    frame: OwnedFrame,
) {
    match cmd {
        Cmd::Fill => {}
        Cmd::Get { op } => {
            let hit = match &frame {
                OwnedFrame::BulkString(bytes) => parse_cached(bytes),
                _ => None,
            };
            let Some((version, value)) = hit else {
                return fail(ctx, ops, db, cmd);
            };
            if let Some(o) = ops.remove(&op) {
                ctx.respond_to(
                    o.request,
                    Msg::Item {
                        key: o.key,
                        version,
                        value: Some(value),
                        from_cache: true,
                    },
                );
            }
        }
        Cmd::Invalidate { op } => finish_put(ctx, ops, op),
    }
}

/// `cmd` got no useful answer: a read asks the database, a write answers anyway.
fn fail(ctx: &mut WebCtx<'_>, ops: &mut BTreeMap<u64, Op>, db: NodeId, cmd: Cmd) {
    match cmd {
        Cmd::Fill => {}
        Cmd::Get { op } => {
            if let Some(o) = ops.get(&op) {
                let key = o.key.clone();
                ctx.send(db, Msg::Read { op, key });
            }
        }
        Cmd::Invalidate { op } => finish_put(ctx, ops, op),
    }
}

fn finish_put(ctx: &mut WebCtx<'_>, ops: &mut BTreeMap<u64, Op>, op: u64) {
    let Some(o) = ops.remove(&op) else { return };
    let OpKind::Invalidating { version } = o.kind else {
        return ctx.annotate(format!("{op} answered before its write: {o:?}"));
    };
    ctx.respond_to(
        o.request,
        Msg::Stored {
            key: o.key,
            version,
        },
    );
}

/// `reads see acknowledged writes`: a read that began after a write of its key was
/// acknowledged returns that write's version or a later one. Checked from what clients saw,
/// so it holds a recording to the same standard as a simulation.
#[derive(Clone, Default)]
pub struct ReadsSeeWrites {
    /// key → the newest version acknowledged to a client.
    acknowledged: BTreeMap<String, u64>,
    /// A read in progress → the version it must see at least.
    reads: BTreeMap<RequestId, u64>,
}

impl Invariant<Role> for ReadsSeeWrites {
    fn name(&self) -> &str {
        "reads see acknowledged writes"
    }
    fn sees_clients(&self) -> bool {
        true
    }
    fn check(&mut self, view: &View<'_, Role>) -> Result<(), Broken> {
        for event in view.client {
            match event {
                ClientEvent::Invoke {
                    request,
                    msg: Msg::Get { key },
                    ..
                } => {
                    let floor = self.acknowledged.get(key).copied().unwrap_or(0);
                    self.reads.insert(*request, floor);
                }
                ClientEvent::Complete {
                    msg: Msg::Stored { key, version },
                    ..
                } => {
                    let newest = self.acknowledged.entry(key.clone()).or_insert(0);
                    *newest = (*newest).max(*version);
                }
                ClientEvent::Complete {
                    request,
                    msg:
                        Msg::Item {
                            key,
                            version,
                            from_cache,
                            ..
                        },
                    ..
                } => {
                    let Some(floor) = self.reads.remove(request) else {
                        continue;
                    };
                    if version < &floor {
                        let source = if *from_cache {
                            "the cache"
                        } else {
                            "the database"
                        };
                        return Err(Broken::new(format!(
                            "stale read: GET {key} ({request}) got version {version} from {source}, \
                             though version {floor} was acknowledged before the read began"
                        ))
                        .fact("key", key.clone())
                        .fact("version", version.to_string())
                        .fact("acknowledged", floor.to_string()));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
    fn boxed_clone(&self) -> Box<dyn Invariant<Role>> {
        Box::new(self.clone())
    }
}

pub struct WebcacheModel;

impl Model for WebcacheModel {
    const NAME: &'static str = "webcache";
    const ABOUT: &'static str =
        "HTTP web tier with Redis in front of a database (cache-aside, with its stale-read bug)";
    type Node = Role;
    type Options = WebcacheOptions;

    fn validate(options: &WebcacheOptions) -> Result<(), OptionError> {
        let bad = |field: &str, message: &str| {
            Err(OptionError {
                field: field.into(),
                message: message.into(),
            })
        };
        if !(1..=64).contains(&options.webs) {
            return bad("webs", "must be between 1 and 64");
        }
        if !(1..=10_000).contains(&options.keys) {
            return bad("keys", "must be between 1 and 10000");
        }
        if !(0.0..=1.0).contains(&options.write_ratio) {
            return bad("write_ratio", "must be between 0 and 1");
        }
        if options.reconnect_ms == 0 {
            return bad("reconnect_ms", "must be at least 1");
        }
        Ok(())
    }

    fn nodes(options: &WebcacheOptions) -> Vec<NodeSpec> {
        let mut nodes: Vec<NodeSpec> = (0..options.webs)
            .map(|i| NodeSpec::new(format!("web-{i}"), "web"))
            .collect();
        nodes.push(NodeSpec::new("db", "db"));
        nodes
    }

    fn build(options: &WebcacheOptions, id: NodeId) -> Role {
        if id.0 < options.webs {
            Role::Web {
                cache: CacheLink::default(),
                ops: BTreeMap::new(),
                next_op: 0,
                db: NodeId(options.webs),
                timeout_ms: options.cache_timeout_ms,
                reconnect_ms: options.reconnect_ms,
                busy_us: options.web_us,
            }
        } else {
            Role::Db {
                rows: BTreeMap::new(),
                busy_us: options.db_us,
            }
        }
    }

    fn invariants(_: &WebcacheOptions) -> Vec<Box<dyn Invariant<Role>>> {
        vec![Box::new(ReadsSeeWrites::default())]
    }

    fn http(_: &WebcacheOptions) -> Box<dyn retrace_sim::http::HttpApi<Msg>> {
        Box::new(http::WebcacheHttp)
    }

    fn service(_: &WebcacheOptions, name: &str) -> Option<Box<dyn retrace_sim::Service>> {
        (name == CACHE)
            .then(|| Box::new(resp::SimRedis::default()) as Box<dyn retrace_sim::Service>)
    }

    fn show_service_bytes(bytes: &[u8]) -> Option<String> {
        resp::show(bytes)
    }

    fn request(options: &WebcacheOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        let web = NodeId(rng.below(u64::from(options.webs)) as u32);
        let key = format!("k{}", rng.below(u64::from(options.keys)));
        let msg = if rng.chance(options.write_ratio) {
            Msg::Put {
                key,
                value: format!("v{}", rng.below(1_000_000)),
            }
        } else {
            Msg::Get { key }
        };
        Some((web, msg))
    }
}
