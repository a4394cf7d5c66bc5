//! `retrace bench tui`: opening a long trace in the TUI, and the time from a keypress to the
//! redrawn frame for each motion, rendered to ratatui's test backend.

use crate::bench::replay::{kv_trace_bytes, peak_rss};
use crate::bench::BenchArgs;
use crate::summary::{group, short_ns};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use retrace_models::KvModel;
use retrace_replayer::Replay;
use retrace_tui::{ui, App, ModelSession};
use std::time::{Duration, Instant};

/// The screen the frames are drawn on.
const WIDTH: u16 = 160;
const HEIGHT: u16 = 50;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

pub fn run(args: &BenchArgs) -> anyhow::Result<u8> {
    println!(
        "retrace bench tui (kv trace of {} records; frames of {WIDTH}x{HEIGHT} on the test backend)",
        group(args.replay_events)
    );
    let (bytes, _) = kv_trace_bytes(args.replay_events)?;
    let mut terminal =
        Terminal::new(TestBackend::new(WIDTH, HEIGHT)).map_err(anyhow::Error::msg)?;

    let started = Instant::now();
    let trace = retrace_sim::Trace::from_bytes(&bytes, "bench-kv").map_err(anyhow::Error::msg)?;
    let records = trace.events.len();
    let replay = Replay::<KvModel>::new(trace).map_err(anyhow::Error::msg)?;
    let mut app = App::new(Box::new(ModelSession::new(replay)));
    terminal
        .draw(|f| ui::render(&mut app, f))
        .map_err(anyhow::Error::msg)?;
    let open = started.elapsed();
    println!(
        "  open              {:>10}  (decode, index, causality, re-execute to the first problem or {}s, first frame)",
        short_ns(open.as_nanos() as u64),
        retrace_tui::app::OPEN_SCAN_BUDGET.as_secs_f64()
    );

    // Motions from the middle of the trace; each is timed from its last key to the frame.
    let middle = records * 9 / 10;
    app.press(&format!(":goto {middle}<Enter>"));
    let back = middle.saturating_sub(500_000.min(records / 2));
    let motions: Vec<(&str, Vec<String>)> = vec![
        ("j (next event)", vec!["j".into(); 200]),
        ("k (previous event)", vec!["k".into(); 200]),
        ("l (next on node)", vec!["l".into(); 100]),
        ("h (previous on node)", vec!["h".into(); 100]),
        ("20j", vec!["20j".into(); 50]),
        (
            "jump 500k back and forth",
            (0..40)
                .map(|i| format!(":goto {}<Enter>", if i % 2 == 0 { back } else { middle }))
                .collect(),
        ),
        ("w (why)", vec!["w".into(); 20]),
        ("r (request)", vec!["r".into(); 20]),
        (
            "G / g (ends)",
            (0..20)
                .map(|i| if i % 2 == 0 { "G".into() } else { "g".into() })
                .collect(),
        ),
    ];
    let mut all = Vec::new();
    println!(
        "  {:<26} {:>6} {:>10} {:>10} {:>10}",
        "keypress to frame", "n", "p50", "p99", "max"
    );
    for (name, presses) in motions {
        let mut times = Vec::with_capacity(presses.len());
        for p in &presses {
            // Everything but the last key (a count, a command line) is typing, not waiting.
            let (typing, last) = match p.strip_suffix("<Enter>") {
                Some(cmd) => (cmd.to_string(), "<Enter>".to_string()),
                None => {
                    let last = p.chars().last().map(String::from).unwrap_or_default();
                    (p[..p.len() - last.len()].to_string(), last)
                }
            };
            app.press(&typing);
            let t = Instant::now();
            app.press(&last);
            terminal
                .draw(|f| ui::render(&mut app, f))
                .map_err(anyhow::Error::msg)?;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "  {:<26} {:>6} {:>10} {:>10} {:>10}",
            name,
            times.len(),
            short_ns(percentile(&times, 0.5).as_nanos() as u64),
            short_ns(percentile(&times, 0.99).as_nanos() as u64),
            short_ns(times.last().map_or(0, |d| d.as_nanos() as u64))
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "  all keypresses             {:>6} {:>10} {:>10} {:>10}   (target p99 <= 50ms; open <= 2s)",
        all.len(),
        short_ns(percentile(&all, 0.5).as_nanos() as u64),
        short_ns(percentile(&all, 0.99).as_nanos() as u64),
        short_ns(all.last().map_or(0, |d| d.as_nanos() as u64))
    );
    println!("  peak RSS          {}", peak_rss());
    Ok(crate::exit::OK)
}
