//! Services in the simulator: each `[services.NAME]` of the scenario played by the model's
//! [`Service`], over links with the service's latency and faults (a reset, a hang, a crash,
//! drawn per write from the service's own stream), answering with bytes that reach the node
//! as inputs — the same records a recording makes against the real server.

use super::env::{Core, Pending, ReqIds};
use super::Simulation;
use crate::ids::NodeId;
use crate::model::Model;
use crate::node::{Ctx, Message, Node};
use crate::rng::{derive_seed, Purpose, SimRng};
use crate::scenario::ServiceSpec;
use crate::service::{reason, ConnId, Service, ServiceEvent, ServiceOp};
use crate::trace::InputHead;
use std::collections::BTreeMap;

/// Builds a service afresh (at the start, and after each of its crashes).
pub(super) type ServiceFactory = Box<dyn Fn() -> Box<dyn Service>>;

/// A connection, from the node's connect until the node closes it or hears that it closed.
pub(super) struct SimConn {
    pub node: NodeId,
    /// The node's life that opened it: its events never reach a later life.
    pub life: u64,
    /// The service at the other end; `None` once that end is gone (a reset, a crash, a
    /// timeout, no such service) and the node's `Closed` or `TimedOut` is on its way. Once
    /// the node closes the connection itself, nothing more reaches it, that news included.
    pub service: Option<usize>,
    pub timeout_ns: u64,
    /// Trace index of the node's latest operation on it, and that step's request ids: what
    /// an event the service makes on its own (a crash) answers.
    pub last_op: u64,
    pub ids: ReqIds,
    /// Data events handed to the node on it; a timeout set at a write fires only if this
    /// has not moved since.
    pub answers: u64,
    /// The service stopped answering on it (a hang fault): writes vanish.
    pub hung: bool,
    /// When the last bytes each way arrive: a connection is one TCP stream each way, so
    /// bytes arrive in the order they were sent, whatever latency each write draws.
    pub there_last_ns: u64,
    pub back_last_ns: u64,
}

/// Every service of the scenario and the connections open to them.
pub(super) struct Services {
    specs: Vec<ServiceSpec>,
    factories: Vec<ServiceFactory>,
    sims: Vec<Box<dyn Service>>,
    /// Latency and fault draws, one stream per service, so that one service's traffic
    /// shifts no other's.
    rngs: Vec<SimRng>,
    pub conns: BTreeMap<ConnId, SimConn>,
    next_conn: u64,
}

/// A connection open at a fork, as [`Services::sever_at_fork`] takes it.
pub(super) struct SimConnAtFork {
    pub conn: ConnId,
    pub node: NodeId,
    pub life: u64,
    pub last_op: u64,
    pub ids: ReqIds,
}

/// A service event on its way to its node (boxed in the queue, which stays small).
pub(super) struct ServiceDelivery {
    pub node: NodeId,
    pub life: u64,
    pub conn: ConnId,
    /// Trace index of the operation it answers.
    pub cause: u64,
    pub ids: ReqIds,
    pub event: ServiceEvent,
}

impl Services {
    pub fn new<M: Model>(specs: &[ServiceSpec], options: &M::Options, seed: u64) -> Self {
        let factories: Vec<ServiceFactory> = specs
            .iter()
            .map(|spec| {
                let (options, name) = (options.clone(), spec.name.clone());
                // The scenario's parse refused a service the model cannot simulate.
                let make: ServiceFactory = Box::new(move || {
                    M::service(&options, &name)
                        .unwrap_or_else(|| panic!("model has no simulation of service `{name}`"))
                });
                make
            })
            .collect();
        Services {
            sims: factories.iter().map(|make| make()).collect(),
            rngs: (0..specs.len() as u64)
                .map(|i| SimRng::new(derive_seed(seed, Purpose::Services, i, 0)))
                .collect(),
            specs: specs.to_vec(),
            factories,
            conns: BTreeMap::new(),
            next_conn: 0,
        }
    }

    /// A fork's services start afresh, with ids above the trace's: each connection open at
    /// the fork is one whose service end is gone, so the node hears it was reset (see
    /// [`Simulation::fork`](super::Simulation::fork)).
    pub fn sever_at_fork(
        &mut self,
        next_conn: u64,
        open: &[SimConnAtFork],
    ) -> Vec<ServiceDelivery> {
        self.next_conn = self.next_conn.max(next_conn);
        open.iter()
            .map(|c| {
                self.conns.insert(
                    c.conn,
                    SimConn {
                        node: c.node,
                        life: c.life,
                        service: None,
                        timeout_ns: 0,
                        last_op: c.last_op,
                        ids: c.ids,
                        answers: 0,
                        hung: false,
                        there_last_ns: 0,
                        back_last_ns: 0,
                    },
                );
                ServiceDelivery {
                    node: c.node,
                    life: c.life,
                    conn: c.conn,
                    cause: c.last_op,
                    ids: c.ids,
                    event: ServiceEvent::Closed {
                        reason: reason::RESET.into(),
                    },
                }
            })
            .collect()
    }

