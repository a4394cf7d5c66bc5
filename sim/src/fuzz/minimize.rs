//! Minimisation: shrinking a failing case to a small run that breaks the same invariant.
//!
//! Every phase edits the case's [`Schedule`] and keeps an edit only if the run it replays
//! still breaks the invariant (usually: in fewer steps). [`Target`] is the failure being
//! shrunk, and answers those questions.

use super::ddmin::ddmin;
use super::slice::Slice;
use super::{replay_case_from, Start, Strategy};
use crate::model::Model;
use crate::scenario::Scenario;
use crate::schedule::{Choice, Moment, Schedule, CRASH_DOWN_NS, DELAY_MIN_NS, ISOLATION_NS};
use crate::sim::{RunReport, TraceSink};
use std::collections::BTreeSet;

/// How far `earlier_requests` moves requests at most.
pub const SHIFT_MAX_NS: u64 = 2_000_000_000;

/// Rounds of [`minimize_round`] at most: each later round starts from a shorter run, where
/// faults and reorderings that were needed before may no longer be.
const MINIMIZE_ROUNDS: usize = 4;

/// The outage lengths [`shorten_outages`] tries, shortest first.
const SHORTER_OUTAGES_NS: [u64; 5] = [1_000_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000];

/// How many of a failing run's last decision moments [`swap_for_one_outage`] tries a crash
/// at, how many of the run without faults (before the failing run's end), and how many of
/// the swaps that fail it minimises.
const SWAP_MOMENTS: usize = 40;
const SWAP_BARE_MOMENTS: usize = 400;
const SWAP_TRIES: usize = 3;
/// How many of the run without faults' first messages [`swap_for_one_outage`] tries one
/// drop or duplicate of.
const SWAP_MESSAGES: usize = 400;

/// How many of a failing run's last moments [`add_a_quick_restart`] tries.
const QUICK_RESTART_MOMENTS: usize = 200;

/// The failure being minimised: a case of a scenario, and the invariant every smaller run
/// must still break.
struct Target<'a, M: Model> {
    start: Start<'a, M>,
    seed: u64,
    strategy: Strategy,
    invariant: &'a str,
}

impl<'a, M: Model> Target<'a, M> {
    fn run(&self, schedule: &Schedule) -> RunReport {
        replay_case_from(
            &self.start,
            self.seed,
            self.strategy,
            schedule,
            TraceSink::Discard,
        )
    }

    /// The steps of `schedule`'s run if it breaks the invariant.
    /// `schedule`'s run with its trace kept in memory (for the causal slice).
    fn run_traced(&self, schedule: &Schedule) -> RunReport {
        replay_case_from(
            &self.start,
            self.seed,
            self.strategy,
            schedule,
            TraceSink::Memory,
        )
    }

    fn steps(&self, schedule: &Schedule) -> Option<u64> {
        self.steps_of(&self.run(schedule))
    }

    /// The steps of a run if it broke the invariant.
    fn steps_of(&self, run: &RunReport) -> Option<u64> {
        run.violation
            .as_ref()
            .is_some_and(|v| v.invariant == self.invariant)
            .then_some(run.stats.steps)
    }

    fn fails(&self, schedule: &Schedule) -> bool {
        self.steps(schedule).is_some()
    }

    /// The moment of each decision of `schedule`'s run.
    fn decisions(&self, schedule: &Schedule) -> Vec<Moment> {
        self.run(schedule).decisions
    }

    /// How many workload requests `schedule`'s run drew, sent or not.
    fn requests_drawn(&self, schedule: &Schedule) -> u64 {
        self.run(schedule).requests_drawn
    }

    /// The same failure in `scenario` (the same one with other limits).
    fn within<'b>(&self, scenario: &'b Scenario<M::Options>) -> Target<'b, M>
    where
        'a: 'b,
    {
        Target {
            start: self.start.with_scenario(scenario),
            seed: self.seed,
            strategy: self.strategy,
            invariant: self.invariant,
        }
    }

    /// Minimises `candidate` by a round and returns it if it then fails in fewer than
    /// `steps_to_beat` steps.
    fn minimised_if_smaller(
        &self,
        candidate: &Schedule,
        steps_to_beat: u64,
        budget: u32,
    ) -> Option<(Schedule, u64)> {
        let small = minimize_round(self, candidate, budget);
        let n = self.steps(&small).filter(|&n| n < steps_to_beat)?;
        Some((small, n))
    }
}

