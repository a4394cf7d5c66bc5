//! `webstack`: the "problem is in the arrows between the boxes" picture of a busy site.
//!
//! Clients send page requests to a load balancer, which spreads them over web frontends; a
//! frontend asks the cache, and on a miss the database, then fills the cache and answers
//! back through the balancer. Every handler has a service time (`ctx.busy`), so load turns
//! into queueing where a box is saturated. A `batch` node runs a heavy job on the database
//! once a day at noon (the scenario compresses the day): the database slows down for
//! everyone, and the profiler shows where that time goes.

use retrace_sim::{
    invariant, Ctx, Invariant, Model, Node, NodeId, NodeSpec, OptionError, SimRng, TimerId, View,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// External: a user asks a client for a page.
    Get {
        page: u32,
    },
    /// External reply: the page.
    Page {
        page: u32,
        from_cache: bool,
    },
    Request {
        id: u64,
        page: u32,
    },
    Response {
        id: u64,
        page: u32,
        from_cache: bool,
    },
    CacheGet {
        tag: u64,
        page: u32,
    },
    CacheHit {
        tag: u64,
        page: u32,
    },
    CacheMiss {
        tag: u64,
        page: u32,
    },
    CachePut {
        page: u32,
    },
    Query {
        tag: u64,
        page: u32,
        heavy: bool,
    },
    Rows {
        tag: u64,
        page: u32,
    },
}

/// Options under `[model_options]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebstackOptions {
    pub clients: u32,
    pub webs: u32,
    /// Pages `0..pages`; popular pages are requested more often.
    pub pages: u32,
    pub cache_ttl_ms: u64,
    /// Service times.
    pub lb_us: u64,
    pub web_us: u64,
    pub cache_us: u64,
    pub db_query_us: u64,
    /// The daily batch job: when it starts (time of day), how long it runs, how heavy and
    /// how frequent its queries are, and how long a day is.
    pub day_ms: u64,
    pub noon_ms: u64,
    pub batch_duration_ms: u64,
    pub batch_query_ms: u64,
    pub batch_interval_ms: u64,
}

impl Default for WebstackOptions {
    fn default() -> Self {
        WebstackOptions {
            clients: 4,
            webs: 3,
            pages: 2000,
            cache_ttl_ms: 2000,
            lb_us: 50,
            web_us: 300,
            cache_us: 50,
            db_query_us: 1000,
            day_ms: 24_000,
            noon_ms: 12_000,
            batch_duration_ms: 2_000,
            batch_query_ms: 20,
            batch_interval_ms: 25,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Webstack {
    Client {
        lb: NodeId,
        next_id: u64,
        outstanding: BTreeMap<u64, u32>,
        answered: u64,
        wrong: u64,
    },
    Balancer {
        webs: Vec<NodeId>,
        next: usize,
        next_id: u64,
        routes: BTreeMap<u64, (NodeId, u64)>,
        service_us: u64,
    },
    Web {
        cache: NodeId,
        db: NodeId,
        next_tag: u64,
        pending: BTreeMap<u64, (NodeId, u64, u32)>,
        service_us: u64,
    },
    Cache {
        entries: BTreeMap<u32, u64>,
        ttl_ns: u64,
        hits: u64,
        misses: u64,
        service_us: u64,
    },
    Database {
        queries: u64,
        query_us: u64,
        heavy_ms: u64,
    },
    Batch {
        db: NodeId,
        queries_left: u64,
        next_tag: u64,
        opts: BatchPlan,
    },
}

/// The batch job's schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    pub day_ms: u64,
    pub noon_ms: u64,
    pub duration_ms: u64,
    pub query_ms: u64,
    pub interval_ms: u64,
}

/// The batch job's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Timer {
    /// Noon: the daily batch job starts.
    Lunch,
    /// The batch job's next heavy query.
    BatchQuery,
}

impl Node for Webstack {
    type Msg = Msg;
    type Timer = Timer;

