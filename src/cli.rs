//! The command line: argument definitions (one clap definition gives parsing and help) and
//! thin glue over the library crates.

use crate::registry::{Models, Registry, ScenarioFn, ScenarioInfo};
use crate::summary;
use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};
use retrace_sim::trace::TraceReader;
use retrace_sim::{format_ns, Outcome, TraceSink};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// `println!` that cannot panic: a closed pipe or a full disk under stdout loses the line
/// instead of taking the process (a node, the launcher) down with it.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
/// `eprintln!` that cannot panic (see [`say`]).
macro_rules! tell {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}
pub(crate) use {say, tell};

/// How to run this program again, for hints the user copies: its bare name when that name
/// on the PATH is this very binary (after `cargo install --path .`), else the path it was
/// started by (`target/release/retrace` after `cargo run`, which works from the same
/// directory). In a user's own binary built with [`main_with`], that binary.
pub fn program() -> String {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let me = std::env::current_exe()
                .ok()
                .and_then(|p| p.canonicalize().ok());
            let argv0 = std::env::args_os().next().map(PathBuf::from);
            let name = argv0
                .as_deref()
                .and_then(Path::file_name)
                .or_else(|| me.as_deref().and_then(Path::file_name))
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "retrace".into());
            let on_path = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(&name))
                    .find(|candidate| candidate.is_file())
                    .and_then(|p| p.canonicalize().ok())
            });
            if on_path.is_some() && on_path == me {
                return name.to_string_lossy().into_owned();
            }
            match argv0.filter(|a| a.components().count() > 1) {
                Some(started_as) => started_as.display().to_string(),
                None => me.map_or_else(
                    || name.to_string_lossy().into_owned(),
                    |m| m.display().to_string(),
                ),
            }
        })
        .clone()
}

pub use crate::exit;

