//! Searching for bugs: many runs of a scenario, each under a decider that reorders messages
//! and injects faults; the failures found; and their minimisation.
//!
//! A case is a seed. The seed fixes the run's own randomness and the decider's, so a case
//! replays exactly; its decisions are also recorded as a [`Schedule`], which replays it
//! without the decider and which the minimiser edits.

use crate::model::Model;
use crate::rng::{derive_seed, SimRng};
use crate::scenario::Scenario;
use crate::schedule::{
    Choice, Decider, Injected, PctDecider, RandomDecider, Schedule, TimedFault, CRASH_DOWN_NS,
    FAULT_KINDS, ISOLATION_NS,
};
use crate::sim::{RunReport, Simulation, TraceSink};
use proptest::prelude::{prop_oneof, Just};
use proptest::strategy::Strategy as _;

/// How cases choose their decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Reorder and inject faults at random, every kind on.
    Random,
    /// Probabilistic concurrency testing (ordering only) of depth 3.
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
}

/// The seed of case `i` of a search from `master`.
pub fn case_seed(master: u64, i: u64) -> u64 {
    derive_seed(master, "fuzz-case", i, 0)
}

fn decider_for(
    strategy: Strategy,
    seed: u64,
    nodes: usize,
    expected_steps: u64,
) -> Box<dyn Decider> {
    let mut rng = SimRng::new(derive_seed(seed, "decider", 0, 0));
    match strategy {
        Strategy::Random => Box::new(RandomDecider {
            rng,
            reorder: 0.1,
            fault: 0.01,
            kinds: (0..FAULT_KINDS).collect(),
        }),
        Strategy::Pct => Box::new(PctDecider::new(&mut rng, nodes, 3, expected_steps)),
        Strategy::Swarm => {
            let mut kinds: Vec<u8> = (0..FAULT_KINDS).filter(|_| rng.chance(0.5)).collect();
            if kinds.is_empty() {
                kinds.push(rng.below(u64::from(FAULT_KINDS)) as u8);
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

/// What `retrace fuzz` writes beside a failure's trace: enough to replay it exactly
/// (`retrace run SCENARIO --schedule FILE`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduleFile {
    pub model: String,
    pub scenario: String,
    /// The case's seed (the run's seed).
    pub seed: u64,
    /// `random`, `pct` or `swarm` (swarm runs also switch network fault kinds per seed).
    pub strategy: String,
    pub invariant: String,
    pub schedule: Schedule,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Pct => "pct",
            Strategy::Swarm => "swarm",
        }
    }
}

/// One run of a search.
pub struct Case {
    pub seed: u64,
    pub report: RunReport,
    /// The decisions made, which replay the case.
    pub schedule: Schedule,
}

/// Runs case `seed` of `scenario` under `strategy`, keeping no trace.
pub fn run_case<M: Model>(scenario: &Scenario<M::Options>, seed: u64, strategy: Strategy) -> Case {
    let mut s = scenario.clone();
    if strategy == Strategy::Swarm {
        s.swarm = true;
    }
    let expected = s.max_events.min(10_000);
    let decider = decider_for(strategy, seed, s.nodes.len(), expected);
    let report = Simulation::<M>::new(&s, seed, TraceSink::Discard)
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
    let mut s = scenario.clone();
    if strategy == Strategy::Swarm {
        s.swarm = true;
    }
    Simulation::<M>::new(&s, seed, sink)
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

/// Delta debugging (Zeller's ddmin) over `items`: the smallest subset found for which
/// `fails(subset)` still holds, with at most `budget` calls.
fn ddmin<T: Clone>(items: Vec<T>, budget: &mut u32, fails: &mut dyn FnMut(&[T]) -> bool) -> Vec<T> {
    let mut current = items;
    let mut n = 2usize;
    while current.len() >= 2 && *budget > 0 {
        let chunk = current.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..current.len()).step_by(chunk) {
            if *budget == 0 {
                break;
            }
            // Try the complement of this chunk.
            let complement: Vec<T> = current
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= start + chunk)
                .map(|(_, t)| t.clone())
                .collect();
            *budget -= 1;
            if fails(&complement) {
                current = complement;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    if current.len() == 1 && *budget > 0 {
        *budget -= 1;
        if fails(&[]) {
            current.clear();
        }
    }
    current
}

/// `schedule` with the choices at `positions` deleted.
fn without(schedule: &Schedule, positions: &[usize]) -> Schedule {
    let gone: std::collections::BTreeSet<usize> = positions.iter().copied().collect();
    Schedule {
        choices: schedule
            .choices
            .iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, c)| *c)
            .collect(),
        ..schedule.clone()
    }
}

/// The largest set of `items` whose removal keeps `fails(removed)` true, found greedily by
/// halving: remove big chunks first, smaller ones when those do not work.
fn ddmin_remove(
    items: Vec<usize>,
    budget: &mut u32,
    fails: &mut dyn FnMut(&[usize]) -> bool,
) -> Vec<usize> {
    let mut removed: Vec<usize> = Vec::new();
    let mut chunk = items.len().max(1);
    while chunk >= 1 && *budget > 0 {
        let remaining: Vec<usize> = items
            .iter()
            .copied()
            .filter(|i| !removed.contains(i))
            .collect();
        if remaining.is_empty() {
            break;
        }
        let mut progressed = false;
        for part in remaining.chunks(chunk) {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let mut trial = removed.clone();
            trial.extend_from_slice(part);
            if fails(&trial) {
                removed = trial;
                progressed = true;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    removed
}

/// Deletes as many default choices as keep the failure: the remaining decisions come sooner.
fn sooner(best: Schedule, budget: &mut u32, fails: &dyn Fn(&Schedule) -> bool) -> Schedule {
    let defaults: Vec<usize> = (0..best.choices.len())
        .filter(|&i| best.choices[i].is_default())
        .collect();
    let drop = ddmin_remove(defaults, budget, &mut |removed: &[usize]| {
        fails(&without(&best, removed))
    });
    without(&best, &drop).trimmed()
}

/// Leaves out as many workload requests as possible.
fn minimize_externals(
    best: &mut Schedule,
    budget: &mut u32,
    fails: &dyn Fn(&Schedule) -> bool,
    drawn: impl Fn(&Schedule) -> u64,
) {
    // Requests past the failing run's end are never sent (`requests_max`).
    let total = drawn(best);
    let kept: Vec<u64> = (0..total)
        .filter(|r| !best.skip_requests.contains(r))
        .collect();
    let snapshot = best.clone();
    let keep = ddmin(kept, budget, &mut |subset: &[u64]| {
        let mut s = snapshot.clone();
        s.skip_requests = (0..total).filter(|r| !subset.contains(r)).collect();
        fails(&s)
    });
    best.skip_requests = (0..total).filter(|r| !keep.contains(r)).collect();
}

/// Rounds of [`minimize_round`] at most: each later round starts from a shorter run, where
/// faults and reorderings that were needed before may no longer be.
const MINIMIZE_ROUNDS: usize = 4;

/// Shrinks a failing case as DEMi does: first the external inputs, then the injected faults,
/// then the forced reorderings, then the wait before what is left (default choices are
/// deleted so that the remaining ones come sooner), then external inputs again — keeping each
/// removal only if the same invariant still breaks. Rounds repeat while the run gets
/// shorter; each round runs at most `budget` re-executions (and the request shift its grid).
pub fn minimize<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    invariant: &str,
    budget: u32,
) -> Schedule {
    let steps = |s: &Schedule| failing_steps::<M>(scenario, seed, strategy, s, invariant);
    // Requests drawn after the violation play no part in it; none are ever sent again, so
    // moving the workload earlier (which would bring them inside the run) cannot add any.
    let drawn =
        replay_case::<M>(scenario, seed, strategy, schedule, TraceSink::Discard).requests_drawn;
    let mut best = Schedule {
        requests_max: Some(schedule.requests_max.map_or(drawn, |m| m.min(drawn))),
        ..schedule.clone()
    };
    let mut best_steps = steps(&best).unwrap_or(u64::MAX);
    for _ in 0..MINIMIZE_ROUNDS {
        let next = minimize_round::<M>(scenario, seed, strategy, &best, invariant, budget);
        match steps(&next) {
            Some(n) if n < best_steps => {
                best = next;
                best_steps = n;
            }
            // Same size: keep the round's result if it is simpler (fewer decisions).
            Some(n)
                if n == best_steps
                    && next.faults() + next.reorderings() < best.faults() + best.reorderings() =>
            {
                best = next;
                break;
            }
            _ => break,
        }
    }
    let best =
        swap_for_one_outage::<M>(scenario, seed, strategy, &best.trimmed(), invariant, budget);
    add_a_quick_restart::<M>(scenario, seed, strategy, &best, invariant, budget)
}

/// How many of a failing run's last moments [`add_a_quick_restart`] tries.
const QUICK_RESTART_MOMENTS: usize = 200;

/// Tries adding one crash that restarts at once (after [`SHORTER_OUTAGES_NS`]`[0]`) to the
/// failing run, of each node at each of its last [`QUICK_RESTART_MOMENTS`] moments: a node
/// that forgets what it had not synced in the middle of a protocol round (a vote, a
/// prepare) can break the invariant long before the faults that broke it did, which then
/// are no longer needed. The candidate that fails in the fewest steps gets a minimisation
/// round; its result is kept if it is smaller.
fn add_a_quick_restart<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    best: &Schedule,
    invariant: &str,
    budget: u32,
) -> Schedule {
    let steps = |s: &Schedule| failing_steps::<M>(scenario, seed, strategy, s, invariant);
    let Some(base) = steps(best) else {
        return best.clone();
    };
    let mut moments =
        replay_case::<M>(scenario, seed, strategy, best, TraceSink::Discard).decision_times;
    moments.dedup();
    let nodes = scenario.nodes.len() as u32;
    let mut fastest: Option<(Schedule, u64)> = None;
    for &at_ns in moments.iter().rev().take(QUICK_RESTART_MOMENTS) {
        for node in 0..nodes {
            let mut s = best.clone();
            s.timed.push(TimedFault {
                at_ns,
                fault: Choice::fault_code(2, node),
                lasts_ns: Some(SHORTER_OUTAGES_NS[0]),
            });
            match steps(&s) {
                Some(n) if n < fastest.as_ref().map_or(base, |f| f.1) => fastest = Some((s, n)),
                _ => {}
            }
        }
    }
    let Some((quick, _)) = fastest else {
        return best.clone();
    };
    let small = minimize_round::<M>(scenario, seed, strategy, &quick, invariant, budget);
    match steps(&small) {
        Some(n) if n < base => small.trimmed(),
        _ => best.clone(),
    }
}

/// The outage lengths [`shorten_outages`] tries, shortest first.
const SHORTER_OUTAGES_NS: [u64; 5] = [1_000_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000];

/// Gives each timed crash or isolation the shortest length in [`SHORTER_OUTAGES_NS`] with
/// which the run fails in fewer steps.
fn shorten_outages(
    best: &mut Schedule,
    budget: &mut u32,
    steps: &dyn Fn(&Schedule) -> Option<u64>,
) {
    let Some(mut base) = steps(best) else { return };
    for k in 0..best.timed.len() {
        let t = best.timed[k];
        let lasts_ns = match t.fault.checked_sub(1).map(|code| code % FAULT_KINDS) {
            Some(2) => t.lasts_ns.unwrap_or(CRASH_DOWN_NS),
            Some(3) => t.lasts_ns.unwrap_or(ISOLATION_NS),
            _ => continue,
        };
        for shorter in SHORTER_OUTAGES_NS.into_iter().take_while(|&l| l < lasts_ns) {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let mut s = best.clone();
            s.timed[k].lasts_ns = Some(shorter);
            if let Some(n) = steps(&s).filter(|&n| n < base) {
                *best = s;
                base = n;
                break;
            }
        }
    }
}

/// How many of a failing run's last decision moments [`swap_for_one_outage`] tries a crash at,
/// how many of the run without faults (before the failing run's end), and how many of the
/// swaps that fail it minimises.
const SWAP_MOMENTS: usize = 40;
const SWAP_BARE_MOMENTS: usize = 400;
const SWAP_TRIES: usize = 3;

/// Tries one crash or isolation in place of all of a run's injected faults: of each node,
/// at each of the run's last [`SWAP_MOMENTS`] decision moments and at moments of the run
/// without faults, latest first. A crash is the simplest fault, and a failure found through
/// a partition or a clock jump often has a much shorter path through a crash at the right
/// moment (kv's acknowledged write, lost by a primary that was isolated, is lost as surely
/// by one that crashes right after acknowledging). A crash late in the run may need longer
/// than the run has to break the invariant, so swaps are tried with [`SHIFT_MAX_NS`] more
/// time (and, by `requests_max`, no requests past the original end) and then moved earlier
/// by [`earlier_requests`]; each that then breaks the invariant within the scenario's own
/// time gets a minimisation round of its own. The smallest run wins, the original if none
/// is smaller.
fn swap_for_one_outage<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    best: &Schedule,
    invariant: &str,
    budget: u32,
) -> Schedule {
    let steps = |s: &Schedule| failing_steps::<M>(scenario, seed, strategy, s, invariant);
    let Some(base) = steps(best) else {
        return best.clone();
    };
    let mut bare = best.clone();
    for c in &mut bare.choices {
        c.fault = 0;
    }
    bare.timed.clear();
    let times = replay_case::<M>(scenario, seed, strategy, best, TraceSink::Discard).decision_times;
    let mut longer = scenario.clone();
    longer.time_limit_ns = longer.time_limit_ns.saturating_add(SHIFT_MAX_NS);
    let steps_longer = |s: &Schedule| failing_steps::<M>(&longer, seed, strategy, s, invariant);
    let nodes = scenario.nodes.len() as u32;
    // The failing run's last moments, and moments of the run without its faults up to where
    // the failing one ended (without the faults, things happen at other times: the write a
    // crash must catch unreplicated may be acknowledged much earlier).
    let end_ns = times.last().copied().unwrap_or(0);
    let bare_times: Vec<u64> =
        replay_case::<M>(scenario, seed, strategy, &bare, TraceSink::Discard)
            .decision_times
            .into_iter()
            .take_while(|&t| t <= end_ns)
            .collect();
    let mut moments: Vec<u64> = times.iter().rev().take(SWAP_MOMENTS).copied().collect();
    moments.extend(bare_times.iter().rev().take(SWAP_BARE_MOMENTS));
    moments.sort_unstable_by(|a, b| b.cmp(a));
    moments.dedup();
    let mut swaps = Vec::new();
    // A crash (kind 2) as injected, then one for good, then one that restarts at once, then
    // an isolation (kind 3) as injected and one for good: a crash restarts the node 100 ms
    // later with what it had synced, which may be all it needs; a node back at once has
    // forgotten what it did not sync in the middle of what it was doing; a failover may take
    // longer than an isolation.
    let forever = Some(longer.time_limit_ns);
    let at_once = Some(SHORTER_OUTAGES_NS[0]);
    let kinds = [
        (2, None),
        (2, forever),
        (2, at_once),
        (3, None),
        (3, forever),
    ];
    'search: for at_ns in moments {
        for ((kind, lasts_ns), node) in kinds
            .into_iter()
            .flat_map(|k| (0..nodes).map(move |n| (k, n)))
        {
            let mut s = bare.clone();
            s.timed.push(TimedFault {
                at_ns,
                fault: Choice::fault_code(kind, node),
                lasts_ns,
            });
            if steps_longer(&s).is_some() {
                swaps.push(s);
                if swaps.len() == SWAP_TRIES {
                    break 'search;
                }
            }
        }
    }
    let mut result = (best.clone(), base);
    for swap in swaps {
        let swap = earlier_requests(swap, &steps_longer);
        if steps(&swap).is_none() {
            continue;
        }
        let small = minimize_round::<M>(scenario, seed, strategy, &swap, invariant, budget);
        match steps(&small) {
            Some(n) if n < result.1 => result = (small.trimmed(), n),
            _ => {}
        }
    }
    result.0
}