    fn latency_ns(&mut self, service: usize) -> u64 {
        let range = self.specs[service].latency;
        self.rngs[service].between(range.lo_ns, range.hi_ns)
    }

    /// Closes every connection of `node` (it crashed): the services forget them.
    pub fn close_all_of(&mut self, node: NodeId) {
        let mine: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.node == node)
            .map(|(id, _)| *id)
            .collect();
        for conn in mine {
            if let Some(s) = self.conns.remove(&conn).and_then(|c| c.service) {
                self.sims[s].on_close(conn);
            }
        }
    }
}

impl<M: Message> Core<M> {
    /// When what the current step sends leaves: after the service time it declared.
    fn departs_ns(&self) -> u64 {
        self.now_ns.saturating_add(self.step_busy_ns)
    }

    fn deliver_service(&mut self, at_ns: u64, d: ServiceDelivery) {
        self.queue.push(at_ns, Pending::Service(Box::new(d)));
    }

    /// The event for `conn` of the current step's node, answering the operation at `cause`.
    fn service_event(&self, conn: ConnId, cause: u64, event: ServiceEvent) -> ServiceDelivery {
        let node = self.step_node;
        ServiceDelivery {
            node,
            life: self.slots[node.index()].incarnation,
            conn,
            cause,
            ids: self.step_ids,
            event,
        }
    }

    pub(super) fn service_connect(&mut self, service: &str, timeout_ns: u64) -> ConnId {
        let conn = ConnId(self.services.next_conn);
        self.services.next_conn += 1;
        let op = ServiceOp::Connect {
            service: service.to_string(),
            timeout_ns,
        };
        let cause = self.trace.push(|e, out| e.service_out(out, conn, &op));
        let departs = self.departs_ns();
        let found = self.services.specs.iter().position(|x| x.name == service);
        let node = self.step_node;
        let life = self.slots[node.index()].incarnation;
        self.services.conns.insert(
            conn,
            SimConn {
                node,
                life,
                service: found,
                timeout_ns,
                last_op: cause,
                ids: self.step_ids,
                answers: 0,
                hung: false,
                there_last_ns: 0,
                back_last_ns: 0,
            },
        );
        let Some(s) = found else {
            let closed = ServiceEvent::Closed {
                reason: reason::unknown(service),
            };
            let d = self.service_event(conn, cause, closed);
            self.deliver_service(departs, d);
            return conn;
        };
        // A TCP handshake, there and back; what the node writes meanwhile follows it, and
        // what comes back follows the news that the connection is open.
        let there_ns = departs.saturating_add(self.services.latency_ns(s));
        let back_ns = there_ns.saturating_add(self.services.latency_ns(s));
        if let Some(c) = self.services.conns.get_mut(&conn) {
            c.there_last_ns = there_ns;
            c.back_last_ns = back_ns;
        }
        let d = self.service_event(conn, cause, ServiceEvent::Connected);
        self.deliver_service(back_ns, d);
        conn
    }

    pub(super) fn service_write(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let op = ServiceOp::Write { bytes };
        let cause = self.trace.push(|e, out| e.service_out(out, conn, &op));
        let ServiceOp::Write { bytes } = op else {
            unreachable!("built as a write just above")
        };
        let node = self.step_node;
        let Some((s, c)) = self
            .services
            .conns
            .get(&conn)
            .filter(|c| c.node == node)
            .and_then(|c| Some((c.service?, c)))
        else {
            // Closed, gone, or never this node's: the bytes go nowhere, as on a dead socket.
            return;
        };
        let (timeout_ns, answers, hung) = (c.timeout_ns, c.answers, c.hung);
        let ids = self.step_ids;
        if let Some(c) = self.services.conns.get_mut(&conn) {
            c.last_op = cause;
            c.ids = ids;
        }
        // Every fault is drawn on every write, so that one fault's outcome moves no draw
        // after it.
        let rng = &mut self.services.rngs[s];
        let (crash, reset, hang) = (
            rng.chance(self.services.specs[s].crash),
            rng.chance(self.services.specs[s].reset),
            rng.chance(self.services.specs[s].hang),
        );
        let drawn_ns = self.departs_ns() + self.services.latency_ns(s);
        let there_ns = match self.services.conns.get_mut(&conn) {
            Some(c) => {
                c.there_last_ns = c.there_last_ns.max(drawn_ns);
                c.there_last_ns
            }
            None => drawn_ns,
        };
        if crash {
            return self.crash_service(s, there_ns);
        }
        if reset {
            if let Some(c) = self.services.conns.get_mut(&conn) {
                c.service = None;
            }
            self.services.sims[s].on_close(conn);
            let back_ns = self.services.latency_ns(s);
            let d = self.service_event(
                conn,
                cause,
                ServiceEvent::Closed {
                    reason: reason::RESET.into(),
                },
            );
            return self.deliver_service(there_ns + back_ns, d);
        }
        if hang {
            if let Some(c) = self.services.conns.get_mut(&conn) {
                c.hung = true;
            }
        }
        if !(hang || hung) {
            self.queue.push(
                there_ns,
                Pending::ServiceArrive {
                    conn,
                    cause,
                    ids,
                    bytes,
                },
            );
        }
        if timeout_ns > 0 {
            let d = self.service_event(conn, cause, ServiceEvent::TimedOut);
            let at = self.now_ns.saturating_add(timeout_ns);
            self.queue
                .push(at, Pending::ServiceTimeout(Box::new(d), answers));
        }
    }

