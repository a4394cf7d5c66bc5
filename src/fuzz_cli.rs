//! `retrace fuzz`: search a scenario's orderings and faults in parallel, minimise what
//! breaks, and write each failure as a trace and a schedule file.

use crate::summary::{group, rate};
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::fork::{boundary, ForkWalk};
use retrace_replayer::Replay;
use retrace_sim::fuzz::{
    case_seed, minimize_from, replay_case_from, run_case_from, ForkStart, ScheduleFile,
    ScheduleFrom, Size, Start, Strategy, ROTATION,
};
use retrace_sim::scenario::parse_duration_ns;
use retrace_sim::{codec, Model, Scenario, TraceSink};
use retrace_sim::{ForkFuture, ForkPoint};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// The scenario to explore (with --from, a trace: its scenario is explored after the
    /// moment)
    pub(crate) scenario: PathBuf,
    /// Search the future of event N of the trace given instead of a scenario: every case
    /// keeps the trace's records up to N's step, and decides only after it; failures are
    /// minimised with that prefix fixed
    #[arg(long, value_name = "N")]
    pub(crate) from: Option<u64>,
    /// Stop after this many runs [default: 1000 unless --time is given]
    #[arg(long, conflicts_with = "time")]
    pub(crate) cases: Option<u64>,
    /// Stop after this long, e.g. 60s
    #[arg(long)]
    pub(crate) time: Option<String>,
    /// Parallel workers [default: all cores]
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// How runs choose orderings and faults: rotate (random, swarm and pct in turn, case by
    /// case), random, pct, swarm
    #[arg(long, value_enum, default_value_t = StrategyArg::Rotate)]
    pub(crate) strategy: StrategyArg,
    /// This machine's share of the search, I/N: it runs cases I, I+N, I+2N, ...
    #[arg(long, value_name = "I/N")]
    pub(crate) shard: Option<String>,
    /// The master seed cases are derived from [default: the scenario's seed]
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Keep searching after a violation (one failure kept per invariant)
    #[arg(long)]
    pub(crate) keep_going: bool,
    /// Do not minimise failures
    #[arg(long)]
    pub(crate) no_minimize: bool,
    /// Where failures are written
    #[arg(long, default_value = "target/retrace/fuzz")]
    pub(crate) out: PathBuf,
}

struct Found {
    index: u64,
    seed: u64,
    /// The strategy its case ran under (with `rotate`, one of the rotation).
    strategy: Strategy,
    invariant: String,
    schedule: retrace_sim::Schedule,
}

fn shard(text: Option<&str>) -> anyhow::Result<(u64, u64)> {
    let Some(text) = text else { return Ok((0, 1)) };
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| anyhow!("--shard `{text}`: expected I/N, like 0/4"))?;
    let (i, n): (u64, u64) = (
        i.parse()
            .map_err(|_| anyhow!("--shard `{text}`: I is not a number"))?,
        n.parse()
            .map_err(|_| anyhow!("--shard `{text}`: N is not a number"))?,
    );
    if n == 0 || i >= n {
        return Err(anyhow!("--shard `{text}`: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// `--strategy`, as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyArg {
    Rotate,
    Random,
    Pct,
    Swarm,
}

/// What `--strategy` asks for: one strategy for every case, or the default rotation.
#[derive(Clone, Copy)]
enum Strategies {
    One(Strategy),
    /// Case by case in turn ([`ROTATION`]).
    Rotate,
}

impl Strategies {
    fn of_arg(arg: StrategyArg) -> Strategies {
        match arg {
            StrategyArg::Rotate => Strategies::Rotate,
            StrategyArg::Random => Strategies::One(Strategy::Random),
            StrategyArg::Pct => Strategies::One(Strategy::Pct),
            StrategyArg::Swarm => Strategies::One(Strategy::Swarm),
        }
    }

    /// The strategy of case `index`.
    fn of(self, index: u64) -> Strategy {
        match self {
            Strategies::One(s) => s,
            Strategies::Rotate => ROTATION[(index % ROTATION.len() as u64) as usize],
        }
    }

    fn name(self) -> String {
        match self {
            Strategies::One(s) => s.name().into(),
            Strategies::Rotate => {
                let names: Vec<&str> = ROTATION.iter().map(|s| s.name()).collect();
                format!("rotate ({})", names.join(", "))
            }
        }
    }
}

/// `retrace fuzz`: the scenario's model, then [`fuzz`].
pub fn fuzz_command<L: crate::registry::Models>(
    registry: &crate::registry::Registry<L>,
    args: &FuzzArgs,
) -> anyhow::Result<u8> {
    struct Fuzz<'a>(&'a FuzzArgs);
    impl crate::registry::ScenarioFn for Fuzz<'_> {
        type Out = u8;
        fn call<M: Model>(self, file: &str, s: Scenario<M::Options>) -> anyhow::Result<u8> {
            fuzz::<M>(file, &s, self.0)
        }
    }
    if let Some(at) = args.from {
        return fuzz_trace(registry, args, at);
    }
    crate::cli::on_scenario_file(registry, &args.scenario, Fuzz(args))
}

