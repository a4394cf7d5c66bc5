//! `retrace inevitable`: when did the failure become inevitable? The curve of how often
//! forked futures break the same invariant, against time, as a chart in the terminal, and
//! the step where it turned (`retrace_replayer::inevitable`).

use crate::exit;
use crate::registry::{Messages, ModelFn, Models, Registry};
use crate::replay_cli::{known_model, load};
use crate::summary::{event_line, group};
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::inevitable::{curve, find_target, Curve, Point, Settings, Shape};
use retrace_replayer::Replay;
use retrace_sim::trace::Trace;
use retrace_sim::{format_ns, Model};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct InevitableArgs {
    /// A trace whose run broke an invariant: simulated, recorded and merged, or a fork
    trace: PathBuf,
    /// Futures forked at each moment
    #[arg(long, default_value_t = 64, value_name = "K")]
    samples: u32,
    /// At most this many moments measured (a grid of 9 first, then halving the gaps where
    /// the probability changes most)
    #[arg(long, default_value_t = 24, value_name = "N")]
    moments: usize,
    /// How long each future runs past the violation's time
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    horizon: String,
    /// Seed the futures' seeds come from
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads running futures [default: the machine's cores]
    #[arg(long)]
    jobs: Option<usize>,
}

pub fn inevitable<L: Models>(registry: &Registry<L>, args: &InevitableArgs) -> anyhow::Result<u8> {
    let trace = load(&args.trace)?;
    let model = known_model(registry, &args.trace, &trace.header.model)?;
    let horizon_ns = retrace_sim::scenario::parse_duration_ns(&args.horizon, false)
        .map_err(|e| anyhow!("--horizon {}: {e}", args.horizon))? as u64;
    if args.samples == 0 || args.moments == 0 {
        return Err(anyhow!("--samples and --moments must be at least 1"));
    }
    let settings = Settings {
        samples: args.samples,
        seed: args.seed,
        moments_max: args.moments,
        horizon_ns,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
    };
    let describe = registry.messages(&model);
    let tail = trace.tail.clone();
    struct Measure<'a> {
        trace: Trace,
        args: &'a InevitableArgs,
        settings: Settings,
        describe: Messages,
    }
    impl ModelFn for Measure<'_> {
        type Out = anyhow::Result<u8>;
        fn call<M: Model>(self) -> Self::Out {
            measure::<M>(self.trace, self.args, self.settings, &self.describe)
        }
    }
    let code = registry.call(
        &model,
        Measure {
            trace,
            args,
            settings,
            describe,
        },
    )??;
    Ok(exit::after_reading(tail.as_ref(), code))
}

