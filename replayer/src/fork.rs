//! Forking a trace: any moment of a loaded trace, simulated or recorded, as the start of a
//! new simulation (`retrace fork`, `fuzz --from`, `inevitable`, the TUI's what-if).
//!
//! A [`ForkWalk`] re-executes the trace step by step (the nodes' states at the moment are
//! what their code computes from the recorded inputs, not a snapshot that could be wrong),
//! keeps the messages the re-executed steps sent while they are in flight (the trace holds
//! only their digests), and reads the rest off the records with the sim's
//! [`ForkLedger`]. A walk is cheap to clone: a search over many moments walks once.

use crate::engine::{Cluster, Divergence, Replay};
use retrace_sim::fork::{ForkError, ForkFuture, ForkLedger, ForkPoint};
use retrace_sim::trace::{Event, Origin, Record, Trace};
use retrace_sim::{codec, scenario, Model, Node, Scenario, Simulation, TraceSink};
use std::collections::BTreeMap;

type Msg<M> = <<M as Model>::Node as Node>::Msg;

/// Why a fork could not be made.
#[derive(Debug)]
pub enum ForkWalkError {
    /// The trace's scenario does not parse with the model.
    Scenario(String),
    /// Re-executing the trace to the moment diverged from it.
    Diverged(Box<Divergence>),
    /// A node's state does not encode as a snapshot.
    Snapshot(String),
    /// A simulated trace forked with its own seed is re-simulated; this one is not what
    /// its scenario makes with that seed (another build, or an edited trace).
    NotItsRun {
        record: u64,
    },
    Fork(ForkError),
}

impl std::fmt::Display for ForkWalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForkWalkError::Scenario(e) => write!(f, "the trace's scenario: {e}"),
            ForkWalkError::Diverged(d) => write!(f, "re-executing to the fork diverged: {d}"),
            ForkWalkError::Snapshot(e) => write!(f, "a node's state does not encode: {e}"),
            ForkWalkError::NotItsRun { record } => write!(
                f,
                "re-simulating the trace's scenario with its seed differs at record {record}: \
                 the trace is not this build's run of it (fork with another seed)"
            ),
            ForkWalkError::Fork(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ForkWalkError {}

/// Where a fork "at record `at`" starts: after the step holding it (a moment is between
/// steps), before the trace's violation and end records (the fork goes on past them), and
/// within the steps replay can re-execute (a torn last step is not one).
pub fn boundary<M: Model>(replay: &Replay<M>, at: u64) -> usize {
    let events = &replay.trace.events;
    if events.is_empty() {
        return 0;
    }
    let at = (at as usize).min(events.len() - 1);
    let steps = &replay.steps.steps;
    let replayable_end = steps.last().map_or(0, |s| s.end);
    let mut b = match replay.steps.step_of.get(at).copied().flatten() {
        Some(s) if s < steps.len() => steps[s].end,
        Some(_) => replayable_end,
        None => at + 1,
    };
    if !replay.trace.is_complete() {
        b = b.min(replayable_end);
    }
    while b > 0
        && matches!(
            events[b - 1].record,
            Record::Violation { .. } | Record::End { .. }
        )
    {
        b -= 1;
    }
    b
}

/// A re-execution of a loaded trace that can stop at any moment and hand over a fork.
pub struct ForkWalk<'r, M: Model> {
    replay: &'r Replay<M>,
    scenario: Scenario<M::Options>,
    cluster: Cluster<M>,
    ledger: ForkLedger,
    /// The messages re-executed steps sent that may still be in flight, by their `Send`'s
    /// index (pruned to the ledger's in-flight set as it grows).
    sent: BTreeMap<u64, Msg<M>>,
}

impl<M: Model> Clone for ForkWalk<'_, M> {
    fn clone(&self) -> Self {
        ForkWalk {
            replay: self.replay,
            scenario: self.scenario.clone(),
            cluster: self.cluster.clone(),
            ledger: self.ledger.clone(),
            sent: self.sent.clone(),
        }
    }
}