/// Shrinks a failing case as DEMi does, from what the violation causally depends on: first
/// the requests and choices outside the violating step's causal past, in bulk; then the
/// external inputs, the faults and the early deliveries by delta debugging; then what is
/// left made smaller (shorter holds and outages, node faults earlier) — keeping each change
/// only if the same invariant still breaks. Every choice names the message or moment it is
/// about, so removing one leaves the others on the same messages. Rounds repeat while the
/// run gets shorter; each round runs at most `budget` re-executions (and the request shift
/// its grid). Then one outage tried in place of all the faults, and one quick restart added.
pub fn minimize<M: Model>(
    scenario: &Scenario<M::Options>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    invariant: &str,
    budget: u32,
) -> Schedule {
    minimize_from(
        Start::<M>::Scenario(scenario),
        seed,
        strategy,
        schedule,
        invariant,
        budget,
    )
}

/// [`minimize`] from any [`Start`]: from a trace's moment, only what the cases decided
/// after it is shrunk; the records before it stay as they are.
pub fn minimize_from<M: Model>(
    start: Start<'_, M>,
    seed: u64,
    strategy: Strategy,
    schedule: &Schedule,
    invariant: &str,
    budget: u32,
) -> Schedule {
    let target = Target::<M> {
        start,
        seed,
        strategy,
        invariant,
    };
    // Requests drawn after the violation play no part in it; none are ever sent again, so
    // moving the workload earlier (which would bring them inside the run) cannot add any.
    // (The cap leaves this run as it is: it drew no request past it.)
    let first = target.run(schedule);
    let drawn = first.requests_drawn;
    let mut best = Schedule {
        requests_max: Some(schedule.requests_max.map_or(drawn, |m| m.min(drawn))),
        // Only what applied: a choice whose message never came is no part of the failure.
        choices: first
            .schedule
            .as_ref()
            .map_or_else(|| schedule.choices.clone(), |s| s.choices.clone()),
        ..schedule.clone()
    };
    let mut best_steps = target.steps_of(&first).unwrap_or(u64::MAX);
    for _ in 0..MINIMIZE_ROUNDS {
        let next = minimize_round(&target, &best, budget);
        match target.steps(&next) {
            Some(n) if n < best_steps => {
                best = next;
                best_steps = n;
            }
            // Same size: keep the round's result if it is simpler (fewer choices).
            Some(n) if n == best_steps && next.choices.len() < best.choices.len() => {
                best = next;
                break;
            }
            _ => break,
        }
    }
    let best = swap_for_one_outage(&target, &best, budget);
    add_a_quick_restart(&target, &best, budget)
}

/// One round of [`minimize`].
fn minimize_round<M: Model>(target: &Target<'_, M>, schedule: &Schedule, budget: u32) -> Schedule {
    let mut budget = budget;
    let fails = |s: &Schedule| target.fails(s);
    let mut best = schedule.clone();
    // 1. What the violation does not causally depend on, in bulk.
    outside_the_slice(target, &mut best, &mut budget);
    // 2. External inputs.
    minimize_externals(target, &mut best, &mut budget);
    // 3. Faults, then 4. early deliveries: as few choices as possible.
    for faults in [true, false] {
        let mine: Vec<usize> = (0..best.choices.len())
            .filter(|&i| best.choices[i].is_fault() == faults)
            .collect();
        let snapshot = best.clone();
        let keep = fewest(mine.clone(), &mut budget, &mut |subset: &[usize]| {
            fails(&keeping(&snapshot, &mine, subset))
        });
        best = keeping(&snapshot, &mine, &keep);
    }
    // 5. What is left, smaller: messages held back less, outages shorter, node faults earlier.
    hold_shorter(&mut best, &mut budget, &fails);
    shorten_outages(&mut best, &mut budget, &|s: &Schedule| target.steps(s));
    node_faults_earlier(&mut best, &mut budget, &fails);
    // 6. And what that earlier failure no longer needs.
    outside_the_slice(target, &mut best, &mut budget);
    minimize_externals(target, &mut best, &mut budget);
    // 7. The requests left still arrive when the workload first drew them, after idle time
    // full of heartbeats: move them (and the moments of the choices with them) earlier.
    earlier_requests(best, &|s: &Schedule| target.steps(s))
}

