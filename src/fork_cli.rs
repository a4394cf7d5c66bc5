//! `retrace fork`: any moment of a trace, simulated or recorded, as the start of a new
//! simulation (`retrace_replayer::fork`), written as a trace that starts with the
//! original's records up to the moment.

use crate::exit;
use crate::registry::{ModelFn, Models, Registry, ScenarioInfo};
use crate::replay_cli::{known_model, load};
use crate::summary::{self, group};
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::fork::{boundary, ForkWalk};
use retrace_replayer::Replay;
use retrace_sim::fuzz::{replay_case_from, ForkStart, Start, Strategy};
use retrace_sim::trace::Trace;
use retrace_sim::{format_ns, ForkFuture, ForkPoint, Model, TraceSink};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ForkArgs {
    /// The trace: simulated, recorded and merged, or itself a fork
    trace: PathBuf,
    /// The event (trace index) to branch after: the fork keeps every record up to the end
    /// of its step, unchanged, and simulates the rest
    #[arg(long, value_name = "N")]
    at: u64,
    /// Seed of the future's random choices (network, workload, faults); a simulated trace's
    /// own seed gives its own run back [default: one derived from the trace and N]
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the fork's trace
    /// [default: target/retrace/<trace>-fork<N>-seed<S>.trace]
    #[arg(long, short = 'o', value_name = "TRACE")]
    out: Option<PathBuf>,
    /// How long the future runs past the moment [default: to the scenario's time limit]
    #[arg(long = "for", value_name = "DURATION")]
    run_for: Option<String>,
    /// Replay a schedule `retrace fuzz TRACE --from N` saved (its seed, orderings and
    /// faults after the moment)
    #[arg(long, value_name = "FILE", conflicts_with = "seed")]
    schedule: Option<PathBuf>,
    /// Leave out the scenario's scripted faults (`[[faults]]`) after the moment: the
    /// future has only its random ones
    #[arg(long)]
    no_scripted_faults: bool,
}

impl ForkArgs {
    /// The future these flags describe, for a fork at `time_ns`.
    fn future(&self, time_ns: u64) -> anyhow::Result<ForkFuture> {
        let until_ns = match self.run_for.as_deref() {
            None => None,
            Some(text) => {
                let ns = retrace_sim::scenario::parse_duration_ns(text, false)
                    .map_err(|e| anyhow!("--for {text}: {e}"))?;
                Some(time_ns.saturating_add(ns as u64))
            }
        };
        Ok(ForkFuture {
            scripted_faults: !self.no_scripted_faults,
            until_ns,
            interventions: Vec::new(),
        })
    }
}

pub fn fork_command<L: Models>(registry: &Registry<L>, args: &ForkArgs) -> anyhow::Result<u8> {
    let trace = load(&args.trace)?;
    if args.at >= trace.events.len() as u64 {
        return Err(anyhow!(
            "{}: there is no event {} (the trace has {} records)",
            args.trace.display(),
            args.at,
            group(trace.events.len() as u64)
        ));
    }
    let model = known_model(registry, &args.trace, &trace.header.model)?;
    let tail = trace.tail.clone();
    struct Fork<'a> {
        trace: Trace,
        args: &'a ForkArgs,
    }
    impl ModelFn for Fork<'_> {
        type Out = anyhow::Result<u8>;
        fn call<M: Model>(self) -> Self::Out {
            fork_model::<M>(self.trace, self.args)
        }
    }
    let code = registry.call(&model, Fork { trace, args })??;
    Ok(exit::after_reading(tail.as_ref(), code))
}