/// `retrace fuzz TRACE --from N`: the trace's model, then [`search`] from its moment.
fn fuzz_trace<L: crate::registry::Models>(
    registry: &crate::registry::Registry<L>,
    args: &FuzzArgs,
    at: u64,
) -> anyhow::Result<u8> {
    let path = &args.scenario;
    let trace = crate::replay_cli::load(path)?;
    if at >= trace.events.len() as u64 {
        return Err(anyhow!(
            "{}: there is no event {at} (the trace has {} records)",
            path.display(),
            group(trace.events.len() as u64)
        ));
    }
    let model = crate::replay_cli::known_model(registry, path, &trace.header.model)?;
    struct FromTrace<'a> {
        trace: retrace_sim::Trace,
        args: &'a FuzzArgs,
        at: u64,
    }
    impl crate::registry::ModelFn for FromTrace<'_> {
        type Out = anyhow::Result<u8>;
        fn call<M: Model>(self) -> Self::Out {
            let path = &self.args.scenario;
            let at_path = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
            let replay = Replay::<M>::new(self.trace).map_err(|e| at_path(&e))?;
            let from = From {
                replay: &replay,
                boundary: boundary(&replay, self.at),
                at: self.at,
            };
            // Walk once here: a trace that does not re-execute is refused before the search,
            // and this walk serves the minimiser after it.
            let fork = from.walk().map_err(|e| at_path(&e))?;
            let scenario = fork.0.scenario().clone();
            ForkStart::new(&scenario, &fork.1, fork.0.prefix(), ForkFuture::default())
                .map_err(|e| at_path(&e))?;
            let file = path.display().to_string();
            search::<M>(&file, &scenario, Some((&from, &fork)), self.args)
        }
    }
    registry.call(&model, FromTrace { trace, args, at })?
}

/// A search's start at a trace's moment: each worker walks there itself (node states are
/// not shared across threads).
struct From<'r, M: Model> {
    replay: &'r Replay<M>,
    boundary: usize,
    at: u64,
}

impl<'r, M: Model> From<'r, M> {
    fn walk(
        &self,
    ) -> Result<(ForkWalk<'r, M>, ForkPoint<M>), retrace_replayer::fork::ForkWalkError> {
        let mut walk = ForkWalk::new(self.replay)?;
        walk.advance(self.boundary)?;
        let point = walk.point()?;
        Ok((walk, point))
    }
}

