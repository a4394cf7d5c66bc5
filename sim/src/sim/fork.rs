//! A simulation started at a moment of a trace (see [`crate::fork`]): the trace's records
//! before it written first, unchanged; the nodes as re-execution left them; the messages in
//! flight, timers pending and partitions open queued again; then the scenario's network,
//! workload and fault model, drawn from the fork's own seed, for the rest.

use super::env::{InFlight, InlinePayload, Pending, ReqIds, NO_KEY};
use super::services::SimConnAtFork;
use super::{Simulation, TraceSink};
use crate::fork::{ForkError, ForkFuture, ForkPoint};
use crate::ids::NodeId;
use crate::model::Model;
use crate::rng::{derive_seed, Purpose, SimRng};
use crate::scenario::{FaultAction, Scenario};
use crate::snapshot::NodeState;
use crate::storage::Storage;
use crate::trace::{DropReason, Event, Origin};
use crate::what_if::{self, Fate};
use std::collections::BTreeSet;

impl<M: Model> Simulation<M> {
    /// A run that starts at `point` and goes on under `scenario` (the trace's own, as a
    /// rule) with `seed`. `prefix` is the trace's records before the fork, from the first,
    /// which the fork's trace starts with, byte for byte.
    ///
    /// The future: the scenario's network (latency, loss, duplication) for the messages in
    /// flight and every later send; its workload, from the fork's moment, with request ids
    /// above the trace's; its random faults from the moment on, and its scripted ones if
    /// `future` keeps them. A node down at the fork restarts as the fault that crashed it
    /// said (a scripted crash's `restart_after`, or the random model's), or stays down.
    /// Services start afresh: a connection open at the fork is reset there, which its node
    /// hears. The nodes' random streams go on as they were (they are part of their state).
    /// The changes `future` makes by hand ([`crate::what_if`]) come first: node changes at
    /// the moment, then the messages' new fates.
    pub fn fork<'a>(
        scenario: &Scenario<M::Options>,
        point: &ForkPoint<M>,
        seed: u64,
        future: &ForkFuture,
        prefix: impl IntoIterator<Item = &'a Event>,
        sink: TraceSink,
    ) -> Result<Self, ForkError> {
        let n = scenario.nodes.len();
        if point.nodes.len() != n {
            return Err(ForkError(format!(
                "the trace has {} nodes, its scenario builds {n}",
                point.nodes.len()
            )));
        }
        crate::what_if::check(point, &future.interventions)?;
        let (base_ns, now_ns) = (point.base_ns, point.time_ns.max(point.base_ns));
        // The scenario's times count from the trace's start: a recording's is wall-clock.
        let mut s = scenario.clone();
        s.time_limit_ns = future
            .until_ns
            .unwrap_or_else(|| base_ns.saturating_add(s.time_limit_ns));
        if let Some(w) = &mut s.workload {
            w.start_ns = w.start_ns.saturating_add(base_ns);
            w.stop_ns = w.stop_ns.map(|t| t.saturating_add(base_ns));
        }
        for f in &mut s.faults {
            f.at_ns = f.at_ns.saturating_add(base_ns);
        }
        let mut header = point.header.clone();
        header.origin = Origin::Forked {
            parent: Box::new(point.header.origin.clone()),
            at: point.records,
            seed,
        };
        let mut sim = Self::assemble(&s, seed, header, sink);
        let mut written = 0u64;
        for e in prefix {
            if e.index != written || written >= point.records {
                return Err(ForkError(format!(
                    "the prefix holds record {} where record {written} of {} belongs",
                    e.index, point.records
                )));
            }
            sim.core
                .trace
                .push(|enc, out| enc.record(out, e.time_ns, &e.record));
            written += 1;
        }
        if written != point.records {
            return Err(ForkError(format!(
                "the prefix ends after {written} records, the fork is at record {}",
                point.records
            )));
        }
        sim.core.now_ns = now_ns;
        sim.invariants = point.invariants.iter().map(|i| i.boxed_clone()).collect();
        sim.core.next_timer = sim.core.next_timer.max(point.next_timer);
        // A second stream of the fault purpose: the first draws the random faults, which
        // must not shift with what a fork needs besides.
        let mut fork_rng = SimRng::new(derive_seed(seed, Purpose::Faults, 1, 0));

        let held = sim.resume_nodes(point, &s, &mut fork_rng)?;
        for change in &future.interventions {
            if let Some(fault) = change.fault(n) {
                sim.schedule_fault(now_ns, fault);
            }
        }
        let fates = what_if::fates(&future.interventions);
        let mut timers = point.timers.clone();
        timers.sort_by_key(|t| (t.due_ns, t.set));
        for t in timers {
            if !held.contains(&(t.node, t.timer)) {
                continue;
            }
            let handle = sim.core.queue.push(
                t.due_ns.max(now_ns),
                Pending::Timer {
                    node: t.node,
                    timer: t.timer,
                    tag: t.tag,
                    set: t.set,
                    ids: ReqIds::from_slice(&t.request_ids),
                },
            );
            sim.core.timers.insert(t.timer, (t.node, handle));
        }
        for m in &point.in_flight {
            if m.from.index() >= n || m.to.index() >= n {
                continue;
            }
            let link = *sim.core.net.link(m.from, m.to);
            // Drawn for every message, changed or not: a change to one message shifts no
            // other's latency.
            let latency_ns = sim
                .core
                .net_rng
                .rng()
                .between(link.latency.lo_ns, link.latency.hi_ns);
            let natural_ns = m.sent_ns.saturating_add(latency_ns).max(now_ns);
            let (at, copies) = match fates.get(&m.send) {
                None => (natural_ns, 1),
                Some(Fate::Later { by_ns }) => (natural_ns.saturating_add(*by_ns), 1),
                Some(Fate::Now) => (now_ns, 1),
                Some(Fate::Lost) => {
                    sim.core.drop_msg(m.send, DropReason::Loss);
                    continue;
                }
                Some(Fate::Twice) => {
                    sim.core.note_duplicate(m.send);
                    (natural_ns, 2)
                }
            };
            let copy = InFlight {
                to: m.to,
                from: m.from,
                msg: m.msg.clone(),
                send: m.send,
                ids: ReqIds::from_slice(&m.request_ids),
                payload: InlinePayload::NONE,
                key: NO_KEY,
            };
            for _ in 0..copies {
                sim.core.queue.push(at, Pending::Deliver(copy.clone()));
            }
        }
        for cut in &point.cuts {
            let (id, links, cut_ns) = (cut.id, &cut.links, cut.cut_ns);
            sim.core.net.restore_cut(id, links.clone(), point.next_cut);
            let scripted = s.faults.iter().rev().find_map(|f| match &f.action {
                FaultAction::Cut {
                    links: l,
                    heal_after_ns: Some(after),
                } if f.at_ns <= cut_ns && l == links => Some(cut_ns.saturating_add(*after)),
                _ => None,
            });
            let random = s.random_faults.partition_rate.mean_interval_ns().map(|_| {
                let d = s.random_faults.partition_duration;
                now_ns.saturating_add(fork_rng.between(d.lo_ns, d.hi_ns))
            });
            if let Some(at) = scripted.or(random) {
                sim.core.queue.push(at.max(now_ns), Pending::Heal { id });
            }
        }
        let open: Vec<SimConnAtFork> = point
            .conns
            .iter()
            .filter(|c| c.node.index() < n && sim.core.slots[c.node.index()].up)
            .map(|c| SimConnAtFork {
                conn: c.conn,
                node: c.node,
                life: sim.core.slots[c.node.index()].incarnation,
                last_op: c.last_op,
                ids: ReqIds::from_slice(&c.request_ids),
            })
            .collect();
        for d in sim.core.services.sever_at_fork(point.next_conn, &open) {
            sim.core.queue.push(now_ns, Pending::Service(Box::new(d)));
        }
        if let Some(at) = sim.workload.resume_at(now_ns, point.next_request) {
            sim.core.queue.push(at, Pending::WorkloadTick);
        }
        if let Some(clients) = &sim.clients {
            let start_ns = sim.workload.start_ns().max(now_ns);
            for client in 0..clients.len() {
                sim.core
                    .queue
                    .push(start_ns, Pending::ClientWake { client });
            }
        }
        if future.scripted_faults {
            for f in &s.faults {
                if f.at_ns > now_ns {
                    sim.schedule_fault(f.at_ns, f.action.clone());
                }
            }
        }
        let mut random = s.random_faults;
        sim.swarm_kinds().apply(&mut random);
        sim.schedule_random_faults(&random, n, seed, base_ns);
        Ok(sim)
    }

    /// The run `scenario` makes with `seed` from its start, its trace marked as a fork at
    /// record `at`: a simulated trace forked with its own seed. Its future is the one the
    /// trace had, exactly — every stream, client and service as it was —, which no state
    /// read off a trace could promise (a closed-loop client's state is not in it). The
    /// caller checks the run's records before `at` against the trace's.
    pub fn refork(scenario: &Scenario<M::Options>, seed: u64, at: u64, sink: TraceSink) -> Self {
        let mut header = super::sim_header(scenario, seed);
        header.origin = Origin::Forked {
            parent: Box::new(Origin::Simulated { seed }),
            at,
            seed,
        };
        Self::from_start(scenario, seed, header, sink)
    }

    /// Puts each node as the fork point has it: up from its snapshot, or down with its disk
    /// (and its restart queued, if the fault that crashed it restarts it). Returns the
    /// timers the nodes hold, which are the only ones that may fire.
    fn resume_nodes(
        &mut self,
        point: &ForkPoint<M>,
        s: &Scenario<M::Options>,
        fork_rng: &mut SimRng,
    ) -> Result<BTreeSet<(NodeId, crate::TimerId)>, ForkError> {
        let now_ns = point.time_ns;
        let mut held = BTreeSet::new();
        for (i, fnode) in point.nodes.iter().enumerate() {
            let node = NodeId(i as u32);
            let slot = &mut self.core.slots[i];
            slot.last_input = fnode.last_input;
            slot.incarnation = fnode.lives;
            match &fnode.state {
                NodeState::Up(snapshot) => {
                    let resumed = snapshot
                        .resume::<M::Node>()
                        .map_err(|e| ForkError(format!("{}: {e}", self.node_names[i])))?;
                    slot.up = true;
                    slot.storage = resumed.storage;
                    slot.rng = resumed.rng;
                    slot.boot = resumed.boot;
                    held.extend(resumed.timers.into_iter().map(|t| (node, t)));
                    self.nodes[i] = Some(resumed.node);
                }
                NodeState::Down { storage, boot } => {
                    slot.storage = Storage::from_image(storage.clone());
                    slot.boot = *boot;
                    if fnode.lives == 0 {
                        // Not started yet in the trace: it boots now.
                        self.core.queue.push(now_ns, Pending::Boot { node });
                        continue;
                    }
                    let down_ns = fnode.down_since_ns.unwrap_or(now_ns);
                    let scripted = s.faults.iter().rev().find_map(|f| match f.action {
                        FaultAction::Crash {
                            node: crashed,
                            restart_after_ns,
                        } if crashed == node && f.at_ns <= down_ns => Some(restart_after_ns),
                        _ => None,
                    });
                    let after_ns = match scripted {
                        Some(after) => after,
                        None => s.random_faults.crash_rate.mean_interval_ns().map(|_| {
                            let r = s.random_faults.restart_after;
                            fork_rng.between(r.lo_ns, r.hi_ns)
                        }),
                    };
                    if let Some(after) = after_ns {
                        let at = down_ns.saturating_add(after).max(now_ns);
                        self.core
                            .queue
                            .push(at, Pending::Fault(FaultAction::Restart { node }));
                    }
                }
            }
        }
        Ok(held)
    }
}