    pub(super) fn service_close(&mut self, conn: ConnId) {
        self.trace
            .push(|e, out| e.service_out(out, conn, &ServiceOp::Close));
        let node = self.step_node;
        if self
            .services
            .conns
            .get(&conn)
            .is_some_and(|c| c.node == node)
        {
            // Nothing more reaches the node on it, news of its end included.
            if let Some(s) = self.services.conns.remove(&conn).and_then(|c| c.service) {
                self.services.sims[s].on_close(conn);
            }
        }
    }

    /// The service crashes at `at_ns`: what it held is gone (built afresh), and every
    /// connection to it closes, each node told when the news reaches it.
    fn crash_service(&mut self, s: usize, at_ns: u64) {
        self.services.sims[s] = (self.services.factories[s])();
        let theirs: Vec<ConnId> = self
            .services
            .conns
            .iter()
            .filter(|(_, c)| c.service == Some(s))
            .map(|(id, _)| *id)
            .collect();
        for conn in theirs {
            let Some(c) = self.services.conns.get_mut(&conn) else {
                continue;
            };
            c.service = None;
            let (node, life, last_op, ids) = (c.node, c.life, c.last_op, c.ids);
            let back_ns = self.services.latency_ns(s);
            let d = ServiceDelivery {
                node,
                life,
                conn,
                cause: last_op,
                ids,
                event: ServiceEvent::Closed {
                    reason: reason::CRASHED.into(),
                },
            };
            self.deliver_service(at_ns + back_ns, d);
        }
    }
}

impl<M: Model> Simulation<M> {
    /// A write's bytes reach the service, which answers (if the connection is still open).
    pub(super) fn service_arrive(&mut self, conn: ConnId, cause: u64, ids: ReqIds, bytes: &[u8]) {
        let core = &mut self.core;
        let Some((s, c)) = core
            .services
            .conns
            .get(&conn)
            .and_then(|c| Some((c.service?, c)))
        else {
            return;
        };
        let (node, life) = (c.node, c.life);
        let reply = core.services.sims[s].on_data(conn, bytes);
        if reply.is_empty() {
            return;
        }
        let drawn_ns = core.now_ns.saturating_add(core.services.latency_ns(s));
        let Some(c) = core.services.conns.get_mut(&conn) else {
            return;
        };
        c.back_last_ns = c.back_last_ns.max(drawn_ns);
        let at = c.back_last_ns;
        let d = ServiceDelivery {
            node,
            life,
            conn,
            cause,
            ids,
            event: ServiceEvent::Data { bytes: reply },
        };
        core.deliver_service(at, d);
    }

    /// A write's timeout: if nothing came back on the connection since the write, the
    /// connection is closed and the node told.
    pub(super) fn service_timeout(&mut self, d: Box<ServiceDelivery>, answers: u64) {
        let services = &mut self.core.services;
        let Some(c) = services.conns.get_mut(&d.conn) else {
            return;
        };
        let Some(s) = c.service.filter(|_| c.answers == answers) else {
            return;
        };
        c.service = None;
        services.sims[s].on_close(d.conn);
        // An input like any other: it waits while its node is busy.
        let now = self.core.now_ns;
        self.core.queue.push(now, Pending::Service(d));
    }

    /// A service event reaches its node: a step, unless the node (or the life that opened
    /// the connection) is gone, or the connection closed before the event arrived.
    pub(super) fn service_step(&mut self, d: ServiceDelivery) {
        let ServiceDelivery {
            node,
            life,
            conn,
            cause,
            ids,
            event,
        } = d;
        let i = node.index();
        let slot = &self.core.slots[i];
        // `incarnation` counts the lives begun, so it names the running one.
        if !slot.up || slot.incarnation != life {
            return;
        }
        let Some(c) = self.core.services.conns.get_mut(&conn) else {
            // The node closed it: nothing more arrives.
            return;
        };
        match event {
            ServiceEvent::Connected | ServiceEvent::Data { .. } if c.service.is_none() => return,
            ServiceEvent::Connected => {}
            ServiceEvent::Data { .. } => c.answers += 1,
            ServiceEvent::Closed { .. } | ServiceEvent::TimedOut => {
                self.core.services.conns.remove(&conn);
            }
        }
        let now = self.core.now_ns;
        let prev = slot.last_input;
        let index = self.core.trace.push(|e, out| {
            e.service_in(
                out,
                InputHead::new(node, now, prev),
                conn,
                Some(cause),
                ids.as_slice(),
                &event,
            )
        });
        self.begin_step(node, ids, index);
        if let Some(state) = self.nodes[i].as_mut() {
            state.on_service(&mut Ctx::new(&mut self.core), conn, event);
        }
        self.end_step(node, index);
    }
}