/// The steps of `schedule`'s run if it breaks `invariant`.
fn failing_steps<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    invariant: &str,
) -> Option<u64> {
    let r = replay_case::<M>(scenario, seed, strategy, schedule, TraceSink::Discard);
    r.violation
        .as_ref()
        .is_some_and(|v| v.invariant == invariant)
        .then_some(r.stats.steps)
}

/// One round of [`minimize`].
fn minimize_round<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    invariant: &str,
    budget: u32,
) -> Schedule {
    let mut budget = budget;
    let fails = |s: &Schedule| failing_steps::<M>(scenario, seed, strategy, s, invariant).is_some();
    let drawn = |s: &Schedule| {
        replay_case::<M>(scenario, seed, strategy, s, TraceSink::Discard).requests_drawn
    };
    let mut best = schedule.clone().trimmed();
    minimize_externals(&mut best, &mut budget, &fails, drawn);
    // 2. Faults, then 3. reorderings: keep as few non-default positions as possible.
    for faults in [true, false] {
        let positions: Vec<usize> = best
            .choices
            .iter()
            .enumerate()
            .filter(|(_, c)| if faults { c.fault != 0 } else { c.order != 0 })
            .map(|(i, _)| i)
            .collect();
        let keep = ddmin(positions.clone(), &mut budget, &mut |subset: &[usize]| {
            let mut s = best.clone();
            for p in &positions {
                if !subset.contains(p) {
                    if faults {
                        s.choices[*p].fault = 0;
                    } else {
                        s.choices[*p].order = 0;
                    }
                }
            }
            fails(&s)
        });
        for p in &positions {
            if !keep.contains(p) {
                if faults {
                    best.choices[*p].fault = 0;
                } else {
                    best.choices[*p].order = 0;
                }
            }
        }
        best = best.trimmed();
    }
    // 4. Sooner: delete default choices, which moves the remaining decisions to earlier
    // steps; a fault that still breaks the invariant when it comes sooner makes a shorter
    // run, which may need fewer external requests again.
    best = sooner(best, &mut budget, &fails);
    minimize_externals(&mut best, &mut budget, &fails, drawn);

    // 6. Anchor node faults (crash, isolate, clock jump) in time: removing events elsewhere
    // then no longer moves them, which step numbers did.
    let nodes = scenario.nodes.len();
    let times =
        replay_case::<M>(scenario, seed, strategy, &best, TraceSink::Discard).decision_times;
    for pos in 0..best.choices.len() {
        let code = best.choices[pos].fault;
        let node_fault = matches!(
            Choice {
                order: 0,
                fault: code
            }
            .injected(nodes),
            Some(Injected::Crash(_) | Injected::Isolate(_) | Injected::ClockJump(..))
        );
        let Some(&at_ns) = times.get(pos) else { break };
        if !node_fault || budget == 0 {
            continue;
        }
        let mut s = best.clone();
        s.choices[pos].fault = 0;
        s.timed.push(TimedFault {
            at_ns,
            fault: code,
            lasts_ns: None,
        });
        budget -= 1;
        if fails(&s) {
            best = s;
        }
    }
    best = best.trimmed();
    minimize_externals(&mut best, &mut budget, &fails, drawn);
    // 7. Move each timed fault as early as it still breaks the invariant.
    for k in 0..best.timed.len() {
        let mut stride = best.timed[k].at_ns / 2;
        while stride >= 100_000 && budget > 0 {
            let mut s = best.clone();
            s.timed[k].at_ns -= stride.min(s.timed[k].at_ns);
            budget -= 1;
            if fails(&s) {
                best = s;
            } else {
                stride /= 2;
            }
        }
    }
    // 7b. Shorten crashes and isolations: a node back sooner may fail the same way sooner
    // (a restarted node that forgot its vote can vote again in the same election).
    shorten_outages(&mut best, &mut budget, &|s: &Schedule| {
        failing_steps::<M>(scenario, seed, strategy, s, invariant)
    });
    // 8. And what that earlier failure no longer needs: timed faults that stopped
    // mattering, default choices, requests.
    let mut k = 0;
    while k < best.timed.len() && budget > 0 {
        let mut s = best.clone();
        s.timed.remove(k);
        budget -= 1;
        if fails(&s) {
            best = s;
        } else {
            k += 1;
        }
    }
    best = sooner(best, &mut budget, &fails);
    minimize_externals(&mut best, &mut budget, &fails, drawn);
    // 9. The requests left still arrive when the workload first drew them, after idle time
    // full of heartbeats: move them (and the timed faults with them) earlier.
    let steps = |s: &Schedule| failing_steps::<M>(scenario, seed, strategy, s, invariant);
    best = earlier_requests(best, &steps);
    best.trimmed()
}

