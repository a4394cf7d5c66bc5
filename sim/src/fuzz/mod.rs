//! Searching for bugs: many runs of a scenario, each under a decider that reorders messages
//! and injects faults; the failures found; and their minimisation.
//!
//! A case is a seed. The seed fixes the run's own randomness and the decider's, so a case
//! replays exactly; its decisions are also recorded as a [`Schedule`], which replays it
//! without the decider and which the minimiser edits.
//!
//! `minimize.rs` shrinks a failing case; `ddmin.rs` holds the delta-debugging searches it
//! uses; `property.rs` is the proptest side (a schedule strategy and `check_schedule`).

pub(crate) mod ddmin;
mod minimize;
mod property;
mod slice;

pub use minimize::{minimize, minimize_from, SHIFT_MAX_NS};
pub use property::{check_schedule, schedules};

use crate::fork::{ForkError, ForkFuture, ForkPoint};
use crate::model::Model;
use crate::rng::{derive_seed, Purpose, SimRng};
use crate::scenario::Scenario;
use crate::schedule::{Decider, FaultKind, PctDecider, RandomDecider, Schedule};
use crate::sim::{RunReport, Simulation, TraceSink};
use crate::trace::Event;

/// How cases choose their decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Reorder and inject faults at random, every kind on.
    Random,
    /// Probabilistic concurrency testing of depth 3, with random faults.
    Pct,
    /// Random, with whole fault kinds switched off per case (and swarm network faults).
    Swarm,
}

impl Strategy {
    pub fn parse(text: &str) -> Result<Strategy, String> {
        match text {
            "random" => Ok(Strategy::Random),
            "pct" => Ok(Strategy::Pct),
            "swarm" => Ok(Strategy::Swarm),
            other => Err(format!(
                "unknown strategy `{other}` (use random, pct or swarm)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Pct => "pct",
            Strategy::Swarm => "swarm",
        }
    }
}

/// The default strategies, case by case in turn: a bug that needs a fault kind swarm
/// switches on most of the time, the steady mix of random, or an ordering PCT's priorities
/// reach (with faults of its own) is found by one of them without the user having to know
/// which.
pub const ROTATION: [Strategy; 3] = [Strategy::Random, Strategy::Swarm, Strategy::Pct];

/// The strategy of case `i` of the default rotation.
pub fn rotating(i: u64) -> Strategy {
    ROTATION[(i % ROTATION.len() as u64) as usize]
}

/// The seed of case `i` of a search from `master`.
pub fn case_seed(master: u64, i: u64) -> u64 {
    derive_seed(master, Purpose::FuzzCase, i, 0)
}

fn decider_for(
    strategy: Strategy,
    seed: u64,
    nodes: usize,
    expected_steps: u64,
) -> Box<dyn Decider> {
    let mut rng = SimRng::new(derive_seed(seed, Purpose::Decider, 0, 0));
    match strategy {
        Strategy::Random => Box::new(RandomDecider {
            rng,
            reorder: 0.1,
            fault: 0.01,
            kinds: FaultKind::ALL.to_vec(),
        }),
        Strategy::Pct => {
            // PCT's own draws first, then the fault plan's stream: its faults are those of
            // a random run that does not reorder.
            let faults = RandomDecider {
                rng: SimRng::new(derive_seed(seed, Purpose::Decider, 1, 0)),
                reorder: 0.0,
                fault: 0.01,
                kinds: FaultKind::ALL.to_vec(),
            };
            Box::new(PctDecider::new(&mut rng, nodes, 3, expected_steps, faults))
        }
        Strategy::Swarm => {
            let mut kinds: Vec<FaultKind> = FaultKind::ALL
                .into_iter()
                .filter(|_| rng.chance(0.5))
                .collect();
            if kinds.is_empty() {
                kinds.push(FaultKind::ALL[rng.below(FaultKind::ALL.len() as u64) as usize]);
            }
            let reorder = if rng.chance(0.5) { 0.2 } else { 0.0 };
            Box::new(RandomDecider {
                rng,
                reorder,
                fault: 0.02,
                kinds,
            })
        }
    }
}

/// The schedule file format this build writes and reads: 2, choices keyed by message and
/// moment.
pub const SCHEDULE_FORMAT: u64 = 2;

/// What `retrace fuzz` writes beside a failure's trace: enough to replay it exactly
/// (`retrace run SCENARIO --schedule FILE`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleFile {
    /// [`SCHEDULE_FORMAT`]; files without it are of format 1 (choices by step number).
    #[serde(default)]
    pub format: u64,
    pub model: String,
    pub scenario: String,
    /// The case's seed (the run's seed).
    pub seed: u64,
    /// `random`, `pct` or `swarm` (swarm runs also switch network fault kinds per seed).
    pub strategy: String,
    pub invariant: String,
    pub schedule: Schedule,
    /// A search from a trace's moment (`fuzz TRACE --from N`): the trace and the event,
    /// which `retrace fork TRACE --at N --schedule FILE` replays it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ScheduleFrom>,
}

/// Where a schedule's cases started: a trace's moment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleFrom {
    pub trace: String,
    pub at: u64,
    /// Changes made by hand at the moment (a what-if branch the TUI saved), which the
    /// fork makes before its future runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interventions: Vec<crate::Intervention>,
}