/// The [`Start`] of cases from `fork` (a walk at the moment and its point), or from the
/// scenario's beginning.
fn start_of<'a, M: Model>(
    scenario: &'a Scenario<M::Options>,
    fork: Option<&'a (ForkWalk<'_, M>, ForkPoint<M>)>,
) -> Option<Start<'a, M>> {
    match fork {
        None => Some(Start::Scenario(scenario)),
        Some((walk, point)) => {
            ForkStart::new(scenario, point, walk.prefix(), ForkFuture::default())
                .ok()
                .map(Start::Fork)
        }
    }
}

/// The generic half of `retrace fuzz`; returns the exit code.
pub fn fuzz<M: Model>(
    file: &str,
    scenario: &Scenario<M::Options>,
    args: &FuzzArgs,
) -> anyhow::Result<u8> {
    search::<M>(file, scenario, None, args)
}

/// A trace's moment to search from, and the main thread's walk there.
type FromWalked<'a, 'r, M> = (&'a From<'r, M>, &'a (ForkWalk<'r, M>, ForkPoint<M>));

/// The search, from the scenario's beginning or from a trace's moment.
fn search<M: Model>(
    file: &str,
    scenario: &Scenario<M::Options>,
    from: Option<FromWalked<'_, '_, M>>,
    args: &FuzzArgs,
) -> anyhow::Result<u8> {
    let (from, fork) = (from.map(|f| f.0), from.map(|f| f.1));
    let strategies = Strategies::of_arg(args.strategy);
    let (shard_i, shard_n) = shard(args.shard.as_deref())?;
    let deadline = match &args.time {
        Some(t) => Some(Duration::from_nanos(
            parse_duration_ns(t, false).map_err(|e| anyhow!("--time {e}"))? as u64,
        )),
        None => None,
    };
    let cases = args
        .cases
        .unwrap_or(if deadline.is_some() { u64::MAX } else { 1000 });
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let master = args.seed.unwrap_or(scenario.seed);

    let bar = indicatif::ProgressBar::new(if cases == u64::MAX { 0 } else { cases });
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} runs {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let next = AtomicU64::new(0);
    let runs = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let distinct: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
    let covered: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
    let found: Mutex<Vec<Found>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let fork = match from.map(From::walk) {
                    Some(Ok(fork)) => Some(fork),
                    // The main thread walked there first: this does not happen.
                    Some(Err(_)) => return,
                    None => None,
                };
                let Some(start) = start_of(scenario, fork.as_ref()) else {
                    return;
                };
                loop {
                    if stop.load(Ordering::Relaxed)
                        || deadline.is_some_and(|d| started.elapsed() >= d)
                    {
                        return;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= cases {
                        return;
                    }
                    let index = shard_i + k * shard_n;
                    let seed = case_seed(master, index);
                    let strategy = strategies.of(index);
                    let case = run_case_from(&start, seed, strategy);
                    let done = runs.fetch_add(1, Ordering::Relaxed) + 1;
                    let coverage = covered.lock().map_or(0, |mut c| {
                        c.extend(case.report.coverage.iter().copied());
                        c.len()
                    });
                    if let Ok(mut d) = distinct.lock() {
                        if d.len() < 1_000_000 {
                            d.insert(codec::digest(
                                &codec::encode(&case.schedule).unwrap_or_default(),
                            ));
                        }
                        bar.set_position(done);
                        bar.set_message(format!(
                            "({}) {} distinct schedules, {coverage} handlers covered, {} failing",
                            rate(done, started.elapsed()),
                            d.len(),
                            found.lock().map_or(0, |f| f.len())
                        ));
                    }
                    if let Some(v) = case.report.violation {
                        if let Ok(mut f) = found.lock() {
                            if !f.iter().any(|x| x.invariant == v.invariant) {
                                f.push(Found {
                                    index,
                                    seed,
                                    strategy,
                                    invariant: v.invariant.clone(),
                                    schedule: case.schedule,
                                });
                            } else if let Some(x) = f
                                .iter_mut()
                                .find(|x| x.invariant == v.invariant && x.index > index)
                            {
                                // Keep the earliest case per invariant, whatever the thread timing.
                                *x = Found {
                                    index,
                                    seed,
                                    strategy,
                                    invariant: v.invariant.clone(),
                                    schedule: case.schedule,
                                };
                            }
                        }
                        if !args.keep_going {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let total = runs.load(Ordering::Relaxed);
    let distinct = distinct.lock().map_or(0, |d| d.len());
    let coverage = covered.lock().map_or(0, |c| c.len());
    let mut found = found
        .into_inner()
        .map_err(|_| anyhow!("a fuzz worker panicked"))?;
    found.sort_by_key(|f| f.index);
    println!(
        "fuzz      {file} ({}), strategy {}, shard {shard_i}/{shard_n}, master seed {master}",
        M::NAME,
        strategies.name()
    );
    println!(
        "runs      {} in {:.1}s ({}), {} distinct schedules, {coverage} handlers covered, {} failing",
        group(total),
        elapsed.as_secs_f64(),
        rate(total, elapsed),
        group(distinct as u64),
        found.len()
    );
    if found.is_empty() {
        return Ok(crate::exit::OK);
    }
    std::fs::create_dir_all(&args.out).map_err(|e| anyhow!("{}: {e}", args.out.display()))?;
    let stem = std::path::Path::new(file)
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().into_owned());
    let new_start =
        || start_of(scenario, fork).ok_or_else(|| anyhow!("{file}: the fork does not start"));
    let start = new_start()?;
    for f in &found {
        let strategy = f.strategy;
        let before = replay_case_from(&start, f.seed, strategy, &f.schedule, TraceSink::Discard);
        let size_before = Size::of(&before, &f.schedule);
        let schedule = if args.no_minimize {
            f.schedule.clone()
        } else {
            minimize_from(
                new_start()?,
                f.seed,
                strategy,
                &f.schedule,
                &f.invariant,
                2000,
            )
        };
        let base = args.out.join(format!("{stem}-case{}", f.index));
        let trace_path = base.with_extension("trace");
        let file_out = std::fs::File::create(&trace_path)
            .map_err(|e| anyhow!("{}: {e}", trace_path.display()))?;
        let after = replay_case_from(
            &start,
            f.seed,
            strategy,
            &schedule,
            TraceSink::Stream(Box::new(file_out)),
        );
        let size_after = Size::of(&after, &schedule);
        let violation = after.violation.as_ref().ok_or_else(|| {
            anyhow!("the minimised schedule no longer fails (a bug in the minimiser)")
        })?;
        let schedule_path = base.with_extension("schedule.json");
        let sf = ScheduleFile {
            format: retrace_sim::fuzz::SCHEDULE_FORMAT,
            model: M::NAME.into(),
            scenario: file.into(),
            seed: f.seed,
            strategy: strategy.name().into(),
            invariant: f.invariant.clone(),
            schedule,
            from: from.map(|f| ScheduleFrom {
                trace: file.into(),
                at: f.at,
                interventions: Vec::new(),
            }),
        };
        let json = serde_json::to_string_pretty(&sf).map_err(anyhow::Error::msg)?;
        std::fs::write(&schedule_path, json)
            .map_err(|e| anyhow!("{}: {e}", schedule_path.display()))?;
        println!(
            "VIOLATED  case {} (seed {}, {}): {}",
            f.index,
            f.seed,
            strategy.name(),
            violation.describe()
        );
        println!("  before    {size_before}");
        println!("  after     {size_after}");
        let program = crate::cli::program();
        println!("  trace     {program} replay {}", trace_path.display());
        match from {
            None => println!(
                "  schedule  {program} run {file} --schedule {}",
                schedule_path.display()
            ),
            Some(from) => println!(
                "  schedule  {program} fork {file} --at {} --schedule {}",
                from.at,
                schedule_path.display()
            ),
        }
    }
    Ok(crate::exit::VIOLATION)
}
