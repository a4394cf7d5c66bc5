//! Plain-text renderings of runs and traces, readable in an 80-column terminal.

use crate::registry::ScenarioInfo;
pub use retrace_replayer::describe::{event_line, group};
use retrace_sim::{format_ns, RunReport};
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// Bytes as `812 B`, `1.2 KiB`, `3.4 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Nanoseconds with three significant digits, for tables: `10.1ms`, `684us`, `2.50s`.
pub fn short_ns(ns: u64) -> String {
    let (value, unit) = match ns {
        0..=999 => return format!("{ns}ns"),
        1_000..=999_999 => (ns as f64 / 1e3, "us"),
        1_000_000..=999_999_999 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if value >= 100.0 {
        format!("{value:.0}{unit}")
    } else if value >= 10.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.2}{unit}")
    }
}

/// A rate per second, `1.23 M/s`.
pub fn rate(count: u64, wall: Duration) -> String {
    let per_s = count as f64 / wall.as_secs_f64().max(1e-9);
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k/s", per_s / 1e3)
    } else {
        format!("{per_s:.0} /s")
    }
}

fn roles(info: &ScenarioInfo) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for spec in &info.nodes {
        match counts.iter_mut().find(|(r, _)| *r == spec.role) {
            Some((_, c)) => *c += 1,
            None => counts.push((&spec.role, 1)),
        }
    }
    counts
        .iter()
        .map(|(r, c)| format!("{c} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary `retrace run` prints. `wall` is left out when `None` (stable output).
pub fn run_summary(
    info: &ScenarioInfo,
    report: &RunReport,
    trace: Option<&Path>,
    wall: Option<Duration>,
) -> String {
    let s = &report.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario  {} (model {}, seed {})",
        info.name, info.model, report.seed
    );
    if let Some(kinds) = &report.swarm {
        let _ = writeln!(out, "swarm     fault kinds on: {}", kinds.describe());
    }
    let _ = writeln!(out, "nodes     {} ({})", info.nodes.len(), roles(info));
    let _ = writeln!(
        out,
        "events    {} steps, {} trace records, {} virtual time",
        group(s.steps),
        group(report.trace_records),
        format_ns(report.end_time_ns)
    );
    let _ = writeln!(
        out,
        "messages  {} sent, {} delivered, {} dropped, {} duplicated",
        group(s.sent),
        group(s.delivered),
        group(s.dropped),
        group(s.duplicated)
    );
    let _ = writeln!(
        out,
        "faults    {} crashes, {} restarts, {} network/clock faults",
        group(s.crashes),
        group(s.restarts),
        group(s.network_faults)
    );
    if s.requests + s.requests_refused > 0 {
        let _ = writeln!(
            out,
            "requests  {} external, {} refused (node down), {} answered",
            group(s.requests),
            group(s.requests_refused),
            group(s.responses)
        );
    }
    match trace {
        Some(path) => {
            let per = if s.delivered > 0 {
                format!(
                    ", {:.1} B/delivery",
                    report.trace_bytes as f64 / s.delivered as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "trace     {} ({}{per})",
                path.display(),
                bytes(report.trace_bytes)
            );
        }
        None => {
            let _ = writeln!(out, "trace     not written");
        }
    }
    if let Some(wall) = wall {
        let _ = writeln!(
            out,
            "wall      {:.3}s ({} steps)",
            wall.as_secs_f64(),
            rate(s.steps, wall)
        );
    }
    match (&report.violation, report.outcome) {
        (Some(v), _) => {
            let _ = writeln!(
                out,
                "verdict   VIOLATED at event {}: {}",
                v.step_index, v.invariant
            );
            let text = format!("{} at {}: {}", v.node_name, format_ns(v.time_ns), v.message);
            for line in wrap_message(&text, 68) {
                let _ = writeln!(out, "          {line}");
            }
        }
        (None, outcome) => {
            let _ = writeln!(
                out,
                "verdict   ok: every invariant held ({})",
                outcome.as_str()
            );
        }
    }
    out
}

/// A violation's message for a terminal: its first line wrapped at `width`, the lines after
/// it as they are (an invariant that draws, such as linearizability's diagram of
/// overlapping operations, has laid them out already).
pub fn wrap_message(text: &str, width: usize) -> Vec<String> {
    let (head, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut lines = wrap(head, width);
    lines.extend(rest.lines().map(str::to_string));
    lines
}

/// Splits `text` into lines of at most `width` characters at spaces (a longer word stays
/// whole on its own line).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The choices of a followed schedule that never applied, as `retrace run --schedule` reports
/// them (nothing when all did): their message was never sent or their moment never came,
/// which after a change to the model means the schedule no longer describes this run.
pub fn unapplied(schedule: &retrace_sim::Schedule, unapplied: &[usize]) -> String {
    const SHOWN: usize = 5;
    if unapplied.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "schedule  {} of {} choices did not apply (no such message, or the moment never came):\n",
        unapplied.len(),
        schedule.choices.len()
    );
    for &i in unapplied.iter().take(SHOWN) {
        if let Some(c) = schedule.choices.get(i) {
            out.push_str(&format!("          choices[{i}]: {c}\n"));
        }
    }
    if unapplied.len() > SHOWN {
        out.push_str(&format!(
            "          … and {} more\n",
            unapplied.len() - SHOWN
        ));
    }
    out
}