/// One run of a search.
pub struct Case {
    pub seed: u64,
    pub report: RunReport,
    /// The decisions made, which replay the case.
    pub schedule: Schedule,
}

/// Where each case of a search starts: a scenario's beginning, or a moment of a trace
/// (`retrace fuzz TRACE --from N`), whose records before it every case keeps unchanged —
/// so what a case decides, and what the minimiser removes, is all after it.
pub enum Start<'a, M: Model> {
    Scenario(&'a Scenario<M::Options>),
    Fork(ForkStart<'a, M>),
}

/// A [`Start`] at a trace's moment; made by [`ForkStart::new`], which checks that a
/// simulation starts there.
pub struct ForkStart<'a, M: Model> {
    scenario: &'a Scenario<M::Options>,
    point: &'a ForkPoint<M>,
    prefix: &'a [Event],
    future: ForkFuture,
}

impl<'a, M: Model> ForkStart<'a, M> {
    /// Cases forked at `point` (whose trace's records before it are `prefix`) and going on
    /// under `scenario` and `future`.
    pub fn new(
        scenario: &'a Scenario<M::Options>,
        point: &'a ForkPoint<M>,
        prefix: &'a [Event],
        future: ForkFuture,
    ) -> Result<Self, ForkError> {
        Simulation::<M>::fork(scenario, point, 0, &future, prefix, TraceSink::Discard)?;
        Ok(ForkStart {
            scenario,
            point,
            prefix,
            future,
        })
    }
}

impl<'a, M: Model> Start<'a, M> {
    pub fn scenario(&self) -> &'a Scenario<M::Options> {
        match self {
            Start::Scenario(s) => s,
            Start::Fork(f) => f.scenario,
        }
    }

    /// The same start under `scenario` (the same one with other limits).
    fn with_scenario<'b>(&self, scenario: &'b Scenario<M::Options>) -> Start<'b, M>
    where
        'a: 'b,
    {
        match self {
            Start::Scenario(_) => Start::Scenario(scenario),
            Start::Fork(f) => Start::Fork(ForkStart {
                scenario,
                point: f.point,
                prefix: f.prefix,
                future: f.future.clone(),
            }),
        }
    }

    /// Case `seed`'s simulation under `strategy` (swarm also switches fault kinds).
    pub fn simulation(&self, seed: u64, strategy: Strategy, sink: TraceSink) -> Simulation<M> {
        let mut s = self.scenario().clone();
        if strategy == Strategy::Swarm {
            s.swarm = true;
        }
        match self {
            Start::Scenario(_) => Simulation::<M>::new(&s, seed, sink),
            Start::Fork(f) => Simulation::<M>::fork(&s, f.point, seed, &f.future, f.prefix, sink)
                .unwrap_or_else(|e| unreachable!("ForkStart::new checked this fork: {e}")),
        }
    }
}

/// Runs case `seed` of `scenario` under `strategy`, keeping no trace.
pub fn run_case<M: Model>(scenario: &Scenario<M::Options>, seed: u64, strategy: Strategy) -> Case {
    run_case_from(&Start::<M>::Scenario(scenario), seed, strategy)
}

/// [`run_case`] from any [`Start`].
pub fn run_case_from<M: Model>(start: &Start<'_, M>, seed: u64, strategy: Strategy) -> Case {
    let s = start.scenario();
    let expected = s.max_events.min(10_000);
    let decider = decider_for(strategy, seed, s.nodes.len(), expected);
    let report = start
        .simulation(seed, strategy, TraceSink::Discard)
        .with_decider(decider)
        .run();
    let schedule = report.schedule.clone().unwrap_or_default();
    Case {
        seed,
        report,
        schedule,
    }
}

/// Replays a case from its schedule, with the trace going to `sink`.
pub fn replay_case<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    sink: TraceSink,
) -> RunReport {
    replay_case_from(
        &Start::<M>::Scenario(scenario),
        seed,
        strategy,
        schedule,
        sink,
    )
}

/// [`replay_case`] from any [`Start`].
pub fn replay_case_from<M: Model>(
    start: &Start<'_, M>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    sink: TraceSink,
) -> RunReport {
    start
        .simulation(seed, strategy, sink)
        .with_schedule(schedule.clone())
        .run()
}

/// The size of a run, as the minimiser reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    pub events: u64,
    pub deliveries: u64,
    pub external: u64,
    pub faults: u64,
    pub reorderings: u64,
}

impl Size {
    pub fn of(report: &RunReport, schedule: &Schedule) -> Size {
        let s = &report.stats;
        Size {
            events: s.steps,
            deliveries: s.delivered,
            external: s.requests,
            faults: schedule.faults() as u64,
            reorderings: schedule.reorderings() as u64,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events, {} deliveries, {} external requests, {} injected faults, {} forced reorderings",
            self.events, self.deliveries, self.external, self.faults, self.reorderings
        )
    }
}
