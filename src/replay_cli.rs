//! The replayer's commands: `replay`, `why`, `profile`.

use crate::exit;
use crate::registry::{ModelFn, Models, Registry};
use crate::summary::{event_line, group, rate, short_ns};
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::index::{IndexFile, IndexedTrace};
use retrace_replayer::profile::{
    profile_indexed, Chunking, Profiler, RequestProfile, Summarizer, Summary, WindowSummarizer,
};
use retrace_replayer::{Causality, Steps};
use retrace_sim::scenario::parse_duration_ns;
use retrace_sim::{format_ns, RequestId, Trace};
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The trace to re-execute
    pub(crate) trace: PathBuf,
    /// No terminal UI: re-execute, report the first divergence or OK (also what happens
    /// when stdout is not a terminal, or with --to, --print or --json)
    #[arg(long)]
    pub(crate) headless: bool,
    /// Stop after the step holding this event index
    #[arg(long, value_name = "N")]
    pub(crate) to: Option<usize>,
    /// Print every event as one dense line while replaying
    #[arg(long)]
    pub(crate) print: bool,
    /// Print the outcome as JSON
    #[arg(long)]
    pub(crate) json: bool,
    /// TUI: open a window of the trace around this event (what a trace larger than
    /// memory opens as, around its violation or its end by default)
    #[arg(long, value_name = "N")]
    pub(crate) at: Option<u64>,
    /// Open the TUI as a terminal would, draw its first frame off screen, page to the
    /// window before, print how long each took and exit (for `bench large`)
    #[arg(long, hide = true)]
    pub(crate) bench_open: bool,
    /// TUI: how many records a window holds, about (`(` and `)` page between windows)
    #[arg(long, value_name = "N", default_value_t = crate::window_cli::TUI_WINDOW_RECORDS_DEFAULT)]
    pub(crate) records: u64,
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// The trace
    trace: PathBuf,
    /// The event (trace index) to explain
    event: usize,
    /// Show what the event caused instead of what caused it
    #[arg(long)]
    effects: bool,
    /// Print at most this many events (the nearest ones)
    #[arg(long, default_value_t = 40)]
    limit: usize,
    /// Print the events' indices as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// The trace
    trace: PathBuf,
    /// Profile one request (its id, as `r12` or `12`)
    #[arg(long, value_name = "ID")]
    request: Option<String>,
    /// Compare requests starting in this window with the rest, e.g. `11s..13s` (times from
    /// the start of the trace)
    #[arg(long, value_name = "A..B")]
    window: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Read the trace through its index this many records at a time (what a trace file
    /// over 64 MiB gets, 262,144 at a time)
    #[arg(long, hide = true, value_name = "N")]
    chunk_records: Option<u64>,
}

/// A trace file larger than this is not loaded whole: the TUI opens a window of it
/// (`--at`) and `profile` reads it a chunk at a time. About three million records, which
/// loaded with their replay take about half a gigabyte.
const WHOLE_LOAD_BYTES_MAX: u64 = 64 << 20;

/// Whether the file at `path` is too large to load whole.
fn too_large_to_load(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > WHOLE_LOAD_BYTES_MAX)
}

pub(crate) fn load(path: &Path) -> anyhow::Result<Trace> {
    let trace = Trace::load(path).map_err(anyhow::Error::msg)?;
    if let Some(tail) = &trace.tail {
        eprintln!(
            "warning: {}: {tail}; using the {} records before it",
            path.display(),
            trace.events.len()
        );
    }
    Ok(trace)
}

/// Refuses an event index the trace does not have, naming the file and how many it has.
pub(crate) fn check_event(path: &Path, trace: &Trace, event: usize) -> anyhow::Result<()> {
    if event >= trace.events.len() {
        return Err(anyhow!(
            "{}: no event {event} (the trace has {})",
            path.display(),
            trace.events.len()
        ));
    }
    Ok(())
}

/// The model of `trace` (read from `path`), refused by name when this binary does not know
/// it: re-executing needs the model's code.
pub(crate) fn known_model<L: Models>(
    registry: &Registry<L>,
    path: &Path,
    model: &str,
) -> anyhow::Result<String> {
    if !registry.names().contains(&model) {
        return Err(anyhow!(
            "{}: the trace is of model `{model}`, which this binary does not know",
            path.display()
        ));
    }
    Ok(model.to_string())
}

