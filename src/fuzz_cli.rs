//! `retrace fuzz`: search a scenario's orderings and faults in parallel, minimise what
//! breaks, and write each failure as a trace and a schedule file.

use crate::summary::{group, rate};
use anyhow::anyhow;
use clap::Args;
use retrace_sim::fuzz::{
    case_seed, minimize, replay_case, run_case, ScheduleFile, Size, Strategy, ROTATION,
};
use retrace_sim::scenario::parse_duration_ns;
use retrace_sim::{codec, Model, Scenario, TraceSink};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// The scenario to explore
    pub(crate) scenario: PathBuf,
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
    crate::cli::on_scenario_file(registry, &args.scenario, Fuzz(args))
}

/// The generic half of `retrace fuzz`; returns the exit code.
pub fn fuzz<M: Model>(
    file: &str,
    scenario: &Scenario<M::Options>,
    args: &FuzzArgs,
) -> anyhow::Result<u8> {
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
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| started.elapsed() >= d)
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
                let case = run_case::<M>(scenario, seed, strategy);
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
    for f in &found {
        let strategy = f.strategy;
        let before = replay_case::<M>(scenario, f.seed, strategy, &f.schedule, TraceSink::Discard);
        let size_before = Size::of(&before, &f.schedule);
        let schedule = if args.no_minimize {
            f.schedule.clone()
        } else {
            minimize::<M>(scenario, f.seed, strategy, &f.schedule, &f.invariant, 2000)
        };
        let base = args.out.join(format!("{stem}-case{}", f.index));
        let trace_path = base.with_extension("trace");
        let file_out = std::fs::File::create(&trace_path)
            .map_err(|e| anyhow!("{}: {e}", trace_path.display()))?;
        let after = replay_case::<M>(
            scenario,
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
        println!(
            "  schedule  {program} run {file} --schedule {}",
            schedule_path.display()
        );
    }
    Ok(crate::exit::VIOLATION)
}
