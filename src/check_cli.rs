//! `retrace check`: properties of what clients saw in a trace, by re-executing it (a
//! trace keeps answers only as digests; the code gives them back). Today: linearizability
//! against the model's sequential specification.

use crate::exit;
use crate::registry::{ModelFn, Models, Registry};
use crate::replay_cli::known_model;
use crate::summary::group;
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::engine::check_header;
use retrace_replayer::stream::{replay_span, Span};
use retrace_sim::history::History;
use retrace_sim::linearizability::{HistoryCheck, Limits};
use retrace_sim::trace::{Header, Record, TraceReader};
use retrace_sim::{format_ns, Model, Node};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The trace (simulated, merged from a recording, or cut by the fuzzer)
    trace: PathBuf,
    /// Check that every external operation could have taken effect at one instant between
    /// its request and its answer, in an order the model's specification accepts
    #[arg(long, required = true)]
    linearizable: bool,
    /// Search steps per key before the key is reported undecided
    #[arg(long, default_value_t = Limits::default().steps_per_key)]
    steps_per_key: u64,
}

pub fn check<L: Models>(registry: &Registry<L>, args: &CheckArgs) -> anyhow::Result<u8> {
    let (header, _) = TraceReader::open(&args.trace).map_err(anyhow::Error::msg)?;
    let model = known_model(registry, &args.trace, &header.model)?;
    struct Check<'a>(Header, &'a CheckArgs);
    impl ModelFn for Check<'_> {
        type Out = anyhow::Result<u8>;
        fn call<M: Model>(self) -> Self::Out {
            check_trace::<M>(&self.0, self.1)
        }
    }
    registry.call(&model, Check(header, args))?
}

/// Re-executes the trace straight from its file for the history of what clients saw (so
/// memory is the history's, not the trace's), then checks it.
fn check_trace<M: Model>(header: &Header, args: &CheckArgs) -> anyhow::Result<u8> {
    let path = args.trace.display();
    let options = check_header::<M>(header).map_err(|e| anyhow!("{path}: {e}"))?;
    let Some(checker) = M::linearizability(&options) else {
        return Err(anyhow!(
            "{path}: model `{}` has no sequential specification to check against \
             (it does not implement Model::linearizability)",
            M::NAME
        ));
    };
    let started = std::time::Instant::now();
    let mut history: History<<M::Node as Node>::Msg> = History::new();
    let mut resumed = 0usize;
    let streamed = replay_span::<M>(
        &args.trace,
        Span {
            start: None,
            to: None,
            stop_before: None,
            watch_clients: true,
            on_step: &mut |step, cluster| {
                let input = &step[0];
                resumed += usize::from(matches!(input.record, Record::Resume { .. }));
                history.observe(input.index, input.time_ns, cluster.client_events());
            },
            on_boundary: &mut |_, _| {},
        },
    )
    .map(|(streamed, _)| streamed)
    .map_err(|e| anyhow!("{path}: {e}"))?;
    if let Some(tail) = &streamed.tail {
        eprintln!("warning: {path}: {tail}; checking the records before it");
    }
    let torn = streamed.tail.as_ref();
    if let Some(d) = &streamed.divergence {
        println!("{d}");
        println!(
            "check     not done: the trace does not replay (its history would be the code's, not the recording's)"
        );
        return Ok(exit::after_reading(torn, exit::NONDETERMINISM));
    }
    let replayed = started.elapsed();
    let code = report::<M>(header, args, checker, &history, replayed, resumed);
    Ok(exit::after_reading(torn, code))
}

/// Searches the history and says what it found: the exit code.
fn report<M: Model>(
    header: &Header,
    args: &CheckArgs,
    checker: Box<dyn HistoryCheck<<M::Node as Node>::Msg>>,
    history: &History<<M::Node as Node>::Msg>,
    replayed: std::time::Duration,
    resumed: usize,
) -> u8 {
    let path = args.trace.display();
    let limits = Limits {
        steps_per_key: args.steps_per_key,
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let report = checker.check(history, limits);
    let searched = started.elapsed();
    let names = header.node_names();
    let name = |n: retrace_sim::NodeId| {
        names
            .get(n.index())
            .cloned()
            .unwrap_or_else(|| n.to_string())
    };
    println!(
        "history   {} operations over {} keys: {} answered, {} without an answer (or with an unknown one), {} refused and left out",
        group(report.ops as u64 + report.failed as u64),
        group(report.keys as u64),
        group((report.ops - report.open.min(report.ops)) as u64),
        group(report.open as u64),
        group(report.failed as u64),
    );
    println!(
        "search    {} steps in {:.3}s (replay {:.3}s)",
        group(report.steps),
        searched.as_secs_f64(),
        replayed.as_secs_f64()
    );
    for w in &report.violations {
        println!();
        print!("{}", checker.draw(history, w, &name));
        let events: Vec<String> = w
            .ops
            .iter()
            .map(|&i| {
                let op = &history.ops()[i];
                format!("{} at #{}", op.request, op.call.step_index())
            })
            .collect();
        println!("  requests  {}", events.join(", "));
        let first = w.ops.first().map(|&i| &history.ops()[i]);
        if let Some(op) = first {
            println!(
                "  events    retrace show {path} --from {}   (from the first operation's request, at {})",
                op.call.step_index(),
                format_ns(op.call_ns)
            );
        }
    }
    if !report.undecided.is_empty() {
        println!(
            "undecided {} key{} ran out of search steps (--steps-per-key): {}",
            report.undecided.len(),
            if report.undecided.len() == 1 { "" } else { "s" },
            report.undecided.join(", ")
        );
    }
    if report.is_linearizable() {
        println!(
            "verdict   linearizable: every checked key's operations can be ordered{}",
            if report.undecided.is_empty() {
                ""
            } else {
                " (except the undecided keys)"
            }
        );
        exit::OK
    } else {
        if resumed > 0 {
            // A window (`retrace cut`, `retrace capture`): the specification starts from
            // nothing, but the store did not.
            println!(
                "caution   this trace starts in the middle of a run ({resumed} nodes resumed from snapshots): \
                 the specification starts empty, so a read of a value written before the trace \
                 looks stale; a violation whose first read is such a value is the window's edge, \
                 not a bug"
            );
        }
        println!(
            "verdict   NOT linearizable: {} key{} (each with the smallest sub-history that cannot be ordered)",
            report.violations.len(),
            if report.violations.len() == 1 { "" } else { "s" }
        );
        exit::VIOLATION
    }
}
