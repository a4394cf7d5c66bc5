//! `retrace cut`, and the TUI on a trace too large to load: a window of a trace as a trace
//! of its own (`retrace_replayer::window`), the nodes resumed at its start from the states
//! re-execution reached.

use crate::registry::{ModelFn, Models, Registry};
use crate::replay_cli::ReplayArgs;
use crate::replay_cli::{known_model, open_indexed};
use crate::summary::group;
use anyhow::anyhow;
use clap::Args;
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use retrace_replayer::index::IndexedTrace;
use retrace_replayer::window::{bounds, cut, Window};
use retrace_sim::trace::Record;
use retrace_tui::pager::{Page, Pager, WindowPager};
use std::path::{Path, PathBuf};

/// Records in a window `retrace cut` writes unless asked otherwise: a TUI over this many
/// stays within a few hundred megabytes (a loaded record with its replay and causality
/// costs ~170 bytes).
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
    println!("window    {}", window.describe(&args.trace));
    println!(
        "wrote     {} ({} records, {})",
        args.out.display(),
        group(window.trace.events.len() as u64),
        crate::summary::bytes(window.bytes.len() as u64)
    );
    Ok(crate::exit::OK)
}

/// The window of about `records` records around event `around` of the trace at `path`.
pub(crate) fn window_of<L: Models>(
    registry: &Registry<L>,
    path: &Path,
    indexed: &mut IndexedTrace,
    around: u64,
    records: u64,
) -> anyhow::Result<Window> {
    check_window(path, indexed, around, records)?;
    let model = known_model(registry, path, &indexed.header().model.clone())?;
    let (from, to) = bounds(indexed, around, records).map_err(anyhow::Error::msg)?;
    let bar = reexecution_bar();
    bar.set_length(from);
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

/// A window of `records` records around event `around` is one the trace has.
fn check_window(
    path: &Path,
    indexed: &IndexedTrace,
    around: u64,
    records: u64,
) -> anyhow::Result<()> {
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
    Ok(())
}

/// Re-execution to a window's start takes as long as the trace before it (or before its
/// nearest state checkpoint): show it.
fn reexecution_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} re-executing to the window's start {pos}/{len} records [{wide_bar}] {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Records in a TUI window unless asked otherwise: small enough to open in about a second
/// (`(` and `)` page to the windows around it).
pub(crate) const TUI_WINDOW_RECORDS_DEFAULT: u64 = 250_000;

/// `retrace replay --at N` (and any trace too large to open whole): the TUI on a window,
/// selecting the event asked for — by default the trace's violation, or its last event —
/// with the windows around it a key away.
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
    check_window(&args.trace, &indexed, around, args.records)?;
    let model = known_model(registry, &args.trace, &indexed.header().model.clone())?;
    let bar = reexecution_bar();
    struct First<'a> {
        path: &'a Path,
        indexed: IndexedTrace,
        around: u64,
        records: u64,
        bar: &'a indicatif::ProgressBar,
    }
    impl ModelFn for First<'_> {
        type Out = Result<(Page, Box<dyn Pager>), String>;
        fn call<M: retrace_sim::Model>(self) -> Self::Out {
            let bar = self.bar;
            let (page, pager) = WindowPager::<M>::first(
                self.path,
                self.indexed,
                self.around,
                self.records,
                &mut |at, from| {
                    bar.set_length(from);
                    bar.set_position(at)
                },
            )?;
            Ok((page, Box::new(pager)))
        }
    }
    let (page, pager) = registry
        .call(
            &model,
            First {
                path: &args.trace,
                indexed,
                around,
                records: args.records,
                bar: &bar,
            },
        )?
        .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    let mut app = retrace_tui::App::in_window(page, pager);
    if args.bench_open {
        // What a terminal would show first, drawn where no terminal is; then the next
        // window, as `)` opens it.
        let backend = ratatui::backend::TestBackend::new(160, 50);
        let mut terminal = ratatui::Terminal::new(backend).map_err(anyhow::Error::msg)?;
        let mut draw = |app: &mut retrace_tui::App| {
            terminal
                .draw(|f| retrace_tui::ui::render(app, f))
                .map(|_| ())
                .map_err(anyhow::Error::msg)
        };
        draw(&mut app)?;
        let opened = started.elapsed();
        let line = app.message.clone().unwrap_or_default();
        app.key(KeyEvent::from(KeyCode::Char('(')));
        draw(&mut app)?;
        println!(
            "opened    in {:.2}s: {line}; the window before it in {:.2}s",
            opened.as_secs_f64(),
            (started.elapsed() - opened).as_secs_f64(),
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