/// Shifts the workload and the timed faults earlier by the largest amount that still
/// fails with fewer steps: a coarse grid from [`SHIFT_MAX_NS`] down, then each millisecond
/// above the first hit. (Not a bisection: whether a shift fails depends on where the
/// requests land between heartbeats, which is not monotone in the shift.)
fn earlier_requests(best: Schedule, steps: &dyn Fn(&Schedule) -> Option<u64>) -> Schedule {
    const COARSE_NS: u64 = 8_000_000;
    const FINE_NS: u64 = 1_000_000;
    let Some(base) = steps(&best) else {
        return best;
    };
    let shifted = |shift: u64| {
        let mut s = best.clone();
        s.workload_shift_ns = best.workload_shift_ns.saturating_add(shift);
        for t in &mut s.timed {
            t.at_ns = t.at_ns.saturating_sub(shift);
        }
        s
    };
    let smaller = |s: &Schedule| steps(s).is_some_and(|n| n < base);
    let Some(hit) = (1..=SHIFT_MAX_NS / COARSE_NS)
        .rev()
        .map(|k| k * COARSE_NS)
        .find(|&shift| smaller(&shifted(shift)))
    else {
        return best;
    };
    // The largest shift that fails smaller is where the failure comes earliest.
    (1..COARSE_NS / FINE_NS)
        .rev()
        .map(|k| hit + k * FINE_NS)
        .find(|&shift| smaller(&shifted(shift)))
        .map_or_else(|| shifted(hit), shifted)
}