#[derive(Parser, Debug)]
#[command(
    name = "retrace",
    version,
    max_term_width = 80,
    about = "Deterministic distributed-system simulator for record-and-replay debugging",
    long_about = "Deterministic distributed-system simulator for record-and-replay debugging.\n\n\
        retrace runs a whole cluster of nodes in one process, in virtual time, under a network \
        and fault model chosen from a seed; checks the system's invariants after every event; \
        and writes a trace of every input and output at every node boundary.\n\n\
        Exit codes, for every command: 0 ok; 1 an invariant was violated (run, fuzz, replay); \
        2 bad input (unreadable, invalid or over-limit file, corrupt or torn trace, unreadable \
        log, unwritable output); 3 executions that should agree differ (--check-determinism, \
        a replay that diverges, verify's mismatch).",
    after_help = "Examples:\n  retrace run scenarios/kv-ack-before-replicate.toml\n  \
        retrace run scenarios/kv.toml --seed 42 --check-determinism\n  \
        retrace show target/retrace/kv-seed7.trace --limit 40"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole loop on built-in data: record a real kv cluster, kill its primary, merge,
    /// replay, and open the TUI at the lost write
    Demo(crate::demo::DemoArgs),
    /// Simulate a scenario, check invariants after every event, write the trace
    Run(RunArgs),
    /// Print a trace's records, one dense line each, and report any corruption
    Show(ShowArgs),
    /// Search orderings and faults for invariant violations; minimise and save each one
    Fuzz(crate::fuzz_cli::FuzzArgs),
    /// Re-execute a trace: report the first divergence from it, or OK
    Replay(crate::replay_cli::ReplayArgs),
    /// Check what clients saw in a trace: is it linearizable (against the model's
    /// specification)? Prints the smallest sub-history that is not
    Check(crate::check_cli::CheckArgs),
    /// Show the events that causally precede (or follow) an event
    Why(crate::replay_cli::WhyArgs),
    /// Where a value came from and where it went: back across machines to the request that
    /// brought it, forward to every node and message that held it, and where a copy never
    /// arrived
    Provenance(crate::provenance_cli::ProvenanceArgs),
    /// Where requests spent their time: critical paths by node, link and kind
    Profile(crate::replay_cli::ProfileArgs),
    /// Write a trace for Perfetto, OpenTelemetry, Jaeger, ShiViz or Graphviz
    Export(crate::export_cli::ExportArgs),
    /// Run a scenario's nodes as real processes on 127.0.0.1 and record them
    Cluster(crate::record_cli::ClusterArgs),
    /// Merge a recorded run's per-node logs into one trace
    Merge(crate::record_cli::MergeArgs),
    /// Re-execute each node of a recorded run from its log and check its outputs
    Verify(crate::record_cli::VerifyArgs),
    /// Mark this moment on a running node, for `capture --around` (or send it SIGUSR1)
    Mark(crate::capture_cli::MarkArgs),
    /// Cut the window around a mark or a time out of the logs of a long recording, as a
    /// trace that replays from each node's snapshot before the window
    Capture(crate::capture_cli::CaptureArgs),
    /// Branch from any event of a trace: the cluster as re-executed there, its messages in
    /// flight and timers pending, then the scenario's model with a new seed for the rest
    Fork(crate::fork_cli::ForkArgs),
    /// When did the failure become inevitable? Fork many futures at moments before a
    /// violation and chart how often the same invariant breaks; name the step where it turned
    Inevitable(crate::inevitable_cli::InevitableArgs),
    /// Cut a window of events out of a trace, as a trace that replays from the states its
    /// nodes had at its start (for traces too large to open whole)
    Cut(crate::window_cli::CutArgs),
    /// Record the traffic between two processes retrace does not host: a TCP proxy whose
    /// log `merge` and `capture` place in the run's trace by time
    Tap(crate::tap_cli::TapArgs),
    /// Send one request to a node's client port and print the reply
    Client(crate::record_cli::ClientArgs),
    /// Run one node as this process (started by `retrace cluster`)
    Node(crate::record_cli::NodeArgs),
    /// List the models this binary knows
    Models,
    /// Measure the simulator, recorder, replayer or fuzzer (`bench sim|record|replay|fuzz`)
    Bench(crate::bench::BenchArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The scenario file (TOML; see scenarios/README.md)
    scenario: PathBuf,
    /// Seed of every random choice (overrides the scenario's `seed`)
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the trace
    /// [default: target/retrace/<scenario>-seed<N>.trace]
    #[arg(long, short = 'o', value_name = "TRACE")]
    out: Option<PathBuf>,
    /// Do not write a trace
    #[arg(long, conflicts_with = "out")]
    no_trace: bool,
    /// Run twice and compare the traces byte for byte
    /// (on a difference: name the first differing event, exit 3)
    #[arg(long)]
    check_determinism: bool,
    /// Replay a schedule saved by `retrace fuzz` (its seed, orderings and faults)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["seed", "check_determinism"])]
    schedule: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ShowArgs {
    /// The trace file
    trace: PathBuf,
    /// First event to print
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Print at most this many events
    #[arg(long)]
    limit: Option<u64>,
}

/// Runs the CLI with the models of `registry`. Use this from your own binary to get
/// retrace's commands for your own systems.
pub fn main_with<L: Models>(registry: Registry<L>) -> ExitCode {
    quiet_on_broken_pipe();
    retrace_recorder::diag::set_sink(render_diagnostic);
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Demo(args) => crate::demo::demo(&registry, &args),
        Command::Run(args) => run(&registry, &args),
        Command::Show(args) => show(&registry, &args),
        Command::Models => {
            for (name, about) in registry.models() {
                println!("{name:<12} {about}");
            }
            Ok(exit::OK)
        }
        Command::Bench(args) => crate::bench::run(&registry, &args),
        Command::Replay(args) => crate::replay_cli::replay(&registry, &args),
        Command::Fuzz(args) => crate::fuzz_cli::fuzz_command(&registry, &args),
        Command::Why(args) => crate::replay_cli::why(&registry, &args),
        Command::Cut(args) => crate::window_cli::cut_command(&registry, &args),
        Command::Fork(args) => crate::fork_cli::fork_command(&registry, &args),
        Command::Inevitable(args) => crate::inevitable_cli::inevitable(&registry, &args),
        Command::Check(args) => crate::check_cli::check(&registry, &args),
        Command::Provenance(args) => crate::provenance_cli::provenance(&registry, &args),
        Command::Profile(args) => crate::replay_cli::profile(&args),
        Command::Export(args) => crate::export_cli::export(&registry, &args),
        Command::Cluster(args) => crate::record_cli::cluster(&registry, &args),
        Command::Merge(args) => crate::record_cli::merge(&args),
        Command::Verify(args) => crate::record_cli::verify(&registry, &args),
        Command::Client(args) => crate::record_cli::client(&args),
        Command::Mark(args) => crate::capture_cli::mark(&args),
        Command::Capture(args) => crate::capture_cli::capture(&args),
        Command::Tap(args) => crate::tap_cli::tap(&args),
        Command::Node(args) => crate::record_cli::node(&registry, &args),
    };
    match code {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            tell!("error: {message:#}");
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}

/// Shows what the runtime tells its operator: warnings on stderr, statuses as one JSON line
/// on stdout (which a launcher reads through a pipe). Write errors are ignored: a node whose
/// stderr file sits on a full disk must keep serving.
fn render_diagnostic(d: retrace_recorder::diag::Diagnostic<'_>) {
    use retrace_recorder::diag::Diagnostic;
    use std::io::Write;
    match d {
        Diagnostic::Warning(text) => {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
        Diagnostic::Suppressed(n) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "({n} similar warnings suppressed)"
            );
        }
        Diagnostic::Status(s) => {
            if let Ok(line) = serde_json::to_string(s) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }
}

/// `retrace show trace | head` closes our stdout early. Rust ignores SIGPIPE, so `println!`
/// panics instead of the process ending quietly as Unix tools do; end it quietly here.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Reads a scenario file (bounded) and runs `f` on it with the model it names; errors name
/// the file (and the place).
pub(crate) fn on_scenario_file<L: Models, F: ScenarioFn>(
    registry: &Registry<L>,
    path: &Path,
    f: F,
) -> anyhow::Result<F::Out> {
    let file = path.display().to_string();
    let source = read_bounded(path, retrace_sim::limits::MAX_SCENARIO_BYTES)
        .map_err(|e| anyhow!("{file}: cannot read scenario: {e}"))?;
    registry.on_scenario(&file, &source, f)
}

/// A whole file as text, refusing more than `max_bytes` before reading it all (`retrace run
/// /dev/zero` must end with an error, not fill memory).
/// A schedule file `retrace fuzz` wrote, for model `M`: bounded, of this build's format,
/// parsed with the place of any error.
pub(crate) fn read_schedule_file<M: retrace_sim::Model>(
    path: &Path,
) -> anyhow::Result<retrace_sim::fuzz::ScheduleFile> {
    let text = read_bounded(path, retrace_sim::limits::MAX_SCHEDULE_BYTES)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("format").and_then(serde_json::Value::as_u64))
        .unwrap_or(1);
    if format != retrace_sim::fuzz::SCHEDULE_FORMAT {
        return Err(anyhow!(
            "{}: a schedule file of format {format}; this retrace reads format {} (choices keyed by message and moment), so run the fuzzer again to get one",
            path.display(),
            retrace_sim::fuzz::SCHEDULE_FORMAT
        ));
    }
    let sf: retrace_sim::fuzz::ScheduleFile = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "{}:{}:{}: not a schedule file: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    if sf.model != M::NAME {
        return Err(anyhow!(
            "{}: a schedule for model `{}`, not `{}`",
            path.display(),
            sf.model,
            M::NAME
        ));
    }
    Ok(sf)
}