/// `schedule` with, of the choices at `candidates`, only those at `kept`.
fn keeping(schedule: &Schedule, candidates: &[usize], kept: &[usize]) -> Schedule {
    let gone: BTreeSet<usize> = candidates
        .iter()
        .copied()
        .filter(|i| !kept.contains(i))
        .collect();
    Schedule {
        choices: schedule
            .choices
            .iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, c)| c.clone())
            .collect(),
        ..schedule.clone()
    }
}

/// [`ddmin`], which never tries the empty set, after trying it.
fn fewest<T: Clone>(
    items: Vec<T>,
    budget: &mut u32,
    fails: &mut dyn FnMut(&[T]) -> bool,
) -> Vec<T> {
    if items.is_empty() || *budget == 0 {
        return items;
    }
    *budget -= 1;
    if fails(&[]) {
        return Vec::new();
    }
    ddmin(items, budget, fails)
}

/// Removes, in bulk, the requests outside the violating step's causal past and the choices
/// that cannot have mattered to it (see [`Slice`]): all at once, else the requests, else the
/// choices.
fn outside_the_slice<M: Model>(target: &Target<'_, M>, best: &mut Schedule, budget: &mut u32) {
    if *budget < 3 {
        return;
    }
    let run = target.run_traced(best);
    *budget -= 1;
    let (Some(v), Some(trace)) = (run.violation.as_ref(), run.trace.as_ref()) else {
        return;
    };
    let Some(slice) = Slice::of(trace, v.step_index) else {
        return;
    };
    // The run's own list of what applied lines up with `choice_sends`.
    let Some(applied) = run.schedule.as_ref() else {
        return;
    };
    let outside_requests: Vec<u64> = (0..run.requests_drawn)
        .filter(|r| !best.skip_requests.contains(r) && !slice.requests.contains(r))
        .collect();
    let needed = |i: usize, c: &Choice| match (c.msg(), run.choice_sends.get(i).copied().flatten())
    {
        (Some(msg), Some(send)) => slice.needs_send(send, msg.to),
        _ => c.moment().is_none_or(|m| slice.needs_fault_at(m.at_ns)),
    };
    let kept: Vec<Choice> = applied
        .choices
        .iter()
        .enumerate()
        .filter(|(i, c)| needed(*i, c))
        .map(|(_, c)| c.clone())
        .collect();
    let fewer_requests = |s: &Schedule| {
        let mut s = s.clone();
        s.skip_requests.extend(&outside_requests);
        s.skip_requests.sort_unstable();
        s.skip_requests.dedup();
        s
    };
    let fewer_choices = |s: &Schedule| Schedule {
        choices: kept.clone(),
        ..s.clone()
    };
    let some_requests = !outside_requests.is_empty();
    let some_choices = kept.len() < applied.choices.len();
    let tries: Vec<Schedule> = match (some_requests, some_choices) {
        (false, false) => return,
        (true, false) => vec![fewer_requests(best)],
        (false, true) => vec![fewer_choices(best)],
        (true, true) => vec![
            fewer_choices(&fewer_requests(best)),
            fewer_requests(best),
            fewer_choices(best),
        ],
    };
    for s in tries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if target.fails(&s) {
            *best = s;
            return;
        }
    }
}

/// Halves each message's hold while the run still fails.
fn hold_shorter(best: &mut Schedule, budget: &mut u32, fails: &dyn Fn(&Schedule) -> bool) {
    for k in 0..best.choices.len() {
        while *budget > 0 {
            let Choice::Delay { by_ns, .. } = best.choices[k] else {
                break;
            };
            if by_ns < 2 * DELAY_MIN_NS {
                break;
            }
            let mut s = best.clone();
            if let Choice::Delay { by_ns, .. } = &mut s.choices[k] {
                *by_ns /= 2;
            }
            *budget -= 1;
            if !fails(&s) {
                break;
            }
            *best = s;
        }
    }
}