/// How far `earlier_requests` moves requests at most.
pub const SHIFT_MAX_NS: u64 = 2_000_000_000;

/// A proptest strategy over schedules of up to `max_len` choices. proptest shrinks them
/// towards fewer choices and zero (default order, no fault) values.
pub fn schedules(max_len: usize) -> impl proptest::strategy::Strategy<Value = Schedule> {
    proptest::collection::vec(
        (0u8..4, prop_oneof![9 => Just(0u8), 1 => 1u8..=60]),
        0..max_len,
    )
    .prop_map(|v| Schedule {
        choices: v
            .into_iter()
            .map(|(order, fault)| crate::schedule::Choice { order, fault })
            .collect(),
        ..Schedule::default()
    })
}

/// For `proptest!` tests: runs `scenario` (seed `seed`) under `schedule` and checks its
/// invariants. On a violation it writes the run's trace under `target/retrace/` and fails
/// with the `retrace replay` command that opens it; proptest then shrinks, and the last
/// trace written is the minimal failing run's.
pub fn check_schedule<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    schedule: &Schedule,
) -> Result<(), proptest::test_runner::TestCaseError> {
    let report = Simulation::<M>::new(scenario, seed, TraceSink::Memory)
        .with_schedule(schedule.clone())
        .run();
    let Some(v) = report.violation else {
        return Ok(());
    };
    let path = std::path::PathBuf::from("target")
        .join("retrace")
        .join(format!("proptest-{}-seed{seed}.trace", M::NAME));
    let written = report
        .trace
        .as_ref()
        .map(|t| std::fs::create_dir_all("target/retrace").and_then(|_| std::fs::write(&path, t)));
    let how = match written {
        Some(Ok(())) => format!("replay it with: retrace replay {}", path.display()),
        _ => "(its trace could not be written)".to_string(),
    };
    Err(proptest::test_runner::TestCaseError::fail(format!(
        "{}; {how}",
        v.describe()
    )))
}