pub fn replay<L: Models>(registry: &Registry<L>, args: &ReplayArgs) -> anyhow::Result<u8> {
    let interactive = !(args.headless || args.json || args.print || args.to.is_some());
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if interactive && (terminal || args.bench_open) {
        let large = too_large_to_load(&args.trace);
        if args.bench_open || args.at.is_some() || large {
            return crate::window_cli::open_window_tui(registry, args);
        }
        let trace = load(&args.trace)?;
        known_model(registry, &args.trace, &trace.header.model)?;
        if trace.events.is_empty() {
            return Err(anyhow!(
                "{}: no events to show (the trace holds only its header)",
                args.trace.display()
            ));
        }
        let session = registry
            .session(trace)
            .map_err(|e| anyhow!("{}: {e}", args.trace.display()))?;
        let mut app = retrace_tui::App::new(session);
        app.source = Some(args.trace.clone());
        retrace_tui::terminal::run(&mut app).map_err(|e| anyhow!("terminal: {e}"))?;
        return Ok(exit::OK);
    }
    let (header, _) =
        retrace_sim::trace::TraceReader::open(&args.trace).map_err(anyhow::Error::msg)?;
    let model = known_model(registry, &args.trace, &header.model)?;
    let started = std::time::Instant::now();
    struct Replay<'a>(&'a ReplayArgs);
    impl ModelFn for Replay<'_> {
        type Out = anyhow::Result<ReplayOutcome>;
        fn call<M: retrace_sim::Model>(self) -> Self::Out {
            crate::replay_run::replay::<M>(self.0)
        }
    }
    let outcome = registry.call(&model, Replay(args))??;
    if let Some(tail) = &outcome.tail {
        eprintln!(
            "warning: {}: {tail}; using the {} records before it",
            args.trace.display(),
            tail.index
        );
    }
    let wall = started.elapsed();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome.json).map_err(anyhow::Error::msg)?
        );
    } else {
        // An invariant stays broken for many steps once broken: name each one once.
        let mut shown: Vec<&str> = Vec::new();
        for (name, line) in &outcome.violations {
            if !shown.contains(&name.as_str()) {
                shown.push(name);
                let after = outcome.violations.iter().filter(|(n, _)| n == name).count() - 1;
                let more = if after > 0 {
                    format!(" (still broken after {} later steps)", group(after as u64))
                } else {
                    String::new()
                };
                println!("invariant  {line}{more}");
            }
        }
        if outcome.violations_more > 0 {
            println!(
                "invariant  ... and {} later violations not listed",
                group(outcome.violations_more as u64)
            );
        }
        match &outcome.divergence {
            Some(d) => {
                println!("{d}");
                if !outcome.led_there.is_empty() {
                    println!("  the events that led there (most recent {}):", outcome.led_there.len());
                    for line in &outcome.led_there {
                        println!("    {line}");
                    }
                }
                println!("replay    DIVERGED after {} of {} steps", group(outcome.applied as u64), group(outcome.steps as u64));
            }
            None => println!(
                "replay    ok: {} of {} steps re-executed with every output as recorded, in {:.3}s ({} steps)",
                group(outcome.applied as u64),
                group(outcome.steps as u64),
                wall.as_secs_f64(),
                rate(outcome.applied as u64, wall)
            ),
        }
    }
    let code = if outcome.divergence.is_some() {
        exit::NONDETERMINISM
    } else if !outcome.violations.is_empty() {
        exit::VIOLATION
    } else {
        exit::OK
    };
    Ok(exit::after_reading(outcome.tail.as_ref(), code))
}

/// What a replay found, for printing.
pub struct ReplayOutcome {
    pub steps: usize,
    pub applied: usize,
    pub divergence: Option<String>,
    pub led_there: Vec<String>,
    /// Each violation: the invariant's name and the line that reports it (the first
    /// ones; `violations_more` counts the rest).
    pub violations: Vec<(String, String)>,
    pub violations_more: usize,
    pub json: serde_json::Value,
    /// What stopped the reading before the end of the file.
    pub tail: Option<retrace_sim::trace::TailError>,
}