/// Moves each node fault as early as it still breaks the invariant.
fn node_faults_earlier(best: &mut Schedule, budget: &mut u32, fails: &dyn Fn(&Schedule) -> bool) {
    for k in 0..best.choices.len() {
        if best.choices[k].node().is_none() {
            continue;
        }
        let Some(at) = best.choices[k].moment() else {
            continue;
        };
        let mut stride = at.at_ns / 2;
        while stride >= 100_000 && *budget > 0 {
            let mut s = best.clone();
            if let Some(m) = s.choices[k].moment_mut() {
                *m = Moment::at(m.at_ns - stride.min(m.at_ns));
            }
            *budget -= 1;
            if fails(&s) {
                *best = s;
            } else {
                stride /= 2;
            }
        }
    }
}

/// Leaves out as many workload requests as possible.
fn minimize_externals<M: Model>(target: &Target<'_, M>, best: &mut Schedule, budget: &mut u32) {
    // Requests past the failing run's end are never sent (`requests_max`).
    let total = target.requests_drawn(best);
    let kept: Vec<u64> = (0..total)
        .filter(|r| !best.skip_requests.contains(r))
        .collect();
    let snapshot = best.clone();
    let keep = ddmin(kept, budget, &mut |subset: &[u64]| {
        let mut s = snapshot.clone();
        s.skip_requests = (0..total).filter(|r| !subset.contains(r)).collect();
        target.fails(&s)
    });
    best.skip_requests = (0..total).filter(|r| !keep.contains(r)).collect();
}

/// Gives each crash or isolation the shortest length in [`SHORTER_OUTAGES_NS`] with which
/// the run fails in fewer steps.
fn shorten_outages(
    best: &mut Schedule,
    budget: &mut u32,
    steps: &dyn Fn(&Schedule) -> Option<u64>,
) {
    let Some(mut base) = steps(best) else { return };
    for k in 0..best.choices.len() {
        let lasts_ns = match best.choices[k] {
            Choice::Crash { lasts_ns, .. } => lasts_ns.unwrap_or(CRASH_DOWN_NS),
            Choice::Isolate { lasts_ns, .. } => lasts_ns.unwrap_or(ISOLATION_NS),
            _ => continue,
        };
        for shorter in SHORTER_OUTAGES_NS.into_iter().take_while(|&l| l < lasts_ns) {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let mut s = best.clone();
            if let Choice::Crash { lasts_ns, .. } | Choice::Isolate { lasts_ns, .. } =
                &mut s.choices[k]
            {
                *lasts_ns = Some(shorter);
            }
            if let Some(n) = steps(&s).filter(|&n| n < base) {
                *best = s;
                base = n;
                break;
            }
        }
    }
}