pub(crate) fn read_bounded(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    retrace_sim::limits::read_text_bounded(File::open(path)?, max_bytes)
}

/// Where `run` writes its trace unless told: one name per scenario and seed, and for a run
/// under a schedule one per schedule too, so that replaying a schedule never replaces the
/// plain run's trace.
fn default_trace_path(scenario: &Path, seed: u64, schedule: Option<&Path>) -> PathBuf {
    let stem = |p: &Path| {
        p.file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned())
    };
    let name = match schedule {
        None => format!("{}-seed{seed}.trace", stem(scenario)),
        Some(s) => format!("{}-from-{}.trace", stem(scenario), stem(s)),
    };
    PathBuf::from("target").join("retrace").join(name)
}

pub(crate) fn create_trace_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("{}: cannot create directory: {e}", dir.display()))?;
    }
    File::create(path).map_err(|e| anyhow!("{}: cannot create trace: {e}", path.display()))
}

fn run<L: Models>(registry: &Registry<L>, args: &RunArgs) -> anyhow::Result<u8> {
    on_scenario_file(registry, &args.scenario, Run(args))?
}

/// `retrace run` on the model the scenario names.
struct Run<'a>(&'a RunArgs);

impl ScenarioFn for Run<'_> {
    type Out = anyhow::Result<u8>;
    fn call<M: retrace_sim::Model>(
        self,
        file: &str,
        s: retrace_sim::Scenario<M::Options>,
    ) -> anyhow::Result<Self::Out> {
        Ok(run_model::<M>(file, &s, self.0))
    }
}