fn measure<M: Model>(
    trace: Trace,
    args: &InevitableArgs,
    settings: Settings,
    describe: &Messages,
) -> anyhow::Result<u8> {
    let path = &args.trace;
    let at_path = |e: &dyn std::fmt::Display| anyhow!("{}: {e}", path.display());
    let replay = Replay::<M>::new(trace).map_err(|e| at_path(&e))?;
    let Some(target) = find_target(&replay).map_err(|e| at_path(&e))? else {
        return Err(anyhow!(
            "{}: no invariant breaks in this trace, so there is no failure to trace back",
            path.display()
        ));
    };
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(settings.moments_max as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} moments measured {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let c = curve(&replay, &target, settings, &mut |point, forks| {
        bar.inc(1);
        bar.set_message(format!(
            "({forks} forks; last: step {} {:.0}%)",
            point.moment,
            point.probability() * 100.0
        ));
    })
    .map_err(|e| at_path(&e))?;
    bar.finish_and_clear();
    let wall = started.elapsed();
    print!("{}", report(&replay, &c, describe, args, wall));
    Ok(exit::OK)
}

/// The whole report: what was measured, the chart, the reading, the table.
fn report<M: Model>(
    replay: &Replay<M>,
    c: &Curve,
    describe: &Messages,
    args: &InevitableArgs,
    wall: std::time::Duration,
) -> String {
    let mut out = String::new();
    let t = &c.target;
    let rel = |ns: u64| format_ns(ns.saturating_sub(c.base_ns));
    let _ = writeln!(
        out,
        "violation `{}` broke at event {} ({})",
        t.invariant,
        t.index,
        rel(t.time_ns)
    );
    let _ = writeln!(
        out,
        "futures   {} per moment at {} moments: {} forks in {:.1}s; each runs to {} past the \
         violation, with the scenario's network, workload and random faults (not its \
         scripted ones)",
        args.samples,
        c.points.len(),
        group(c.forks),
        wall.as_secs_f64(),
        args.horizon
    );
    out.push('\n');
    out.push_str(&c.chart(64, 10));
    out.push('\n');
    let events = &replay.trace.events;
    // The events of a gap between two moments: each step's input, and what the network or
    // the faults did there (a duplicate, a drop, a cut), which no step holds.
    let named = |out: &mut String, from: u64, to: u64| {
        let mut shown = 0;
        let mut more = 0;
        for e in events.get(from as usize..to as usize).unwrap_or_default() {
            let r = &e.record;
            if r.input_node().is_none() && !r.ends_step() && !r.is_network_fate() {
                continue;
            }
            if shown == 8 {
                more += 1;
                continue;
            }
            let mut e = e.clone();
            e.time_ns = e.time_ns.saturating_sub(c.base_ns);
            let line = event_line(&replay.trace.header, &e, describe);
            let _ = writeln!(out, "          {line}");
            shown += 1;
        }
        if more > 0 {
            let _ = writeln!(out, "          … and {more} more");
        }
    };
    let pct = |p: &Point| {
        let (lo, hi) = p.interval();
        format!(
            "{:.0}% ({:.0}–{:.0}%)",
            p.probability() * 100.0,
            lo * 100.0,
            hi * 100.0
        )
    };
    let rises = |out: &mut String| {
        for &i in &c.rises {
            let (pa, pb) = (&c.points[i - 1], &c.points[i]);
            let _ = writeln!(
                out,
                "          +{:.0} points, {} → {}, between {} and {}:",
                (pb.probability() - pa.probability()) * 100.0,
                pct(pa),
                pct(pb),
                rel(pa.time_ns),
                rel(pb.time_ns)
            );
            named(out, pa.boundary, pb.boundary);
        }
    };
    match (c.shape, c.turn) {
        (Shape::Turn, Some(t)) => {
            let (pa, pb) = (&c.points[t.unlikely], &c.points[t.certain]);
            if c.sharp() {
                let _ = writeln!(
                    out,
                    "reading   one step made the failure inevitable: {} of futures broke `{}` \
                     before it ({}), {} after it ({}):",
                    pct(pa),
                    c.target.invariant,
                    rel(pa.time_ns),
                    pct(pb),
                    rel(pb.time_ns)
                );
                named(&mut out, pa.boundary, pb.boundary);
            } else {
                let _ = writeln!(
                    out,
                    "reading   the failure went from unlikely ({} at {}) to near-certain ({} at \
                     {}) over {} steps; it rose most at:",
                    pct(pa),
                    rel(pa.time_ns),
                    pct(pb),
                    rel(pb.time_ns),
                    pb.moment - pa.moment
                );
                rises(&mut out);
            }
        }
        (Shape::Gradual, _) => {
            let _ = writeln!(
                out,
                "reading   the probability rises, but never from unlikely to near-certain for \
                 good: no one stretch decided it; it rose most at:"
            );
            rises(&mut out);
        }
        (Shape::FlatHigh, _) => {
            let _ = writeln!(
                out,
                "reading   flat and high: from the first moment measured, most futures break \
                 `{}` — no later event decided it (the cause is in the setup: the model, \
                 its options, or what the first steps did)",
                t.invariant
            );
        }
        (Shape::FlatLow, _) => {
            let _ = writeln!(
                out,
                "reading   flat and low: even right before the violation few futures break \
                 it — the trace's own future was the unlucky one (its timing, not any one \
                 event before it, decided it)"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "reading   flat: the probability barely changes over the run; no moment \
                 stands out"
            );
        }
    }
    out.push('\n');
    let _ = writeln!(out, "   step  event       time  broke   probability (95%)");
    for p in &c.points {
        let _ = writeln!(
            out,
            "{:>7}  {:>6}  {:>10}  {:>5}   {}",
            p.moment,
            p.boundary,
            rel(p.time_ns),
            format!("{}/{}", p.broke, p.samples),
            pct(p)
        );
    }
    out
}