/// Traces at least this large keep their index in a file next to them (`TRACE.idx`), so
/// the next open skips the pass that builds it; smaller ones index in memory in well
/// under a second and leave no file behind.
pub(crate) const INDEX_FILE_BYTES_MIN: u64 = 64 << 20;

/// Whether the index `path` needs is worth a file next to it.
pub(crate) fn index_file_for(path: &Path) -> IndexFile {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= INDEX_FILE_BYTES_MIN) {
        IndexFile::Write
    } else {
        IndexFile::Memory
    }
}

/// Opens a trace through its index (see `retrace_replayer::index`): what `why` and `show`
/// use, so they work on traces larger than memory.
pub(crate) fn open_indexed(path: &Path) -> anyhow::Result<IndexedTrace> {
    let trace = IndexedTrace::open(path, index_file_for(path)).map_err(anyhow::Error::msg)?;
    if let Some(tail) = trace.tail() {
        eprintln!(
            "warning: {}: {tail}; using the {} records before it",
            path.display(),
            trace.len()
        );
    }
    Ok(trace)
}

/// The exit code after reading an indexed trace: a torn one is bad input.
fn indexed_exit(trace: &IndexedTrace, code: u8) -> u8 {
    if trace.tail().is_some() {
        exit::BAD_INPUT
    } else {
        code
    }
}

pub fn why<L: Models>(registry: &Registry<L>, args: &WhyArgs) -> anyhow::Result<u8> {
    let mut trace = open_indexed(&args.trace)?;
    let event = args.event as u64;
    if event >= trace.len() {
        return Err(anyhow!(
            "{}: no event {event} (the trace has {})",
            args.trace.display(),
            trace.len()
        ));
    }
    let Some(step) = trace.step_at_or_before(event)? else {
        return Err(anyhow!(
            "event {} comes before any node's first step",
            args.event
        ));
    };
    // JSON lists every related step; text the nearest `limit`.
    let limit = if args.json { usize::MAX } else { args.limit };
    // Faults are causes too: the drops, cuts and clock jumps that changed what a step of
    // the history saw (they have no happens-before edge of their own).
    let (count, shown, faults) = if args.effects {
        let e = trace.effects(step, limit)?;
        (e.count, e.nearest, Vec::new())
    } else {
        let p = trace.why(step, limit)?;
        (p.count, p.nearest, p.faults)
    };
    if args.json {
        let key = if args.effects { "effects" } else { "why" };
        let mut v = serde_json::json!({ "event": args.event, "step_event": step, key: shown });
        if !args.effects {
            v["faults"] = serde_json::json!(faults);
        }
        println!("{v}");
        return Ok(indexed_exit(&trace, exit::OK));
    }
    // Messages decoded as `show` and the TUI print them, when this binary knows the model.
    let header = trace.header().clone();
    let describe = registry.messages(&header.model);
    println!("{}", event_line(&header, &trace.event(step)?, &describe));
    println!(
        "{} {} event{} {} it{}:",
        group(count),
        if args.effects { "later" } else { "earlier" },
        if count == 1 { "" } else { "s" },
        if args.effects {
            "follow causally from"
        } else {
            "causally precede"
        },
        if count > shown.len() as u64 {
            format!(" (showing the {} nearest)", shown.len())
        } else {
            String::new()
        }
    );
    // The shown steps and the faults among them, in trace order; a fault is marked.
    let from = shown.first().copied().unwrap_or(0);
    let shown_faults: Vec<u64> = faults.iter().copied().filter(|&f| f >= from).collect();
    let mut merged: Vec<(u64, String)> = Vec::with_capacity(shown.len() + shown_faults.len());
    for &s in &shown {
        merged.push((
            s,
            format!("  {}", event_line(&header, &trace.event(s)?, &describe)),
        ));
    }
    for &f in &shown_faults {
        merged.push((
            f,
            format!("! {}", event_line(&header, &trace.event(f)?, &describe)),
        ));
    }
    merged.sort_by_key(|(i, _)| *i);
    if !faults.is_empty() {
        println!(
            "{} fault{} changed what they saw (marked `!`{}):",
            group(faults.len() as u64),
            if faults.len() == 1 { "" } else { "s" },
            if shown_faults.len() < faults.len() {
                format!(
                    "; {} before the events shown, --json lists all",
                    group((faults.len() - shown_faults.len()) as u64)
                )
            } else {
                String::new()
            }
        );
    }
    for (_, line) in merged {
        println!("{line}");
    }
    Ok(indexed_exit(&trace, exit::OK))
}