fn run_model<M: retrace_sim::Model>(
    file: &str,
    s: &retrace_sim::Scenario<M::Options>,
    args: &RunArgs,
) -> anyhow::Result<u8> {
    let info = ScenarioInfo::of(s, args.seed);
    let seed = info.seed;
    let trace_path = (!args.no_trace).then(|| {
        args.out.clone().unwrap_or_else(|| {
            default_trace_path(&args.scenario, info.seed, args.schedule.as_deref())
        })
    });

    let started = Instant::now();
    let mut followed = None;
    // What `retrace run` wrote beside a large trace: its index with the cluster's states.
    let mut indexed = None;
    let report = if let Some(path) = &args.schedule {
        let sf = read_schedule_file::<M>(path)?;
        if let Some(from) = &sf.from {
            return Err(anyhow!(
                "{}: this schedule goes on from event {} of {}: replay it with `{} fork {} --at {} --schedule {}`",
                path.display(),
                from.at,
                from.trace,
                program(),
                from.trace,
                from.at,
                path.display()
            ));
        }
        sf.schedule
            .check(info.time_limit_ns)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        followed = Some(sf.schedule.clone());
        let sink = match &trace_path {
            Some(p) => TraceSink::Stream(Box::new(create_trace_file(p)?)),
            None => TraceSink::Discard,
        };
        let strategy =
            retrace_sim::fuzz::Strategy::parse(&sf.strategy).map_err(anyhow::Error::msg)?;
        retrace_sim::fuzz::replay_case::<M>(s, sf.seed, strategy, &sf.schedule, sink)
    } else if args.check_determinism {
        let (report, diff) = retrace_sim::check_determinism::<M>(s, seed);
        if let Some(diff) = diff {
            eprintln!("nondeterminism: two runs of {file} with seed {seed} differ");
            eprintln!("{diff}");
            return Ok(exit::NONDETERMINISM);
        }
        if let (Some(path), Some(bytes)) = (&trace_path, &report.trace) {
            let mut f = create_trace_file(path)?;
            f.write_all(bytes)
                .map_err(|e| anyhow!("{}: cannot write trace: {e}", path.display()))?;
        }
        report
    } else {
        match &trace_path {
            // The trace writer buffers its frames itself: no BufWriter in between.
            Some(path) => {
                let file = create_trace_file(path)?;
                let (report, said) = crate::run_states::run_indexed::<M>(s, seed, path, file);
                indexed = said;
                report
            }
            None => retrace_sim::Simulation::<M>::new(s, seed, TraceSink::Discard).run(),
        }
    };
    let wall = started.elapsed();
    print!(
        "{}",
        summary::run_summary(&info, &report, trace_path.as_deref(), Some(wall))
    );
    if args.check_determinism {
        println!("determinism: two runs gave byte-identical traces");
    }
    if let Some(schedule) = &followed {
        print!("{}", summary::unapplied(schedule, &report.unapplied));
    }
    if let Some(line) = &indexed {
        println!("{line}");
    }
    if let (Some(v), Some(path)) = (&report.violation, &trace_path) {
        let from = v.step_index.saturating_sub(30);
        println!(
            "next      {} show {} --from {from}",
            program(),
            path.display()
        );
    }
    if let Some(e) = &report.trace_error {
        let path = trace_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        return Err(anyhow!("{path}: writing the trace failed: {e}"));
    }
    Ok(if report.outcome == Outcome::Violation {
        exit::VIOLATION
    } else {
        exit::OK
    })
}