/// Shifts the workload and the choices' moments earlier by the largest amount that still
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
        for c in &mut s.choices {
            if let Some(m) = c.moment_mut() {
                *m = Moment::at(m.at_ns.saturating_sub(shift));
            }
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
fn swap_for_one_outage<M: Model>(target: &Target<'_, M>, best: &Schedule, budget: u32) -> Schedule {
    let run = target.run(best);
    let Some(base) = target.steps_of(&run) else {
        return best.clone();
    };
    let times = run.decisions;
    let mut bare = best.clone();
    bare.choices.retain(|c| !c.is_fault());
    let mut longer_scenario = target.start.scenario().clone();
    longer_scenario.time_limit_ns = longer_scenario.time_limit_ns.saturating_add(SHIFT_MAX_NS);
    let longer = target.within(&longer_scenario);
    let nodes = target.start.scenario().nodes.len() as u32;
    // The failing run's last moments, and moments of the run without its faults up to where
    // the failing one ended (without the faults, things happen at other times: the write a
    // crash must catch unreplicated may be acknowledged much earlier).
    let end = times.last().copied().unwrap_or_default();
    let bare_times: Vec<Moment> = target
        .decisions(&bare)
        .into_iter()
        .take_while(|&t| t <= end)
        .collect();
    let mut moments: Vec<Moment> = times.iter().rev().take(SWAP_MOMENTS).copied().collect();
    moments.extend(bare_times.iter().rev().take(SWAP_BARE_MOMENTS));
    moments.sort_unstable_by(|a, b| b.cmp(a));
    moments.dedup();
    let mut swaps = Vec::new();
    // A crash as injected, then one for good, then one that restarts at once, then
    // an isolation as injected and one for good: a crash restarts the node 100 ms
    // later with what it had synced, which may be all it needs; a node back at once has
    // forgotten what it did not sync in the middle of what it was doing; a failover may take
    // longer than an isolation.
    let forever = Some(longer_scenario.time_limit_ns);
    let at_once = Some(SHORTER_OUTAGES_NS[0]);
    let kinds = [
        (true, None),
        (true, forever),
        (true, at_once),
        (false, None),
        (false, forever),
    ];
    'search: for at in moments {
        for ((kind, lasts_ns), node) in kinds
            .into_iter()
            .flat_map(|k| (0..nodes).map(move |n| (k, n)))
        {
            let mut s = bare.clone();
            s.choices.push(outage(kind, node, at, lasts_ns));
            if longer.fails(&s) {
                swaps.push(s);
                if swaps.len() == SWAP_TRIES {
                    break 'search;
                }
            }
        }
    }
    // One lost or doubled message of the run without faults, earliest first: a failure found
    // late, after many faults, may need only one vote counted twice in the first election.
    if swaps.len() < SWAP_TRIES {
        let bare_run = target.run(&bare);
        'messages: for msg in bare_run.sent.iter().take(SWAP_MESSAGES) {
            for choice in [
                Choice::Duplicate { msg: msg.clone() },
                Choice::Drop { msg: msg.clone() },
            ] {
                let mut s = bare.clone();
                s.choices.push(choice);
                if target.fails(&s) {
                    swaps.push(s);
                    if swaps.len() == SWAP_TRIES {
                        break 'messages;
                    }
                }
            }
        }
    }
    let mut result = (best.clone(), base);
    for swap in swaps {
        let swap = earlier_requests(swap, &|s: &Schedule| longer.steps(s));
        if !target.fails(&swap) {
            continue;
        }
        if let Some(smaller) = target.minimised_if_smaller(&swap, result.1, budget) {
            result = smaller;
        }
    }
    result.0
}

/// Tries adding one crash that restarts at once (after [`SHORTER_OUTAGES_NS`]`[0]`) to the
/// failing run, of each node at each of its last [`QUICK_RESTART_MOMENTS`] moments: a node
/// that forgets what it had not synced in the middle of a protocol round (a vote, a
/// prepare) can break the invariant long before the faults that broke it did, which then
/// are no longer needed. The candidate that fails in the fewest steps gets a minimisation
/// round; its result is kept if it is smaller.
fn add_a_quick_restart<M: Model>(target: &Target<'_, M>, best: &Schedule, budget: u32) -> Schedule {
    let run = target.run(best);
    let Some(base) = target.steps_of(&run) else {
        return best.clone();
    };
    let mut moments = run.decisions;
    moments.dedup();
    let nodes = target.start.scenario().nodes.len() as u32;
    let mut fastest: Option<(Schedule, u64)> = None;
    for &at in moments.iter().rev().take(QUICK_RESTART_MOMENTS) {
        for node in 0..nodes {
            let mut s = best.clone();
            s.choices
                .push(outage(true, node, at, Some(SHORTER_OUTAGES_NS[0])));
            match target.steps(&s) {
                Some(n) if n < fastest.as_ref().map_or(base, |f| f.1) => fastest = Some((s, n)),
                _ => {}
            }
        }
    }
    fastest
        .and_then(|(quick, _)| target.minimised_if_smaller(&quick, base, budget))
        .map_or_else(|| best.clone(), |(small, _)| small)
}

/// A crash (or an isolation) of `node` at `at`.
fn outage(crash: bool, node: u32, at: Moment, lasts_ns: Option<u64>) -> Choice {
    if crash {
        Choice::Crash { node, at, lasts_ns }
    } else {
        Choice::Isolate { node, at, lasts_ns }
    }
}