impl<'r, M: Model> ForkWalk<'r, M> {
    /// A walk at the trace's start.
    pub fn new(replay: &'r Replay<M>) -> Result<Self, ForkWalkError> {
        let header = &replay.trace.header;
        let scenario = scenario::parse::<M>(&header.scenario_name, &header.scenario_toml)
            .map_err(|e| ForkWalkError::Scenario(e.to_string()))?;
        Ok(ForkWalk {
            replay,
            scenario,
            cluster: replay.initial(),
            ledger: ForkLedger::new(
                replay.node_names.len(),
                replay.trace.events.first().map_or(0, |e| e.time_ns),
            ),
            sent: BTreeMap::new(),
        })
    }

    /// A walk that starts from `cluster`, a state of this trace's cluster some steps in (a
    /// cursor's checkpoint, or a state checkpoint of the trace's index): only the steps
    /// after it are re-executed; the records before it are read for the ledger. Messages in
    /// flight sent before it are known by their later delivery in the trace, if any (the
    /// others are lost to the fork and counted); and a cluster from a state checkpoint has
    /// invariants that saw only the steps after it.
    pub fn from_cluster(replay: &'r Replay<M>, cluster: Cluster<M>) -> Result<Self, ForkWalkError> {
        let mut walk = ForkWalk::new(replay)?;
        let until = replay
            .steps
            .steps
            .get(cluster.applied)
            .map_or(replay.trace.events.len(), |s| s.input);
        walk.cluster = cluster;
        walk.observe_to(until);
        Ok(walk)
    }

    /// The scenario the trace was made under: the model of a fork's future.
    pub fn scenario(&self) -> &Scenario<M::Options> {
        &self.scenario
    }

    /// Records behind the walk: a fork from here starts with this many of the trace's.
    pub fn records(&self) -> u64 {
        self.ledger.records
    }

    /// The cluster as re-executed so far.
    pub fn cluster(&self) -> &Cluster<M> {
        &self.cluster
    }

    /// Walks on to `boundary` (a [`boundary`]); a walk never goes back (clone one to keep
    /// an earlier moment).
    pub fn advance(&mut self, boundary: usize) -> Result<(), ForkWalkError> {
        let replay = self.replay;
        let events = &replay.trace.events;
        let steps = &replay.steps.steps;
        let b = boundary.min(events.len());
        while let Some(step) = steps.get(self.cluster.applied).filter(|s| s.end <= b) {
            self.observe_to(step.end);
            let mut sent = Vec::new();
            replay
                .apply_observed(&mut self.cluster, &mut sent)
                .map_err(ForkWalkError::Diverged)?;
            self.sent
                .extend(sent.into_iter().map(|(index, m)| (index as u64, m)));
            // Delivered messages leave the ledger's in-flight set; keep only those.
            if self.sent.len() > 2 * self.ledger.in_flight().len() + 1024 {
                let in_flight = self.ledger.in_flight();
                self.sent.retain(|send, _| in_flight.contains_key(send));
            }
        }
        self.observe_to(b);
        Ok(())
    }

    fn observe_to(&mut self, end: usize) {
        let events = &self.replay.trace.events;
        let from = self.ledger.records as usize;
        for e in events.get(from..end).unwrap_or_default() {
            self.ledger.observe(e);
        }
    }

    /// The fork point where the walk stands.
    pub fn point(&self) -> Result<ForkPoint<M>, ForkWalkError> {
        let replay = self.replay;
        let events = &replay.trace.events;
        let states = self
            .cluster
            .states()
            .map_err(|e| ForkWalkError::Snapshot(e.0))?;
        let mut ledger = self.ledger.clone();
        if ledger.unknown_timers() > 0 {
            // Timers a `Resume` brought: their values show where they fire, later on.
            for e in events.get(ledger.records as usize..).unwrap_or_default() {
                if let Record::Timer { timer, tag, .. } = &e.record {
                    ledger.learn_timer(*timer, tag, e.time_ns);
                }
            }
        }
        let later_delivery = |send: u64| {
            let d = *replay.steps.delivery_of_send.get(&send)?;
            match &events.get(d)?.record {
                Record::Deliver { payload, .. } => codec::decode::<Msg<M>>(payload).ok(),
                _ => None,
            }
        };
        Ok(ledger.point::<M>(
            replay.trace.header.clone(),
            states,
            self.cluster.invariants(),
            |send| {
                self.sent
                    .get(&send)
                    .cloned()
                    .or_else(|| later_delivery(send))
            },
        ))
    }