    fn on_start(&mut self, ctx: &mut Ctx<'_, Msg, Timer>) {
        if let Webstack::Batch { opts, .. } = self {
            ctx.set_timer(Duration::from_millis(opts.noon_ms), Timer::Lunch);
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, request: Msg) {
        match (self, request) {
            (
                Webstack::Client {
                    lb,
                    next_id,
                    outstanding,
                    ..
                },
                Msg::Get { page },
            ) => {
                let id = *next_id;
                *next_id += 1;
                outstanding.insert(id, page);
                ctx.send(*lb, Msg::Request { id, page });
            }
            (_, other) => ctx.annotate(format!("ignored external {other:?}")),
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, from: NodeId, msg: Msg) {
        match (self, msg) {
            (
                Webstack::Client {
                    outstanding,
                    answered,
                    wrong,
                    ..
                },
                Msg::Response {
                    id,
                    page,
                    from_cache,
                },
            ) => {
                if let Some(asked) = outstanding.remove(&id) {
                    *answered += 1;
                    if asked != page {
                        *wrong += 1;
                    }
                    ctx.respond(Msg::Page { page, from_cache });
                }
            }
            (
                Webstack::Balancer {
                    webs,
                    next,
                    next_id,
                    routes,
                    service_us,
                },
                Msg::Request { id, page },
            ) => {
                ctx.busy(Duration::from_micros(*service_us));
                let lb_id = *next_id;
                *next_id += 1;
                routes.insert(lb_id, (from, id));
                let web = webs[*next % webs.len()];
                *next += 1;
                ctx.send(web, Msg::Request { id: lb_id, page });
            }
            (
                Webstack::Balancer {
                    routes, service_us, ..
                },
                Msg::Response {
                    id,
                    page,
                    from_cache,
                },
            ) => {
                ctx.busy(Duration::from_micros(*service_us));
                if let Some((client, client_id)) = routes.remove(&id) {
                    ctx.send(
                        client,
                        Msg::Response {
                            id: client_id,
                            page,
                            from_cache,
                        },
                    );
                }
            }
            (
                Webstack::Web {
                    cache,
                    next_tag,
                    pending,
                    service_us,
                    ..
                },
                Msg::Request { id, page },
            ) => {
                ctx.busy(Duration::from_micros(*service_us));
                let tag = *next_tag;
                *next_tag += 1;
                pending.insert(tag, (from, id, page));
                ctx.send(*cache, Msg::CacheGet { tag, page });
            }
            (
                Webstack::Web {
                    pending,
                    service_us,
                    ..
                },
                Msg::CacheHit { tag, page },
            ) => {
                ctx.busy(Duration::from_micros(*service_us / 2));
                if let Some((lb, id, _)) = pending.remove(&tag) {
                    ctx.send(
                        lb,
                        Msg::Response {
                            id,
                            page,
                            from_cache: true,
                        },
                    );
                }
            }
            (Webstack::Web { db, .. }, Msg::CacheMiss { tag, page }) => {
                ctx.send(
                    *db,
                    Msg::Query {
                        tag,
                        page,
                        heavy: false,
                    },
                );
            }
            (
                Webstack::Web {
                    cache,
                    pending,
                    service_us,
                    ..
                },
                Msg::Rows { tag, page },
            ) => {
                ctx.busy(Duration::from_micros(*service_us / 2));
                ctx.send(*cache, Msg::CachePut { page });
                if let Some((lb, id, _)) = pending.remove(&tag) {
                    ctx.send(
                        lb,
                        Msg::Response {
                            id,
                            page,
                            from_cache: false,
                        },
                    );
                }
            }
            (
                Webstack::Cache {
                    entries,
                    hits,
                    misses,
                    service_us,
                    ..
                },
                Msg::CacheGet { tag, page },
            ) => {
                ctx.busy(Duration::from_micros(*service_us));
                let now = ctx.now().as_nanos();
                if entries.get(&page).is_some_and(|&expires| expires > now) {
                    *hits += 1;
                    ctx.send(from, Msg::CacheHit { tag, page });
                } else {
                    *misses += 1;
                    ctx.send(from, Msg::CacheMiss { tag, page });
                }
            }
            (
                Webstack::Cache {
                    entries,
                    ttl_ns,
                    service_us,
                    ..
                },
                Msg::CachePut { page },
            ) => {
                ctx.busy(Duration::from_micros(*service_us));
                let expires = ctx.now().as_nanos().saturating_add(*ttl_ns);
                entries.insert(page, expires);
            }
            (
                Webstack::Database {
                    queries,
                    query_us,
                    heavy_ms,
                },
                Msg::Query { tag, page, heavy },
            ) => {
                *queries += 1;
                let cost = if heavy {
                    Duration::from_millis(*heavy_ms)
                } else {
                    Duration::from_micros(*query_us)
                };
                ctx.busy(cost);
                ctx.send(from, Msg::Rows { tag, page });
            }
            (Webstack::Batch { .. }, Msg::Rows { .. }) => {}
            (_, other) => ctx.annotate(format!("unexpected {other:?} from {from}")),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Msg, Timer>, _timer: TimerId, tag: Timer) {
        let Webstack::Batch {
            db,
            queries_left,
            next_tag,
            opts,
        } = self
        else {
            return;
        };
        match tag {
            Timer::Lunch => {
                ctx.annotate("noon: the batch job starts");
                *queries_left = opts.duration_ms / opts.interval_ms.max(1);
                ctx.set_timer(Duration::ZERO, Timer::BatchQuery);
                // Tomorrow's run: a periodic timer, which must belong to no request.
                ctx.set_timer(Duration::from_millis(opts.day_ms), Timer::Lunch);
            }
            Timer::BatchQuery if *queries_left > 0 => {
                *queries_left -= 1;
                let tag = *next_tag;
                *next_tag += 1;
                ctx.send(
                    *db,
                    Msg::Query {
                        tag,
                        page: 0,
                        heavy: true,
                    },
                );
                ctx.set_timer(Duration::from_millis(opts.interval_ms), Timer::BatchQuery);
            }
            _ => {}
        }
    }
}

/// The `webstack` model.
pub struct WebstackModel;

fn ids(o: &WebstackOptions) -> (NodeId, NodeId, NodeId, NodeId) {
    // Node order: clients, lb, webs, cache, db, batch.
    let lb = NodeId(o.clients);
    let cache = NodeId(o.clients + 1 + o.webs);
    (lb, cache, NodeId(cache.0 + 1), NodeId(cache.0 + 2))
}

impl Model for WebstackModel {
    const NAME: &'static str = "webstack";
    const ABOUT: &'static str =
        "clients -> load balancer -> web frontends -> cache -> database, with a noon batch job";
    type Node = Webstack;
    type Options = WebstackOptions;

    fn validate(o: &WebstackOptions) -> Result<(), OptionError> {
        let err = |field: &str, message: &str| {
            Err(OptionError {
                field: field.into(),
                message: message.into(),
            })
        };
        if !(1..=10_000).contains(&o.clients) {
            return err("clients", "must be between 1 and 10000");
        }
        if !(1..=1000).contains(&o.webs) {
            return err("webs", "must be between 1 and 1000");
        }
        if o.pages == 0 {
            return err("pages", "must be at least 1");
        }
        if o.day_ms == 0 || o.noon_ms >= o.day_ms {
            return err("noon_ms", "must be within the day (below day_ms)");
        }
        if o.batch_interval_ms == 0 {
            return err("batch_interval_ms", "must be at least 1");
        }
        Ok(())
    }

    fn nodes(o: &WebstackOptions) -> Vec<NodeSpec> {
        let mut v: Vec<NodeSpec> = (0..o.clients)
            .map(|i| NodeSpec::new(format!("client-{i}"), "client"))
            .collect();
        v.push(NodeSpec::new("lb", "balancer"));
        v.extend((0..o.webs).map(|i| NodeSpec::new(format!("web-{i}"), "web")));
        v.push(NodeSpec::new("cache", "cache"));
        v.push(NodeSpec::new("db", "database"));
        v.push(NodeSpec::new("batch", "batch"));
        v
    }

    fn build(o: &WebstackOptions, id: NodeId) -> Webstack {
        let (lb, cache, db, batch) = ids(o);
        if id.0 < o.clients {
            Webstack::Client {
                lb,
                next_id: 0,
                outstanding: BTreeMap::new(),
                answered: 0,
                wrong: 0,
            }
        } else if id == lb {
            Webstack::Balancer {
                webs: (0..o.webs).map(|w| NodeId(lb.0 + 1 + w)).collect(),
                next: 0,
                next_id: 0,
                routes: BTreeMap::new(),
                service_us: o.lb_us,
            }
        } else if id == cache {
            Webstack::Cache {
                entries: BTreeMap::new(),
                ttl_ns: o.cache_ttl_ms * 1_000_000,
                hits: 0,
                misses: 0,
                service_us: o.cache_us,
            }
        } else if id == db {
            Webstack::Database {
                queries: 0,
                query_us: o.db_query_us,
                heavy_ms: o.batch_query_ms,
            }
        } else if id == batch {
            Webstack::Batch {
                db,
                queries_left: 0,
                next_tag: 0,
                opts: BatchPlan {
                    day_ms: o.day_ms,
                    noon_ms: o.noon_ms,
                    duration_ms: o.batch_duration_ms,
                    query_ms: o.batch_query_ms,
                    interval_ms: o.batch_interval_ms,
                },
            }
        } else {
            Webstack::Web {
                cache,
                db,
                next_tag: 0,
                pending: BTreeMap::new(),
                service_us: o.web_us,
            }
        }
    }

    fn invariants(_: &WebstackOptions) -> Vec<Box<dyn Invariant<Webstack>>> {
        vec![invariant(
            "every answer is the page asked for",
            |v: &View<'_, Webstack>| match v.nodes.get(v.node.index()) {
                Some(Some(Webstack::Client { wrong, .. })) if *wrong > 0 => {
                    Err(format!("{} answers were for another page", wrong).into())
                }
                _ => Ok(()),
            },
        )]
    }

    fn request(o: &WebstackOptions, rng: &mut SimRng) -> Option<(NodeId, Msg)> {
        let client = NodeId(rng.below(u64::from(o.clients)) as u32);
        // Popular pages are asked for more: a page below a random bound below `pages`.
        let bound = rng.below(u64::from(o.pages)) + 1;
        let page = rng.below(bound) as u32;
        Some((client, Msg::Get { page }))
    }
}