fn show<L: Models>(registry: &Registry<L>, args: &ShowArgs) -> anyhow::Result<u8> {
    // A range is read through the index: a page from the middle of a trace of any size
    // costs a block or two, once the index exists.
    if args.from > 0 || args.limit.is_some() {
        return show_range(registry, args);
    }
    let (header, mut reader) = TraceReader::open(&args.trace).map_err(anyhow::Error::msg)?;
    let describe = registry.messages(&header.model);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    show_title(&mut out, &header);
    // Recorded traces carry wall-clock times; show them from the first record on.
    let mut base_ns: Option<u64> = None;
    let recorded = !header.origin.virtual_time();
    let mut last = None;
    let mut last_record_was_end = false;
    for event in reader.by_ref() {
        if recorded && base_ns.is_none() {
            base_ns = Some(event.time_ns);
            show_base(&mut out, event.time_ns);
        }
        let mut event = event;
        event.time_ns = event.time_ns.saturating_sub(base_ns.unwrap_or(0));
        let _ = writeln!(out, "{}", summary::event_line(&header, &event, &describe));
        last = Some((event.index, event.time_ns));
        last_record_was_end = matches!(event.record, retrace_sim::Record::End { .. });
    }
    let _ = out.flush();
    drop(out);
    if let Some(tail) = reader.tail_error() {
        let kept = last.map_or("no records".to_string(), |(i, t)| {
            format!("records 0..={i} (up to {})", format_ns(t))
        });
        return Err(anyhow!(
            "{}: {tail}; the valid prefix, {kept}, is shown above",
            args.trace.display()
        ));
    }
    show_end_note(&args.trace, last_record_was_end);
    Ok(exit::OK)
}

fn show_title(out: &mut impl Write, header: &retrace_sim::trace::Header) {
    let origin = header.origin.describe();
    let names: Vec<&str> = header.nodes.iter().map(|n| n.name.as_str()).collect();
    let _ = writeln!(
        out,
        "trace of {} (model {}, {origin})",
        header.scenario_name, header.model
    );
    let _ = writeln!(out, "nodes: {}", names.join(", "));
}

fn show_base(out: &mut impl Write, base_ns: u64) {
    let _ = writeln!(
        out,
        "times from the first record, at unix time {}",
        format_ns(base_ns)
    );
}

fn show_end_note(path: &std::path::Path, complete: bool) {
    if !complete {
        eprintln!(
            "note: {}: the trace has no end record; the run that wrote it was cut short",
            path.display()
        );
    }
}

/// `show --from N --limit K`: the same lines as the whole listing's, through the index.
fn show_range<L: Models>(registry: &Registry<L>, args: &ShowArgs) -> anyhow::Result<u8> {
    let mut trace = retrace_replayer::index::IndexedTrace::open(
        &args.trace,
        crate::replay_cli::index_file_for(&args.trace),
    )
    .map_err(anyhow::Error::msg)?;
    let header = trace.header().clone();
    let describe = registry.messages(&header.model);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    show_title(&mut out, &header);
    let recorded = !header.origin.virtual_time();
    let base_ns = if recorded && !trace.is_empty() {
        let first = trace.event(0)?.time_ns;
        show_base(&mut out, first);
        first
    } else {
        0
    };
    let to = args.limit.map_or(trace.len(), |l| {
        args.from.saturating_add(l).min(trace.len())
    });
    let mut page = Vec::new();
    let mut at = args.from;
    // A block at a time, so a long range holds one block's records.
    while at < to {
        let next = (at / retrace_replayer::index::BLOCK_RECORDS + 1)
            * retrace_replayer::index::BLOCK_RECORDS;
        trace.events(at, next.min(to), &mut page)?;
        for event in &mut page {
            event.time_ns = event.time_ns.saturating_sub(base_ns);
            let _ = writeln!(out, "{}", summary::event_line(&header, event, &describe));
        }
        at = next;
    }
    let _ = out.flush();
    drop(out);
    if let Some(tail) = trace.tail().map(str::to_owned) {
        let kept = match trace.len().checked_sub(1) {
            Some(i) => format!(
                "records 0..={i} (up to {})",
                format_ns(trace.event(i)?.time_ns.saturating_sub(base_ns))
            ),
            None => "no records".to_string(),
        };
        return Err(anyhow!(
            "{}: {tail}; the valid prefix is {kept}",
            args.trace.display()
        ));
    }
    show_end_note(&args.trace, trace.is_complete());
    Ok(exit::OK)
}