    /// The trace's records behind the walk: a fork's prefix.
    pub fn prefix(&self) -> &'r [Event] {
        let events = &self.replay.trace.events;
        &events[..(self.ledger.records as usize).min(events.len())]
    }

    /// A simulation from where the walk stands, with `seed`. A simulated trace forked with
    /// its own seed (and its scenario's future) is its own run again: see
    /// [`Simulation::refork`]; its records before the fork are checked against the trace's.
    pub fn simulation(
        &self,
        seed: u64,
        future: &ForkFuture,
        sink: TraceSink,
    ) -> Result<Simulation<M>, ForkWalkError> {
        self.simulation_from(&self.point()?, seed, future, sink)
    }

    /// [`ForkWalk::simulation`] from the walk's [`ForkWalk::point`], taken already.
    pub fn simulation_from(
        &self,
        point: &ForkPoint<M>,
        seed: u64,
        future: &ForkFuture,
        sink: TraceSink,
    ) -> Result<Simulation<M>, ForkWalkError> {
        debug_assert_eq!(point.records, self.records(), "the point is the walk's own");
        if self.is_own_run(seed, future) {
            self.check_own_run(seed)?;
            return Ok(Simulation::refork(
                &self.scenario,
                seed,
                self.records(),
                sink,
            ));
        }
        Simulation::fork(&self.scenario, point, seed, future, self.prefix(), sink)
            .map_err(ForkWalkError::Fork)
    }

    /// Whether a fork with `seed` is the simulated trace's own run again.
    pub fn is_own_run(&self, seed: u64, future: &ForkFuture) -> bool {
        matches!(self.replay.trace.header.origin, Origin::Simulated { seed: s } if s == seed)
            && *future == ForkFuture::default()
    }

    fn check_own_run(&self, seed: u64) -> Result<(), ForkWalkError> {
        let run = Simulation::<M>::new(&self.scenario, seed, TraceSink::Memory).run();
        let bytes = run.trace.unwrap_or_default();
        let again = Trace::from_bytes(&bytes, "the re-simulated run")
            .map_err(|e| ForkWalkError::Fork(ForkError(e.to_string())))?;
        for (i, e) in self.prefix().iter().enumerate() {
            match again.events.get(i) {
                Some(a) if a.time_ns == e.time_ns && a.record == e.record => {}
                _ => return Err(ForkWalkError::NotItsRun { record: i as u64 }),
            }
        }
        Ok(())
    }
}

/// The seed a fork that keeps `records` records gets when none is given: a different one
/// per moment, printed, so that `--seed` gets the same fork again.
pub fn default_seed(origin: &Origin, records: u64) -> u64 {
    let parent = match origin {
        Origin::Simulated { seed } | Origin::Forked { seed, .. } => *seed,
        Origin::Recorded { .. } => 0,
    };
    retrace_sim::rng::derive_seed(parent, retrace_sim::rng::Purpose::Fork, records, 0)
}

/// A fork of `replay` at record `at` (see [`boundary`]), with `seed`: walks there and
/// builds the simulation.
pub fn fork<M: Model>(
    replay: &Replay<M>,
    at: u64,
    seed: u64,
    future: &ForkFuture,
    sink: TraceSink,
) -> Result<Simulation<M>, ForkWalkError> {
    let mut walk = ForkWalk::new(replay)?;
    walk.advance(boundary(replay, at))?;
    walk.simulation(seed, future, sink)
}
