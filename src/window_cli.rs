//! `retrace cut`, and the TUI on a trace too large to load: a window of a trace as a trace
//! of its own (`retrace_replayer::window`), the nodes resumed at its start from the states
//! re-execution reached.

use crate::registry::{ModelFn, Models, Registry};
use crate::replay_cli::ReplayArgs;
use crate::replay_cli::{known_model, open_indexed};
use crate::summary::group;
use anyhow::anyhow;
use clap::Args;
use retrace_replayer::index::IndexedTrace;
use retrace_replayer::window::{bounds, cut, Window};
use retrace_sim::trace::Record;
use std::path::{Path, PathBuf};

/// Records in a window unless asked otherwise: a TUI over this many stays within a few
/// hundred megabytes (a loaded record with its replay and causality costs ~170 bytes).
pub(crate) const WINDOW_RECORDS_DEFAULT: u64 = 1_000_000;

#[derive(Args, Debug)]
pub struct CutArgs {
    /// The trace
    trace: PathBuf,
    /// The event (trace index) the window is around: three quarters of it come before
    #[arg(long, value_name = "N")]
    around: u64,
    /// How many records the window holds, about (it starts and ends between steps)
    #[arg(long, value_name = "N", default_value_t = WINDOW_RECORDS_DEFAULT)]
    records: u64,
    /// Where to write the window's trace
    #[arg(long, short = 'o', value_name = "TRACE")]
    out: PathBuf,
}

pub fn cut_command<L: Models>(registry: &Registry<L>, args: &CutArgs) -> anyhow::Result<u8> {
    let mut indexed = open_indexed(&args.trace)?;
    let window = window_of(
        registry,
        &args.trace,
        &mut indexed,
        args.around,
        args.records,
    )?;
    std::fs::write(&args.out, &window.bytes).map_err(|e| anyhow!("{}: {e}", args.out.display()))?;
    println!("{}", describe(&args.trace, &window));
    println!(
        "wrote     {} ({} records, {})",
        args.out.display(),
        group(window.trace.events.len() as u64),
        crate::summary::bytes(window.bytes.len() as u64)
    );
    Ok(crate::exit::OK)
}

/// One line on what a window is: which records of which trace, and how it starts.
pub(crate) fn describe(trace: &Path, window: &Window) -> String {
    let span = &window.span;
    // Past the resumes at its start, the window numbers records as the trace does, shifted
    // by this much (drops of messages from before the window, and storage images after
    // restarts, move it by one here and there). A window that starts within its first few
    // records has more resumes than records before it: the shift is then negative.
    let local = span.local(span.from).unwrap_or(span.from);
    let shift = if span.from >= local {
        format!("+{}", group(span.from - local))
    } else {
        format!("-{}", group(local - span.from))
    };
    format!(
        "window    events {}..{} of {} (event k here is about k{shift} there; {} steps re-executed to its start, {} nodes resumed there)",
        group(span.from),
        group(span.to),
        trace.display(),
        group(window.reexecuted as u64),
        window.resumed,
    )
}

/// The window of about `records` records around event `around` of the trace at `path`.
pub(crate) fn window_of<L: Models>(
    registry: &Registry<L>,
    path: &Path,
    indexed: &mut IndexedTrace,
    around: u64,
    records: u64,
) -> anyhow::Result<Window> {
    if records == 0 {
        return Err(anyhow!("--records 0: a window holds at least one record"));
    }
    if around >= indexed.len() {
        return Err(anyhow!(
            "{}: there is no event {around} (the trace has {} records)",
            path.display(),
            group(indexed.len())
        ));
    }
    let model = known_model(registry, path, &indexed.header().model.clone())?;
    let (from, to) = bounds(indexed, around, records).map_err(anyhow::Error::msg)?;
    // Re-execution to the window's start takes as long as the trace before it: show it.
    let bar = indicatif::ProgressBar::new(from);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} re-executing to the window's start {pos}/{len} records [{wide_bar}] {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    struct Cut<'a> {
        path: &'a Path,
        indexed: &'a mut IndexedTrace,
        from: u64,
        to: u64,
        bar: &'a indicatif::ProgressBar,
    }
    impl ModelFn for Cut<'_> {
        type Out = anyhow::Result<Window>;
        fn call<M: retrace_sim::Model>(self) -> Self::Out {
            let bar = self.bar;
            cut::<M>(self.path, self.indexed, self.from, self.to, &mut |at| {
                bar.set_position(at)
            })
            .map_err(|e| anyhow!("{}: {e}", self.path.display()))
        }
    }
    let window = registry.call(
        &model,
        Cut {
            path,
            indexed,
            from,
            to,
            bar: &bar,
        },
    )??;
    bar.finish_and_clear();
    Ok(window)
}

/// `retrace replay --at N` (and any trace too large to open whole): the TUI on a window,
/// selecting the event asked for — by default the trace's violation, or its last event.
pub(crate) fn open_window_tui<L: Models>(
    registry: &Registry<L>,
    args: &ReplayArgs,
) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let mut indexed = open_indexed(&args.trace)?;
    if indexed.is_empty() {
        return Err(anyhow!(
            "{}: no events to show (the trace holds only its header)",
            args.trace.display()
        ));
    }
    let around = match args.at {
        Some(n) => n,
        None => last_violation(&mut indexed)?.unwrap_or(indexed.len() - 1),
    };
    let window = window_of(registry, &args.trace, &mut indexed, around, args.records)?;
    // The index (most of it the clocks of messages in flight) is not needed once the
    // window is cut: the TUI's memory is the window's.
    drop(indexed);
    let line = describe(&args.trace, &window);
    let local = window.span.local(around);
    let Window { trace, .. } = window;
    let session = registry
        .session(trace)
        .map_err(|e| anyhow!("{}: {e}", args.trace.display()))?;
    let mut app = retrace_tui::App::new(session);
    if let Some(k) = local {
        let row = app.timeline.row_of(k as usize);
        app.select(row);
    }
    app.message = Some(line.trim_start_matches("window").trim().to_string());
    if args.bench_open {
        // What a terminal would show first, drawn where no terminal is.
        let backend = ratatui::backend::TestBackend::new(160, 50);
        let mut terminal = ratatui::Terminal::new(backend).map_err(anyhow::Error::msg)?;
        terminal
            .draw(|f| retrace_tui::ui::render(&mut app, f))
            .map_err(anyhow::Error::msg)?;
        println!(
            "opened    in {:.2}s: {}",
            started.elapsed().as_secs_f64(),
            line.trim_start_matches("window").trim()
        );
        return Ok(crate::exit::OK);
    }
    retrace_tui::terminal::run(&mut app).map_err(|e| anyhow!("terminal: {e}"))?;
    Ok(crate::exit::OK)
}

/// The step of the trace's violation, if it has one: the violation record is among its
/// last (a run stops at its first violation), so only the last block is read.
fn last_violation(indexed: &mut IndexedTrace) -> anyhow::Result<Option<u64>> {
    const TAIL_RECORDS: u64 = 4096;
    let len = indexed.len();
    let mut tail = Vec::new();
    indexed
        .events(len.saturating_sub(TAIL_RECORDS), len, &mut tail)
        .map_err(anyhow::Error::msg)?;
    Ok(tail.iter().rev().find_map(|e| match e.record {
        Record::Violation { step, .. } => Some(step),
        _ => None,
    }))
}