fn parse_window(text: &str) -> anyhow::Result<(u64, u64)> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| anyhow!("--window `{text}`: expected A..B, like 11s..13s"))?;
    let a = parse_duration_ns(a, false).map_err(|e| anyhow!("--window {e}"))? as u64;
    let b = parse_duration_ns(b, false).map_err(|e| anyhow!("--window {e}"))? as u64;
    if a >= b {
        return Err(anyhow!("--window `{text}` is empty"));
    }
    Ok((a, b))
}

fn print_summary(title: &str, s: &Summary, top: usize) {
    let l = &s.latency;
    println!("{title}: {} requests", s.requests);
    println!(
        "  latency p50 {} p90 {} p99 {} max {}",
        short_ns(l.p50_ns),
        short_ns(l.p90_ns),
        short_ns(l.p99_ns),
        short_ns(l.max_ns)
    );
    println!(
        "  {:<34} {:>10} {:>10} {:>10}",
        "where (critical path)", "mean", "p50", "p99"
    );
    for (place, p, _) in s.places.iter().take(top) {
        println!(
            "  {:<34} {:>10} {:>10} {:>10}",
            place.to_string(),
            short_ns(p.mean_ns),
            short_ns(p.p50_ns),
            short_ns(p.p99_ns)
        );
    }
}

fn print_request(p: &RequestProfile) {
    println!(
        "request r{}: {} from {} to {} (critical path of {} hops)",
        p.request,
        short_ns(p.latency_ns),
        short_ns(p.start_ns),
        short_ns(p.end_ns),
        p.path.len()
    );
    println!(
        "  {:<34} {:>10} {:>8}  {:>8}",
        "where", "time", "share", "event"
    );
    for h in &p.path {
        let share = h.ns as f64 * 100.0 / p.latency_ns.max(1) as f64;
        println!(
            "  {:<34} {:>10} {:>7.1}%  {:>8}",
            h.place.to_string(),
            short_ns(h.ns),
            share,
            h.event
        );
    }
    let slack = p.min_slack_ns.map_or("-".into(), format_ns);
    println!(
        "  off the critical path: {} steps, {} service, least slack {slack}",
        p.off_path_steps,
        short_ns(p.off_path_service_ns)
    );
}

/// Where profiles go, one at a time: the one request asked for, or a summary.
enum Sink {
    One(RequestId, Option<RequestProfile>),
    All(Summarizer),
    Window(WindowSummarizer, (u64, u64)),
}

impl Sink {
    /// Takes a profile whose times are from the run's origin; summaries count from `base`,
    /// the trace's first record, as `--window` does.
    fn take(&mut self, p: RequestProfile, base: u64) -> ControlFlow<()> {
        let from_base = |mut p: RequestProfile| {
            p.start_ns = p.start_ns.saturating_sub(base);
            p.end_ns = p.end_ns.saturating_sub(base);
            p
        };
        match self {
            Sink::One(id, found) if p.request == id.0 => {
                *found = Some(p);
                return ControlFlow::Break(());
            }
            Sink::One(..) => {}
            Sink::All(s) => s.add(&from_base(p)),
            Sink::Window(w, _) => w.add(&from_base(p)),
        }
        ControlFlow::Continue(())
    }
}