fn fork_model<M: Model>(trace: Trace, args: &ForkArgs) -> anyhow::Result<u8> {
    let path = &args.trace;
    let at_path = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let replay = Replay::<M>::new(trace).map_err(|e| at_path(&e))?;
    let started = Instant::now();
    let mut walk = ForkWalk::new(&replay).map_err(|e| at_path(&e))?;
    walk.advance(boundary(&replay, args.at))
        .map_err(|e| at_path(&e))?;
    let point = walk.point().map_err(|e| at_path(&e))?;
    let seed = args.seed.unwrap_or_else(|| {
        retrace_replayer::fork::default_seed(&replay.trace.header.origin, walk.records())
    });
    let future = args.future(point.time_ns)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_fork_path(path, args.at, seed));
    let file = crate::cli::create_trace_file(&out)?;
    let sink = TraceSink::Stream(Box::new(file));
    let (report, own_run, seed) = match &args.schedule {
        None => {
            let sim = walk
                .simulation_from(&point, seed, &future, sink)
                .map_err(|e| at_path(&e))?;
            (sim.run(), walk.is_own_run(seed, &future), seed)
        }
        Some(file) => {
            let sf = crate::cli::read_schedule_file::<M>(file)?;
            let mut future = future;
            if let Some(from) = &sf.from {
                if from.at != args.at {
                    return Err(anyhow!(
                        "{}: the schedule starts after event {} of {}, not {}: fork with --at {}",
                        file.display(),
                        from.at,
                        from.trace,
                        args.at,
                        from.at
                    ));
                }
                future.interventions = from.interventions.clone();
                retrace_sim::what_if::check(&point, &future.interventions)
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            }
            let strategy =
                Strategy::parse(&sf.strategy).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            sf.schedule
                .check(u64::MAX)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let start = ForkStart::new(walk.scenario(), &point, walk.prefix(), future)
                .map_err(|e| at_path(&e))?;
            let report =
                replay_case_from(&Start::Fork(start), sf.seed, strategy, &sf.schedule, sink);
            print!(
                "{}",
                crate::summary::unapplied(&sf.schedule, &report.unapplied)
            );
            (report, false, sf.seed)
        }
    };
    let wall = started.elapsed();
    if let Some(e) = &report.trace_error {
        return Err(anyhow!("{}: cannot write the fork: {e}", out.display()));
    }
    print!("{}", describe_fork(path, &point, seed, own_run));
    let info = ScenarioInfo::of(walk.scenario(), Some(seed));
    print!(
        "{}",
        summary::run_summary(&info, &report, Some(&out), Some(wall))
    );
    Ok(match report.violation {
        Some(_) => exit::VIOLATION,
        None => exit::OK,
    })
}

/// What a fork kept and carried across, for people.
pub(crate) fn describe_fork<M: Model>(
    path: &Path,
    point: &ForkPoint<M>,
    seed: u64,
    own_run: bool,
) -> String {
    let down = point
        .nodes
        .iter()
        .filter(|n| matches!(n.state, retrace_sim::snapshot::NodeState::Down { .. }))
        .count();
    let mut out = format!(
        "fork      {} after record {} (at {}), seed {seed}{}\n",
        path.display(),
        point.records.saturating_sub(1),
        format_ns(point.time_ns.saturating_sub(point.base_ns)),
        if own_run {
            ": the trace's own seed, so its own run (re-simulated, checked against the trace)"
        } else {
            ""
        }
    );
    out.push_str(&format!(
        "carried   {} nodes up, {down} down; {} messages in flight, {} timers pending, {} partitions open, {} service connections (reset)\n",
        point.nodes.len() - down,
        point.in_flight.len(),
        point.timers.len(),
        point.cuts.len(),
        point.conns.len()
    ));
    if point.unknown_in_flight > 0 {
        out.push_str(&format!(
            "          {} more messages in flight whose content the trace does not hold are lost\n",
            point.unknown_in_flight
        ));
    }
    out
}

fn default_fork_path(trace: &Path, at: u64, seed: u64) -> PathBuf {
    let stem = trace
        .file_stem()
        .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from("target")
        .join("retrace")
        .join(format!("{stem}-fork{at}-seed{seed}.trace"))
}