pub fn profile(args: &ProfileArgs) -> anyhow::Result<u8> {
    let mut sink = match (&args.request, &args.window) {
        (Some(r), _) => {
            let id: u64 = r
                .trim_start_matches('r')
                .parse()
                .map_err(|_| anyhow!("--request `{r}` is not a request id"))?;
            Sink::One(RequestId(id), None)
        }
        (None, Some(w)) => {
            let (a, b) = parse_window(w)?;
            Sink::Window(WindowSummarizer::new(a, b), (a, b))
        }
        (None, None) => Sink::All(Summarizer::default()),
    };
    let chunking = match args.chunk_records {
        Some(records) => Some(Chunking::of(records)),
        None => too_large_to_load(&args.trace).then(Chunking::default),
    };
    let ok = match chunking {
        None => {
            let trace = load(&args.trace)?;
            let steps = Steps::new(&trace.events);
            let causality = Causality::new(&steps, &trace.events, trace.header.nodes.len());
            let names: Vec<String> = trace.header.node_names();
            let profiler = Profiler::new(&trace.events, &steps, &causality, &names);
            let base = trace.events.first().map_or(0, |e| e.time_ns);
            if let Sink::One(id, found) = &mut sink {
                *found = profiler.request(*id);
            } else {
                for r in profiler.requests() {
                    if let Some(p) = profiler.request(r) {
                        let _ = sink.take(p, base);
                    }
                }
            }
            exit::after_reading(trace.tail.as_ref(), exit::OK)
        }
        Some(chunking) => {
            let mut trace = open_indexed(&args.trace)?;
            let base = match trace.len() {
                0 => 0,
                _ => trace.event(0)?.time_ns,
            };
            let bar = indicatif::ProgressBar::new(trace.len());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} profiling {pos}/{len} records [{wide_bar}] {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let run = profile_indexed(&mut trace, chunking, |p| sink.take(p, base), &mut |at| {
                bar.set_position(at)
            })?;
            bar.finish_and_clear();
            if run.out_of_reach > 0 {
                eprintln!(
                    "note: {}: read {} records at a time; {} requests had no answer within {} \
                     records of their start and are not profiled",
                    args.trace.display(),
                    group(chunking.records),
                    group(run.out_of_reach),
                    group(chunking.span_max)
                );
            }
            indexed_exit(&trace, exit::OK)
        }
    };
    let json = |v: &dyn erased::Ser| -> anyhow::Result<u8> {
        println!("{}", v.to_json()?);
        Ok(ok)
    };
    match sink {
        Sink::One(id, found) => {
            let p = found.ok_or_else(|| {
                anyhow!(
                    "request r{} has no reply in this trace (or does not exist)",
                    id.0
                )
            })?;
            if args.json {
                return json(&p);
            }
            print_request(&p);
        }
        Sink::All(s) => {
            let s = s.finish();
            if s.requests == 0 {
                return Err(no_request(&args.trace));
            }
            if args.json {
                return json(&s);
            }
            print_summary("all requests", &s, 12);
        }
        Sink::Window(w, (a, b)) => {
            let c = w.finish();
            if c.window.requests + c.rest.requests == 0 {
                return Err(no_request(&args.trace));
            }
            if args.json {
                return json(&c);
            }
            print_summary(
                &format!("window {}..{}", format_ns(a), format_ns(b)),
                &c.window,
                8,
            );
            print_summary("the rest", &c.rest, 8);
            println!("extra time per request in the window, against the rest:");
            for (place, ns) in c.extra.iter().filter(|(_, ns)| *ns > 0).take(6) {
                println!(
                    "  {:<34} {:>+10}",
                    place.to_string(),
                    format!("+{}", short_ns(*ns as u64))
                );
            }
            println!("slowest requests in the window (and where most of their time went):");
            for (r, latency, place) in c.hit.iter().take(10) {
                println!("  r{:<8} {:>10}  {}", r, short_ns(*latency), place);
            }
        }
    }
    Ok(ok)
}

fn no_request(path: &Path) -> anyhow::Error {
    anyhow!("{}: no request with a reply in this trace", path.display())
}

mod erased {
    /// Anything the profile command prints as JSON.
    pub trait Ser {
        fn to_json(&self) -> anyhow::Result<String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> anyhow::Result<String> {
            serde_json::to_string_pretty(self).map_err(anyhow::Error::msg)
        }
    }
}
